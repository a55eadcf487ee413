"""One forecast: the load over a horizon, with a calibrated upper bound of its peak.

``forecast_series`` is pure (data in, :class:`Forecast` out) and is what the
forecaster loop and the backtest both call. The steps:

1. validate and regularise the series (:mod:`.series`);
2. average it into bins of the resolution the horizon needs (:mod:`.resample`);
3. fit each candidate model once and replay it from every earlier origin
   (a rolling-origin backtest whose states use only data before the origin);
   every model also competes with its error correction
   (:class:`.models.ErrorCorrected`: its latest error carried forward);
4. score each origin: each native sample over the horizon minus its bin's
   forecast (with ``interval="peak"``: the native peak over the horizon minus
   the predicted peak);
5. choose the candidate with the lowest pinball loss of its calibrated bound
   on the backtest origins all candidates share;
6. bound each future sample with the conformal quantiles of that model's
   scores at the same lead (:mod:`.calibrate`) and take the highest point of
   that band as the bound of the peak (``peak``: the conformal quantile of the
   peak scores), and refuse intervals too wide to act on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from . import calibrate as cal
from .accuracy import mase, seasonal_naive_mae
from .models import ErrorCorrected, Estimator, FittedModel, HoltWinters, MSTLHolt, SeasonalNaive
from .resample import bin_means, choose_resolution, season_length
from .series import DAY_SECONDS, ForecastError, RegularSeries, check_fresh, regularize

#: Models tried unless the caller names others (each as it is and with its error correction).
DEFAULT_MODELS = ("seasonal-naive", "holt-winters", "holt")
#: Every model there is. MSTL is opt-in: its decomposition is not causal, so
#: its honest backtest is only the held-out week below, and being chosen and
#: calibrated on those same few origins made its bounds optimistic (on 28 days
#: of NYC taxi data, 4.8% of the time under-provisioned against 1.2% without it).
ALL_MODELS = DEFAULT_MODELS + ("mstl",)

#: Trailing time left out of MSTL's decomposition, so that it has honest
#: backtest origins to be compared and calibrated on: one whole weekly cycle,
#: so that every day of its weekly season is in its errors. MSTL is thus tried
#: from two weeks and a day (the decomposition) plus this week of data on.
MSTL_HOLDOUT_SECONDS = 7 * DAY_SECONDS


@dataclass(frozen=True)
class Forecast:
    """A calibrated forecast of the load over ``[window_end + step, ... + horizon)``.

    Attributes
    ----------
    model : str
        The chosen model, e.g. ``"holt-winters(additive, damped, seasonal=96)"``.
    window_start, window_end : pandas.Timestamp
        First and last sample used (UTC).
    points : int
        Samples in that window (after interpolating short gaps).
    horizon_seconds : int
    predicted_peak : float
        The highest point of the forecast corrected by the median backtest
        score: ``pointwise``, the highest per-sample median (each sample as
        likely to be above it as below); ``peak``, the model's peak plus the
        median peak score (the horizon's peak as likely to be exceeded as not).
    upper_bound, lower_bound : float
        ``pointwise``: the highest points of the upper and lower edges of the
        two-sided ``confidence`` band of each future sample (so every sample
        stays at or under ``upper_bound`` with probability at least
        ``(1 + confidence) / 2``). ``peak``: bounds of the horizon's peak at
        ``confidence``. See :mod:`.calibrate`.
    peak_time : pandas.Timestamp
        Start of the bin where the point forecast peaks (UTC).
    confidence : float
    backtest_metric : str
        Always ``"MASE"``.
    backtest_error : float
        MASE of the chosen model's forecasts of every native sample over the
        horizon, across its backtest origins, scaled by the in-sample MAE of a
        one-day seasonal naive forecast (:mod:`.accuracy`).
    coverage : float
        Out-of-sample coverage of the calibrated upper bound over the recent
        backtest (nan when too few origins could be evaluated): ``pointwise``,
        the share of native samples at or under their lead's upper band
        (nominally ``(1 + confidence) / 2``); ``peak``, the share of horizons
        whose peak stayed at or under it (nominally ``confidence``).
    resolution_seconds : int
        Bin width the models ran at.
    model_peak : float
        Highest point forecast over the horizon (bin means at ``resolution_seconds``).
    interval : str
        ``"peak"`` or ``"pointwise"`` (see :mod:`.calibrate`).
    step_seconds : int
        Sampling step of the input.
    calibration_scores : int
        Backtest scores behind the bounds.
    candidates : tuple of (str, float)
        Every model tried and its pinball loss on the backtest origins they share.
    path : tuple of float
        The chosen model's point forecasts, one per bin over the horizon.
    upper_band : tuple of float
        ``pointwise`` only (else empty): the upper edge of each future native
        sample's band, one per sample over the horizon; ``upper_bound`` is its maximum.
    median_band : tuple of float
        ``pointwise`` only (else empty): each future native sample's forecast
        corrected by its lead's median score (as likely to be exceeded as not);
        ``predicted_peak`` is its maximum. Sample ``i`` is at
        ``window_end + (i + 1) * step_seconds``.
    """

    model: str
    window_start: pd.Timestamp
    window_end: pd.Timestamp
    points: int
    horizon_seconds: int
    predicted_peak: float
    upper_bound: float
    lower_bound: float
    peak_time: pd.Timestamp
    confidence: float
    backtest_error: float
    coverage: float
    resolution_seconds: int
    backtest_metric: str = "MASE"
    model_peak: float = float("nan")
    interval: str = "pointwise"
    step_seconds: int = 0
    calibration_scores: int = 0
    candidates: tuple[tuple[str, float], ...] = ()
    path: tuple[float, ...] = ()
    upper_band: tuple[float, ...] = ()
    median_band: tuple[float, ...] = ()


@dataclass(frozen=True)
class _Candidate:
    fitted: FittedModel
    origins: np.ndarray  # bin origins whose outcome is known, shape (k,)
    predicted: np.ndarray  # point forecasts from those origins, shape (k, steps)
    scores: np.ndarray  # actual - predicted, shape (k,) or (k, horizon points); nan where not yet known
    complete: int = 0  # origins whose whole horizon is known (the first ones)


def forecast_series(
    series: pd.Series,
    horizon_seconds: float,
    confidence: float = 0.95,
    now: datetime | pd.Timestamp | None = None,
    *,
    interval: str = "pointwise",
    models: tuple[str, ...] = DEFAULT_MODELS,
    resolution_seconds: int | None = None,
    partial_origins: bool = False,
) -> Forecast:
    """Forecast ``series`` over the next ``horizon_seconds``, with calibrated bounds of its peak.

    Parameters
    ----------
    series : pandas.Series
        Load on a DatetimeIndex (naive = UTC), at least two days, one step;
        short gaps are interpolated (see :func:`.series.regularize`).
    horizon_seconds : float
        How far ahead the bound must hold, > 0.
    confidence : float, default 0.95
        Coverage of the prediction interval: of each future sample's two-sided
        band (``pointwise``), or of the horizon's peak (``peak``).
    now : datetime, optional
        The decision time; samples at or after it are ignored. Defaults to one
        step after the last sample. Data that ends more than a few steps
        before ``now`` is stale and refused.
    interval : {"pointwise", "peak"}, default "pointwise"
        What the interval covers; see :mod:`.calibrate`.
    models : tuple of str, default :data:`DEFAULT_MODELS`
        Candidates, from :data:`ALL_MODELS`; each is tried when the data is long
        enough for it (as it is and with its error correction), and the seasonal
        naive floor whenever it is named.
    resolution_seconds : int, optional
        Bin width the models run at, at most the one the horizon calls for
        (:func:`.resample.choose_resolution`) and rounded down to a whole
        number of samples; a plan asks for bins no wider than its steps (see
        :func:`.plans.plan_resolution`). Default: the horizon's.
    partial_origins : bool, default False
        Also replay the newest origins, whose horizon has only partly come:
        each lead is then scored, chosen on and calibrated with every error of
        its own that the data already knows, up to the newest (``pointwise``
        only). Plans ask for it: with a day-long horizon the origins of the
        whole last day would otherwise be left out, so the choice of model and
        the bounds of the next hours would not see anything that changed since
        yesterday (a level shift stayed invisible to them for a day). An hour
        ahead leaves out less than an hour and does without.

    Returns
    -------
    Forecast

    Raises
    ------
    ForecastError
        ``InsufficientData``, ``InvalidData``, ``MetricsUnavailable`` (stale
        data), ``FitFailed`` (no model could be fitted) or ``TooUncertain``.
    """
    if not horizon_seconds > 0:
        raise ValueError(f"horizon_seconds must be positive, got {horizon_seconds}")
    if not models or set(models) - set(ALL_MODELS):
        raise ValueError(f"models must be a non-empty selection of {ALL_MODELS}, got {models}")
    if partial_origins and interval != "pointwise":
        raise ValueError("partial_origins scores each lead on its own: it needs the pointwise interval")
    _, high_level = cal.bound_levels(confidence, interval)
    regular = _input_before(series, now)
    values = regular.values.to_numpy()
    step = regular.step_seconds
    resolution = choose_resolution(horizon_seconds, step)
    if resolution_seconds is not None:
        resolution = max(step, min(resolution, int(resolution_seconds) // step * step))
    per_bin = resolution // step
    horizon_points = max(1, math.ceil(horizon_seconds / step))
    layout = _Layout(values, per_bin, horizon_points, interval, partial_origins)
    candidates = _backtested_candidates(layout, season_length(resolution), resolution, high_level, models)
    if not candidates:
        raise ForecastError(
            "InsufficientData",
            f"too little history to backtest a {horizon_seconds:g}s horizon at {confidence:.0%}",
        )

    losses = _selection_losses(candidates, high_level)
    chosen_name = min(losses, key=lambda name: losses[name])
    chosen = candidates[chosen_name]
    calibration = cal.calibrate(chosen.scores, confidence, interval, layout.horizon_bins, layout.horizon_bins)

    forecast = chosen.fitted.forecast(layout.horizon_bins)
    peak_bin = int(np.argmax(forecast))
    model_peak = float(forecast[peak_bin])
    per_lead = layout.per_point(forecast[None, :])[0] if interval == "pointwise" else forecast
    lower, predicted_peak, upper = calibration.bounds(per_lead)
    cal.check_certainty(predicted_peak, lower, upper, confidence)

    index = regular.values.index
    origin_time = index[-1] + pd.Timedelta(seconds=step)
    return Forecast(
        model=chosen_name,
        window_start=index[0],
        window_end=index[-1],
        points=len(values),
        horizon_seconds=int(horizon_seconds),
        predicted_peak=predicted_peak,
        model_peak=model_peak,
        upper_bound=upper,
        lower_bound=lower,
        peak_time=origin_time + pd.Timedelta(seconds=peak_bin * resolution),
        confidence=confidence,
        backtest_error=_mase(chosen, layout, step),
        coverage=calibration.coverage,
        resolution_seconds=resolution,
        interval=interval,
        step_seconds=step,
        calibration_scores=calibration.scores,
        candidates=tuple(sorted(losses.items(), key=lambda item: item[1])),
        path=tuple(float(x) for x in forecast),
        upper_band=tuple(float(x) for x in per_lead + calibration.upper_offset) if interval == "pointwise" else (),
        median_band=tuple(float(x) for x in per_lead + calibration.median_offset) if interval == "pointwise" else (),
    )


def _input_before(series: pd.Series, now) -> RegularSeries:
    """The regular series of samples before ``now``; refuses data that stopped well before it."""
    if now is None:
        return regularize(series)
    now = pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    if len(series) and series.index.tz is None:
        series = series.tz_localize("UTC")
    regular = regularize(series[series.index < now])
    check_fresh(regular.values.index[-1], now, regular.step_seconds)
    return regular


@dataclass(frozen=True)
class _Layout:
    """How the native samples, the bins and the horizon line up.

    Bins are ``per_bin`` samples wide and end with the last sample; bin
    origin ``o`` (forecasting bins ``o, o + 1, ...``) starts at native index
    ``offset + o * per_bin``.
    """

    values: np.ndarray
    per_bin: int
    horizon_points: int
    interval: str
    partial: bool = False  # also origins whose horizon has only partly come (see forecast_series)

    def bins(self) -> np.ndarray:
        """Bin means, shape ``(len(values) // per_bin,)``."""
        return bin_means(self.values, self.per_bin)

    @property
    def offset(self) -> int:
        return len(self.values) % self.per_bin

    @property
    def horizon_bins(self) -> int:
        return max(1, math.ceil(self.horizon_points / self.per_bin))

    def native_start(self, origins: np.ndarray) -> np.ndarray:
        return self.offset + origins * self.per_bin

    def native_windows(self, origins: np.ndarray) -> np.ndarray:
        """The samples of each origin's horizon, shape ``(len(origins), horizon_points)``
        (nan past the end of the data)."""
        positions = self.native_start(origins)[:, None] + np.arange(self.horizon_points)[None, :]
        if positions.size and positions.max() >= len(self.values):
            padded = np.concatenate([self.values, np.full(self.horizon_points, np.nan)])
            return padded[positions]
        return self.values[positions]

    def complete(self, origins: np.ndarray) -> np.ndarray:
        """Which origins' whole horizon is in the data."""
        return self.native_start(origins) + self.horizon_points <= len(self.values)

    def per_point(self, predicted: np.ndarray) -> np.ndarray:
        """Bin forecasts repeated onto the samples they cover, shape ``(k, horizon_points)``."""
        return np.repeat(predicted, self.per_bin, axis=1)[:, : self.horizon_points]


def _backtested_candidates(
    layout: _Layout, season: int, resolution: int, level: float, models: tuple[str, ...]
) -> dict[str, _Candidate]:
    """Each named model the data supports, fitted once and replayed, if it has enough scores for ``level``."""
    bins = layout.bins()
    candidates: dict[str, _Candidate] = {}
    failures: list[str] = []
    estimators = [
        e
        for e in _estimators(len(bins), season, int(MSTL_HOLDOUT_SECONDS // resolution), resolution)
        if e.name in models
    ]
    for estimator in estimators:
        try:
            fitted = estimator.fit(bins)
        except ForecastError as exc:
            failures.append(exc.message)
            continue
        for model in (fitted, ErrorCorrected(fitted, bins, partial=layout.partial)):
            candidate = _replay(model, layout)
            if candidate.complete >= cal.min_scores(level):
                candidates[model.description] = candidate
    if estimators and len(failures) == len(estimators):
        raise ForecastError("FitFailed", "no model could be fitted: " + "; ".join(failures))
    return candidates


def _estimators(n_bins: int, season: int, holdout_bins: int, resolution: int) -> list[Estimator]:
    """Every model that the amount of data supports; the seasonal naive floor always."""
    estimators: list[Estimator] = [SeasonalNaive(season)]
    holt_winters = HoltWinters(season)
    if n_bins >= holt_winters.min_length():
        estimators.append(holt_winters)
    estimators.append(HoltWinters(None))
    mstl = MSTLHolt(season, holdout=holdout_bins)
    if season * resolution == DAY_SECONDS and n_bins >= mstl.min_length():
        estimators.append(mstl)
    return estimators


def _replay(fitted: FittedModel, layout: _Layout) -> _Candidate:
    """Forecasts from every origin whose outcome is known, and their scores."""
    origins = np.arange(fitted.first_origin, fitted.n + 1)
    if layout.partial:  # every origin with at least its first sample known
        origins = origins[layout.native_start(origins) < len(layout.values)]
    else:
        origins = origins[layout.complete(origins)]
    if not len(origins):
        return _Candidate(fitted, origins, np.empty((0, layout.horizon_bins)), np.empty(0))
    predicted = fitted.rolling_forecasts(origins, layout.horizon_bins)
    if layout.interval == "peak":
        window_peaks = sliding_window_view(layout.values, layout.horizon_points).max(axis=1)
        scores = window_peaks[layout.native_start(origins)] - predicted.max(axis=1)
    else:
        scores = layout.native_windows(origins) - layout.per_point(predicted)
    return _Candidate(fitted, origins, predicted, scores, int(np.count_nonzero(layout.complete(origins))))


def _selection_losses(candidates: dict[str, _Candidate], level: float) -> dict[str, float]:
    """Pinball loss of each candidate's calibrated bound, on the origins all candidates share.

    Pointwise scores (2-D) are bounded lead by lead, as :func:`.calibrate.calibrate` does.
    """
    common_start = max(int(c.origins[0]) for c in candidates.values())
    losses = {}
    for name, candidate in candidates.items():
        shared = candidate.scores[candidate.origins >= common_start]
        offset = cal.conformal_quantile(shared, level, per_lead=shared.ndim == 2)
        losses[name] = cal.pinball_loss(shared, offset, level)
    return losses


def _mase(chosen: _Candidate, layout: _Layout, step: int) -> float:
    """MASE of the chosen model's forecasts of the horizon's native samples, from every
    backtest origin, scaled by the whole input's seasonal naive error."""
    full = layout.complete(chosen.origins)
    errors = layout.native_windows(chosen.origins[full]) - layout.per_point(chosen.predicted[full])
    return mase(errors, seasonal_naive_mae(layout.values, step))
