"""Apply throughput and approval-to-apply latency of the operator, on the real dev control plane.

    .venv/bin/python benchmarks/apply_throughput.py            # N = 100 and 1000, 3 runs each, trickle of 30
    .venv/bin/python benchmarks/apply_throughput.py --sizes 100 --runs 1 --trickle 10

For each N and run: in a fresh namespace (deleted, with everything in it, before the next
run), N Deployments, each with a ScalingPolicy and one proposal, all approved at once;
reports time until all are Applied, applies per second, the latency from each approval
(the approving request returned) to the operator's Applied status (seen on a watch), and
the CPU time per apply of every process sharing the cores. Then a trickle: one approval per
second, and the same latency. The operator runs as its own ServiceAccount with the RBAC from
manifests/, and so does nothing else.
Prints a table and a JSON summary (medians over runs). Goals on a 2-core machine with the
API server on it: 1,000 applied in <= 20 s; trickle p99 <= 1 s.
"""

from __future__ import annotations

import argparse
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
import uuid
from pathlib import Path

import kubernetes

from scalegate.dev import DevCluster, kubectl_path, write_kubeconfig
from scalegate.dev.cluster import stop_process

REPO = Path(__file__).resolve().parent.parent
GROUP, VERSION = "scalegate.io", "v1alpha1"
APPROVER = "bench-approver"


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
        self.kubectl("create", "clusterrolebinding", "bench-approver", "--clusterrole=scalegate-approver",
                     f"--user={APPROVER}")
        self.admin = self.client()
        self.approver = self.client(user=APPROVER)
        token = kubernetes.client.CoreV1Api(self.admin).create_namespaced_service_account_token(
            "operator", "scalegate", {"spec": {"expirationSeconds": 7200}}).status.token
        self.operator_kubeconfig = write_kubeconfig(
            self.state / "operator.kubeconfig", self.dev.read_state().server, self.dev.pki.ca_cert,
            "system:serviceaccount:scalegate:operator", token=token)
        self.workers = workers
        self.operator: subprocess.Popen | None = None

    def kubectl(self, *args: str) -> None:
        subprocess.run([kubectl_path(), f"--kubeconfig={self.kubeconfig}", *args], check=True,
                       capture_output=True, text=True)

    def client(self, user: str | None = None) -> kubernetes.client.ApiClient:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=config)
        config.connection_pool_maxsize = 32
        client = kubernetes.client.ApiClient(config)
        if user:
            client.set_default_header("Impersonate-User", user)
        return client

    def start_operator(self, namespace: str) -> None:
        log = open(self.state / "operator.log", "ab")
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "scalegate.cli", "operator", "--kubeconfig", str(self.operator_kubeconfig),
             "--namespace", namespace, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
             "--workers", str(self.workers)],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "scalegate operator started" not in (self.state / "operator.log").read_text(errors="replace"):
            if time.monotonic() > deadline or self.operator.poll() is not None:
                raise RuntimeError("operator did not start")
            time.sleep(0.1)

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
        until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

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
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal",
                "metadata": {"name": name, "labels": {"scalegate.io/policy": name}},
                "spec": {"policyRef": {"name": name}, "targetRef": target, "currentReplicas": 2, "replicas": 3,
                         "validUntil": until, "reason": "benchmark"}})
            return name

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, range(count)))

    def delete_namespace(self, namespace: str, timeout: float = 600) -> None:
        """Delete a run's namespace and wait until it is gone (its Deployments, pods and
        proposals too), so that every run starts from the same cluster state."""
        core = kubernetes.client.CoreV1Api(self.admin)
        core.delete_namespace(namespace)
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
        figures.update(total_seconds=total,
                       applies_per_second=len(watcher.applied) / total if total > 0 else float("nan"),
                       operator_cpu_ms_per_apply=cpu_ms["operator"], cpu_ms_per_apply=cpu_ms)
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

    bench = Bench(workers=args.workers)
    summary: dict = {"bursts": {}, "trickle": None, "cpus": os.cpu_count()}
    try:
        for size in args.sizes:
            runs = [burst(bench, size) for _ in range(args.runs)]
            summary["bursts"][size] = {
                "runs": runs,
                "median": {k: median_of(runs, k) for k in runs[0] if k not in ("n", "cpu_ms_per_apply")},
                "median_cpu_ms_per_apply": {name: statistics.median(r["cpu_ms_per_apply"][name] for r in runs)
                                            for name in runs[0]["cpu_ms_per_apply"]},
            }
        if args.trickle:
            summary["trickle"] = trickle(bench, args.trickle)
    finally:
        bench.close()

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
    if summary["trickle"]:
        t = summary["trickle"]
        print(f"trickle (1/s, n={t['n']}): p50 {t['latency_p50']:.3f}s  p95 {t['latency_p95']:.3f}s  "
              f"p99 {t['latency_p99']:.3f}s")
    print(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
