"""Load-series input: reading, validating and regularising one metric series.

Everything downstream (models, calibration, backtests) works on a *regular*
series: a float ``pandas.Series`` on a tz-aware UTC ``DatetimeIndex`` with one
value per fixed step and no missing values. This module is where irregular
input becomes regular, or is refused with a :class:`ForecastError` whose
``reason`` is one of the status reasons of the ScalingPolicy contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DAY_SECONDS = 86_400

#: Reasons a forecast can fail; they become the ``ForecastReady`` condition reason.
#: ``OutOfBounds``: no change the policy allows can be proposed (see :mod:`.sizing`).
REASONS = ("InsufficientData", "MetricsUnavailable", "TooUncertain", "FitFailed", "InvalidData", "OutOfBounds")

#: Gaps of at most this many missing steps are filled by linear interpolation;
#: one scrape or one export bucket lost now and then must not stop forecasting.
MAX_INTERPOLATED_GAP_STEPS = 3

#: Two daily seasons: the least history from which a daily cycle can be told
#: apart from a trend.
MIN_HISTORY_SECONDS = 2 * DAY_SECONDS


class ForecastError(Exception):
    """A forecast that cannot (or must not) be made.

    Parameters
    ----------
    reason : str
        One of :data:`REASONS`, used as the condition reason in status.
    message : str
        A sentence for a person: what was wrong and, where possible, what to do.
    """

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown ForecastError reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self):
        # Raised in the forecaster's worker processes: it must cross back intact (the
        # default pickling would call __init__ with one argument and break the pool).
        return type(self), (self.reason, self.message)


@dataclass(frozen=True)
class RegularSeries:
    """A validated series on a fixed step.

    Attributes
    ----------
    values : pandas.Series
        Float values on a UTC ``DatetimeIndex`` with exactly ``step_seconds``
        between neighbours; no NaN, no Inf.
    step_seconds : int
        The sampling step.
    interpolated_points : int
        How many points were filled in short gaps.
    dropped_before : pandas.Timestamp or None
        If a long gap was found, the history before it was dropped and this is
        the first timestamp kept; otherwise None.
    """

    values: pd.Series
    step_seconds: int
    interpolated_points: int = 0
    dropped_before: pd.Timestamp | None = None


def load_csv(path: str | Path) -> pd.Series:
    """Read a ``timestamp,value`` CSV into a float Series on a UTC DatetimeIndex.

    Naive timestamps are taken to be UTC. Rows are sorted by time; duplicate
    timestamps keep the last row.

    Raises
    ------
    ForecastError
        ``InvalidData`` if the file lacks the two columns or has unparsable rows.
    """
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ForecastError("InvalidData", f"cannot read {path}: {exc}") from exc
    if not {"timestamp", "value"} <= set(frame.columns):
        raise ForecastError(
            "InvalidData", f"{path}: expected the header 'timestamp,value', got {list(frame.columns)}"
        )
    try:
        index = pd.to_datetime(frame["timestamp"], utc=True)
        values = pd.to_numeric(frame["value"])
    except (ValueError, TypeError) as exc:
        raise ForecastError("InvalidData", f"{path}: {exc}") from exc
    series = pd.Series(values.to_numpy(dtype=float), index=pd.DatetimeIndex(index), name="value")
    series = series[~series.index.duplicated(keep="last")].sort_index()
    return series


def infer_step_seconds(index: pd.DatetimeIndex) -> int:
    """The sampling step: the median spacing of the timestamps, in whole seconds."""
    if len(index) < 2:
        raise ForecastError("InsufficientData", f"{len(index)} sample(s): cannot tell the sampling step")
    spacing = np.diff(_epoch_seconds(index))
    step = int(round(float(np.median(spacing))))
    if step <= 0:
        raise ForecastError("InvalidData", "timestamps are not increasing")
    return step


def _as_utc(series: pd.Series) -> pd.Series:
    if not isinstance(series.index, pd.DatetimeIndex):
        raise ForecastError("InvalidData", "the series needs a DatetimeIndex")
    index = series.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    out = pd.Series(series.to_numpy(dtype=float), index=index, name=series.name)
    return out[~out.index.duplicated(keep="last")].sort_index()


def regularize(
    series: pd.Series,
    step_seconds: int | None = None,
    *,
    min_history_seconds: float = MIN_HISTORY_SECONDS,
    max_gap_steps: int = MAX_INTERPOLATED_GAP_STEPS,
) -> RegularSeries:
    """Validate a series and put it on a fixed step.

    Short gaps (at most ``max_gap_steps`` missing points) are filled by linear
    interpolation. A longer gap drops the history before it, because a model
    state carried across an outage would be wrong; if what is left is shorter
    than ``min_history_seconds``, the series is refused.

    Parameters
    ----------
    series : pandas.Series
        Values on a DatetimeIndex (naive timestamps are taken as UTC).
    step_seconds : int, optional
        The expected step; inferred from the timestamps when omitted.
    min_history_seconds : float, default two days
        Least continuous history accepted.
    max_gap_steps : int, default 3
        Longest run of missing points that is interpolated.

    Raises
    ------
    ForecastError
        ``InsufficientData`` (empty, too short, too short after a long gap) or
        ``InvalidData`` (NaN or Inf values, timestamps off the step grid).
    """
    if series is None or len(series) == 0:
        raise ForecastError("InsufficientData", "the series is empty: no samples in the lookback window")
    series = _as_utc(series)
    values = series.to_numpy()
    bad = ~np.isfinite(values)
    if bad.any():
        first = series.index[np.argmax(bad)]
        kind = "NaN" if np.isnan(values[bad]).any() else "Inf"
        raise ForecastError(
            "InvalidData",
            f"{int(bad.sum())} non-finite value(s) ({kind}), first at {first.isoformat()}; "
            "the query must return a finite number at every step",
        )
    step = int(step_seconds) if step_seconds else infer_step_seconds(series.index)
    positions = (_epoch_seconds(series.index) - _epoch_seconds(series.index[:1])[0]) / step
    # The grid's phase is the median offset, so one late first sample does not shift it;
    # samples within a quarter step of the grid (scrape jitter) are snapped to it.
    phase = float(np.median(positions - np.round(positions)))
    positions = positions - phase
    if np.any(np.abs(positions - np.round(positions)) > 0.25):
        raise ForecastError("InvalidData", f"timestamps do not follow a {step}s step")
    positions = np.round(positions).astype(np.int64)
    origin = (series.index[0] + pd.to_timedelta(phase * step, unit="s")).round("s")
    jumps = np.diff(positions)
    long_gaps = np.flatnonzero(jumps > max_gap_steps + 1)
    dropped_before = None
    if long_gaps.size:
        cut = long_gaps[-1] + 1
        gap_start = series.index[cut - 1]
        dropped_before = series.index[cut]
        origin = origin + pd.to_timedelta(int(positions[cut]) * step, unit="s")
        series, positions = series.iloc[cut:], positions[cut:] - positions[cut]
        kept = (positions[-1] + 1) * step
        if kept < min_history_seconds:
            raise ForecastError(
                "InsufficientData",
                f"gap of {_human(jumps[cut - 1] * step)} without samples after {gap_start.isoformat()}; "
                f"only {_human(kept)} of continuous history since, need {_human(min_history_seconds)}",
            )
    span = (positions[-1] + 1) * step
    if span < min_history_seconds:
        raise ForecastError(
            "InsufficientData",
            f"only {_human(span)} of history, need at least {_human(min_history_seconds)} (two daily seasons)",
        )
    grid = origin + pd.to_timedelta(np.arange(positions[-1] + 1) * step, unit="s")
    filled = np.full(len(grid), np.nan)
    filled[positions] = series.to_numpy()
    missing = int(np.isnan(filled).sum())
    if missing:
        known = ~np.isnan(filled)
        filled[~known] = np.interp(np.flatnonzero(~known), np.flatnonzero(known), filled[known])
    regular = pd.Series(filled, index=pd.DatetimeIndex(grid), name=series.name or "value")
    return RegularSeries(regular, step, missing, dropped_before)


def check_fresh(newest: pd.Timestamp, now: pd.Timestamp, step_seconds: int) -> None:
    """Refuse a series that stopped: its newest sample more than
    ``MAX_INTERPOLATED_GAP_STEPS + 1`` steps before ``now`` (a gap longer than would be
    interpolated, counting the step the next sample takes to arrive).

    The one staleness rule of a series, for the Prometheus source and the forecast alike.

    Raises
    ------
    ForecastError
        ``MetricsUnavailable``.
    """
    age = (now - newest).total_seconds()
    if age > (MAX_INTERPOLATED_GAP_STEPS + 1) * step_seconds:
        raise ForecastError(
            "MetricsUnavailable",
            f"no samples since {newest.isoformat()} ({age / 60:.0f} min before {now.isoformat()}); "
            "is the target scraped?",
        )


def _human(seconds: float) -> str:
    seconds = float(seconds)
    if seconds >= 2 * DAY_SECONDS:
        return f"{seconds / DAY_SECONDS:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def _epoch_seconds(index: pd.DatetimeIndex) -> np.ndarray:
    """Seconds since the epoch as floats, whatever the index's time unit."""
    return index.as_unit("ns").asi8 / 1e9
