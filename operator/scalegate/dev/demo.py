"""`scalegate demo`: the whole loop on a real control plane, from a fresh machine.

A local control plane (or the current cluster), a real Prometheus replaying a recorded
real load series, scalegate's CRDs, RBAC and admission policy, the operator running as its
ServiceAccount, and one forecaster round; then it prints the pending proposal (by default
a plan for the next day: the demo's policy sets planHorizonSeconds and planStepSeconds),
shows it as an approver sees it (`kubectl scalegate show`) and prints the exact commands to
approve it. Approving scales the sample workload, step by step for a plan. `scalegate demo
down` stops everything the demo started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Callable

import kubernetes
import yaml

from ..forecast import load_csv
from ..forecast.prometheus import PrometheusSettings, PrometheusSource
from ..forecaster import Forecaster
from ..kube import Kube, api_client
from .build import default_cache_dir, kubectl_path
from .cluster import DevCluster, write_kubeconfig
from .localprom import LocalPrometheus, backfill, binaries_available, selector, shift_to_end

NAMESPACE = "scalegate-demo"
METRIC = "http_requests_per_minute"
#: The demo's policy proposes a plan for the next day, one step an hour: one approval a day.
PLAN_HORIZON_SECONDS = 86400
PLAN_STEP_SECONDS = 3600

Log = Callable[[str], None]


def demo_dir() -> Path:
    override = os.environ.get("SCALEGATE_DEMO_DIR")
    return Path(override).expanduser() if override else default_cache_dir() / "demo"


def _state_file() -> Path:
    return demo_dir() / "state.json"


def _reachable(kubeconfig: str | None) -> bool:
    try:
        client = api_client(kubeconfig)
        kubernetes.client.VersionApi(client).get_code(_request_timeout=5)
        return True
    except Exception:
        return False


def _kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    proc = subprocess.run([kubectl_path(), f"--kubeconfig={kubeconfig}", *args], input=input,
                          capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _token_kubeconfig(admin: Path, namespace: str, account: str, out: Path) -> Path:
    client = api_client(str(admin))
    request = kubernetes.client.AuthenticationV1TokenRequest(
        spec=kubernetes.client.V1TokenRequestSpec(expiration_seconds=86400))
    issued = kubernetes.client.CoreV1Api(client).create_namespaced_service_account_token(account, namespace, request)
    token = issued.status.token if issued.status else None
    if not token:
        raise RuntimeError(f"the API server issued no token for {namespace}/{account}")
    config = yaml.safe_load(admin.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
    ca = out.parent / f"{account}-ca.crt"
    if "certificate-authority-data" in cluster:
        import base64

        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    else:
        shutil.copyfile(cluster["certificate-authority"], ca)
    return write_kubeconfig(out, cluster["server"], ca, f"system:serviceaccount:{namespace}:{account}", token=token)


def load_demo_series():
    """The shipped recorded series, as requests per minute."""
    with resources.as_file(resources.files("scalegate.dev") / "data" / "nasa_http_jul95_5min_14d.csv") as path:
        per_bucket = load_csv(path)
    return per_bucket / 5.0


def up(kubeconfig: str | None = None, dev_cluster: bool = False, approve: bool = False, log: Log = print) -> int:
    if _state_file().exists():
        log(f"a demo is already set up (state in {demo_dir()}); run `scalegate demo down` first")
        return 1
    if not binaries_available():
        log("error: the demo needs Debian's prometheus package (prometheus and promtool on PATH)")
        return 1
    directory = demo_dir()
    directory.mkdir(parents=True, exist_ok=True)
    state: dict = {"namespace": NAMESPACE}
    try:
        return _up(directory, state, kubeconfig, dev_cluster, approve, log)
    finally:
        _state_file().write_text(json.dumps(state, indent=2))


def _up(directory: Path, state: dict, kubeconfig: str | None, dev_cluster: bool, approve: bool, log: Log) -> int:
    total = 8 if approve else 7
    step = iter(range(1, total + 1))

    # 1. A cluster.
    current = kubeconfig or os.environ.get("KUBECONFIG") or (
        str(Path.home() / ".kube" / "config") if (Path.home() / ".kube" / "config").exists() else None)
    if not dev_cluster and current and _reachable(current):
        admin = Path(current)
        log(f"[{next(step)}/{total}] using the current cluster from {admin}")
    else:
        log(f"[{next(step)}/{total}] starting a local control plane (etcd + kube-apiserver + controller-manager)")
        cluster = DevCluster(log=lambda m: log(f"      {m}"))
        already_running = cluster.read_state() is not None
        cluster.up()
        admin = cluster.kubeconfig
        if not already_running:  # `demo down` stops only what the demo started
            state["devCluster"] = str(cluster.state_dir)
        else:
            log("      a local control plane was already running: the demo uses it and leaves it running")
    state["kubeconfig"] = str(admin)
    admin_kube = Kube(api_client(str(admin)))
    admin_user = admin_kube.whoami()

    # 2. scalegate's API, RBAC and admission policy (the operator runs locally, below).
    log(f"[{next(step)}/{total}] installing scalegate's CRDs, RBAC and approval admission policy")
    with resources.as_file(resources.files("scalegate.dev") / "install") as install:
        # Resolved: in a source tree install/crds is a symlink, which kubectl's -f reads as a file.
        _kubectl(admin, "apply", "--server-side", "--force-conflicts", "-f", str((install / "crds").resolve()))
        _kubectl(admin, "wait", "--for=condition=Established", "--timeout=60s",
                 "crd/scalingpolicies.scalegate.io", "crd/scalingproposals.scalegate.io")
        base = install / "manifests" / "base"
        for part in ("namespace.yaml", "rbac", "admission"):
            _kubectl(admin, "apply", "-f", str(base / part))

    # 3. Prometheus with two weeks of real load, ending now.
    log(f"[{next(step)}/{total}] starting Prometheus with 14 days of recorded NASA web traffic, shifted to end now")
    series = shift_to_end(load_demo_series())
    labels = {"namespace": NAMESPACE, "app": "web"}
    data = directory / "prometheus-data"
    shutil.rmtree(data, ignore_errors=True)
    backfill(data, METRIC, [(series, labels)])
    prometheus = LocalPrometheus(data, detached=True).start()
    state.update(prometheusPid=prometheus.pid, prometheusUrl=prometheus.url)
    query = selector(METRIC, labels)
    log(f"      {prometheus.url}  query: {query}")

    # 4. A workload and its policy; the admin may approve in the demo namespace.
    capacity = round(float(series.quantile(0.99)) / 20, 2)
    log(f"[{next(step)}/{total}] creating namespace {NAMESPACE}: Deployment web (2 replicas) and ScalingPolicy web "
        f"({capacity} requests/min per replica, 1..40 replicas)")
    _kubectl(admin, "apply", "-f", "-", input=_workload_yaml(query, capacity, admin_user))

    # 5. The operator, as scalegate:operator.
    log(f"[{next(step)}/{total}] starting the operator as system:serviceaccount:scalegate:operator")
    operator_kubeconfig = _token_kubeconfig(admin, "scalegate", "operator", directory / "operator.kubeconfig")
    with open(directory / "operator.log", "ab") as out:
        operator = subprocess.Popen(
            [sys.executable, "-m", "scalegate.cli", "operator", "--kubeconfig", str(operator_kubeconfig),
             "--namespace", NAMESPACE, "--metrics-bind-address", "0", "--health-probe-bind-address", "0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    state["operatorPid"] = operator.pid
    _wait_for_text(directory / "operator.log", "scalegate operator started", operator)

    # 6. One forecast round, as scalegate:forecaster.
    log(f"[{next(step)}/{total}] one forecast round as system:serviceaccount:scalegate:forecaster")
    forecaster_kubeconfig = _token_kubeconfig(admin, "scalegate", "forecaster", directory / "forecaster.kubeconfig")
    kube = Kube(api_client(str(forecaster_kubeconfig)), component="scalegate-forecaster")
    forecaster = Forecaster(kube=kube, source=PrometheusSource(PrometheusSettings(url=prometheus.url)))
    policy = kube.get_policy(NAMESPACE, "web")
    if policy is None:
        raise RuntimeError(f"the policy {NAMESPACE}/web applied above is gone")
    result = forecaster.run_policy(policy)
    log(f"      {result.outcome}: {result.message}")
    if result.proposal is None:
        log("      no proposal this round (see the reason above); the policy's status says the same:")
        log(f"      kubectl get spol web -n {NAMESPACE} -o yaml")
        return 0
    name = result.proposal["metadata"]["name"]
    schedule = result.proposal["spec"].get("schedule") or []
    is_plan = bool(schedule)
    if not is_plan:  # the policy asks for plans: a single change here is a bug to see, not to hide
        log(f"      warning: the policy asks for plans, but {name} is a single change")
    else:
        log(f"      a plan of {len(schedule)} steps, from {schedule[0]['at']} to {result.proposal['spec']['endsAt']}")

    # 7. What a person sees: the pending proposal, and the proposal as `kubectl scalegate show` prints it.
    log(f"[{next(step)}/{total}] pending proposals, and {name} as an approver sees it "
        f"(kubectl scalegate show {name} -n {NAMESPACE}):")
    # Watched as the admin: the forecaster may create proposals but not read them.
    _wait_phase(admin_kube, name, "Pending")
    for line in _kubectl(admin, "get", "sprop", "-n", NAMESPACE, "-o", "wide").splitlines():
        log(f"      {line}")
    log("")
    for line in _plugin(admin, "show", name, "-n", NAMESPACE).splitlines():
        log(f"      {line}")
    log(_instructions(admin, admin_user, name, is_plan, prometheus.url))

    # 8. Optionally approve as the admin, with the command a person uses, and watch it apply.
    if approve:
        log(f"[{next(step)}/{total}] approving as {admin_user}: kubectl scalegate approve --all -n {NAMESPACE} --yes")
        for line in _plugin(admin, "approve", "--all", "-n", NAMESPACE, "--yes", "--reason",
                            "approved by `scalegate demo --approve`").splitlines():
            log(f"      {line}")
        # A plan is Active once its first step is applied (Applied after its end); a single change Applied.
        status = _wait_phase(admin_kube, name, "Active" if is_plan else "Applied")
        log(f"      {status.get('phase')}: {status.get('message')}")
        if is_plan:
            # The receipt of the step in effect, and when the operator's timer applies the next.
            for receipt in status.get("steps") or []:
                log(f"      step at {receipt.get('at')}: {receipt.get('outcome')} at {receipt.get('appliedAt')}, "
                    f"{receipt.get('previousReplicas')} -> {receipt.get('replicas')} replicas")
            log(f"      next step at {status.get('nextStepAt') or '- (none: this was the last)'}")
            for line in _plugin(admin, "list", "-n", NAMESPACE, "-o", "wide").splitlines():
                log(f"      {line}")
        for line in _kubectl(admin, "get", "deploy", "web", "-n", NAMESPACE).splitlines():
            log(f"      {line}")
    return 0


def _plugin(kubeconfig: Path, *args: str) -> str:
    """`kubectl scalegate ARGS` (the plugin, run as kubectl would run it), its output."""
    proc = subprocess.run([sys.executable, "-m", "scalegate.plugin.cli", "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl scalegate {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _workload_yaml(query: str, capacity: float, approver: str) -> str:
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NAMESPACE}, labels: {{app: web}}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: nginxinc/nginx-unprivileged:1.27-alpine}}]
---
apiVersion: scalegate.io/v1alpha1
kind: ScalingPolicy
metadata: {{name: web, namespace: {NAMESPACE}}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  minReplicas: 1
  maxReplicas: 40
  maxStepUp: 20
  maxStepDown: 10
  cooldownSeconds: 300
  proposalTTLSeconds: 3600
  forecast:
    query: '{query}'
    capacityPerReplica: {capacity}
    horizonSeconds: 3600
    lookbackSeconds: 1209600
    stepSeconds: 300
    confidence: 0.95
    # A plan for the next day, one step an hour: approved once, applied step by step.
    planHorizonSeconds: {PLAN_HORIZON_SECONDS}
    planStepSeconds: {PLAN_STEP_SECONDS}
---
# In the demo, you (the cluster admin) may approve proposals in this namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: demo-approver, namespace: {NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: scalegate-approver}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{approver}"}}]
"""


def _instructions(admin: Path, user: str, name: str, is_plan: bool, prometheus_url: str) -> str:
    kubectl = "kubectl" if shutil.which("kubectl") else kubectl_path()
    venv_bin = Path(sys.executable).parent
    what = ("the plan for the next day (one approval: the operator applies each step at its time)" if is_plan
            else "the proposal")
    return f"""
  To look at the evidence and approve {what}, as you ({user}):

    export KUBECONFIG={admin}
    export PATH="{venv_bin}:$PATH"    # puts the kubectl plugin (kubectl-scalegate) on PATH
    {kubectl} scalegate show {name} -n {NAMESPACE}
    {kubectl} scalegate explain {name} -n {NAMESPACE} --prometheus-url {prometheus_url} --plot {name}.png
    {kubectl} scalegate approve --all -n {NAMESPACE}     # every pending proposal here, asking before each

  or approve this one alone:

    {kubectl} scalegate approve {name} -n {NAMESPACE} --reason "looks right"
    {kubectl} annotate sprop {name} -n {NAMESPACE} scalegate.io/approved=true scalegate.io/approved-by={user}

  then watch the operator apply it{" step by step" if is_plan else ""} and the Deployment scale:

    {kubectl} scalegate list -n {NAMESPACE} -o wide
    {kubectl} get sprop,deploy -n {NAMESPACE}

  Tear everything down with:  scalegate demo down
"""


def _wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited; see {path}")
        time.sleep(0.2)
    raise RuntimeError(f"the operator did not start in {timeout:.0f}s; see {path}")


def _wait_phase(kube: Kube, name: str, phase: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = (kube.get_proposal(NAMESPACE, name) or {}).get("status") or {}
        if status.get("phase") == phase:
            return status
        time.sleep(0.2)
    raise RuntimeError(f"proposal {name} did not become {phase} in {timeout:.0f}s (status: {status})")


def _terminate(pid: int, grace: float = 20.0) -> bool:
    """SIGTERM, wait for the exit, SIGKILL after `grace`; False if it was not running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def down(log: Log = print) -> int:
    state_file = _state_file()
    if not state_file.exists():
        log("no demo is set up")
        return 0
    state = json.loads(state_file.read_text())
    for key in ("operatorPid", "prometheusPid"):
        pid = state.get(key)
        if pid and _terminate(pid):
            log(f"stopped {key[:-3]} (pid {pid})")
    if state.get("devCluster"):
        DevCluster(state_dir=Path(state["devCluster"]), log=log).down()
    elif state.get("kubeconfig"):
        subprocess.run([kubectl_path(), f"--kubeconfig={state['kubeconfig']}", "delete", "namespace", NAMESPACE,
                        "--ignore-not-found", "--wait=false"], capture_output=True)
        log(f"deleted namespace {NAMESPACE} (scalegate's CRDs and manifests stay installed)")
    shutil.rmtree(demo_dir(), ignore_errors=True)
    log("demo torn down")
    return 0
