import numpy as np
import pytest
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from scalegate.forecast.models import ErrorCorrected, HoltWinters, MSTLHolt, SeasonalNaive
from scalegate.forecast.series import ForecastError

pytestmark = pytest.mark.unit

SEASON = 24


def seasonal_series(days, noise=0.5, weekly=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(days * SEASON)
    daily = 10 * np.sin(2 * np.pi * t / SEASON)
    week = weekly * np.sin(2 * np.pi * t / (7 * SEASON))
    return 50 + daily + week + rng.normal(0, noise, len(t))


def test_seasonal_naive_repeats_the_last_season():
    y = np.arange(12.0)
    fitted = SeasonalNaive(4).fit(y)
    np.testing.assert_array_equal(fitted.forecast(6), [8, 9, 10, 11, 8, 9])
    # from origin 6 (having seen y[:6]) it repeats y[2:6]
    np.testing.assert_array_equal(fitted.rolling_forecasts(np.array([6]), 4)[0], [2, 3, 4, 5])


def test_holt_winters_forecast_matches_statsmodels():
    y = seasonal_series(6)
    fitted = HoltWinters(SEASON).fit(y)
    assert fitted.description == f"holt-winters(additive, damped, seasonal={SEASON})"
    reference = (
        ExponentialSmoothing(
            y, trend="add", damped_trend=True, seasonal="add", seasonal_periods=SEASON, initialization_method="heuristic"
        )
        .fit(method="L-BFGS-B", use_brute=False)
        .forecast(30)
    )
    np.testing.assert_allclose(fitted.forecast(30), reference, rtol=1e-9)


def test_holt_winters_one_step_rolling_forecasts_are_the_filtered_predictions():
    y = seasonal_series(6)
    model = ExponentialSmoothing(
        y, trend="add", damped_trend=True, seasonal="add", seasonal_periods=SEASON, initialization_method="heuristic"
    ).fit(method="L-BFGS-B", use_brute=False)
    fitted = HoltWinters(SEASON).fit(y)
    origins = np.arange(SEASON, len(y))
    # fittedvalues[o] is the one-step prediction made with y[:o]: the states are causal
    np.testing.assert_allclose(fitted.rolling_forecasts(origins, 1)[:, 0], model.fittedvalues[origins], rtol=1e-9)


def test_holt_winters_tracks_a_clean_season():
    y = seasonal_series(8, noise=0.1)
    fitted = HoltWinters(SEASON).fit(y[:-SEASON])
    np.testing.assert_allclose(fitted.forecast(SEASON), seasonal_series(8, noise=0)[-SEASON:], atol=1.0)


def test_holt_without_season_on_a_level_shift_follows_the_new_level():
    y = np.concatenate([np.full(100, 10.0), np.full(50, 30.0)]) + np.random.default_rng(1).normal(0, 0.2, 150)
    fitted = HoltWinters(None).fit(y)
    assert fitted.description == "holt(additive, damped)"
    assert abs(fitted.forecast(3)[0] - 30) < 2


def test_constant_series_fits_without_error():
    fitted = HoltWinters(SEASON).fit(np.full(5 * SEASON, 4.0))
    np.testing.assert_allclose(fitted.forecast(5), 4.0, atol=1e-6)


def test_too_short_for_two_seasons_is_refused():
    with pytest.raises(ForecastError) as err:
        HoltWinters(SEASON).fit(np.ones(2 * SEASON - 1))
    assert err.value.reason == "InsufficientData"


def test_mstl_uses_daily_and_weekly_seasons_and_leaves_the_holdout_out():
    y = seasonal_series(22, noise=0.3, weekly=8.0)
    holdout = 2 * SEASON
    fitted = MSTLHolt(SEASON, holdout=holdout).fit(y)
    assert fitted.first_origin == len(y) - holdout
    assert fitted.description.startswith(f"mstl(seasonal={SEASON},{7 * SEASON})")
    origins = np.arange(fitted.first_origin, len(y) - 4)
    forecasts = fitted.rolling_forecasts(origins, 4)
    truth = np.stack([seasonal_series(22, noise=0, weekly=8.0)[origins + j] for j in range(4)], axis=1)
    assert np.mean(np.abs(forecasts - truth)) < 1.5
    # changing the held-out data cannot change the decomposition's seasonal profile
    changed = y.copy()
    changed[-holdout:] += 100
    refit = MSTLHolt(SEASON, holdout=holdout).fit(changed)
    np.testing.assert_allclose(refit.profile, fitted.profile)
    # while the forecast from the end uses a decomposition of everything
    clean = seasonal_series(24, noise=0, weekly=8.0)[len(y) :]
    np.testing.assert_allclose(fitted.forecast(2 * SEASON), clean, atol=1.5)


def test_mstl_needs_two_weeks_and_a_day_plus_the_holdout():
    estimator = MSTLHolt(SEASON, holdout=SEASON)
    assert estimator.min_length() == 2 * 7 * SEASON + SEASON + SEASON
    with pytest.raises(ForecastError):
        estimator.fit(np.ones(estimator.min_length() - 1))


def seasonal_with_persistent_errors(days, phi, seed=0):
    """A clean daily season plus AR(1) noise: errors that persist with weight ``phi`` per step."""
    rng = np.random.default_rng(seed)
    noise = np.zeros(days * SEASON)
    shocks = rng.normal(0, 1, len(noise))
    for t in range(1, len(noise)):
        noise[t] = phi * noise[t - 1] + shocks[t]
    return seasonal_series(days, noise=0) + noise


def test_error_correction_learns_how_long_errors_persist():
    # Seasonal naive leaves the AR(1) noise in its errors: the weight of the
    # latest error h steps ahead should decay with the lead, as phi**h would.
    y = seasonal_with_persistent_errors(60, phi=0.8)
    corrected = ErrorCorrected(SeasonalNaive(SEASON).fit(y), y)
    beta = corrected.betas(4)
    assert corrected.description == f"seasonal-naive(seasonal={SEASON}) + error correction"
    assert np.all(np.diff(beta) < 0) and beta[0] > 0.3 and beta[-1] > 0
    # ...and, with weights learnt on the first half, forecasts the second half better than the model it corrects.
    half = len(y) // 2
    full = ErrorCorrected(SeasonalNaive(SEASON).fit(y), y)
    full._betas[4] = ErrorCorrected(SeasonalNaive(SEASON).fit(y[:half]), y[:half]).betas(4)
    origins = np.arange(half, len(y) - 4)
    truth = y[origins[:, None] + np.arange(4)[None, :]]
    plain_error = np.abs(truth - full.base.rolling_forecasts(origins, 4)).mean()
    corrected_error = np.abs(truth - full.rolling_forecasts(origins, 4)).mean()
    assert corrected_error < 0.9 * plain_error


def test_error_correction_is_causal():
    # A forecast from origin o must not change when data from o on changes
    # (apart from the few weights, which are estimated on the whole series).
    y = seasonal_with_persistent_errors(20, phi=0.5)
    changed = y.copy()
    changed[300:] += 40
    origin = np.array([300])
    base = SeasonalNaive(SEASON)
    a = ErrorCorrected(base.fit(y), y)
    b = ErrorCorrected(base.fit(changed), changed)
    b._betas[3] = a.betas(3)  # same weights: only the errors may differ
    np.testing.assert_allclose(a.rolling_forecasts(origin, 3), b.rolling_forecasts(origin, 3))


def test_error_correction_of_a_perfect_model_changes_nothing():
    y = np.tile(np.arange(SEASON, dtype=float), 10)
    corrected = ErrorCorrected(SeasonalNaive(SEASON).fit(y), y)
    np.testing.assert_array_equal(corrected.betas(5), np.zeros(5))
    np.testing.assert_array_equal(corrected.forecast(SEASON), y[-SEASON:])


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_error_correction_weights_do_not_depend_on_the_units(scale):
    # sums of squared errors would underflow or overflow at these scales
    y = seasonal_with_persistent_errors(10, phi=0.7)
    expected = ErrorCorrected(SeasonalNaive(SEASON).fit(y), y).betas(4)
    scaled = ErrorCorrected(SeasonalNaive(SEASON).fit(y * scale), y * scale)
    with np.errstate(all="raise"):
        np.testing.assert_allclose(scaled.betas(4), expected, rtol=1e-9)
        assert np.all(np.isfinite(scaled.forecast(4)))
