import numpy as np
import pytest

from scalegate.forecast.calibrate import (
    MAX_RELATIVE_WIDTH,
    bound_levels,
    calibrate,
    check_certainty,
    conformal_quantile,
    min_scores,
    pinball_loss,
    sequential_coverage,
)
from scalegate.forecast.series import ForecastError

pytestmark = pytest.mark.unit


def test_conformal_quantile_takes_the_finite_sample_rank():
    scores = np.arange(1.0, 20.0)  # 19 scores
    # ceil((19 + 1) * 0.95) = 19th smallest
    assert conformal_quantile(scores, 0.95) == 19.0
    assert conformal_quantile(scores, 0.5) == 10.0
    # floor((19 + 1) * 0.05) = 1st smallest
    assert conformal_quantile(scores, 0.05) == 1.0


def test_too_few_scores_for_the_level_is_insufficient_data():
    assert min_scores(0.95) == 19
    with pytest.raises(ForecastError) as err:
        conformal_quantile(np.arange(18.0), 0.95)
    assert err.value.reason == "InsufficientData"
    with pytest.raises(ForecastError):
        conformal_quantile(np.arange(18.0), 0.05)


def test_bound_levels():
    assert bound_levels(0.95, "peak") == pytest.approx((0.05, 0.95))
    assert bound_levels(0.95, "pointwise") == pytest.approx((0.025, 0.975))
    with pytest.raises(ValueError):
        bound_levels(1.0)
    with pytest.raises(ValueError):
        bound_levels(0.9, "sometimes")


def test_pinball_loss_prefers_the_true_quantile():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=5000)
    at_quantile = pinball_loss(scores, np.quantile(scores, 0.9), 0.9)
    assert at_quantile < pinball_loss(scores, np.quantile(scores, 0.9) + 0.5, 0.9)
    assert at_quantile < pinball_loss(scores, np.quantile(scores, 0.9) - 0.5, 0.9)


def test_sequential_coverage_is_close_to_the_level_on_exchangeable_scores():
    rng = np.random.default_rng(7)
    scores = rng.standard_t(3, size=3000)
    coverage, evaluated = sequential_coverage(scores, outcome_lag=4, level=0.9, every=1, max_evaluations=2000)
    assert evaluated == 2000
    assert 0.87 <= coverage <= 0.93


def test_sequential_coverage_reveals_a_shift_the_past_did_not_see():
    scores = np.concatenate([np.zeros(1000), np.full(30, 5.0)])  # the last 30 are new
    coverage, _ = sequential_coverage(scores, outcome_lag=1, level=0.95, every=1, max_evaluations=50)
    assert coverage < 0.5


def test_sequential_coverage_without_enough_scores_is_nan():
    coverage, evaluated = sequential_coverage(np.zeros(10), outcome_lag=4, level=0.95, every=4)
    assert np.isnan(coverage) and evaluated == 0


def test_calibration_offsets_are_ordered():
    scores = np.random.default_rng(0).normal(2.0, 1.0, 400)
    result = calibrate(scores, 0.95, "peak", outcome_lag=4, horizon_origins=4)
    assert result.lower_offset < result.median_offset < result.upper_offset
    assert result.median_offset == pytest.approx(2.0, abs=0.2)
    assert result.scores == 400
    assert 0.8 <= result.coverage <= 1.0


def test_pointwise_scores_use_every_point():
    scores = np.random.default_rng(0).normal(size=(100, 12))
    result = calibrate(scores, 0.95, "pointwise", outcome_lag=4, horizon_origins=4)
    assert result.scores == 1200
    assert result.upper_offset == pytest.approx(1.96, abs=0.25)


def test_wide_interval_is_too_uncertain():
    check_certainty(100.0, 80.0, 80.0 + MAX_RELATIVE_WIDTH * 100.0, 0.95)  # exactly at the limit: fine
    with pytest.raises(ForecastError) as err:
        check_certainty(100.0, 0.0, MAX_RELATIVE_WIDTH * 100.0 + 1, 0.95)
    assert err.value.reason == "TooUncertain"
    assert "95%" in err.value.message


def test_zero_width_is_certain_even_at_zero_level():
    check_certainty(0.0, 0.0, 0.0, 0.95)
    with pytest.raises(ForecastError):
        check_certainty(0.0, 0.0, 1.0, 0.95)
