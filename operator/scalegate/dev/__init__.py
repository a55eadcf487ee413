"""`scalegate dev-cluster`: a real local Kubernetes control plane for development and tests."""

from .build import BuildError, default_cache_dir, ensure_binaries, kubectl_path
from .cluster import DevCluster, DevClusterError, write_kubeconfig
from .versions import ETCD_VERSION, KUBERNETES_VERSION

__all__ = [
    "BuildError", "DevCluster", "DevClusterError", "ETCD_VERSION", "KUBERNETES_VERSION",
    "default_cache_dir", "ensure_binaries", "kubectl_path", "write_kubeconfig",
]
