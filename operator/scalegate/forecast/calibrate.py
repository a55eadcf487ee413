"""Prediction bounds calibrated on a model's own backtest errors (split conformal).

A *score* is ``actual - predicted`` for one backtest origin: by default the
peak of the native samples over the horizon minus the predicted peak
(``interval="peak"``), so that the upper bound holds for the whole horizon's
peak with probability ``confidence``. Scores are absolute (in load units):
shifting or rescaling a series shifts or rescales its bounds with it, and
level-relative or square-root scores were tried and made bounds wider on the
real traces, not narrower. All of a model's backtest origins count equally
(up to the lookback, usually 14 days): weighting recent errors more, or
adaptive conformal inference replayed over the backtest, also widened the
bounds there without covering better; the models' own states are what adapt
to recent data.

The alternative ``interval="pointwise"`` scores every native sample against
the forecast of its bin and bounds each future sample by a two-sided
``confidence`` band (upper quantile ``(1 + confidence) / 2``); the proposal is
then sized for the highest point of that band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .series import ForecastError

INTERVALS = ("peak", "pointwise")

#: The bound is "too uncertain" to act on when the interval is wider than this
#: many times the predicted peak: then even its lower bound and the predicted
#: peak itself say little about where the upper bound will land, and a
#: proposal would mostly follow noise. A round number chosen from that
#: reading, not fitted to any series.
MAX_RELATIVE_WIDTH = 3.0


def bound_levels(confidence: float, interval: str = "peak") -> tuple[float, float]:
    """Quantile levels ``(lower, upper)`` of the scores for a confidence.

    ``peak``: one-sided bounds, ``(1 - c, c)``. ``pointwise``: the two tails of
    a central ``c`` band, ``((1 - c) / 2, (1 + c) / 2)``.
    """
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if interval == "peak":
        return 1 - confidence, confidence
    if interval == "pointwise":
        return (1 - confidence) / 2, (1 + confidence) / 2
    raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")


def min_scores(level: float) -> int:
    """Least number of scores for which the conformal ``level`` quantile is finite."""
    return math.ceil(level / (1 - level) - 1e-9)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile of ``scores`` (any shape, flattened).

    For ``level >= 0.5`` the ``ceil((n + 1) * level)``-th smallest score, so
    a new exchangeable score falls at or below it with probability at least
    ``level``; for ``level < 0.5`` the mirror image (``floor``), a lower bound.

    Raises
    ------
    ForecastError
        ``InsufficientData`` when there are too few scores for the level.
    """
    values = np.asarray(scores, dtype=float).ravel()
    n = len(values)
    if level >= 0.5:
        rank = math.ceil((n + 1) * level - 1e-9)
        if rank > n:
            raise ForecastError(
                "InsufficientData",
                f"{n} backtest errors cannot bound a {level:.1%} quantile; need {min_scores(level)}",
            )
    else:
        rank = math.floor((n + 1) * level + 1e-9)
        if rank < 1:
            raise ForecastError(
                "InsufficientData",
                f"{n} backtest errors cannot bound a {level:.1%} quantile; need {min_scores(1 - level)}",
            )
    # partition is O(n): this runs once per evaluated origin in sequential_coverage
    return float(np.partition(values, rank - 1)[rank - 1])


def pinball_loss(scores: np.ndarray, offset: float, level: float) -> float:
    """Mean pinball (quantile) loss of the bound ``predicted + offset`` at ``level``.

    ``scores`` are ``actual - predicted``; lower is better. Used to choose
    between models: it rewards a bound that is tight *and* covers.
    """
    miss = np.asarray(scores, dtype=float).ravel() - offset
    return float(np.mean(np.where(miss > 0, level * miss, (level - 1) * miss)))


def sequential_coverage(
    scores: np.ndarray, outcome_lag: int, level: float, every: int, max_evaluations: int = 48
) -> tuple[float, int]:
    """Out-of-sample coverage of the conformal bound over the recent backtest.

    For origin ``i`` (the latest ones, ``every`` apart, at most
    ``max_evaluations`` of them), the bound is the ``level`` quantile of the
    scores of origins ``<= i - outcome_lag`` (those whose outcome was known at
    ``i``), and ``i`` counts as covered as far as its own scores are at or
    below it.

    Parameters
    ----------
    scores : array, shape (n_origins,) or (n_origins, points)
    outcome_lag : int
        Origins between an origin and the first one that knows its outcome.
    level : float
    every : int
        Stride between evaluated origins (the horizon, so windows do not overlap).
    max_evaluations : int, default 48
        Bounds the cost; 48 hourly origins are the last two days.

    Returns
    -------
    (coverage, evaluated) : (float, int)
        Share of covered scores, and how many origins were evaluated
        (``(nan, 0)`` when there were too few scores for any).
    """
    per_origin = np.asarray(scores, dtype=float).reshape(len(scores), -1)
    first = min_scores(level) + outcome_lag
    origins = np.arange(len(per_origin) - 1, first - 1, -max(every, 1))[:max_evaluations]
    if not len(origins):
        return float("nan"), 0
    covered = [np.mean(per_origin[i] <= conformal_quantile(per_origin[: i - outcome_lag + 1], level)) for i in origins]
    return float(np.mean(covered)), len(origins)


@dataclass(frozen=True)
class Calibration:
    """Offsets to add to a predicted peak, and how well they held in the backtest.

    Attributes
    ----------
    lower_offset, median_offset, upper_offset : float
        Added to the model's peak forecast give the lower bound, the
        predicted peak (as likely to be exceeded as not) and the upper bound.
    coverage : float
        Out-of-sample coverage of the upper bound over the backtest (nan if
        there were too few origins to measure it).
    scores : int
        Number of backtest scores the offsets come from.
    """

    lower_offset: float
    median_offset: float
    upper_offset: float
    coverage: float
    scores: int


def calibrate(
    scores: np.ndarray, confidence: float, interval: str, outcome_lag: int, horizon_origins: int
) -> Calibration:
    """Conformal offsets for ``confidence`` from backtest ``scores`` (see :func:`sequential_coverage`)."""
    low, high = bound_levels(confidence, interval)
    upper = conformal_quantile(scores, high)
    median = min(conformal_quantile(scores, 0.5), upper)
    lower = min(conformal_quantile(scores, low), median)
    coverage, _ = sequential_coverage(scores, outcome_lag, high, horizon_origins)
    return Calibration(lower, median, upper, coverage, int(np.size(scores)))


def check_certainty(predicted_peak: float, lower_bound: float, upper_bound: float, confidence: float) -> None:
    """Raise ``TooUncertain`` when the interval is wider than :data:`MAX_RELATIVE_WIDTH` x the peak."""
    width = upper_bound - lower_bound
    level = abs(predicted_peak)
    # A width of float noise around a flat series is certainty, not doubt.
    if width <= 1e-9 * max(level, abs(upper_bound), 1e-300):
        return
    if width > MAX_RELATIVE_WIDTH * level:
        raise ForecastError(
            "TooUncertain",
            f"the {confidence:.0%} interval of the peak, {lower_bound:.4g} to {upper_bound:.4g}, is wider than "
            f"{MAX_RELATIVE_WIDTH:g}x the predicted peak {predicted_peak:.4g}; not proposing on noise",
        )
