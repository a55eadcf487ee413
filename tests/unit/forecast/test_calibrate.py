import numpy as np
import pytest

from scalegate.forecast.calibrate import (
    MAX_RELATIVE_WIDTH,
    Calibration,
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
    scores = np.random.default_rng(0).normal(size=(400, 12))
    result = calibrate(scores, 0.95, "pointwise", outcome_lag=4, horizon_origins=4)
    assert result.scores == 4800
    assert result.upper_offset.shape == result.lower_offset.shape == (12,)
    assert np.mean(result.upper_offset) == pytest.approx(1.96, abs=0.15)
    assert np.mean(result.lower_offset) == pytest.approx(-1.96, abs=0.15)
    assert np.all(result.lower_offset <= result.median_offset) and np.all(result.median_offset <= result.upper_offset)
    assert 0.95 <= result.coverage <= 1.0  # nominally 0.975 of the samples


def growing_errors(origins=2000, leads=12, seed=1):
    """Scores whose spread grows with the lead: sd 1 at lead 0 up to 4 at the last."""
    sd = np.linspace(1.0, 4.0, leads)
    return np.random.default_rng(seed).normal(size=(origins, leads)) * sd, sd


def test_per_lead_quantiles_follow_errors_that_grow_with_the_lead():
    scores, sd = growing_errors()
    per_lead = conformal_quantile(scores, 0.975, per_lead=True)
    assert per_lead.shape == (12,)
    for lead in range(12):
        assert per_lead[lead] == conformal_quantile(scores[:, lead], 0.975)  # each lead on its own scores
    assert per_lead == pytest.approx(1.96 * sd, rel=0.12)
    assert np.all(np.diff(per_lead[::3]) > 0)
    # one quantile of all leads pooled: too wide for the first lead, too narrow for the last
    pooled = conformal_quantile(scores, 0.975)
    assert per_lead[0] < pooled < per_lead[-1]


def test_per_lead_bounds_cover_every_lead_out_of_sample():
    scores, _ = growing_errors(origins=4000)
    past, future = scores[:2000], scores[2000:]
    per_lead = np.mean(future <= conformal_quantile(past, 0.975, per_lead=True), axis=0)
    pooled = np.mean(future <= conformal_quantile(past, 0.975), axis=0)
    assert np.all(np.abs(per_lead - 0.975) < 0.015)
    assert pooled[0] > 0.99 and pooled[-1] < 0.95  # what pooling did


def test_sequential_coverage_per_lead_is_close_to_the_level():
    scores, _ = growing_errors(origins=3000)
    coverage, evaluated = sequential_coverage(scores, 4, 0.975, every=4, max_evaluations=500, per_lead=True)
    assert evaluated == 500
    assert 0.96 <= coverage <= 0.99


def test_per_lead_quantiles_need_enough_origins():
    with pytest.raises(ForecastError) as err:
        conformal_quantile(np.zeros((38, 12)), 0.975, per_lead=True)  # 39 per lead for 97.5%
    assert err.value.reason == "InsufficientData"
    assert conformal_quantile(np.zeros((39, 12)), 0.975, per_lead=True).shape == (12,)


def test_pinball_loss_takes_one_offset_per_lead():
    scores, _ = growing_errors()
    per_lead = conformal_quantile(scores, 0.975, per_lead=True)
    assert pinball_loss(scores, per_lead, 0.975) < pinball_loss(scores, conformal_quantile(scores, 0.975), 0.975)


def test_bounds_of_the_peak_from_a_band_and_from_peak_offsets():
    band = Calibration(np.array([-1.0, -2.0, -3.0]), np.zeros(3), np.array([1.0, 2.0, 5.0]), 0.97, 30)
    # the highest point of each edge of the band
    assert band.bounds(np.array([10.0, 12.0, 8.0])) == (10.0, 12.0, 14.0)
    peak = Calibration(-1.0, 0.5, 3.0, 0.95, 10)
    assert peak.bounds(np.array([10.0, 12.0, 8.0])) == (11.0, 12.5, 15.0)


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


def test_a_score_not_known_yet_is_left_out_of_its_leads_quantile():
    rng = np.random.default_rng(3)
    scores = rng.normal(0, 1, (60, 3))
    scores[-20:, 2] = np.nan  # the newest origins' third lead has not come yet
    scores[-5:, 1] = np.nan
    upper = conformal_quantile(scores, 0.9, per_lead=True)
    for lead in range(3):
        known = scores[~np.isnan(scores[:, lead]), lead]
        assert upper[lead] == conformal_quantile(known, 0.9)
    assert np.isfinite(pinball_loss(scores, upper, 0.9))
    conformal_quantile(scores[:, :2], 0.98, per_lead=True)  # 60 and 55 known scores bound 98%
    with pytest.raises(ForecastError) as err:  # the third lead's 40 do not (41 needed)
        conformal_quantile(scores, 0.98, per_lead=True)
    assert err.value.reason == "InsufficientData"


def test_calibration_with_scores_not_known_yet_measures_coverage_on_complete_origins():
    rng = np.random.default_rng(4)
    scores = rng.normal(0, 1, (200, 4))
    partial = np.vstack([scores, np.where(np.arange(4) < 2, 5.0, np.nan) * np.ones((3, 4))])
    full, with_partial = calibrate(scores, 0.9, "pointwise", 4, 4), calibrate(partial, 0.9, "pointwise", 4, 4)
    assert with_partial.coverage == full.coverage  # the three partial origins are not evaluated
    assert with_partial.scores == full.scores + 6  # but their known scores count
    assert np.all(with_partial.upper_offset[:2] >= full.upper_offset[:2])
    assert np.all(with_partial.upper_offset[2:] == full.upper_offset[2:])
