"""Plans: the replicas for each step of the next hours from one calibrated forecast, and
when a new plan is worth a person's approval.

Pure (data in, values out); the forecaster and the backtest both call it.

Building a plan (:func:`build_plan`)
    The forecast is made over the plan's horizon (``planHorizonSeconds``) with bins no
    wider than a step (:func:`plan_resolution`), and each native sample of it has its
    own calibrated band: its lead's conformal quantiles of the model's backtest errors
    at that lead, the same per-lead calibration as an hour ahead (:mod:`.calibrate`),
    only over more leads. A step covers ``[at, next at)``; its ``upperBound`` is the
    highest upper band of its samples, its ``predictedPeak`` the highest median-corrected
    forecast, and its need ``ceil(upperBound / capacityPerReplica)`` within
    ``minReplicas..maxReplicas``. Steps start on whole multiples of the step since the
    epoch plus the policy's own offset in whole minutes (:func:`step_offset`, e.g. at 17
    past each hour), so a policy's plans made at different times line up and read well,
    and the steps of many policies are spread over the step instead of all due at once;
    the first step starts now (and runs to the second boundary when the first is closer
    than the cooldown, since steps are applies).

Step limits (``maxStepUp`` / ``maxStepDown``)
    The operator rejects a whole plan if one change between consecutive steps (or from
    the current replicas to the first) breaks a limit, and a step below its need would
    be a planned miss. So the plan *ramps*: a step before a rise is raised to
    ``need(next) - maxStepUp`` (and so on backwards), so that the rise is reached in
    time; a step after a fall keeps at least ``previous - maxStepDown``. That is the
    cheapest schedule that never goes below any step's need and keeps every limit. Only
    what no schedule can avoid stays below the need: ``maxReplicas``, and the first
    steps when the current replicas are further below the need than ``maxStepUp``
    allows (they climb by ``maxStepUp`` a step, as a single change would be capped);
    :attr:`Plan.capped` names them.

Re-planning (:func:`replan`)
    Every round the forecaster builds a new plan and compares it with the newest open
    plan of the policy. It proposes the new one only when (in this order):

    ``NoActivePlan``
        there is none;
    ``FallsShort``
        in the time only this round can still fix (from ``approval`` ahead, when a plan
        proposed now takes over, to ``approval + interval`` ahead, when the next
        round's would), the open plan holds fewer replicas than the new forecast's
        upper bound needs, *and* there is evidence that it is wrong, not only a
        second opinion: its own upper bound was exceeded by the load since the last
        round (a ``PlanBreached``), or it holds fewer replicas than even the new
        forecast's predicted (median) load needs. Two calibrated forecasts an hour
        apart often disagree by a replica; on the recorded series, re-proposing a day's
        plan for every such shortfall cost 1 to 8 approvals a day (3.5 on average) and
        avoided little under-provisioning (on Twitter GOOG, the plans replaced would
        have missed 1.1% of the samples of the hours in question, their replacements
        0.6%). A shortfall further ahead is left to a later round: it can still be
        fixed then, from a forecast with a shorter lead (tighter and better informed).
        A shortfall sooner than ``approval`` ahead no plan proposed now could fix;
    ``EndsSoon``
        the open plan ends within ``approval + interval``: the next round could be too
        late for a person to approve the next plan before it ends;
    ``Wasteful``
        from the earliest time a new plan could take over (``approval`` ahead) to the
        end of the open plan, it holds more than :data:`WASTE_THRESHOLD` more
        replica-hours than the new plan, *and* its own predicted (median) load over
        that time is above the new forecast's upper bound (load x time, step by step).
        This is ``FallsShort``'s evidence rule the other way round: a plan is short
        without a breach only when it holds less than even the new median needs, and
        wasteful only when even its own median is above the new upper bound, i.e. the
        two forecasts disagree beyond both bands, not within them. Without the second
        condition, the plan proposed after a spike (from a forecast that had just seen
        it) was replaced as soon as the next forecast forgot the spike, and the lower
        plan was often breached and replaced again (on the recorded series with
        10-minute steps, Twitter GOOG alternated 19 ``Wasteful`` and 17 ``FallsShort``
        plans in a week). When either plan has no loads (read back without them), the
        replica-hours alone decide.

    Otherwise ``PlanHolds``.

Breaches (:func:`breaches`)
    Realised load above the upper bound of the step it fell in: the forecaster posts a
    ``PlanBreached`` Event and counts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..rules import MAX_REPLICAS, MAX_STEP_UP, Bounds, replicas_for
from .pipeline import Forecast, forecast_series
from .refit import phase_of
from .resample import choose_resolution
from .series import DAY_SECONDS, MAX_INTERPOLATED_GAP_STEPS, ForecastError
from .sizing import format_load

#: Re-plan when the open plan holds more than this share of replica-hours above the new
#: plan's, over the time a new plan could still change. One fifth: a plan costing a fifth
#: more than one made now is a saving worth a person's minute, while one replica in ten
#: (a 10% step of a ten-replica workload) is within what two forecasts an hour apart
#: disagree by. A product choice made before measuring, not fitted to the recorded series.
WASTE_THRESHOLD = 0.2

NO_ACTIVE_PLAN, FALLS_SHORT, ENDS_SOON, WASTEFUL, PLAN_HOLDS = (
    "NoActivePlan", "FallsShort", "EndsSoon", "Wasteful", "PlanHolds")
#: The reasons of :func:`replan`; all but ``PlanHolds`` propose a new plan.
REPLAN_REASONS = (NO_ACTIVE_PLAN, FALLS_SHORT, ENDS_SOON, WASTEFUL, PLAN_HOLDS)


@dataclass(frozen=True)
class PlannedStep:
    """One step: ``replicas`` from ``at`` until the next step's ``at`` (the last until the plan ends).

    Attributes
    ----------
    at : pandas.Timestamp
        When the step is due (UTC).
    replicas : int
        What the step sets (after ramping).
    predicted_peak, upper_bound : float or None
        Highest median-corrected forecast and highest upper band of the step's samples
        (None for a plan read back without them).
    needed : int or None
        ``ceil(upper_bound / capacity)`` within ``minReplicas..maxReplicas``, before ramping.
    expected : int or None
        ``ceil(predicted_peak / capacity)`` within the same range: what the predicted
        (median) load needs.
    """

    at: pd.Timestamp
    replicas: int
    predicted_peak: float | None = None
    upper_bound: float | None = None
    needed: int | None = None
    expected: int | None = None


@dataclass(frozen=True)
class Plan:
    """A schedule of steps, in order of time, in effect until ``ends_at``.

    Attributes
    ----------
    steps : tuple of PlannedStep
    ends_at : pandas.Timestamp
    current_replicas : int or None
        The replicas the plan starts from (None for a plan read back).
    ramped : tuple of int
        Indices of the steps raised above their need to keep a step limit.
    capped : tuple of (int, str)
        Steps left below their need, and the limit that forced it
        (``maxReplicas``, or ``maxStepUp`` when the current replicas are too far below).
    name : str
        For messages: the proposal that carries it, if any.
    """

    steps: tuple[PlannedStep, ...]
    ends_at: pd.Timestamp
    current_replicas: int | None = None
    ramped: tuple[int, ...] = ()
    capped: tuple[tuple[int, str], ...] = ()
    name: str = ""
    _ats: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.steps:
            raise ValueError("a plan needs at least one step")
        ats = np.array([_ns(s.at) for s in self.steps], dtype=np.int64)
        if np.any(np.diff(ats) <= 0):
            raise ValueError("the steps of a plan must be in strictly increasing order of time")
        if _ns(self.ends_at) <= ats[-1]:
            raise ValueError("a plan must end after its last step")
        object.__setattr__(self, "_ats", ats)

    @property
    def replicas(self) -> int:
        """The first step's replicas (a proposal's ``spec.replicas``)."""
        return self.steps[0].replicas

    @property
    def start(self) -> pd.Timestamp:
        return self.steps[0].at

    def step_ends(self) -> list[pd.Timestamp]:
        """When each step stops being in effect: the next step's ``at``, the last's ``ends_at``."""
        return [s.at for s in self.steps[1:]] + [self.ends_at]

    def replicas_at(self, times) -> np.ndarray:
        """Replicas in effect at each of ``times`` (array of int): before the first step -1,
        after ``ends_at`` the last step's (the operator leaves the replicas as they are)."""
        idx = np.searchsorted(self._ats, _ns_array(times), side="right") - 1
        out = np.asarray([s.replicas for s in self.steps], dtype=np.int64)[np.clip(idx, 0, None)]
        return np.where(idx < 0, -1, out)

    def replica_seconds(self, start: pd.Timestamp, end: pd.Timestamp) -> float:
        """Replicas x seconds over ``[start, end)``, within ``[first at, ends_at)``."""
        lo, hi = max(_ns(start), int(self._ats[0])), min(_ns(end), _ns(self.ends_at))
        total = 0.0
        for step, step_end in zip(self.steps, self.step_ends(), strict=True):
            a, b = max(lo, _ns(step.at)), min(hi, _ns(step_end))
            if b > a:
                total += step.replicas * (b - a) / 1e9
        return total

    def describe(self) -> str:
        """E.g. ``24 steps of 1h from 21:00 to 21:00 UTC, 4 to 12 replicas``."""
        replicas = [s.replicas for s in self.steps]
        span = (self.ends_at - self.start).total_seconds()
        inner = zip(self.steps[1:-1], self.step_ends()[1:-1], strict=True)
        lengths = {int((end - step.at).total_seconds()) for step, end in inner}
        every = f" of {_duration(lengths.pop())}" if len(lengths) == 1 else ""
        low, high = min(replicas), max(replicas)
        return (f"{len(self.steps)} steps{every} over {_duration(span)} from {self.start:%H:%M} to "
                f"{self.ends_at:%H:%M} UTC, " + (f"{low} replicas" if low == high else f"{low} to {high} replicas"))


def plan_resolution(plan_step_seconds: int, sample_step_seconds: int) -> int:
    """The bin width a plan's forecast runs at: no wider than one step, so that each step
    has its own point forecast, and no wider than the horizon rule allows
    (:func:`.resample.choose_resolution` caps bins at an hour). Finer bins also mean more
    backtest origins (one per bin), i.e. more scores behind each lead's quantile.
    Rounded down to a width that divides a day (a whole daily season) where one exists."""
    return choose_resolution(min(plan_step_seconds, DAY_SECONDS) * _BINS_PER_STEP_HORIZON, sample_step_seconds)


# choose_resolution aims at horizon / 6 bins; asking for 6 steps gives bins of one step.
_BINS_PER_STEP_HORIZON = 6


def forecast_plan(
    series: pd.Series,
    horizon_seconds: int,
    step_seconds: int,
    confidence: float = 0.95,
    now: datetime | pd.Timestamp | None = None,
    *,
    models: tuple[str, ...] | None = None,
) -> Forecast:
    """The forecast a plan is built from: over :func:`forecast_horizon`, in bins of
    :func:`plan_resolution`, each lead calibrated on every error of its own that the data
    already knows (``partial_origins``). The forecaster and the backtest both call this.

    Raises ForecastError as :func:`.pipeline.forecast_series` does.
    """
    sample = _sample_step(series)
    kwargs = {} if models is None else {"models": models}
    return forecast_series(series, forecast_horizon(horizon_seconds, sample), confidence, now, interval="pointwise",
                           resolution_seconds=plan_resolution(step_seconds, sample), partial_origins=True, **kwargs)


def _sample_step(series: pd.Series) -> int:
    """The series' sampling step in seconds (the median spacing; regularising refuses worse)."""
    if len(series) < 2:
        raise ForecastError("InsufficientData", f"{len(series)} samples: too few to forecast")
    spacing = np.diff(series.index.as_unit("ns").asi8) / 1e9
    return max(1, int(round(float(np.median(spacing)))))


def forecast_horizon(plan_horizon_seconds: int, sample_step_seconds: int) -> int:
    """The horizon to forecast for a plan: the plan's, plus the few samples by which data
    that is still fresh (:func:`.series.check_fresh`) may end before now."""
    return int(plan_horizon_seconds + (MAX_INTERPOLATED_GAP_STEPS + 1) * sample_step_seconds)


def step_times(now: pd.Timestamp, step_seconds: int, horizon_seconds: int,
               min_first_step_seconds: float = 0,
               offset_seconds: int = 0) -> tuple[list[pd.Timestamp], pd.Timestamp]:
    """``(ats, ends_at)`` of a plan made at ``now``: the first step at ``now``, the others on
    whole multiples of ``step_seconds`` since the epoch plus ``offset_seconds`` (the policy's
    own, :func:`step_offset`), ending ``horizon_seconds`` after the boundary at or before
    ``now``. A first step shorter than ``min_first_step_seconds`` (the cooldown) is merged
    into the second."""
    if step_seconds <= 0 or horizon_seconds < step_seconds:
        raise ValueError(f"need 0 < step_seconds <= horizon_seconds, got {step_seconds}, {horizon_seconds}")
    now = _utc(now).floor("s")
    step = pd.Timedelta(seconds=step_seconds)
    offset = int(offset_seconds) % step_seconds * 10**9
    base = pd.Timestamp((_ns(now) - offset) // (step_seconds * 10**9) * step_seconds * 10**9 + offset, tz="UTC")
    ends_at = base + pd.Timedelta(seconds=horizon_seconds)
    later = [base + k * step for k in range(1, int(horizon_seconds // step_seconds))]
    if later and (later[0] - now).total_seconds() < min_first_step_seconds:
        later = later[1:]
    return [now, *later], ends_at


def step_offset(key: str, step_seconds: int) -> int:
    """A policy's own offset of its step boundaries, in whole minutes within a step (a
    stable hash of ``key``, namespace/name): the steps of 10,000 plans are then spread
    over the step, not all due in the same second every hour (the operator applies about
    ten a second), while the plans of one policy still line up with each other."""
    return int(phase_of(key, step_seconds)) // 60 * 60


def build_plan(
    forecast: Forecast,
    capacity_per_replica: float,
    current_replicas: int,
    step_seconds: int,
    horizon_seconds: int,
    *,
    now: datetime | pd.Timestamp | None = None,
    bounds: Bounds | None = None,
    min_first_step_seconds: float = 0,
    step_offset_seconds: int = 0,
) -> Plan:
    """The plan for the ``horizon_seconds`` after ``now``, in steps of ``step_seconds``.

    Parameters
    ----------
    forecast : Forecast
        A ``pointwise`` forecast over :func:`forecast_horizon` (its per-sample
        ``upper_band`` and ``median_band``).
    capacity_per_replica : float
    current_replicas : int
        Replicas now: the first step's change is judged from them.
    step_seconds, horizon_seconds : int
        The policy's ``planStepSeconds`` and ``planHorizonSeconds``.
    now : datetime, optional
        The first step's time; default the forecast's first sample.
    bounds : rules.Bounds, optional
        The policy's; default none.
    min_first_step_seconds : float, default 0
        The policy's ``cooldownSeconds`` (see :func:`step_times`).
    step_offset_seconds : int, default 0
        The policy's :func:`step_offset` (the backtest: 0, steps on whole multiples).

    Raises
    ------
    ValueError
        The forecast has no per-sample band (``interval="peak"``) or is shorter than the plan.
    ForecastError
        ``OutOfBounds``: the current replicas are further outside the policy's range than
        the step limits let any schedule leave (the operator would reject it).
    """
    if not forecast.upper_band:
        raise ValueError("a plan needs a pointwise forecast (one upper band per sample)")
    bounds = bounds or Bounds()
    sample = pd.Timedelta(seconds=forecast.step_seconds)
    origin = _utc(forecast.window_end) + sample
    start = origin if now is None else _utc(now)
    ats, ends_at = step_times(start, step_seconds, horizon_seconds, min_first_step_seconds, step_offset_seconds)
    upper = np.asarray(forecast.upper_band, dtype=float)
    median = np.asarray(forecast.median_band or forecast.upper_band, dtype=float)
    times = pd.date_range(origin, periods=len(upper), freq=sample)
    if len(upper) == 0 or times[-1] + sample < ends_at:
        raise ValueError(f"the forecast ends at {times[-1] + sample}, before the plan's end {ends_at}")
    which = np.searchsorted(_ns_array(ats), _ns_array(times), side="right") - 1
    inside = (which >= 0) & (times < ends_at)

    needs, expects, peaks, bounds_of_step, capped = [], [], [], [], []
    for k in range(len(ats)):
        mine = inside & (which == k)
        if not mine.any():  # a step between two samples: the nearest sample after its start
            mine = np.zeros(len(times), dtype=bool)
            mine[min(int(np.searchsorted(_ns_array(times), _ns(ats[k]))), len(times) - 1)] = True
        high, peak = float(upper[mine].max()), float(median[mine].max())
        need = replicas_for(high, capacity_per_replica)
        if bounds.min_replicas is not None:
            need = max(need, bounds.min_replicas)
        if bounds.max_replicas is not None and need > bounds.max_replicas:
            need = bounds.max_replicas
            capped.append((k, MAX_REPLICAS))
        needs.append(need)
        expects.append(min(need, max(replicas_for(peak, capacity_per_replica), bounds.min_replicas or 0)))
        peaks.append(peak)
        bounds_of_step.append(high)

    replicas = ramp(needs, current_replicas, bounds)
    for k, (r, need) in enumerate(zip(replicas, needs, strict=True)):
        if r < need:
            capped.append((k, MAX_STEP_UP))
    previous = current_replicas
    for k, r in enumerate(replicas):
        broken = bounds.violations(r, previous)
        if broken:
            raise ForecastError(
                "OutOfBounds",
                f"{current_replicas} replicas now: no plan the policy allows reaches its range "
                f"(step {k}: {'; '.join(check.problem for check in broken)}); widen the policy's step limit, "
                "or scale the target into the range by hand",
            )
        previous = r
    steps = tuple(PlannedStep(at, r, peak, high, need, expect)
                  for at, r, peak, high, need, expect
                  in zip(ats, replicas, peaks, bounds_of_step, needs, expects, strict=True))
    ramped = tuple(k for k, (r, need) in enumerate(zip(replicas, needs, strict=True)) if r > need)
    return Plan(steps, ends_at, current_replicas, ramped, tuple(sorted(capped)))


def ramp(needs: Sequence[int], current: int, bounds: Bounds | None = None) -> list[int]:
    """The cheapest replicas per step that are never below ``needs`` and keep the step limits.

    Backwards, a step is raised to ``next - maxStepUp`` so that every rise is reached in
    time (the plan ramps earlier); forwards from ``current``, a step keeps at least
    ``previous - maxStepDown`` and at most ``previous + maxStepUp``. The last bound binds
    only where ``current`` is too far below the first needs: those steps stay below their
    need, climbing by ``maxStepUp`` a step (no schedule could do better).
    """
    bounds = bounds or Bounds()
    up, down = bounds.max_step_up, bounds.max_step_down
    early = list(needs)
    if up is not None:
        for k in range(len(early) - 2, -1, -1):
            early[k] = max(early[k], early[k + 1] - up)
    out, previous = [], current
    for want in early:
        r = want if down is None else max(want, previous - down)
        if up is not None:
            r = min(r, previous + up)
        out.append(r)
        previous = r
    return out


@dataclass(frozen=True)
class Replan:
    """Whether to propose the new plan, and why (one of :data:`REPLAN_REASONS`)."""

    propose: bool
    reason: str
    message: str


def replan(
    open_plan: Plan | None,
    new: Plan,
    now: datetime | pd.Timestamp,
    *,
    approval_seconds: float,
    interval_seconds: float,
    breached: bool = False,
    waste_threshold: float = WASTE_THRESHOLD,
) -> Replan:
    """Whether ``new`` should replace ``open_plan`` (see the module's docstring for the rule).

    Parameters
    ----------
    open_plan : Plan or None
        The newest plan of the policy that is still open (pending, approved or active).
    new : Plan
        The plan built from this round's forecast (:func:`build_plan`, with ``needed``).
    now : datetime
    approval_seconds : float
        The time a person may take to approve (the forecaster: the policy's
        ``proposalTTLSeconds``; the backtest: its approval delay).
    interval_seconds : float
        Time until the next round.
    breached : bool, default False
        Whether the load exceeded an upper bound of ``open_plan``'s steps since the
        last round (:func:`breaches`).
    waste_threshold : float, default :data:`WASTE_THRESHOLD`
    """
    now = _utc(now)
    if open_plan is None:
        return Replan(True, NO_ACTIVE_PLAN, "no open plan")
    label = f"plan {open_plan.name}" if open_plan.name else "the open plan"
    if open_plan.ends_at <= now:
        return Replan(True, ENDS_SOON, f"{label} ended at {open_plan.ends_at:%Y-%m-%d %H:%M} UTC")
    # The shortfalls this round is the last to be able to fix: from when a plan proposed now
    # is approved, until when the next round's would be.
    fix_from = now + pd.Timedelta(seconds=approval_seconds)
    fix_by = fix_from + pd.Timedelta(seconds=interval_seconds)

    for step, step_end in zip(new.steps, new.step_ends(), strict=True):
        if step_end <= fix_from or step.needed is None:
            continue
        if step.at >= fix_by:
            break
        start = max(step.at, fix_from)
        if start >= open_plan.ends_at:
            break
        times = [start] + [s.at for s in open_plan.steps if start < s.at < min(step_end, open_plan.ends_at)]
        held = int(np.min(open_plan.replicas_at(times)))
        expected_short = step.expected is not None and held < step.expected
        if 0 <= held < step.needed and (breached or expected_short):
            bound = "" if step.upper_bound is None else f" (upper bound {format_load(step.upper_bound)})"
            evidence = (f"even the predicted load needs {step.expected}" if expected_short
                        else "its own upper bound was exceeded since the last round")
            return Replan(True, FALLS_SHORT,
                          f"{label} has {held} replicas at {start:%H:%M} UTC, the new forecast needs "
                          f"{step.needed}{bound}; {evidence}")

    left = (open_plan.ends_at - now).total_seconds()
    if left <= approval_seconds + interval_seconds:
        return Replan(True, ENDS_SOON,
                      f"{label} ends at {open_plan.ends_at:%H:%M} UTC, within the {_duration(approval_seconds)} "
                      "a person may need to approve the next one (and the next round)")

    takeover = now + pd.Timedelta(seconds=approval_seconds)
    until = min(open_plan.ends_at, new.ends_at)
    if until > takeover:
        kept, needed = open_plan.replica_seconds(takeover, until), new.replica_seconds(takeover, until)
        open_centre = _load_seconds(open_plan, "predicted_peak", takeover, until)
        new_bound = _load_seconds(new, "upper_bound", takeover, until)
        beyond_bands = open_centre is None or new_bound is None or open_centre > new_bound
        if kept > (1 + waste_threshold) * needed and beyond_bands:
            extra = f"{(kept / needed - 1):.0%} more" if needed > 0 else "replicas where none are needed"
            return Replan(True, WASTEFUL,
                          f"{label} holds {kept / 3600:.1f} replica-hours until {until:%H:%M} UTC, {extra} than the "
                          f"new forecast needs ({needed / 3600:.1f}; threshold {waste_threshold:.0%}), and its "
                          "predicted load is above the new upper bound")
    return Replan(False, PLAN_HOLDS, f"{label} covers the new forecast until {open_plan.ends_at:%H:%M} UTC")


def _load_seconds(plan: Plan, attr: str, start: pd.Timestamp, end: pd.Timestamp) -> float | None:
    """Load x seconds of each step's ``attr`` (``predicted_peak`` or ``upper_bound``) over
    ``[start, end)``; None if a step in it has none."""
    total = 0.0
    for step, step_end in zip(plan.steps, plan.step_ends(), strict=True):
        seconds = (min(step_end, end) - max(step.at, start)).total_seconds()
        if seconds > 0:
            value = getattr(step, attr)
            if value is None:
                return None
            total += value * seconds
    return total


@dataclass(frozen=True)
class Breach:
    """Realised load above the upper bound of the step it fell in."""

    step_at: pd.Timestamp
    upper_bound: float
    peak: float
    peak_time: pd.Timestamp

    def describe(self, unit: str = "") -> str:
        unit_text = f" {unit}" if unit else ""
        return (f"load of {format_load(self.peak)}{unit_text} at {self.peak_time:%H:%M} UTC exceeded the upper bound "
                f"{format_load(self.upper_bound)}{unit_text} of the step at {self.step_at:%H:%M} UTC")


def breaches(plan: Plan, realised: pd.Series, skip: Iterable[pd.Timestamp] = ()) -> list[Breach]:
    """The steps of ``plan`` whose realised load (samples at ``at <= t < next at``) went
    above their ``upper_bound``, leaving out steps whose ``at`` is in ``skip`` (already
    reported). Steps without an upper bound cannot be breached."""
    if realised.empty:
        return []
    values = realised.astype(float)
    index = values.index if values.index.tz is not None else values.index.tz_localize("UTC")
    values = pd.Series(values.to_numpy(), index=index.tz_convert("UTC"))
    seen = {_ns(t) for t in skip}
    found = []
    for step, end in zip(plan.steps, plan.step_ends(), strict=True):
        if step.upper_bound is None or _ns(step.at) in seen:
            continue
        window = values[(values.index >= step.at) & (values.index < end)]
        if window.empty or not window.max() > step.upper_bound:
            continue
        found.append(Breach(step.at, step.upper_bound, float(window.max()), window.idxmax()))
    return found


# -- time helpers ----------------------------------------------------------------------------
def _utc(moment) -> pd.Timestamp:
    moment = pd.Timestamp(moment)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def _ns(moment) -> int:
    return int(_utc(moment).value)


def _ns_array(times) -> np.ndarray:
    if isinstance(times, pd.DatetimeIndex):
        index = times if times.tz is not None else times.tz_localize("UTC")
        # asi8 counts in the index's own unit (pandas 2+ keeps "us" or "s" from the input)
        return index.tz_convert("UTC").as_unit("ns").asi8
    return np.array([_ns(t) for t in times], dtype=np.int64)


def _duration(seconds: float) -> str:
    """For people: "24h", "30 min", "1h 30 min", "45s" (to the minute from a minute on)."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = int(round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    return " ".join(part for part in (f"{hours}h" if hours else "", f"{minutes} min" if minutes else "") if part)
