"""MASE, the one definition the forecast's evidence and the replay's figures share."""

import math

import numpy as np
import pytest

from scalegate.forecast.accuracy import mase, seasonal_naive_mae

pytestmark = pytest.mark.unit

DAY_AT_HOURLY = 24  # samples a day at a one-hour step


def test_seasonal_naive_mae_compares_each_sample_with_the_same_time_a_day_before():
    values = np.concatenate([np.zeros(DAY_AT_HOURLY), np.full(DAY_AT_HOURLY, 3.0)])
    assert seasonal_naive_mae(values, 3600) == 3.0
    assert seasonal_naive_mae(np.tile(np.arange(24.0), 3), 3600) == 0.0  # a perfect daily cycle
    assert math.isnan(seasonal_naive_mae(np.arange(24.0), 3600))  # not longer than a day: no scale


def test_mase_scales_the_mean_absolute_error():
    assert mase(np.array([1.0, -3.0]), 4.0) == 0.5  # signs do not cancel
    assert mase(np.array([[1.0, 1.0], [-1.0, 3.0]]), 1.5) == 1.0  # any shape


@pytest.mark.parametrize("errors, scale, expected", [
    (np.zeros(3), 0.0, 0.0),          # perfect forecasts of a perfectly seasonal series
    (np.ones(3), 0.0, math.inf),      # errors where the naive forecast had none
    (np.ones(3), math.nan, math.nan),  # no scale
    (np.empty(0), 1.0, math.nan),     # no forecasts
])
def test_mase_edges(errors, scale, expected):
    result = mase(errors, scale)
    assert result == expected or (math.isnan(expected) and math.isnan(result))
