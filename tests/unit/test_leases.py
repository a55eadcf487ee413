"""Leases (issue 16): the pure decision, the timings, and LeaseHolder against a fake
Lease API that keeps resourceVersions as the API server does, with a fake clock."""

from __future__ import annotations

import datetime as dt

import pytest

from scalegate.kube import Conflict, Unavailable
from scalegate.leases import (
    FencedKube,
    LeaseHolder,
    LeaseRecord,
    LeaseTimings,
    NotLeader,
    may_take,
    next_spec,
    released_spec,
)

T0 = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.timezone.utc)
TIMINGS = LeaseTimings(lease_duration=15, renew_deadline=10, retry_period=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeLeases:
    """get/create/replace of Leases with the API server's optimistic concurrency."""

    def __init__(self, clock: Clock | None = None, latency: float = 0.0) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.version = 0
        self.fail: Exception | None = None
        self.writes: list[tuple[str, str, dict]] = []
        self.clock, self.latency = clock, latency

    def _spend(self) -> None:
        if self.clock is not None:
            self.clock.advance(self.latency)
        if self.fail is not None:
            raise self.fail

    def _stamp(self, namespace: str, name: str, spec: dict, metadata: dict | None = None) -> dict:
        self.version += 1
        obj = {"metadata": dict(metadata or {}, name=name, namespace=namespace, resourceVersion=str(self.version)),
               "spec": dict(spec)}
        self.objects[namespace, name] = obj
        return obj

    def get_lease(self, namespace: str, name: str) -> dict | None:
        self._spend()
        obj = self.objects.get((namespace, name))
        return None if obj is None else {"metadata": dict(obj["metadata"]), "spec": dict(obj["spec"])}

    def create_lease(self, namespace: str, name: str, spec: dict, labels=None) -> dict:
        self._spend()
        if (namespace, name) in self.objects:
            raise Conflict(f"create lease {namespace}/{name}", "already exists", 409, "AlreadyExists")
        self.writes.append(("create", name, spec))
        return self._stamp(namespace, name, spec)

    def replace_lease(self, namespace: str, name: str, spec: dict, resource_version: str, metadata=None) -> dict:
        self._spend()
        current = self.objects.get((namespace, name))
        if current is None or current["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(f"update lease {namespace}/{name}", "the object has been modified", 409, "Conflict")
        self.writes.append(("replace", name, spec))
        return self._stamp(namespace, name, spec, metadata)


def holder(kube, identity: str, clock: Clock, timings: LeaseTimings = TIMINGS) -> LeaseHolder:
    return LeaseHolder(kube, "scalegate", identity, timings, clock=clock, wall_clock=lambda: T0)


# -- timings ----------------------------------------------------------------------------
def test_default_timings_are_kube_controller_managers():
    assert (LeaseTimings().lease_duration, LeaseTimings().renew_deadline, LeaseTimings().retry_period) == (15, 10, 2)


@pytest.mark.parametrize("lease, renew, retry", [
    (10, 10, 2),   # renew deadline not below the lease duration
    (15, 10, 10),  # retry period not below the renew deadline
    (15, 10, 0),   # no retry period
    (15, 20, 2),
    (15, 10, -1),
])
def test_timings_out_of_order_are_refused_with_the_rule(lease, renew, retry):
    with pytest.raises(ValueError, match="0 < retry period < renew deadline < lease duration"):
        LeaseTimings(lease_duration=lease, renew_deadline=renew, retry_period=retry)


def test_timings_must_be_finite():
    with pytest.raises(ValueError, match="finite numbers of seconds"):
        LeaseTimings(lease_duration=float("inf"))


def test_short_timings_for_tests_are_allowed_and_the_duration_is_rounded_up():
    timings = LeaseTimings(lease_duration=4.5, renew_deadline=3, retry_period=0.5)
    assert timings.lease_duration_seconds == 5


# -- the pure decision --------------------------------------------------------------------
def record(holder: str = "other", duration: int | None = 15, rv: str = "7", transitions: int = 2) -> LeaseRecord:
    return LeaseRecord(holder=holder, lease_duration_seconds=duration, acquire_time=T0, renew_time=T0,
                       transitions=transitions, resource_version=rv, spec={"holderIdentity": holder})


@pytest.mark.parametrize("rec, unchanged_for, expected", [
    (None, 0, True),                            # no Lease yet: create it
    (record(holder=""), 0, True),               # free (released)
    (record(holder="me"), 0, True),             # ours: renew
    (record(), 0, False),                       # another's, just seen
    (record(), 14.9, False),                    # not yet expired by our own clock
    (record(), 15, True),                       # unchanged for its whole duration
    (record(duration=4), 4, True),              # the holder's duration counts, not ours
    (record(duration=30), 20, False),
    (record(duration=None), 14, False),         # no duration in the record: ours (15) is used
    (record(duration=None), 15, True),
])
def test_may_take(rec, unchanged_for, expected):
    assert may_take(rec, "me", unchanged_for, default_duration=15) is expected


def test_record_parses_microtime_and_tolerates_a_hand_written_lease():
    raw = {"metadata": {"resourceVersion": "42", "labels": {"a": "b"}},
           "spec": {"holderIdentity": "pod-1", "leaseDurationSeconds": 15, "leaseTransitions": 3,
                    "acquireTime": "2026-11-27T12:00:00.123456Z", "renewTime": "garbage"}}
    rec = LeaseRecord.from_api(raw)
    assert (rec.holder, rec.lease_duration_seconds, rec.transitions, rec.resource_version) == ("pod-1", 15, 3, "42")
    assert rec.acquire_time == T0.replace(microsecond=123456) and rec.renew_time is None
    assert rec.metadata == {"labels": {"a": "b"}}
    assert LeaseRecord.from_api({}).holder == ""


def test_next_spec_counts_transitions_and_keeps_acquire_time_on_renewal():
    later = T0 + dt.timedelta(seconds=30)
    taken = next_spec(record(holder="other", transitions=2), "me", TIMINGS, later)
    assert taken["holderIdentity"] == "me" and taken["leaseTransitions"] == 3
    assert taken["acquireTime"] == taken["renewTime"] == "2026-11-27T12:00:30.000000Z"
    assert taken["leaseDurationSeconds"] == 15
    renewed = next_spec(record(holder="me", transitions=3), "me", TIMINGS, later)
    assert renewed["leaseTransitions"] == 3 and renewed["acquireTime"] == "2026-11-27T12:00:00.000000Z"
    assert next_spec(None, "me", TIMINGS, T0)["leaseTransitions"] == 0
    released = released_spec(record(holder="me", transitions=3), later)
    assert "holderIdentity" not in released and released["leaseTransitions"] == 3


# -- LeaseHolder ----------------------------------------------------------------------------
def test_first_candidate_creates_the_lease_and_the_second_waits_for_expiry():
    clock, kube = Clock(), FakeLeases()
    a, b = holder(kube, "a", clock), holder(kube, "b", clock)
    assert a.try_acquire_or_renew("op") and a.holds("op")
    spec = kube.objects["scalegate", "op"]["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 15 and spec["leaseTransitions"] == 0
    assert not b.try_acquire_or_renew("op") and not b.holds("op") and b.holder_of("op") == "a"
    # a dies: b takes over only after seeing the same record for the lease duration
    clock.advance(14)
    assert not b.try_acquire_or_renew("op")
    clock.advance(1)
    assert b.try_acquire_or_renew("op") and b.holds("op")
    assert kube.objects["scalegate", "op"]["spec"]["leaseTransitions"] == 1
    assert not a.holds("op")  # its deadline passed long ago


def test_a_renewing_holder_is_never_taken_over():
    clock, kube = Clock(), FakeLeases()
    a, b = holder(kube, "a", clock), holder(kube, "b", clock)
    a.try_acquire_or_renew("op")
    for _ in range(20):
        clock.advance(2)
        assert a.try_acquire_or_renew("op")
        assert not b.try_acquire_or_renew("op")
    assert a.holds("op") and not b.holds("op")


def test_expiry_counts_from_when_the_candidate_first_saw_the_record_not_its_renew_time():
    """A candidate that starts late still waits a whole duration (clock skew cannot cut it short)."""
    clock, kube = Clock(), FakeLeases()
    holder(kube, "a", clock).try_acquire_or_renew("op")
    clock.advance(3600)  # a is long dead; b only starts now
    b = holder(kube, "b", clock)
    assert not b.try_acquire_or_renew("op")
    clock.advance(15)
    assert b.try_acquire_or_renew("op")


def test_holds_is_fenced_by_the_start_of_the_last_successful_renewal():
    """The deadline counts from the clock read *before* the round trip: a slow renewal
    buys no time, and a holder that cannot renew stops acting at the deadline."""
    clock = Clock()
    kube = FakeLeases(clock, latency=1.5)  # each request takes 1.5 s
    a = holder(kube, "a", clock)
    started = clock()
    assert a.try_acquire_or_renew("op")  # get + create: 3 s
    clock.now = started + 9.99
    assert a.holds("op")
    clock.now = started + 10.0
    assert not a.holds("op")


def test_a_holder_that_cannot_renew_keeps_acting_only_until_its_deadline():
    clock, kube = Clock(), FakeLeases()
    a = holder(kube, "a", clock)
    assert a.try_acquire_or_renew("op")
    kube.fail = Unavailable("get lease", "connection refused")
    clock.advance(2)
    assert a.try_acquire_or_renew("op") is False  # an API failure is an answer, not an exception
    assert a.holds("op")  # still within the renew deadline of the last success
    clock.advance(8)
    assert not a.holds("op")
    kube.fail = None
    assert a.try_acquire_or_renew("op") and a.holds("op")  # still written in as ours: renewed


def test_the_holder_stops_acting_the_moment_it_sees_another_holder():
    clock, kube = Clock(), FakeLeases()
    a = holder(kube, "a", clock)
    a.try_acquire_or_renew("op")
    obj = kube.objects["scalegate", "op"]
    kube.replace_lease("scalegate", "op", dict(obj["spec"], holderIdentity="intruder"),
                       obj["metadata"]["resourceVersion"])
    assert not a.try_acquire_or_renew("op") and not a.holds("op")


def test_a_lost_write_race_is_false_not_an_error():
    """Two candidates read the same expired record; the one whose replace comes second
    gets Conflict from the resourceVersion and does not hold it."""
    clock, kube = Clock(), FakeLeases()
    holder(kube, "dead", clock).try_acquire_or_renew("op")
    b, c = holder(kube, "b", clock), holder(kube, "c", clock)
    b.try_acquire_or_renew("op"), c.try_acquire_or_renew("op")
    clock.advance(15)
    real_replace = kube.replace_lease

    def c_writes_first(namespace, name, spec, resource_version, metadata=None):
        kube.replace_lease = real_replace
        obj = kube.objects[namespace, name]
        real_replace(namespace, name, dict(obj["spec"], holderIdentity="c"), obj["metadata"]["resourceVersion"])
        return real_replace(namespace, name, spec, resource_version, metadata)

    kube.replace_lease = c_writes_first
    assert b.try_acquire_or_renew("op") is False and not b.holds("op")
    assert kube.objects["scalegate", "op"]["spec"]["holderIdentity"] == "c"


def test_a_renewal_that_loses_a_write_race_stops_acting_at_once():
    """Someone wrote the Lease between our read and our replace: we cannot know it is
    still ours, so we act no more until a read shows it is (fail closed)."""
    clock, kube = Clock(), FakeLeases()
    a = holder(kube, "a", clock)
    assert a.try_acquire_or_renew("op")
    real_replace = kube.replace_lease

    def intruder_first(namespace, name, spec, resource_version, metadata=None):
        kube.replace_lease = real_replace
        obj = kube.objects[namespace, name]
        real_replace(namespace, name, dict(obj["spec"], holderIdentity="x"), obj["metadata"]["resourceVersion"])
        return real_replace(namespace, name, spec, resource_version, metadata)

    kube.replace_lease = intruder_first
    clock.advance(2)
    assert a.try_acquire_or_renew("op") is False
    assert not a.holds("op")


def test_create_race_lost_is_false():
    clock, kube = Clock(), FakeLeases()
    a = holder(kube, "a", clock)
    real_get = kube.get_lease
    kube.get_lease = lambda ns, name: (kube.create_lease(ns, name, {"holderIdentity": "b"}), None)[1]
    assert a.try_acquire_or_renew("op") is False and not a.holds("op")
    kube.get_lease = real_get


def test_release_clears_the_holder_so_a_successor_takes_over_at_once():
    clock, kube = Clock(), FakeLeases()
    a, b = holder(kube, "a", clock), holder(kube, "b", clock)
    a.try_acquire_or_renew("op")
    assert not b.try_acquire_or_renew("op")
    a.release("op")
    assert not a.holds("op")
    assert "holderIdentity" not in kube.objects["scalegate", "op"]["spec"]
    assert b.try_acquire_or_renew("op") and b.holds("op")


def test_release_of_a_lease_not_held_writes_nothing_and_never_raises():
    clock, kube = Clock(), FakeLeases()
    a, b = holder(kube, "a", clock), holder(kube, "b", clock)
    a.try_acquire_or_renew("op")
    b.try_acquire_or_renew("op")
    writes = len(kube.writes)
    b.release("op")
    b.release("never-seen")
    assert len(kube.writes) == writes
    kube.fail = Unavailable("update lease", "connection refused")
    a.release("op")  # logged, not raised
    assert not a.holds("op")


def test_several_leases_are_held_independently():
    clock, kube = Clock(), FakeLeases()
    a, b = holder(kube, "a", clock), holder(kube, "b", clock)
    assert a.try_acquire_or_renew("shard-0") and b.try_acquire_or_renew("shard-1")
    assert a.try_acquire_or_renew("shard-2")
    assert (a.holds("shard-0"), a.holds("shard-1"), a.holds("shard-2")) == (True, False, True)
    assert (b.holds("shard-0"), b.holds("shard-1")) == (False, True)


# -- fencing of every write -------------------------------------------------------------
class Recorder(FencedKube):
    def __init__(self, may_act):
        self.may_act = may_act
        self.sent: list[str] = []

    @property
    def server(self) -> str:
        return "https://test"


def test_fenced_kube_sends_no_write_without_the_lease_but_still_reads(monkeypatch):
    leading = [True]
    kube = Recorder(lambda: leading[0])
    monkeypatch.setattr("scalegate.kube.Kube._raw",
                        lambda self, what, method, path, body=None, *a, **k: self.sent.append(method) or {})
    kube._raw("scale", "PUT", "/x", {})
    leading[0] = False
    kube._raw("read", "GET", "/x")
    for method in ("PUT", "PATCH", "POST", "DELETE"):
        with pytest.raises(NotLeader, match="does not hold the leader Lease"):
            kube._raw("write", method, "/x", {})
    assert kube.sent == ["PUT", "GET"]
