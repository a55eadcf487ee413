"""Operator memory (RSS) while it watches many proposals, most of them terminal, applies
approvals and sweeps old ones, on the real dev control plane.

    .venv/bin/python benchmarks/operator_memory.py                  # 5,000 proposals, 100 Pending
    .venv/bin/python benchmarks/operator_memory.py --proposals 20000 --pending 200

Set-up is apply_throughput.py's `Bench` (a private dev cluster, the CRDs, the RBAC and every
admission policy of manifests/, enforced; TokenRequest kubeconfigs of scalegate:operator and
scalegate:forecaster), loaded from that file. In one namespace: `--policies` ScalingPolicies
and their Deployments, each with its share of proposals created by the forecaster's token
(with their forecast evidence); all but `--pending` of them are made terminal (Applied,
Rejected, Expired in turn) as the operator records them, as its identity (the admission
policies let nobody else): the outcome annotation scalegate.io/outcome, then status. Half of
the terminal ones were decided `--old-days` ago, past the operator's retention (7 days), so
the garbage collector deletes them; the newest proposal of each policy stays Pending.

Two runs of `scalegate operator --namespace NS --gc-interval G`, each as its ServiceAccount:
  1. baseline: the same namespace before any proposal exists (0 proposals);
  2. loaded: after all proposals exist. The API server sends the operator only proposals
     that are not terminal (a field selector on status.phase), so it is ready when the gauge
     scalegate_proposals_active on its /metrics port equals their number (still for 2 s).
Each run then samples VmRSS from /proc/PID/status every `--interval` seconds for at least
`--sample-seconds`. In the loaded run, while it samples: every Pending proposal is approved
at once by a user holding the verb approve, and the operator applies them (scaling the
Deployments); and its garbage collector sweeps (every G seconds from start-up, paging
through every proposal), deleting the old terminal ones. Sampling goes on until both are
done (the applies seen in status, the deletions in scalegate_proposals_garbage_collected_total)
and the window is over. Reported: median and max RSS in the window, the RSS right after
start-up, VmHWM (the peak, which includes the initial listing), the applies and deletions
seen in the window. Goal: loaded max RSS <= 150 MB. Prints a table and a JSON summary.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

import kubernetes

from scalegate.dev.cluster import free_port, stop_process
from scalegate.records import OUTCOME, OutcomeRecord

GOAL_MB = 150.0
GROUP, VERSION = "scalegate.io", "v1alpha1"
TERMINAL_PHASES = ("Applied", "Rejected", "Expired")


def load_apply_throughput():
    """benchmarks/apply_throughput.py as a module (benchmarks/ is no package)."""
    if "scalegate_bench_apply_throughput" in sys.modules:
        return sys.modules["scalegate_bench_apply_throughput"]
    path = Path(__file__).resolve().with_name("apply_throughput.py")
    spec = importlib.util.spec_from_file_location("scalegate_bench_apply_throughput", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def mb(kb: float) -> float:
    return kb / 1024


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- objects ---------------------------------------------------------------------------
def proposal_body(namespace: str, policy: str, name: str, valid_until: dt.datetime, now: dt.datetime) -> dict:
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": policy}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal",
        "metadata": {"name": name, "labels": {"scalegate.io/policy": policy},
                     "annotations": {"scalegate.io/proposed-by": "system:serviceaccount:scalegate:forecaster"}},
        "spec": {
            "policyRef": {"name": policy}, "targetRef": target, "currentReplicas": 4, "replicas": 6,
            "validUntil": stamp(valid_until),
            "reason": "peak of 290 req/s (95% upper bound) expected at 21:10; 6 x 50 req/s covers it",
            "forecast": {
                "model": "holt-winters(additive, seasonal=288)",
                "query": f'sum(rate(http_requests_total{{namespace="{namespace}",app="{policy}"}}[5m]))',
                "window": {"start": stamp(now - dt.timedelta(days=14)), "end": stamp(now), "points": 4032},
                "horizonSeconds": 3600, "resolutionSeconds": 300, "predictedPeak": 262.5,
                "peakTime": stamp(now + dt.timedelta(minutes=40)), "upperBound": 290.25, "lowerBound": 240.0,
                "confidence": 0.95, "coverage": 0.94, "capacityPerReplica": 50,
                "backtestError": {"metric": "MASE", "value": 0.61},
            },
        },
    }


def terminal_status(phase: str, policy: str, now: dt.datetime) -> dict:
    at = stamp(now)
    if phase == "Applied":
        reason, message = "Applied", f"scaled Deployment/{policy} from 4 to 6 replicas, approved by alice"
        extra = {"approvedBy": "alice", "approvedAt": at, "appliedAt": at, "previousReplicas": 4,
                 "appliedReplicas": 6}
        applied = ("True", reason, message)
    elif phase == "Rejected":
        reason, message = "RejectedByUser", "rejected by alice: not before the sale"
        extra = {"rejectedBy": "alice"}
        applied = ("False", reason, message)
    else:
        reason = "Expired"
        message = f"expired at {at} before it was applied; a new forecast will propose again if still needed"
        extra = {}
        applied = ("False", reason, message)
    conditions = [{"type": "Applied", "status": applied[0], "reason": applied[1], "message": applied[2],
                   "lastTransitionTime": at, "observedGeneration": 1}]
    if phase == "Applied":
        conditions.append({"type": "Approved", "status": "True", "reason": "Approved", "message": "approved by alice",
                           "lastTransitionTime": at, "observedGeneration": 1})
    return {"phase": phase, "reason": reason, "message": message, "observedGeneration": 1, "finishedAt": at,
            "conditions": conditions, **extra}


def create_policies(bench, namespace: str, count: int) -> list[str]:
    """`count` ScalingPolicies and their Deployments (4 replicas, as the proposals saw them)."""
    custom = kubernetes.client.CustomObjectsApi(bench.admin)
    apps = kubernetes.client.AppsV1Api(bench.admin)
    names = [f"app-{p:04d}" for p in range(count)]
    for name in names:
        labels = {"app": name}
        apps.create_namespaced_deployment(namespace, {"metadata": {"name": name}, "spec": {
            "replicas": 4, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "c", "image": "registry.invalid/c:1"}]}}}})
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingpolicies", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingPolicy", "metadata": {"name": name},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": 2, "maxReplicas": 20, "maxStepUp": 5, "cooldownSeconds": 600}})
    return names


def outcome_annotation(uid: str, phase: str, policy: str, at: dt.datetime) -> str:
    """The operator's record of a terminal decision, as it writes it (records.py)."""
    status = terminal_status(phase, policy, at)
    return OutcomeRecord(uid=uid, phase=phase, reason=status["reason"], message=status["message"], at=at,
                         approved_by=status.get("approvedBy", ""), previous_replicas=status.get("previousReplicas"),
                         applied_replicas=status.get("appliedReplicas")).to_annotation()


def create_proposals(bench, namespace: str, policies: list[str], total: int, pending: int, threads: int,
                     old_days: float) -> dict:
    """`total` proposals spread over `policies`, created by the forecaster; all but the newest
    `pending` made terminal by the operator's identity, every second one decided `old_days` ago."""
    forecaster = kubernetes.client.CustomObjectsApi(bench.forecaster)
    operator = kubernetes.client.CustomObjectsApi(bench.client(kubeconfig=bench.operator_kubeconfig))
    custom = kubernetes.client.CustomObjectsApi(bench.admin)
    now = dt.datetime.now(dt.timezone.utc)
    old = now - dt.timedelta(days=old_days)
    count = len(policies)
    terminal = [(policies[i % count], f"{policies[i % count]}-{i // count:05d}", TERMINAL_PHASES[i % 3],
                 old if i % 2 else now)
                for i in range(total - pending)]
    # The newest proposal of a policy is the one that can still be Pending: created last,
    # and named to sort last should creation timestamps tie (the operator's tie-breaker).
    waiting = [(policies[i % count], f"{policies[i % count]}-zz-pending-{i // count:03d}") for i in range(pending)]

    def terminal_one(item) -> None:
        policy, name, phase, at = item
        until = now - dt.timedelta(minutes=5) if phase == "Expired" else now + dt.timedelta(hours=1)
        created = forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals",
                                                             proposal_body(namespace, policy, name, until, now))
        operator.patch_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals", name, {
            "metadata": {"annotations": {OUTCOME: outcome_annotation(created["metadata"]["uid"], phase, policy, at)}}},
            _content_type="application/merge-patch+json")
        operator.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "scalingproposals", name,
                                                       {"status": terminal_status(phase, policy, at)},
                                                       _content_type="application/merge-patch+json")

    def pending_one(item) -> None:
        policy, name = item
        forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals",
                                                   proposal_body(namespace, policy, name, now + dt.timedelta(hours=4),
                                                                 now))

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(terminal_one, terminal))
    time.sleep(1.1)  # creation timestamps have one-second resolution: the Pending ones are newer
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(pending_one, waiting))
    seconds = time.monotonic() - started
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals")["items"]
    phases: dict[str, int] = {}
    for item in items:
        phase = (item.get("status") or {}).get("phase") or "(none yet)"
        phases[phase] = phases.get(phase, 0) + 1
    return {"proposals": len(items), "policies": count, "phases": phases, "create_seconds": round(seconds, 1),
            "past_retention": sum(1 for item in terminal if item[3] is old), "pending_names": [n for _, n in waiting],
            "mean_object_bytes": round(len(json.dumps(items)) / max(1, len(items)))}


# -- the operator ----------------------------------------------------------------------
class Operator:
    def __init__(self, bench, namespace: str, label: str, workers: int, gc_interval: float):
        self.bench, self.namespace, self.label = bench, namespace, label
        self.metrics_port = free_port()
        self.log_path = bench.state / f"operator-{label}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scalegate.cli", "operator", "--kubeconfig", str(bench.operator_kubeconfig),
             "--namespace", namespace, "--metrics-bind-address", f"127.0.0.1:{self.metrics_port}",
             "--health-probe-bind-address", "0", "--workers", str(workers), "--gc-interval", str(gc_interval)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        bench.operator = self.proc  # Bench.close() stops it whatever happens
        self.started_at = time.monotonic()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while "scalegate operator started" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"operator did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        return time.monotonic() - self.started_at

    def metric(self, name: str, having: str = "") -> float | None:
        """The sum of a metric's samples on the operator's /metrics (those whose labels
        contain `having`, e.g. 'phase="Applied"'), or None if it has none."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if (line.startswith(name + " ") or line.startswith(name + "{")) and having in line]
        return sum(values) if values else None

    def applied(self) -> float:
        return self.metric("scalegate_proposal_outcomes_total", 'phase="Applied"') or 0.0

    def active_gauge(self) -> float | None:
        return self.metric("scalegate_proposals_active")

    def collected(self) -> float:
        return self.metric("scalegate_proposals_garbage_collected_total") or 0.0

    def wait_seen_all(self, pending: int, timeout: float = 900) -> float:
        """Until every Pending proposal was handled and is tracked, steady for 2 s. (Terminal
        proposals never reach the operator: the API server filters them out of its watch.)"""
        deadline = time.monotonic() + timeout
        steady_since, last = None, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited:\n{self.log()[-3000:]}")
            state = self.active_gauge()
            if state == pending:
                if state != last:
                    steady_since = time.monotonic()
                if time.monotonic() - steady_since >= 2.0:
                    return steady_since - self.started_at
            last = state
            time.sleep(0.25)
        raise RuntimeError(f"operator did not see all {pending} Pending proposals: gauge = {last}")

    def sample(self, seconds: float, interval: float, until: Callable[[], bool] = lambda: True,
               timeout: float = 600) -> dict:
        """VmRSS every `interval` s for at least `seconds`, and until `until()` holds."""
        pid = self.proc.pid
        samples = []
        started = time.monotonic()
        end = started + seconds
        while True:
            samples.append(proc_status_kb(pid, "VmRSS"))
            finished = until()  # asked at every sample, so that it notes when the work was done
            if time.monotonic() + interval > end and finished:
                break
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the loaded run's work did not finish within {timeout:.0f}s:\n{self.log()[-3000:]}")
            time.sleep(interval)
        return {"samples_mb": [round(mb(s), 1) for s in samples], "median_mb": round(mb(statistics.median(samples)), 1),
                "max_mb": round(mb(max(samples)), 1), "hwm_mb": round(mb(proc_status_kb(pid, "VmHWM")), 1),
                "window_seconds": round(time.monotonic() - started, 1)}

    def stop(self) -> None:
        stop_process(self.proc, grace=30)


def approve_all(bench, namespace: str, names: list[str], threads: int) -> None:
    """Approve every name at once, as the approver (the verb approve), as people would."""
    custom = kubernetes.client.CustomObjectsApi(bench.approver)
    approver = load_apply_throughput().APPROVER

    def one(name: str) -> None:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals", name, {
            "metadata": {"annotations": {"scalegate.io/approved": "true", "scalegate.io/approved-by": approver}}},
            _content_type="application/merge-patch+json")

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, names))


def run(bench, namespace: str, label: str, population: dict | None, pending: int, args) -> dict:
    operator = Operator(bench, namespace, label, args.workers, args.gc_interval)
    try:
        startup = operator.wait_started()
        at_start = mb(proc_status_kb(operator.proc.pid, "VmRSS"))
        seen = operator.wait_seen_all(pending)
        collected_before = operator.collected()
        work: dict = {}
        if population:  # the loaded run: approvals and a GC sweep while it samples
            names, to_collect = population["pending_names"], population["past_retention"]
            approving = threading.Thread(target=approve_all, args=(bench, namespace, names, args.threads),
                                         daemon=True)
            approving.start()

            def done() -> bool:
                if "applied" not in work and operator.applied() >= len(names):
                    work["applied"] = len(names)
                    work["applied_after_seconds"] = round(time.monotonic() - window_start, 1)
                if "collected" not in work and operator.collected() >= to_collect:
                    work["collected"] = int(operator.collected())
                    work["collected_after_seconds"] = round(time.monotonic() - window_start, 1)
                return "applied" in work and "collected" in work

            window_start = time.monotonic()
            result = operator.sample(args.sample_seconds, args.interval, until=done)
            approving.join()
        else:
            result = operator.sample(args.sample_seconds, args.interval)
        result.update(at_start_mb=round(at_start, 1), startup_seconds=round(startup, 2),
                      seen_all_seconds=round(seen, 2), active_gauge=operator.active_gauge(),
                      collected_before_window=int(collected_before), **work)
        if operator.proc.poll() is not None:
            raise RuntimeError(f"operator exited while sampled:\n{operator.log()[-3000:]}")
        return result
    finally:
        operator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proposals", type=int, default=5000)
    parser.add_argument("--pending", type=int, default=100, help="proposals left Pending (default 100)")
    parser.add_argument("--policies", type=int, default=100, help="policies the proposals belong to (default 100)")
    parser.add_argument("--sample-seconds", type=float, default=30.0,
                        help="the shortest sampling window (the loaded one lasts until approvals and GC are done)")
    parser.add_argument("--gc-interval", type=float, default=10.0,
                        help="the operator's --gc-interval: a sweep every so many seconds from start-up (default 10)")
    parser.add_argument("--old-days", type=float, default=8.0,
                        help="age of the terminal proposals past the retention (7 days), half of them (default 8)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples (default 1)")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--threads", type=int, default=16, help="client threads creating the proposals")
    args = parser.parse_args()
    if not 0 < args.pending <= args.policies <= args.proposals:
        parser.error("need 0 < --pending <= --policies <= --proposals (one Pending proposal per policy at most)")

    apply_throughput = load_apply_throughput()
    summary: dict = {"goal_max_rss_mb": GOAL_MB, "cpus": os.cpu_count(), "python": platform.python_version(),
                     "load_average_at_start": os.getloadavg(),
                     "includes": {**apply_throughput.includes(), "gc_interval_seconds": args.gc_interval,
                                  "loaded_run": "approve every Pending proposal and a GC sweep deleting the"
                                                " terminal proposals past the retention, while sampling"}}
    print(f"# includes: {json.dumps(summary['includes'])}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cluster is torn down below
    bench = apply_throughput.Bench(workers=args.workers)
    namespace = f"memory-{uuid.uuid4().hex[:5]}"
    try:
        kubernetes.client.CoreV1Api(bench.admin).create_namespace({"metadata": {"name": namespace}})
        policies = create_policies(bench, namespace, args.policies)
        print(f"# baseline: operator on {namespace} with {len(policies)} policies and no proposal", file=sys.stderr)
        summary["baseline"] = run(bench, namespace, "baseline", None, 0, args)
        print(f"# creating {args.proposals} proposals ({args.pending} Pending)", file=sys.stderr)
        population = create_proposals(bench, namespace, policies, args.proposals, args.pending, args.threads,
                                      args.old_days)
        summary["population"] = {k: v for k, v in population.items() if k != "pending_names"}
        print(f"# loaded: {summary['population']}", file=sys.stderr)
        summary["loaded"] = run(bench, namespace, "loaded", population, args.pending, args)
    finally:
        bench.close()

    loaded, baseline = summary["loaded"], summary["baseline"]
    summary["growth_mb"] = round(loaded["median_mb"] - baseline["median_mb"], 1)
    summary["kb_per_proposal"] = round(1024 * summary["growth_mb"] / args.proposals, 2)
    summary["goal_met"] = loaded["max_mb"] <= GOAL_MB
    print("includes: admission policies " + ", ".join(summary["includes"]["admission_policies"])
          + "; RBAC of manifests/; operator as its ServiceAccount; proposals by the forecaster's, terminal"
          " records by the operator's; the loaded run approves every Pending proposal (applied) and sweeps"
          f" (--gc-interval {args.gc_interval:g}) while it samples")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in summary['load_average_at_start'])}"
          f" on {os.cpu_count()} cores (other work on the machine shares them)")
    print(f"{'run':<10} {'proposals':>9} {'at start MB':>12} {'median MB':>10} {'max MB':>8} {'peak (HWM) MB':>14} "
          f"{'seen all s':>11}")
    for label, count in (("baseline", 0), ("loaded", args.proposals)):
        r = summary[label]
        print(f"{label:<10} {count:>9} {r['at_start_mb']:>12.1f} {r['median_mb']:>10.1f} {r['max_mb']:>8.1f} "
              f"{r['hwm_mb']:>14.1f} {r['seen_all_seconds']:>11.1f}")
    if "applied" in loaded or "collected" in loaded:
        print(f"in the loaded window ({loaded['window_seconds']:.0f} s): {loaded.get('applied', 0)} approvals applied"
              f" (after {loaded.get('applied_after_seconds', float('nan')):.1f} s), {loaded.get('collected', 0)} old"
              f" proposals deleted by the GC (after {loaded.get('collected_after_seconds', float('nan')):.1f} s;"
              f" {loaded['collected_before_window']} before the window)")
    print(f"growth {summary['growth_mb']:.1f} MB ({summary['kb_per_proposal']:.2f} kB per proposal); "
          f"goal max <= {GOAL_MB:.0f} MB: {'met' if summary['goal_met'] else 'NOT met'}")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
