import time

import numpy as np
import pandas as pd
import pytest
from harness import load_dir

from scalegate.forecast import Forecast, ForecastError, forecast_series, load_csv
from scalegate.forecast.pipeline import ALL_MODELS, DEFAULT_MODELS
from scalegate.forecast.series import MAX_INTERPOLATED_GAP_STEPS

pytestmark = pytest.mark.unit

HOUR = 3600
DAY = 86400


def real(name: str, days: float, start_day: float = 0.0) -> pd.Series:
    series = load_csv(load_dir() / f"{name}.csv")
    start = series.index[0] + pd.Timedelta(days=start_day)
    return series[(series.index >= start) & (series.index < start + pd.Timedelta(days=days))]


def synthetic(days=4.0, step=300, level=100.0, amplitude=30.0, noise=5.0, seed=0) -> pd.Series:
    rng = np.random.default_rng(seed)
    n = int(days * DAY / step)
    index = pd.date_range("2024-03-01", periods=n, freq=f"{step}s", tz="UTC")
    phase = 2 * np.pi * np.arange(n) * step / DAY
    return pd.Series(level + amplitude * np.sin(phase) + rng.normal(0, noise, n), index=index)


def test_forecast_on_five_minute_web_traffic():
    series = real("nasa_http_jul95_5min", days=5)
    forecast = forecast_series(series, HOUR, 0.95)
    assert isinstance(forecast, Forecast)
    assert forecast.resolution_seconds == 600
    assert len(forecast.path) == 6
    assert forecast.lower_bound <= forecast.predicted_peak <= forecast.upper_bound
    assert forecast.upper_bound > max(forecast.path)  # bin means understate the 5-min peak
    first = series.index[-1] + pd.Timedelta(minutes=5)
    assert first <= forecast.peak_time < first + pd.Timedelta(hours=1)
    assert (forecast.window_start, forecast.window_end, forecast.points) == (series.index[0], series.index[-1], len(series))
    assert forecast.model in dict(forecast.candidates)
    assert {name.split("(")[0] for name, _ in forecast.candidates} >= {"holt-winters", "holt", "seasonal-naive"}
    assert 0 < forecast.backtest_error < 2
    assert 0.7 <= forecast.coverage <= 1.0
    assert forecast.backtest_metric == "MASE"
    assert forecast.calibration_scores > 300


def test_thirty_minute_data_models_at_its_own_step():
    forecast = forecast_series(real("nyc_taxi", days=6), HOUR, 0.95)
    assert forecast.resolution_seconds == 1800
    assert len(forecast.path) == 2
    assert forecast.model.startswith("holt-winters(additive, damped, seasonal=48)")


def test_upper_bound_holds_out_of_sample_on_a_real_series():
    series = real("nasa_http_jul95_5min", days=9)
    covered = []
    for hour in range(24):
        now = series.index[0] + pd.Timedelta(days=8, hours=hour)
        forecast = forecast_series(series, HOUR, 0.95, now=now, interval="peak")
        actual = series[(series.index >= now) & (series.index < now + pd.Timedelta(hours=1))].max()
        covered.append(actual <= forecast.upper_bound)
    assert np.mean(covered) >= 0.8  # 95% on average; one day is a small sample


def test_bound_covers_the_peak_of_a_noisy_daily_cycle():
    series = synthetic(days=5)
    history, future = series.iloc[:-12], series.iloc[-12:]
    forecast = forecast_series(history, HOUR, 0.95)
    truth = 100 + 30 * np.sin(2 * np.pi * ((np.arange(len(series)) * 300) % DAY) / DAY)[-12:].max()
    assert forecast.lower_bound < truth < forecast.upper_bound
    assert forecast.upper_bound >= future.max() - 5
    assert forecast.upper_bound - forecast.lower_bound < 40  # noise sd 5: not absurdly wide
    assert 0.85 <= forecast.coverage <= 1.0


def test_higher_confidence_gives_a_higher_bound():
    series = real("Twitter_volume_AMZN", days=5)
    assert forecast_series(series, HOUR, 0.99).upper_bound >= forecast_series(series, HOUR, 0.9).upper_bound


def test_pointwise_interval_bounds_each_sample_not_the_peak():
    series = real("nasa_http_jul95_5min", days=5)
    peak = forecast_series(series, HOUR, 0.95, interval="peak")
    pointwise = forecast_series(series, HOUR, 0.95)
    assert pointwise.interval == "pointwise"  # the default
    assert peak.interval == "peak" and peak.upper_band == ()
    assert pointwise.upper_bound < peak.upper_bound


def test_pointwise_upper_bound_is_the_top_of_a_per_sample_band():
    forecast = forecast_series(real("nasa_http_jul95_5min", days=5), HOUR, 0.95)
    assert len(forecast.upper_band) == 12  # one per 5-min sample of the hour
    assert forecast.upper_bound == pytest.approx(max(forecast.upper_band))
    per_sample = np.repeat(forecast.path, 2)
    assert np.all(np.asarray(forecast.upper_band) > per_sample)
    assert forecast.lower_bound <= forecast.predicted_peak <= forecast.upper_bound


def test_band_widens_with_the_lead_when_errors_do():
    # a random walk around a daily cycle: the further ahead, the less the last value says
    rng = np.random.default_rng(11)
    series = synthetic(days=6, noise=0.5, seed=11) + np.cumsum(rng.normal(0, 2.0, 6 * 288))
    forecast = forecast_series(series, HOUR, 0.95)
    widths = np.asarray(forecast.upper_band) - np.repeat(forecast.path, 2)
    assert widths[-3:].mean() > 1.5 * widths[:3].mean()


def test_pointwise_band_covers_its_share_of_samples_out_of_sample():
    series = synthetic(days=9, noise=5.0, seed=4)
    under = []
    for hour in range(0, 48, 2):
        now = series.index[0] + pd.Timedelta(days=7, hours=hour)
        forecast = forecast_series(series, HOUR, 0.95, now=now)
        actual = series[(series.index >= now) & (series.index < now + pd.Timedelta(hours=1))].to_numpy()
        under.extend(actual <= np.asarray(forecast.upper_band))
        assert 0.95 <= forecast.coverage <= 1.0  # the replayed share, nominally 0.975
    assert 0.95 <= np.mean(under) <= 1.0


def test_constant_series_gives_the_constant():
    index = pd.date_range("2024-01-01", periods=3 * 288, freq="300s", tz="UTC")
    forecast = forecast_series(pd.Series(42.0, index=index), HOUR, 0.95)
    assert forecast.upper_bound == pytest.approx(42.0)
    assert forecast.lower_bound == pytest.approx(42.0)
    assert forecast.predicted_peak == pytest.approx(42.0)
    assert forecast.backtest_error == 0.0


def test_level_shift_is_followed_within_hours():
    series = synthetic(days=4, noise=2.0)
    series.iloc[-72:] += 100  # the last six hours run 100 higher
    forecast = forecast_series(series, HOUR, 0.95)
    assert forecast.upper_bound > series.iloc[-12:].max() - 5


def test_later_samples_than_now_are_ignored():
    series = synthetic(days=4)
    now = series.index[-100]
    assert forecast_series(series, HOUR, 0.95, now=now) == forecast_series(series[series.index < now], HOUR, 0.95)


def test_stale_data_is_metrics_unavailable():
    series = synthetic(days=4)
    with pytest.raises(ForecastError) as err:
        forecast_series(series, HOUR, 0.95, now=series.index[-1] + pd.Timedelta(hours=1))
    assert err.value.reason == "MetricsUnavailable"


@pytest.mark.parametrize("late, stale", [(0, False), (1, True)])
def test_staleness_is_the_series_rule(late, stale):
    """The same boundary as the Prometheus source (series.check_fresh): the newest sample
    at most an interpolated gap and one step before now."""
    series = synthetic(days=4)
    now = series.index[-1] + pd.Timedelta(seconds=(MAX_INTERPOLATED_GAP_STEPS + 1) * 300 + late)
    if stale:
        with pytest.raises(ForecastError, match="MetricsUnavailable"):
            forecast_series(series, HOUR, 0.95, now=now)
    else:
        forecast_series(series, HOUR, 0.95, now=now)


def test_short_history_is_insufficient():
    with pytest.raises(ForecastError) as err:
        forecast_series(synthetic(days=1.5), HOUR, 0.95)
    assert err.value.reason == "InsufficientData"


def test_empty_series_is_insufficient():
    with pytest.raises(ForecastError) as err:
        forecast_series(pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=float), HOUR)
    assert err.value.reason == "InsufficientData"


def test_nan_is_invalid():
    series = synthetic(days=3)
    series.iloc[-5] = np.nan
    with pytest.raises(ForecastError) as err:
        forecast_series(series, HOUR)
    assert err.value.reason == "InvalidData"


def test_bursts_over_a_tiny_level_are_too_uncertain():
    rng = np.random.default_rng(5)
    index = pd.date_range("2024-01-01", periods=4 * 288, freq="300s", tz="UTC")
    bursts = np.where(rng.random(len(index)) < 0.03, rng.pareto(1.0, len(index)) * 50, 0.0)
    with pytest.raises(ForecastError) as err:
        forecast_series(pd.Series(1.0 + rng.random(len(index)) + bursts, index=index), HOUR, 0.95)
    assert err.value.reason == "TooUncertain"
    assert "wider than" in err.value.message


def test_mstl_is_opt_in_and_needs_three_weeks_and_a_day():
    def tried(days, models):
        forecast = forecast_series(
            real("vm_cpu_readings_month_aggregated_cpu_mem", days=days), HOUR, 0.95, models=models
        )
        return [name for name, _ in forecast.candidates]

    assert not any(name.startswith("mstl") for name in tried(22.1, DEFAULT_MODELS))
    with_mstl = tried(22.1, ALL_MODELS)
    assert any(name.startswith("mstl(seasonal=144,1008)") for name in with_mstl)
    assert len(with_mstl) == 8  # each model as it is and with its error correction
    assert not any(name.startswith("mstl") for name in tried(21.9, ALL_MODELS))


def test_models_can_be_narrowed_and_are_checked():
    forecast = forecast_series(synthetic(days=3), HOUR, 0.95, models=("holt",))
    assert forecast.model in ("holt(additive, damped)", "holt(additive, damped) + error correction")
    assert {name for name, _ in forecast.candidates} == {
        "holt(additive, damped)",
        "holt(additive, damped) + error correction",
    }
    with pytest.raises(ValueError):
        forecast_series(synthetic(days=3), HOUR, 0.95, models=("prophet",))


def test_fourteen_days_of_five_minute_data_is_fast():
    series = real("Twitter_volume_AMZN", days=14)
    forecast_series(series, HOUR, 0.95)
    started = time.process_time()
    for _ in range(3):
        forecast_series(series, HOUR, 0.95)
    # the operator's budget is ~120 ms per policy; leave room for a loaded CI machine
    assert (time.process_time() - started) / 3 < 0.4


def test_error_correction_wins_where_errors_persist():
    # A daily cycle plus slow AR(1) drift: yesterday's value misses by today's drift,
    # which the latest error tells. The corrected seasonal naive must be chosen,
    # its calibrated bound clearly tighter (pinball loss) than the plain one's.
    rng = np.random.default_rng(5)
    series = synthetic(days=5, noise=0.0)
    drift = np.zeros(len(series))
    for t in range(1, len(drift)):
        drift[t] = 0.98 * drift[t - 1] + rng.normal(0, 2.0)
    series = series + drift
    corrected = forecast_series(series, HOUR, 0.95, models=("seasonal-naive",))
    assert corrected.model == "seasonal-naive(seasonal=144) + error correction"
    losses = dict(corrected.candidates)
    assert losses[corrected.model] < 0.8 * losses["seasonal-naive(seasonal=144)"]


def test_partial_origins_let_a_day_long_horizon_see_the_last_hours():
    """A level shift six hours ago: with the newest origins (their day has not come yet) the
    calibration scores the hours since the shift, and the next half hour stays bounded above it."""
    series = synthetic(days=8, noise=2.0, amplitude=20.0)
    shifted = series.copy()
    shifted.iloc[-72:] += 150.0  # the last six hours
    horizon = DAY + 4 * 300
    blind = forecast_series(shifted, horizon, 0.95, resolution_seconds=1800)
    seeing = forecast_series(shifted, horizon, 0.95, resolution_seconds=1800, partial_origins=True)
    level = float(shifted.iloc[-12:].mean())
    assert max(seeing.upper_band[:6]) >= level  # the next half hour is bounded above the new level
    # the newest origins' known scores are counted (without them, the last day's origins are dropped)
    assert seeing.calibration_scores > blind.calibration_scores
    # on a series without a change, the newest origins change little
    calm = forecast_series(series, horizon, 0.95, resolution_seconds=1800, partial_origins=True)
    plain = forecast_series(series, horizon, 0.95, resolution_seconds=1800)
    assert calm.upper_bound == pytest.approx(plain.upper_bound, rel=0.1)


def test_partial_origins_need_the_pointwise_interval():
    with pytest.raises(ValueError):
        forecast_series(synthetic(days=4), DAY, 0.95, interval="peak", partial_origins=True)
