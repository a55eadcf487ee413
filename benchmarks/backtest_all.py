"""Backtest every recorded series and time the forecaster.

Runs ``scalegate backtest`` (the library call behind it) on each CSV in the
load directory, one process per core, with the contract's default setting
(capacity = p99 / 20, 7 training days, the next 7 evaluated, hourly decisions
covering the next hour), then prints a table per series, the means, a JSON
summary, and the CPU time of one forecast on 14 days of 5-minute history.

Other splits check that a change does not only help on days 7-14, e.g.
``--train-days 14`` (days 14-21 of the seven series long enough; shorter ones
are skipped and named).

Plans: ``--plan-horizon SECONDS --plan-step SECONDS --approval-delay SECONDS``
replays scalegate proposing plans (see ``scalegate.forecast.plans``), and
``--grid STEPS:HORIZONS`` (e.g. ``600,1800,3600:21600,43200,86400``) replays
scalegate for every step and horizon of the grid (with the oracle to compare;
the other baselines do not depend on plans) and prints the trade-off table:
mean approvals per day, mean and worst under-provisioning, replica-hours vs
the hourly oracle. The issue's goal is ``--grid ...:86400 --approval-delay 1800``
at the default split: <= 1.5 approvals per workload per day, <= 1.0% mean and
<= 3% worst under-provisioned, <= 1.15x the oracle's replica-hours. The table
ends with the default plan step and horizon that the README's rule chooses
(:func:`choose_default`); ``--report GRID.json`` re-prints all of it from a grid's JSON.

Usage::

    python benchmarks/backtest_all.py [LOAD_DIR] [--workers 2] [--json OUT.json]
        [--interval pointwise|peak] [--models a,b] [--extra] [--only s1,s2] [--timing-calls 50]
        [--train-days 7] [--eval-days 7] [--series a,b]
        [--plan-horizon SECONDS --plan-step SECONDS] [--approval-delay SECONDS] [--grid STEPS:HORIZONS]
        [--report GRID.json]

``LOAD_DIR`` defaults to ``$SCALEGATE_LOAD_DIR`` or the repository's ``tests/data/load``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from scalegate.forecast import ForecastError, forecast_series, load_csv
from scalegate.forecast.backtest import DEFAULT_STRATEGIES, EXTRA_STRATEGIES, BacktestSettings, run_backtest
from scalegate.forecast.pipeline import ALL_MODELS, DEFAULT_MODELS

DEFAULT_LOAD_DIR = str(Path(__file__).resolve().parents[1] / "tests" / "data" / "load")


def _one(job: tuple[str, BacktestSettings, tuple[str, ...]]) -> tuple[str, dict | None]:
    path, settings, strategies = job
    label = Path(path).name + (f" (plans {settings.plan_step_seconds}s/{settings.plan_horizon_seconds}s)"
                               if settings.plans else "")
    started = time.monotonic()
    series = load_csv(path)
    days = (series.index[-1] - series.index[0]).total_seconds() / 86400
    if days < settings.train_days + 1:  # less than a day to evaluate
        print(f"  skip {Path(path).name}: {days:.1f} days", file=sys.stderr, flush=True)
        return Path(path).stem, None
    try:
        result = run_backtest(series, settings, strategies)
    except ForecastError as exc:
        print(f"  skip {Path(path).name}: {exc.message}", file=sys.stderr, flush=True)
        return Path(path).stem, None
    out = result.to_json()
    out["settings"]["wall_seconds"] = time.monotonic() - started
    print(f"  done {label} in {out['settings']['wall_seconds']:.0f}s", file=sys.stderr, flush=True)
    return Path(path).stem, out


def time_forecasts(path: str, calls: int) -> dict:
    """CPU milliseconds per forecast_series call on the last 14 days of ``path`` (5-minute data)."""
    series = load_csv(path)
    history = series.iloc[-14 * 288 :]
    forecast_series(history, 3600, 0.95)  # imports and caches
    per_call = []
    for i in range(calls):
        window = series.iloc[len(series) - 14 * 288 - i : len(series) - i]
        started = time.process_time()
        try:
            forecast_series(window, 3600, 0.95)
        except Exception:  # noqa: BLE001 - a refusal costs time too; it is what is measured
            pass
        per_call.append(time.process_time() - started)
    per_call_ms = 1000 * np.asarray(per_call)
    return {
        "series": Path(path).name,
        "points": len(history),
        "calls": calls,
        "mean_ms": float(per_call_ms.mean()),
        "p95_ms": float(np.percentile(per_call_ms, 95)),
        "projected_1000_policies_on_2_cores_s": float(per_call_ms.mean() * 1000 / 2 / 1000),
    }


def summarise(results: dict[str, dict], strategies: tuple[str, ...]) -> dict:
    """Per strategy: mean and worst under-provisioning, mean replica-hours / oracle, mean MASE."""
    summary = {}
    for name in strategies:
        under = [r["strategies"][name]["under_provisioned_fraction"] for r in results.values()]
        ratio = [
            r["strategies"][name]["replica_hours"] / r["strategies"]["oracle"]["replica_hours"]
            for r in results.values()
        ]
        mase = [r["strategies"][name]["mase"] for r in results.values() if r["strategies"][name]["mase"] is not None]
        coverage = [
            r["settings"]["bound_coverage"][name] for r in results.values() if name in r["settings"]["bound_coverage"]
        ]
        samples = [r["settings"].get("sample_coverage", {}).get(name) for r in results.values()]
        samples = [x for x in samples if x is not None]
        band = [r["settings"].get("band_coverage", {}).get(name) for r in results.values()]
        band = [x for x in band if x is not None]
        approvals = [r.get("approvals_per_day", {}).get(name) for r in results.values()]
        approvals = [x for x in approvals if x is not None]
        summary[name] = {
            "mean_approvals_per_day": float(np.mean(approvals)) if approvals else None,
            "mean_under_provisioned": float(np.mean(under)),
            "worst_under_provisioned": float(np.max(under)),
            "mean_replica_hours_vs_oracle": float(np.mean(ratio)),
            "mean_mase": float(np.mean(mase)) if mase else None,
            "mean_proposals": float(np.mean([r["strategies"][name]["proposals"] for r in results.values()])),
            "mean_bound_coverage": float(np.mean(coverage)) if coverage else None,
            "worst_bound_coverage": float(np.min(coverage)) if coverage else None,
            "mean_sample_coverage": float(np.mean(samples)) if samples else None,
            "mean_band_coverage": float(np.mean(band)) if band else None,
            "worst_band_coverage": float(np.min(band)) if band else None,
        }
    return summary


def print_table(results: dict[str, dict], strategies: tuple[str, ...], summary: dict) -> None:
    print("under-provisioned % / replica-hours vs oracle / MASE / proposals, per series and strategy\n")
    _print_figures(results, strategies)
    _print_coverage(results, strategies)
    print()
    for name, s in summary.items():
        mase = "-" if s["mean_mase"] is None else f"{s['mean_mase']:.2f}"
        coverage = (
            f"  peak under bound {s['mean_bound_coverage']:.3f} (worst {s['worst_bound_coverage']:.3f})"
            if s["mean_bound_coverage"] is not None
            else ""
        )
        if s.get("mean_band_coverage") is not None:
            coverage += f"  samples under band {s['mean_band_coverage']:.4f} (worst {s['worst_band_coverage']:.4f})"
        per_day = s.get("mean_approvals_per_day")
        approvals = "" if per_day is None else f"  approvals/day {per_day:.2f}"
        print(
            f"{name:20s} mean under {100 * s['mean_under_provisioned']:5.2f}%  worst "
            f"{100 * s['worst_under_provisioned']:5.2f}%  replica-hours {s['mean_replica_hours_vs_oracle']:.3f}x oracle"
            f"  MASE {mase}  proposals {s['mean_proposals']:.0f}{approvals}{coverage}"
        )


def _print_figures(results: dict[str, dict], strategies: tuple[str, ...]) -> None:
    header = f"{'series':34s}" + "".join(f"{name:>26s}" for name in strategies)
    print(header)
    for series, result in sorted(results.items()):
        oracle_hours = result["strategies"]["oracle"]["replica_hours"]
        cells = []
        for name in strategies:
            f = result["strategies"][name]
            mase = "-" if f["mase"] is None else f"{f['mase']:.2f}"
            cells.append(
                f"{100 * f['under_provisioned_fraction']:5.1f}% {f['replica_hours'] / oracle_hours:4.2f}x "
                f"{mase:>4s} {f['proposals']:4d}"
            )
        print(f"{series[:34]:34s}" + "".join(f"{c:>26s}" for c in cells))


def _print_coverage(results: dict[str, dict], strategies: tuple[str, ...]) -> None:
    """Out-of-sample coverage per series, for strategies that state bounds."""
    stated = [n for n in strategies if any(n in r["settings"]["bound_coverage"] for r in results.values())]
    if not stated:
        return
    print("\ncoverage: horizons whose peak stayed under the bound / samples under the bound / "
          "samples under their band\n")
    print(f"{'series':34s}" + "".join(f"{name:>26s}" for name in stated))
    for series, result in sorted(results.items()):
        cells = []
        for name in stated:
            keys = ("bound_coverage", "sample_coverage", "band_coverage")
            figures = [result["settings"].get(key, {}).get(name) for key in keys]
            cells.append(" ".join("-" if x is None else f"{x:.3f}" for x in figures))
        print(f"{series[:34]:34s}" + "".join(f"{c:>26s}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("load_dir", nargs="?", default=os.environ.get("SCALEGATE_LOAD_DIR", DEFAULT_LOAD_DIR))
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", dest="json_out", help="also write the JSON summary to this file")
    parser.add_argument("--interval", choices=("pointwise", "peak"), default=BacktestSettings.interval)
    parser.add_argument("--train-days", type=float, default=BacktestSettings.train_days)
    parser.add_argument("--eval-days", type=float, default=BacktestSettings.eval_days)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument(
        "--models", default=",".join(DEFAULT_MODELS), help=f"scalegate's candidates, from {','.join(ALL_MODELS)}"
    )
    parser.add_argument("--extra", action="store_true", help=f"also run {', '.join(EXTRA_STRATEGIES)}")
    parser.add_argument("--timing-calls", type=int, default=50)
    parser.add_argument(
        "--only", help="comma-separated strategies to run (oracle is always added), e.g. scalegate for a quick check"
    )
    parser.add_argument("--series", help="comma-separated file stems to run (default: every CSV), for debugging")
    parser.add_argument("--plan-horizon", type=int, metavar="SECONDS", help="scalegate proposes plans this long")
    parser.add_argument("--plan-step", type=int, metavar="SECONDS", help="in steps this long")
    parser.add_argument("--approval-delay", type=int, default=0, metavar="SECONDS",
                        help="time from a proposal to its approval (0)")
    parser.add_argument("--grid", metavar="STEPS:HORIZONS",
                        help="replay scalegate with plans for every step and horizon, "
                        "e.g. 600,1800,3600:21600,43200,86400")
    parser.add_argument("--report", metavar="GRID.json",
                        help="re-print the table, the per-series figures and the chosen default of a grid's JSON")
    args = parser.parse_args(argv)

    if args.report:
        print_grid(json.loads(Path(args.report).read_text(encoding="utf-8")))
        return 0
    paths = sorted(str(p) for p in Path(args.load_dir).glob("*.csv"))
    if args.series:
        wanted = set(args.series.split(","))
        paths = [p for p in paths if Path(p).stem in wanted]
    if not paths:
        print(f"no CSV files in {args.load_dir}", file=sys.stderr)
        return 2
    strategies = DEFAULT_STRATEGIES + (EXTRA_STRATEGIES if args.extra else ())
    if args.only:
        strategies = tuple(dict.fromkeys([*args.only.split(","), "oracle"]))
    settings = BacktestSettings(
        interval=args.interval,
        confidence=args.confidence,
        models=tuple(args.models.split(",")),
        train_days=args.train_days,
        eval_days=args.eval_days,
        plan_horizon_seconds=args.plan_horizon,
        plan_step_seconds=args.plan_step,
        approval_delay_seconds=args.approval_delay,
    )
    if args.grid:
        return run_grid(args, paths, settings)
    print(f"backtesting {len(paths)} series on {args.workers} worker(s)...", file=sys.stderr)
    with multiprocessing.Pool(args.workers) as pool:
        outcomes = pool.map(_one, [(p, settings, strategies) for p in paths], chunksize=1)
    results = {name: result for name, result in outcomes if result is not None}
    skipped = sorted(name for name, result in outcomes if result is None)
    if not results:
        print("no series is long enough for these settings", file=sys.stderr)
        return 2
    summary = summarise(results, strategies)
    print_table(results, strategies, summary)
    if skipped:
        print(f"\nskipped (too short for {args.train_days:g} training days + 1): {', '.join(skipped)}")
    if settings.plans:
        print()
        _print_plan_series(results)

    five_minute = [p for p in paths if load_csv(p).index.to_series().diff().median().total_seconds() == 300]
    timing = time_forecasts(five_minute[0], args.timing_calls) if five_minute and args.timing_calls else None
    if timing:
        print(
            f"\nforecast_series on {timing['points']} points ({timing['series']}): {timing['mean_ms']:.0f} ms CPU per "
            f"call (p95 {timing['p95_ms']:.0f} ms); 1,000 policies on 2 cores: "
            f"~{timing['projected_1000_policies_on_2_cores_s']:.0f} s"
        )
    report = {
        "settings": {
            "interval": args.interval,
            "confidence": args.confidence,
            "train_days": args.train_days,
            "eval_days": args.eval_days,
            "skipped": skipped,
            "models": settings.models,
            "load_dir": args.load_dir,
            "plan_horizon_seconds": settings.plan_horizon_seconds,
            "plan_step_seconds": settings.plan_step_seconds,
            "approval_delay_seconds": settings.approval_delay_seconds,
        },
        "summary": summary,
        "series": results,
        "forecast_timing": timing,
    }
    print("\n" + json.dumps({"summary": summary, "forecast_timing": timing}, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


#: The issue's goal for plans (mean approvals per day, mean and worst under-provisioned
#: fraction, mean replica-hours / the hourly oracle's).
GOAL = {"approvals": 1.5, "mean_under": 0.010, "worst_under": 0.03, "cost": 1.15}


def goals_met(row: dict) -> dict[str, bool]:
    """Which of the issue's four goals a grid row's mean figures meet."""
    return {
        "approvals": row["approvals_per_day"] <= GOAL["approvals"],
        "mean_under": row["mean_under_provisioned"] <= GOAL["mean_under"],
        "worst_under": row["worst_under_provisioned"] <= GOAL["worst_under"],
        "cost": row["replica_hours_vs_oracle"] <= GOAL["cost"],
    }


def choose_default(table: list[dict]) -> dict | None:
    """The default plan step and horizon, by the rule stated in the README (Performance,
    "Plans"), fixed before the grid was measured:

    1. the cells whose mean figures meet every goal; if none does, those meeting the most;
    2. of those, the longest horizon (one plan a day is what plans are for);
    3. then the coarsest step (fewer steps to read and apply, and less reliance on the
       fine structure of the recorded series);
    4. remaining ties: fewer approvals per day, then the lower worst-series under-provisioning.
    """
    if not table:
        return None
    most = max(sum(goals_met(row).values()) for row in table)
    candidates = [row for row in table if sum(goals_met(row).values()) == most]
    return min(candidates, key=lambda row: (-row["plan_horizon_seconds"], -row["plan_step_seconds"],
                                            row["approvals_per_day"], row["worst_under_provisioned"]))


def run_grid(args, paths: list[str], base: BacktestSettings) -> int:
    """scalegate (and the oracle) for every plan step and horizon of ``args.grid``; the trade-off table."""
    step_text, _, horizon_text = args.grid.partition(":")
    steps = [int(x) for x in step_text.split(",") if x]
    horizons = [int(x) for x in horizon_text.split(",") if x]
    if not steps or not horizons:
        print("--grid needs STEPS:HORIZONS, e.g. 600,1800,3600:21600,43200,86400", file=sys.stderr)
        return 2
    cells = [(step, horizon) for horizon in horizons for step in steps if horizon % step == 0]
    jobs = []
    for step, horizon in cells:
        settings = dataclasses.replace(base, plan_step_seconds=step, plan_horizon_seconds=horizon)
        jobs += [(path, settings, ("scalegate", "oracle")) for path in paths]
    # longest first (finer bins cost more), so that two workers finish together
    jobs.sort(key=lambda job: (job[1].plan_step_seconds, -os.path.getsize(job[0])))
    print(f"grid: {len(cells)} settings x {len(paths)} series on {args.workers} worker(s)...", file=sys.stderr)
    with multiprocessing.Pool(args.workers) as pool:
        outcomes = pool.map(_one, jobs, chunksize=1)
    by_cell: dict[tuple[int, int], dict[str, dict]] = {cell: {} for cell in cells}
    for (_, settings, _), (name, result) in zip(jobs, outcomes, strict=True):
        if result is not None:
            by_cell[(settings.plan_step_seconds, settings.plan_horizon_seconds)][name] = result
    table = []
    for step, horizon in cells:
        results = by_cell[(step, horizon)]
        if not results:
            continue
        summary = summarise(results, ("scalegate",))["scalegate"]
        row = {
            "plan_step_seconds": step,
            "plan_horizon_seconds": horizon,
            "approvals_per_day": summary["mean_approvals_per_day"],
            "mean_under_provisioned": summary["mean_under_provisioned"],
            "worst_under_provisioned": summary["worst_under_provisioned"],
            "replica_hours_vs_oracle": summary["mean_replica_hours_vs_oracle"],
            "series": len(results),
        }
        row["meets_goal"] = all(goals_met(row).values())
        table.append(row)
    report = {
        "settings": {"approval_delay_seconds": base.approval_delay_seconds, "train_days": base.train_days,
                     "eval_days": base.eval_days, "confidence": base.confidence, "load_dir": args.load_dir},
        "goal": GOAL,
        "table": table,
        "series": {f"{step}:{horizon}": results for (step, horizon), results in by_cell.items()},
    }
    print_grid(report)
    print("\n" + json.dumps({"table": table}, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


def print_grid(report: dict) -> None:
    """The trade-off table of a grid report (as ``--grid ... --json`` writes it), each cell's
    figures per series, and the default the README's rule chooses (:func:`choose_default`)."""
    table = report["table"]
    print(f"\nplans, approval delay {report['settings']['approval_delay_seconds']}s: mean over the series\n")
    print(f"{'step':>6s} {'horizon':>8s} {'approvals/day':>14s} {'under (mean)':>13s} {'under (worst)':>14s} "
          f"{'vs oracle':>10s} {'goal':>5s}")
    for row in table:
        print(f"{row['plan_step_seconds'] // 60:4d}m {row['plan_horizon_seconds'] // 3600:7d}h "
              f"{row['approvals_per_day']:14.2f} {100 * row['mean_under_provisioned']:12.2f}% "
              f"{100 * row['worst_under_provisioned']:13.2f}% {row['replica_hours_vs_oracle']:9.3f}x "
              f"{'met' if row['meets_goal'] else '-':>5s}")
    for key, results in report["series"].items():
        if results:
            step, horizon = (int(x) for x in key.split(":"))
            print(f"\nstep {step // 60} min, horizon {horizon // 3600} h:")
            _print_plan_series(results)
    chosen = choose_default(table)
    if chosen is not None:
        met = goals_met(chosen)
        print(f"\ndefault by the README's rule: step {chosen['plan_step_seconds']}s, horizon "
              f"{chosen['plan_horizon_seconds']}s; goals met: {sum(met.values())} of 4"
              + ("" if all(met.values()) else f" (missed: {', '.join(k for k, ok in met.items() if not ok)})"))


def _print_plan_series(results: dict[str, dict]) -> None:
    """Per series: scalegate's approvals per day, under-provisioning, replica-hours vs oracle,
    how often each re-plan reason proposed, and the share of samples above the step's upper bound."""
    print(f"{'series':34s} {'approvals/day':>14s} {'under':>7s} {'vs oracle':>10s} {'breached':>9s}  proposed by")
    rows = []
    for series, result in sorted(results.items()):
        f = result["strategies"]["scalegate"]
        ratio = f["replica_hours"] / result["strategies"]["oracle"]["replica_hours"]
        plan = result.get("plan") or {}
        reasons = {k: v for k, v in (plan.get("reasons") or {}).items() if k != "PlanHolds"}
        rows.append((result["approvals_per_day"]["scalegate"], f["under_provisioned_fraction"], ratio))
        print(f"{series[:34]:34s} {result['approvals_per_day']['scalegate']:14.2f} "
              f"{100 * f['under_provisioned_fraction']:6.2f}% {ratio:9.3f}x "
              f"{100 * plan.get('breach_fraction', 0):8.2f}%  "
              + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    mean = np.mean(rows, axis=0)
    print(f"{'mean':34s} {mean[0]:14.2f} {100 * mean[1]:6.2f}% {mean[2]:9.3f}x")


if __name__ == "__main__":
    sys.exit(main())
