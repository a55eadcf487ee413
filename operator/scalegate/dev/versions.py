"""The one place where the dev control plane's versions are pinned.

Kubernetes: the newest release that builds with the Go toolchain on our machines
(go.mod of k8s.io/kubernetes v1.37 asks for go 1.26.0). etcd: the newest 3.7 patch.
kind-config.yaml pins the kind node image separately (kind publishes its own images).
"""

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.3"


def staging_version(kubernetes_version: str = KUBERNETES_VERSION) -> str:
    """Version of the k8s.io/* staging modules that belong to a Kubernetes release.

    >>> staging_version("v1.37.2")
    'v0.37.2'
    """
    major, minor, patch = kubernetes_version.lstrip("v").split(".")[:3]
    if major != "1":
        raise ValueError(f"unexpected Kubernetes version {kubernetes_version!r}")
    return f"v0.{minor}.{patch}"
