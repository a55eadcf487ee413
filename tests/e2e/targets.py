"""Where the end-to-end tests run scalegate's image as Pods: two targets, one test body.

- `dev-node`: the dev control plane with its own node (`scalegate.dev.node`: containerd and
  a kubelet on this machine), the image built with podman (`scalegate.dev.image`), the
  manifests through manifests/overlays/dev-node. Everything on 127.0.0.1. Skipped only
  where the machine cannot run a node (not root, cgroups unusable, no podman).
- `kind`: a kind cluster from kind-config.yaml, the image built with Docker, the manifests
  through manifests/overlays/kind. Skipped where kind or a Docker engine is missing.

Each target installs `crds/` and its overlay as a user does (`kubectl apply -f crds/ &&
kubectl apply -k OVERLAY`), with a one-patch kustomization on top for what only the test
knows: the API server's port and the test's Prometheus.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from harness import CRDS, MANIFESTS, REPO, Cluster

from scalegate.dev import DevCluster

NAMESPACE = "scalegate"
DEPLOYMENTS = ("scalegate-operator", "scalegate-forecaster")


def _log(message: str) -> None:
    print(f"[e2e] {message}", flush=True)


def layer(directory: Path, overlay: Path, config: dict[str, str]) -> Path:
    """A kustomization in `directory` over `overlay` that sets `config` in the ConfigMap
    scalegate-config: what a user would write for their own cluster."""
    directory.mkdir(parents=True, exist_ok=True)
    ops = "".join(f"      - op: add\n        path: /data/{key}\n        value: \"{value}\"\n"
                  for key, value in config.items())
    patches = ("patches:\n  - target: {kind: ConfigMap, name: scalegate-config}\n    patch: |-\n" + ops
               if config else "")
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(overlay, directory)}\n{patches}")
    return directory


class DevNodeTarget:
    """The dev control plane and its node, private to this test module."""

    name = "dev-node"
    overlay = MANIFESTS / "overlays" / "dev-node"
    pods_reach_host_loopback = True

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.dev: DevCluster | None = None
        self.node = None
        self.cluster: Cluster | None = None

    @staticmethod
    def unavailable() -> str | None:
        from scalegate.dev.image import image_support
        from scalegate.dev.node import node_support

        reason = node_support() or image_support()
        return f"this machine cannot run the dev node: {reason}" if reason else None

    def up(self) -> None:
        from scalegate.dev import image
        from scalegate.dev.node import DevNode

        self.dev = DevCluster(state_dir=self.workdir / "cluster", log=_log)
        self.dev.up()
        self.node = DevNode(self.dev, log=_log)
        self.node.up()
        image.build_image(REPO, log=_log)
        image.load_into_node(self.node, [image.IMAGE], log=_log)
        self.cluster = Cluster(kubeconfig=self.dev.kubeconfig, dev=self.dev)

    def kustomization(self, prometheus_url: str | None) -> Path:
        state = self.dev.read_state()
        config = {"KUBERNETES_SERVICE_PORT": str(state.api_port)}
        if prometheus_url:
            config["SCALEGATE_PROMETHEUS_URL"] = prometheus_url
        return layer(self.workdir / "install", self.overlay, config)

    def logs(self) -> str:
        """The last lines of every scalegate container's log (the kubelet writes them here)."""
        if self.node is None or not self.node.pod_logs.exists():
            return ""
        parts = []
        for path in sorted(self.node.pod_logs.glob(f"{NAMESPACE}_*/*/*.log")):
            lines = path.read_text(errors="replace").splitlines()[-40:]
            parts.append(f"--- {path.relative_to(self.node.pod_logs)}\n" + "\n".join(lines))
        return "\n".join(parts)

    def down(self) -> None:
        try:
            if self.node is not None:
                self.node.down()
        finally:
            if self.dev is not None:
                self.dev.down()


class KindTarget:
    """A kind cluster (needs kind and a Docker engine)."""

    name = "kind"
    cluster_name = "scalegate-e2e"
    image = "scalegate:dev"
    overlay = MANIFESTS / "overlays" / "kind"
    pods_reach_host_loopback = False  # kind's Pods live in Docker's network, not on this host's loopback

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.cluster: Cluster | None = None
        self.created = False

    @staticmethod
    def unavailable() -> str | None:
        if not shutil.which("kind"):
            return "kind is not installed (https://kind.sigs.k8s.io); the dev-node target runs these scenarios"
        if not shutil.which("docker"):
            return "Docker is not installed; kind cannot create nodes here"
        try:
            if subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode != 0:
                return "no Docker engine is reachable (docker info failed); kind cannot create nodes here"
        except (OSError, subprocess.TimeoutExpired):
            return "no Docker engine is reachable (docker info timed out)"
        return None

    def _run(self, *cmd: str, timeout: float = 900) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"

    def up(self) -> None:
        kubeconfig = self.workdir / "kubeconfig"
        self._run("kind", "create", "cluster", "--name", self.cluster_name, "--config", str(REPO / "kind-config.yaml"),
                  "--kubeconfig", str(kubeconfig), "--wait", "120s")
        self.created = True
        self._run("docker", "build", "-f", str(REPO / "operator" / "Dockerfile"), "-t", self.image, str(REPO))
        self._run("kind", "load", "docker-image", self.image, "--name", self.cluster_name)
        self.cluster = Cluster(kubeconfig=kubeconfig)

    def kustomization(self, prometheus_url: str | None) -> Path:
        return layer(self.workdir / "install", self.overlay, {})

    def logs(self) -> str:
        if self.cluster is None:
            return ""
        return "\n".join(self.cluster.kubectl("-n", NAMESPACE, "logs", f"deployment/{name}", "--tail=40",
                                              check=False).stdout for name in DEPLOYMENTS)

    def down(self) -> None:
        if self.created:
            subprocess.run(["kind", "delete", "cluster", "--name", self.cluster_name], capture_output=True,
                           timeout=300)


TARGETS = {target.name: target for target in (DevNodeTarget, KindTarget)}


def install(target, prometheus_url: str | None) -> str:
    """`kubectl apply -f crds/ && kubectl apply -k OVERLAY`, then wait until both
    Deployments have rolled out and the admission policies are enforced. Returns what
    kubectl warned."""
    cluster = target.cluster
    cluster.kubectl("apply", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    applied = cluster.kubectl("apply", "-k", str(target.kustomization(prometheus_url)))
    for name in DEPLOYMENTS:
        rollout = cluster.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{name}", "--timeout=300s",
                                  check=False)
        assert rollout.returncode == 0, f"{name} did not roll out: {rollout.stderr}\n{target.logs()}"
    cluster.wait_until_policy_enforced()
    return applied.stderr


class Installed:
    """A target with scalegate installed, and the test's Prometheus where its Pods reach it."""

    def __init__(self, target, prometheus, warnings: str):
        self.target = target
        self.cluster: Cluster = target.cluster
        self.prometheus = prometheus
        self.warnings = warnings

    def pods(self, component: str) -> list:
        return self.cluster.core().list_namespaced_pod(
            NAMESPACE, label_selector=f"app.kubernetes.io/component={component}").items
