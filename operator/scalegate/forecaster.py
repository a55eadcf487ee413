"""The forecaster: for each ScalingPolicy, read its load from Prometheus, forecast it,
size replicas for the upper bound, and propose the change with its evidence.

Fails closed: on any doubt (no data, too little, too uncertain, fit failed) it makes no
proposal and says why on the policy (ForecastReady=False), in a metric and in the log.
The pure parts (forecasting and sizing, building the proposal, checking past forecasts) are plain
functions; I/O goes through `Kube` and `PrometheusSource`.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from . import metrics
from .conditions import set_condition
from .forecast import Forecast, forecast_series
from .forecast.series import ForecastError
from .forecast.sizing import Sizing, size_replicas
from .kube import Conflict, Kube, KubeError, NoScaleSubresource, NotFound
from .model import (
    API_VERSION,
    POLICY_KIND,
    POLICY_LABEL,
    PROPOSAL_KIND,
    PROPOSED_BY,
    Evidence,
    ForecastSpec,
    InvalidObject,
    Policy,
    format_time,
)

log = logging.getLogger("scalegate.forecaster")

READY = "ForecastReady"
FORECAST_BY = "scalegate.io/forecast-by"  # informational: the forecaster that computed a GitOps manifest


@dataclass(frozen=True)
class SizedForecast:
    """What one forecast round found for one policy: the forecast, and the replicas it sizes."""

    forecast: Forecast
    sizing: Sizing


@dataclass
class RoundResult:
    namespace: str
    policy: str
    outcome: str  # "proposed" | "unchanged" | "failed" | "skipped"
    reason: str
    message: str
    proposal: dict | None = None
    seconds: float = 0.0


# -- pure ----------------------------------------------------------------------------
def forecast_policy(series, policy: Policy, current_replicas: int, now: dt.datetime) -> SizedForecast:
    """Forecast `series` over the policy's horizon and size replicas for the upper bound.
    Pure and picklable, so it can run in a worker process. Raises ForecastError."""
    spec = policy.forecast
    assert spec is not None
    forecast = forecast_series(series, horizon_seconds=spec.horizon_seconds, confidence=spec.confidence, now=now)
    sizing = size_replicas(forecast.upper_bound, spec.capacity_per_replica, current_replicas,
                           bounds=policy.bounds, confidence=spec.confidence, peak_time=forecast.peak_time)
    return SizedForecast(forecast=forecast, sizing=sizing)


def proposal_name(policy: str, now: dt.datetime) -> str:
    """One name per policy and minute: re-running a round cannot propose twice."""
    stamp = now.astimezone(dt.timezone.utc).strftime("%Y%m%d-%H%M")
    return f"{policy[:253 - len(stamp) - 1]}-{stamp}"


def evidence_of(forecast: Forecast, spec: ForecastSpec) -> Evidence:
    """The proposal's evidence (`spec.forecast`) of a forecast made for a policy's `spec`."""
    return Evidence(
        model=forecast.model, query=spec.query,
        window_start=forecast.window_start, window_end=forecast.window_end, points=int(forecast.points),
        horizon_seconds=int(forecast.horizon_seconds), resolution_seconds=int(forecast.resolution_seconds),
        predicted_peak=forecast.predicted_peak, peak_time=forecast.peak_time,
        upper_bound=forecast.upper_bound, lower_bound=forecast.lower_bound,
        confidence=float(forecast.confidence), coverage=forecast.coverage,
        capacity_per_replica=float(spec.capacity_per_replica),
        backtest_metric=forecast.backtest_metric, backtest_value=forecast.backtest_error,
    )


def build_proposal(policy: Policy, sized: SizedForecast, proposed_by: str, now: dt.datetime,
                   gitops: bool = False) -> dict:
    """The ScalingProposal manifest: the change, its evidence, and who proposed it.

    With `gitops`, the manifest is for a repository: whoever applies it from git creates
    it (the admission policy requires proposed-by to name the creator, and a pipeline that
    approves may not also be the proposer), so the forecaster's identity is recorded in
    scalegate.io/forecast-by instead, for the reader."""
    sizing = sized.sizing
    assert policy.forecast is not None, "only a policy with a forecast is sized"
    annotations = {FORECAST_BY: proposed_by} if gitops else {PROPOSED_BY: proposed_by}
    return {
        "apiVersion": API_VERSION,
        "kind": PROPOSAL_KIND,
        "metadata": {
            "name": proposal_name(policy.name, now),
            "namespace": policy.namespace,
            "labels": {POLICY_LABEL: policy.name, "app.kubernetes.io/managed-by": "scalegate"},
            "annotations": annotations,
            # Garbage-collected with its policy; a repository's copy cannot know the uid.
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": POLICY_KIND, "name": policy.name,
                                 "uid": policy.uid}] if policy.uid and not gitops else [],
        },
        "spec": {
            "policyRef": {"name": policy.name},
            "targetRef": policy.target.to_dict(),
            "currentReplicas": sizing.current_replicas,
            "replicas": sizing.replicas,
            "validUntil": format_time(now + dt.timedelta(seconds=policy.proposal_ttl_seconds)),
            "reason": sizing.reason,
            "forecast": evidence_of(sized.forecast, policy.forecast).to_spec(),
        },
    }


def check_past_forecast(previous: Forecast, series) -> tuple[float, bool] | None:
    """(relative error of the predicted peak, whether the upper bound was exceeded) once
    the horizon of `previous` has fully passed in `series`; None before that."""
    start = previous.window_end
    end = start + dt.timedelta(seconds=previous.horizon_seconds)
    if len(series) == 0 or series.index[-1] < end:
        return None
    actual = series[(series.index > start) & (series.index <= end)]
    if actual.empty:
        return None
    peak = float(actual.max())
    scale = max(abs(previous.predicted_peak), 1e-9)
    return (peak - previous.predicted_peak) / scale, peak > previous.upper_bound


# -- the round -------------------------------------------------------------------------
@dataclass
class Forecaster:
    kube: Kube
    source: Any  # PrometheusSource: .fetch(query, lookback_seconds=, step_seconds=)
    output: str = "create"  # "create" in the cluster, or "yaml": manifests for a GitOps repository
    output_dir: Path | None = None  # with "yaml": where to write them (else only returned)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)
    pool: concurrent.futures.Executor | None = None
    _identity: str | None = None
    _previous: dict[tuple[str, str], Forecast] = field(default_factory=dict)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = self.kube.whoami()
        return self._identity

    def _forecast_policy(self, series, policy: Policy, current: int, now: dt.datetime) -> SizedForecast:
        """`forecast_policy` in the process pool (CPU-bound fits use every core), or here without one."""
        pool = self.pool
        if pool is None:
            return forecast_policy(series, policy, current, now)
        try:
            return pool.submit(forecast_policy, series, policy, current, now).result()
        except concurrent.futures.process.BrokenProcessPool:
            # A worker died (killed, out of memory): every later fit would fail too, so
            # start a new pool and try once more; one bad fit must not stop the rest.
            log.warning("forecast worker process died; starting a new pool")
            return self._renewed_pool(pool).submit(forecast_policy, series, policy, current, now).result()

    def _renewed_pool(self, broken: concurrent.futures.Executor) -> concurrent.futures.Executor:
        with self._pool_lock:
            current = self.pool
            if current is broken:  # the first thread to notice replaces it
                broken.shutdown(wait=False, cancel_futures=True)
            if current is broken or current is None:
                current = self.pool = default_pool()
            return current

    def run_policy(self, body: dict) -> RoundResult:
        started = time.monotonic()
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        try:
            policy = Policy.parse(body)
        except InvalidObject as err:
            return self._fail(body, namespace, name, "InvalidPolicy", f"policy cannot be forecast: {err}", started)
        if policy.forecast is None:
            return RoundResult(namespace, name, "skipped", "NoForecast", "policy has no spec.forecast")
        if policy.suspend:
            return RoundResult(namespace, name, "skipped", "Suspended", "policy is suspended")
        now = self.clock()
        spec = policy.forecast
        try:
            series = self.source.fetch(spec.query, lookback_seconds=spec.lookback_seconds,
                                       step_seconds=spec.step_seconds, end=now)
            self._check_previous(policy, series)
            current = self.kube.get_scale(namespace, policy.target).replicas
            sized = self._forecast_policy(series, policy, current, now)
        except ForecastError as err:
            return self._fail(body, namespace, name, err.reason, err.message, started)
        except (NotFound, NoScaleSubresource) as err:
            return self._fail(body, namespace, name, "TargetUnavailable",
                              f"cannot read the replicas of {policy.target.describe()}: {err}", started)
        except Exception as err:  # a model that blows up must not propose, nor stop the loop
            if isinstance(err, KubeError):
                raise
            log.exception("forecast of %s/%s failed", namespace, name)
            return self._fail(body, namespace, name, "FitFailed", f"{type(err).__name__}: {err}", started)

        self._previous[(namespace, name)] = sized.forecast
        elapsed = time.monotonic() - started
        metrics.FORECAST_DURATION.observe(elapsed)
        if not sized.sizing.changes:
            message = f"no change: {sized.sizing.reason}"
            self._set_ready(body, True, "NoChange", message, now)
            return RoundResult(namespace, name, "unchanged", "NoChange", message, seconds=elapsed)

        proposal = build_proposal(policy, sized, self.identity, now, gitops=self.output == "yaml")
        if self.output == "yaml":
            if self.output_dir is not None:
                self._write_manifest(proposal)
        else:
            try:
                self.kube.create_proposal(namespace, proposal)
            except Conflict:
                log.info("proposal %s/%s already exists; not proposing twice", namespace, proposal["metadata"]["name"])
        metrics.PROPOSALS_CREATED.labels(namespace, name).inc()
        message = f"proposed {proposal['metadata']['name']}: {sized.sizing.reason}"
        self._set_ready(body, True, "Proposed", message, now, last_proposal=proposal["metadata"]["name"])
        log.info("%s/%s: %s", namespace, name, message)
        return RoundResult(namespace, name, "proposed", "Proposed", message, proposal=proposal, seconds=elapsed)

    def _check_previous(self, policy: Policy, series) -> None:
        previous = self._previous.get((policy.namespace, policy.name))
        if previous is None:
            return
        checked = check_past_forecast(previous, series)
        if checked is None:
            return
        error, exceeded = checked
        labels = (policy.namespace, policy.name)
        metrics.FORECAST_REALISED_ERROR.labels(*labels).set(error)
        metrics.FORECAST_CHECKED.labels(*labels).inc()
        if exceeded:
            metrics.FORECAST_BOUND_EXCEEDED.labels(*labels).inc()
        del self._previous[(policy.namespace, policy.name)]

    def _fail(self, body: dict, namespace: str, name: str, reason: str, message: str, started: float) -> RoundResult:
        metrics.FORECAST_FAILURES.labels(namespace, name, reason).inc()
        log.warning("%s/%s: no proposal (%s): %s", namespace, name, reason, message)
        self._set_ready(body, False, reason, message, self.clock())
        return RoundResult(namespace, name, "failed", reason, message, seconds=time.monotonic() - started)

    def _set_ready(self, body: dict, ready: bool, reason: str, message: str, now: dt.datetime,
                   last_proposal: str | None = None) -> None:
        if self.output == "yaml":
            return  # GitOps mode writes manifests only
        meta = body.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        status: dict[str, Any] = {
            "conditions": set_condition((body.get("status") or {}).get("conditions"), READY, ready, reason,
                                        message, generation, now),
            "lastForecastTime": format_time(now),
            "observedGeneration": generation,
        }
        if last_proposal:
            status["lastProposal"] = last_proposal
        try:
            self.kube.patch_policy_status(meta.get("namespace", ""), meta.get("name", ""), status)
        except (NotFound, KubeError) as err:
            log.warning("could not record ForecastReady on %s/%s: %s", meta.get("namespace"), meta.get("name"), err)

    def _write_manifest(self, proposal: dict) -> Path:
        meta = proposal["metadata"]
        directory = self.output_dir / meta["namespace"]
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{meta['name']}.yaml"
        path.write_text(yaml.safe_dump(proposal, sort_keys=False))
        return path

    # -- many policies -----------------------------------------------------------------
    def run_round(self, policies: list[dict], threads: int = 8) -> list[RoundResult]:
        """Every policy once; one bad policy never stops the others."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="forecast") as io_pool:
            futures = {io_pool.submit(self.run_policy, body): body for body in policies}
            results = []
            for future in concurrent.futures.as_completed(futures):
                body = futures[future]
                meta = body.get("metadata") or {}
                try:
                    results.append(future.result())
                except Exception as err:  # past the forecast: the API server, or our own error
                    if isinstance(err, KubeError):
                        reason, message = "ApiError", str(err)
                    else:
                        log.error("forecast round for %s/%s failed", meta.get("namespace"), meta.get("name"),
                                  exc_info=err)
                        reason, message = "ForecastFailed", f"internal error: {type(err).__name__}: {err}"
                    try:
                        results.append(self._fail(body, meta.get("namespace", ""), meta.get("name", ""), reason,
                                                  message, time.monotonic()))
                    except Exception:  # not even that could be recorded: the log and the result say it
                        log.exception("recording the failure of %s/%s failed", meta.get("namespace"),
                                      meta.get("name"))
                        results.append(RoundResult(meta.get("namespace", ""), meta.get("name", ""), "failed",
                                                   reason, message))
        if round_succeeded(results):
            metrics.LAST_SUCCESSFUL_ROUND.set(time.time())
        return results


#: Reasons that say the forecaster could not do its work for a policy (Prometheus, the API
#: server, its own error), rather than give a verdict on the policy's data or spec.
CANNOT_FORECAST = frozenset({"MetricsUnavailable", "ApiError", "FitFailed", "ForecastFailed"})


def round_succeeded(results: list[RoundResult]) -> bool:
    """Whether a finished round succeeded: at least one policy was evaluated, i.e. it was
    proposed, found unchanged, or refused on its own data or spec (InsufficientData,
    TooUncertain, InvalidPolicy, ...), not failed for a reason in CANNOT_FORECAST.
    Skipped policies (suspended, no forecast) are not evaluated."""
    return any(r.outcome in ("proposed", "unchanged") or (r.outcome == "failed" and r.reason not in CANNOT_FORECAST)
               for r in results)


def interval_of(body: dict, default: float = ForecastSpec.interval_seconds) -> float:
    forecast = ((body.get("spec") or {}).get("forecast") or {})
    value = forecast.get("intervalSeconds", default)
    return float(value) if isinstance(value, (int, float)) and value > 0 else default


def expected_round_interval(policies: list[dict]) -> float:
    """The longest interval among policies that are forecast (a forecast section, not
    suspended), 0 without any: the stall alert expects a successful round this often."""
    intervals = [interval_of(body) for body in policies
                 if (body.get("spec") or {}).get("forecast") and not (body.get("spec") or {}).get("suspend")]
    return max(intervals, default=0.0)


def run_forever(forecaster: Forecaster, namespace: str | None, tick: float = 5.0,
                stop: threading.Event | None = None) -> None:
    """Every policy on its own interval (spec.forecast.intervalSeconds), until `stop` is
    set; a round in progress finishes first."""
    stop = stop or threading.Event()
    due: dict[tuple[str, str], float] = {}
    while not stop.is_set():
        try:
            policies = forecaster.kube.list_policies(namespace)
        except KubeError as err:
            log.warning("cannot list policies: %s", err)
            stop.wait(tick)
            continue
        metrics.FORECASTER_EXPECTED_INTERVAL.set(expected_round_interval(policies))
        now = time.monotonic()
        ready = [p for p in policies if due.get(_key(p), 0.0) <= now]
        if ready:
            for result in forecaster.run_round(ready):
                log.debug("%s/%s: %s (%s)", result.namespace, result.policy, result.outcome, result.reason)
            finished = time.monotonic()
            for body in ready:
                due[_key(body)] = finished + interval_of(body)
        stop.wait(tick)


def _key(body: dict) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def default_pool() -> concurrent.futures.Executor:
    """Fits are CPU-bound: one worker process per core."""
    return concurrent.futures.ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1))
