"""`kubectl scalegate explain`: why this number of replicas.

The proposal carries its evidence (forecast peak, interval, capacity per replica, the
fitted window and its query); the policy gives the bounds; Prometheus, when given, gives
the load history the forecast was made from and what happened since. This module turns
them into text and a PNG, with no Kubernetes client in sight.
"""

from __future__ import annotations

import datetime as dt
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..forecast.prometheus import MAX_POINTS_PER_REQUEST, PrometheusSource
from ..forecast.series import ForecastError
from ..model import Evidence, InvalidObject, parse_time
from .render import PlanView, ScheduledStep, bounds_check, human_duration, number, plan_checks, table

#: The most points of history read: one request's worth.
MAX_POINTS = MAX_POINTS_PER_REQUEST


class HistoryUnavailable(Exception):
    """The load history could not be read; the explanation goes on without it."""


@dataclass
class History:
    """One load series from Prometheus (several series are summed, and said so)."""

    times: list[dt.datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    series: int = 1

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class ExplainedProposal:
    """What `explain` reads from a proposal, leniently (anything missing is None): the
    change, and its evidence as the forecaster wrote it (`model.Evidence`)."""

    namespace: str
    name: str
    target: str
    current: int | None
    replicas: int | None
    reason: str
    evidence: Evidence
    plan: PlanView | None = None  # the schedule, for a plan

    @classmethod
    def of(cls, proposal: Mapping[str, Any]) -> "ExplainedProposal":
        meta = proposal.get("metadata") or {}
        spec = proposal.get("spec") or {}
        ref = spec.get("targetRef") or {}

        def integer(value: Any) -> int | None:
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(
            namespace=meta.get("namespace", ""), name=meta.get("name", ""),
            target=f"{ref.get('kind', '?')}/{ref.get('name', '?')}",
            current=integer(spec.get("currentReplicas")), replicas=integer(spec.get("replicas")),
            reason=str(spec.get("reason") or ""),
            evidence=Evidence.parse(spec.get("forecast")),
            plan=PlanView.of(proposal),
        )

    def capacity(self, policy: Mapping[str, Any] | None) -> float | None:
        """Load one replica serves: the evidence's, else the policy's forecast setting."""
        if self.evidence.capacity_per_replica:
            return self.evidence.capacity_per_replica
        value = (((policy or {}).get("spec") or {}).get("forecast") or {}).get("capacityPerReplica")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None

    def history_range(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime, int]:
        """(start, end, step seconds) to read: the fitted window, and on to the end of the
        horizon (or now, if sooner) to show what really happened."""
        ev = self.evidence
        if ev.window_start is None or ev.window_end is None:
            raise HistoryUnavailable("the proposal records no forecast window to read the history of")
        end = ev.window_end
        if ev.horizon_end is not None:
            end = max(end, min(ev.horizon_end, now))
        if self.plan is not None and self.plan.ends_at is not None:  # the realised load of every step so far
            end = max(end, min(self.plan.ends_at, now))
        span = max((end - ev.window_start).total_seconds(), 1.0)
        recorded: float = ev.resolution_seconds or 0
        if not recorded and ev.points and ev.points > 1:
            recorded = (ev.window_end - ev.window_start).total_seconds() / (ev.points - 1)
        step = max(int(recorded) or 300, math.ceil(span / MAX_POINTS), 1)
        return ev.window_start, end, step


# -- Prometheus ---------------------------------------------------------------------------
def history_of(results: Sequence[Mapping[str, Any]]) -> History:
    """A range query's series as one load series: several are summed (and said so), NaN
    and Inf samples dropped."""
    summed: dict[float, float] = {}
    for series in results:
        for ts, raw in series.get("values") or []:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                summed[float(ts)] = summed.get(float(ts), 0.0) + value
    if not summed:
        raise HistoryUnavailable("the query returned no samples in the proposal's window")
    stamps = sorted(summed)
    return History(times=[dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in stamps],
                   values=[summed[t] for t in stamps], series=len(results))


def fetch_history(source: PrometheusSource, query: str, start: dt.datetime, end: dt.datetime,
                  step: int) -> History:
    """The load history through the forecaster's own Prometheus client (its token, CA
    and timeout), so explain reads what the forecast read, from wherever it could."""
    try:
        results = source.query_range(query, start.timestamp(), end.timestamp(), step)
    except ForecastError as err:
        raise HistoryUnavailable(err.message) from err
    return history_of(results)


# -- text ----------------------------------------------------------------------------------
def _at(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if moment else "?"


def explain_text(proposal: Mapping[str, Any], policy: Mapping[str, Any] | None, history: History | None,
                 now: dt.datetime, *, policy_error: str = "", history_error: str = "") -> str:
    view = ExplainedProposal.of(proposal)
    ev = view.evidence
    head = f"{view.namespace}/{view.name}: {view.target} {view.current} -> {view.replicas} replicas"
    if view.plan is not None:
        head += f" at the first step of a plan of {len(view.plan.steps)}"
    lines = [head]
    if view.reason:
        lines.append(f"  {view.reason}")
    lines.append("")

    lines.append("Forecast")
    if ev.model:
        fitted = f"  {ev.model}"
        if ev.window_start and ev.window_end:
            fitted += (f", fitted on {ev.points if ev.points is not None else '?'} points from "
                       f"{_at(ev.window_start)} to {_at(ev.window_end)}")
        lines.append(fitted)
    if ev.query:
        lines.append(f"  query: {ev.query}")
    horizon = human_duration(ev.horizon_seconds) if ev.horizon_seconds is not None else "?"
    if ev.predicted_peak is not None:
        peak = f"  peak over the next {horizon}: {number(ev.predicted_peak)} predicted"
        if ev.peak_time:
            peak += f" at {_at(ev.peak_time)}"
        lines.append(peak)
    if ev.lower_bound is not None or ev.upper_bound is not None:
        level = f"{ev.confidence:.0%} " if ev.confidence is not None else ""
        lines.append(f"  {level}prediction interval: {number(ev.lower_bound)} .. {number(ev.upper_bound)}")
    if ev.backtest_value is not None:
        metric = ev.backtest_metric or "error"
        note = " (below 1 beats a seasonal-naive forecast)" if metric.upper() == "MASE" else ""
        lines.append(f"  backtest on its own history: {metric} {number(ev.backtest_value)}{note}")
    if ev.coverage is not None:
        lines.append(f"  the upper bound held {ev.coverage:.0%} of the time in replay")
    if ev.predicted_peak is None and ev.upper_bound is None:
        lines.append("  <the proposal carries no forecast figures>")

    lines += ["", "Sizing"]
    if ev.needed is not None and ev.capacity_per_replica:
        basis = "upper bound" if ev.upper_bound is not None else "predicted peak"
        lines.append(f"  {number(ev.sized_for)} ({basis}) / {number(ev.capacity_per_replica)} per replica"
                     f" -> {ev.needed} replicas needed")
        if view.replicas is not None:
            proposed_cap = view.replicas * ev.capacity_per_replica
            headroom = (proposed_cap / ev.sized_for - 1) if ev.sized_for else float("inf")
            lines.append(f"  proposed {view.replicas} x {number(ev.capacity_per_replica)} = {number(proposed_cap)}"
                         + (f" ({headroom:+.1%} vs the {basis})" if math.isfinite(headroom) else ""))
            if view.replicas != ev.needed:
                lines.append(f"  the proposal differs from the {ev.needed} the sizing gives"
                             " (see its reason: e.g. the policy's minimum or step)")
        if view.current is not None:
            current_cap = view.current * ev.capacity_per_replica
            share = f", covers {current_cap / ev.sized_for:.0%} of the {basis}" if ev.sized_for else ""
            lines.append(f"  now {view.current} x {number(ev.capacity_per_replica)} = {number(current_cap)}{share}")
    else:
        lines.append("  <no capacity per replica or forecast figure to size with>")

    if view.plan is not None:
        lines += ["", "Plan"] + plan_lines(view, policy, history, now)

    policy_name = ((proposal.get("spec") or {}).get("policyRef") or {}).get("name")
    lines += ["", f"Bounds (ScalingPolicy {policy_name})"]
    if policy is not None:
        checks = (plan_checks(proposal, policy.get("spec") or {}) if view.plan is not None
                  else bounds_check(proposal, policy.get("spec") or {}))
        lines += [f"  {'ok ' if holds else 'OUT'} {text}" for text, holds in checks] or ["  <no bounds to check>"]
        if any(not holds for _, holds in checks):
            lines.append("  out of bounds: the operator rejects it (OutOfBounds), it never clamps")
        if (policy.get("spec") or {}).get("suspend"):
            lines.append("  the policy is suspended: nothing is applied while it is")
    else:
        lines.append(f"  <{policy_error or 'not found'}>")

    lines += ["", "Load history"]
    if history is not None and len(history):
        in_window = [v for t, v in zip(history.times, history.values, strict=True)
                     if ev.window_end is None or t <= ev.window_end]
        after = [(t, v) for t, v in zip(history.times, history.values, strict=True)
                 if ev.window_end is not None and t > ev.window_end]
        summed = f" (sum of {history.series} series)" if history.series > 1 else ""
        if in_window:
            top = max(in_window)
            lines.append(f"  {len(in_window)} samples{summed}: last {number(in_window[-1])}, "
                         f"max {number(top)}, p95 {number(_quantile(in_window, 0.95))}")
            if ev.capacity_per_replica and view.current is not None:
                capacity_now = view.current * ev.capacity_per_replica
                over = sum(1 for v in in_window if v > capacity_now) / len(in_window)
                lines.append(f"  load exceeded today's capacity ({number(capacity_now)}) {over:.1%} of the time")
        if after:
            actual = max(v for _, v in after)
            lines.append(f"  since the forecast: actual peak {number(actual)} so far"
                         + (f" (predicted {number(ev.predicted_peak)}, upper {number(ev.upper_bound)})"
                            if ev.predicted_peak is not None else ""))
    elif history_error:
        lines.append(f"  <{history_error}>")
    else:
        lines.append("  <not read: pass --prometheus-url URL to see it>")
    return "\n".join(lines)


def step_end(plan: PlanView, step: ScheduledStep) -> dt.datetime | None:
    """When a step stops being in effect: the next step's time, the last one's the plan's end."""
    later = [s.at for s in plan.steps[step.index + 1:] if s.at is not None]
    return later[0] if later else plan.ends_at


def realised_peaks(plan: PlanView, history: History | None) -> dict[int, float]:
    """The highest realised load during each step (by index), for the steps with samples."""
    peaks: dict[int, float] = {}
    if history is None:
        return peaks
    for step in plan.steps:
        end = step_end(plan, step)
        if step.at is None:
            continue
        inside = [v for t, v in zip(history.times, history.values, strict=True)
                  if t >= step.at and (end is None or t < end)]
        if inside:
            peaks[step.index] = max(inside)
    return peaks


def plan_lines(view: ExplainedProposal, policy: Mapping[str, Any] | None, history: History | None,
               now: dt.datetime) -> list[str]:
    """Each step's sizing (its upper bound over the capacity per replica) and, once it came
    due, the realised peak against that bound: a step whose load went above it is breached."""
    plan = view.plan
    assert plan is not None
    capacity = view.capacity(policy)
    peaks = realised_peaks(plan, history)
    lines = [f"  {plan.summary(now)}"]
    rows, breached = [], []
    current, following = plan.in_effect(now), plan.next(now)
    for step in plan.steps:
        needed = (math.ceil(step.upper_bound / capacity - 1e-9) if capacity and step.upper_bound is not None
                  else None)
        peak = peaks.get(step.index)
        mark = ""
        if peak is not None and step.upper_bound is not None and peak > step.upper_bound:
            mark = "BREACHED"
            breached.append(step.number)
        rows.append(["now" if step is current else "next" if step is following else "", step.number, step.at_text,
                     number(step.upper_bound), needed, step.replicas,
                     number(step.replicas * capacity) if capacity and step.replicas is not None else "",
                     number(peak) if peak is not None else "", mark])
    lines.append(table(["", "STEP", "AT", "UPPER-BOUND", "NEEDED", "REPLICAS", "CAPACITY", "REALISED-PEAK", ""],
                       rows, indent="  ", empty=""))
    if not capacity:
        lines.append("  <no capacity per replica in the evidence or the policy: needs and capacity not shown>")
    if history is None:
        lines.append("  realised load not read (pass --prometheus-url URL to compare each step with it)")
    elif breached:
        lines.append(f"  the realised load rose above the upper bound of step{'s' if len(breached) > 1 else ''} "
                     f"{', '.join(map(str, breached))} (the forecaster posts PlanBreached for it)")
    elif peaks:
        lines.append(f"  the realised load stayed under every upper bound so far ({len(peaks)} "
                     f"step{'s' if len(peaks) > 1 else ''} with samples)")
    return lines


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# -- the picture ---------------------------------------------------------------------------
#: How much history before the forecast the detailed panel shows, at least; with six
#: horizons at most, the horizon keeps a readable share of the panel's width.
ZOOM_SECONDS = 6 * 3600


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (it comes with the `plot` extra)."""


def plot(path: str, proposal: Mapping[str, Any], policy: Mapping[str, Any] | None,
         history: History | None, now: dt.datetime) -> None:
    """Draw the explanation to a PNG (matplotlib's Agg canvas, no display needed).

    With history: a small panel of the whole fitted window, and a large one of the last
    six hours (or six horizons) and the horizon, where the predicted peak with its
    interval, today's and the proposed capacity and the policy's bounds (as capacity)
    can be read. Without history: the large panel alone."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # plotting is an extra: the image and plain installs lack it
        raise PlotUnavailable("--plot needs matplotlib: pip install 'scalegate[plot]'") from err

    view = ExplainedProposal.of(proposal)
    if view.plan is not None:
        _plot_plan(path, view, policy, history, now, Figure, FigureCanvasAgg)
        return
    ev = view.evidence
    shown = history if history is not None and len(history) > 0 else None
    fig = Figure(figsize=(15, 5.8) if shown is not None else (12.5, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    forecast_at = ev.window_end or (shown.times[-1] if shown is not None else now)
    horizon_end = ev.horizon_end or (forecast_at + dt.timedelta(hours=1))
    pspec = (policy or {}).get("spec") or {}
    if shown is not None:
        grid = fig.add_gridspec(1, 2, width_ratios=[1, 2.2])
        overview, detail = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        zoom = max(ZOOM_SECONDS, 6 * (ev.horizon_seconds or 0))
        detail_start = max(forecast_at - dt.timedelta(seconds=zoom), shown.times[0])
        _draw(detail, view, pspec, shown, detail_start, horizon_end, legend=True)
        # The notes (what did not fit) are the overview's: it spans the whole window.
        notes = _draw(overview, view, pspec, shown, shown.times[0], horizon_end, legend=False)
        overview.set_title(f"fitted window ({human_duration((forecast_at - shown.times[0]).total_seconds())})",
                           fontsize=10)
        detail.set_title("forecast", fontsize=10)
    else:
        detail = fig.add_subplot(1, 1, 1)
        notes = _draw(detail, view, pspec, None, forecast_at, horizon_end, legend=True)
    fig.suptitle(f"{view.namespace}/{view.name}: {view.target} {view.current} \u2192 {view.replicas} replicas",
                 fontsize=13)
    footer = [textwrap.shorten(view.reason, 170)] if view.reason else []
    if ev.query:
        footer.append(textwrap.shorten(f"query: {ev.query}", 170))
    footer += notes
    if shown is None:
        footer.append("no load history (pass --prometheus-url to draw it)")
    fig.text(0.01, 0.01, "\n".join(footer), fontsize=8, color="0.3", va="bottom")
    fig.tight_layout(rect=(0, 0.02 + 0.03 * len(footer), 1, 1))
    fig.savefig(path, format="png")


def _draw(ax, view: ExplainedProposal, pspec: Mapping[str, Any], history: History | None,
          x0: dt.datetime, x1: dt.datetime, *, legend: bool) -> list[str]:
    """One panel between x0 and x1; returns notes about what did not fit."""
    ev = view.evidence
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    tops: list[float] = []
    if history is not None:
        pairs = [(t, v) for t, v in zip(history.times, history.values, strict=True) if x0 <= t <= x1]
        if pairs:
            ax.plot([t for t, _ in pairs], [v for _, v in pairs], color="tab:blue", linewidth=1.1, label="load")
            tops.append(max(v for _, v in pairs))
    if ev.window_end is not None:
        ax.axvline(ev.window_end, color="0.35", linewidth=0.9, linestyle=":", label="forecast made")
        if ev.horizon_end is not None:
            ax.axvspan(ev.window_end, ev.horizon_end, color="tab:orange", alpha=0.15,
                       label=f"horizon ({human_duration(ev.horizon_seconds or 0)})")
    centre = ev.predicted_peak if ev.predicted_peak is not None else ev.upper_bound
    if centre is not None:
        moment = ev.peak_time or (x0 + (x1 - x0) / 2)
        lower = ev.lower_bound if ev.lower_bound is not None else centre
        upper = ev.upper_bound if ev.upper_bound is not None else centre
        confidence = f"{ev.confidence:.0%} " if ev.confidence is not None else ""
        ax.errorbar([moment], [centre], yerr=[[max(centre - lower, 0)], [max(upper - centre, 0)]], fmt="o",
                    color="tab:orange", ecolor="tab:orange", capsize=7, markersize=6, linewidth=2, zorder=5,
                    label=f"predicted peak {number(centre)} ({confidence}interval {number(lower)}..{number(upper)})")
        tops.append(upper)
    if ev.capacity_per_replica:
        if view.current is not None:
            level = view.current * ev.capacity_per_replica
            ax.axhline(level, color="tab:red", linestyle="--", linewidth=1.5,
                       label=f"current capacity {view.current} x {number(ev.capacity_per_replica)} = {number(level)}")
            tops.append(level)
        if view.replicas is not None:
            level = view.replicas * ev.capacity_per_replica
            ax.axhline(level, color="tab:green", linewidth=2,
                       label=f"proposed capacity {view.replicas} x {number(ev.capacity_per_replica)} = {number(level)}")
            tops.append(level)
    top = max(tops) * 1.15 if tops else 1.0
    notes = []
    if ev.capacity_per_replica:
        for key, label, style in (("minReplicas", "min", ":"), ("maxReplicas", "max", "-.")):
            bound = pspec.get(key)
            if not isinstance(bound, int) or isinstance(bound, bool):
                continue
            level = bound * ev.capacity_per_replica
            if level <= top * 1.5:
                ax.axhline(level, color="0.4", linestyle=style, linewidth=1.2,
                           label=f"policy {label} {bound} replicas = {number(level)}")
                top = max(top, level * 1.08)
            else:
                notes.append(f"policy {label} {bound} replicas = {number(level)} is above the chart")
    ax.set_ylim(0, top)
    ax.set_xlim(x0, max(x1, x0 + dt.timedelta(minutes=1)))
    locator = AutoDateLocator(maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=dt.timezone.utc))
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("load")
    ax.grid(True, alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        # Beside the panel, never over the peak it explains.
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, borderaxespad=0)
    return notes


# -- a plan's picture ---------------------------------------------------------------------
def _when(value: Any) -> dt.datetime | None:
    try:
        return parse_time(value)
    except InvalidObject:
        return None



#: Step outcomes drawn as markers on the schedule: (marker, colour, legend label).
_RECEIPT_MARKS = {
    "Applied": ("o", "tab:green", "step applied"),
    "Skipped": ("s", "0.5", "step skipped (suspended)"),
    "Missed": ("s", "0.5", "step missed (not replayed)"),
    "Stale": ("X", "tab:red", "plan stopped here"),
    "Rejected": ("X", "tab:red", "plan stopped here"),
    "Failed": ("X", "tab:red", "plan stopped here"),
}


def _plot_plan(path: str, view: ExplainedProposal, policy: Mapping[str, Any] | None, history: History | None,
               now: dt.datetime, figure: Any, canvas: Any) -> None:
    """A plan against the realised load: the schedule's capacity (replicas x capacity per
    replica, a step function to endsAt), each step's upper bound (what it was sized for)
    and predicted peak, the receipts, and the load as it came. With history, a small panel
    of the whole fitted window beside it."""
    plan = view.plan
    assert plan is not None
    shown = history if history is not None and len(history) > 0 else None
    fig = figure(figsize=(15, 5.8) if shown is not None else (12.5, 5.5), dpi=100)
    canvas(fig)
    times = [s.at for s in plan.steps if s.at is not None]
    start = times[0] if times else now
    end = plan.ends_at or (times[-1] + dt.timedelta(hours=1) if times else now + dt.timedelta(hours=1))
    # Some load before the plan, for the eye: a quarter of its span, at least an hour.
    lead = max((end - start) / 4, dt.timedelta(hours=1))
    pspec = (policy or {}).get("spec") or {}
    capacity = view.capacity(policy)
    if shown is not None:
        grid = fig.add_gridspec(1, 2, width_ratios=[1, 2.2])
        overview, detail = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        notes = _draw_plan(detail, view, plan, pspec, capacity, shown, start - lead, end, now, legend=True)
        _draw_plan(overview, view, plan, pspec, capacity, shown, shown.times[0], end, now, legend=False)
        overview.set_title(f"fitted window and plan ({human_duration((end - shown.times[0]).total_seconds())})",
                           fontsize=10)
        detail.set_title("plan", fontsize=10)
    else:
        detail = fig.add_subplot(1, 1, 1)
        notes = _draw_plan(detail, view, plan, pspec, capacity, None, start - lead, end, now, legend=True)
    fig.suptitle(f"{view.namespace}/{view.name}: {view.target}, {plan.line(now)}", fontsize=12)
    footer = [textwrap.shorten(view.reason, 170)] if view.reason else []
    if view.evidence.query:
        footer.append(textwrap.shorten(f"query: {view.evidence.query}", 170))
    footer += notes
    if shown is None:
        footer.append("no load history (pass --prometheus-url to draw the realised load)")
    fig.text(0.01, 0.01, "\n".join(footer), fontsize=8, color="0.3", va="bottom")
    fig.tight_layout(rect=(0, 0.02 + 0.03 * len(footer), 1, 1))
    fig.savefig(path, format="png")


def _draw_plan(ax, view: ExplainedProposal, plan: PlanView, pspec: Mapping[str, Any], capacity: float | None,
               history: History | None, x0: dt.datetime, x1: dt.datetime, now: dt.datetime, *,
               legend: bool) -> list[str]:
    """One panel of a plan between x0 and x1; returns notes about what did not fit."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    notes: list[str] = []
    tops: list[float] = []
    steps = [s for s in plan.steps if s.at is not None]
    ends = [step_end(plan, s) or x1 for s in steps]
    peaks = realised_peaks(plan, history)
    if history is not None:
        pairs = [(t, v) for t, v in zip(history.times, history.values, strict=True) if x0 <= t <= x1]
        if pairs:
            ax.plot([t for t, _ in pairs], [v for _, v in pairs], color="tab:blue", linewidth=1.1,
                    label="realised load")
            tops.append(max(v for _, v in pairs))
    bound_label, peak_label = "each step's upper bound (sized for)", "each step's predicted peak"
    for step, until_ in zip(steps, ends, strict=True):
        if step.upper_bound is not None:
            breached = step.index in peaks and peaks[step.index] > step.upper_bound
            ax.hlines(step.upper_bound, step.at, until_, color="tab:red" if breached else "tab:orange",
                      linewidth=2, label=bound_label)
            bound_label = "_"
            tops.append(step.upper_bound)
        if step.predicted_peak is not None:
            ax.hlines(step.predicted_peak, step.at, until_, color="tab:orange", linewidth=1, linestyle="--",
                      label=peak_label)
            peak_label = "_"
    if any(s.index in peaks and s.upper_bound is not None and peaks[s.index] > s.upper_bound for s in steps):
        ax.plot([], [], color="tab:red", linewidth=2, label="upper bound breached by the realised load")
    if capacity and steps:
        xs = [s.at for s in steps if s.replicas is not None]
        levels = [s.replicas * capacity for s in steps if s.replicas is not None]
        if xs:
            ax.step(xs + [ends[-1]], levels + [levels[-1]], where="post", color="tab:green", linewidth=2,
                    label=f"planned capacity (replicas x {number(capacity)})")
            tops.extend(levels)
        if view.current is not None:
            level = view.current * capacity
            ax.axhline(level, color="tab:red", linestyle="--", linewidth=1.2,
                       label=f"capacity before the plan {view.current} x {number(capacity)} = {number(level)}")
            tops.append(level)
        marks: dict[tuple[str, str, str], list[tuple[dt.datetime, float]]] = {}
        for step in steps:
            if step.outcome not in _RECEIPT_MARKS or step.replicas is None or step.at is None:
                continue
            # An applied step at the time it was applied; the others at their step's time.
            moment = _when((step.receipt or {}).get("appliedAt")) if step.outcome == "Applied" else None
            marks.setdefault(_RECEIPT_MARKS[step.outcome], []).append((moment or step.at,
                                                                      step.replicas * capacity))
        for (marker, colour, label), points in marks.items():
            ax.plot([t for t, _ in points], [y for _, y in points], marker=marker, color=colour, markersize=7,
                    linestyle="", zorder=5, label=label)
    elif not capacity:
        notes.append("no capacity per replica in the evidence or the policy: the planned replicas are not drawn")
    if x0 <= now <= x1:
        ax.axvline(now, color="0.2", linewidth=1, label="now")
    forecast_at = view.evidence.window_end
    if forecast_at is not None and x0 <= forecast_at <= x1:
        ax.axvline(forecast_at, color="0.35", linewidth=0.9, linestyle=":", label="forecast made")
    top = max(tops) * 1.15 if tops else 1.0
    if capacity:
        for key, label, style in (("minReplicas", "min", ":"), ("maxReplicas", "max", "-.")):
            bound = pspec.get(key)
            if not isinstance(bound, int) or isinstance(bound, bool):
                continue
            level = bound * capacity
            if level <= top * 1.5:
                ax.axhline(level, color="0.4", linestyle=style, linewidth=1.2,
                           label=f"policy {label} {bound} replicas = {number(level)}")
                top = max(top, level * 1.08)
            else:
                notes.append(f"policy {label} {bound} replicas = {number(level)} is above the chart")
    ax.set_ylim(0, top)
    ax.set_xlim(x0, max(x1, x0 + dt.timedelta(minutes=1)))
    locator = AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=dt.timezone.utc))
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("load")
    ax.grid(True, alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, borderaxespad=0)
    return notes
