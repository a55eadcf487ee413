"""One forecaster round over many policies, against a real Prometheus and the dev control plane.

    .venv/bin/python benchmarks/forecaster_round.py                 # 1,000 policies, 14 days of 5-minute history
    .venv/bin/python benchmarks/forecaster_round.py --policies 100 --runs 1
    # issue 16: five rounds 15 minutes apart, refitting every round (as before) and only when due
    .venv/bin/python benchmarks/forecaster_round.py --policies 200 --runs 5 --every 900 --refit-intervals 0,3600
    # two replicas sharing the policies in 8 shards (real Leases), rounds as above
    .venv/bin/python benchmarks/forecaster_round.py --policies 1000 --runs 2 --every 900 --replicas 2
    # issue 16's scale: 10,000 policies with day plans, two replicas, four rounds 15 minutes apart
    .venv/bin/python benchmarks/forecaster_round.py --policies 10000 --plans --runs 4 --every 900 \
        --replicas 2 --yaml-runs 0 --quiet-below 1.5

Prometheus holds one recorded series per policy (the recorded real load traces in
tests/data/load, each scaled by a different factor so no two are equal), backfilled with
promtool; every policy has a Deployment and a forecast spec. The Deployments are created
paused, so the controller manager makes no ReplicaSets or Pods for them (the forecaster reads
only their scale subresource; 30,000 Pending Pods would only load the API server between
rounds). With --plans every policy has day plans (planHorizonSeconds 86400, planStepSeconds
3600): the first round proposes a plan for each, later ones judge it with the re-plan rule
(nobody approves here, so the Pending plan is the open one).

What a round includes, as `scalegate forecaster` does it in production: it runs as the
ServiceAccount scalegate:forecaster (a TokenRequest token, the RBAC of manifests/base/rbac)
on a cluster with every admission policy of manifests/base/admission enforced; it lists the
policies, reads each target's scale, queries Prometheus, fits in a process pool of one
worker per core (queries and API calls in threads, run_round's default number), creates
each proposal through the API server (judged by the admission policies: proposer, label,
...) and writes each policy's status (ForecastReady, lastForecastTime, lastProposal). The
round's wall time runs from the list to the last status write. Between runs the proposals
are deleted (not timed), so every run proposes again. A second line runs the same round in
`--output yaml` mode (the GitOps path: manifests written to a directory, no proposal
created, no status written), for comparison. Reports the wall time of a round (median over
runs), per-policy forecast time, the outcomes and the API writes made. Goal on 2 cores:
<= 60 s for 1,000 policies.

With --every, the rounds are consecutive instead: the same forecaster (or --replicas of
them, sharing the policies by shards held through real Leases, each with its own process
pool) runs --runs rounds at simulated times --every seconds apart, ending now, so that a
round between refits reuses the kept fits (issue 16); each --refit-intervals value runs the
whole sequence once. Each round's figures split the policies' time into Prometheus
queries, fits and the rest (the API server: the scale read, the proposal and the status
write), summed over the policies, and count the forecaster's writes in the API server's
audit log (verb, resource, HTTP code), not its own results.
"""

from __future__ import annotations

import os

# As `scalegate forecaster` does: one BLAS thread per fitting process (set before numpy loads;
# ruff's E402 lets os.environ changes come before imports, not a loop that makes them).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import collections
import concurrent.futures
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kubernetes
import numpy as np
import pandas as pd

from scalegate.dev.localprom import LocalPrometheus, backfill, free_port, shift_to_end
from scalegate.forecast import load_csv
from scalegate.forecast.prometheus import PrometheusSettings, PrometheusSource
from scalegate.forecaster import Forecaster, default_pool
from scalegate.kube import Kube, api_client
from scalegate.shards import ShardKeeper

REPO = Path(__file__).resolve().parent.parent
LOAD = Path(os.environ.get("SCALEGATE_LOAD_DIR") or REPO / "tests" / "data" / "load")
NAMESPACE = "bench-forecast"
POINTS = 14 * 288


def recorded_series() -> list[pd.Series]:
    """Every shared trace with at least 14 days of 5-minute points, resampled to 5 minutes."""
    found = []
    for path in sorted(LOAD.glob("*.csv")):
        series = load_csv(path).resample("5min").mean().interpolate(limit_direction="both")
        if len(series) >= POINTS:
            found.append(series.iloc[-POINTS:])
    return found


def load_apply_throughput():
    """benchmarks/apply_throughput.py as a module: its `Bench` sets up the cluster as installed."""
    path = Path(__file__).resolve().with_name("apply_throughput.py")
    spec = importlib.util.spec_from_file_location("scalegate_bench_apply_throughput", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def delete_proposals(custom: kubernetes.client.CustomObjectsApi, timeout: float = 300) -> None:
    """Delete every proposal of the namespace and wait until they are gone (not timed). The
    API server may answer 504 for 10,000 of them while it goes on deleting: keep waiting."""
    try:
        custom.delete_collection_namespaced_custom_object("scalegate.io", "v1alpha1", NAMESPACE, "scalingproposals")
    except kubernetes.client.exceptions.ApiException as err:
        if err.status != 504:
            raise
    deadline = time.monotonic() + timeout
    while custom.list_namespaced_custom_object("scalegate.io", "v1alpha1", NAMESPACE, "scalingproposals",
                                               limit=1)["items"]:
        if time.monotonic() > deadline:
            raise RuntimeError("proposals still exist after the delete")
        time.sleep(0.5)


def one_round(forecaster: Forecaster, threads: int | None, keeper: ShardKeeper | None = None) -> tuple[float, list]:
    """A round as `scalegate forecaster` makes it: list the policies, then run them (with
    shards: those of the shards this replica holds)."""
    started = time.monotonic()
    held = keeper.held() if keeper is not None else None
    policies = forecaster.kube.list_policies(NAMESPACE)
    if keeper is not None:
        policies = keeper.mine(policies, held_before=held)
    results = forecaster.run_round(policies, **({"threads": threads} if threads else {}))
    return time.monotonic() - started, results


class Replicas:
    """`count` forecaster replicas in this process, as `scalegate forecaster --shards`
    runs them: each its own API client, process pool (one worker per core, as each Pod
    would have) and ShardKeeper renewing real Leases in the scalegate namespace as
    scalegate:forecaster; a round runs them at once and lasts until the last one ends."""

    def __init__(self, count: int, shards: int, kubeconfig: str, source, interval: float):
        self.pools = [default_pool() for _ in range(count)]
        self.forecasters, self.keepers = [], []
        for i, pool in enumerate(self.pools):
            kube = Kube(api_client(kubeconfig), component="scalegate-forecaster")
            forecaster = Forecaster(kube=kube, source=source, pool=pool, refit_interval=interval)
            if count > 1:
                keeper = ShardKeeper(kube, "scalegate", f"bench-replica-{i}", shards).start()
                forecaster.may_write = keeper.holds_policy
                self.keepers.append(keeper)
            self.forecasters.append(forecaster)
        deadline = time.monotonic() + 120
        while self.keepers and sorted(len(k.held()) for k in self.keepers) != fair_split(shards, count):
            if time.monotonic() > deadline:
                raise RuntimeError(f"shards not split: {[sorted(k.held()) for k in self.keepers]}")
            time.sleep(0.5)

    def round(self, at: pd.Timestamp, threads: int | None) -> tuple[float, list]:
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(self.forecasters)) as run:
            futures = []
            for i, forecaster in enumerate(self.forecasters):
                forecaster.clock = simulated_clock(at)
                futures.append(run.submit(one_round, forecaster, threads,
                                          self.keepers[i] if self.keepers else None))
            results = [r for future in futures for r in future.result()[1]]
        return time.monotonic() - started, results

    def close(self) -> None:
        for keeper in self.keepers:
            keeper.stop(release=True)
        for pool in self.pools:
            pool.shutdown(cancel_futures=True)


def fair_split(shards: int, count: int) -> list[int]:
    """The shards each of `count` replicas holds once they converged, ascending."""
    share = -(-shards // count)
    counts, left = [], shards
    for _ in range(count):
        counts.append(min(share, left))
        left -= counts[-1]
    return sorted(counts)


def figures(wall: float, results: list, mode: str, writes: dict | None = None) -> dict:
    per_policy = [r.seconds for r in results if r.seconds]
    # Where the policies' time went, summed over them (thread-seconds: queries and API calls
    # of several policies overlap, and fits wait for a worker): Prometheus, the fit in the
    # pool, and the rest (reading the scale, sizing, creating the proposal, writing status).
    query = sum(r.timings.get("query", 0.0) for r in results)
    fit = sum(r.timings.get("fit", 0.0) for r in results)
    total = sum(r.timings.get("total", 0.0) for r in results)
    return {"mode": mode, "wall_seconds": wall, "policies": len(results),
            "per_policy_median_seconds": statistics.median(per_policy) if per_policy else None,
            "per_policy_p95_seconds": float(np.percentile(per_policy, 95)) if per_policy else None,
            "outcomes": dict(collections.Counter(f"{r.outcome}/{r.reason}" for r in results)),
            "refit_decisions": dict(collections.Counter(r.refit or "none" for r in results)),
            "split_thread_seconds": {"query": query, "fit": fit, "api_and_rest": max(0.0, total - query - fit)},
            "api_writes": writes}


def wait_until_quiet(load: float, log, timeout: float = 2700) -> None:
    """Wait until the 1-minute load average is below `load` (the machine is shared)."""
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] >= load and time.monotonic() < deadline:
        log(f"load average {os.getloadavg()[0]:.1f} >= {load:g}: waiting for a quieter machine")
        time.sleep(30)


def simulated_clock(at: pd.Timestamp):
    """A forecaster clock fixed at `at` (a round of the consecutive-rounds mode)."""
    moment = at.to_pydatetime()
    return lambda: moment


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--yaml-runs", type=int, default=1, help="rounds in --output yaml mode (0: none)")
    parser.add_argument("--threads", type=int, default=None,
                        help="I/O threads for queries and API calls (default: the forecaster's own)")
    parser.add_argument("--every", type=float, default=0.0, metavar="SECONDS",
                        help="consecutive rounds: --runs rounds by the same forecaster, one every SECONDS of "
                             "(simulated) time ending now, so that later rounds may reuse kept fits; 0 (default): "
                             "independent rounds by a new forecaster each, proposals deleted between")
    parser.add_argument("--replicas", type=int, default=1,
                        help="with --every: forecaster replicas sharing the policies by shards (default 1)")
    parser.add_argument("--shards", type=int, default=8, help="with --replicas > 1 (default 8, as manifests/)")
    parser.add_argument("--quiet-below", type=float, default=None, metavar="LOAD",
                        help="after the set-up, wait (up to 45 minutes) until the 1-minute load average is below "
                             "LOAD before the timed rounds (a shared machine); the load at their start is reported")
    parser.add_argument("--plans", action="store_true",
                        help="policies with day plans (planHorizonSeconds 86400, planStepSeconds 3600)")
    parser.add_argument("--refit-intervals", default="3600", metavar="S[,S...]",
                        help="the forecaster's refit interval; several: the whole sequence of rounds once per "
                             "value, e.g. 0,3600 (0 = refit every round, as before issue 16)")
    args = parser.parse_args()
    refit_intervals = [float(x) for x in args.refit_intervals.split(",")]

    work = Path(tempfile.mkdtemp(prefix="scalegate-bench-forecast-"))
    log = lambda m: print(f"# {m}", file=sys.stderr, flush=True)  # noqa: E731
    apply_throughput = load_apply_throughput()
    includes = {**apply_throughput.includes(), "forecaster": apply_throughput.FORECASTER,
                "round": "list policies, read scales, query Prometheus, fit, create proposals, write policy status"}
    includes.pop("operator"), includes.pop("approvals_by"), includes.pop("proposals_created_by")
    log(f"includes: {json.dumps(includes)}")
    traces = recorded_series()
    rng = np.random.default_rng(1)
    end = pd.Timestamp.now(tz="UTC").floor("5min")
    series_by_policy = {}
    for i in range(args.policies):
        base = traces[i % len(traces)]
        series_by_policy[f"p{i:05d}"] = shift_to_end(base * float(rng.uniform(0.5, 2.0)), end)
    log(f"backfilling {args.policies} series x {POINTS} points")
    started = time.monotonic()
    backfill(work / "prometheus-data", "load", [(s, {"policy": name}) for name, s in series_by_policy.items()])
    log(f"backfilled in {time.monotonic() - started:.0f}s")
    prometheus = LocalPrometheus(work / "prometheus-data", port=free_port()).start(timeout=300)
    bench = None
    try:
        bench = apply_throughput.Bench(workers=1)  # the CRDs, RBAC and admission policies of manifests/
        admin = bench.admin
        kubernetes.client.CoreV1Api(admin).create_namespace({"metadata": {"name": NAMESPACE}})
        apps, custom = kubernetes.client.AppsV1Api(admin), kubernetes.client.CustomObjectsApi(admin)

        plans = {"planHorizonSeconds": 86400, "planStepSeconds": 3600} if args.plans else {}

        def create(name: str) -> None:
            labels = {"app": name}
            apps.create_namespaced_deployment(NAMESPACE, {"metadata": {"name": name}, "spec": {
                "replicas": 3, "paused": True, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [{"name": "c", "image": "registry.invalid/c:1"}]}}}})
            capacity = float(series_by_policy[name].quantile(0.99)) / 20 or 1.0
            custom.create_namespaced_custom_object("scalegate.io", "v1alpha1", NAMESPACE, "scalingpolicies", {
                "apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingPolicy", "metadata": {"name": name},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                         "minReplicas": 1, "maxReplicas": 100,
                         "forecast": {"query": f'load{{policy="{name}"}}', "capacityPerReplica": capacity,
                                      "horizonSeconds": 3600, "lookbackSeconds": 14 * 86400, "stepSeconds": 300,
                                      **plans}}})

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(create, series_by_policy))
        log(f"created {args.policies} Deployments and policies in {time.monotonic() - started:.0f}s")
        audited = bench.writes_by(apply_throughput.FORECASTER, NAMESPACE)[1]
        if args.quiet_below is not None:
            wait_until_quiet(args.quiet_below, log)
        load_at_start = os.getloadavg()
        source = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=60))
        forecaster_kubeconfig = str(bench.forecaster_kubeconfig)
        runs, yaml_runs = [], []
        with default_pool() as fit_pool:
            for interval in refit_intervals if args.every else []:
                replicas = Replicas(args.replicas, args.shards, forecaster_kubeconfig, source, interval)
                for run in range(args.runs):
                    at = end + pd.Timedelta(seconds=30) - pd.Timedelta(seconds=args.every * (args.runs - 1 - run))
                    wall, results = replicas.round(at, args.threads)
                    if len(results) != args.policies or len({(r.namespace, r.policy) for r in results}) != len(results):
                        raise RuntimeError(f"{len(results)} results for {args.policies} policies: not each once")
                    audit, audited = bench.writes_by(apply_throughput.FORECASTER, NAMESPACE, audited)
                    writes = {"proposals_created": sum(n for k, n in audit.items()
                                                       if k.startswith("create scalingproposals ")),
                              "policy_status_writes": sum(n for k, n in audit.items()
                                                          if k.startswith("patch scalingpolicies/status ")),
                              "audit_log": audit}
                    runs.append({**figures(wall, results, f"refit={interval:g}s", writes), "round": run + 1,
                                 "refit_interval": interval, "at": str(at),
                                 "replicas": args.replicas})
                    log(f"refit interval {interval:g}s, round {run + 1} at {at:%H:%M}: {wall:.1f}s; "
                        f"{runs[-1]['refit_decisions']}; {runs[-1]['outcomes']}; "
                        f"split {runs[-1]['split_thread_seconds']}; writes {audit}")
                replicas.close()
                delete_proposals(custom)
            for run in range(args.runs if not args.every else 0):
                forecaster = Forecaster(kube=Kube(api_client(forecaster_kubeconfig), component="scalegate-forecaster"),
                                        source=source, pool=fit_pool)
                wall, results = one_round(forecaster, args.threads)
                proposed = sum(1 for r in results if r.outcome == "proposed")
                created = len(custom.list_namespaced_custom_object("scalegate.io", "v1alpha1", NAMESPACE,
                                                                   "scalingproposals")["items"])
                if created != proposed:
                    raise RuntimeError(f"{proposed} proposed but {created} proposals exist")
                # Every policy that was not skipped had its status written once (ForecastReady).
                writes = {"proposals_created": created,
                          "policy_status_writes": sum(1 for r in results if r.outcome != "skipped")}
                runs.append(figures(wall, results, "create", writes))
                log(f"run {run + 1}: {wall:.1f}s for {len(results)} policies; {runs[-1]['outcomes']}; {writes}")
                delete_proposals(custom)
            for run in range(args.yaml_runs if not args.every else 0):
                forecaster = Forecaster(kube=Kube(api_client(forecaster_kubeconfig), component="scalegate-forecaster"),
                                        source=source, output="yaml", output_dir=work / f"out-{run}", pool=fit_pool)
                wall, results = one_round(forecaster, args.threads)
                yaml_runs.append(figures(wall, results, "yaml", {"proposals_created": 0, "policy_status_writes": 0}))
                log(f"yaml run {run + 1}: {wall:.1f}s for {len(results)} policies; {yaml_runs[-1]['outcomes']}")
    finally:
        prometheus.stop()
        if bench is not None:
            bench.close()
    summary = {"policies": args.policies, "plans": args.plans, "cpus": os.cpu_count(),
               "load_average_at_start": load_at_start,
               "includes": includes, "runs": runs, "yaml_runs": yaml_runs,
               "median_wall_seconds": statistics.median(r["wall_seconds"] for r in runs) if runs else None,
               "median_yaml_wall_seconds": (statistics.median(r["wall_seconds"] for r in yaml_runs)
                                            if yaml_runs else None)}
    print("includes: the forecaster as " + includes["forecaster"] + " with the RBAC of manifests/, admission policies "
          + ", ".join(includes["admission_policies"]) + "; a round lists the policies, reads the scales, queries"
          " Prometheus, fits, creates the proposals and writes each policy's status through the API server")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in load_at_start)} on {os.cpu_count()} cores"
          " (other work on the machine shares them)")
    print(f"{'run':>4} {'mode':>12} {'policies':>9} {'wall s':>8} {'per-policy median s':>20} {'p95 s':>7} "
          f"{'proposals':>10} {'status writes':>14} {'refits':>7} {'query s':>8} {'fit s':>8} {'api+rest s':>10}")
    for i, r in enumerate(runs + yaml_runs, 1):
        w = r["api_writes"] or {}
        split = r["split_thread_seconds"]
        refits = sum(n for reason, n in r["refit_decisions"].items() if reason not in ("Kept", "none"))
        print(f"{i:>4} {r['mode']:>12} {r['policies']:>9} {r['wall_seconds']:>8.1f} "
              f"{r['per_policy_median_seconds'] or 0:>20.3f} {r['per_policy_p95_seconds'] or 0:>7.3f} "
              f"{w.get('proposals_created', 0):>10} {w.get('policy_status_writes', 0):>14} {refits:>7} "
              f"{split['query']:>8.1f} {split['fit']:>8.1f} {split['api_and_rest']:>10.1f}")
    print("query/fit/api+rest: thread-seconds summed over the policies (they overlap; not wall time)")
    if runs and args.every:
        for interval in refit_intervals:
            walls = [r["wall_seconds"] for r in runs if r["refit_interval"] == interval]
            print(f"refit interval {interval:g}s: {len(walls)} rounds every {args.every:g}s, total {sum(walls):.1f}s, "
                  f"first {walls[0]:.1f}s, median of the later ones "
                  f"{statistics.median(walls[1:]) if len(walls) > 1 else float('nan'):.1f}s")
    elif runs:
        print(f"median round: {summary['median_wall_seconds']:.1f}s for {args.policies} policies, proposals created"
              f" and status written (goal <= 60 s)")
    if yaml_runs:
        print(f"yaml mode (no API writes): {summary['median_yaml_wall_seconds']:.1f}s")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
