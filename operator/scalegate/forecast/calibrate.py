"""Prediction bounds calibrated on a model's own backtest errors (split conformal).

A *score* is ``actual - predicted`` for one backtest origin. By default
(``interval="pointwise"``) every native sample over the horizon is scored
against the forecast of its bin, and each *lead* (position of the sample in
the horizon) is calibrated on its own scores: the future sample at lead ``j``
gets a two-sided ``confidence`` band, bin forecast plus the ``(1 - c) / 2``
and ``(1 + c) / 2`` conformal quantiles of the lead-``j`` scores. That is the
literal prediction interval of the load: each sample stays under its upper
band with probability ``(1 + c) / 2`` and inside the band with probability
``c``, and ``Forecast.coverage`` reports how often that held out of sample.
The proposal is sized for the highest point of the upper band, so every
sample of the horizon is served whenever it is inside its band.

Per-lead quantiles because errors grow with the lead (and repeat within a
bin: a bin's first sample is nearer its mean than its last): one quantile of
all leads pooled over-covered the near samples and under-covered the far ones.
On the 11 recorded series (7 training days, the next 7 evaluated) the pooled
band was under-provisioned 1.11% of the time (worst 2.58%) at 1.150x the
oracle's replica-hours, the per-lead band 0.85% (worst 2.28%) at 1.187x; at
equal cost the per-lead band is under-provisioned less, also on the later
weeks of the longer series. (Those figures are for 15-minute bins; with 10-minute
bins and the error-corrected models of :mod:`.models`, the per-lead band is
at 0.75%, worst 1.59%, 1.177x.)

The alternative ``interval="peak"`` scores the peak of the native samples over
the horizon minus the predicted peak, and bounds the horizon's peak with
probability ``confidence`` (one-sided). It covers more and costs more (0.68%,
worst 1.49%, at 1.30x on the same replay).

Scores are absolute (in load units): shifting or rescaling a series shifts or
rescales its bounds with it. Level-relative or square-root scores were tried
and made peak bounds wider on the real traces, not narrower; for the pointwise
band, scores scaled by a time-of-day profile of the errors, by the recent
volatility or by recent errors did not cover better for their cost either. All
of a model's backtest origins count equally (up to the lookback, usually 14
days): weighting recent errors more, or adaptive conformal inference replayed
over the backtest, also widened the bounds there without covering better; the
models' own states are what adapt to recent data.
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


def bound_levels(confidence: float, interval: str = "pointwise") -> tuple[float, float]:
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


def conformal_quantile(scores: np.ndarray, level: float, per_lead: bool = False):
    """The split-conformal quantile of ``scores``.

    For ``level >= 0.5`` the ``ceil((n + 1) * level)``-th smallest score, so
    a new exchangeable score falls at or below it with probability at least
    ``level``; for ``level < 0.5`` the mirror image (``floor``), a lower bound.

    Parameters
    ----------
    scores : array
        Any shape, flattened; with ``per_lead``, shape ``(origins, leads)``.
    level : float
    per_lead : bool, default False
        Quantile of each column (lead) separately: an array of shape ``(leads,)``
        instead of one float, each from the ``origins`` scores of its lead.
        A nan is a score not known yet (an origin whose outcome at that lead
        has not come): each lead's quantile is of its own known scores.

    Raises
    ------
    ForecastError
        ``InsufficientData`` when there are too few scores for the level.
    """
    values = np.asarray(scores, dtype=float)
    values = values.reshape(len(values), -1) if per_lead else values.ravel()
    if per_lead and np.isnan(values).any():
        return _known_quantile(values, level)
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
    nth = np.partition(values, rank - 1, axis=0)[rank - 1]
    return nth if per_lead else float(nth)


def _known_quantile(values: np.ndarray, level: float) -> np.ndarray:
    """Per-column conformal quantile of the known (not nan) scores, shape ``(columns,)``."""
    n = np.count_nonzero(~np.isnan(values), axis=0)
    if level >= 0.5:
        rank = np.ceil((n + 1) * level - 1e-9).astype(int)
        short = rank > n
    else:
        rank = np.floor((n + 1) * level + 1e-9).astype(int)
        short = rank < 1
    if short.any():
        need = min_scores(max(level, 1 - level))
        raise ForecastError(
            "InsufficientData",
            f"{int(n.min())} backtest errors cannot bound a {level:.1%} quantile; need {need}",
        )
    ordered = np.sort(values, axis=0)  # nan last
    return ordered[rank - 1, np.arange(values.shape[1])]

def pinball_loss(scores: np.ndarray, offset, level: float) -> float:
    """Mean pinball (quantile) loss of the bound ``predicted + offset`` at ``level``.

    ``scores`` are ``actual - predicted``; lower is better. Used to choose
    between models: it rewards a bound that is tight *and* covers. ``offset``
    is a float, or one offset per lead (column) of 2-D ``scores``.
    """
    miss = np.asarray(scores, dtype=float) - offset
    loss = np.where(miss > 0, level * miss, (level - 1) * miss)
    # nan: a score not known yet (see conformal_quantile)
    return float(np.nanmean(loss) if np.isnan(loss).any() else np.mean(loss))


def sequential_coverage(
    scores: np.ndarray,
    outcome_lag: int,
    level: float,
    every: int,
    max_evaluations: int = 48,
    per_lead: bool = False,
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
    per_lead : bool, default False
        Bound each column of 2-D ``scores`` by its own quantile (see
        :func:`conformal_quantile`) instead of one quantile of all of them.

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
    covered = [
        np.mean(per_origin[i] <= conformal_quantile(per_origin[: i - outcome_lag + 1], level, per_lead))
        for i in origins
    ]
    return float(np.mean(covered)), len(origins)


@dataclass(frozen=True)
class Calibration:
    """Offsets to add to a point forecast, and how well they held in the backtest.

    Attributes
    ----------
    lower_offset, median_offset, upper_offset : float or numpy.ndarray
        ``peak``: one float each, added to the model's peak forecast.
        ``pointwise``: one per native sample of the horizon (lead), added to
        that sample's forecast; each lead is calibrated on its own scores.
    coverage : float
        Out-of-sample coverage of the upper bound over the backtest (nan if
        there were too few origins to measure it): the share of horizon peaks
        (``peak``) or of samples (``pointwise``) at or under it.
    scores : int
        Number of backtest scores the offsets come from.
    """

    lower_offset: float | np.ndarray
    median_offset: float | np.ndarray
    upper_offset: float | np.ndarray
    coverage: float
    scores: int

    def bounds(self, path: np.ndarray) -> tuple[float, float, float]:
        """``(lower, median, upper)`` of the horizon's peak for a point forecast ``path``.

        ``path`` is the model's forecast (``peak``: any resolution, only its
        maximum counts; ``pointwise``: one value per lead). Each bound is the
        highest point of ``path + offset``: the peak is at least every
        sample, so the highest lower bound is a lower bound of the peak, and
        replicas that serve the highest upper bound serve every sample's.
        """
        path = np.asarray(path, dtype=float)
        if np.ndim(self.upper_offset) == 0:
            path = path.max(keepdims=True)
        lower, median, upper = (float(np.max(path + offset))
                                for offset in (self.lower_offset, self.median_offset, self.upper_offset))
        return lower, median, upper


def calibrate(
    scores: np.ndarray, confidence: float, interval: str, outcome_lag: int, horizon_origins: int
) -> Calibration:
    """Conformal offsets for ``confidence`` from backtest ``scores`` (see :func:`sequential_coverage`).

    ``peak``: ``scores`` has shape ``(origins,)`` and the offsets are floats.
    ``pointwise``: shape ``(origins, leads)``, and each lead gets its own
    quantiles (errors grow with the lead, and one quantile of all leads
    together would over-cover the near samples and under-cover the far ones);
    a nan is a score not known yet, and each lead's quantiles are of its own
    known scores (coverage is measured on the origins known in full).
    """
    low, high = bound_levels(confidence, interval)
    per_lead = interval == "pointwise"
    upper = conformal_quantile(scores, high, per_lead)
    median = np.minimum(conformal_quantile(scores, 0.5, per_lead), upper)
    lower = np.minimum(conformal_quantile(scores, low, per_lead), median)
    if not per_lead:
        median, lower = float(median), float(lower)
    scores = np.asarray(scores, dtype=float)
    known = ~np.isnan(scores)
    # coverage is measured on the origins whose whole horizon is known (the first ones)
    complete = scores[known.reshape(len(scores), -1).all(axis=1)] if not known.all() else scores
    coverage, _ = sequential_coverage(complete, outcome_lag, high, horizon_origins, per_lead=per_lead)
    return Calibration(lower, median, upper, coverage, int(np.count_nonzero(known)))


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
