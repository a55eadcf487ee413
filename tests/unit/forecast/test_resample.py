import numpy as np
import pytest

from scalegate.forecast.resample import bin_means, choose_resolution, season_length

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "horizon, step, expected",
    [
        (3600, 300, 600),  # 1 h on 5-min data: six 10-min bins
        (3600, 1800, 1800),  # never finer than the data
        (3600, 60, 600),
        (7200, 300, 1200),
        (86400, 300, 3600),  # long horizons stop at hourly bins (a day keeps 24)
        (600, 300, 300),
        (7200, 420, 840),  # 7-min data: no multiple divides a day, so the largest that fits
    ],
)
def test_resolution_depends_only_on_horizon_and_step(horizon, step, expected):
    assert choose_resolution(horizon, step) == expected


def test_resolution_rejects_nonsense():
    with pytest.raises(ValueError):
        choose_resolution(0, 300)


def test_bin_means_align_to_the_end_and_drop_the_ragged_start():
    values = np.arange(10, dtype=float)
    np.testing.assert_array_equal(bin_means(values, 3), [2.0, 5.0, 8.0])  # (1,2,3) (4,5,6) (7,8,9)
    np.testing.assert_array_equal(bin_means(values, 1), values)


def test_season_length():
    assert season_length(900) == 96
    assert season_length(1800) == 48
    assert season_length(420) == 206  # rounded when the bin does not divide a day
