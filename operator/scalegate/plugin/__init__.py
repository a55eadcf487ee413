"""`kubectl scalegate`: the kubectl plugin's parts.

It talks to the API server only through ``scalegate.kube`` (kubeconfig and context handled
as kubectl does, one set of errors) and to Prometheus only through the forecaster's own
client, ``scalegate.forecast.prometheus``. ``render`` and ``explain`` are pure (text,
numbers, the plot) and are tested without a cluster; the command line, which also puts
errors into kubectl's words, lives in ``scalegate.plugin.cli``.
"""
