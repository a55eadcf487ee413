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

    .venv/bin/python benchmarks/operator_memory.py --active-plans 10000

`--active-plans N` measures the operator holding N active plans instead (issue 16: 10,000
active plans in at most 150 MB RSS); --proposals, --pending, --policies and --old-days do
not apply. On the same set-up, in one namespace: N ScalingPolicies with plans
(forecast.planHorizonSeconds 86400, planStepSeconds 3600; bounds 2..20, maxStepUp 5,
cooldownSeconds 600, proposalTTLSeconds 6 h so that set-up and activation fit in the
approval window) and their Deployments (4 replicas, paused: no ReplicaSets or Pods), created
by the admin; the baseline run (0 proposals, as above); then one plan per policy, created by
the forecaster's token: 24 hourly steps from its creation, the first in effect at once
(replicas 6..12..5, within the bounds and step limits, each step with its predicted peak and
upper bound), endsAt a day on, the forecast evidence over the plan's horizon; each approved
by the user holding the verb approve. Only then does `scalegate operator` start (as above,
same flags): it lists the N approved plans and applies the first step of each (scaling its
Deployment), which makes the plan Active with status.nextStepAt an hour on, after which a
plan costs the operator only what it keeps of it until its next step. Counted via the API:
the API server lists the plans in phase Active (a field selector on status.phase, metadata
only, every max(1, min(10, N/1000)) s); once all N are, VmRSS is sampled for `--sample-
seconds`. Reported: the time from the operator's start until all N were Active, the RSS
right after start-up and the max while activating, median and max RSS in the window, VmHWM
(the peak, activation included) and the baseline; a plan that ends (Applied, Rejected,
Expired, ...) instead fails the run, as does waiting longer than `--activation-timeout`.
Set-up takes two requests per policy and two per plan, from `--threads` threads; the
operator applied 5 to 7 first steps per second on a shared 2-core machine (50 and 300
plans).
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
from typing import Any, Callable

import kubernetes

from scalegate.dev.cluster import free_port, stop_process
from scalegate.kube import Kube
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


def create_policies(bench, namespace: str, count: int, threads: int = 16, plans: bool = False) -> list[str]:
    """`count` ScalingPolicies and their Deployments (4 replicas, as the proposals saw them);
    with `plans`, each asks for a day's plan in hourly steps (`plan_policy_spec`)."""
    custom = kubernetes.client.CustomObjectsApi(bench.admin)
    apps = kubernetes.client.AppsV1Api(bench.admin)
    names = [f"app-{p:04d}" for p in range(count)]

    def one(name: str) -> None:
        labels = {"app": name}
        apps.create_namespaced_deployment(namespace, {"metadata": {"name": name}, "spec": {
            # With plans paused: no ReplicaSets or Pods (40,000 Pending Pods for 10,000 would
            # load the API server); the operator reads and scales the Deployment all the same.
            "replicas": 4, "paused": plans, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "c", "image": "registry.invalid/c:1"}]}}}})
        spec = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": 2, "maxReplicas": 20, "maxStepUp": 5, "cooldownSeconds": 600}
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingpolicies", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingPolicy", "metadata": {"name": name},
            "spec": {**spec, **(plan_policy_spec(namespace, name) if plans else {})}})

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, names))
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


# -- plans (--active-plans) ------------------------------------------------------------
PLAN_STEP = dt.timedelta(hours=1)
# A day's hourly replicas from 4 (spec.currentReplicas): within 2..20, no rise above maxStepUp 5.
PLAN_REPLICAS = (6, 6, 7, 8, 9, 10, 11, 12, 12, 11, 10, 9, 8, 7, 6, 6, 5, 5, 5, 5, 5, 5, 6, 6)
# The approval window, long enough for the set-up and activation of 10,000. (A plan first started
# 5 h after its creation would be Rejected: from 4 replicas to step 6's 10 is more than maxStepUp.)
PLAN_TTL_SECONDS = 6 * 3600


def plan_policy_spec(namespace: str, name: str) -> dict:
    """A policy's fields for plans: a day in hourly steps (planStepSeconds >= cooldownSeconds,
    lookbackSeconds' default of 14 days >= two horizons), approvable for PLAN_TTL_SECONDS."""
    return {"proposalTTLSeconds": PLAN_TTL_SECONDS, "forecast": {
        "query": f'sum(rate(http_requests_total{{namespace="{namespace}",app="{name}"}}[5m]))',
        "capacityPerReplica": 50, "planHorizonSeconds": 86400, "planStepSeconds": 3600}}


def plan_name(policy: str) -> str:
    return f"{policy}-plan"


def plan_body(namespace: str, policy: str, name: str, now: dt.datetime) -> dict:
    """A day's plan as the forecaster proposes it: 24 hourly steps from `now` (the first one in
    effect at once), each with the peak and upper bound it was sized for, `endsAt` a day on,
    the evidence over the plan's horizon (the highest step's peak and bound)."""
    start = now.replace(microsecond=0)
    body = proposal_body(namespace, policy, name, start + dt.timedelta(seconds=PLAN_TTL_SECONDS), start)
    steps: list[dict[str, Any]] = [
        {"at": stamp(start + i * PLAN_STEP), "replicas": replicas, "predictedPeak": round(replicas * 45.0, 2),
         "upperBound": round(replicas * 48.5, 2)} for i, replicas in enumerate(PLAN_REPLICAS)]
    peak = max(range(len(steps)), key=lambda i: steps[i]["predictedPeak"])
    spec = body["spec"]
    spec.update(replicas=PLAN_REPLICAS[0], schedule=steps, endsAt=stamp(start + len(steps) * PLAN_STEP),
                reason=f"NoActivePlan: no open plan. Plan: {len(steps)} steps of 1h from {stamp(start)}, "
                       f"{min(PLAN_REPLICAS)} to {max(PLAN_REPLICAS)} replicas")
    spec["forecast"].update(horizonSeconds=len(steps) * 3600, predictedPeak=steps[peak]["predictedPeak"],
                            upperBound=steps[peak]["upperBound"], peakTime=steps[peak]["at"],
                            lowerBound=round(steps[peak]["predictedPeak"] * 0.9, 2))
    return body


def create_plans(bench, namespace: str, policies: list[str], threads: int) -> dict:
    """One plan per policy, created by the forecaster's token, then each approved by the approver."""
    forecaster = kubernetes.client.CustomObjectsApi(bench.forecaster)
    names = [plan_name(policy) for policy in policies]

    def one(item: tuple[str, str]) -> None:
        policy, name = item
        forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals",
                                                   plan_body(namespace, policy, name, dt.datetime.now(dt.timezone.utc)))

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, zip(policies, names, strict=True)))
    created = time.monotonic() - started
    approve_all(bench, namespace, names, threads)
    sample = kubernetes.client.CustomObjectsApi(bench.admin).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "scalingproposals", names[0])
    return {"plans": len(names), "steps_per_plan": len(PLAN_REPLICAS), "create_seconds": round(created, 1),
            "approve_seconds": round(time.monotonic() - started - created, 1),
            "object_bytes_approved": len(json.dumps(sample))}


def count_in_phase(bench, namespace: str, phase: str, page: int = 500) -> int:
    """Proposals in `phase`, counted by the API server's field selector on status.phase, a
    page of metadata at a time (PartialObjectMetadataList: not the objects' bodies)."""
    kube = Kube(bench.admin, component="scalegate-benchmark")
    query = [("fieldSelector", f"status.phase={phase}"), ("limit", str(page))]
    count, token = 0, ""
    while True:
        listed = kube._raw("count proposals", "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/scalingproposals",
                           query=query + ([("continue", token)] if token else []),
                           accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
        count += len(listed.get("items") or [])
        token = (listed.get("metadata") or {}).get("continue") or ""
        if not token:
            return count


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


def run_active_plans(bench, namespace: str, count: int, name: str, args) -> dict:
    """The operator started on `count` approved plans: until the API server lists all of
    them Active (RSS sampled meanwhile), then the sampling window; `name` is one of them (its size is reported)."""
    operator = Operator(bench, namespace, "active-plans", args.workers, args.gc_interval)
    poll = max(1.0, min(10.0, count / 1000))  # each count pages through the plans' metadata
    try:
        startup = operator.wait_started()
        at_start = mb(proc_status_kb(operator.proc.pid, "VmRSS"))
        during: list[int] = []
        deadline = time.monotonic() + args.activation_timeout
        while (active := count_in_phase(bench, namespace, "Active")) < count:
            if operator.proc.poll() is not None:
                raise RuntimeError(f"operator exited:\n{operator.log()[-3000:]}")
            ended = {phase: operator.metric("scalegate_proposal_outcomes_total", f'phase="{phase}"')
                     for phase in ("Applied", "Rejected", "Expired", "Superseded", "Stale", "Failed")}
            if any(ended.values()) or time.monotonic() > deadline:
                waited = time.monotonic() - operator.started_at
                raise RuntimeError(f"{active} of {count} plans Active after {waited:.0f} s; plans ended: {ended}\n"
                                   f"{operator.log()[-3000:]}")
            during.append(proc_status_kb(operator.proc.pid, "VmRSS"))
            time.sleep(poll)
        all_active = time.monotonic() - operator.started_at
        result = operator.sample(args.sample_seconds, args.interval)
        result.update(at_start_mb=round(at_start, 1), startup_seconds=round(startup, 2),
                      all_active_seconds=round(all_active, 1), active_poll_seconds=poll,
                      activation_max_mb=round(mb(max(during, default=0)), 1), active_gauge=operator.active_gauge(),
                      active_at_end=count_in_phase(bench, namespace, "Active"),
                      object_bytes_active=len(json.dumps(kubernetes.client.CustomObjectsApi(bench.admin)
                                                         .get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                                       "scalingproposals", name))),
                      steps_applied=operator.metric("scalegate_proposal_outcomes_total", 'phase="Active"'),
                      reconcile_errors=operator.metric("scalegate_reconcile_errors_total") or 0.0)
        if operator.proc.poll() is not None:
            raise RuntimeError(f"operator exited while sampled:\n{operator.log()[-3000:]}")
        return result
    finally:
        operator.stop()


def report_active_plans(summary: dict, count: int) -> None:
    """The --active-plans table (the JSON follows it in main)."""
    active, baseline = summary["active"], summary["baseline"]
    summary["growth_mb"] = round(active["median_mb"] - baseline["median_mb"], 1)
    summary["kb_per_plan"] = round(1024 * summary["growth_mb"] / count, 2)
    summary["goal_met"] = active["max_mb"] <= GOAL_MB
    print(f"includes: {count} ScalingPolicies with plans (86400 s in 3600 s steps) and their Deployments; one plan"
          " each, created by the forecaster's token, approved by the approver before the operator starts;"
          " admission policies " + ", ".join(summary["includes"]["admission_policies"]) + "; RBAC of manifests/;"
          f" operator as its ServiceAccount (--gc-interval {summary['includes']['gc_interval_seconds']:g})")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in summary['load_average_at_start'])}"
          f" on {os.cpu_count()} cores (other work on the machine shares them)")
    print(f"{'run':<13} {'plans':>6} {'at start MB':>12} {'median MB':>10} {'max MB':>8} {'peak (HWM) MB':>14} "
          f"{'all Active s':>13}")
    for label, plans in (("baseline", 0), ("active", count)):
        r = summary[label]
        seconds = f"{r['all_active_seconds']:.1f}" if "all_active_seconds" in r else "-"
        print(f"{label:<13} {plans:>6} {r['at_start_mb']:>12.1f} {r['median_mb']:>10.1f} {r['max_mb']:>8.1f} "
              f"{r['hwm_mb']:>14.1f} {seconds:>13}")
    print(f"all {count} Active {active['all_active_seconds']:.1f} s after the operator started"
          f" ({count / max(active['all_active_seconds'], 1e-9):.1f} plans/s;"
          f" polled every {active['active_poll_seconds']:g} s);"
          f" max RSS while activating {active['activation_max_mb']:.1f} MB; window {active['window_seconds']:.0f} s")
    print(f"growth {summary['growth_mb']:.1f} MB ({summary['kb_per_plan']:.2f} kB per active plan); "
          f"goal max <= {GOAL_MB:.0f} MB: {'met' if summary['goal_met'] else 'NOT met'}")


def start_bench(args, **includes: object) -> tuple[dict, Any, str]:
    """The summary (what the run includes, printed at once), the dev cluster (`Bench`) and
    a namespace created in it for the run."""
    apply_throughput = load_apply_throughput()
    summary: dict = {"goal_max_rss_mb": GOAL_MB, "cpus": os.cpu_count(), "python": platform.python_version(),
                     "load_average_at_start": os.getloadavg(),
                     "includes": {**apply_throughput.includes(), "gc_interval_seconds": args.gc_interval, **includes}}
    print(f"# includes: {json.dumps(summary['includes'])}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cluster is torn down by the caller
    bench, namespace = apply_throughput.Bench(workers=args.workers), f"memory-{uuid.uuid4().hex[:5]}"
    try:
        kubernetes.client.CoreV1Api(bench.admin).create_namespace({"metadata": {"name": namespace}})
    except BaseException:
        bench.close()
        raise
    return summary, bench, namespace


def main_active_plans(args) -> int:
    count = args.active_plans
    summary, bench, namespace = start_bench(
        args, active_plans=count, plan="24 hourly steps from creation, endsAt a day on; policies planHorizonSeconds"
        " 86400, planStepSeconds 3600", active_run="the operator started on the approved plans; sampled once all"
        " are Active (the first step of each applied)")
    try:
        started = time.monotonic()
        policies = create_policies(bench, namespace, count, args.threads, plans=True)
        summary["setup"] = {"policies_seconds": round(time.monotonic() - started, 1)}
        print(f"# baseline: operator on {namespace} with {count} policies and no proposal", file=sys.stderr)
        summary["baseline"] = run(bench, namespace, "baseline", None, 0, args)
        print(f"# creating and approving {count} plans", file=sys.stderr)
        summary["setup"].update(create_plans(bench, namespace, policies, args.threads))
        print(f"# active: {summary['setup']}", file=sys.stderr)
        summary["active"] = run_active_plans(bench, namespace, count, plan_name(policies[0]), args)
    finally:
        bench.close()
    report_active_plans(summary, count)
    print(json.dumps(summary, indent=2))
    return 0


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
    parser.add_argument("--threads", type=int, default=16, help="client threads creating the objects")
    parser.add_argument("--active-plans", type=int, default=0, metavar="N",
                        help="instead: N policies with plans, one approved plan each, measured once all are Active"
                             " (--proposals, --pending, --policies and --old-days do not apply)")
    parser.add_argument("--activation-timeout", type=float, default=7200.0,
                        help="--active-plans: the longest wait from the operator's start until all plans are"
                             " Active (default 7200 s; plans first started 5 h after creation would be Rejected)")
    args = parser.parse_args()
    if args.active_plans:
        return main_active_plans(args) if args.active_plans > 0 else parser.error("--active-plans must be > 0")
    if not 0 < args.pending <= args.policies <= args.proposals:
        parser.error("need 0 < --pending <= --policies <= --proposals (one Pending proposal per policy at most)")

    summary, bench, namespace = start_bench(args, loaded_run="approve every Pending proposal and a GC sweep"
                                                             " deleting the terminal proposals past the retention,"
                                                             " while sampling")
    try:
        policies = create_policies(bench, namespace, args.policies, args.threads)
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
