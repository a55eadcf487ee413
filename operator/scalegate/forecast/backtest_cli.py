"""``scalegate backtest``: replay a recorded series with scalegate and the baselines.

Wire it into the main parser with ``register(subparsers)``; the subcommand's
``func`` is :func:`run`, which returns the process exit code.
"""

from __future__ import annotations

import argparse
import json
import sys

from .backtest import DEFAULT_STRATEGIES, BacktestResult, BacktestSettings, run_backtest
from .series import ForecastError, load_csv

EXIT_OK = 0
EXIT_BAD_INPUT = 2

#: --plan-step when only --plan-horizon is given: the default chosen from the trade-off
#: table in the README (Performance, "Plans").
DEFAULT_PLAN_STEP_SECONDS = 3600


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``backtest`` subcommand to an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "backtest",
        help="replay a recorded load series and compare scalegate with baseline scalers",
        description=(
            "Replays a CSV (timestamp,value) as if replicas were decided every decision interval over the "
            "evaluated days, each strategy using only data before that moment, and reports per strategy the "
            "share of time under-provisioned, replica-hours, MASE, the number of proposals and the approvals per "
            "day a person would have given. With --plan-horizon and --plan-step, scalegate proposes plans."
        ),
    )
    parser.add_argument("--data", required=True, metavar="FILE.csv", help="the recorded series, header timestamp,value")
    parser.add_argument(
        "--capacity-per-replica",
        type=_positive_float,
        metavar="N",
        help="load one replica serves (default: the series' 99th percentile / 20)",
    )
    parser.add_argument("--horizon", type=_positive_int, default=3600, metavar="SECONDS", help="default 3600")
    parser.add_argument(
        "--decision-interval", type=_positive_int, default=3600, metavar="SECONDS", help="default 3600"
    )
    parser.add_argument("--train-days", type=_positive_float, default=7.0, help="days before the first decision (7)")
    parser.add_argument("--eval-days", type=_positive_float, default=7.0, help="days evaluated (7)")
    parser.add_argument("--confidence", type=_confidence, default=0.95, help="upper-bound confidence (0.95)")
    parser.add_argument(
        "--plan-horizon", type=_positive_int, metavar="SECONDS",
        help="scalegate proposes plans reaching this far (a policy's planHorizonSeconds), re-planned by the "
        f"forecaster's rule at every decision; with it, --plan-step defaults to {DEFAULT_PLAN_STEP_SECONDS}",
    )
    parser.add_argument(
        "--plan-step", type=_positive_int, metavar="SECONDS",
        help="the length of one step of a plan (planStepSeconds); needs --plan-horizon",
    )
    parser.add_argument(
        "--approval-delay", type=_non_negative_int, default=0, metavar="SECONDS",
        help="time from a scalegate proposal to its approval: a plan (or change) takes effect this much later, "
        "the previous one running meanwhile (default 0)",
    )
    parser.add_argument("--json", action="store_true", help='print one JSON object {"strategies": {...}}')
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the backtest described by parsed ``args``; print the figures; return the exit code."""
    try:
        series = load_csv(args.data)
    except ForecastError as exc:
        print(f"scalegate backtest: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.plan_step and not args.plan_horizon:
        print("scalegate backtest: --plan-step needs --plan-horizon", file=sys.stderr)
        return EXIT_BAD_INPUT
    plan_step = (args.plan_step or DEFAULT_PLAN_STEP_SECONDS) if args.plan_horizon else None
    try:
        settings = BacktestSettings(
            capacity_per_replica=args.capacity_per_replica,
            horizon_seconds=args.horizon,
            decision_interval_seconds=args.decision_interval,
            train_days=args.train_days,
            eval_days=args.eval_days,
            confidence=args.confidence,
            plan_horizon_seconds=args.plan_horizon,
            plan_step_seconds=plan_step,
            approval_delay_seconds=args.approval_delay,
        )
        result = run_backtest(series, settings, DEFAULT_STRATEGIES, progress=_Progress())
    except ForecastError as exc:
        print(f"scalegate backtest: {exc.reason}: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:
        print(f"scalegate backtest: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(format_table(result))
    return EXIT_OK


def format_table(result: BacktestResult) -> str:
    """A readable table of the figures, with replica-hours relative to the oracle."""
    oracle = result.strategies.get("oracle")
    lines = [
        f"evaluated {result.eval_start:%Y-%m-%d %H:%M} to {result.eval_end:%Y-%m-%d %H:%M} UTC, "
        f"{result.decisions} decisions, capacity {result.capacity_per_replica:.4g} per replica",
        "",
        f"{'strategy':20s} {'under-provisioned':>18s} {'replica-hours':>14s} {'vs oracle':>10s} {'MASE':>6s} "
        f"{'proposals':>10s} {'approvals/day':>14s}",
    ]
    for name, figures in result.strategies.items():
        ratio = f"{figures.replica_hours / oracle.replica_hours:.2f}x" if oracle and oracle.replica_hours else "-"
        mase = "-" if figures.mase is None else f"{figures.mase:.2f}"
        approvals = result.approvals_per_day.get(name)
        lines.append(
            f"{name:20s} {100 * figures.under_provisioned_fraction:17.2f}% {figures.replica_hours:14.1f} "
            f"{ratio:>10s} {mase:>6s} {figures.proposals:10d} {'-' if approvals is None else f'{approvals:.2f}':>14s}"
        )
    if result.plan:
        plan = result.plan
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(plan["reasons"].items()))
        lines += ["", f"scalegate plans of {plan['plan_horizon_seconds']}s in steps of {plan['plan_step_seconds']}s, "
                  f"approved {plan['approval_delay_seconds']}s after proposal: {plan['proposed']} proposed, "
                  f"{plan['approved']} approved; re-plan rule: {reasons}; load above the step's upper bound "
                  f"{100 * plan['breach_fraction']:.2f}% of the time"]
    if result.forecast_errors:
        kept = ", ".join(f"{reason} x{count}" for reason, count in sorted(result.forecast_errors.items()))
        lines += ["", f"scalegate kept its replicas (no proposal) on: {kept}"]
    return "\n".join(lines)


class _Progress:
    """Progress on stderr: a line updated in place on a terminal, else a line per quarter."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        parts = 10 if self.interactive else 4
        mark = parts * done // total
        if mark == self.last:
            return
        self.last = mark
        text = f"backtest: {done}/{total} decisions"
        if self.interactive:
            print("\r" + text, end="\n" if done == total else "", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _confidence(text: str) -> float:
    value = float(text)
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0.5, 1), got {text}")
    return value
