"""The gauges the approval alerts read: set from the operator's watch, gone with the last
Pending proposal of a namespace; and the forecaster's expected round interval."""

from __future__ import annotations

from prometheus_client import generate_latest

from scalegate import metrics
from scalegate.forecaster import expected_round_interval
from scalegate.handlers import PendingTimes


def _proposal(name: str, created: str, until: str, phase: str | None = "Pending") -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"validUntil": until}, "status": {"phase": phase} if phase else {}}


def _value(gauge, namespace: str) -> float | None:
    for sample in gauge.collect()[0].samples:
        if sample.labels.get("namespace") == namespace:
            return sample.value
    return None


def test_oldest_creation_and_earliest_expiry_per_namespace():
    pending = PendingTimes()
    pending.update("ns-a", "p1", _proposal("p1", "2026-01-01T00:10:00Z", "2026-01-01T02:00:00Z"), gone=False)
    pending.update("ns-a", "p2", _proposal("p2", "2026-01-01T00:05:00Z", "2026-01-01T03:00:00Z", phase=None),
                   gone=False)
    assert _value(metrics.OLDEST_PENDING_CREATED, "ns-a") == 1767225900.0  # 00:05
    assert _value(metrics.EARLIEST_PENDING_EXPIRY, "ns-a") == 1767232800.0  # 02:00

    # Approved leaves the Pending set: only p2 is left.
    pending.update("ns-a", "p1", _proposal("p1", "2026-01-01T00:10:00Z", "2026-01-01T02:00:00Z", "Approved"),
                   gone=False)
    assert _value(metrics.EARLIEST_PENDING_EXPIRY, "ns-a") == 1767236400.0  # 03:00

    # The last one goes: no series, so no alert stays firing for the namespace.
    pending.update("ns-a", "p2", {}, gone=True)
    assert _value(metrics.OLDEST_PENDING_CREATED, "ns-a") is None
    assert b'namespace="ns-a"' not in generate_latest(metrics.REGISTRY)


def test_a_proposal_with_an_unreadable_time_is_left_out():
    pending = PendingTimes()
    pending.update("ns-b", "bad", _proposal("bad", "2026-01-01T00:00:00Z", "not a time"), gone=False)
    assert _value(metrics.OLDEST_PENDING_CREATED, "ns-b") is None


def test_expected_round_interval_counts_forecast_policies_only():
    forecast = {"query": "q", "capacityPerReplica": 1}
    policies = [
        {"spec": {"forecast": {**forecast, "intervalSeconds": 300}}},
        {"spec": {"forecast": {**forecast, "intervalSeconds": 1800}, "suspend": True}},
        {"spec": {}},
        {"spec": {"forecast": dict(forecast)}},  # the default interval
    ]
    assert expected_round_interval(policies) == 900.0
    assert expected_round_interval([{"spec": {}}]) == 0.0
