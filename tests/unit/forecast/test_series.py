import numpy as np
import pandas as pd
import pytest

from scalegate.forecast.series import (
    MAX_INTERPOLATED_GAP_STEPS,
    ForecastError,
    check_fresh,
    infer_step_seconds,
    load_csv,
    regularize,
)

pytestmark = pytest.mark.unit

STEP = 300


def make_series(days=3.0, step=STEP, start="2024-01-01", value=None, tz=None):
    n = int(days * 86400 / step)
    index = pd.date_range(start, periods=n, freq=f"{step}s", tz=tz)
    values = np.arange(n, dtype=float) if value is None else np.full(n, float(value))
    return pd.Series(values, index=index)


def test_load_csv_reads_naive_timestamps_as_utc_sorted_and_deduplicated(tmp_path):
    path = tmp_path / "load.csv"
    path.write_text(
        "timestamp,value\n2024-01-01 00:10:00,3\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,2\n2024-01-01 00:05:00,9\n"
    )
    series = load_csv(path)
    assert str(series.index.tz) == "UTC"
    assert list(series.index.strftime("%H:%M")) == ["00:00", "00:05", "00:10"]
    assert series.tolist() == [1.0, 9.0, 3.0]  # the later duplicate wins


def test_load_csv_refuses_other_headers(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("time,load\n2024-01-01,1\n")
    with pytest.raises(ForecastError) as err:
        load_csv(path)
    assert err.value.reason == "InvalidData"
    assert "timestamp,value" in err.value.message


def test_load_csv_refuses_unparsable_values(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,value\n2024-01-01 00:00:00,abc\n")
    with pytest.raises(ForecastError) as err:
        load_csv(path)
    assert err.value.reason == "InvalidData"


def test_unknown_reason_is_a_programming_error():
    with pytest.raises(ValueError):
        ForecastError("Oops", "nope")


def test_regular_series_passes_through_unchanged():
    series = make_series()
    regular = regularize(series)
    assert regular.step_seconds == STEP
    assert regular.interpolated_points == 0
    assert regular.dropped_before is None
    np.testing.assert_array_equal(regular.values.to_numpy(), series.to_numpy())
    assert str(regular.values.index.tz) == "UTC"


def test_empty_series_is_insufficient():
    with pytest.raises(ForecastError) as err:
        regularize(pd.Series([], index=pd.DatetimeIndex([]), dtype=float))
    assert err.value.reason == "InsufficientData"
    assert "empty" in err.value.message


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_non_finite_values_are_invalid(bad, word):
    series = make_series()
    series.iloc[100] = bad
    with pytest.raises(ForecastError) as err:
        regularize(series)
    assert err.value.reason == "InvalidData"
    assert word in err.value.message
    assert series.index[100].tz_localize("UTC").isoformat() in err.value.message


def test_under_two_days_is_insufficient():
    with pytest.raises(ForecastError) as err:
        regularize(make_series(days=1.9))
    assert err.value.reason == "InsufficientData"
    assert "two daily seasons" in err.value.message


def test_short_gaps_are_interpolated_linearly():
    series = make_series()
    gap = series.index[50 : 50 + MAX_INTERPOLATED_GAP_STEPS]
    regular = regularize(series.drop(gap))
    assert regular.interpolated_points == MAX_INTERPOLATED_GAP_STEPS
    # the values were a straight line, so interpolation restores them exactly
    np.testing.assert_allclose(regular.values.to_numpy(), series.to_numpy())


def test_long_gap_drops_the_history_before_it():
    series = make_series(days=5)
    cut = 288  # one day in
    holed = series.drop(series.index[cut : cut + MAX_INTERPOLATED_GAP_STEPS + 1])
    regular = regularize(holed)
    assert regular.dropped_before == series.index[cut + MAX_INTERPOLATED_GAP_STEPS + 1].tz_localize("UTC")
    assert regular.values.index[0] == regular.dropped_before
    assert regular.values.index[-1] == series.index[-1].tz_localize("UTC")


def test_long_gap_leaving_too_little_history_is_insufficient_and_says_where():
    series = make_series(days=3)
    cut = 2 * 288  # two days in: one day left after the gap
    holed = series.drop(series.index[cut : cut + 12])
    with pytest.raises(ForecastError) as err:
        regularize(holed)
    assert err.value.reason == "InsufficientData"
    assert "gap of" in err.value.message
    assert series.index[cut - 1].tz_localize("UTC").isoformat() in err.value.message


def test_jittered_timestamps_snap_to_the_grid():
    series = make_series()
    jitter = pd.to_timedelta(np.random.default_rng(0).integers(-20, 20, len(series)), unit="s")
    jittered = pd.Series(series.to_numpy(), index=series.index + jitter)
    jittered = jittered[~jittered.index.duplicated()].sort_index()
    regular = regularize(jittered, STEP)
    assert len(regular.values) == len(series)
    # the grid is the true one, not shifted by the first sample's jitter
    assert abs((regular.values.index[0] - series.index[0].tz_localize("UTC")).total_seconds()) <= 2


def test_timestamps_off_the_step_are_invalid():
    series = make_series()
    index = series.index.to_numpy().copy()
    index[10] = index[10] + np.timedelta64(150, "s")
    with pytest.raises(ForecastError) as err:
        regularize(pd.Series(series.to_numpy(), index=pd.DatetimeIndex(index)), STEP)
    assert err.value.reason == "InvalidData"


def test_constant_series_is_fine():
    regular = regularize(make_series(value=7.0))
    assert set(regular.values.unique()) == {7.0}


def test_step_inference_uses_the_median_spacing():
    series = make_series()
    assert infer_step_seconds(series.drop(series.index[5]).index) == STEP


def test_timezone_aware_input_is_converted_to_utc():
    series = make_series(tz="Europe/Berlin")
    regular = regularize(series)
    assert str(regular.values.index.tz) == "UTC"
    assert regular.values.index[0] == series.index[0]


def test_a_series_is_stale_once_its_newest_sample_is_older_than_an_interpolated_gap_and_a_step():
    newest = pd.Timestamp("2024-01-01 12:00", tz="UTC")
    limit = pd.Timedelta(seconds=(MAX_INTERPOLATED_GAP_STEPS + 1) * STEP)
    check_fresh(newest, newest + limit, STEP)  # the longest gap that is interpolated, and the next step: fresh
    with pytest.raises(ForecastError) as err:
        check_fresh(newest, newest + limit + pd.Timedelta(seconds=1), STEP)
    assert err.value.reason == "MetricsUnavailable"
    assert "no samples since 2024-01-01T12:00:00+00:00" in err.value.message
