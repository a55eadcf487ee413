"""When a policy's model is refitted, and how the kept forecast serves the rounds between.

Pure (values in, values out); the forecaster calls it every round (issue 16, cheap rounds).

Fitting is most of a round's work: choosing among the candidate models, replaying each
from every earlier origin and calibrating every lead (:func:`.pipeline.forecast_series`).
A forecast made an interval ago is still a calibrated forecast of the same future, so a
round refits only when it is due, and otherwise re-scores the kept forecast against the
samples that came since it was made and reuses it.

Keeping a forecast
    A fit made to be kept forecasts over the policy's horizon **plus** the refit
    interval (plus the few samples by which fresh data may end before now,
    :func:`fit_horizon`), with the bins the policy's own horizon calls for; every native
    sample of it has its own band, calibrated on the model's backtest errors at that
    lead. A round at ``now`` then reads the samples in ``[now, now + horizon)`` of the
    kept forecast (:func:`window`): the same per-sample bands, at the leads they were
    calibrated for. The lower bound is the kept forecast's (the highest point of its
    lower edge over its whole horizon): per-sample lower edges are not kept, and the
    lower bound only goes into the evidence.

When a refit is due (:func:`refit_due`, in this order)
    ``EveryRound``
        the refit interval is 0 (refit every round, as before issue 16);
    ``NoForecast``
        nothing is kept (the first round, a restart, the last fit failed);
    ``SpecChanged``
        the policy's forecast settings changed since the fit (what the fit depends on:
        query, horizon, lookback, step, confidence, plan settings);
    ``IntervalPassed``
        the policy's refit time passed: new data since the fit matters (the models'
        state, the latest error the error correction carries forward, the calibration's
        most recent errors). The refit times of a policy are a fixed phase plus whole
        refit intervals (:func:`next_refit`), the phase spread over the interval by a
        hash of the policy's name (:func:`phase_of`): a fit is kept at most one
        interval, and policies fitted in the same round (all of them, after a start)
        are refitted spread over the next interval, a round refitting about
        ``round interval / refit interval`` of them, not all at once every hour;
    ``HorizonNotCovered``
        the kept forecast ends before ``now + horizon`` (by construction this happens
        only once the interval passed, or when the data had lagged at the fit);
    ``ForecastBreached``
        a sample that came since the fit lies above the upper band the kept forecast
        gave its time: the forecast no longer holds, and the replicas sized from it may
        be too few.

    Otherwise ``Kept``. A load falling well below the forecast is not a reason: the kept
    forecast errs on the side of capacity, and is replaced within the interval anyway.

The refit interval
    :data:`REFIT_INTERVAL_SECONDS` (one hour), capped at the policy's horizon
    (:func:`refit_interval`): the fit forecasts the horizon plus the interval, so the cap
    keeps a fit at most about twice as long a forecast as the policy needs (the backtest's
    work grows with the leads), and an hour bounds how long the newest data (12 samples at
    5 minutes) can go unused by the model. With the default ``intervalSeconds`` of 900, a
    policy is refitted once in four rounds unless its load breaks the forecast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Hashable

import numpy as np
import pandas as pd

from .pipeline import Forecast
from .series import MAX_INTERPOLATED_GAP_STEPS

#: Default longest time a fit is kept (see the module docstring).
REFIT_INTERVAL_SECONDS = 3600.0

EVERY_ROUND, NO_FORECAST, SPEC_CHANGED, INTERVAL_PASSED, HORIZON_NOT_COVERED, FORECAST_BREACHED, KEPT = (
    "EveryRound", "NoForecast", "SpecChanged", "IntervalPassed", "HorizonNotCovered", "ForecastBreached", "Kept")
#: Every reason :func:`refit_due` gives; all but ``Kept`` refit.
REASONS = (EVERY_ROUND, NO_FORECAST, SPEC_CHANGED, INTERVAL_PASSED, HORIZON_NOT_COVERED, FORECAST_BREACHED, KEPT)


@dataclass(frozen=True)
class KeptForecast:
    """A fit kept for later rounds.

    Attributes
    ----------
    forecast : Forecast
        Made by :func:`fit_horizon`'s rule: over the horizon plus the refit interval,
        ``pointwise`` (a band per native sample).
    fitted_at : pandas.Timestamp
        The round's ``now`` when it was made (UTC).
    key : hashable
        What the fit depended on (the caller's: the policy's forecast settings); a round
        whose key differs refits.
    """

    forecast: Forecast
    fitted_at: pd.Timestamp
    key: Hashable


@dataclass(frozen=True)
class Due:
    """Whether to refit now, and why (one of :data:`REASONS`)."""

    refit: bool
    reason: str
    message: str


def phase_of(name: str, interval_seconds: float) -> float:
    """A policy's refit phase in ``[0, interval)``: the first 8 bytes of sha256(name) as a
    fraction of 2**64, times the interval (stable in every process, unlike ``hash()``)."""
    fraction = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2.0**64
    return fraction * float(interval_seconds)


def next_refit(fitted_at: datetime | pd.Timestamp, interval_seconds: float, phase_seconds: float) -> pd.Timestamp:
    """The first refit time after ``fitted_at``: ``phase + k * interval`` seconds since the
    epoch, in ``(fitted_at, fitted_at + interval]``."""
    fitted = _utc(fitted_at).timestamp()
    k = math.floor((fitted - phase_seconds) / interval_seconds) + 1
    return pd.Timestamp(phase_seconds + k * interval_seconds, unit="s", tz="UTC").ceil("us")


def refit_interval(setting_seconds: float, horizon_seconds: float) -> float:
    """The refit interval of a policy: the setting, at most its horizon; 0 (or less) is 0."""
    return max(0.0, min(float(setting_seconds), float(horizon_seconds)))


def fit_horizon(horizon_seconds: float, interval_seconds: float, step_seconds: int) -> int:
    """The horizon a fit kept for ``interval_seconds`` forecasts: the policy's, plus the
    interval, plus the samples by which fresh data may end before now (the most that
    :func:`.series.check_fresh` lets pass), so that every round until the interval ends
    finds ``[now, now + horizon)`` in it."""
    return int(math.ceil(horizon_seconds + interval_seconds + (MAX_INTERPOLATED_GAP_STEPS + 1) * step_seconds))


def _utc(moment) -> pd.Timestamp:
    moment = pd.Timestamp(moment)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def _sample_times(forecast: Forecast) -> pd.DatetimeIndex:
    """The time of each sample of the forecast's bands: ``window_end + (i + 1) * step``."""
    step = pd.Timedelta(seconds=forecast.step_seconds)
    return pd.date_range(_utc(forecast.window_end) + step, periods=len(forecast.upper_band), freq=step)


def covers(forecast: Forecast, start: datetime | pd.Timestamp, horizon_seconds: float) -> bool:
    """Whether the forecast has a band for every sample in ``[start, start + horizon)``:
    its last sample is at or after the last sample time before ``start + horizon``."""
    if not forecast.upper_band or forecast.step_seconds <= 0:
        return False
    last = _sample_times(forecast)[-1]
    return last + pd.Timedelta(seconds=forecast.step_seconds) >= _utc(start) + pd.Timedelta(seconds=horizon_seconds)


def breach(forecast: Forecast, recent: pd.Series) -> tuple[pd.Timestamp, float, float] | None:
    """The first sample of ``recent`` after the forecast's data that lies above the upper
    band the forecast gave its time: ``(time, load, band)``, or None. Samples off the
    forecast's grid are matched to the nearest sample time; samples past its end are not
    judged (a forecast that does not reach them is not covering anyway)."""
    if recent is None or recent.empty or not forecast.upper_band:
        return None
    index = recent.index if recent.index.tz is not None else recent.index.tz_localize("UTC")
    offsets = (index.tz_convert("UTC") - _utc(forecast.window_end)).total_seconds().to_numpy()
    positions = np.rint(offsets / forecast.step_seconds).astype(np.int64) - 1
    band = np.asarray(forecast.upper_band, dtype=float)
    values = recent.to_numpy(dtype=float)
    judged = (offsets > 0) & (positions >= 0) & (positions < len(band))
    above = np.flatnonzero(judged & (values > band[np.clip(positions, 0, len(band) - 1)]))
    if not above.size:
        return None
    first = int(above[0])
    return index[first].tz_convert("UTC"), float(values[first]), float(band[positions[first]])


def refit_due(
    kept: KeptForecast | None,
    *,
    key: Hashable,
    now: datetime | pd.Timestamp,
    horizon_seconds: float,
    interval_seconds: float,
    recent: pd.Series | None = None,
    phase_seconds: float | None = None,
) -> Due:
    """Whether a round at ``now`` refits (see the module docstring for the rule).

    Parameters
    ----------
    kept : KeptForecast or None
    key : hashable
        What a fit made now would depend on; compared with ``kept.key``.
    now : datetime
    horizon_seconds : float
        How far ahead this round's forecast must reach (a plan: the plan's horizon).
    interval_seconds : float
        The policy's refit interval (:func:`refit_interval`).
    recent : pandas.Series, optional
        The samples since the fit; without them the breach is not judged (the forecaster
        asks once before reading them, to read the whole history straight away when a
        refit is due anyway, and once after).
    phase_seconds : float, optional
        The policy's refit phase (:func:`phase_of`): refit at :func:`next_refit`. Without
        it, once the fit is ``interval_seconds`` old.
    """
    if interval_seconds <= 0:
        return Due(True, EVERY_ROUND, "the refit interval is 0: every round refits")
    if kept is None:
        return Due(True, NO_FORECAST, "no kept forecast")
    if kept.key != key:
        return Due(True, SPEC_CHANGED, "the forecast settings changed since the last fit")
    now = _utc(now)
    age = (now - _utc(kept.fitted_at)).total_seconds()
    if phase_seconds is None and age >= interval_seconds:
        return Due(True, INTERVAL_PASSED, f"fitted {age:.0f}s ago, refit interval {interval_seconds:g}s")
    if phase_seconds is not None:
        due_at = next_refit(kept.fitted_at, interval_seconds, phase_seconds)
        if now >= due_at:
            return Due(True, INTERVAL_PASSED, f"fitted {age:.0f}s ago, refit due at {due_at:%H:%M:%S} UTC")
    if not covers(kept.forecast, now, horizon_seconds):
        return Due(True, HORIZON_NOT_COVERED,
                   f"the kept forecast ends before {now + pd.Timedelta(seconds=horizon_seconds):%H:%M} UTC")
    if recent is not None:
        found = breach(kept.forecast, recent)
        if found is not None:
            at, load, band = found
            return Due(True, FORECAST_BREACHED,
                       f"load of {load:.6g} at {at:%H:%M} UTC above the kept forecast's upper band {band:.6g}")
    return Due(False, KEPT, f"kept forecast of {age:.0f}s ago holds")


def window(forecast: Forecast, start: datetime | pd.Timestamp, horizon_seconds: float) -> Forecast:
    """The kept forecast as a forecast of ``[start, start + horizon)``: the samples in that
    window (their bands, hence ``upper_bound`` and ``predicted_peak``), the bins that
    overlap it (``path``, ``model_peak`` and ``peak_time``, the start of the highest bin
    but not before ``start``), ``horizon_seconds``; the rest (model, data window,
    calibration, backtest error, lower bound) as fitted.

    Raises
    ------
    ValueError
        The forecast has no per-sample band, or no sample in the window.
    """
    if not forecast.upper_band:
        raise ValueError("only a pointwise forecast (one band per sample) can be windowed")
    start = _utc(start)
    times = _sample_times(forecast)
    inside = np.flatnonzero((times >= start) & (times < start + pd.Timedelta(seconds=horizon_seconds)))
    if not inside.size:
        raise ValueError(f"the forecast has no sample in [{start}, +{horizon_seconds:g}s)")
    first, last = int(inside[0]), int(inside[-1])
    upper = forecast.upper_band[first:last + 1]
    median = (forecast.median_band or forecast.upper_band)[first:last + 1]
    per_bin = max(1, forecast.resolution_seconds // forecast.step_seconds)
    first_bin, last_bin = first // per_bin, min(last // per_bin, len(forecast.path) - 1)
    path = forecast.path[first_bin:last_bin + 1] or forecast.path
    peak_bin = first_bin + int(np.argmax(path)) if forecast.path[first_bin:last_bin + 1] else 0
    bin_start = times[0] + pd.Timedelta(seconds=peak_bin * forecast.resolution_seconds)
    return dataclasses.replace(
        forecast,
        horizon_seconds=int(horizon_seconds),
        predicted_peak=float(max(median)),
        upper_bound=float(max(upper)),
        peak_time=max(bin_start, times[first]),
        model_peak=float(max(path)) if path else forecast.model_peak,
        path=tuple(path),
        upper_band=tuple(upper),
        median_band=tuple(median) if forecast.median_band else (),
    )
