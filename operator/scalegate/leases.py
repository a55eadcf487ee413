"""Named Leases (coordination.k8s.io/v1) held by one identity: the operator's leader
election and the forecaster's shards.

The rules are Kubernetes' own (client-go's leader election, which kube-controller-manager
uses), with the same default timings:

- A candidate may take a Lease that is free (no holderIdentity, or never created), that is
  its own, or whose record it has seen *unchanged* for the record's leaseDurationSeconds.
  Expiry is judged by the candidate's own monotonic clock from when it first saw that
  record, never by comparing the record's renewTime with the local wall clock: that is
  what the API documents ("measured against the time of last observed renewTime") and it
  makes clock skew between nodes harmless (only different clock *rates* matter).
- Every write is optimistic: a create that finds the Lease already there, or a replace
  whose resourceVersion is no longer current, means another candidate won (Conflict).
- Fencing: the holder acts only while its last successful acquire or renew *started*
  (clock read before the request) less than renew_deadline ago (`LeaseHolder.holds`).
  A successor can take the Lease no earlier than leaseDurationSeconds after it first saw
  the holder's last write, which came after that start: so the holder has stopped acting
  at least lease_duration - renew_deadline (5 s by default) before anyone else may start.
  That margin is for a write the holder checked just before its deadline and that is
  still on its way; the API server has no fencing tokens, so nothing can make it zero.

`kubernetes.leaderelection` (the client's LeaderElection with a LeaseLock) is not used:
its `run()` blocks a thread per Lease in a loop with no way to stop it or to release the
Lease on shutdown, it offers no check a writer can make just before each write (only an
`onstopped_leading` callback once the renew loop has given up, which a paused process runs
late, after resuming, while its other threads already write), it talks through the
client's global default configuration rather than `Kube`, refuses a retry period under
1 s and exits the process (`sys.exit`) on a bad setting; and a forecaster replica holding
several shards would need one such thread per shard.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .kube import Conflict, Kube, KubeError

log = logging.getLogger("scalegate.leases")

MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class LeaseTimings:
    """How a Lease is held; kube-controller-manager's defaults."""

    lease_duration: float = 15.0
    """Seconds a candidate waits, after it last saw the record change, before it takes the
    Lease from its holder (written to the Lease as leaseDurationSeconds, rounded up)."""
    renew_deadline: float = 10.0
    """Seconds after the start of its last successful renewal that a holder stops acting."""
    retry_period: float = 2.0
    """Seconds between attempts to acquire or renew."""

    def __post_init__(self) -> None:
        values = (self.retry_period, self.renew_deadline, self.lease_duration)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"lease timings must be finite numbers of seconds: {self}")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "lease timings must satisfy 0 < retry period < renew deadline < lease duration "
                f"(got retry period {self.retry_period:g}s, renew deadline {self.renew_deadline:g}s, "
                f"lease duration {self.lease_duration:g}s): a holder must stop acting (renew deadline) "
                "before a successor may take over (lease duration), and get several tries to renew before that")

    @property
    def lease_duration_seconds(self) -> int:
        """leaseDurationSeconds as written to the Lease (an integer; rounded up, the safe way)."""
        return max(1, math.ceil(self.lease_duration))


# -- the record and the pure decision ---------------------------------------------------
def format_microtime(moment: dt.datetime) -> str:
    """A MicroTime as the API server writes it: UTC, microseconds, 'Z'."""
    return moment.astimezone(dt.timezone.utc).strftime(MICROTIME)


def _parse_microtime(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class LeaseRecord:
    """A Lease as read: who holds it, for how long, and the version it was read at."""

    holder: str = ""  # "" when free
    lease_duration_seconds: int | None = None
    acquire_time: dt.datetime | None = None
    renew_time: dt.datetime | None = None
    transitions: int = 0
    resource_version: str = ""
    spec: dict | None = None  # as read, so that a replace keeps fields scalegate does not set
    metadata: dict | None = None

    @classmethod
    def from_api(cls, raw: dict) -> "LeaseRecord":
        spec = raw.get("spec") or {}
        meta = raw.get("metadata") or {}
        return cls(holder=str(spec.get("holderIdentity") or ""),
                   lease_duration_seconds=_int_or_none(spec.get("leaseDurationSeconds")),
                   acquire_time=_parse_microtime(spec.get("acquireTime")),
                   renew_time=_parse_microtime(spec.get("renewTime")),
                   transitions=_int_or_none(spec.get("leaseTransitions")) or 0,
                   resource_version=str(meta.get("resourceVersion") or ""), spec=dict(spec),
                   metadata={k: meta[k] for k in ("labels", "annotations") if meta.get(k)})

    @property
    def version(self) -> tuple[str, str]:
        """What tells one write of the record from the next (every write moves the
        resourceVersion; the holder alone covers a fake kube in tests that keeps none)."""
        return self.resource_version, self.holder


def may_take(record: LeaseRecord | None, identity: str, unchanged_for: float, default_duration: float) -> bool:
    """Whether `identity` may write itself into the Lease now: there is none, it is free,
    it is ours, or this candidate has seen the same record for at least its
    leaseDurationSeconds (`unchanged_for`, by the candidate's own monotonic clock). A
    record without a usable duration (hand-written) waits `default_duration`."""
    if record is None or not record.holder or record.holder == identity:
        return True
    duration = record.lease_duration_seconds
    return unchanged_for >= (duration if duration is not None and duration > 0 else default_duration)


def next_spec(record: LeaseRecord | None, identity: str, timings: LeaseTimings, now: dt.datetime) -> dict:
    """The spec that makes `identity` the holder (or renews it): acquireTime kept on a
    renewal, leaseTransitions counted when the holder changes (also from free)."""
    spec = dict(record.spec or {}) if record is not None else {}
    ours = record is not None and record.holder == identity
    acquired = record.acquire_time if ours and record is not None and record.acquire_time else now
    spec.update({
        "holderIdentity": identity,
        "leaseDurationSeconds": timings.lease_duration_seconds,
        "acquireTime": format_microtime(acquired),
        "renewTime": format_microtime(now),
        "leaseTransitions": (record.transitions + (0 if ours else 1)) if record is not None else 0,
    })
    return spec


def released_spec(record: LeaseRecord, now: dt.datetime) -> dict:
    """The spec a holder leaves behind on shutdown: no holder, so a successor need not wait
    for expiry (and a 1 s duration, as client-go's release writes)."""
    spec = dict(record.spec or {})
    spec.pop("holderIdentity", None)
    spec.update({"leaseDurationSeconds": 1, "acquireTime": format_microtime(now),
                 "renewTime": format_microtime(now), "leaseTransitions": record.transitions})
    return spec


# -- the holder -------------------------------------------------------------------------
@dataclass
class _State:
    seen: tuple[str, str] | None = None  # LeaseRecord.version last seen
    seen_at: float = 0.0  # monotonic, when that version was first seen
    holder: str = ""  # the holder last seen or written
    renewed_at: float | None = None  # monotonic start of our last successful acquire/renew
    record: LeaseRecord | None = None  # as we last wrote it (for release)


class LeaseHolder:
    """Holds named Leases (coordination.k8s.io/v1) in one namespace for one identity.

    Thread-safe: the methods may be called from any thread (one round trip at a time per
    name is the caller's business; the Lease's resourceVersion keeps two safe anyway)."""

    def __init__(self, kube: Kube, namespace: str, identity: str, timings: LeaseTimings = LeaseTimings(),
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)):
        if not identity:
            raise ValueError("a lease holder needs an identity")
        self.kube = kube
        self.namespace = namespace
        self.identity = identity
        self.timings = timings
        self.clock = clock
        self.wall_clock = wall_clock
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def _state(self, name: str) -> _State:
        return self._states.setdefault(name, _State())

    def try_acquire_or_renew(self, name: str) -> bool:
        """One round trip (a get, then a create or a resourceVersion-guarded replace): True
        when this identity holds the Lease now. False when another holds it, when another
        candidate won the write (Conflict), or on any other API failure (logged): a holder
        keeps acting until its renew deadline even so, see `holds`."""
        started = self.clock()
        try:
            raw = self.kube.get_lease(self.namespace, name)
        except KubeError as err:
            log.warning("lease %s/%s: cannot read it: %s", self.namespace, name, err)
            return False
        record = LeaseRecord.from_api(raw) if raw is not None else None
        with self._lock:
            state = self._state(name)
            now = self.clock()
            if record is None or record.version != state.seen:
                state.seen, state.seen_at = (record.version if record else None), now
            unchanged_for = now - state.seen_at
            if record is not None and record.holder != self.identity and state.renewed_at is not None:
                # Someone else is written in: whatever our clock says, we hold nothing now.
                log.warning("lease %s/%s: now %s; stopping", self.namespace, name,
                            f"held by {record.holder}" if record.holder else "free (cleared by someone else)")
                state.renewed_at = None
            state.holder = record.holder if record else ""
        if not may_take(record, self.identity, unchanged_for, self.timings.lease_duration):
            return False
        spec = next_spec(record, self.identity, self.timings, self.wall_clock())
        try:
            if record is None:
                written = self.kube.create_lease(self.namespace, name, spec)
            else:
                written = self.kube.replace_lease(self.namespace, name, spec, record.resource_version,
                                                  metadata=record.metadata)
        except Conflict:
            # Another candidate wrote first: theirs, until we see otherwise (fail closed).
            log.info("lease %s/%s: another candidate wrote it first", self.namespace, name)
            with self._lock:
                self._state(name).renewed_at = None
            return False
        except KubeError as err:
            log.warning("lease %s/%s: cannot write it: %s", self.namespace, name, err)
            return False
        new = LeaseRecord.from_api(written) if written else LeaseRecord(holder=self.identity, spec=spec)
        with self._lock:
            state = self._state(name)
            if state.renewed_at is None:
                log.info("lease %s/%s: acquired as %s", self.namespace, name, self.identity)
            state.renewed_at = started
            state.record = new
            state.holder = self.identity
            state.seen, state.seen_at = new.version, self.clock()
        return True

    def holds(self, name: str) -> bool:
        """Fencing: True only while our last successful acquire or renew of `name` started
        less than renew_deadline ago (the clock read before that round trip's first request)."""
        with self._lock:
            state = self._states.get(name)
            renewed = state.renewed_at if state else None
        return renewed is not None and self.clock() - renewed < self.timings.renew_deadline

    def holder_of(self, name: str) -> str:
        """The holder this replica last saw or wrote ("" when free or not seen yet)."""
        with self._lock:
            state = self._states.get(name)
            return state.holder if state else ""

    def release(self, name: str) -> None:
        """Best effort, on shutdown: stop acting at once, then, if we held the Lease, clear
        its holderIdentity so that a successor need not wait for it to expire. Never raises."""
        held = self.holds(name)
        with self._lock:
            state = self._state(name)
            state.renewed_at = None  # first: nothing acts on this Lease from here on
            record = state.record
        if not held or record is None or not record.resource_version:
            return
        try:
            self.kube.replace_lease(self.namespace, name, released_spec(record, self.wall_clock()),
                                    record.resource_version, metadata=record.metadata)
            log.info("lease %s/%s: released", self.namespace, name)
            with self._lock:
                self._state(name).holder = ""
        except KubeError as err:  # Conflict: someone changed it since; it is not ours to clear
            log.warning("lease %s/%s: could not release it (a successor waits for it to expire): %s",
                        self.namespace, name, err)


class NotLeader(KubeError):
    """A write this replica refused to send: it does not hold the Lease that allows it to
    act (a standby, or a leader past its renew deadline)."""


class FencedKube(Kube):
    """A `Kube` that sends no write (any request but a GET) unless `may_act()` says so at
    that moment, so every write of the operator, including ones added later, is fenced
    right where it leaves the process; a refused one raises `NotLeader`."""

    def __init__(self, api_client, may_act: Callable[[], bool], component: str = "scalegate-operator"):
        super().__init__(api_client, component=component)
        self.may_act = may_act

    def _raw(self, what: str, method: str, path: str, body: Any = None, *args: Any, **kwargs: Any) -> Any:
        if method != "GET" and not self.may_act():
            raise NotLeader(what, "refused: this replica does not hold the leader Lease (a standby, or past its "
                                  "renew deadline)")
        return super()._raw(what, method, path, body, *args, **kwargs)
