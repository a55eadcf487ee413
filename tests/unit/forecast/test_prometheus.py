from datetime import datetime, timezone

import numpy as np
import pytest
import requests
import urllib3
from prometheus_api_client import PrometheusApiClientException

from scalegate.forecast.prometheus import MAX_POINTS_PER_REQUEST, PrometheusSettings, PrometheusSource, connect
from scalegate.forecast.series import MAX_INTERPOLATED_GAP_STEPS, ForecastError

pytestmark = pytest.mark.unit

STEP = 300
END = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
LOOKBACK = 3 * 86400


def matrix(values, end=END, step=STEP, metric=None):
    """A query_range result with one series ending at ``end``."""
    end_ts = end.timestamp()
    stamps = end_ts - step * np.arange(len(values))[::-1]
    return [{"metric": metric or {}, "values": [[float(t), str(v)] for t, v in zip(stamps, values, strict=True)]}]


@pytest.fixture
def client(mocker):
    return mocker.Mock(name="PrometheusConnect")


def source(client, **settings):
    return PrometheusSource(PrometheusSettings("http://prom:9090", **settings), client=client)


def fetch(src, **kwargs):
    return src.fetch("sum(rate(x[5m]))", lookback_seconds=LOOKBACK, step_seconds=STEP, end=END, **kwargs)


def test_one_series_becomes_a_regular_float_series(client):
    n = LOOKBACK // STEP + 1
    client.custom_query_range.return_value = matrix(np.arange(n) % 17)
    series = fetch(source(client, timeout_seconds=7))
    assert len(series) == n
    assert series.index[-1] == END
    assert str(series.index.tz) == "UTC"
    assert series.dtype == float
    call = client.custom_query_range.call_args
    assert call.args[0] == "sum(rate(x[5m]))"
    assert call.kwargs["step"] == "300"
    assert call.kwargs["end_time"] == END
    assert (call.kwargs["end_time"] - call.kwargs["start_time"]).total_seconds() == LOOKBACK
    assert call.kwargs["params"] == {"timeout": "7"}


def test_end_is_rounded_down_to_a_whole_step(client):
    client.custom_query_range.return_value = matrix(np.ones(LOOKBACK // STEP))
    source(client).fetch("q", lookback_seconds=LOOKBACK, step_seconds=STEP, end=END.replace(minute=3))
    assert client.custom_query_range.call_args.kwargs["end_time"] == END


def test_long_ranges_are_fetched_in_chunks_and_merged(client):
    step = 60
    lookback = 15_000 * step
    stamps = END.timestamp() - step * np.arange(15_001)[::-1]

    def answer(query, start_time, end_time, step, params):
        lo, hi = start_time.timestamp(), end_time.timestamp()
        chosen = stamps[(stamps >= lo) & (stamps <= hi)]
        return [{"metric": {}, "values": [[t, "1"] for t in chosen]}]

    client.custom_query_range.side_effect = answer
    series = source(client).fetch("q", lookback_seconds=lookback, step_seconds=step, end=END)
    assert client.custom_query_range.call_count == 2
    for call in client.custom_query_range.call_args_list:
        span = (call.kwargs["end_time"] - call.kwargs["start_time"]).total_seconds()
        assert span / step + 1 <= MAX_POINTS_PER_REQUEST
    assert len(series) == 15_001


def test_no_series_is_insufficient_data(client):
    client.custom_query_range.return_value = []
    with pytest.raises(ForecastError) as err:
        fetch(source(client))
    assert err.value.reason == "InsufficientData"
    assert "no series" in err.value.message


def test_several_series_are_invalid_and_named(client):
    client.custom_query_range.return_value = matrix([1] * 900, metric={"pod": "a"}) + matrix([1] * 900, metric={"pod": "b"})
    with pytest.raises(ForecastError) as err:
        fetch(source(client))
    assert err.value.reason == "InvalidData"
    assert "2 series" in err.value.message and 'pod="a"' in err.value.message and "sum(" in err.value.message


@pytest.mark.parametrize("bad", ["NaN", "+Inf", "-Inf"])
def test_non_finite_values_are_invalid(client, bad):
    values = ["1"] * 900
    values[400] = bad
    client.custom_query_range.return_value = matrix(values)
    with pytest.raises(ForecastError) as err:
        fetch(source(client))
    assert err.value.reason == "InvalidData"


def test_short_gaps_are_filled(client):
    result = matrix(np.ones(LOOKBACK // STEP + 1))
    del result[0]["values"][100:102]
    client.custom_query_range.return_value = result
    assert len(fetch(source(client))) == LOOKBACK // STEP + 1


def test_a_long_gap_leaving_under_two_days_is_insufficient(client):
    result = matrix(np.ones(LOOKBACK // STEP + 1))
    del result[0]["values"][-400:-380]  # 100 minutes missing, 1.3 days before the end
    client.custom_query_range.return_value = result
    with pytest.raises(ForecastError) as err:
        fetch(source(client))
    assert err.value.reason == "InsufficientData"
    assert "gap of" in err.value.message


def test_samples_stopping_before_the_end_are_metrics_unavailable(client):
    result = matrix(np.ones(LOOKBACK // STEP + 1))
    del result[0]["values"][-12:]  # nothing for the last hour
    client.custom_query_range.return_value = result
    with pytest.raises(ForecastError) as err:
        fetch(source(client))
    assert err.value.reason == "MetricsUnavailable"
    assert "no samples since" in err.value.message


@pytest.mark.parametrize("missing, stale", [(MAX_INTERPOLATED_GAP_STEPS + 1, False),
                                            (MAX_INTERPOLATED_GAP_STEPS + 2, True)])
def test_staleness_is_the_series_rule(client, missing, stale):
    """The same boundary as `forecast_series` (series.check_fresh): the newest sample at
    most an interpolated gap and one step before the end."""
    result = matrix(np.ones(LOOKBACK // STEP + 1))
    del result[0]["values"][-missing:]
    client.custom_query_range.return_value = result
    if stale:
        with pytest.raises(ForecastError, match="MetricsUnavailable"):
            fetch(source(client))
    else:
        assert len(fetch(source(client))) == LOOKBACK // STEP + 1 - missing


def test_timeout_is_metrics_unavailable(client):
    client.custom_query_range.side_effect = requests.exceptions.ReadTimeout("read timed out")
    with pytest.raises(ForecastError) as err:
        fetch(source(client, timeout_seconds=5))
    assert err.value.reason == "MetricsUnavailable"
    assert "within 5s" in err.value.message


def test_timeout_wrapped_by_retries_is_still_a_timeout(client):
    wrapped = urllib3.exceptions.MaxRetryError(None, "/api/v1/query_range", urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"))
    client.custom_query_range.side_effect = requests.exceptions.ConnectionError(wrapped)
    with pytest.raises(ForecastError) as err:
        fetch(source(client, timeout_seconds=5))
    assert "did not answer within 5s" in err.value.message


def test_unreachable_is_metrics_unavailable(client):
    client.custom_query_range.side_effect = requests.exceptions.ConnectionError("connection refused")
    with pytest.raises(ForecastError) as err:
        fetch(source(client))
    assert err.value.reason == "MetricsUnavailable"
    assert "unreachable" in err.value.message and "http://prom:9090" in err.value.message


def test_tls_failure_points_at_the_ca(client):
    client.custom_query_range.side_effect = requests.exceptions.SSLError("certificate verify failed")
    with pytest.raises(ForecastError) as err:
        fetch(source(client))
    assert err.value.reason == "MetricsUnavailable"
    assert "CA" in err.value.message


@pytest.mark.parametrize(
    "status, reason, words",
    [
        (400, "InvalidData", "parse error"),
        (422, "InvalidData", "parse error"),
        (401, "MetricsUnavailable", "bearer token"),
        (403, "MetricsUnavailable", "bearer token"),
        (503, "MetricsUnavailable", "HTTP 503"),
    ],
)
def test_http_errors(client, status, reason, words):
    body = b'{"status":"error","errorType":"bad_data","error":"1:6: parse error: unclosed left parenthesis"}'
    client.custom_query_range.side_effect = PrometheusApiClientException(f"HTTP Status Code {status} ({body!r})")
    with pytest.raises(ForecastError) as err:
        fetch(source(client))
    assert err.value.reason == reason
    assert words in err.value.message


def test_not_prometheus_json_is_metrics_unavailable(client):
    client.custom_query_range.side_effect = KeyError("data")
    with pytest.raises(ForecastError) as err:
        fetch(source(client))
    assert err.value.reason == "MetricsUnavailable"


def test_connect_applies_auth_and_tls_settings():
    token = connect(PrometheusSettings("https://prom/", bearer_token="t0k", ca_file="/etc/ca.pem", timeout_seconds=3))
    assert token.headers == {"Authorization": "Bearer t0k"}
    assert token._session.verify == "/etc/ca.pem"
    assert token.url == "https://prom"
    assert token._timeout == 3
    basic = connect(PrometheusSettings("https://prom", basic_auth=("u", "p"), insecure_skip_verify=True))
    assert basic.auth == ("u", "p")
    assert basic.headers is None
    assert basic._session.verify is False
    plain = connect(PrometheusSettings("http://prom"))
    assert plain._session.verify is True
    assert plain.auth is None


def test_bearer_token_is_sent_on_the_wire(mocker):
    settings = PrometheusSettings("http://prom:9090", bearer_token="secret", timeout_seconds=2)
    client = connect(settings)
    response = mocker.Mock(status_code=200)
    response.json.return_value = {"data": {"result": matrix(np.ones(LOOKBACK // STEP + 1))}}
    request = mocker.patch.object(client._session, "request", return_value=response)
    PrometheusSource(settings, client=client).fetch("q", lookback_seconds=LOOKBACK, step_seconds=STEP, end=END)
    sent = request.call_args.kwargs
    assert sent["headers"] == {"Authorization": "Bearer secret"}
    assert sent["timeout"] == 2
    assert sent["url"] == "http://prom:9090/api/v1/query_range"
