"""The forecaster: for each ScalingPolicy, read its load from Prometheus, forecast it,
size replicas for the upper bound, and propose the change with its evidence.

Fails closed: on any doubt (no data, too little, too uncertain, fit failed) it makes no
proposal and says why on the policy (ForecastReady=False), in a metric and in the log.
The pure parts (forecasting and sizing, building the proposal, checking past forecasts) are plain
functions; I/O goes through `Kube` and `PrometheusSource`.

A policy with `forecast.planHorizonSeconds` and `planStepSeconds` gets plans instead of
single changes: each round builds a plan from a forecast over the plan's horizon
(`forecast.plans`), and proposes it only when the re-plan rule says so against the
policy's newest open plan (`plans.replan`: NoActivePlan, FallsShort, EndsSoon, Wasteful),
with the rule's reason first in `spec.reason`. Realised load above a step's upper bound
of the plan in effect is a `PlanBreached` Event on that proposal and a count in
`scalegate_plan_breaches_total`.

Cheap rounds (issue 16): a round refits a policy's model only when `forecast.refit` says
it is due; otherwise it re-scores the kept forecast against the samples since the fit (a
short query) and sizes, or re-plans, from it (`fit_policy` fits, `size_policy` sizes from a
fit made now or kept). With shards (`shards.ShardKeeper`, `run_forever(shards=...)`), a
replica forecasts the policies of the shards it holds and `Forecaster.may_write` fences
every write about a policy.

What a round writes at scale (issue 16): a policy's status is rewritten only when its
verdict changes (`status_write_needed`: ForecastReady's status or reason, lastProposal,
observedGeneration), or when the lastForecastTime it shows is older than
`STATUS_REFRESH_SECONDS`; the open plans of every policy in a round come from one list per
namespace of the proposals that are not terminal (`open_plans_by_policy`), not one list
per policy; and `run_forever` lists the policies at most as often as keeps that list
under a tenth of its time.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import dataclasses
import datetime as dt
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import metrics
from .conditions import set_condition
from .forecast import Forecast, forecast_series, plans, refit
from .forecast.prometheus import PrometheusSource
from .forecast.resample import choose_resolution
from .forecast.series import ForecastError
from .forecast.sizing import Sizing, format_load, size_replicas
from .kube import Conflict, Kube, KubeError, NoScaleSubresource, NotFound
from .model import (
    API_VERSION,
    OPEN_PROPOSALS_FIELD_SELECTOR,
    POLICY_KIND,
    POLICY_LABEL,
    PROPOSAL_KIND,
    PROPOSED_BY,
    Evidence,
    ForecastSpec,
    InvalidObject,
    Phase,
    PlanStep,
    Policy,
    Proposal,
    format_time,
    manifest_yaml,
    read_time,
)
from .shards import ShardKeeper

log = logging.getLogger("scalegate.forecaster")

READY = "ForecastReady"
SHARD_LOST = "ShardLost"  # a round's outcome (skipped) when the policy's shard moved away mid-round
FORECAST_BY = "scalegate.io/forecast-by"  # informational: the forecaster that computed a GitOps manifest

#: Longest a policy's status may go unwritten when its verdict is unchanged: its
#: lastForecastTime is then up to this old. Rewriting every policy's status every round
#: was a third of the API server's work in a round of 2,000 policies; the forecaster's
#: liveness is its metric scalegate_forecaster_last_successful_round_timestamp_seconds
#: (and the ScalegateForecasterStalled alert), not the policies' status.
STATUS_REFRESH_SECONDS = 3600.0


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
    #: where the policy's time went: "query" (Prometheus), "fit" (the model, in the pool),
    #: "total" (from the start to the last write; the rest is the API server and sizing)
    timings: dict[str, float] = field(default_factory=dict)
    refit: str = ""  # the refit decision (refit.REASONS), "" when none was made


# -- pure ----------------------------------------------------------------------------
def forecast_policy(series, policy: Policy, current_replicas: int, now: dt.datetime) -> SizedForecast:
    """Forecast `series` over the policy's horizon and size replicas for the upper bound.
    Pure and picklable, so it can run in a worker process. Raises ForecastError."""
    sized = size_policy(fit_policy(series, policy, now), policy, current_replicas, now)
    assert isinstance(sized, SizedForecast)
    return sized


def forecast_horizon_of(policy: Policy) -> int:
    """How far ahead a round's forecast of the policy must reach: its plan's horizon, else its own."""
    spec = policy.forecast
    assert spec is not None
    return spec.plan.horizon_seconds if spec.plan is not None else spec.horizon_seconds


def fit_key(spec: ForecastSpec) -> tuple:
    """What a fit depends on (a kept fit whose key differs is refitted): every forecast
    setting but the capacity and the round interval, which only sizing and scheduling read."""
    return (spec.query, spec.horizon_seconds, spec.lookback_seconds, spec.step_seconds, spec.confidence, spec.plan)


def fit_policy(series, policy: Policy, now: dt.datetime, refit_interval_seconds: float = 0.0) -> Forecast:
    """The policy's fit: over its horizon (a plan's: `plans.forecast_plan`), or, to be kept
    for `refit_interval_seconds` (> 0), over the horizon plus that interval in the bins of
    the horizon (`refit.fit_horizon`). Pure and picklable, so it can run in a worker
    process. Raises ForecastError."""
    spec = policy.forecast
    assert spec is not None
    if spec.plan is not None:
        return plans.forecast_plan(series, spec.plan.horizon_seconds + int(math.ceil(refit_interval_seconds)),
                                   spec.plan.step_seconds, spec.confidence, now)
    if refit_interval_seconds <= 0:
        return forecast_series(series, horizon_seconds=spec.horizon_seconds, confidence=spec.confidence, now=now)
    return forecast_series(series, horizon_seconds=refit.fit_horizon(spec.horizon_seconds, refit_interval_seconds,
                                                                      spec.step_seconds),
                           confidence=spec.confidence, now=now,
                           resolution_seconds=choose_resolution(spec.horizon_seconds, spec.step_seconds))


def size_policy(forecast: Forecast, policy: Policy, current_replicas: int,
                now: dt.datetime) -> SizedForecast | PlannedForecast:
    """Size replicas (or build the plan) for the policy from a fit of `fit_policy`, made
    now or kept from an earlier round: the upper bound of the samples in `[now, now +
    horizon)` (`refit.window`; a forecast made for exactly the horizon is used as it is).
    Pure. Raises ForecastError (OutOfBounds) and ValueError (a fit that does not cover the
    horizon from now, which `refit.refit_due` refits before)."""
    spec = policy.forecast
    assert spec is not None
    if spec.plan is not None:
        plan = plans.build_plan(forecast, spec.capacity_per_replica, current_replicas, spec.plan.step_seconds,
                                spec.plan.horizon_seconds, now=now, bounds=policy.bounds,
                                min_first_step_seconds=policy.cooldown_seconds,
                                step_offset_seconds=plans.step_offset(f"{policy.namespace}/{policy.name}",
                                                                      spec.plan.step_seconds))
        return PlannedForecast(forecast, plan)
    if forecast.horizon_seconds > spec.horizon_seconds:
        forecast = refit.window(forecast, now, spec.horizon_seconds)
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


# -- plans (pure) ----------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedForecast:
    """What one round found for a policy with plans: the forecast over the plan's horizon,
    and the plan built from it."""

    forecast: Forecast
    plan: plans.Plan


def plan_policy(series, policy: Policy, current_replicas: int, now: dt.datetime) -> PlannedForecast:
    """Forecast `series` over the policy's plan horizon and build the plan (steps of
    planStepSeconds from now, within the policy's bounds and step limits, the first step at
    least cooldownSeconds long). Pure and picklable, so it can run in a worker process.
    Raises ForecastError."""
    spec = policy.forecast
    assert spec is not None and spec.plan is not None, "only a policy with plan settings is planned"
    planned = size_policy(fit_policy(series, policy, now), policy, current_replicas, now)
    assert isinstance(planned, PlannedForecast)
    return planned


def plan_of(proposal: Proposal) -> plans.Plan:
    """A proposal's schedule as a `plans.Plan` (named after the proposal)."""
    steps = tuple(plans.PlannedStep(pd.Timestamp(step.at), step.replicas, step.predicted_peak, step.upper_bound)
                  for step in proposal.schedule)
    return plans.Plan(steps, pd.Timestamp(proposal.ends_at), name=proposal.name)


def open_plans(bodies, now: dt.datetime) -> tuple[Proposal | None, Proposal | None]:
    """Of a policy's proposals: the newest open plan (Pending and still approvable, Approved
    or Active), which a new plan is judged against, and the newest Active one, the plan in
    effect, whose breaches are reported.

    A Pending plan counts as open: a new one that it already covers would only supersede
    what a person may be about to approve. Proposals that do not parse are passed over."""
    found = []
    for body in bodies:
        try:
            proposal = Proposal.parse(body)
        except InvalidObject:
            continue
        if proposal.is_plan:
            found.append(proposal)
    waiting = (Phase.PENDING, "")  # "": not yet seen by the operator
    open_ = [p for p in found if p.phase in (Phase.APPROVED, Phase.ACTIVE)
             or (p.phase in waiting and p.valid_until > now and not p.decision.rejected)]
    active = [p for p in found if p.phase == Phase.ACTIVE]

    def newest(proposals: list[Proposal]) -> Proposal | None:
        return max(proposals, key=lambda p: (p.created or dt.datetime.min.replace(tzinfo=dt.timezone.utc), p.name),
                   default=None)

    return newest(open_), newest(active)


def plan_evidence(planned: PlannedForecast, spec: ForecastSpec) -> Evidence:
    """The evidence of a plan: the forecast's, over the plan's horizon (the highest step's
    predicted peak and upper bound, the time of the step predicted highest)."""
    plan = planned.plan
    peak_step = max(plan.steps, key=lambda step: step.predicted_peak or float("-inf"))
    evidence = evidence_of(planned.forecast, spec)
    return dataclasses.replace(
        evidence,
        horizon_seconds=int((plan.ends_at - plan.start).total_seconds()),
        predicted_peak=peak_step.predicted_peak,
        peak_time=peak_step.at.to_pydatetime(),
        upper_bound=max(step.upper_bound for step in plan.steps if step.upper_bound is not None),
    )


def plan_reason(planned: PlannedForecast, decision: plans.Replan, policy: Policy) -> str:
    """`spec.reason` of a plan: why a new plan (the re-plan rule's reason first), then what it holds."""
    spec = policy.forecast
    assert spec is not None
    plan, evidence = planned.plan, plan_evidence(planned, spec)
    text = f"{decision.reason}: {decision.message}. Plan: {plan.describe()}"
    if evidence.upper_bound is not None and evidence.peak_time is not None:
        text += (f"; peak of {format_load(evidence.upper_bound)} ({spec.confidence:.0%} upper bound) expected at "
                 f"{evidence.peak_time:%H:%M} UTC")
    if plan.ramped:
        text += f"; {len(plan.ramped)} step(s) raised early to keep maxStepUp/maxStepDown"
    limits = sorted({limit for _, limit in plan.capped})
    if limits:
        text += (f"; {len({k for k, _ in plan.capped})} step(s) below their need, capped by "
                 + ", ".join(f"{limit}={policy.bounds.value(limit)}" for limit in limits))
    return text[:2048]


def build_plan_proposal(policy: Policy, planned: PlannedForecast, decision: plans.Replan, current_replicas: int,
                        proposed_by: str, now: dt.datetime, gitops: bool = False) -> dict:
    """The ScalingProposal manifest of a plan: `spec.schedule`, `spec.endsAt`, `spec.replicas`
    (the first step's), the reason and the evidence; otherwise as `build_proposal`."""
    plan = planned.plan
    proposal = build_proposal(policy, SizedForecast(planned.forecast, Sizing(
        plan.replicas, plan.steps[0].needed or plan.replicas, current_replicas, (), "")), proposed_by, now, gitops)
    spec = proposal["spec"]
    spec["schedule"] = [PlanStep(step.at.to_pydatetime(), step.replicas, step.predicted_peak,
                                 step.upper_bound).to_dict() for step in plan.steps]
    spec["endsAt"] = format_time(plan.ends_at.to_pydatetime())
    spec["reason"] = plan_reason(planned, decision, policy)
    assert policy.forecast is not None
    spec["forecast"] = plan_evidence(planned, policy.forecast).to_spec()
    return proposal


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


def status_write_needed(current: dict | None, new: dict, now: dt.datetime,
                        refresh_seconds: float = STATUS_REFRESH_SECONDS) -> bool:
    """Whether the forecaster must write `new` over a policy's `current` status: its
    verdict changed (ForecastReady's status or reason, lastProposal, observedGeneration),
    or the lastForecastTime shown is missing, unreadable or `refresh_seconds` old. A new
    message alone (numbers that move every round) waits for the refresh: status is a
    snapshot as of its lastForecastTime."""
    current = current if isinstance(current, dict) else {}

    def verdict(status: dict) -> tuple:
        ready = next((c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == READY),
                     {})
        return (ready.get("status"), ready.get("reason"), ready.get("observedGeneration"),
                status.get("observedGeneration"))

    if verdict(current) != verdict(new):
        return True
    if "lastProposal" in new and new["lastProposal"] != current.get("lastProposal"):
        return True
    shown = read_time(current.get("lastForecastTime"))
    return shown is None or (now - shown).total_seconds() >= refresh_seconds


def open_plans_by_policy(bodies, policies: set[tuple[str, str]], now: dt.datetime,
                         ) -> dict[tuple[str, str], tuple[Proposal | None, Proposal | None]]:
    """`open_plans` for each of `policies` ((namespace, name)) from one listing of proposals
    (those of other policies and terminal ones are passed over as they stream by, so only
    the open ones are held); a policy without proposals gets (None, None)."""
    grouped: dict[tuple[str, str], list[dict]] = {key: [] for key in policies}
    for body in bodies:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), (meta.get("labels") or {}).get(POLICY_LABEL, ""))
        if key in grouped and (body.get("status") or {}).get("phase") not in Phase.TERMINAL:
            grouped[key].append(body)
    return {key: open_plans(found, now) for key, found in grouped.items()}


# -- the round -------------------------------------------------------------------------
@dataclass
class Forecaster:
    kube: Kube
    source: Any  # PrometheusSource: .fetch(query, lookback_seconds=, step_seconds=)
    output: str = "create"  # "create" in the cluster, or "yaml": manifests for a GitOps repository
    output_dir: Path | None = None  # with "yaml": where to write them (else only returned)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)
    pool: concurrent.futures.Executor | None = None
    #: Longest time a fit is kept, capped at each policy's horizon; 0 refits every round
    #: (`refit.refit_due`).
    refit_interval: float = refit.REFIT_INTERVAL_SECONDS
    #: Longest a policy's unchanged status goes unwritten (`status_write_needed`).
    status_refresh: float = STATUS_REFRESH_SECONDS
    #: Fencing with shards (issue 16): asked just before every write about a policy
    #: (namespace, name); False (its shard is no longer held) skips the write.
    may_write: Callable[[str, str], bool] | None = None
    _identity: str | None = None
    # per policy: the fit kept for later rounds (refit.KeptForecast)
    _kept: dict[tuple[str, str], refit.KeptForecast] = field(default_factory=dict)
    _previous: dict[tuple[str, str], Forecast] = field(default_factory=dict)
    # per policy: when its plan's breaches were last checked, and the (proposal uid, step
    # times) already reported, so that each breached step is one Event
    _breaches_checked: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    _breaches_reported: dict[tuple[str, str], tuple[str, set]] = field(default_factory=dict)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = self.kube.whoami()
        return self._identity

    def _fit(self, series, policy: Policy, now: dt.datetime, interval: float) -> Forecast:
        """`fit_policy` in the process pool (CPU-bound fits use every core), or here without one."""
        pool = self.pool
        if pool is None:
            return fit_policy(series, policy, now, interval)
        try:
            return pool.submit(fit_policy, series, policy, now, interval).result()
        except concurrent.futures.process.BrokenProcessPool:
            # A worker died (killed, out of memory): every later fit would fail too, so
            # start a new pool and try once more; one bad fit must not stop the rest.
            log.warning("forecast worker process died; starting a new pool")
            return self._renewed_pool(pool).submit(fit_policy, series, policy, now, interval).result()

    def _fetch_since(self, spec: ForecastSpec, since: pd.Timestamp, now: dt.datetime):
        """The samples from `since` to now, to re-score a kept forecast with: a short range
        query instead of the whole lookback. A source without `min_history_seconds` (a test
        double) is asked for the whole lookback; the re-score reads only what is new."""
        seconds = max(0.0, (pd.Timestamp(now) - since).total_seconds())
        lookback = (int(seconds // spec.step_seconds) + 1) * spec.step_seconds
        if isinstance(self.source, PrometheusSource):
            return self.source.fetch(spec.query, lookback_seconds=min(lookback, spec.lookback_seconds),
                                     step_seconds=spec.step_seconds, end=now, min_history_seconds=0)
        return self.source.fetch(spec.query, lookback_seconds=spec.lookback_seconds,
                                 step_seconds=spec.step_seconds, end=now)

    def forget(self, keep: set[tuple[str, str]]) -> None:
        """Drop what is kept for policies not in `keep` (deleted, or another replica's shard)."""
        for key in [k for k in self._kept if k not in keep]:
            self._kept.pop(key, None)
        for store in (self._previous, self._breaches_checked, self._breaches_reported):
            for key in [k for k in store if k not in keep]:
                store.pop(key, None)

    def _renewed_pool(self, broken: concurrent.futures.Executor) -> concurrent.futures.Executor:
        with self._pool_lock:
            current = self.pool
            if current is broken:  # the first thread to notice replaces it
                broken.shutdown(wait=False, cancel_futures=True)
            if current is broken or current is None:
                current = self.pool = default_pool()
            return current

    def run_policy(self, body: dict, known_plans: tuple[Proposal | None, Proposal | None] | None = None,
                   ) -> RoundResult:
        """One policy's round: forecast (refitting only when due), then propose or say why not.
        `known_plans`: the policy's (open, active) plans as the round listed them
        (`open_plans_by_policy`); None lists them for this policy alone."""
        started = time.monotonic()
        timings = {"query": 0.0, "fit": 0.0}
        decided: list[str] = []
        result = self._run_policy(body, timings, decided, known_plans)
        result.timings = {**timings, "total": time.monotonic() - started}
        result.refit = decided[-1] if decided else ""
        return result

    def _run_policy(self, body: dict, timings: dict[str, float], decided: list[str],
                    known_plans: tuple[Proposal | None, Proposal | None] | None) -> RoundResult:
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
        key = (namespace, name)
        horizon = forecast_horizon_of(policy)
        interval = refit.refit_interval(self.refit_interval, horizon)
        kept, fit = self._kept.get(key), fit_key(spec)
        phase = refit.phase_of(f"{namespace}/{name}", interval) if interval > 0 else None
        try:
            due = refit.refit_due(kept, key=fit, now=now, horizon_seconds=horizon, interval_seconds=interval,
                                  phase_seconds=phase)
            mark = time.monotonic()
            if not due.refit:
                assert kept is not None
                series = self._fetch_since(spec, pd.Timestamp(kept.forecast.window_end), now)
                due = refit.refit_due(kept, key=fit, now=now, horizon_seconds=horizon, interval_seconds=interval,
                                      recent=series, phase_seconds=phase)
            if due.refit:
                series = self.source.fetch(spec.query, lookback_seconds=spec.lookback_seconds,
                                           step_seconds=spec.step_seconds, end=now)
            timings["query"] = time.monotonic() - mark
            metrics.FORECAST_REFITS.labels(due.reason).inc()
            decided.append(due.reason)
            log.debug("%s/%s: %s (%s)", namespace, name, due.reason, due.message)
            self._check_previous(policy, series)
            current = self.kube.get_scale(namespace, policy.target).replicas
            if due.refit:
                self._kept.pop(key, None)
                mark = time.monotonic()
                forecast = self._fit(series, policy, now, interval)
                timings["fit"] = time.monotonic() - mark
                kept = refit.KeptForecast(forecast, pd.Timestamp(now), fit)
                if interval > 0:
                    self._kept[key] = kept
            assert kept is not None
            sized = size_policy(kept.forecast, policy, current, now)
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

        if due.refit:  # checked against what then happened, once its horizon has passed
            self._previous[(namespace, name)] = sized.forecast
        if isinstance(sized, PlannedForecast):
            return self._propose_plan(body, policy, series, sized, current, now, started, known_plans)
        elapsed = time.monotonic() - started
        metrics.FORECAST_DURATION.observe(elapsed)
        if not sized.sizing.changes:
            message = f"no change: {sized.sizing.reason}"
            self._set_ready(body, True, "NoChange", message, now)
            return RoundResult(namespace, name, "unchanged", "NoChange", message, seconds=elapsed)

        proposal = build_proposal(policy, sized, self.identity, now, gitops=self.output == "yaml")
        return self._submit(body, proposal, sized.sizing.reason, now, elapsed)

    def _fenced(self, namespace: str, name: str) -> bool:
        """Whether a write about policy namespace/name must not be made: its shard is no
        longer held by this replica (another may be forecasting it now)."""
        if self.may_write is None or self.may_write(namespace, name):
            return False
        log.info("%s/%s: its shard is no longer held here; not writing", namespace, name)
        return True

    def _submit(self, body: dict, proposal: dict, reason: str, now: dt.datetime, elapsed: float) -> RoundResult:
        """Create `proposal` (or write it as a manifest) and record it on the policy."""
        meta = proposal["metadata"]
        namespace, name = meta["namespace"], proposal["spec"]["policyRef"]["name"]
        if self.output != "yaml" and self._fenced(namespace, name):
            return RoundResult(namespace, name, "skipped", SHARD_LOST, "its shard moved to another replica",
                               seconds=elapsed)
        if self.output == "yaml":
            if self.output_dir is not None:
                self._write_manifest(proposal)
        else:
            try:
                self.kube.create_proposal(namespace, proposal)
            except Conflict:
                log.info("proposal %s/%s already exists; not proposing twice", namespace, meta["name"])
        metrics.PROPOSALS_CREATED.labels(namespace, name).inc()
        message = f"proposed {meta['name']}: {reason}"
        self._set_ready(body, True, "Proposed", message, now, last_proposal=meta["name"])
        log.info("%s/%s: %s", namespace, name, message)
        return RoundResult(namespace, name, "proposed", "Proposed", message, proposal=proposal, seconds=elapsed)

    def _propose_plan(self, body: dict, policy: Policy, series, planned: PlannedForecast, current: int,
                      now: dt.datetime, started: float,
                      known_plans: tuple[Proposal | None, Proposal | None] | None) -> RoundResult:
        """The re-plan rule against the policy's newest open plan: propose `planned` or keep it.
        Listing the policy's proposals is an API call: a KubeError goes to the round's caller
        (ApiError), and no plan is proposed without knowing which one is open."""
        namespace, name = policy.namespace, policy.name
        spec = policy.forecast
        assert spec is not None
        if known_plans is None:
            known_plans = open_plans(self.kube.iter_proposals(namespace, selector=f"{POLICY_LABEL}={name}",
                                                              field_selector=OPEN_PROPOSALS_FIELD_SELECTOR), now)
        open_plan, active = known_plans
        breached = self._report_breaches(policy, active, series, now)
        decision = plans.replan(None if open_plan is None else plan_of(open_plan), planned.plan, now,
                                approval_seconds=policy.proposal_ttl_seconds, interval_seconds=spec.interval_seconds,
                                breached=breached)
        elapsed = time.monotonic() - started
        metrics.FORECAST_DURATION.observe(elapsed)
        if not decision.propose or all(step.replicas == current for step in planned.plan.steps):
            reason = decision.reason if not decision.propose else "NoChange"
            message = (decision.message if not decision.propose
                       else f"no change: every step of the new plan keeps {current} replicas ({decision.message})")
            self._set_ready(body, True, reason, message, now)
            return RoundResult(namespace, name, "unchanged", reason, message, seconds=elapsed)
        proposal = build_plan_proposal(policy, planned, decision, current, self.identity, now,
                                       gitops=self.output == "yaml")
        return self._submit(body, proposal, proposal["spec"]["reason"], now, elapsed)

    def _report_breaches(self, policy: Policy, active: Proposal | None, series, now: dt.datetime) -> bool:
        """Whether the load went above a step's upper bound of the plan in effect since the
        last round; each step breached is reported once: a `PlanBreached` Event on the
        proposal (not in GitOps mode, which only writes manifests) and the counter."""
        key = (policy.namespace, policy.name)
        spec = policy.forecast
        assert spec is not None
        since = self._breaches_checked.get(key, now - dt.timedelta(seconds=spec.interval_seconds))
        self._breaches_checked[key] = now
        if active is None:
            self._breaches_reported.pop(key, None)
            return False
        applied = [r.applied_at for r in active.receipts if r.applied_at is not None]
        start = pd.Timestamp(max([since, *applied[:1]]))
        index = series.index if series.index.tz is not None else series.index.tz_localize("UTC")
        recent = series[index >= start]
        found = plans.breaches(plan_of(active), recent)
        uid, reported = self._breaches_reported.get(key, ("", set()))
        if uid != active.uid:
            reported = set()
        for breach in found:
            if breach.step_at in reported:
                continue
            reported.add(breach.step_at)
            metrics.PLAN_BREACHES.labels(policy.namespace, policy.name).inc()
            message = f"{breach.describe()}; the plan's replicas were sized for that bound"
            log.warning("%s/%s: plan %s breached: %s", policy.namespace, policy.name, active.name, message)
            if self.output != "yaml" and not self._fenced(policy.namespace, policy.name):
                involved = {"apiVersion": API_VERSION, "kind": PROPOSAL_KIND, "name": active.name,
                            "namespace": active.namespace, "uid": active.uid}
                try:
                    self.kube.emit_event(involved, "Warning", "PlanBreached", message)
                except KubeError as err:  # the metric and the log still say it
                    log.warning("could not post PlanBreached on %s/%s: %s", active.namespace, active.name, err)
        self._breaches_reported[key] = (active.uid, reported)
        return bool(found)

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
        if self._fenced(meta.get("namespace", ""), meta.get("name", "")):
            return
        generation = int(meta.get("generation") or 0)
        status: dict[str, Any] = {
            "conditions": set_condition((body.get("status") or {}).get("conditions"), READY, ready, reason,
                                        message, generation, now),
            "lastForecastTime": format_time(now),
            "observedGeneration": generation,
        }
        if last_proposal:
            status["lastProposal"] = last_proposal
        if not status_write_needed(body.get("status"), status, now, self.status_refresh):
            return
        try:
            self.kube.patch_policy_status(meta.get("namespace", ""), meta.get("name", ""), status)
        except (NotFound, KubeError) as err:
            log.warning("could not record ForecastReady on %s/%s: %s", meta.get("namespace"), meta.get("name"), err)

    def _write_manifest(self, proposal: dict) -> Path:
        meta = proposal["metadata"]
        directory = self.output_dir / meta["namespace"]
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{meta['name']}.yaml"
        path.write_text(manifest_yaml(proposal))
        return path

    # -- many policies -----------------------------------------------------------------
    def _round_plans(self, policies: list[dict]) -> dict[tuple[str, str], tuple[Proposal | None, Proposal | None]]:
        """The open plans of the round's policies with plans: one list of the open proposals
        per namespace (the API server filters out terminal ones) instead of one per policy.
        A plan that opens or closes later in the round is seen by the next round. Nothing
        in GitOps mode (the repository holds its plans), or when the list fails (each policy
        then lists its own, and fails alone)."""
        if self.output == "yaml":
            return {}
        wanted: dict[str, set[tuple[str, str]]] = {}
        for body in policies:
            plan = ((body.get("spec") or {}).get("forecast") or {}).get("planHorizonSeconds")
            if plan:
                wanted.setdefault(_key(body)[0], set()).add(_key(body))
        known: dict[tuple[str, str], tuple[Proposal | None, Proposal | None]] = {}
        now = self.clock()
        for namespace, keys in wanted.items():
            try:
                bodies = self.kube.iter_proposals(namespace, field_selector=OPEN_PROPOSALS_FIELD_SELECTOR)
                known.update(open_plans_by_policy(bodies, keys, now))
            except KubeError as err:
                log.warning("cannot list the open proposals of namespace %s (each policy lists its own): %s",
                            namespace, err)
        return known

    def run_round(self, policies: list[dict], threads: int = 8) -> list[RoundResult]:
        """Every policy once; one bad policy never stops the others."""
        known = self._round_plans(policies)
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="forecast") as io_pool:
            futures = {io_pool.submit(self.run_policy, body, known.get(_key(body))): body for body in policies}
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


def first_due(body: dict, now: float) -> float:
    """When a policy this replica has not forecast yet is due (Unix time): the first
    multiple of its interval after its status' lastForecastTime (written by whichever
    replica forecast it last, so a shard that moves or a restart keeps the policies' rhythm
    and their rounds stay spread), at the latest an interval from now; now without one.
    Only scheduling reads it: status says when, never what."""
    last = read_time((body.get("status") or {}).get("lastForecastTime"))
    if last is None:
        return now
    interval = interval_of(body)
    if last.timestamp() + interval > now:
        return min(last.timestamp() + interval, now + interval)
    # Older than an interval: status is rewritten only when its verdict changes or hourly
    # (STATUS_REFRESH_SECONDS), so keep its phase: the next multiple of the interval after it.
    return now + (last.timestamp() - now) % interval


#: run_forever waits at least this many times as long as listing the policies took.
LIST_TIME_FACTOR = 9.0


def run_forever(forecaster: Forecaster, namespace: str | None, tick: float = 5.0,
                stop: threading.Event | None = None, shards: ShardKeeper | None = None) -> None:
    """Every policy on its own interval (spec.forecast.intervalSeconds), until `stop` is
    set; a round in progress finishes first. With `shards` (a `shards.ShardKeeper`), only
    the policies of the shards held at the start of a round, each write fenced by
    `Forecaster.may_write`."""
    stop = stop or threading.Event()
    due: dict[tuple[str, str], float] = {}
    while not stop.is_set():
        held = shards.held() if shards is not None else None
        listing = time.monotonic()
        try:
            policies = forecaster.kube.list_policies(namespace)
            # Thousands of policies take seconds to list: list at most as often as keeps
            # listing under a tenth of the time (a new policy waits that long at most).
            wait = max(tick, LIST_TIME_FACTOR * (time.monotonic() - listing))
        except KubeError as err:
            log.warning("cannot list policies: %s", err)
            stop.wait(tick)
            continue
        metrics.FORECASTER_EXPECTED_INTERVAL.set(expected_round_interval(policies))
        mine = policies if shards is None else shards.mine(policies, held_before=held)
        if shards is not None:
            metrics.FORECASTER_SHARDS_HELD.set(len(shards.held()))
            metrics.FORECASTER_REPLICAS.set(shards.live_replicas)
        keys = {_key(body) for body in mine}
        forecaster.forget(keys)
        for key in [k for k in due if k not in keys]:  # not ours now: its rhythm comes from status again
            del due[key]
        now = time.time()
        ready = [p for p in mine if due.setdefault(_key(p), first_due(p, now)) <= now]
        if ready:
            for result in forecaster.run_round(ready):
                log.debug("%s/%s: %s (%s)", result.namespace, result.policy, result.outcome, result.reason)
            finished = time.time()
            for body in ready:
                due[_key(body)] = finished + interval_of(body)
        stop.wait(wait)


def _key(body: dict) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def default_pool() -> concurrent.futures.Executor:
    """Fits are CPU-bound: one worker process per core."""
    return concurrent.futures.ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1))
