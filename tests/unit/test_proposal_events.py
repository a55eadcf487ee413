"""What the operator keeps per open proposal between watch events (handlers.proposal_event):
the newest body only for a reconcile that is queued (a plan sleeping until its next step,
among 10,000, holds none), and the count of open proposals kept as they come and go."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import kopf
import pytest

from scalegate import handlers, metrics

pytestmark = pytest.mark.unit


class Queue:
    def __init__(self):
        self.added, self.forgotten = [], []

    def add(self, key):
        self.added.append(key)

    def forget(self, key):
        self.forgotten.append(key)


class Reconciler:
    def __init__(self):
        self.own: set[tuple[str, str, str]] = set()

    def is_own_write(self, namespace, name, resource_version):
        return (namespace, name, resource_version) in self.own

    def forget(self, namespace, name):
        pass


def body(name: str, rv: str, phase: str = "Active", policy: str = "web") -> dict:
    return {"metadata": {"namespace": "shop", "name": name, "resourceVersion": rv, "annotations": {}},
            "spec": {"policyRef": {"name": policy}}, "status": {"phase": phase}}


def deliver(runtime, event_type: str, obj: dict) -> None:
    meta = obj["metadata"]
    asyncio.run(handlers.proposal_event(event={"type": event_type, "object": obj}, body=obj,
                                        namespace=meta["namespace"], name=meta["name"],
                                        memo=kopf.Memo(runtime=runtime), hpa_targets={}))


def gauge() -> float:
    return metrics.PROPOSALS_ACTIVE._value.get()


def test_a_body_is_kept_only_for_a_queued_reconcile_and_open_proposals_are_counted():
    runtime = SimpleNamespace(by_policy={}, active=0, bodies={}, parked=set(), queue=Queue(), reconciler=Reconciler(),
                              hpa_index=None)
    deliver(runtime, "ADDED", body("web-1", "1"))  # someone else's write: queued, its body handed over
    assert runtime.queue.added == [("shop", "web-1")] and runtime.bodies[("shop", "web-1")]["metadata"][
        "resourceVersion"] == "1"
    runtime.bodies.pop(("shop", "web-1"))  # the worker takes it; the plan then sleeps until its next step
    runtime.reconciler.own.add(("shop", "web-1", "2"))
    deliver(runtime, "MODIFIED", body("web-1", "2"))  # our own status write: nothing queued, nothing kept
    assert ("shop", "web-1") not in runtime.bodies and len(runtime.queue.added) == 1
    deliver(runtime, "MODIFIED", body("web-1", "3"))  # someone else's again: queued, kept
    runtime.reconciler.own.add(("shop", "web-1", "4"))
    deliver(runtime, "MODIFIED", body("web-1", "4"))  # own write while queued: the newest is handed over
    assert runtime.bodies[("shop", "web-1")]["metadata"]["resourceVersion"] == "4"

    deliver(runtime, "ADDED", body("api-1", "5", phase="Pending", policy="api"))
    deliver(runtime, "ADDED", body("web-2", "6", phase="Pending"))
    deliver(runtime, "MODIFIED", body("web-2", "7", phase="Pending"))  # seen again: counted once
    assert runtime.active == 3 and gauge() == 3
    deliver(runtime, "MODIFIED", body("web-1", "8", phase="Applied"))  # terminal: not open any more
    deliver(runtime, "DELETED", body("api-1", "9", phase="Pending", policy="api"))
    assert runtime.active == 1 and gauge() == 1
    assert runtime.active == sum(len(v) for v in runtime.by_policy.values())
    assert ("shop", "web-1") not in runtime.bodies


def test_a_burst_keeps_at_most_a_bounded_number_of_bodies(monkeypatch):
    monkeypatch.setattr(handlers, "HANDED_OVER_BODIES", 3)
    runtime = SimpleNamespace(by_policy={}, active=0, bodies={}, parked=set(), queue=Queue(), reconciler=Reconciler(),
                              hpa_index=None)
    for i in range(10):  # the start-up listing of ten approved plans
        deliver(runtime, "ADDED", body(f"p-{i}", str(i), phase="Approved", policy=f"p{i}"))
    assert len(runtime.queue.added) == 10 and runtime.active == 10  # every one queued and counted
    assert set(runtime.bodies) == {("shop", "p-0"), ("shop", "p-1"), ("shop", "p-2")}  # only three held
    deliver(runtime, "MODIFIED", body("p-1", "11", phase="Approved", policy="p1"))  # a held one: the newest
    assert runtime.bodies[("shop", "p-1")]["metadata"]["resourceVersion"] == "11"
