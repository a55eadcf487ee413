"""How accurate forecasts were: MASE, the backtest error a proposal reports.

MASE (mean absolute scaled error) is the mean absolute error of the forecasts divided by
the in-sample mean absolute error of a one-day seasonal naive forecast ("the same time
yesterday") on the data the forecaster had; below 1, the forecasts beat that naive one.
One definition for the forecast's evidence (:mod:`.pipeline`) and the replay's figures
(:mod:`.backtest`).
"""

from __future__ import annotations

import numpy as np

from .series import DAY_SECONDS


def seasonal_naive_mae(values: np.ndarray, step_seconds: float) -> float:
    """In-sample mean absolute error of the one-day seasonal naive forecast of ``values``
    (sampled every ``step_seconds``); nan when they are not longer than a day."""
    values = np.asarray(values, dtype=float)
    lag = max(1, int(round(DAY_SECONDS / step_seconds)))
    return float(np.mean(np.abs(values[lag:] - values[:-lag]))) if len(values) > lag else float("nan")


def mase(errors: np.ndarray, scale: float) -> float:
    """``mean(|errors|) / scale``: 0 when both are 0, inf when only the scale is, nan when
    there are no errors or no scale (nan)."""
    errors = np.asarray(errors, dtype=float)
    if errors.size == 0 or not scale >= 0:
        return float("nan")
    mae = float(np.mean(np.abs(errors)))
    if scale == 0:
        return 0.0 if mae == 0 else float("inf")
    return mae / scale
