"""Test harness: a real API server to test against, and ways to act as other users.

Importable from tests as `harness` (pytest's pythonpath includes tests/).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import kubernetes
import yaml

from scalegate.dev import DevCluster, kubectl_path

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO / "crds"
MANIFESTS = REPO / "manifests"
APPROVAL_POLICY = "scalegate-approval"
LOAD_DIR = REPO / "tests" / "data" / "load"


def admission_policies() -> list[str]:
    """Names of the ValidatingAdmissionPolicies in manifests/base/admission/ (each has a
    binding of the same name)."""
    names = []
    for path in sorted((MANIFESTS / "base" / "admission").glob("*.yaml")):
        names += [doc["metadata"]["name"] for doc in yaml.safe_load_all(path.read_text())
                  if doc and doc.get("kind") == "ValidatingAdmissionPolicy"]
    return names


def load_dir() -> Path:
    """The recorded load series (tests/data/load, with their sources and licences), or
    $SCALEGATE_LOAD_DIR to run against other series."""
    return Path(os.environ.get("SCALEGATE_LOAD_DIR") or LOAD_DIR)


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1,
             message: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `message` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")


@dataclass
class Cluster:
    """A reachable API server and an admin kubeconfig for it."""

    kubeconfig: Path
    dev: DevCluster | None = None
    _clients: dict = field(default_factory=dict)

    # -- clients -----------------------------------------------------------------------
    def api_client(self, user: str | None = None, groups: tuple[str, ...] = ()) -> kubernetes.client.ApiClient:
        """An API client as the admin, or impersonating `user` (with `groups`)."""
        key = (user, groups)
        if key not in self._clients:
            config = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=config)
            client = kubernetes.client.ApiClient(config)
            if user:
                client.set_default_header("Impersonate-User", user)
                for group in groups:
                    # The client sends one header value; several groups need a list-aware
                    # transport, so tests impersonate with at most one explicit group.
                    client.set_default_header("Impersonate-Group", group)
            self._clients[key] = client
        return self._clients[key]

    def custom(self, user: str | None = None, groups: tuple[str, ...] = ()) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api_client(user, groups))

    def core(self, user: str | None = None) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api_client(user))

    def apps(self, user: str | None = None) -> kubernetes.client.AppsV1Api:
        return kubernetes.client.AppsV1Api(self.api_client(user))

    # -- the API server's audit log: a witness that is not the operator ---------------
    @property
    def has_audit_log(self) -> bool:
        return self.dev is not None

    def scale_writes(self, namespace: str, name: str, user: str | None = None,
                     resource: str = "deployments") -> list[dict]:
        """Successful writes of `resource` namespace/name's replicas recorded by the API
        server (its scale subresource, or the object itself), optionally by `user` only."""
        assert self.dev is not None, "the audit log needs the dev cluster"
        writes = []
        for event in self.dev.audit_events():
            ref = event.get("objectRef") or {}
            if (event.get("stage") == "ResponseComplete" and event.get("verb") in ("update", "patch")
                    and ref.get("resource") == resource and ref.get("namespace") == namespace
                    and ref.get("name") == name and ref.get("subresource") in (None, "scale")
                    and (event.get("responseStatus") or {}).get("code", 500) < 300
                    and (user is None or (event.get("user") or {}).get("username") == user)):
                writes.append(event)
        return writes

    # -- kubectl -----------------------------------------------------------------------
    def kubectl(self, *args: str, user: str | None = None, input: str | None = None,
                check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [kubectl_path(), f"--kubeconfig={self.kubeconfig}"]
        if user:
            cmd.append(f"--as={user}")
        cmd += list(args)
        run_env = dict(os.environ, **(env or {}))
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120, env=run_env)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def apply_yaml(self, text: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self.kubectl("apply", "-f", "-", user=user, input=text, check=check)

    # -- set-up ------------------------------------------------------------------------
    def install_crds(self) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS))

    @property
    def kubectl_binary(self) -> str:
        return kubectl_path()

    @contextlib.contextmanager
    def scalegate_installed(self, wait_enforced: bool = True):
        """`kubectl apply -k manifests/` (RBAC, admission policy, deployments) for a block;
        afterwards the cluster-wide admission policy is removed again unless it was there
        before, so later test modules see the cluster they expect. Yields kubectl's output."""
        had = {name for name in admission_policies()
               if self.kubectl("get", "validatingadmissionpolicy", name, check=False).returncode == 0}
        out = self.kubectl("apply", "-k", str(MANIFESTS)).stdout
        try:
            if wait_enforced:
                self.wait_until_policy_enforced()
            yield out
        finally:
            self.remove_admission_policies(keep=had)

    def remove_admission_policies(self, keep: set[str] = frozenset()) -> None:
        """Delete scalegate's admission policies and their bindings (all of
        manifests/base/admission/ but those in `keep`), so later tests see a cluster without them."""
        names = [name for name in admission_policies() if name not in keep]
        if names:
            self.kubectl("delete", *[f"validatingadmissionpolicybinding/{n}" for n in names],
                         *[f"validatingadmissionpolicy/{n}" for n in names], "--ignore-not-found")

    def ensure_no_admission_policies(self) -> None:
        """For modules that test the CRDs or the operator alone: remove scalegate's
        admission policies if an earlier module left them, and wait until the API server
        admits what they would refuse (a proposal with neither label nor proposer)."""
        self.remove_admission_policies()
        probe = self.create_namespace("no-vap-probe")
        try:
            def admitted() -> bool:
                body = {"apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingProposal",
                        "metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}"},
                        "spec": {"policyRef": {"name": "p"},
                                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                                 "currentReplicas": 1, "replicas": 2, "validUntil": "2099-01-01T00:00:00Z",
                                 "reason": "probe"}}
                try:
                    self.custom().create_namespaced_custom_object("scalegate.io", "v1alpha1", probe,
                                                                  "scalingproposals", body)
                except kubernetes.client.ApiException as err:
                    if err.status in (403, 422):
                        return False
                    raise
                return True
            wait_for(admitted, timeout=60, interval=0.5, message="the admission policies to be gone")
        finally:
            self.delete_namespace(probe)

    @contextlib.contextmanager
    def gitops_identities(self, *users: str):
        """For a block, list `users` in the GitOpsApprovers object `scalegate`, the admission
        policy scalegate-gitops's parameters: who may create a proposal already approved (the
        GitOps path). Restored afterwards. The API server reads the change within a moment, so
        retry the first such create until scalegate-gitops admits it."""
        custom = self.custom()
        args = ("scalegate.io", "v1alpha1", "gitopsapprovers", "scalegate")
        before = (custom.get_cluster_custom_object(*args).get("spec") or {}).get("identities") or []
        custom.patch_cluster_custom_object(*args, {"spec": {"identities": list(users)}})
        try:
            yield
        finally:
            custom.patch_cluster_custom_object(*args, {"spec": {"identities": before}})

    def wait_until_policy_enforced(self) -> None:
        """A new admission policy is enforced once the API server has loaded it: poll with
        a request it must deny (a proposal with a forged proposer), never sleep."""
        probe = self.create_namespace("vap-probe")
        try:
            def denied() -> bool:
                body = {"apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingProposal",
                        "metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}", "labels": {"scalegate.io/policy": "p"},
                                     "annotations": {"scalegate.io/proposed-by": "somebody-else"}},
                        "spec": {"policyRef": {"name": "p"},
                                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                                 "currentReplicas": 1, "replicas": 2, "validUntil": "2099-01-01T00:00:00Z",
                                 "reason": "probe"}}
                try:
                    self.custom().create_namespaced_custom_object("scalegate.io", "v1alpha1", probe,
                                                                  "scalingproposals", body)
                except kubernetes.client.ApiException as err:
                    return err.status == 403 and APPROVAL_POLICY in err.body
                return False
            wait_for(denied, timeout=60, interval=0.5, message="the admission policy to be enforced")
        finally:
            self.delete_namespace(probe)

    def component_kubeconfigs(self, directory: Path) -> dict[str, Path]:
        """Install the components' ServiceAccounts and RBAC from manifests/, and return
        kubeconfigs with real tokens of scalegate:operator and scalegate:forecaster."""
        self.kubectl("apply", "-f", str(MANIFESTS / "base" / "namespace.yaml"))
        self.kubectl("apply", "-f", str(MANIFESTS / "base" / "rbac"))
        return {name: self.service_account_kubeconfig("scalegate", name, directory)
                for name in ("operator", "forecaster")}

    def create_namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core().create_namespace({"metadata": {"name": name, "labels": {"scalegate.io/test": "true"}}})
        return name

    def delete_namespace(self, name: str) -> None:
        try:
            self.core().delete_namespace(name)
        except kubernetes.client.ApiException as err:
            if err.status != 404:
                raise

    def service_account_kubeconfig(self, namespace: str, name: str, directory: Path,
                                   ttl_seconds: int = 3600) -> Path:
        """A kubeconfig carrying a real token of ServiceAccount namespace/name (TokenRequest),
        so a component runs with exactly that account's rights."""
        from scalegate.dev import write_kubeconfig

        token = self.core().create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": ttl_seconds}}).status.token
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        ca = directory / f"ca-{namespace}-{name}.crt"
        import base64

        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        path = directory / f"kubeconfig-{namespace}-{name}"
        return write_kubeconfig(path, cluster["server"], ca, f"system:serviceaccount:{namespace}:{name}",
                                token=token)


def reapply_changes(cluster: Cluster, apply_output: str, before: dict[str, str]) -> list[str]:
    """The lines of a second `kubectl apply` that report a change, less the
    PodDisruptionBudgets whose resourceVersion did not move (`before`: name -> version): a
    PDB's selector has the patch strategy "replace", so client-side apply always sends it
    and says "configured" though the API server changes nothing."""
    changed = []
    for line in apply_output.splitlines():
        if not line.strip() or line.endswith(" unchanged"):
            continue
        name = line.split()[0]
        if name.startswith("poddisruptionbudget.policy/") and name.split("/", 1)[1] in before:
            now = pdb_versions(cluster)
            if now.get(name.split("/", 1)[1]) == before[name.split("/", 1)[1]]:
                continue
        changed.append(line)
    return changed


def pdb_versions(cluster: Cluster, namespace: str = "scalegate") -> dict[str, str]:
    """name -> resourceVersion of the PodDisruptionBudgets in `namespace`."""
    items = json.loads(cluster.kubectl("get", "pdb", "-n", namespace, "-o", "json").stdout)["items"]
    return {item["metadata"]["name"]: item["metadata"]["resourceVersion"] for item in items}


def start_cluster() -> tuple[Cluster, Callable[[], None]]:
    """The cluster tests run against: SCALEGATE_TEST_KUBECONFIG if set (e.g. a kind
    cluster), else a fresh dev control plane private to this test session."""
    existing = os.environ.get("SCALEGATE_TEST_KUBECONFIG")
    if existing:
        return Cluster(kubeconfig=Path(existing)), lambda: None
    if not shutil.which("go") and not any((Path.home() / ".cache" / "scalegate" / "bin").glob("kube-apiserver-*")):
        raise RuntimeError("integration tests need the dev control plane, which needs Go to build once; "
                           "install Go or set SCALEGATE_TEST_KUBECONFIG to a cluster")
    state_dir = Path(tempfile.mkdtemp(prefix="scalegate-test-cluster-"))
    dev = DevCluster(state_dir=state_dir, log=lambda msg: print(f"[dev-cluster] {msg}", flush=True))
    dev.up()
    return Cluster(kubeconfig=dev.kubeconfig, dev=dev), dev.down


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
