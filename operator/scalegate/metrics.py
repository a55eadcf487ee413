"""Prometheus metrics of both components, named by Prometheus conventions.

One registry per process; each component exports it with `serve(port)`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

# -- operator -------------------------------------------------------------------------
PROPOSAL_OUTCOMES = Counter(
    "scalegate_proposal_outcomes_total",
    "Proposal state changes recorded by the operator, by phase and reason.",
    ["namespace", "phase", "reason"], registry=REGISTRY)
PROPOSALS_ACTIVE = Gauge(
    "scalegate_proposals_active",
    "Proposals the operator is currently tracking (Pending or Approved).",
    registry=REGISTRY)
APPROVAL_WAIT = Histogram(
    "scalegate_approval_wait_seconds",
    "Time from a proposal's creation until the operator saw it approved.",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 86400), registry=REGISTRY)
APPLY_LATENCY = Histogram(
    "scalegate_apply_latency_seconds",
    "Time from the operator seeing an approval until the target was scaled.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600), registry=REGISTRY)
RECONCILE_ERRORS = Counter(
    "scalegate_reconcile_errors_total",
    "Reconciles of a proposal that ended on an error and were retried, by kind: the API server's "
    "(Unavailable, Unauthorized, Forbidden, NotFound, Conflict, Invalid, KubeError for any other status), "
    "NotLeader (a write this replica refused to send: it lost the leader Lease meanwhile) or Internal (the "
    "operator's own error, logged with its traceback). Conflict and NotFound on the "
    "status write are retried at once from a fresh read; the others with backoff.",
    ["error"], registry=REGISTRY)
PROPOSALS_COLLECTED = Counter(
    "scalegate_proposals_garbage_collected_total",
    "Terminal proposals deleted after the retention period.", registry=REGISTRY)
LEADER = Gauge(
    "scalegate_leader",
    "1 while this operator replica holds the leader Lease and acts, 0 while it stands by (always 1 with "
    "leader election off). The identity is the one written in the Lease's holderIdentity.",
    ["identity"], registry=REGISTRY)

# -- forecaster -----------------------------------------------------------------------
FORECAST_DURATION = Histogram(
    "scalegate_forecast_duration_seconds",
    "Wall time of one policy's forecast (query, fit, calibration, sizing).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=REGISTRY)
FORECAST_FAILURES = Counter(
    "scalegate_forecast_failures_total",
    "Forecast rounds that made no proposal because of doubt, by reason.",
    ["namespace", "policy", "reason"], registry=REGISTRY)
PROPOSALS_CREATED = Counter(
    "scalegate_proposals_created_total",
    "Proposals created (or written as manifests) by the forecaster.",
    ["namespace", "policy"], registry=REGISTRY)
FORECAST_REALISED_ERROR = Gauge(
    "scalegate_forecast_realised_error_ratio",
    "Realised error of the last checked forecast: (actual peak - predicted peak) / predicted peak.",
    ["namespace", "policy"], registry=REGISTRY)
FORECAST_BOUND_EXCEEDED = Counter(
    "scalegate_forecast_upper_bound_exceeded_total",
    "Checked forecasts whose actual peak exceeded the upper bound the replicas were sized for.",
    ["namespace", "policy"], registry=REGISTRY)
FORECAST_CHECKED = Counter(
    "scalegate_forecast_checked_total",
    "Past forecasts compared with what then happened.",
    ["namespace", "policy"], registry=REGISTRY)
FORECAST_REFITS = Counter(
    "scalegate_forecast_refit_decisions_total",
    "Each policy's forecast of a round, by whether it refitted the model and why (NoForecast, SpecChanged, "
    "EveryRound, IntervalPassed, HorizonNotCovered, ForecastBreached) or reused the kept forecast (Kept).",
    ["reason"], registry=REGISTRY)
FORECASTER_SHARDS_HELD = Gauge(
    "scalegate_forecaster_shards_held",
    "Shards (Leases scalegate-forecaster-shard-<i>-of-<n>) this forecaster replica holds; only with --shards.",
    registry=REGISTRY)
FORECASTER_REPLICAS = Gauge(
    "scalegate_forecaster_live_replicas",
    "Forecaster replicas this replica sees live (membership Leases being renewed, itself included); only "
    "with --shards.",
    registry=REGISTRY)
LAST_SUCCESSFUL_ROUND = Gauge(
    "scalegate_forecaster_last_successful_round_timestamp_seconds",
    "Unix time when the forecaster last finished a successful round: one in which at least one policy "
    "was evaluated (proposed, found unchanged, or refused on its own data or spec, e.g. InsufficientData "
    "or TooUncertain). A round in which every policy failed on Prometheus (MetricsUnavailable), the API "
    "server (ApiError) or an internal error (FitFailed, ForecastFailed), or was skipped, leaves it as it was.",
    registry=REGISTRY)


# -- for the alerts (manifests/alerts/scalegate-rules.yaml) -----------------------------
# Times are exported as timestamps, not ages: a timestamp stays right between updates, and
# the rules compute the age with time().
OLDEST_PENDING_CREATED = Gauge(
    "scalegate_oldest_pending_proposal_creation_timestamp_seconds",
    "Unix time when the oldest proposal still waiting for a decision (phase Pending) in the namespace was "
    "created; no series for a namespace without Pending proposals. Set by the operator.",
    ["namespace"], registry=REGISTRY)
EARLIEST_PENDING_EXPIRY = Gauge(
    "scalegate_earliest_pending_proposal_expiry_timestamp_seconds",
    "Unix time of the earliest spec.validUntil among the namespace's Pending proposals: when the first of "
    "them expires unapproved; no series for a namespace without Pending proposals. Set by the operator.",
    ["namespace"], registry=REGISTRY)
PLAN_BREACHES = Counter(
    "scalegate_plan_breaches_total",
    "Steps of approved plans whose realised load exceeded the step's upperBound (each also a PlanBreached "
    "Event on the proposal). Counted by the forecaster.",
    ["namespace", "policy"], registry=REGISTRY)
FORECASTER_EXPECTED_INTERVAL = Gauge(
    "scalegate_forecaster_expected_round_interval_seconds",
    "Longest spec.forecast.intervalSeconds among the policies the forecaster evaluates (with a forecast, not "
    "suspended), 0 when there are none: a working forecaster finishes a successful round at least this often. "
    "Set by the forecaster each time it lists policies.",
    registry=REGISTRY)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Expose /metrics on `port` (0 disables)."""
    if port:
        start_http_server(port, addr=address, registry=REGISTRY)
