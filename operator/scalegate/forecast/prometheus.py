"""The one Prometheus client, for the forecaster and for `kubectl scalegate explain`:
auth (bearer token, basic auth), TLS (CA bundle), timeout and retries, range queries of
any length in chunks Prometheus accepts, and one PromQL query over a lookback window as
one regular load series.

Built on ``prometheus_api_client.PrometheusConnect.custom_query_range``. Every
way the answer can be unusable becomes a :class:`ForecastError` whose reason a
ScalingPolicy's status can carry: the server cannot be reached, is slow or refuses
access (``MetricsUnavailable``), the query is wrong or returns several series or
non-finite values (``InvalidData``), or there is too little continuous recent
data (``InsufficientData``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import numpy as np
import pandas as pd
import requests
import urllib3
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from .series import MIN_HISTORY_SECONDS, ForecastError, check_fresh, regularize

#: Prometheus refuses range queries of more than 11,000 points per series; stay below.
MAX_POINTS_PER_REQUEST = 10_000


@dataclass(frozen=True)
class PrometheusSettings:
    """How to reach Prometheus.

    Attributes
    ----------
    url : str
        Base URL, e.g. ``http://prometheus.monitoring:9090``.
    bearer_token : str, optional
        Sent as ``Authorization: Bearer ...`` (e.g. a ServiceAccount token).
    basic_auth : (str, str), optional
        Username and password.
    ca_file : str, optional
        PEM bundle used to verify the server's certificate.
    insecure_skip_verify : bool, default False
        Do not verify TLS certificates (test setups only).
    timeout_seconds : float, default 30
        Per request, both client side and as Prometheus' own query timeout.
    retries : int, default 1
        Retries on connection errors, timeouts and 502/503/504 before giving
        up; a fetch can take up to ``(retries + 1) * timeout_seconds`` (plus
        0.5 s backoff) per 10,000 points.
    """

    url: str
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    timeout_seconds: float = 30.0
    retries: int = 1

    @classmethod
    def of(cls, options: "PrometheusOptions") -> "PrometheusSettings":
        """From a component's settings (``scalegate.settings.ForecasterSettings``, which
        `scalegate forecast`, `scalegate forecaster` and `kubectl scalegate explain` all
        resolve from the same flags and environment), reading the token file once.

        Raises
        ------
        ValueError
            The token file cannot be read or is empty; the message names it.
        """
        token = None
        if options.prometheus_token_file:
            path = options.prometheus_token_file
            try:
                with open(path) as fh:
                    token = fh.read().strip()
            except OSError as err:
                raise ValueError(f"cannot read the Prometheus token file {path}: {err.strerror or err}") from err
            if not token:
                raise ValueError(f"the Prometheus token file {path} is empty")
        return cls(url=options.prometheus_url, bearer_token=token, ca_file=options.prometheus_ca_file,
                   insecure_skip_verify=bool(options.prometheus_insecure),
                   timeout_seconds=float(options.prometheus_timeout))


class PrometheusOptions(Protocol):
    """The Prometheus fields of a component's settings (see `PrometheusSettings.of`);
    read-only, so frozen settings dataclasses match."""

    @property
    def prometheus_url(self) -> str: ...
    @property
    def prometheus_token_file(self) -> str | None: ...
    @property
    def prometheus_ca_file(self) -> str | None: ...
    @property
    def prometheus_insecure(self) -> bool: ...
    @property
    def prometheus_timeout(self) -> float: ...


def connect(settings: PrometheusSettings) -> PrometheusConnect:
    """A ``PrometheusConnect`` configured from ``settings`` (auth, TLS, timeout, retries)."""
    session = requests.Session()
    if settings.insecure_skip_verify:
        session.verify = False
    elif settings.ca_file:
        session.verify = settings.ca_file
    headers = {"Authorization": f"Bearer {settings.bearer_token}"} if settings.bearer_token else None
    retry = Retry(
        total=settings.retries,
        backoff_factor=0.5,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "POST"}),
        raise_on_status=False,
    )
    return PrometheusConnect(
        url=settings.url.rstrip("/"),
        headers=headers,
        auth=tuple(settings.basic_auth) if settings.basic_auth else None,
        session=session,
        retry=retry,
        timeout=settings.timeout_seconds,
    )


class PrometheusSource:
    """Range queries: one regular load series per query (`fetch`), or every series as
    Prometheus answers (`query_range`).

    Parameters
    ----------
    settings : PrometheusSettings
    client : PrometheusConnect, optional
        Injected in tests; built from ``settings`` otherwise.
    """

    def __init__(self, settings: PrometheusSettings, client: PrometheusConnect | None = None):
        self.settings = settings
        self.client = client if client is not None else connect(settings)

    def fetch(
        self,
        query: str,
        *,
        lookback_seconds: int,
        step_seconds: int,
        end: datetime | None = None,
        min_history_seconds: float = MIN_HISTORY_SECONDS,
    ) -> pd.Series:
        """The query's values over ``[end - lookback, end]`` at ``step_seconds``.

        ``end`` defaults to now and is rounded down to a whole step, so that two
        calls within one step ask for the same points.

        Returns
        -------
        pandas.Series
            Regular (no gaps, short gaps interpolated), float, UTC DatetimeIndex.

        Raises
        ------
        ForecastError
            See the module docstring for the reasons.
        """
        if step_seconds <= 0 or lookback_seconds <= 0:
            raise ValueError("step_seconds and lookback_seconds must be positive")
        end_ts = (end or datetime.now(timezone.utc)).timestamp()
        end_ts = math.floor(end_ts / step_seconds) * step_seconds
        start_ts = end_ts - lookback_seconds
        results = self.query_range(query, start_ts, end_ts, step_seconds)
        series = _single_series(query, results)
        check_fresh(series.index[-1], pd.Timestamp(end_ts, unit="s", tz="UTC"), step_seconds)
        return regularize(series, step_seconds, min_history_seconds=min_history_seconds).values

    def query_range(self, query: str, start_ts: float, end_ts: float, step: int) -> list[dict]:
        """Every series of the query over ``[start_ts, end_ts]`` (Unix seconds) at ``step``
        seconds, as Prometheus answers (``[{"metric": {...}, "values": [[t, "v"], ...]}]``),
        fetched in chunks that Prometheus accepts and merged per label set.

        Raises
        ------
        ForecastError
            ``MetricsUnavailable`` (unreachable, slow, refused access, not Prometheus) or
            ``InvalidData`` (Prometheus rejected the query).
        """
        merged: dict[tuple, dict] = {}
        chunk = MAX_POINTS_PER_REQUEST * step
        chunk_start = start_ts
        while chunk_start <= end_ts:
            chunk_end = min(end_ts, chunk_start + chunk - step)
            for result in self._request(query, chunk_start, chunk_end, step):
                key = tuple(sorted(result.get("metric", {}).items()))
                merged.setdefault(key, {"metric": result.get("metric", {}), "values": []})
                merged[key]["values"].extend(result.get("values", []))
            chunk_start = chunk_end + step
        return list(merged.values())

    def _request(self, query: str, start_ts: float, end_ts: float, step: int) -> list[dict]:
        timeout = self.settings.timeout_seconds
        try:
            return self.client.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(start_ts, timezone.utc),
                end_time=datetime.fromtimestamp(end_ts, timezone.utc),
                step=str(int(step)),
                params={"timeout": f"{timeout:g}"},  # seconds; Prometheus refuses "0.5s"
            )
        except requests.exceptions.SSLError as exc:
            raise ForecastError(
                "MetricsUnavailable", f"TLS to Prometheus at {self.settings.url} failed (check the CA): {exc}"
            ) from exc
        except requests.exceptions.RequestException as exc:
            if _timed_out(exc):
                message = f"Prometheus at {self.settings.url} did not answer within {timeout:g}s"
            else:
                message = f"Prometheus at {self.settings.url} is unreachable: {_short(exc)}"
            raise ForecastError("MetricsUnavailable", message) from exc
        except PrometheusApiClientException as exc:
            raise _http_error(self.settings.url, str(exc)) from exc
        except (ValueError, KeyError) as exc:  # a 200 that is not Prometheus JSON
            raise ForecastError(
                "MetricsUnavailable", f"{self.settings.url} did not answer like Prometheus: {_short(exc)}"
            ) from exc


def _timed_out(exc: BaseException) -> bool:
    """True for a timeout, also when urllib3's retries wrapped it in a ConnectionError."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    # urllib3 files "connection refused" (NewConnectionError) under its timeout errors too
    return isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
        reason, urllib3.exceptions.NewConnectionError
    )


def _single_series(query: str, results: list[dict]) -> pd.Series:
    if not results:
        raise ForecastError(
            "InsufficientData",
            f"the query returned no series in the lookback window; check that {query!r} matches a metric",
        )
    if len(results) > 1:
        labels = ", ".join(_label_text(r.get("metric", {})) for r in results[:3])
        raise ForecastError(
            "InvalidData",
            f"the query returned {len(results)} series ({labels}{', ...' if len(results) > 3 else ''}); "
            "aggregate it to one, e.g. sum(...)",
        )
    pairs = results[0].get("values", [])
    if not pairs:
        raise ForecastError("InsufficientData", "the query's series has no samples in the lookback window")
    stamps = np.array([float(t) for t, _ in pairs])
    # Prometheus sends values as strings; "NaN", "+Inf" and "-Inf" parse as floats.
    values = np.array([float(v) for _, v in pairs])
    index = pd.to_datetime(stamps, unit="s", utc=True)
    series = pd.Series(values, index=index, name="value").sort_index()
    return series[~series.index.duplicated(keep="last")]


def _http_error(url: str, text: str) -> ForecastError:
    match = re.search(r"HTTP Status Code (\d+)", text)
    status = int(match.group(1)) if match else None
    detail = _prometheus_error_text(text)
    if status in (400, 422):
        return ForecastError("InvalidData", f"Prometheus rejected the query (HTTP {status}): {detail}")
    if status in (401, 403):
        return ForecastError(
            "MetricsUnavailable",
            f"Prometheus at {url} refused access (HTTP {status}); check the bearer token or basic auth",
        )
    return ForecastError("MetricsUnavailable", f"Prometheus at {url} answered HTTP {status}: {detail}")


def _prometheus_error_text(text: str) -> str:
    match = re.search(r'"error"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    return match.group(1) if match else _short(text)


def _label_text(metric: dict) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


def _short(value: object, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
