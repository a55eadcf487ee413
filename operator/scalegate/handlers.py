"""kopf handlers of the operator: thin. Watch events feed a work queue; the reconciler
decides. Run with `scalegate operator` or `kopf run -m scalegate.handlers`.

Only event handlers are used, no state-persisting ones: kopf then writes no bookkeeping
annotations and adds no finalizers to proposals, and terminal proposals keep no handler,
daemon or timer alive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import os
import random
import uuid
from dataclasses import dataclass, field

import kopf

from . import __version__, metrics
from .kube import Kube, api_client, load_config
from .leases import FencedKube, LeaseHolder, LeaseTimings
from .model import (
    APPROVED,
    GROUP,
    OPEN_PROPOSALS_FIELD_SELECTOR,
    POLICY_PLURAL,
    PROPOSAL_PLURAL,
    VERSION,
    InvalidObject,
    Phase,
    TargetRef,
    parse_time,
)
from .reconciler import Reconciler, fault_hook_from_env
from .records import Records
from .settings import OperatorSettings, bind_address, process_identity, resolve
from .workqueue import WorkQueue

log = logging.getLogger("scalegate.operator")

LIST_PAGE_SIZE = 500


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf deep-copies every object on every event to diff it against the last handled
    state; only change handlers (on.create/update/...) use that diff, and this operator
    has none, so the copy is skipped. Replace this if a change handler is ever added."""

    def build(self, *, body, extra_fields=None):
        return {}

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence) -> None:
        pass


@dataclass
class Election:
    """Which replica acts (issue 16). With leader election on, only the holder of the
    Lease reconciles, and its every write is fenced (leases.FencedKube) by `may_act`: a
    leader that could not renew in time stops before a standby may take over. A standby
    keeps watching, so it takes over warm. Off, this replica always acts."""

    identity: str
    holder: LeaseHolder | None = None  # None: leader election off
    lease: str = ""
    stopping: bool = False  # shutting down: nothing more is written
    task: asyncio.Task | None = None
    executor: concurrent.futures.ThreadPoolExecutor | None = None  # the Lease's own thread: never behind reconciles

    def may_act(self) -> bool:
        if self.stopping:
            return False
        return self.holder is None or self.holder.holds(self.lease)

    def describe(self) -> dict:
        """For the health endpoint: this replica's role, and who leads as far as it knows."""
        role = "leader" if self.may_act() else ("stopping" if self.stopping else "standby")
        if self.holder is None:
            return {"role": role, "identity": self.identity, "leaderElection": False}
        return {"role": role, "identity": self.identity, "leaderElection": True,
                "lease": f"{self.holder.namespace}/{self.lease}", "holder": self.holder.holder_of(self.lease)}


@dataclass
class Runtime:
    """Application objects, passed through kopf's memo."""

    settings: OperatorSettings
    reconciler: Reconciler
    queue: WorkQueue
    executor: concurrent.futures.ThreadPoolExecutor
    by_policy: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)
    active: int = 0  # the open proposals in by_policy, counted as they come and go
    # The newest body a watch event brought per open proposal whose reconcile is queued,
    # handed to it instead of a read (the event loop writes, workers only get it). Not kept
    # for one that only waits for a timer, nor beyond HANDED_OVER_BODIES queued ones: the
    # start-up listing of 10,000 approved plans would hold 10,000 bodies (300 MB).
    bodies: dict[tuple[str, str], dict] = field(default_factory=dict)
    # metadata.generation per policy: only spec changes make waiting proposals decide again.
    policy_generations: dict[tuple[str, str], int | None] = field(default_factory=dict)
    hpa_index: kopf.Index | None = None
    loop: asyncio.AbstractEventLoop | None = None
    gc_task: asyncio.Task | None = None
    election: Election = field(default_factory=lambda: Election(identity=process_identity()))
    # Proposals a standby (or a leader past its deadline) was asked to reconcile: the
    # first thing a new leader does is reconcile them.
    parked: set[tuple[str, str]] = field(default_factory=set)

    def autoscalers(self, namespace: str) -> list[tuple[str, TargetRef]]:
        """The namespace's HPAs from kopf's watch-fed index (called from worker threads; the
        index is read in the event loop, which is the only writer)."""
        index, loop = self.hpa_index, self.loop
        if index is None or loop is None:  # cannot happen after the first event; be safe anyway
            return self.reconciler.kube.autoscalers(namespace)

        async def snapshot() -> list[tuple[str, TargetRef]]:
            return list(index.get(namespace, ()))

        return asyncio.run_coroutine_threadsafe(snapshot(), loop).result(timeout=30)


@kopf.on.login()
def login(memo: kopf.Memo, logger, **kwargs) -> kopf.ConnectionInfo | None:
    """Log kopf in with the same credentials the reconciler uses."""
    settings: OperatorSettings = getattr(memo, "settings", None) or resolve(OperatorSettings)
    if not settings.kubeconfig:
        return kopf.login_via_client(memo=memo, logger=logger, **kwargs)
    config, _ = load_config(settings.kubeconfig)
    keys = config.api_key or {}
    # The client has stored it under either name across versions, with or without "Bearer ".
    token = keys.get("BearerToken") or keys.get("authorization") or ""
    scheme, _, credentials = token.partition(" ") if " " in token else ("Bearer", "", token)
    return kopf.ConnectionInfo(
        server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
        certificate_path=config.cert_file, private_key_path=config.key_file,
        scheme=scheme or None, token=credentials or None,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    ours: OperatorSettings = getattr(memo, "settings", None) or resolve(OperatorSettings)
    # Our own Events tell the story; kopf's per-handler events would only add noise.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270  # reconnect watches before load balancers cut them
    settings.watching.client_timeout = 300
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # Least privilege: no access to CRDs, so kopf resolves our resources once at start-up
    # instead of watching CustomResourceDefinitions.
    settings.scanning.disabled = True
    # Terminal proposals are never listed or watched (filtered by the API server), and a
    # large initial list arrives in pages rather than as one burst held in memory.
    settings.watching.field_selectors[GROUP, PROPOSAL_PLURAL] = OPEN_PROPOSALS_FIELD_SELECTOR
    settings.watching.chunk_size = LIST_PAGE_SIZE
    # kopf keeps a worker per object until it has been idle this long (5 s by default): the
    # start-up listing of 10,000 policies and plans had them all alive at once, with their
    # bodies, and the allocator kept that peak. Our handlers only note and queue; an
    # object's next event starts a new worker.
    settings.queueing.idle_timeout = KOPF_WORKER_IDLE_SECONDS
    settings.persistence.diffbase_storage = NoDiffBase()

    executor = concurrent.futures.ThreadPoolExecutor(max_workers=ours.workers, thread_name_prefix="reconcile")
    # Unique per process, as client-go's identities are: two processes must never both
    # believe they hold the Lease (a restarted container is a new holder).
    election = Election(identity=f"{process_identity()}_{uuid.uuid4().hex[:8]}", lease=ours.leader_elect_lease_name)
    api = api_client(ours.kubeconfig)
    # The API server's audit log then says which replica wrote what.
    api.user_agent = f"scalegate-operator/{__version__} ({election.identity})"
    if ours.leader_elect:
        timings = LeaseTimings(ours.leader_elect_lease_duration, ours.leader_elect_renew_deadline,
                               ours.leader_elect_retry_period)
        namespace = ours.leader_elect_namespace or os.environ.get("POD_NAMESPACE") or "scalegate"
        lease_api = api_client(ours.kubeconfig)
        lease_api.user_agent = api.user_agent
        election.holder = LeaseHolder(Kube(lease_api), namespace, election.identity, timings)
        election.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
    reconciler = Reconciler(FencedKube(api, election.may_act), autoscalers=lambda ns: runtime.autoscalers(ns),
                            fault=fault_hook_from_env())
    loop = asyncio.get_running_loop()

    async def work(key) -> float | None:
        if not election.may_act():
            runtime.parked.add(key)  # the leader's job; ours if we become it (then read afresh)
            runtime.bodies.pop(key, None)
            return None
        namespace, name = key
        body = runtime.bodies.pop(key, None)
        return await loop.run_in_executor(executor, reconciler.reconcile, namespace, name, body)

    queue = WorkQueue(work, concurrency=ours.workers)
    queue.start()
    runtime = Runtime(settings=ours, reconciler=reconciler, queue=queue, executor=executor, loop=loop,
                      election=election)
    memo.runtime = runtime
    metrics.LEADER.labels(election.identity).set(0 if election.holder else 1)
    if election.holder is not None:
        election.task = asyncio.create_task(_lead(runtime), name="scalegate-leader-election")
    metrics_address = bind_address(ours.metrics_bind_address)
    if metrics_address:
        metrics.serve(metrics_address[1], metrics_address[0])
    if ours.retention_seconds > 0:
        runtime.gc_task = asyncio.create_task(_collect_garbage(runtime), name="scalegate-gc")
    log.info("scalegate operator started: %d workers, retention %.0fs, %s", ours.workers, ours.retention_seconds,
             f"leader election on lease {election.holder.namespace}/{election.lease} as {election.identity}"
             if election.holder else "leader election off")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_) -> None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is None:
        return
    election = runtime.election
    election.stopping = True  # first: every write from here on is refused
    if election.task:
        election.task.cancel()
    if runtime.gc_task:
        runtime.gc_task.cancel()
    await runtime.queue.stop()
    loop = asyncio.get_running_loop()
    if election.holder is None or election.executor is None:
        runtime.executor.shutdown(wait=False, cancel_futures=True)
        return
    # Release the Lease so that the standby takes over at once, but only once no reconcile
    # is in flight: a write sent just before `stopping` must land before a successor starts.
    drained = loop.run_in_executor(None, lambda: runtime.executor.shutdown(wait=True, cancel_futures=True))
    try:
        await asyncio.wait_for(drained, timeout=election.holder.timings.renew_deadline)
    except asyncio.TimeoutError:
        log.warning("reconciles still running at shutdown: the lease is left to expire instead of released")
        return
    await loop.run_in_executor(election.executor, election.holder.release, election.lease)
    metrics.LEADER.labels(election.identity).set(0)
    election.executor.shutdown(wait=False)


@kopf.on.probe(id="leaderElection")
def leader_election_probe(memo: kopf.Memo, **_) -> dict:
    """The health endpoint's body says whether this replica leads or stands by (kopf
    caches probe results for up to 10 s). A standby is healthy and Ready: it can take over."""
    runtime: Runtime | None = getattr(memo, "runtime", None)
    return runtime.election.describe() if runtime is not None else {"role": "starting"}


async def _lead(runtime: Runtime) -> None:
    """Acquire, then keep renewing, the leader Lease every retry period; on becoming leader,
    reconcile every open proposal known (the watches kept running while standing by)."""
    election, loop = runtime.election, asyncio.get_running_loop()
    holder = election.holder
    assert holder is not None
    leading: bool | None = None  # the first round says which it is, either way
    while True:
        try:
            await loop.run_in_executor(election.executor, holder.try_acquire_or_renew, election.lease)
        except Exception:  # never let a bug end the election: it would leave a standby forever
            log.exception("leader election round failed")
        now_leading = election.may_act()
        if now_leading != leading:
            was_leading, leading = leading, now_leading
            metrics.LEADER.labels(election.identity).set(1 if leading else 0)
            if leading:
                log.info("leading as %s (lease %s/%s): reconciling every open proposal", election.identity,
                         holder.namespace, election.lease)
                for members in runtime.by_policy.values():
                    runtime.parked.update(members)
            else:
                # After leading: it could not renew in time, or another took the Lease over.
                log.log(logging.WARNING if was_leading else logging.INFO,
                        "standing by as %s: lease %s/%s held by %s", election.identity, holder.namespace,
                        election.lease, holder.holder_of(election.lease) or "nobody yet")
        if leading and runtime.parked:
            parked, runtime.parked = runtime.parked, set()
            for key in parked:
                runtime.queue.add(key)
        period = holder.timings.retry_period
        # A standby's tries are spread a little (client-go jitters them too), so that several
        # standbys do not all hit the API server at the same instant.
        await asyncio.sleep(period if leading else period * random.uniform(1.0, 1.1))


def _active(body) -> bool:
    return (body.get("status") or {}).get("phase") not in Phase.TERMINAL


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers")
def hpa_targets(namespace, name, spec, **_) -> dict[str, tuple[str, TargetRef]]:
    """HPAs by namespace, for the ConflictingAutoscaler check without a LIST per apply.
    kopf fills every index from its initial list before any other handler runs, so no
    proposal is decided on a partial view."""
    ref = spec.get("scaleTargetRef") or {}
    return {namespace: (name, TargetRef(api_version=ref.get("apiVersion") or "", kind=ref.get("kind") or "",
                                        name=ref.get("name") or ""))}


KOPF_WORKER_IDLE_SECONDS = 0.2

#: Most bodies kept for queued reconciles; those queued beyond it read their proposal. A
#: backlog longer than this is a burst (a start-up listing, a mass approval) in which one
#: read per proposal costs less than holding every body; the workers take 16 at a time.
HANDED_OVER_BODIES = 256


@kopf.on.event(GROUP, VERSION, PROPOSAL_PLURAL)  # type: ignore[arg-type]  # kopf passes hpa_targets by name
async def proposal_event(event, body, namespace, name, memo: kopf.Memo, hpa_targets: kopf.Index, **_) -> None:
    runtime: Runtime = memo.runtime
    runtime.hpa_index = hpa_targets
    key = (namespace, name)
    policy = ((body.get("spec") or {}).get("policyRef") or {}).get("name")
    members = runtime.by_policy.setdefault((namespace, policy), set()) if policy else set()
    counted = len(members) if policy else 0
    if event.get("type") == "DELETED" or not _active(body):
        runtime.parked.discard(key)
        runtime.queue.forget(key)
        runtime.reconciler.forget(namespace, name)
        runtime.bodies.pop(key, None)
        members.discard(key)
        if policy and not members:
            runtime.by_policy.pop((namespace, policy), None)
    else:
        members.add(key)
        own = runtime.reconciler.is_own_write(namespace, name, body.get("metadata", {}).get("resourceVersion"))
        if key in runtime.bodies or (not own and len(runtime.bodies) < HANDED_OVER_BODIES):
            runtime.bodies[key] = event["object"]  # the newest state seen, for the reconcile queued for it
        if not own:
            runtime.queue.add(key)
            if (body.get("metadata", {}).get("annotations") or {}).get(APPROVED) == "true":
                # An approval may supersede an active plan of the same policy, which would
                # otherwise sleep until its next step: the policy's other proposals look now.
                for other in members - {key}:
                    runtime.queue.add(other)
    PENDING_TIMES.update(namespace, name, body, gone=event.get("type") == "DELETED")
    # Counted, not summed over every policy on every event (quadratic with 10,000 plans).
    runtime.active += (len(members) if policy else 0) - counted
    metrics.PROPOSALS_ACTIVE.set(runtime.active)


class PendingTimes:
    """Creation and expiry of every Pending proposal, by namespace, exported as the
    oldest-creation and earliest-expiry gauges the approval alerts read. A namespace
    without Pending proposals has no series (its labels are removed), so no alert stays
    firing for it."""

    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, tuple[float, float]]] = {}

    def update(self, namespace: str, name: str, body: dict, gone: bool) -> None:
        entries = self._by_namespace.setdefault(namespace, {})
        entries.pop(name, None)
        if not gone and (body.get("status") or {}).get("phase") in (None, "", Phase.PENDING):
            try:
                created = parse_time((body.get("metadata") or {}).get("creationTimestamp"))
                until = parse_time((body.get("spec") or {}).get("validUntil"))
            except InvalidObject:
                created = until = None
            if created and until:
                entries[name] = (created.timestamp(), until.timestamp())
        if entries:
            metrics.OLDEST_PENDING_CREATED.labels(namespace).set(min(c for c, _ in entries.values()))
            metrics.EARLIEST_PENDING_EXPIRY.labels(namespace).set(min(u for _, u in entries.values()))
        else:
            self._by_namespace.pop(namespace, None)
            for gauge in (metrics.OLDEST_PENDING_CREATED, metrics.EARLIEST_PENDING_EXPIRY):
                try:
                    gauge.remove(namespace)
                except KeyError:
                    pass


PENDING_TIMES = PendingTimes()


@kopf.on.event(GROUP, VERSION, POLICY_PLURAL)
async def policy_event(event, body, namespace, name, memo: kopf.Memo, **_) -> None:
    """A policy's spec changed (resumed, bounds, cooldown) or it came or went: its waiting
    proposals decide again. Status-only writes (the operator's own lastAppliedTime) do not
    change the generation and wake nobody."""
    runtime: Runtime = memo.runtime
    key = (namespace, name)
    if event.get("type") == "DELETED":
        runtime.policy_generations.pop(key, None)
    else:
        generation = (body.get("metadata") or {}).get("generation")
        if key in runtime.policy_generations and runtime.policy_generations[key] == generation:
            return
        runtime.policy_generations[key] = generation
    for proposal in runtime.by_policy.get(key, ()):
        runtime.queue.add(proposal)


async def _collect_garbage(runtime: Runtime) -> None:
    """Delete terminal proposals older than the retention, like CSRs are cleaned up."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(runtime.settings.gc_interval_seconds)
        if not runtime.election.may_act():
            continue  # the leader's job (and every delete would be refused anyway)
        try:
            deleted = await loop.run_in_executor(runtime.executor, collect_terminal_proposals,
                                                 runtime.reconciler.kube, runtime.settings.retention_seconds)
            if deleted:
                log.info("deleted %d terminal proposals older than %.0fs", deleted, runtime.settings.retention_seconds)
        except Exception as err:
            log.warning("garbage collection of old proposals failed: %s", err)


def collect_terminal_proposals(kube: Kube, retention_seconds: float, now: dt.datetime | None = None) -> int:
    """Delete the proposals decided more than `retention_seconds` ago.

    The clock is the operator's own record: the time in its outcome annotation
    (scalegate.io/outcome, records.py), which only the operator writes, never status'
    finishedAt or phase, which a status writer could set to make this delete a proposal
    they may not delete. A proposal decided before these records existed (a terminal phase
    in status, no record) is aged from the later of its creation and its validUntil, both
    fixed when it was made: by then nothing can happen to it any more."""
    now = now or dt.datetime.now(dt.timezone.utc)
    deleted = 0
    for item in kube.iter_proposals(page_size=LIST_PAGE_SIZE):
        meta = item.get("metadata") or {}
        finished = _decided_at(item, Records.read(meta))
        if finished is not None and (now - finished).total_seconds() >= retention_seconds:
            kube.delete_proposal(meta["namespace"], meta["name"], meta["uid"])
            metrics.PROPOSALS_COLLECTED.inc()
            deleted += 1
    return deleted


def _decided_at(item: dict, records: Records) -> dt.datetime | None:
    """When the proposal was decided, for the garbage collector; None keeps it."""
    if records.outcome is not None:
        return records.outcome.at
    if records.error or (item.get("status") or {}).get("phase") not in Phase.TERMINAL:
        return None  # open, or a record the operator did not write: keep it
    try:  # one odd object must not stop the sweep; keep it
        created = parse_time((item.get("metadata") or {}).get("creationTimestamp"))
        valid_until = parse_time((item.get("spec") or {}).get("validUntil"))
    except InvalidObject:
        return None
    known = [moment for moment in (created, valid_until) if moment is not None]
    return max(known) if known else None
