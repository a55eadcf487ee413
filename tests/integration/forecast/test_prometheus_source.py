"""The Prometheus source against a real Prometheus serving a recorded series."""

import socket

import numpy as np
import pandas as pd
import pytest
from harness import load_dir
from prometheus_harness import PrometheusHarness, binaries_available

from scalegate.forecast import ForecastError, forecast_series, load_csv
from scalegate.forecast.prometheus import PrometheusSettings, PrometheusSource

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not binaries_available(), reason="needs the prometheus and promtool binaries (apt-get install prometheus)"
    ),
]

STEP = 300
FOURTEEN_DAYS = 14 * 86400


@pytest.fixture(scope="module")
def recording() -> pd.Series:
    return load_csv(load_dir() / "nasa_http_jul95_5min.csv").iloc[: 14 * 288]


@pytest.fixture(scope="module")
def prometheus(recording):
    with PrometheusHarness(recording) as prom:
        yield prom


def source(url, **settings) -> PrometheusSource:
    return PrometheusSource(PrometheusSettings(url, timeout_seconds=settings.pop("timeout_seconds", 10), **settings))


def test_fourteen_days_come_back_exactly(prometheus):
    stored = prometheus.shifted
    # At the stored end, not now: a 5-minute boundary may have passed since the backfill.
    series = source(prometheus.url).fetch(prometheus.query, lookback_seconds=FOURTEEN_DAYS, step_seconds=STEP,
                                          end=stored.index[-1].to_pydatetime())
    assert series.index[-1] == stored.index[-1]
    assert len(series) == len(stored)
    np.testing.assert_array_equal(series.to_numpy(), stored.to_numpy())


def test_aggregated_query_over_the_backfill_feeds_a_forecast(prometheus):
    query = f"sum({prometheus.query})"
    series = source(prometheus.url).fetch(query, lookback_seconds=FOURTEEN_DAYS, step_seconds=STEP)
    forecast = forecast_series(series, 3600, 0.95)
    assert forecast.points == len(series)
    assert forecast.lower_bound <= forecast.predicted_peak <= forecast.upper_bound
    assert forecast.resolution_seconds == 600


def test_coarser_step_is_served_by_prometheus(prometheus):
    series = source(prometheus.url).fetch(prometheus.query, lookback_seconds=3 * 86400, step_seconds=900)
    assert (series.index[1] - series.index[0]).total_seconds() == 900


def test_unknown_metric_is_insufficient_data(prometheus):
    with pytest.raises(ForecastError) as err:
        source(prometheus.url).fetch("no_such_metric_total", lookback_seconds=FOURTEEN_DAYS, step_seconds=STEP)
    assert err.value.reason == "InsufficientData"


def test_bad_promql_is_invalid_with_prometheus_words(prometheus):
    with pytest.raises(ForecastError) as err:
        source(prometheus.url).fetch("sum(rate(", lookback_seconds=FOURTEEN_DAYS, step_seconds=STEP)
    assert err.value.reason == "InvalidData"
    assert "parse error" in err.value.message


def test_two_series_are_invalid(prometheus):
    query = f'{prometheus.query} or label_replace({prometheus.query}, "copy", "1", "", "")'
    with pytest.raises(ForecastError) as err:
        source(prometheus.url).fetch(query, lookback_seconds=FOURTEEN_DAYS, step_seconds=STEP)
    assert err.value.reason == "InvalidData"
    assert "2 series" in err.value.message


def test_hung_server_times_out_as_metrics_unavailable():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts connections into the backlog, never answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(ForecastError) as err:
            source(url, timeout_seconds=0.5, retries=0).fetch("up", lookback_seconds=86400, step_seconds=STEP)
    assert err.value.reason == "MetricsUnavailable"
    assert "did not answer within 0.5s" in err.value.message


def test_unreachable_prometheus_is_metrics_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ForecastError) as err:
            source(f"http://127.0.0.1:{port}", retries=0).fetch("up", lookback_seconds=86400, step_seconds=STEP)
    assert err.value.reason == "MetricsUnavailable"
    assert "unreachable" in err.value.message


def test_long_gap_in_recent_data_is_insufficient(recording):
    holed = recording.drop(recording.index[-432:-408])  # two hours missing, 1.5 days before the end
    with PrometheusHarness(holed) as prom:
        with pytest.raises(ForecastError) as err:
            source(prom.url).fetch(prom.query, lookback_seconds=FOURTEEN_DAYS, step_seconds=STEP)
    assert err.value.reason == "InsufficientData"
    assert "gap of" in err.value.message


def test_data_that_stopped_an_hour_ago_is_metrics_unavailable(recording):
    an_hour_ago = pd.Timestamp.now(tz="UTC").floor("300s") - pd.Timedelta(hours=1)
    with PrometheusHarness(recording, end=an_hour_ago) as prom:
        with pytest.raises(ForecastError) as err:
            source(prom.url).fetch(prom.query, lookback_seconds=FOURTEEN_DAYS, step_seconds=STEP)
    assert err.value.reason == "MetricsUnavailable"
    assert "no samples since" in err.value.message


def test_harness_stops_prometheus_and_cleans_up(recording):
    with PrometheusHarness(recording.iloc[-600:]) as prom:
        process, workdir = prom._server.process, prom._workdir
        assert process.poll() is None and workdir.exists()
    assert process.returncode == 0  # a clean SIGTERM shutdown
    assert not workdir.exists()
