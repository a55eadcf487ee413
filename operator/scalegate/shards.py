"""Forecaster shards (issue 16): several forecaster replicas share the policies.

Each policy belongs to one of ``shards`` shards by a stable hash of ``namespace/name``
(:func:`shard_of`: sha256, the same in every process and release; Python's ``hash()`` is
salted per process). Each shard is held through its own Lease in the forecaster's
namespace (:func:`shard_lease`), by one replica at a time; a replica forecasts the
policies of the shards it holds, and checks, just before each write for a policy, that it
still holds its shard (fencing: `ShardKeeper.holds_policy`, `leases.LeaseHolder.holds`).
A shard whose holder dies is taken over once its Lease expires (the Lease's duration after
its last renewal was seen); a replica that stops on SIGTERM releases its Leases, and its
shards move at once.

Fair share
    A replica aims for ``ceil(shards / live replicas)`` shards (:func:`fair_share`). Who is
    live is read from **membership slots**: Leases ``scalegate-forecaster-member-<k>-of-<n>``
    (``k < shards``), of which each replica holds one, renewed like a shard. A replica that
    holds no shard yet (just started) is thus visible to the others, which release their
    shards above the fair share (:func:`plan_moves`), so that a second replica gets half
    of the shards within a few retry periods, not never. A holder is live while its
    slot's record keeps changing; one unchanged for the Lease's duration (by this
    replica's own clock, as `leases` judges expiry) is dead and no longer counted. A
    replica that finds no free slot (more replicas than shards) stands by and holds no
    shard: there would be nothing to give it.

Why the shard count is in the Lease names
    Every replica must hash over the same number of shards. With the count in the name,
    replicas given different numbers (say, during a rollout that changes it) hold
    different Leases and each forecasts its shards: some policies are then forecast
    twice for a while (harmless: the newest proposal supersedes), but none is left out,
    which sharing ``shard-3`` between two meanings of "shard 3" would do.

Pure functions (:func:`shard_of`, :func:`fair_share`, :func:`plan_moves`) decide; the
`ShardKeeper` acts, in a background thread, every retry period.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from .kube import Kube, KubeError
from .leases import LeaseHolder, LeaseRecord, LeaseTimings

log = logging.getLogger("scalegate.shards")

SHARD_LEASE_PREFIX = "scalegate-forecaster-shard-"
MEMBER_LEASE_PREFIX = "scalegate-forecaster-member-"


# -- pure ------------------------------------------------------------------------------
def shard_of(namespace: str, name: str, shards: int) -> int:
    """The shard of policy namespace/name: the first 8 bytes of sha256("namespace/name"),
    big-endian, modulo ``shards``. Stable across processes, hosts and Python versions."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def shard_lease(shard: int, shards: int) -> str:
    """The Lease that holds shard ``shard`` of ``shards``."""
    return f"{SHARD_LEASE_PREFIX}{shard}-of-{shards}"


def member_lease(slot: int, shards: int) -> str:
    """Membership slot ``slot`` (one per replica, at most ``shards``)."""
    return f"{MEMBER_LEASE_PREFIX}{slot}-of-{shards}"


def lease_names(shards: int) -> list[str]:
    """Every Lease name a forecaster with ``shards`` shards uses (for RBAC's resourceNames)."""
    return [shard_lease(i, shards) for i in range(shards)] + [member_lease(i, shards) for i in range(shards)]


def fair_share(shards: int, live_replicas: int) -> int:
    """Shards one replica aims for: ``ceil(shards / live_replicas)`` (all of them alone)."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    return math.ceil(shards / max(1, live_replicas))


@dataclass(frozen=True)
class Moves:
    """What a replica does this period: try to acquire up to ``take`` of ``acquire`` (in
    that order), and release ``release`` (shard numbers)."""

    acquire: tuple[int, ...] = ()
    take: int = 0
    release: tuple[int, ...] = ()


def plan_moves(shards: int, held: Iterable[int], holders: Mapping[int, str], identity: str,
               live: Iterable[str]) -> Moves:
    """Which shards to try to acquire and which to release, towards the fair share.

    Parameters
    ----------
    shards : int
    held : shard numbers this replica holds now (`LeaseHolder.holds`)
    holders : shard number -> holder last seen ("" free or unknown)
    identity : this replica
    live : the other live replicas (holders of a membership slot that is being renewed)

    Returns
    -------
    Moves
        Orphans are the shards held by no live replica (free, or their holder is dead:
        taking one succeeds once its Lease expired). Below the fair share: take orphans
        up to it. Above it: release the extras, the highest numbers first (the others
        then lack at least as many, since ``live * share >= shards``: nothing released
        is left without a taker). At it: nothing (if every live replica has its share,
        no orphan is left either).
    """
    mine = sorted(set(held))
    others = set(live) - {identity}
    share = fair_share(shards, len(others) + 1)
    orphans = [s for s in range(shards) if s not in mine and holders.get(s, "") not in others]
    orphans.sort(key=lambda s: (holders.get(s, "") not in ("", identity), s))  # free (or ours) first
    if len(mine) > share:
        # The others lack at least as many as this one holds above the share (live x share
        # >= shards), so whatever is released has a taker.
        return Moves(release=tuple(sorted(mine, reverse=True)[: len(mine) - share]))
    if len(mine) < share:
        return Moves(tuple(orphans), share - len(mine))
    return Moves()


# -- acting ------------------------------------------------------------------------------
class _Observer:
    """Who holds a Lease, and whether that holder is live: its record changed less than
    the Lease's duration ago, by this process' monotonic clock (as `leases` judges expiry)."""

    def __init__(self, clock: Callable[[], float], default_duration: float):
        self.clock = clock
        self.default_duration = default_duration
        self._seen: dict[str, tuple[tuple[str, str], float]] = {}

    def live_holder(self, name: str, raw: dict | None) -> str:
        """The holder of Lease `name` as read now (`raw`), or "" when free or expired."""
        record = LeaseRecord.from_api(raw) if raw is not None else None
        if record is None or not record.holder:
            self._seen.pop(name, None)
            return ""
        now = self.clock()
        seen = self._seen.get(name)
        if seen is None or seen[0] != record.version:
            self._seen[name] = seen = (record.version, now)
        duration = record.lease_duration_seconds or self.default_duration
        return record.holder if now - seen[1] < duration else ""


class ShardKeeper:
    """Holds this replica's membership slot and its fair share of the shard Leases,
    renewing them every retry period in a background thread (`start`/`stop`), or one
    period at a time (`tick`, for tests and the benchmark).

    Parameters
    ----------
    kube : Kube
    namespace : str
        Where the Leases are (the forecaster's namespace, ``scalegate``).
    identity : str
        This replica (the Pod's name).
    shards : int
    timings : leases.LeaseTimings
    clock : monotonic clock, for tests
    """

    def __init__(self, kube: Kube, namespace: str, identity: str, shards: int,
                 timings: LeaseTimings | None = None, clock: Callable[[], float] = time.monotonic):
        timings = timings or LeaseTimings()
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self.kube, self.namespace, self.identity, self.shards = kube, namespace, identity, shards
        self.timings = timings
        self.leases = LeaseHolder(kube, namespace, identity, timings, clock=clock)
        self._observer = _Observer(clock, timings.lease_duration)
        self._slot: int | None = None
        self._held: frozenset[int] = frozenset()
        self._live = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- what the forecaster asks ----------------------------------------------------------
    def holds(self, shard: int) -> bool:
        """Fencing: whether this replica holds `shard` right now (its renew deadline not passed)."""
        return self.leases.holds(shard_lease(shard, self.shards))

    def held(self) -> frozenset[int]:
        """The shards held right now."""
        return frozenset(s for s in range(self.shards) if self.holds(s))

    def holds_policy(self, namespace: str, name: str) -> bool:
        """Fencing for a write about policy namespace/name: its shard is held right now."""
        return self.holds(shard_of(namespace, name, self.shards))

    def mine(self, policies: list[dict], held_before: Iterable[int] | None = None) -> list[dict]:
        """The policies of the shards held right now and, if given, already in
        `held_before` (the shards held before `policies` were listed: a shard taken over
        after the list may have been written by its previous holder since, so its policies
        wait for the next list, which shows those writes)."""
        held = self.held()
        if held_before is not None:
            held = held & frozenset(held_before)
        return [body for body in policies
                if shard_of(*_namespace_name(body), self.shards) in held]

    @property
    def live_replicas(self) -> int:
        return self._live

    # -- one period ------------------------------------------------------------------------
    def tick(self) -> None:
        """One period: renew the membership slot, count the live replicas, renew the shards
        held and look at the others (one request per Lease), then acquire or release
        towards the fair share (`plan_moves`). API errors are logged; a Lease not renewed
        in time simply stops being held (`holds`)."""
        self._keep_slot()
        members = self._members() if self._slot is not None else set()
        self._live = len(members) + 1
        holders: dict[int, str] = {}
        for shard in range(self.shards):
            name = shard_lease(shard, self.shards)
            known = self.leases.holder_of(name)
            if shard in self._held or (known and known != self.identity):
                # ours: renew it; another's: look (the holder takes it over once it expired)
                self.leases.try_acquire_or_renew(name)
                holders[shard] = self.leases.holder_of(name)
                continue
            try:
                raw = self.kube.get_lease(self.namespace, name)
            except KubeError as err:
                log.warning("cannot read shard lease %s: %s", name, err)
                holders[shard] = known
                continue
            holders[shard] = LeaseRecord.from_api(raw).holder if raw is not None else ""
        held = self.held()
        if self._slot is None:  # no slot (more replicas than shards): stand by, hold nothing
            moves = Moves(release=tuple(sorted(held)))
        else:
            moves = plan_moves(self.shards, held, holders, self.identity, members)
        taken = 0
        for shard in moves.acquire:
            if taken >= moves.take:
                break
            if self.leases.try_acquire_or_renew(shard_lease(shard, self.shards)):
                taken += 1
        for shard in moves.release:
            log.info("releasing shard %d of %d: %d live replicas, fair share %d", shard, self.shards,
                     self._live, fair_share(self.shards, self._live))
            self.leases.release(shard_lease(shard, self.shards))
        with self._lock:
            self._held = self.held()

    def _keep_slot(self) -> None:
        """Renew our membership slot, or take a free one (starting at a slot picked by our
        identity's hash, so that replicas starting together try different ones)."""
        if self._slot is not None:
            if self.leases.try_acquire_or_renew(member_lease(self._slot, self.shards)):
                return
            log.warning("lost membership slot %d; looking for another", self._slot)
            self._slot = None
        start = shard_of("", self.identity, self.shards)
        for k in range(self.shards):
            slot = (start + k) % self.shards
            name = member_lease(slot, self.shards)
            if self._slot_holder(slot) not in ("", self.identity):  # held by another, or unreadable
                continue
            if self.leases.try_acquire_or_renew(name):
                self._slot = slot
                log.info("took membership slot %d of %d as %s", slot, self.shards, self.identity)
                return

    def _members(self) -> set[str]:
        """The live holders of the other membership slots (one read each)."""
        members = set()
        for slot in range(self.shards):
            if slot == self._slot:
                continue
            holder = self._slot_holder(slot)
            if holder and holder != self.identity:
                members.add(holder)
        return members

    def _slot_holder(self, slot: int) -> str | None:
        """The live holder of a membership slot ("" when free or expired), None when it
        cannot be read (logged)."""
        name = member_lease(slot, self.shards)
        try:
            raw = self.kube.get_lease(self.namespace, name)
        except KubeError as err:
            log.warning("cannot read membership slot %s: %s", name, err)
            return None
        return self._observer.live_holder(name, raw)

    # -- the background thread ---------------------------------------------------------------
    def start(self) -> "ShardKeeper":
        """Tick every retry period in a daemon thread until `stop`."""
        def run() -> None:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self.tick()
                except Exception:  # never let the thread die: a replica without it holds nothing
                    log.exception("shard keeping failed; retrying")
                self._stop.wait(max(0.0, self.timings.retry_period - (time.monotonic() - started)))

        self._thread = threading.Thread(target=run, name="shards", daemon=True)
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Stop ticking; with `release`, release every shard and the slot so that the other
        replicas take them at once (best effort)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timings.retry_period + 10)
        if release:
            for shard in range(self.shards):
                self.leases.release(shard_lease(shard, self.shards))
            if self._slot is not None:
                self.leases.release(member_lease(self._slot, self.shards))


def _namespace_name(body: dict) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")
