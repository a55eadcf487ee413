"""Replay a recorded load series as if replicas had been decided and applied on a schedule.

Every decision interval over the evaluated days, each strategy sees only the
data before that moment and sets the replicas for the next interval (the
``reactive`` baseline instead acts at every sample, like an HPA). The figures,
per strategy:

``under_provisioned_fraction``
    share of evaluated samples whose load exceeded replicas x capacity;
``replica_hours``
    sum over samples of replicas x step, in hours;
``mase``
    mean absolute error of the strategy's point forecast of every sample over
    the horizon, scaled by the training days' one-day seasonal naive MAE
    (None for strategies that do not forecast);
``proposals``
    decisions that changed the replicas (scalegate with plans: plans proposed).

Beside them, ``approvals_per_day`` per strategy: how many times a day a person
would have had to approve something. scalegate: each applied single change, or
each plan that was approved (a plan superseded before its approval delay was
over is never approved and does not count). The baselines are not gated, so
theirs is what gating them would cost: one approval per change of replicas
(``oracle``, ``seasonal-naive``, ``holt-winters-*``; ``reactive``, each of the
HPA's scalings; ``static-peak``, its one change to the historical peak at the
first decision). And, for scalegate, how often its calibrated bounds
held out of sample (``bound_coverage``, ``sample_coverage``, ``band_coverage``).

Plans (``plan_horizon_seconds`` and ``plan_step_seconds``): at every decision
scalegate forecasts the plan's horizon, builds a plan (:mod:`.plans`) and
proposes it only when :func:`.plans.replan` says so against the newest open
plan; a proposed plan takes over ``approval_delay_seconds`` later (the previous
one runs meanwhile; a newer proposal made before then supersedes it). The
baselines stay as they are (the oracle is the hourly one). The approval delay
also delays scalegate's single changes, when set; it is 0 by default, which
keeps the single-change replay as it always was.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import numpy as np
import pandas as pd
from scipy.stats import norm

from . import plans
from .accuracy import mase, seasonal_naive_mae
from .models import HoltWinters
from .pipeline import DEFAULT_MODELS, forecast_series
from .series import DAY_SECONDS, ForecastError, regularize
from .sizing import size_replicas

DEFAULT_STRATEGIES = ("scalegate", "reactive", "static-peak", "seasonal-naive", "holt-winters-point", "oracle")
#: Not part of the contract's output; for comparisons (benchmarks/backtest_all.py --extra).
EXTRA_STRATEGIES = ("holt-winters-sigma",)


@dataclass(frozen=True)
class BacktestSettings:
    """What to replay and how; the defaults are the contract's.

    Attributes
    ----------
    capacity_per_replica : float, optional
        Default: the series' 99th percentile / 20.
    horizon_seconds : int, default 3600
        How far ahead each forecast must cover.
    decision_interval_seconds : int, default 3600
        Time between decisions; each decision's replicas hold for one interval.
    train_days, eval_days : float, default 7 and 7
        Days before the first decision, and days evaluated after it.
    confidence : float, default 0.95
    lookback_seconds : int, default 14 days
        Most history a forecaster sees (a policy's ``lookbackSeconds``); at
        least the training days.
    interval : str, default "pointwise"
        What scalegate's interval covers (see :mod:`.calibrate`).
    models : tuple of str
        scalegate's candidate models (see :func:`.pipeline.forecast_series`).
    reactive_tolerance : float, default 0.1
        The HPA's tolerance around the target utilisation.
    reactive_stabilisation_seconds : int, default 300
        The HPA's scale-down stabilisation window.
    plan_horizon_seconds, plan_step_seconds : int, optional
        Both set: scalegate proposes plans of this horizon in steps of this length
        (a policy's ``planHorizonSeconds`` and ``planStepSeconds``), re-planning
        by :func:`.plans.replan` at every decision.
    approval_delay_seconds : int, default 0
        Time from a scalegate proposal to its approval: a plan (or single change)
        takes effect this long after the decision that proposed it.
    waste_threshold : float, default :data:`.plans.WASTE_THRESHOLD`
        The re-plan rule's ``Wasteful`` threshold.
    """

    capacity_per_replica: float | None = None
    horizon_seconds: int = 3600
    decision_interval_seconds: int = 3600
    train_days: float = 7.0
    eval_days: float = 7.0
    confidence: float = 0.95
    lookback_seconds: int = 14 * DAY_SECONDS
    interval: str = "pointwise"
    models: tuple[str, ...] = DEFAULT_MODELS
    reactive_tolerance: float = 0.1
    reactive_stabilisation_seconds: int = 300
    plan_horizon_seconds: int | None = None
    plan_step_seconds: int | None = None
    approval_delay_seconds: int = 0
    waste_threshold: float = plans.WASTE_THRESHOLD

    @property
    def plans(self) -> bool:
        """Whether scalegate proposes plans."""
        return bool(self.plan_horizon_seconds and self.plan_step_seconds)

    def __post_init__(self):
        if bool(self.plan_horizon_seconds) != bool(self.plan_step_seconds):
            raise ValueError("plan_horizon_seconds and plan_step_seconds go together: set both or neither")
        if self.plan_horizon_seconds and self.plan_step_seconds and self.plan_horizon_seconds % self.plan_step_seconds:
            raise ValueError("plan_horizon_seconds must be a multiple of plan_step_seconds")
        if self.plans and self.interval != "pointwise":
            raise ValueError("plans are built from the pointwise interval")
        if self.approval_delay_seconds < 0:
            raise ValueError("approval_delay_seconds must be >= 0")


@dataclass(frozen=True)
class Figures:
    """The contract's figures for one strategy."""

    under_provisioned_fraction: float
    replica_hours: float
    mase: float | None
    proposals: int


@dataclass(frozen=True)
class BacktestResult:
    """Figures per strategy, plus what was replayed.

    Attributes
    ----------
    strategies : dict of str to Figures
    capacity_per_replica : float
    eval_start, eval_end : pandas.Timestamp
    decisions : int
    step_seconds : int
    seconds_per_decision : dict of str to float
        Mean CPU seconds each interval strategy spent per decision.
    forecast_errors : dict of str to int
        scalegate's ForecastError reasons and how often (replicas were kept).
    bound_coverage : dict of str to float
        For strategies that state an upper bound: the share of decisions whose
        actual peak over the horizon stayed at or under it (out of sample).
    sample_coverage : dict of str to float
        For the same strategies: the share of samples over the decisions'
        horizons that stayed at or under the decision's upper bound.
    band_coverage : dict of str to float
        For strategies that state a per-sample band (scalegate's ``pointwise``
        interval): the share of samples at or under their own upper band,
        nominally ``(1 + confidence) / 2``.
    approvals_per_day : dict of str to float
        Per strategy, approvals a person would have given per evaluated day
        (see the module's docstring for what counts).
    plan : dict or None
        With plans: ``proposed``, ``approved``, ``reasons`` (how often each
        :data:`.plans.REPLAN_REASONS` came up) and ``breach_fraction`` (share
        of evaluated samples above the upper bound of the step in effect).
    """

    strategies: dict[str, Figures]
    capacity_per_replica: float
    eval_start: pd.Timestamp
    eval_end: pd.Timestamp
    decisions: int
    step_seconds: int
    seconds_per_decision: dict[str, float] = field(default_factory=dict)
    forecast_errors: dict[str, int] = field(default_factory=dict)
    bound_coverage: dict[str, float] = field(default_factory=dict)
    sample_coverage: dict[str, float] = field(default_factory=dict)
    band_coverage: dict[str, float] = field(default_factory=dict)
    approvals_per_day: dict[str, float] = field(default_factory=dict)
    plan: dict | None = None

    def to_json(self) -> dict:
        """``{"strategies": {NAME: {FIGURE: value}}, "approvals_per_day": {NAME: value},
        "plan": {...} or null, "settings": {...}}``."""
        return {
            "strategies": {name: asdict(figures) for name, figures in self.strategies.items()},
            "approvals_per_day": dict(self.approvals_per_day),
            "plan": self.plan,
            "settings": {
                "capacity_per_replica": self.capacity_per_replica,
                "eval_start": self.eval_start.isoformat(),
                "eval_end": self.eval_end.isoformat(),
                "decisions": self.decisions,
                "step_seconds": self.step_seconds,
                "seconds_per_decision": self.seconds_per_decision,
                "forecast_errors": self.forecast_errors,
                "bound_coverage": self.bound_coverage,
                "sample_coverage": self.sample_coverage,
                "band_coverage": self.band_coverage,
            },
        }


@dataclass(frozen=True)
class ReplayStep:
    """What an interval strategy decided at one step of the replay: replicas (None keeps
    the current ones) and its forecast."""

    replicas: int | None
    point_forecast: np.ndarray | None = None  # one value per native sample over the horizon
    error_reason: str | None = None
    upper_bound: float | None = None  # the bound the replicas were sized for, if the strategy has one
    upper_band: np.ndarray | None = None  # per-sample upper bounds over the horizon, if the strategy has them


@dataclass(frozen=True)
class Moment:
    """What a strategy may know at one decision."""

    history: pd.Series  # regular samples before ``now``, at most the lookback
    now: pd.Timestamp
    current_replicas: int
    capacity: float
    settings: BacktestSettings
    future: np.ndarray  # the next interval's samples: for the oracle only


class IntervalStrategy(Protocol):
    name: str

    def decide(self, moment: Moment) -> ReplayStep: ...


def default_capacity(series: pd.Series) -> float:
    """The series' 99th percentile / 20 (so the busiest times need about 20 replicas)."""
    return float(np.percentile(series.to_numpy(dtype=float), 99) / 20)


def run_backtest(
    series: pd.Series,
    settings: BacktestSettings = BacktestSettings(),
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """Replay ``series`` with each named strategy.

    Parameters
    ----------
    series : pandas.Series
        The recording (e.g. from :func:`.series.load_csv`); short gaps are interpolated.
    settings : BacktestSettings
    strategies : tuple of str
        Names from :data:`DEFAULT_STRATEGIES` and :data:`EXTRA_STRATEGIES`.
    progress : callable(done, total), optional
        Called after every decision.
    """
    unknown = set(strategies) - set(DEFAULT_STRATEGIES) - set(EXTRA_STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies: {sorted(unknown)}")
    capacity = settings.capacity_per_replica or default_capacity(series)
    if not capacity > 0:
        raise ValueError("capacity per replica must be positive (the series' 99th percentile is 0: pass one)")
    regular = regularize(series, min_history_seconds=settings.train_days * DAY_SECONDS)
    values = regular.values.to_numpy()
    index = regular.values.index
    step = regular.step_seconds
    eval_start = int(round(settings.train_days * DAY_SECONDS / step))
    eval_end = min(len(values), eval_start + int(round(settings.eval_days * DAY_SECONDS / step)))
    if eval_start >= eval_end:
        raise ForecastError(
            "InsufficientData", f"the series ends before the {settings.train_days:g} training days are over"
        )
    per_decision = max(1, int(round(settings.decision_interval_seconds / step)))
    decision_points = np.arange(eval_start, eval_end, per_decision)
    initial = _replicas_for(values[eval_start - 1], capacity)

    planning = settings.plans and "scalegate" in strategies
    interval_strategies = [
        _make_strategy(name) for name in strategies if name != "reactive" and not (planning and name == "scalegate")
    ]
    replicas = {s.name: np.zeros(eval_end - eval_start, dtype=np.int64) for s in interval_strategies}
    current = {s.name: initial for s in interval_strategies}
    changes = {s.name: 0 for s in interval_strategies}
    forecasts: dict[str, list[tuple[int, np.ndarray]]] = {s.name: [] for s in interval_strategies}
    bounds: dict[str, list[bool]] = {s.name: [] for s in interval_strategies}
    samples_under: dict[str, list[float]] = {s.name: [] for s in interval_strategies}
    band_hits: dict[str, list[float]] = {s.name: [] for s in interval_strategies}
    cpu = {s.name: 0.0 for s in interval_strategies}
    errors: dict[str, int] = {}
    lookback_points = int(max(settings.lookback_seconds, settings.train_days * DAY_SECONDS) // step)
    horizon_points = max(1, math.ceil(settings.horizon_seconds / step))
    # a change (or plan) proposed at a decision takes effect this many samples later
    delay_points = math.ceil(settings.approval_delay_seconds / step)
    if delay_points and "scalegate" in replicas:
        replicas["scalegate"][:] = initial
    plan_replay = _PlanReplay(settings, capacity, initial, step) if planning else None

    for done, decision_point in enumerate(decision_points, start=1):
        point = int(decision_point)
        history = regular.values.iloc[max(0, point - lookback_points) : point]
        until = min(point + per_decision, eval_end)
        for strategy in interval_strategies:
            moment = Moment(history, index[point], current[strategy.name], capacity, settings, values[point:until])
            started = time.process_time()
            decision = strategy.decide(moment)
            cpu[strategy.name] += time.process_time() - started
            if decision.error_reason:
                errors[decision.error_reason] = errors.get(decision.error_reason, 0) + 1
            chosen = current[strategy.name] if decision.replicas is None else decision.replicas
            changes[strategy.name] += chosen != current[strategy.name]
            current[strategy.name] = chosen
            shift = delay_points if strategy.name == "scalegate" else 0
            replicas[strategy.name][point + shift - eval_start : until + shift - eval_start] = chosen
            if point + horizon_points <= len(values):
                if decision.point_forecast is not None:
                    forecasts[strategy.name].append((point, decision.point_forecast))
                horizon = values[point : point + horizon_points]
                if decision.upper_bound is not None:
                    bounds[strategy.name].append(horizon.max() <= decision.upper_bound)
                    samples_under[strategy.name].append(np.mean(horizon <= decision.upper_bound))
                if decision.upper_band is not None:
                    band_hits[strategy.name].append(np.mean(horizon <= decision.upper_band[:horizon_points]))
        if plan_replay is not None:
            started = time.process_time()
            plan_replay.decide(history, index[point], point, values)
            cpu["scalegate"] = cpu.get("scalegate", 0.0) + time.process_time() - started
        if progress:
            progress(done, len(decision_points))

    load = values[eval_start:eval_end]
    mase_scale = seasonal_naive_mae(values[:eval_start], step)
    eval_days = (eval_end - eval_start) * step / DAY_SECONDS
    figures: dict[str, Figures] = {}
    approvals: dict[str, float] = {}
    plan_summary = None
    for name in strategies:
        if name == "reactive":
            reactive, reactive_changes = _reactive(values, eval_start, eval_end, capacity, initial, step, settings)
            figures[name] = _figures(load, reactive, capacity, step, None, reactive_changes)
            approvals[name] = reactive_changes / eval_days
        elif name == "scalegate" and plan_replay is not None:
            book = plan_replay.book
            book.close(index[eval_end - 1] + pd.Timedelta(seconds=step))
            timeline, upper = book.timeline(index[eval_start:eval_end])
            error = _mase(values, plan_replay.forecasts, plan_replay.horizon_points, mase_scale)
            figures[name] = _figures(load, timeline, capacity, step, error, book.proposed)
            approvals[name] = book.approved / eval_days
            forecasts[name] = plan_replay.forecasts
            band_hits[name] = plan_replay.band_hits
            errors.update({k: errors.get(k, 0) + v for k, v in plan_replay.errors.items()})
            plan_summary = {
                "proposed": book.proposed,
                "approved": book.approved,
                "reasons": dict(plan_replay.reasons),
                "breach_fraction": float(np.mean(load > upper)),
                "plan_horizon_seconds": settings.plan_horizon_seconds,
                "plan_step_seconds": settings.plan_step_seconds,
                "approval_delay_seconds": settings.approval_delay_seconds,
            }
        else:
            error = _mase(values, forecasts[name], horizon_points, mase_scale)
            figures[name] = _figures(load, replicas[name], capacity, step, error, changes[name])
            approvals[name] = changes[name] / eval_days  # one per change of replicas
    return BacktestResult(
        strategies=figures,
        capacity_per_replica=capacity,
        eval_start=index[eval_start],
        eval_end=index[eval_end - 1] + pd.Timedelta(seconds=step),
        decisions=len(decision_points),
        step_seconds=step,
        seconds_per_decision={name: cpu[name] / len(decision_points) for name in cpu},
        forecast_errors=errors,
        bound_coverage={name: float(np.mean(hits)) for name, hits in bounds.items() if hits},
        sample_coverage={name: float(np.mean(shares)) for name, shares in samples_under.items() if shares},
        band_coverage={name: float(np.mean(shares)) for name, shares in band_hits.items() if shares},
        approvals_per_day=approvals,
        plan=plan_summary,
    )


def _replicas_for(load: float, capacity: float) -> int:
    # Exact ceil, so that "replicas x capacity >= load" holds bit for bit (the oracle is never short).
    return max(0, math.ceil(load / capacity))


def _figures(load, replicas, capacity, step, error, proposals) -> Figures:
    return Figures(
        under_provisioned_fraction=float(np.mean(load > replicas * capacity)),
        replica_hours=float(np.sum(replicas) * step / 3600),
        mase=None if error is None or not math.isfinite(error) else float(error),
        proposals=int(proposals),
    )


def _mase(values, forecasts, horizon_points, scale) -> float:
    """MASE of every forecast of the horizon's samples (each forecast covers the whole horizon);
    not finite when undefined (no forecasts, or errors where the training days had none to scale by)."""
    errors = [values[p : p + horizon_points] - f[:horizon_points] for p, f in forecasts]
    return mase(np.concatenate(errors) if errors else np.empty(0), scale)


def _reactive(values, eval_start, eval_end, capacity, initial, step, settings) -> tuple[np.ndarray, int]:
    """An HPA on the load metric: one sync step late, with tolerance and scale-down stabilisation.

    At each sample the HPA sees the previous sample's load (the metric it read
    one sync earlier); its recommendation is ``ceil(load / capacity)`` unless
    the utilisation is within the tolerance of the target. Scaling up is
    immediate; scaling down takes the highest recommendation of the
    stabilisation window, so it only happens after the load stayed low that long.
    """
    window = max(0, int(settings.reactive_stabilisation_seconds // step))
    recommendations: list[int] = []
    current, changes = initial, 0
    out = np.zeros(eval_end - eval_start, dtype=np.int64)
    for i in range(eval_start, eval_end):
        observed = values[i - 1]
        if current > 0 and abs(observed / (current * capacity) - 1) <= settings.reactive_tolerance:
            desired = current
        else:
            desired = _replicas_for(observed, capacity)
        recommendations.append(desired)
        recent = max(recommendations[-(window + 1) :])
        target = desired if desired >= current else min(current, recent)
        changes += target != current
        current = target
        out[i - eval_start] = current
    return out, changes


# --- scalegate with plans ----------------------------------------------------------------------


class PlanBook:
    """The replay's record of plans: proposed, approved after the delay, in effect.

    A plan proposed at ``t`` is approved at ``t + delay`` and is in effect from then
    on (from the step in effect at that moment, as the operator applies it); the plan
    before it runs until then. A newer proposal made before that supersedes it, and a
    superseded plan was never approved: it costs no approval.
    """

    def __init__(self, initial: int, delay_seconds: float):
        self.initial = initial
        self.delay = pd.Timedelta(seconds=delay_seconds)
        self.active: plans.Plan | None = None
        self.pending: tuple[plans.Plan, pd.Timestamp] | None = None
        self.activations: list[tuple[pd.Timestamp, plans.Plan]] = []
        self.proposed = 0

    @property
    def approved(self) -> int:
        """Plans approved so far (each one approval)."""
        return len(self.activations)

    def _approve_due(self, now: pd.Timestamp) -> None:
        if self.pending is not None and self.pending[1] <= now:
            self.active = self.pending[0]
            self.activations.append(self.pending[::-1])
            self.pending = None

    def open_plan(self, now: pd.Timestamp) -> plans.Plan | None:
        """The newest plan still open at ``now``: the pending one, else the one in effect."""
        self._approve_due(now)
        return self.pending[0] if self.pending is not None else self.active

    def replicas_at(self, now: pd.Timestamp) -> int:
        """Replicas in effect at ``now``."""
        self._approve_due(now)
        return self.initial if self.active is None else int(self.active.replicas_at([now])[0])

    def propose(self, plan: plans.Plan, now: pd.Timestamp) -> None:
        self._approve_due(now)
        self.proposed += 1
        self.pending = (plan, now + self.delay)  # supersedes a pending one not yet approved
        self._approve_due(now)

    def close(self, end: pd.Timestamp) -> None:
        """The replay ends at ``end``: a plan whose approval falls before it is approved."""
        if self.pending is not None and self.pending[1] < end:
            self.activations.append(self.pending[::-1])
            self.active, self.pending = self.pending[0], None

    def timeline(self, times: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        """Replicas in effect at each of ``times``, and the upper bound of the step in
        effect (inf where there is none): the initial replicas until the first approval,
        then each approved plan from its approval on, its last step held after it ends."""
        replicas = np.full(len(times), self.initial, dtype=np.int64)
        upper = np.full(len(times), np.inf)
        for effective, plan in self.activations:
            mask = times >= effective
            if not mask.any():
                continue
            replicas[mask] = plan.replicas_at(times[mask])
            bounds = np.array([np.inf if s.upper_bound is None else s.upper_bound for s in plan.steps])
            which = np.clip(np.searchsorted(plans._ns_array([s.at for s in plan.steps]),
                                            plans._ns_array(times[mask]), side="right") - 1, 0, None)
            upper[mask] = np.where(times[mask] < plan.ends_at, bounds[which], np.inf)
        return replicas, upper


class _PlanReplay:
    """scalegate proposing plans: a forecast over the plan's horizon at every decision, a
    plan built from it, proposed when :func:`.plans.replan` says so against the newest open
    plan (pending, else in effect); :class:`PlanBook` keeps the record."""

    def __init__(self, settings: BacktestSettings, capacity: float, initial: int, step: int):
        assert settings.plan_horizon_seconds and settings.plan_step_seconds, "plans need both settings"
        self.settings, self.capacity = settings, capacity
        self.plan_horizon, self.plan_step = settings.plan_horizon_seconds, settings.plan_step_seconds
        self.book = PlanBook(initial, settings.approval_delay_seconds)
        self.horizon_points = max(1, math.ceil(self.plan_horizon / step))
        self.reasons: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.forecasts: list[tuple[int, np.ndarray]] = []
        self.band_hits: list[float] = []

    def decide(self, history: pd.Series, now: pd.Timestamp, point: int, values: np.ndarray) -> None:
        """One decision at ``now`` (sample ``point`` of ``values``), from ``history`` before it."""
        settings = self.settings
        try:
            forecast = plans.forecast_plan(history, self.plan_horizon, self.plan_step, settings.confidence, now,
                                           models=settings.models)
        except ForecastError as exc:
            self.errors[exc.reason] = self.errors.get(exc.reason, 0) + 1
            return
        new = plans.build_plan(forecast, self.capacity, self.book.replicas_at(now), self.plan_step, self.plan_horizon,
                               now=now)
        self._score(forecast, point, values)
        open_plan = self.book.open_plan(now)
        decision = plans.replan(open_plan, new, now, approval_seconds=settings.approval_delay_seconds,
                                interval_seconds=settings.decision_interval_seconds,
                                breached=self._breached(now, history),
                                waste_threshold=settings.waste_threshold)
        self.reasons[decision.reason] = self.reasons.get(decision.reason, 0) + 1
        if decision.propose:
            self.book.propose(new, now)

    def _breached(self, now: pd.Timestamp, history: pd.Series) -> bool:
        """Whether the load exceeded an upper bound of the plan in effect since the last decision."""
        if not self.book.activations:
            return False
        effective, plan = self.book.activations[-1]
        since = max(effective, now - pd.Timedelta(seconds=self.settings.decision_interval_seconds))
        return bool(plans.breaches(plan, history[history.index >= since]))

    def _score(self, forecast, point: int, values: np.ndarray) -> None:
        """The forecast's point path and band against what came (for MASE and band coverage)."""
        if point + self.horizon_points > len(values):
            return
        per_bin = forecast.resolution_seconds // forecast.step_seconds
        path = np.repeat(np.asarray(forecast.path), per_bin)[: self.horizon_points]
        self.forecasts.append((point, path))
        actual = values[point : point + self.horizon_points]
        self.band_hits.append(float(np.mean(actual <= np.asarray(forecast.upper_band)[: self.horizon_points])))


# --- interval strategies ----------------------------------------------------------------------


class _Scalegate:
    """forecast_series + size_replicas, no policy limits; a ForecastError keeps the replicas."""

    name = "scalegate"

    def decide(self, moment: Moment) -> ReplayStep:
        settings = moment.settings
        try:
            forecast = forecast_series(
                moment.history,
                settings.horizon_seconds,
                settings.confidence,
                moment.now,
                interval=settings.interval,
                models=settings.models,
            )
        except ForecastError as exc:
            return ReplayStep(None, error_reason=exc.reason)
        sizing = size_replicas(forecast.upper_bound, moment.capacity, moment.current_replicas)
        per_bin = forecast.resolution_seconds // forecast.step_seconds
        return ReplayStep(
            sizing.replicas,
            np.repeat(np.asarray(forecast.path), per_bin),
            upper_bound=forecast.upper_bound,
            upper_band=np.asarray(forecast.upper_band) if forecast.upper_band else None,
        )


class _StaticPeak:
    """Fixed at the highest load of the training days."""

    name = "static-peak"

    def __init__(self):
        self._replicas: int | None = None

    def decide(self, moment: Moment) -> ReplayStep:
        if self._replicas is None:
            self._replicas = _replicas_for(float(moment.history.max()), moment.capacity)
        return ReplayStep(self._replicas)


class _SeasonalNaive:
    """The same interval yesterday."""

    name = "seasonal-naive"

    def decide(self, moment: Moment) -> ReplayStep:
        values = moment.history.to_numpy()
        step = (moment.history.index[1] - moment.history.index[0]).total_seconds()
        lag = int(round(DAY_SECONDS / step))
        horizon = max(1, math.ceil(moment.settings.horizon_seconds / step))
        yesterday = values[len(values) - lag : len(values) - lag + horizon]
        return ReplayStep(_replicas_for(float(yesterday.max()), moment.capacity), yesterday)


class _HoltWintersPoint:
    """Damped additive Holt-Winters on the native samples of the last 7 days, point forecast only."""

    name = "holt-winters-point"
    days = 7

    def _fit(self, moment: Moment):
        step = (moment.history.index[1] - moment.history.index[0]).total_seconds()
        season = int(round(DAY_SECONDS / step))
        recent = moment.history.to_numpy()[-int(self.days * season) :]
        horizon = max(1, math.ceil(moment.settings.horizon_seconds / step))
        return HoltWinters(season).fit(recent), recent, horizon

    def decide(self, moment: Moment) -> ReplayStep:
        try:
            fitted, _, horizon = self._fit(moment)
        except ForecastError as exc:
            return ReplayStep(None, error_reason=exc.reason)
        path = fitted.forecast(horizon)
        return ReplayStep(_replicas_for(float(path.max()), moment.capacity), path)


class _HoltWintersSigma(_HoltWintersPoint):
    """Holt-Winters point forecast + z(confidence) x the one-step residuals' standard deviation."""

    name = "holt-winters-sigma"

    def decide(self, moment: Moment) -> ReplayStep:
        try:
            fitted, recent, horizon = self._fit(moment)
        except ForecastError as exc:
            return ReplayStep(None, error_reason=exc.reason)
        origins = np.arange(fitted.first_origin, len(recent))
        residuals = recent[origins] - fitted.rolling_forecasts(origins, 1)[:, 0]
        path = fitted.forecast(horizon)
        bound = float(path.max() + norm.ppf(moment.settings.confidence) * residuals.std())
        return ReplayStep(_replicas_for(bound, moment.capacity), path, upper_bound=bound)


class _Oracle:
    """Perfect foresight of each interval's peak."""

    name = "oracle"

    def decide(self, moment: Moment) -> ReplayStep:
        return ReplayStep(_replicas_for(float(moment.future.max()), moment.capacity))


_STRATEGIES = {
    cls.name: cls for cls in (_Scalegate, _StaticPeak, _SeasonalNaive, _HoltWintersPoint, _HoltWintersSigma, _Oracle)
}


def _make_strategy(name: str) -> IntervalStrategy:
    return _STRATEGIES[name]()
