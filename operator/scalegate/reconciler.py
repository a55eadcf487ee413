"""Parse -> decide -> act -> record, for one proposal.

The reconciler reads facts through `Kube`, asks `decision` what they mean, acts only when
every check holds, and records each outcome in status, a condition, an Event and a metric.
It is level-based: running it twice on the same state changes nothing the second time.

Status is a record for people, not an authority: what the operator decides comes from the
spec, the decision annotations (which the API server guards), the target as it is now and
the operator's own records in the annotations scalegate.io/applying and scalegate.io/outcome
(`records.py`, guarded by the admission policy scalegate-proposal-record). Status can only
ever stop the operator (a terminal phase there is left alone), never make it scale, skip a
check, or delete.

An apply writes, in this order (each a point where `SCALEGATE_FAULT_POINT` can kill the
process, see `fault_hook_from_env`):
  before-intent          every check held
  the intent             annotation scalegate.io/applying, conditioned on the proposal's resourceVersion
  after-intent
  the scale              resourceVersion-guarded write of the scale subresource
  after-scale-write
  the policy's status    lastAppliedTime, from which the cooldown counts
  after-policy-status
  the outcome            annotation scalegate.io/outcome: from here on the proposal is Applied, whatever status says
  after-outcome-record
  the proposal's status  phase Applied and the receipt
  after-proposal-status
A restart finds the intent and decides from the target whether the write landed
(`decision.recover_intent`); it finds the outcome and only restores status from it.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import decision as d
from . import metrics
from .conditions import set_condition
from .kube import Conflict, Forbidden, Kube, KubeError, NoScaleSubresource, NotFound
from .model import (
    API_VERSION,
    POLICY_LABEL,
    PROPOSAL_KIND,
    InvalidObject,
    Phase,
    Policy,
    Proposal,
    StepOutcome,
    TargetRef,
    format_time,
    read_time,
)
from .records import APPLY_INTENT, OUTCOME, ApplyIntent, OutcomeRecord, Records

log = logging.getLogger("scalegate.operator")

OPERATOR_FORBIDDEN = "OperatorForbidden"
RECORD_RESTORED = "RecordRestored"
WARNING_PHASES = {Phase.REJECTED, Phase.STALE, Phase.FAILED}

# -- the fault hook: a test hook, documented in the README ------------------------------
FAULT_ENV = "SCALEGATE_FAULT_POINT"
# SIGSTOP instead of SIGKILL: the failover test pauses a leader mid-apply (issue 16).
FAULT_SIGNAL_ENV = "SCALEGATE_FAULT_SIGNAL"
FAULT_POINTS = ("before-intent", "after-intent", "after-scale-write", "after-policy-status",
                "after-outcome-record", "after-proposal-status")
# A plan's step is an apply of its own (see `Reconciler._apply_step`): the same writes, then
# the step's receipt in status and the intent removed.
STEP_FAULT_POINTS = ("step-before-intent", "step-after-intent", "step-after-scale-write", "step-after-policy-status",
                     "step-after-receipt")


def fault_hook_from_env(environ: dict[str, str] | None = None) -> Callable[[str], None] | None:
    """A hook that SIGKILLs this process when an apply reaches the point named in
    $SCALEGATE_FAULT_POINT; None when it is unset (always, outside tests). A test hook: the
    fault tests kill the operator at each write of an apply and check what a restart does.
    An unknown point is an error, so that a misspelt test cannot pass by killing nothing."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    point = env.get(FAULT_ENV, "").strip()
    if not point:
        return None
    if point not in FAULT_POINTS + STEP_FAULT_POINTS:
        raise ValueError(f"{FAULT_ENV}={point!r} is not one of {', '.join(FAULT_POINTS + STEP_FAULT_POINTS)}")
    stop = env.get(FAULT_SIGNAL_ENV, "").strip().upper() == "STOP"

    def hook(reached: str) -> None:
        if reached == point:
            log.warning("%s=%s: %s the operator here (a test hook)", FAULT_ENV, point,
                        "pausing" if stop else "killing")
            for handler in logging.getLogger().handlers + log.handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGSTOP if stop else signal.SIGKILL)
            # The signal reaches a multi-threaded process a moment later: without this wait
            # the calling thread can send its next write first (seen with SIGSTOP).
            time.sleep(1.0)

    return hook


class Requeue(Exception):
    """The proposal changed under us; reconcile it again from a fresh read."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class _Passed:
    """Checks 1 to 3 passed (`Reconciler._gate`): the proposal (its validity capped by the
    policy's TTL), the policy, and the approver the API server confirmed."""

    proposal: Proposal
    policy: Policy
    approver: str


@dataclass(frozen=True)
class _Stopped:
    """A check stopped the proposal; its outcome is recorded. When to look again, if ever."""

    requeue_after: float | None


class Reconciler:
    def __init__(self, kube: Kube, clock: Callable[[], dt.datetime] = utcnow, max_conflict_retries: int = 3,
                 autoscalers: Callable[[str], list[tuple[str, TargetRef]]] | None = None,
                 fault: Callable[[str], None] | None = None):
        self.kube = kube
        self.clock = clock
        self.max_conflict_retries = max_conflict_retries
        # (name, scaleTargetRef) of a namespace's HPAs: the operator passes its watch-fed
        # index; without one, each check lists them from the API server.
        self.autoscalers = autoscalers or kube.autoscalers
        self.fault = fault
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # resourceVersions of our own latest writes per proposal (a record and then its
        # status are two): their watch events carry nothing new, so the handler need not
        # reconcile again.
        self._written: dict[tuple[str, str], collections.deque[str]] = {}

    def is_own_write(self, namespace: str, name: str, resource_version: str | None) -> bool:
        return resource_version is not None and resource_version in self._written.get((namespace, name), ())

    def forget(self, namespace: str, name: str) -> None:
        self._written.pop((namespace, name), None)

    def _wrote(self, namespace: str, name: str, updated: dict) -> None:
        version = (updated.get("metadata") or {}).get("resourceVersion", "")
        self._written.setdefault((namespace, name), collections.deque(maxlen=3)).append(version)

    def _at(self, point: str) -> None:
        if self.fault is not None:
            self.fault(point)

    def _policy_lock(self, namespace: str, policy: str) -> threading.Lock:
        # Supersession and cooldown compare proposals of one policy: decide them one at a time.
        with self._locks_guard:
            return self._locks.setdefault((namespace, policy), threading.Lock())

    # -- entry point -------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str, body: dict | None = None) -> float | None:
        """Bring one proposal forward. Returns seconds until it should be looked at again
        (expiry, cooldown), or None when only a change to it can matter.

        `body` is the proposal as a watch event just delivered it, which saves a read; it
        may already be outdated, which is safe: every write is conditioned on its
        resourceVersion, so a decision taken on an old state never lands (Conflict, then a
        fresh read).

        An error is counted in scalegate_reconcile_errors_total by kind and raised: the
        work queue retries with backoff."""
        try:
            return self._reconcile(namespace, name, body)
        except KubeError as err:
            metrics.RECONCILE_ERRORS.labels(err.kind).inc()
            raise
        except Exception:
            log.exception("reconciling proposal %s/%s failed", namespace, name)
            metrics.RECONCILE_ERRORS.labels("Internal").inc()
            raise

    def _reconcile(self, namespace: str, name: str, body: dict | None) -> float | None:
        if body is None:
            body = self.kube.get_proposal(namespace, name)
        if body is None:
            return None
        records = Records.read(body.get("metadata") or {})
        try:
            if records.outcome is not None:  # decided: final, whatever status says
                return self._restore(body, records.outcome)
            if (body.get("status") or {}).get("phase") in Phase.TERMINAL:
                return None  # status may stop the operator (fail closed), never start it
            try:
                proposal = Proposal.parse(body)
            except InvalidObject as err:
                self._finish(body, None, d.Outcome(Phase.FAILED, d.Reason.INVALID_PROPOSAL,
                                                   f"cannot act on this proposal: {err}; nothing was applied"))
                return None
            if records.error:
                # Not a record the operator wrote for this proposal: act on nothing. Status
                # only, since an outcome record, once there, is final.
                self._finish(body, proposal, d.Outcome(
                    Phase.FAILED, d.Reason.INVALID_RECORD,
                    f"{records.error}; the operator acts on no record it did not write, so nothing was applied"),
                    write_record=False)
                return None
            if (body["metadata"].get("labels") or {}).get(POLICY_LABEL) != proposal.policy_name:
                self._label_with_policy(body, proposal)
                return 0.0
            with self._policy_lock(namespace, proposal.policy_name):
                if proposal.is_plan:
                    return self._decide_plan(body, proposal, records.intent)
                return self._decide(body, proposal, records.intent)
        except Requeue:
            return 0.0

    # -- the checks, in the contract's order -----------------------------------------
    def _decide(self, body: dict, proposal: Proposal, intent: ApplyIntent | None) -> float | None:
        now = self.clock()
        if intent is not None:
            return self._recover(body, proposal, intent, now)

        gate = self._gate(body, proposal, now)
        if isinstance(gate, _Stopped):
            return gate.requeue_after
        return self._apply(body, gate.proposal, gate.policy, now, gate.approver)

    def _gate(self, body: dict, proposal: Proposal, now: dt.datetime) -> _Passed | _Stopped:
        """Checks 1 to 3 of the contract, for a single change and for a plan not started yet
        alike: expiry, rejection and supersession; a complete approval by a user the API
        server confirms may approve; the policy (valid, in force, claiming the target), and
        the change within its bounds (a plan: every step, `decision.check_plan`). An
        outcome is recorded here and stops; else what the apply needs."""
        # The policy first: its proposalTTLSeconds caps how long the proposal is valid.
        policy_body = self.kube.get_policy(proposal.namespace, proposal.policy_name)
        policy, policy_error = None, None
        try:
            policy = Policy.parse(policy_body) if policy_body else None
        except InvalidObject as err:
            policy_error = err
        proposal = d.with_ttl(proposal, policy)

        # Any proposal created before the state we decide on is in this list.
        newest = d.newest_proposal(
            self.kube.list_policy_proposals(proposal.namespace, proposal.policy_name,
                                            not_older_than=body["metadata"].get("resourceVersion"))
            + [(proposal.name, proposal.created)])
        outcome = d.check_expiry_rejection_supersession(proposal, now, newest)
        if outcome:
            # Expired or superseded after an approval: the receipt names the approver only
            # once the API server confirms they may approve.
            approver = None
            if outcome.phase in (Phase.EXPIRED, Phase.SUPERSEDED) and d.check_approval(proposal, now) is None:
                approver = self._verified_approver(proposal)
            return _Stopped(self._finish(body, proposal, outcome, approver=approver))
        outcome = d.check_approval(proposal, now)
        if outcome:  # a plan waiting for approval shows its steps and the next one's time already
            waiting = d.plan_status(proposal, (), now) if proposal.is_plan and outcome.phase == Phase.PENDING else None
            return _Stopped(self._finish(body, proposal, outcome, extra=waiting))
        approver = self._verified_approver(proposal)
        if approver is None:
            return _Stopped(self._finish(body, proposal,
                                         d.approver_not_authorized(proposal.decision.approved_by, proposal)))

        if policy_error is not None:
            return _Stopped(self._finish(body, proposal, d.Outcome(
                Phase.FAILED, d.Reason.INVALID_POLICY, f"policy {proposal.policy_name} is invalid: {policy_error}"),
                approver=approver))
        outcome = d.check_policy(proposal, policy, now)
        if outcome is None:
            assert policy is not None and policy_body is not None
            outcome = (self._check_target_claim(policy, policy_body, body["metadata"].get("resourceVersion"))
                       or (d.check_plan(proposal, policy) if proposal.is_plan else d.check_bounds(proposal, policy)))
        if outcome:
            return _Stopped(self._finish(body, proposal, outcome, approver=approver))
        assert policy is not None
        return _Passed(proposal, policy, approver)

    def _check_target_claim(self, policy: Policy, policy_body: dict, not_older_than: str | None) -> d.Outcome | None:
        """Check 2, continued (`decision.check_target_claim`): the policies of the same target
        name, listed at least as recent as the proposal decided on."""
        claims = d.policy_claims(self.kube.list_policies(policy.namespace, not_older_than=not_older_than,
                                                         target_name=policy.target.name))
        created = read_time((policy_body.get("metadata") or {}).get("creationTimestamp"))
        return d.check_target_claim(policy, created, claims)

    def _verified_approver(self, proposal: Proposal) -> str | None:
        """The approver named in approved-by, if the API server says they hold the verb
        `approve` on this proposal (a SubjectAccessReview): the only approver ever recorded."""
        approver = proposal.decision.approved_by
        return approver if self.kube.user_may_approve(approver, proposal.namespace, proposal.name) else None

    def _apply(self, body: dict, proposal: Proposal, policy: Policy, now: dt.datetime,
               approver: str) -> float | None:
        for _attempt in range(self.max_conflict_retries):
            try:
                # The object first: its generation then predates the scale read and the
                # resourceVersion the write is conditioned on (see decision.recover_intent).
                target = self.kube.get_target(proposal.namespace, proposal.target)
                scale = self.kube.get_scale(proposal.namespace, proposal.target)
            except NotFound as err:
                return self._finish(body, proposal, d.Outcome(
                    Phase.FAILED, d.Reason.TARGET_NOT_FOUND, f"{proposal.target.describe()} not found: {err}"),
                    approver=approver)
            except NoScaleSubresource as err:
                return self._finish(body, proposal, d.Outcome(Phase.FAILED, d.Reason.NO_SCALE_SUBRESOURCE, str(err)),
                                    approver=approver)
            except Forbidden as err:
                return self._forbidden(body, proposal, err, now, approver)
            outcome = (d.check_controller(proposal, target.controller)
                       or d.check_staleness(proposal, scale.replicas)
                       or d.check_cooldown(proposal, policy, now))
            if outcome is None:
                hpas = d.autoscaler_targets(proposal.target, self.autoscalers(proposal.namespace))
                outcome = d.check_autoscalers(proposal, hpas)
            if outcome:
                return self._finish(body, proposal, outcome, approver=approver)

            if ((body.get("status") or {}).get("reason") == OPERATOR_FORBIDDEN
                    and not self.kube.may_update_scale(proposal.namespace, proposal.target)):
                # Still not allowed: say nothing new rather than write an intent that cannot land.
                return self._forbidden(body, proposal, Forbidden("update of the target's scale"), now, approver)
            self._at("before-intent")
            # The intent first: a restart after the write must find it (and a status writer
            # can neither forge nor erase it).
            intent = ApplyIntent(uid=proposal.uid, replicas=proposal.replicas, previous_replicas=scale.replicas,
                                 resource_version=scale.resource_version, target_uid=target.uid or scale.uid,
                                 target_generation=target.generation, approved_by=approver, started_at=now)
            body = self._annotate(body, {APPLY_INTENT: intent.to_annotation()})
            self._at("after-intent")
            try:
                self.kube.update_scale(proposal.namespace, proposal.target, proposal.replicas,
                                       scale.resource_version)
            except Conflict:
                log.info("target %s/%s changed during apply of %s; checking again",
                         proposal.namespace, proposal.target.name, proposal.name)
                now = self.clock()
                continue
            except Forbidden as err:
                body = self._annotate(body, {APPLY_INTENT: None})  # refused: nothing was written
                return self._forbidden(body, proposal, err, now, approver)
            self._at("after-scale-write")
            self._complete(body, proposal, policy.name, scale.replicas, target.uid or scale.uid, approver)
            return None  # terminal: nothing more to wait for
        # Every write was refused by its precondition, so none landed: drop the intent (a
        # later look must not mistake the other writer's changes for ours) and try again soon.
        self._annotate(body, {APPLY_INTENT: None})
        return 0.5

    def _recover(self, body: dict, proposal: Proposal, intent: ApplyIntent, now: dt.datetime) -> float | None:
        """An earlier run recorded an intent and stopped: find out whether it wrote."""
        # The approver was verified before the intent was written, and the intent names them.
        approver = intent.approved_by or None
        try:
            target = self.kube.get_target(proposal.namespace, proposal.target)
            scale = self.kube.get_scale(proposal.namespace, proposal.target)
        except (NotFound, NoScaleSubresource) as err:
            return self._finish(body, proposal, d.Outcome(
                Phase.FAILED, d.Reason.TARGET_NOT_FOUND, f"interrupted apply: target unreadable: {err}"),
                approver=approver)
        except Forbidden as err:
            return self._forbidden(body, proposal, err, now, approver)
        verdict = d.recover_intent(proposal, intent, scale.replicas, target.uid, target.generation)
        if verdict == d.Recovery.FINISHED:
            log.info("proposal %s/%s: interrupted apply had written; recording it", proposal.namespace, proposal.name)
            self._complete(body, proposal, proposal.policy_name, intent.previous_replicas, target.uid,
                           approver or proposal.decision.approved_by)
            return None
        if verdict == d.Recovery.NOT_WRITTEN:
            log.info("proposal %s/%s: interrupted apply had not written; deciding again",
                     proposal.namespace, proposal.name)
            self._annotate(body, {APPLY_INTENT: None})
            raise Requeue()
        assert isinstance(verdict, d.Outcome)
        return self._finish(body, proposal, verdict, approver=approver)

    def _complete(self, body: dict, proposal: Proposal, policy_name: str, previous: int, target_uid: str,
                  approver: str) -> None:
        now = self.clock()
        # The policy first: the cooldown must hold even if we stop before the proposal's records.
        try:
            self.kube.patch_policy_status(proposal.namespace, policy_name, {
                "lastAppliedTime": format_time(now), "lastAppliedProposal": proposal.name})
        except NotFound:
            pass
        self._at("after-policy-status")
        outcome = d.applied(proposal, previous, approver)
        receipt = {"appliedAt": format_time(now), "previousReplicas": previous, "appliedReplicas": proposal.replicas}
        body = self._write_outcome(body, proposal, outcome, approver, now, previous=previous)
        self._at("after-outcome-record")
        for _attempt in range(self.max_conflict_retries):
            try:
                self._record(body, proposal, outcome, approver, extra=receipt, at=now)
                break
            except Requeue:  # e.g. an unrelated annotation since: the record stands, write status again
                fresh = self.kube.get_proposal(proposal.namespace, proposal.name)
                if fresh is None or (fresh.get("status") or {}).get("phase") in Phase.TERMINAL:
                    break
                body = fresh
        self._at("after-proposal-status")
        approved_at = read_time((body.get("status") or {}).get("approvedAt"))
        if approved_at:
            metrics.APPLY_LATENCY.observe(max(0.0, (now - approved_at).total_seconds()))
        self._event({"apiVersion": proposal.target.api_version, "kind": proposal.target.kind,
                     "name": proposal.target.name, "namespace": proposal.namespace, "uid": target_uid},
                    "Normal", "ScaledByScalegate",
                    f"scaled from {previous} to {proposal.replicas} replicas by proposal {proposal.name}, "
                    f"approved by {approver}")
        return None

    def _forbidden(self, body: dict, proposal: Proposal, err: Exception, now: dt.datetime,
                   approver: str | None) -> float:
        # A refused request wrote nothing; an intent already recorded stays for the next look.
        log.warning("proposal %s/%s: operator forbidden: %s", proposal.namespace, proposal.name, err)
        self._finish(body, proposal, d.Outcome(
            Phase.APPROVED, OPERATOR_FORBIDDEN,
            f"the operator may not read {proposal.target.describe()} or update its scale; grant its "
            "ServiceAccount get on that kind and get/update on its scale subresource. Retrying until the "
            "proposal expires."), approver=approver)
        return min(30.0, max(1.0, (proposal.valid_until - now).total_seconds()))

    def _restore(self, body: dict, record: OutcomeRecord) -> float | None:
        """The proposal was decided (the operator's outcome record says so) but status says it
        is still open: the operator stopped between the two writes, or someone rewrote status.
        Status is put back as recorded; nothing is decided, scaled or counted again."""
        if (body.get("status") or {}).get("phase") in Phase.TERMINAL:
            return None
        try:
            proposal: Proposal | None = Proposal.parse(body)
        except InvalidObject:
            proposal = None
        extra: dict[str, Any] = {}
        if record.phase == Phase.APPLIED:
            extra = {"appliedAt": format_time(record.at), "previousReplicas": record.previous_replicas,
                     "appliedReplicas": record.applied_replicas}
        self._record(body, proposal, d.Outcome(record.phase, record.reason, record.message),
                     record.approved_by or None, extra=extra, at=record.at, restoring=True)
        return None

    # -- recording ---------------------------------------------------------------------
    def _finish(self, body: dict, proposal: Proposal | None, outcome: d.Outcome, approver: str | None = None,
                extra: dict | None = None, write_record: bool = True) -> float | None:
        """Record an outcome: a terminal one first in the outcome record, then in status."""
        at = self.clock()
        if outcome.terminal and write_record:
            body = self._write_outcome(body, proposal, outcome, approver, at)
        self._record(body, proposal, outcome, approver, extra=extra, at=at)
        return None if outcome.terminal else outcome.requeue_after

    def _write_outcome(self, body: dict, proposal: Proposal | None, outcome: d.Outcome, approver: str | None,
                       at: dt.datetime, previous: int | None = None) -> dict:
        """The terminal decision in the annotation scalegate.io/outcome (which also drops the
        intent): from this write on the proposal is decided, whatever its status says."""
        applied = previous is not None and proposal is not None
        record = OutcomeRecord(uid=body["metadata"].get("uid", ""), phase=outcome.phase, reason=outcome.reason,
                               message=outcome.message, at=at, approved_by=approver or "",
                               previous_replicas=previous if applied else None,
                               applied_replicas=proposal.replicas if applied and proposal is not None else None)
        return self._annotate(body, {OUTCOME: record.to_annotation(), APPLY_INTENT: None})

    def _annotate(self, body: dict, annotations: dict[str, str | None]) -> dict:
        """Write the operator's records, conditioned on the resourceVersion decided on."""
        meta = body["metadata"]
        try:
            updated = self.kube.patch_proposal_annotations(meta["namespace"], meta["name"], annotations,
                                                           meta.get("resourceVersion") or "")
        except (Conflict, NotFound) as err:  # changed or gone since read: decide again from a fresh read
            metrics.RECONCILE_ERRORS.labels(err.kind).inc()
            raise Requeue() from err
        self._wrote(meta["namespace"], meta["name"], updated)
        return updated

    def _record(self, body: dict, proposal: Proposal | None, outcome: d.Outcome, approver: str | None,
                extra: dict | None = None, at: dt.datetime | None = None, restoring: bool = False) -> dict:
        """Write the outcome to status (only if it changes anything), with an Event and a metric.
        Conditioned on the resourceVersion we decided on: a concurrent change re-runs us.

        `approver` is the approver the operator verified for this outcome, or None: status
        says approvedBy only then, and clears any other."""
        old = body.get("status") or {}
        now = self.clock()
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        status: dict[str, Any] = {"phase": outcome.phase, "reason": outcome.reason,
                                  "message": outcome.message, "observedGeneration": generation,
                                  "applying": None}  # an older operator's intent; never read
        conditions = set_condition(old.get("conditions"), "Applied", outcome.phase == Phase.APPLIED,
                                   outcome.reason, outcome.message, generation, now)
        approval = _approval_condition(proposal, outcome, approver)
        if approval:
            conditions = set_condition(conditions, "Approved", approval[0], approval[1], approval[2], generation, now)
        status["conditions"] = conditions
        status["approvedBy"] = approver or None
        decision = proposal.decision if proposal is not None else None
        status["approvalRef"] = (decision.approval_ref or None) if approver and decision else None
        if not approver:
            status["approvedAt"] = None
        elif not old.get("approvedAt"):
            status["approvedAt"] = format_time(now)
            if proposal is not None and proposal.created and not restoring:
                metrics.APPROVAL_WAIT.observe(max(0.0, (now - proposal.created).total_seconds()))
        rejected = outcome.reason == d.Reason.REJECTED_BY_USER and decision is not None
        status["rejectedBy"] = decision.rejected_by if rejected and decision else None
        if outcome.terminal:
            status["finishedAt"] = format_time(at or now)
        status.update(extra or {})

        changed = {k: v for k, v in status.items() if k != "conditions" and old.get(k) != v
                   and k not in ("finishedAt", "approvedAt")}
        if not changed:
            return body
        try:
            updated = self.kube.patch_proposal_status(meta["namespace"], meta["name"], status,
                                                      resource_version=meta.get("resourceVersion"))
        except (Conflict, NotFound) as err:  # changed or gone since read: decide again from a fresh read
            metrics.RECONCILE_ERRORS.labels(err.kind).inc()
            raise Requeue() from err
        self._wrote(meta["namespace"], meta["name"], updated)
        involved = {"apiVersion": API_VERSION, "kind": PROPOSAL_KIND, "name": meta["name"],
                    "namespace": meta["namespace"], "uid": meta.get("uid", "")}
        if restoring:
            log.warning("proposal %s/%s: status said %s; restored from the operator's record: %s (%s)",
                        meta["namespace"], meta["name"], old.get("phase") or "(none)", outcome.phase, outcome.reason)
            self._event(involved, "Warning", RECORD_RESTORED,
                        f"status said {old.get('phase') or '(none)'}, but the operator had recorded "
                        f"{outcome.phase} ({outcome.reason}): restored; nothing was done again")
            return updated
        transition = (old.get("phase"), old.get("reason")) != (outcome.phase, outcome.reason)
        if transition:
            metrics.PROPOSAL_OUTCOMES.labels(meta["namespace"], outcome.phase, outcome.reason).inc()
            log.info("proposal %s/%s: %s (%s): %s", meta["namespace"], meta["name"], outcome.phase,
                     outcome.reason, outcome.message)
            self._event(involved, "Warning" if outcome.phase in WARNING_PHASES else "Normal", outcome.reason,
                        outcome.message)
        return updated

    def _event(self, involved: dict, event_type: str, reason: str, message: str) -> None:
        try:
            self.kube.emit_event(involved, event_type, reason, message)
        except Exception as err:  # an Event is a courtesy: losing one must not undo a decision
            log.warning("could not post event %s on %s/%s: %s", reason, involved.get("kind"), involved.get("name"), err)

    # -- plans -------------------------------------------------------------------------
    # A plan (spec.schedule) is approved once and applied step by step. Until its first step
    # is applied it is judged like a single change (checks 1 to 6, check 3 over the whole
    # plan); from then on it is Active, and each step, when due, passes checks 2, 3, 4 and 6
    # against the policy as it is then, with what the plan's previous step left as the
    # staleness basis. Each step is an apply of its own with its own intent, which names the
    # step, so a restart finishes or retries that step and never writes it twice; its
    # receipt in status.steps says which steps are done. Between steps a plan costs a timer:
    # the reconcile returns the seconds until its next step (or endsAt), and the work queue
    # looks again then, not before.

    def _decide_plan(self, body: dict, proposal: Proposal, intent: ApplyIntent | None) -> float | None:
        now = self.clock()
        if intent is not None:
            return self._recover_step(body, proposal, intent, now)
        if d.plan_started(proposal):
            return self._continue_plan(body, proposal, now)
        return self._start_plan(body, proposal, now)

    def _start_plan(self, body: dict, proposal: Proposal, now: dt.datetime) -> float | None:
        """Checks 1 to 6 as for a single change (not started yet: any newer proposal
        supersedes it, as it would a single change), the whole plan in check 3, then the step
        in effect now (the first, unless approval came later) is applied."""
        gate = self._gate(body, proposal, now)
        if isinstance(gate, _Stopped):
            return gate.requeue_after
        proposal, policy, approver = gate.proposal, gate.policy, gate.approver
        if d.plan_ended(proposal, now):
            return self._finish(body, proposal, d.plan_ended_unstarted(proposal), approver=approver)
        index = d.step_in_effect(proposal, now)
        if index is None:
            return self._finish(body, proposal, d.plan_scheduled(proposal, now, approver), approver=approver)
        # Approved after a later step came due: that step is the first applied, and the
        # change from spec.currentReplicas to it must be within the step limits.
        outcome = d.check_step_bounds(proposal, index, policy, proposal.current_replicas) if index else None
        if outcome:
            return self._stop_plan(body, proposal, index, outcome, approver)
        return self._apply_step(body, proposal, policy, index, proposal.current_replicas, approver, now)

    def _continue_plan(self, body: dict, proposal: Proposal, now: dt.datetime) -> float | None:
        """An active plan: finish it at endsAt, stop it when a newer approved proposal
        exists, else apply the step in effect if it is due."""
        meta = body["metadata"]
        if d.plan_ended(proposal, now):
            receipts = d.receipts_until(proposal, now)
            approver = self._verified_approver(proposal)
            return self._finish(body, proposal, d.plan_completed(proposal, receipts, approver), approver=approver,
                                extra={**d.plan_status(proposal, receipts, now), "nextStepAt": None})
        for newer, newer_approver in d.superseding_candidates(proposal, self.kube.list_policy_proposal_metadata(
                proposal.namespace, proposal.policy_name, not_older_than=meta.get("resourceVersion"))):
            # Only an approval the API server confirms stops a plan that people approved.
            if self.kube.user_may_approve(newer_approver, proposal.namespace, newer):
                receipts = d.receipts_until(proposal, now)
                return self._finish(body, proposal, d.plan_superseded(proposal, newer),
                                    approver=self._verified_approver(proposal),
                                    extra={**d.plan_status(proposal, receipts, now), "nextStepAt": None})
        index = d.step_in_effect(proposal, now)
        if index is None:
            return d.plan_wake(proposal, now)
        receipt = d.receipt_of(proposal, index)
        if receipt is not None and receipt.outcome != StepOutcome.SKIPPED:
            return d.plan_wake(proposal, now)  # done; nothing until the next step

        # The step in effect is due (or was skipped while suspended): checks 2, 3, 4 and 6.
        approver = self._verified_approver(proposal)
        if approver is None:
            return self._stop_plan(body, proposal, index,
                                   d.approver_not_authorized(proposal.decision.approved_by, proposal), None)
        policy_body = self.kube.get_policy(proposal.namespace, proposal.policy_name)
        try:
            policy = Policy.parse(policy_body) if policy_body else None
        except InvalidObject as err:
            return self._stop_plan(body, proposal, index, d.Outcome(
                Phase.FAILED, d.Reason.INVALID_POLICY, f"policy {proposal.policy_name} is invalid: {err}"), approver)
        basis = d.plan_basis(proposal)
        outcome = d.check_policy(proposal, policy, now)
        if outcome is not None and outcome.reason == d.Reason.SUSPENDED:
            assert policy is not None
            if receipt is not None:
                return d.plan_wake(proposal, now)  # skipped already; resuming wakes us
            return self._skip_step(body, proposal, index, policy, approver, now)
        if outcome is None:
            assert policy is not None and policy_body is not None
            outcome = (self._check_target_claim(policy, policy_body, meta.get("resourceVersion"))
                       or d.check_step_bounds(proposal, index, policy, basis))
        if outcome:
            return self._stop_plan(body, proposal, index, outcome, approver)
        assert policy is not None
        return self._apply_step(body, proposal, policy, index, basis, approver, now)

    def _apply_step(self, body: dict, proposal: Proposal, policy: Policy, index: int, basis: int,
                    approver: str, now: dt.datetime) -> float | None:
        """Check 4 (staleness against `basis`), check 5 for the plan's first step only, check
        6, then the step's apply: intent (naming the step), resourceVersion-guarded scale
        write, then `_step_done`."""
        first = not d.plan_started(proposal)
        step = proposal.schedule[index]
        for _attempt in range(self.max_conflict_retries):
            try:
                target = self.kube.get_target(proposal.namespace, proposal.target)
                scale = self.kube.get_scale(proposal.namespace, proposal.target)
            except NotFound as err:
                return self._stop_plan(body, proposal, index, d.Outcome(
                    Phase.FAILED, d.Reason.TARGET_NOT_FOUND, f"{proposal.target.describe()} not found: {err}"),
                    approver)
            except NoScaleSubresource as err:
                return self._stop_plan(body, proposal, index, d.Outcome(
                    Phase.FAILED, d.Reason.NO_SCALE_SUBRESOURCE, str(err)), approver)
            except Forbidden as err:
                return self._step_forbidden(body, proposal, err, now, approver)
            outcome = (d.check_controller(proposal, target.controller)
                       or d.check_step_staleness(proposal, basis, scale.replicas)
                       or (d.check_cooldown(proposal, policy, now) if first else None))
            if outcome is None:
                hpas = d.autoscaler_targets(proposal.target, self.autoscalers(proposal.namespace))
                outcome = d.check_autoscalers(proposal, hpas)
            if outcome and not outcome.terminal:  # the first step waits out the cooldown, Approved
                return self._finish(body, proposal, outcome, approver=approver)
            if outcome:
                return self._stop_plan(body, proposal, index, outcome, approver, previous=scale.replicas)
            target_uid = target.uid or scale.uid
            if scale.replicas == step.replicas:  # already in place: nothing to write
                return self._step_done(body, proposal, index, scale.replicas, target_uid, approver, wrote=False)

            self._at("step-before-intent")
            intent = ApplyIntent(uid=proposal.uid, replicas=step.replicas, previous_replicas=scale.replicas,
                                 resource_version=scale.resource_version, target_uid=target_uid,
                                 target_generation=target.generation, approved_by=approver, started_at=now,
                                 step=step.at)
            body = self._annotate(body, {APPLY_INTENT: intent.to_annotation()})
            self._at("step-after-intent")
            try:
                self.kube.update_scale(proposal.namespace, proposal.target, step.replicas, scale.resource_version)
            except Conflict:
                log.info("target %s/%s changed during step %s of %s; checking again",
                         proposal.namespace, proposal.target.name, index + 1, proposal.name)
                now = self.clock()
                continue
            except Forbidden as err:
                body = self._annotate(body, {APPLY_INTENT: None})  # refused: nothing was written
                return self._step_forbidden(body, proposal, err, now, approver)
            self._at("step-after-scale-write")
            return self._step_done(body, proposal, index, scale.replicas, target_uid, approver, wrote=True)
        self._annotate(body, {APPLY_INTENT: None})  # every write refused by its precondition
        return 0.5

    def _recover_step(self, body: dict, proposal: Proposal, intent: ApplyIntent, now: dt.datetime) -> float | None:
        """An earlier run recorded the intent of a step and stopped: find out whether it wrote."""
        index = next((i for i, step in enumerate(proposal.schedule) if step.at == intent.step), None)
        approver = intent.approved_by or None
        if index is None:
            return self._finish(body, proposal, d.Outcome(
                Phase.FAILED, d.Reason.INVALID_RECORD,
                "an interrupted apply names no step of this plan; nothing more was applied"), approver=approver)
        try:
            target = self.kube.get_target(proposal.namespace, proposal.target)
            scale = self.kube.get_scale(proposal.namespace, proposal.target)
        except (NotFound, NoScaleSubresource) as err:
            return self._stop_plan(body, proposal, index, d.Outcome(
                Phase.FAILED, d.Reason.TARGET_NOT_FOUND, f"interrupted apply: target unreadable: {err}"), approver)
        except Forbidden as err:
            return self._step_forbidden(body, proposal, err, now, approver)
        verdict = d.recover_intent(proposal, intent, scale.replicas, target.uid, target.generation)
        if verdict == d.Recovery.FINISHED:
            log.info("proposal %s/%s: interrupted step %d had written; recording it", proposal.namespace,
                     proposal.name, index + 1)
            return self._step_done(body, proposal, index, intent.previous_replicas, target.uid,
                                   approver or proposal.decision.approved_by, wrote=True)
        if verdict == d.Recovery.NOT_WRITTEN:
            log.info("proposal %s/%s: interrupted step %d had not written; deciding again", proposal.namespace,
                     proposal.name, index + 1)
            self._annotate(body, {APPLY_INTENT: None})
            raise Requeue()
        assert isinstance(verdict, d.Outcome)
        return self._stop_plan(body, proposal, index, verdict, approver)

    def _step_done(self, body: dict, proposal: Proposal, index: int, previous: int, target_uid: str,
                   approver: str, wrote: bool) -> float | None:
        """Record an applied step: the policy's lastAppliedTime (the cooldown of other
        proposals counts from it), the receipt and the plan's status, then the intent goes."""
        now = self.clock()
        step = proposal.schedule[index]
        first = not d.plan_started(proposal)
        earlier = d.receipt_of(proposal, index)
        # A recovery may find the receipt already written (stopped before the intent was
        # removed): it is kept as it was, and nothing is announced twice.
        recorded = earlier is not None and earlier.outcome == StepOutcome.APPLIED and earlier.applied_at is not None
        if wrote and not recorded:
            try:
                self.kube.patch_policy_status(proposal.namespace, proposal.policy_name, {
                    "lastAppliedTime": format_time(now), "lastAppliedProposal": proposal.name})
            except NotFound:
                pass
        self._at("step-after-policy-status")
        applied_at = earlier.applied_at if recorded and earlier is not None and earlier.applied_at else now
        outcome = d.step_applied(proposal, index, previous, approver, now, wrote=wrote)
        receipts = d.receipts_with(proposal, index, d.step_receipt(proposal, index, outcome, previous=previous,
                                                                   applied_at=applied_at))
        extra = {**d.plan_status(proposal, receipts, now), "appliedAt": format_time(applied_at),
                 "previousReplicas": previous, "appliedReplicas": step.replicas}
        old = body.get("status") or {}
        for _attempt in range(self.max_conflict_retries):
            try:
                body = self._record(body, proposal, outcome, approver, extra=extra, at=now)
                break
            except Requeue:  # e.g. an unrelated annotation since: write status again
                fresh = self.kube.get_proposal(proposal.namespace, proposal.name)
                if fresh is None or (fresh.get("status") or {}).get("phase") in Phase.TERMINAL:
                    return None
                body = fresh
        self._at("step-after-receipt")
        for _attempt in range(self.max_conflict_retries):
            if APPLY_INTENT not in (body["metadata"].get("annotations") or {}):
                break
            try:
                body = self._annotate(body, {APPLY_INTENT: None})
            except Requeue:
                fresh = self.kube.get_proposal(proposal.namespace, proposal.name)
                if fresh is None:
                    return None
                body = fresh
        if recorded:
            return outcome.requeue_after
        if first and wrote:
            approved_at = read_time((body.get("status") or {}).get("approvedAt"))
            if approved_at:
                metrics.APPLY_LATENCY.observe(max(0.0, (now - approved_at).total_seconds()))
        if (old.get("phase"), old.get("reason")) == (outcome.phase, outcome.reason):
            # Same phase and reason as before: `_record` announced nothing, so say it here.
            self._event(self._involved(body), "Normal", outcome.reason, outcome.message)
        if wrote:
            self._event({"apiVersion": proposal.target.api_version, "kind": proposal.target.kind,
                         "name": proposal.target.name, "namespace": proposal.namespace, "uid": target_uid},
                        "Normal", "ScaledByScalegate",
                        f"scaled from {previous} to {step.replicas} replicas by {d.describe_step(proposal, index)} "
                        f"of plan {proposal.name}, approved by {approver}")
        return outcome.requeue_after

    def _skip_step(self, body: dict, proposal: Proposal, index: int, policy: Policy, approver: str,
                   now: dt.datetime) -> float | None:
        """The policy is suspended when a step comes due: a Skipped receipt; the plan goes on."""
        outcome = d.step_skipped(proposal, index, policy, now)
        receipts = d.receipts_with(proposal, index, d.step_receipt(proposal, index, outcome))
        old = body.get("status") or {}
        body = self._record(body, proposal, outcome, approver, extra=d.plan_status(proposal, receipts, now), at=now)
        if (old.get("phase"), old.get("reason")) == (outcome.phase, outcome.reason):
            self._event(self._involved(body), "Normal", outcome.reason, outcome.message)
        return outcome.requeue_after

    def _stop_plan(self, body: dict, proposal: Proposal, index: int, outcome: d.Outcome, approver: str | None,
                   previous: int | None = None) -> float | None:
        """A due step failed a check: the plan stops with that outcome, the step's receipt says
        why, and the receipts of the steps before it are kept."""
        stop = d.stopped_at_step(proposal, index, outcome)
        receipts = d.receipts_with(proposal, index, d.step_receipt(proposal, index, outcome, previous=previous))
        return self._finish(body, proposal, stop, approver=approver,
                            extra={**d.plan_status(proposal, receipts, self.clock()), "nextStepAt": None})

    def _step_forbidden(self, body: dict, proposal: Proposal, err: Exception, now: dt.datetime,
                        approver: str | None) -> float | None:
        """The operator may not read the target or write its scale: before the plan started,
        as for a single change (Approved, until it expires); an active plan stays Active and
        tries again (a step that passes meanwhile is Missed)."""
        if not d.plan_started(proposal):
            return self._forbidden(body, proposal, err, now, approver)
        log.warning("proposal %s/%s: operator forbidden: %s", proposal.namespace, proposal.name, err)
        outcome = d.Outcome(Phase.ACTIVE, OPERATOR_FORBIDDEN,
                            f"the operator may not read {proposal.target.describe()} or update its scale; grant its "
                            "ServiceAccount get on that kind and get/update on its scale subresource. Retrying "
                            "until the plan ends.")
        self._record(body, proposal, outcome, approver, at=now)
        return min(30.0, max(1.0, d.plan_wake(proposal, now)))

    @staticmethod
    def _involved(body: dict) -> dict:
        meta = body["metadata"]
        return {"apiVersion": API_VERSION, "kind": PROPOSAL_KIND, "name": meta["name"],
                "namespace": meta["namespace"], "uid": meta.get("uid", "")}

    def _label_with_policy(self, body: dict, proposal: Proposal) -> None:
        """The label is an index (kubectl get sprop -l ...); a hand-written proposal may lack it."""
        meta = body["metadata"]
        # Errors propagate: the queue retries with backoff rather than spinning.
        self.kube.label_proposal(meta["namespace"], meta["name"], {POLICY_LABEL: proposal.policy_name})


def _approval_condition(proposal: Proposal | None, outcome: d.Outcome,
                        approver: str | None) -> tuple[bool | str, str, str] | None:
    """The Approved condition: a person's decision as the operator verified it."""
    if proposal is None:
        return None
    refusals = {d.Reason.APPROVER_NOT_AUTHORIZED, d.Reason.SELF_APPROVAL, d.Reason.CONFLICTING_DECISION,
                d.Reason.REJECTED_BY_USER}
    if outcome.reason in refusals:
        return False, outcome.reason, outcome.message
    if outcome.reason in (d.Reason.AWAITING_APPROVAL, d.Reason.MISSING_APPROVER):
        return "Unknown", outcome.reason, outcome.message
    if approver:  # verified for this outcome
        return True, d.Reason.APPROVED, d.approved_message(proposal, approver)
    return None
