"""`kubectl scalegate`: the kubectl plugin's parts.

``api`` is the only module that talks to the API server; ``render`` and ``explain`` are
pure (text, numbers, the plot) and are tested without a cluster. The command line lives in
``scalegate.plugin.cli``.
"""
