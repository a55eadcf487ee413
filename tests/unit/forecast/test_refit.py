"""When a round refits (issue 16, cheap rounds): the decision, the coverage and breach
rules it rests on, and the kept forecast read as a forecast of the horizon from now."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from scalegate.forecast import refit
from scalegate.forecast.pipeline import Forecast, forecast_series
from scalegate.forecast.refit import KeptForecast, refit_due

pytestmark = pytest.mark.unit

T = pd.Timestamp("2026-11-27T00:00:00Z")  # the fit's now; its data ends 5 minutes before
STEP = 300
HOUR = 3600
KEY = ("load", 3600)


def forecast_of(upper, median=None, step=STEP, resolution=STEP, path=None) -> Forecast:
    """Sample i of the bands is at T + i * step (window_end = T - step)."""
    median = upper if median is None else median
    return Forecast(
        model="test", window_start=T - pd.Timedelta(days=14), window_end=T - pd.Timedelta(seconds=step),
        points=4032, horizon_seconds=len(upper) * step, predicted_peak=float(max(median)),
        upper_bound=float(max(upper)), lower_bound=1.0, peak_time=T, confidence=0.95, backtest_error=0.7,
        coverage=0.975, resolution_seconds=resolution, step_seconds=step,
        path=tuple(float(x) for x in (median if path is None else path)),
        upper_band=tuple(float(x) for x in upper), median_band=tuple(float(x) for x in median),
    )


def kept(samples: int = 28, at: pd.Timestamp = T, key=KEY, band: float = 100.0) -> KeptForecast:
    return KeptForecast(forecast_of([band] * samples), at, key)


def due(kept_forecast, now, recent=None, key=KEY, horizon=HOUR, interval=HOUR):
    return refit_due(kept_forecast, key=key, now=now, horizon_seconds=horizon, interval_seconds=interval,
                     recent=recent)


def minutes(m: float) -> pd.Timedelta:
    return pd.Timedelta(minutes=m)


# -- the rule, reason by reason, in its order ------------------------------------------------
def test_nothing_kept_refits():
    assert due(None, T).reason == "NoForecast" and due(None, T).refit


def test_changed_settings_refit_before_anything_else():
    assert due(kept(), T, key=("other", 3600)).reason == "SpecChanged"


def test_an_interval_of_zero_refits_every_round():
    assert due(kept(), T + minutes(1), interval=0).reason == "EveryRound"
    assert due(None, T, interval=0).reason == "EveryRound"


@pytest.mark.parametrize("age, reason", [(59, "Kept"), (60, "IntervalPassed"), (61, "IntervalPassed")])
def test_the_refit_interval(age, reason):
    assert due(kept(samples=40), T + minutes(age)).reason == reason


def test_with_a_phase_a_policy_refits_at_its_own_times_never_later_than_an_interval():
    phase = 600.0  # refit times: 00:10, 01:10, ... (T is midnight)
    assert refit.next_refit(T, HOUR, phase) == T + minutes(10)
    assert refit.next_refit(T + minutes(10), HOUR, phase) == T + minutes(70)  # strictly after the fit
    assert due(kept(), T + minutes(9), interval=HOUR) .reason == "Kept"
    assert refit_due(kept(), key=KEY, now=T + minutes(9), horizon_seconds=HOUR, interval_seconds=HOUR,
                     phase_seconds=phase).reason == "Kept"
    assert refit_due(kept(), key=KEY, now=T + minutes(10), horizon_seconds=HOUR, interval_seconds=HOUR,
                     phase_seconds=phase).reason == "IntervalPassed"


def test_phases_spread_the_refits_of_policies_fitted_together_over_the_interval():
    names = [f"shop/p{i}" for i in range(2000)]
    assert refit.phase_of("shop/web", HOUR) == refit.phase_of("shop/web", HOUR)
    waits = [(refit.next_refit(T, HOUR, refit.phase_of(n, HOUR)) - T).total_seconds() for n in names]
    assert all(0 < w <= HOUR for w in waits)
    per_quarter = np.histogram(waits, bins=4, range=(0, HOUR))[0]  # rounds every 15 minutes
    assert all(400 <= n <= 600 for n in per_quarter), per_quarter


def test_a_kept_forecast_that_no_longer_reaches_the_horizon_refits():
    # 16 samples: T .. T + 75 min, covering [now, now + 1 h) until now = T + 20 min
    assert due(kept(samples=16), T + minutes(20)).reason == "Kept"
    assert due(kept(samples=16), T + minutes(21)).reason == "HorizonNotCovered"


def test_a_sample_above_its_band_since_the_fit_refits():
    recent = pd.Series([90.0, 99.0, 100.0], index=pd.date_range(T, periods=3, freq="5min"))
    assert due(kept(), T + minutes(12), recent=recent).reason == "Kept"  # at the band is not above it
    above = recent.copy()
    above.iloc[1] = 100.5
    result = due(kept(), T + minutes(12), recent=above)
    assert (result.refit, result.reason) == (True, "ForecastBreached")
    assert "00:05 UTC" in result.message and "100.5" in result.message


def test_without_recent_samples_the_breach_is_not_judged():
    assert due(kept(), T + minutes(12)).reason == "Kept"


# -- the pieces -----------------------------------------------------------------------------
@pytest.mark.parametrize("setting, horizon, interval", [
    (3600, 3600, 3600), (3600, 86400, 3600), (3600, 600, 600), (0, 3600, 0), (-5, 3600, 0)])
def test_refit_interval_is_the_setting_capped_at_the_horizon(setting, horizon, interval):
    assert refit.refit_interval(setting, horizon) == interval


def test_fit_horizon_adds_the_interval_and_the_lag_fresh_data_may_have():
    assert refit.fit_horizon(3600, 3600, 300) == 3600 + 3600 + 4 * 300


def test_covers_counts_the_last_sample_before_the_horizon_ends():
    twelve = forecast_of([1.0] * 12)  # T .. T + 55 min
    assert refit.covers(twelve, T, HOUR)
    assert refit.covers(twelve, T - pd.Timedelta(seconds=1), HOUR)
    assert not refit.covers(twelve, T + pd.Timedelta(seconds=1), HOUR)
    assert not refit.covers(dataclasses.replace(twelve, upper_band=()), T, HOUR)  # no bands, nothing covered


def test_breach_matches_each_sample_to_the_band_of_its_time():
    bands = forecast_of([10.0, 20.0, 30.0])
    index = pd.date_range(T - minutes(10), periods=6, freq="5min")  # T-10 .. T+15
    # before the forecast (T-10, T-5) and past its end (T+15) are not judged
    assert refit.breach(bands, pd.Series([99.0, 99.0, 10.0, 20.0, 30.0, 99.0], index=index)) is None
    at, load, band = refit.breach(bands, pd.Series([0.0, 0.0, 10.0, 25.0, 31.0, 0.0], index=index))
    assert (at, load, band) == (T + minutes(5), 25.0, 20.0)
    # a scrape a little off the grid is matched to the nearest sample time; naive times are UTC
    jittered = pd.Series([20.5], index=pd.DatetimeIndex([(T + pd.Timedelta(seconds=310)).tz_localize(None)]))
    assert refit.breach(bands, jittered)[2] == 20.0


def test_window_reads_the_samples_of_the_horizon_from_now():
    upper = [10.0, 50.0] + [20.0] * 10 + [30.0, 5.0, 5.0, 5.0]  # T .. T + 75 min
    median = [u / 2 for u in upper]
    seen = refit.window(forecast_of(upper, median), T + minutes(10), HOUR)  # T+10 .. T+65
    assert seen.horizon_seconds == HOUR
    assert seen.upper_band == tuple(upper[2:14]) and seen.upper_bound == 30.0 and seen.predicted_peak == 15.0
    assert seen.peak_time == T + minutes(60)  # the highest point forecast of the window (its path)
    assert (seen.window_end, seen.model, seen.lower_bound) == (T - minutes(5), "test", 1.0)  # as fitted
    assert refit.window(forecast_of(upper, median), T, HOUR).upper_bound == 50.0


def test_window_peak_time_is_never_before_the_window():
    # bins of 3 samples; the highest bin starts at T and the window starts inside it
    f = forecast_of([1.0] * 15, path=[9.0, 1.0, 1.0, 1.0, 1.0], resolution=3 * STEP)
    seen = refit.window(f, T + minutes(5), 30 * 60)
    assert seen.path == (9.0, 1.0, 1.0) and seen.model_peak == 9.0
    assert seen.peak_time == T + minutes(5)


def test_window_refuses_a_window_outside_the_forecast():
    with pytest.raises(ValueError):
        refit.window(forecast_of([1.0] * 3), T + minutes(30), HOUR)


def test_a_real_fit_kept_for_an_hour_covers_the_horizon_until_the_interval_ends():
    index = pd.date_range(end=T - minutes(5), periods=14 * 288, freq="5min")
    hours = (index.hour + index.minute / 60).to_numpy()
    load = pd.Series(100 + 60 * np.sin(2 * np.pi * hours / 24)
                     + np.random.default_rng(3).normal(0, 3, len(index)), index=index)
    fit = forecast_series(load, refit.fit_horizon(HOUR, HOUR, STEP), now=T, resolution_seconds=600)
    assert fit.resolution_seconds == 600  # the bins of the policy's own horizon
    kept_fit = KeptForecast(fit, T, KEY)
    for age in (0, 15, 30, 45, 59):
        assert due(kept_fit, T + minutes(age)).reason == "Kept"
        assert len(refit.window(fit, T + minutes(age), HOUR).upper_band) == 12
    assert due(kept_fit, T + minutes(60)).reason == "IntervalPassed"
