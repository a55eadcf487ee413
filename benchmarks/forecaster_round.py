"""One forecaster round over many policies, against a real Prometheus and the dev control plane.

    .venv/bin/python benchmarks/forecaster_round.py                 # 1,000 policies, 14 days of 5-minute history
    .venv/bin/python benchmarks/forecaster_round.py --policies 100 --runs 1

Prometheus holds one recorded series per policy (the shared real load traces, each scaled
by a different factor so no two are equal), backfilled with promtool; every policy has a
Deployment and a forecast spec. The forecaster runs as in production (`Forecaster` with a
process pool of one worker per core, queries and API calls in threads) but writes its
proposals as YAML into a temporary directory, so repeated runs see the same state.
Reports the wall time of a round (median over runs), per-policy forecast time, and the
outcomes. Goal on 2 cores: <= 60 s for 1,000 policies.
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
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kubernetes
import numpy as np
import pandas as pd

from scalegate.dev import DevCluster, kubectl_path
from scalegate.dev.localprom import LocalPrometheus, backfill, free_port, shift_to_end
from scalegate.forecast import load_csv
from scalegate.forecast.prometheus import PrometheusSettings, PrometheusSource
from scalegate.forecaster import Forecaster, default_pool
from scalegate.kube import Kube, api_client

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16, help="I/O threads for queries and API calls")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="scalegate-bench-forecast-"))
    log = lambda m: print(f"# {m}", file=sys.stderr, flush=True)  # noqa: E731
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
    dev = DevCluster(state_dir=work / "cluster", log=log)
    try:
        dev.up()
        kubectl = [kubectl_path(), f"--kubeconfig={dev.kubeconfig}"]
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(REPO / "crds")], check=True, capture_output=True)
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd", "--all"], check=True,
                       capture_output=True)
        subprocess.run([*kubectl, "create", "namespace", NAMESPACE], check=True, capture_output=True)
        admin = api_client(str(dev.kubeconfig))
        apps, custom = kubernetes.client.AppsV1Api(admin), kubernetes.client.CustomObjectsApi(admin)

        def create(name: str) -> None:
            labels = {"app": name}
            apps.create_namespaced_deployment(NAMESPACE, {"metadata": {"name": name}, "spec": {
                "replicas": 3, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [{"name": "c", "image": "registry.invalid/c:1"}]}}}})
            capacity = float(series_by_policy[name].quantile(0.99)) / 20 or 1.0
            custom.create_namespaced_custom_object("scalegate.io", "v1alpha1", NAMESPACE, "scalingpolicies", {
                "apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingPolicy", "metadata": {"name": name},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                         "minReplicas": 1, "maxReplicas": 100,
                         "forecast": {"query": f'load{{policy="{name}"}}', "capacityPerReplica": capacity,
                                      "horizonSeconds": 3600, "lookbackSeconds": 14 * 86400, "stepSeconds": 300}}})

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(create, series_by_policy))
        policies = Kube(admin).list_policies(NAMESPACE)
        source = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=60))
        runs = []
        with default_pool() as fit_pool:
            for run in range(args.runs):
                forecaster = Forecaster(kube=Kube(api_client(str(dev.kubeconfig))), source=source, output="yaml",
                                        output_dir=work / f"out-{run}", pool=fit_pool)
                started = time.monotonic()
                results = forecaster.run_round(policies, threads=args.threads)
                wall = time.monotonic() - started
                per_policy = [r.seconds for r in results if r.seconds]
                outcomes = collections.Counter(f"{r.outcome}/{r.reason}" for r in results)
                runs.append({"wall_seconds": wall, "policies": len(results),
                             "per_policy_median_seconds": statistics.median(per_policy) if per_policy else None,
                             "per_policy_p95_seconds": float(np.percentile(per_policy, 95)) if per_policy else None,
                             "outcomes": dict(outcomes)})
                log(f"run {run + 1}: {wall:.1f}s for {len(results)} policies; {dict(outcomes)}")
    finally:
        prometheus.stop()
        dev.down(quiet=True)
    summary = {"policies": args.policies, "cpus": os.cpu_count(), "runs": runs,
               "median_wall_seconds": statistics.median(r["wall_seconds"] for r in runs)}
    print(f"{'run':>4} {'policies':>9} {'wall s':>8} {'per-policy median s':>20} {'p95 s':>7}")
    for i, r in enumerate(runs, 1):
        print(f"{i:>4} {r['policies']:>9} {r['wall_seconds']:>8.1f} {r['per_policy_median_seconds'] or 0:>20.3f} "
              f"{r['per_policy_p95_seconds'] or 0:>7.3f}")
    print(f"median round: {summary['median_wall_seconds']:.1f}s for {args.policies} policies (goal <= 60 s)")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
