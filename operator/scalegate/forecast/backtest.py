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
    decisions that changed the replicas.

and, for scalegate, how often its calibrated bounds held out of sample
(``bound_coverage``, ``sample_coverage``, ``band_coverage``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import numpy as np
import pandas as pd
from scipy.stats import norm

from .models import HoltWinters
from .accuracy import mase, seasonal_naive_mae
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

    def to_json(self) -> dict:
        """``{"strategies": {NAME: {FIGURE: value}}, "settings": {...}}``."""
        return {
            "strategies": {name: asdict(figures) for name, figures in self.strategies.items()},
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

    interval_strategies = [_make_strategy(name) for name in strategies if name != "reactive"]
    replicas = {s.name: np.zeros(eval_end - eval_start, dtype=np.int64) for s in interval_strategies}
    current = {s.name: initial for s in interval_strategies}
    changes = {s.name: 0 for s in interval_strategies}
    forecasts = {s.name: [] for s in interval_strategies}
    bounds = {s.name: [] for s in interval_strategies}
    samples_under = {s.name: [] for s in interval_strategies}
    band_hits = {s.name: [] for s in interval_strategies}
    cpu = {s.name: 0.0 for s in interval_strategies}
    errors: dict[str, int] = {}
    lookback_points = int(max(settings.lookback_seconds, settings.train_days * DAY_SECONDS) // step)
    horizon_points = max(1, math.ceil(settings.horizon_seconds / step))

    for done, point in enumerate(decision_points, start=1):
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
            replicas[strategy.name][point - eval_start : until - eval_start] = chosen
            if point + horizon_points <= len(values):
                if decision.point_forecast is not None:
                    forecasts[strategy.name].append((point, decision.point_forecast))
                horizon = values[point : point + horizon_points]
                if decision.upper_bound is not None:
                    bounds[strategy.name].append(horizon.max() <= decision.upper_bound)
                    samples_under[strategy.name].append(np.mean(horizon <= decision.upper_bound))
                if decision.upper_band is not None:
                    band_hits[strategy.name].append(np.mean(horizon <= decision.upper_band[:horizon_points]))
        if progress:
            progress(done, len(decision_points))

    load = values[eval_start:eval_end]
    mase_scale = seasonal_naive_mae(values[:eval_start], step)
    figures: dict[str, Figures] = {}
    for name in strategies:
        if name == "reactive":
            reactive, reactive_changes = _reactive(values, eval_start, eval_end, capacity, initial, step, settings)
            figures[name] = _figures(load, reactive, capacity, step, None, reactive_changes)
        else:
            error = _mase(values, forecasts[name], horizon_points, mase_scale)
            figures[name] = _figures(load, replicas[name], capacity, step, error, changes[name])
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
