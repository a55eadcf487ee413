"""Apply throughput and approval-to-apply latency of the operator, on the real dev control plane.

    .venv/bin/python benchmarks/apply_throughput.py            # N = 100 and 1000, 3 runs each, trickle of 30
    .venv/bin/python benchmarks/apply_throughput.py --sizes 100 --runs 1 --trickle 10

For each N and run: in a fresh namespace (deleted, with everything in it, before the next
run), N Deployments, each with a ScalingPolicy and one proposal, all approved at once;
reports time until all are Applied, applies per second, the latency from each approval
(the approving request returned) to the operator's Applied status (seen on a watch), and
the CPU time per apply of every process sharing the cores. Then a trickle: one approval per
second, and the same latency.

What it includes (as installed by `kubectl apply -k manifests/`, printed at the start): the
CRDs, the RBAC of manifests/base/rbac and every admission policy of manifests/base/admission,
enforced (probed before the first run). The operator runs as its ServiceAccount
scalegate:operator (a TokenRequest token) and so does nothing else; proposals are created by
scalegate:forecaster's token, naming it in scalegate.io/proposed-by and carrying the label
scalegate.io/policy, as the policies require; approvals come from the user bench-approver,
bound to the ClusterRole scalegate-approver (the verb approve), each checked by the API
server's authorizer in scalegate-approval. Policies and Deployments are created by the admin
(set-up, not measured). Not included: the forecaster's work, Pods (there is no kubelet).
Prints a table and a JSON summary (medians over runs). Goals on a 2-core machine with the
API server on it: 1,000 applied in <= 20 s; trickle p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import kubernetes

from scalegate.dev import DevCluster, kubectl_path, write_kubeconfig
from scalegate.dev.cluster import free_port, stop_process

REPO = Path(__file__).resolve().parent.parent
ADMISSION = REPO / "manifests" / "base" / "admission"
GROUP, VERSION = "scalegate.io", "v1alpha1"
APPROVER = "bench-approver"
OPERATOR = "system:serviceaccount:scalegate:operator"
FORECASTER = "system:serviceaccount:scalegate:forecaster"
PROPOSED_BY, POLICY_LABEL = "scalegate.io/proposed-by", "scalegate.io/policy"


def admission_policy_names() -> list[str]:
    import yaml

    return [doc["metadata"]["name"] for path in sorted(ADMISSION.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") == "ValidatingAdmissionPolicy"]


def includes() -> dict:
    """What the benchmark's cluster holds and who does what: printed with the figures."""
    return {"admission_policies": admission_policy_names(), "rbac": "manifests/base/rbac",
            "operator": OPERATOR, "proposals_created_by": FORECASTER,
            "approvals_by": f"{APPROVER} (ClusterRole scalegate-approver)", "policies_created_by": "admin"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (a profile of where the time goes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Bench:
    def __init__(self, workers: int):
        self.state = Path(tempfile.mkdtemp(prefix="scalegate-bench-"))
        self.dev = DevCluster(state_dir=self.state / "cluster", log=lambda m: print(f"# {m}", file=sys.stderr))
        self.dev.up()
        self.kubeconfig = self.dev.kubeconfig
        self.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        self.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "namespace.yaml"))
        self.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "rbac"))
        self.kubectl("apply", "-f", str(ADMISSION))
        self.kubectl("create", "clusterrolebinding", "bench-approver", "--clusterrole=scalegate-approver",
                     f"--user={APPROVER}")
        self.admin = self.client()
        self.approver = self.client(user=APPROVER)
        self.operator_kubeconfig = self.service_account_kubeconfig("operator")
        self.forecaster_kubeconfig = self.service_account_kubeconfig("forecaster")
        self.forecaster = self.client(kubeconfig=self.forecaster_kubeconfig)
        self.workers = workers
        self.operator: subprocess.Popen | None = None
        self.metrics_port = 0
        self.wait_admission_enforced()

    def service_account_kubeconfig(self, name: str) -> Path:
        """A kubeconfig with a real token of scalegate:NAME: the component with exactly its RBAC."""
        token = kubernetes.client.CoreV1Api(self.admin).create_namespaced_service_account_token(
            name, "scalegate", {"spec": {"expirationSeconds": 7200}}).status.token
        return write_kubeconfig(self.state / f"{name}.kubeconfig", self.dev.read_state().server,
                                self.dev.pki.ca_cert, f"system:serviceaccount:scalegate:{name}", token=token)

    def wait_admission_enforced(self, timeout: float = 120) -> None:
        """Poll until the API server enforces the admission policies on the paths measured:
        each probe must be refused by the policy it names (never sleep a guessed time)."""
        core, admin = kubernetes.client.CoreV1Api(self.admin), kubernetes.client.CustomObjectsApi(self.admin)
        forecaster = kubernetes.client.CustomObjectsApi(self.forecaster)
        namespace = f"bench-probe-{uuid.uuid4().hex[:5]}"
        core.create_namespace({"metadata": {"name": namespace}})
        admin.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingpolicies", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingPolicy", "metadata": {"name": "probe"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "probe"},
                     "minReplicas": 1, "maxReplicas": 2}})
        forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals",
                                                   proposal_body("probe", "probe", "probe"))

        def create(annotations: dict | None = None, labels: bool = True) -> None:
            body = proposal_body(f"probe-{uuid.uuid4().hex[:6]}", "probe", "probe")
            body["metadata"]["annotations"].update(annotations or {})
            if not labels:
                del body["metadata"]["labels"]
            forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals", body)

        probes = {
            "scalegate-approval": lambda: create({PROPOSED_BY: "somebody-else"}),
            "scalegate-proposal-label": lambda: create(labels=False),
            "scalegate-proposal-record": lambda: create({"scalegate.io/outcome": "{}"}),
            "scalegate-proposal-status": lambda: admin.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, "scalingproposals", "probe", {"status": {"message": uuid.uuid4().hex}}),
            "scalegate-policy-status": lambda: admin.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, "scalingpolicies", "probe", {"status": {"lastProposal": uuid.uuid4().hex}}),
        }
        deadline = time.monotonic() + timeout
        for name, attempt in probes.items():
            if name not in admission_policy_names():
                continue
            while True:
                try:
                    attempt()
                except kubernetes.client.ApiException as err:
                    if f"ValidatingAdmissionPolicy '{name}'" in (err.body or ""):
                        break
                    if err.status not in (403, 422):
                        raise
                if time.monotonic() > deadline:
                    raise RuntimeError(f"admission policy {name} is not enforced after {timeout:.0f}s")
                time.sleep(0.2)
        self.delete_namespace(namespace, wait=False)

    def kubectl(self, *args: str) -> None:
        subprocess.run([kubectl_path(), f"--kubeconfig={self.kubeconfig}", *args], check=True,
                       capture_output=True, text=True)

    def client(self, user: str | None = None, kubeconfig: Path | None = None) -> kubernetes.client.ApiClient:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig or self.kubeconfig), client_configuration=config)
        config.connection_pool_maxsize = 32
        client = kubernetes.client.ApiClient(config)
        if user:
            client.set_default_header("Impersonate-User", user)
        return client

    def start_operator(self, namespace: str) -> None:
        log = open(self.state / "operator.log", "ab")
        self.metrics_port = free_port()
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "scalegate.cli", "operator", "--kubeconfig", str(self.operator_kubeconfig),
             "--namespace", namespace, "--metrics-bind-address", f"127.0.0.1:{self.metrics_port}",
             "--health-probe-bind-address", "0",
             "--workers", str(self.workers)],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "scalegate operator started" not in (self.state / "operator.log").read_text(errors="replace"):
            if time.monotonic() > deadline or self.operator.poll() is not None:
                raise RuntimeError("operator did not start")
            time.sleep(0.1)

    def reconcile_errors(self) -> dict[str, float]:
        """scalegate_reconcile_errors_total by kind, from the running operator's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        errors = {}
        for line in text.splitlines():
            if line.startswith("scalegate_reconcile_errors_total{"):
                kind = line.split('error="', 1)[1].split('"', 1)[0]
                errors[kind] = float(line.rsplit(" ", 1)[1])
        return errors

    def operator_writes(self, namespace: str) -> dict[str, int]:
        """The operator's writes in `namespace` (see `writes_by`)."""
        return self.writes_by(OPERATOR, namespace)[0]

    def writes_by(self, user: str, namespace: str, since: int = 0) -> tuple[dict[str, int], int]:
        """`user`'s writes in `namespace` after the first `since` events of the API server's
        audit log (scalegate's objects and scales): 'verb resource[/subresource] HTTP-code'
        -> count; and the number of events now (the next call's `since`)."""
        events = self.dev.audit_events()
        counts: collections.Counter = collections.Counter()
        for event in events[since:]:
            ref = event.get("objectRef") or {}
            if (event.get("stage") == "ResponseComplete" and ref.get("namespace") == namespace
                    and (event.get("user") or {}).get("username") == user):
                what = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
                counts[f"{event.get('verb')} {what} {(event.get('responseStatus') or {}).get('code', 0)}"] += 1
        return dict(counts), len(events)

    def stop_operator(self) -> None:
        stop_process(self.operator, grace=30)

    def close(self) -> None:
        self.stop_operator()
        self.dev.down(quiet=True)

    # -- workload set-up ---------------------------------------------------------------
    def populate(self, namespace: str, count: int) -> list[str]:
        core = kubernetes.client.CoreV1Api(self.admin)
        core.create_namespace({"metadata": {"name": namespace}})
        apps = kubernetes.client.AppsV1Api(self.admin)
        custom = kubernetes.client.CustomObjectsApi(self.admin)
        forecaster = kubernetes.client.CustomObjectsApi(self.forecaster)

        def one(i: int) -> str:
            name = f"app-{i:05d}"
            labels = {"app": name}
            apps.create_namespaced_deployment(namespace, {
                "metadata": {"name": name}, "spec": {
                    "replicas": 2, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"containers": [{"name": "c", "image": "registry.invalid/c:1"}]}}}})
            target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingpolicies", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingPolicy", "metadata": {"name": name},
                "spec": {"targetRef": target, "minReplicas": 1, "maxReplicas": 10, "cooldownSeconds": 0}})
            forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals",
                                                       proposal_body(name, name, name))
            return name

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, range(count)))

    def delete_namespace(self, namespace: str, timeout: float = 600, wait: bool = True) -> None:
        """Delete a run's namespace and wait until it is gone (its Deployments, pods and
        proposals too), so that every run starts from the same cluster state."""
        core = kubernetes.client.CoreV1Api(self.admin)
        core.delete_namespace(namespace)
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                core.read_namespace(namespace)
            except kubernetes.client.ApiException as err:
                if err.status == 404:
                    return
                raise
            time.sleep(1.0)
        raise RuntimeError(f"namespace {namespace} still exists after {timeout:.0f}s")

    def wait_pending(self, namespace: str, count: int, timeout: float = 600) -> None:
        custom = kubernetes.client.CustomObjectsApi(self.admin)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals")["items"]
            if sum(1 for i in items if (i.get("status") or {}).get("phase") == "Pending") == count:
                return
            time.sleep(0.5)
        raise RuntimeError("proposals did not all become Pending")

    def approve(self, namespace: str, name: str) -> float:
        kubernetes.client.CustomObjectsApi(self.approver).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "scalingproposals", name,
            {"metadata": {"annotations": {"scalegate.io/approved": "true", "scalegate.io/approved-by": APPROVER}}})
        return time.monotonic()


def proposal_body(name: str, policy: str, target: str, current: int = 2, replicas: int = 3,
                  hours: float = 2.0) -> dict:
    """A proposal as the forecaster creates it: naming itself its proposer, labelled with its policy."""
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal",
            "metadata": {"name": name, "labels": {POLICY_LABEL: policy}, "annotations": {PROPOSED_BY: FORECASTER}},
            "spec": {"policyRef": {"name": policy},
                     "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "currentReplicas": current, "replicas": replicas, "validUntil": until, "reason": "benchmark"}}


class AppliedWatcher(threading.Thread):
    """Records when each proposal is first seen Applied, from a watch (client-side clock)."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str):
        super().__init__(daemon=True)
        self.api, self.namespace = api, namespace
        self.applied: dict[str, float] = {}
        self._stop = threading.Event()

    def run(self) -> None:
        custom = kubernetes.client.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                          "scalingproposals", timeout_seconds=5):
                    obj = event["object"]
                    if (obj.get("status") or {}).get("phase") == "Applied":
                        self.applied.setdefault(obj["metadata"]["name"], time.monotonic())
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


def _watched(bench: Bench, prefix: str, count: int) -> tuple[str, list[str], AppliedWatcher]:
    """`count` pending proposals in a fresh namespace, the operator running, a watch open."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:5]}"
    names = bench.populate(namespace, count)
    bench.start_operator(namespace)
    bench.wait_pending(namespace, count)
    watcher = AppliedWatcher(bench.admin, namespace)
    watcher.start()
    time.sleep(1.0)  # let the watch connect before the first approval
    return namespace, names, watcher


def _latency_figures(watcher: AppliedWatcher, names: list[str], approved: dict[str, float], count: int,
                     timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while len(watcher.applied) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher.stop()
    latencies = [watcher.applied[n] - approved[n] for n in names if n in watcher.applied]
    return {"n": count, "applied": len(watcher.applied), "latency_p50": percentile(latencies, 50),
            "latency_p95": percentile(latencies, 95), "latency_p99": percentile(latencies, 99)}


def process_cpu(bench: Bench) -> dict[str, float]:
    """CPU seconds so far of every process on the machine's two cores that the burst loads."""
    pids = {proc.name: proc.pid for proc in bench.dev.read_state().processes}
    pids.update(operator=bench.operator.pid, benchmark=os.getpid())
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def burst(bench: Bench, count: int) -> dict:
    namespace = None
    try:
        namespace, names, watcher = _watched(bench, f"burst-{count}", count)
        cpu_before = process_cpu(bench)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            approved = dict(zip(names, pool.map(lambda n: bench.approve(namespace, n), names), strict=True))
        figures = _latency_figures(watcher, names, approved, count, timeout=600)
        cpu_after = process_cpu(bench)
        applied = max(1, len(watcher.applied))
        # Where the time goes: CPU per apply of each process (they share two cores).
        cpu_ms = {name: round(1000 * (cpu_after[name] - cpu_before[name]) / applied, 2) for name in cpu_before}
        total = (max(watcher.applied.values()) if watcher.applied else float("nan")) - started
        errors = bench.reconcile_errors()
        writes = bench.operator_writes(namespace)
        succeeded = sum(n for key, n in writes.items() if key.rsplit(" ", 1)[1].startswith("2"))
        figures.update(total_seconds=total,
                       applies_per_second=len(watcher.applied) / total if total > 0 else float("nan"),
                       operator_cpu_ms_per_apply=cpu_ms["operator"], cpu_ms_per_apply=cpu_ms,
                       operator_writes_per_apply=round(succeeded / applied, 2),
                       operator_refused_writes=sum(writes.values()) - succeeded,
                       operator_writes=writes, reconcile_errors=errors)
        return figures
    finally:
        bench.stop_operator()
        if namespace:
            bench.delete_namespace(namespace)


def trickle(bench: Bench, count: int) -> dict:
    namespace = None
    try:
        namespace, names, watcher = _watched(bench, "trickle", count)
        approved = {}
        for name in names:
            approved[name] = bench.approve(namespace, name)
            time.sleep(1.0)
        return _latency_figures(watcher, names, approved, count, timeout=60)
    finally:
        bench.stop_operator()
        if namespace:
            bench.delete_namespace(namespace)


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trickle", type=int, default=30, help="approvals in the one-per-second trickle (0: skip)")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()

    print(f"# includes: {json.dumps(includes())}", file=sys.stderr, flush=True)
    bench = Bench(workers=args.workers)
    summary: dict = {"includes": includes(), "bursts": {}, "trickle": None, "cpus": os.cpu_count(),
                     "load_average_at_start": os.getloadavg()}
    try:
        for size in args.sizes:
            runs = [burst(bench, size) for _ in range(args.runs)]
            summary["bursts"][size] = {
                "runs": runs,
                "median": {k: median_of(runs, k) for k in runs[0]
                           if k not in ("n", "cpu_ms_per_apply", "operator_writes", "reconcile_errors")},
                "median_cpu_ms_per_apply": {name: statistics.median(r["cpu_ms_per_apply"][name] for r in runs)
                                            for name in runs[0]["cpu_ms_per_apply"]},
            }
        if args.trickle:
            summary["trickle"] = trickle(bench, args.trickle)
    finally:
        bench.close()

    print("includes: admission policies " + ", ".join(summary["includes"]["admission_policies"])
          + f"; RBAC of manifests/; operator as {OPERATOR}; proposals by {FORECASTER};"
          f" approvals by {APPROVER} (verb approve)")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in summary['load_average_at_start'])}"
          f" on {os.cpu_count()} cores (other work on the machine shares them)")
    print(f"{'N':>6} {'applied':>8} {'total s':>8} {'applies/s':>10} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} "
          f"{'op cpu ms/apply':>16}")
    for size, data in summary["bursts"].items():
        m = data["median"]
        print(f"{size:>6} {m['applied']:>8.0f} {m['total_seconds']:>8.2f} {m['applies_per_second']:>10.1f} "
              f"{m['latency_p50']:>7.2f} {m['latency_p95']:>7.2f} {m['latency_p99']:>7.2f} "
              f"{m['operator_cpu_ms_per_apply']:>16.1f}")
    for size, data in summary["bursts"].items():
        profile = data["median_cpu_ms_per_apply"]
        print(f"CPU ms per apply, N={size}: " + ", ".join(f"{name} {ms:.1f}" for name, ms in profile.items())
              + f" (sum {sum(profile.values()):.1f}; 2 cores give {2000 / data['median']['applies_per_second']:.1f})")
    for size, data in summary["bursts"].items():
        last = data["runs"][-1]
        print(f"operator writes, N={size} (audit log, last run): {last['operator_writes_per_apply']:.2f} per apply,"
              f" {last['operator_refused_writes']} refused; reconcile errors retried: {last['reconcile_errors'] or 0}")
    if summary["trickle"]:
        t = summary["trickle"]
        print(f"trickle (1/s, n={t['n']}): p50 {t['latency_p50']:.3f}s  p95 {t['latency_p95']:.3f}s  "
              f"p99 {t['latency_p99']:.3f}s")
    print(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
