"""Parse -> decide -> act -> record, for one proposal.

The reconciler reads facts through `Kube`, asks `decision` what they mean, acts only when
every check holds, and records each outcome in status, a condition, an Event and a metric.
It is level-based: running it twice on the same state changes nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any, Callable

from . import decision as d
from . import metrics
from .conditions import set_condition
from .kube import Conflict, Forbidden, Kube, KubeError, NoScaleSubresource, NotFound
from .model import (API_VERSION, POLICY_LABEL, PROPOSAL_KIND, ApplyIntent, InvalidObject, Phase, Policy,
                    Proposal, TargetRef, format_time, parse_time)

log = logging.getLogger("scalegate.operator")

APPLYING = "Applying"
OPERATOR_FORBIDDEN = "OperatorForbidden"
WARNING_PHASES = {Phase.REJECTED, Phase.STALE, Phase.FAILED}


class Requeue(Exception):
    """The proposal changed under us; reconcile it again from a fresh read."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Reconciler:
    def __init__(self, kube: Kube, clock: Callable[[], dt.datetime] = utcnow, max_conflict_retries: int = 3,
                 autoscalers: Callable[[str], list[tuple[str, TargetRef]]] | None = None):
        self.kube = kube
        self.clock = clock
        self.max_conflict_retries = max_conflict_retries
        # (name, scaleTargetRef) of a namespace's HPAs: the operator passes its watch-fed
        # index; without one, each check lists them from the API server.
        self.autoscalers = autoscalers or kube.autoscalers
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # resourceVersion of our own last status write per proposal: its watch event
        # carries nothing new, so the handler need not reconcile again.
        self._written: dict[tuple[str, str], str] = {}

    def is_own_write(self, namespace: str, name: str, resource_version: str | None) -> bool:
        return resource_version is not None and self._written.get((namespace, name)) == resource_version

    def forget(self, namespace: str, name: str) -> None:
        self._written.pop((namespace, name), None)

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
        try:
            proposal = Proposal.parse(body)
        except InvalidObject as err:
            if (body.get("status") or {}).get("phase") in Phase.TERMINAL:
                return None
            try:
                self._record(body, None, d.Outcome(Phase.FAILED, d.Reason.INVALID_PROPOSAL,
                                                   f"cannot act on this proposal: {err}; nothing was applied"))
            except Requeue:
                return 0.0
            return None
        if proposal.terminal:
            return None
        if (body["metadata"].get("labels") or {}).get(POLICY_LABEL) != proposal.policy_name:
            self._label_with_policy(body, proposal)
            return 0.0
        with self._policy_lock(namespace, proposal.policy_name):
            try:
                return self._decide(body, proposal)
            except Requeue:
                return 0.0

    # -- the checks, in the contract's order -----------------------------------------
    def _decide(self, body: dict, proposal: Proposal) -> float | None:
        now = self.clock()
        if proposal.intent is not None:
            return self._recover(body, proposal, now)

        # Any proposal created before the state we decide on is in this list.
        newest = d.newest_proposal(
            self.kube.list_policy_proposals(proposal.namespace, proposal.policy_name,
                                            not_older_than=body["metadata"].get("resourceVersion"))
            + [(proposal.name, proposal.created)])
        outcome = d.check_expiry_rejection_supersession(proposal, now, newest)
        outcome = outcome or d.check_approval(proposal, now)
        if outcome:
            return self._finish(body, proposal, outcome)
        if not self.kube.user_may_approve(proposal.decision.approved_by, proposal.namespace, proposal.name):
            return self._finish(body, proposal, d.approver_not_authorized(proposal.decision.approved_by, proposal))

        policy_body = self.kube.get_policy(proposal.namespace, proposal.policy_name)
        try:
            policy = Policy.parse(policy_body) if policy_body else None
        except InvalidObject as err:
            return self._finish(body, proposal, d.Outcome(
                Phase.FAILED, d.Reason.INVALID_POLICY, f"policy {proposal.policy_name} is invalid: {err}"))
        outcome = d.check_policy(proposal, policy, now) or d.check_bounds(proposal, policy)
        if outcome:
            return self._finish(body, proposal, outcome)
        return self._apply(body, proposal, policy, now)

    def _apply(self, body: dict, proposal: Proposal, policy: Policy, now: dt.datetime) -> float | None:
        for _attempt in range(self.max_conflict_retries):
            try:
                scale = self.kube.get_scale(proposal.namespace, proposal.target)
            except NotFound as err:
                return self._finish(body, proposal, d.Outcome(
                    Phase.FAILED, d.Reason.TARGET_NOT_FOUND, f"{proposal.target.describe()} not found: {err}"))
            except NoScaleSubresource as err:
                return self._finish(body, proposal, d.Outcome(Phase.FAILED, d.Reason.NO_SCALE_SUBRESOURCE, str(err)))
            except Forbidden as err:
                return self._forbidden(body, proposal, err, now)
            outcome = (d.check_staleness(proposal, scale.replicas)
                       or d.check_cooldown(proposal, policy, now))
            if outcome is None:
                hpas = d.autoscaler_targets(proposal.target, self.autoscalers(proposal.namespace))
                outcome = d.check_autoscalers(proposal, hpas)
            if outcome:
                return self._finish(body, proposal, outcome)

            if ((body.get("status") or {}).get("reason") == OPERATOR_FORBIDDEN
                    and not self.kube.may_update_scale(proposal.namespace, proposal.target)):
                # Still not allowed: say nothing new rather than write an intent that cannot land.
                return self._forbidden(body, proposal, Forbidden("update of the target's scale"), now)
            # Record the intent first: a restart after the write must find it.
            intent = ApplyIntent(replicas=proposal.replicas, previous_replicas=scale.replicas,
                                 resource_version=scale.resource_version, started_at=now)
            body = self._record(body, proposal, d.Outcome(
                Phase.APPROVED, APPLYING,
                f"{d.approved_message(proposal)}; scaling {proposal.target.describe()} "
                f"from {scale.replicas} to {proposal.replicas}"), extra={"applying": intent.to_dict()})
            try:
                self.kube.update_scale(proposal.namespace, proposal.target, proposal.replicas,
                                       scale.resource_version)
            except Conflict:
                log.info("target %s/%s changed during apply of %s; checking again",
                         proposal.namespace, proposal.target.name, proposal.name)
                now = self.clock()
                continue
            except Forbidden as err:
                return self._forbidden(body, proposal, err, now)
            return self._complete(body, proposal, policy.name, scale.replicas, scale.uid)
        return 0.5  # the target kept changing; try again shortly, from a fresh read

    def _recover(self, body: dict, proposal: Proposal, now: dt.datetime) -> float | None:
        """An earlier run recorded an intent and stopped: find out whether it wrote."""
        try:
            scale = self.kube.get_scale(proposal.namespace, proposal.target)
        except (NotFound, NoScaleSubresource) as err:
            return self._finish(body, proposal, d.Outcome(
                Phase.FAILED, d.Reason.TARGET_NOT_FOUND, f"interrupted apply: target unreadable: {err}"))
        except Forbidden as err:
            return self._forbidden(body, proposal, err, now)
        verdict = d.recover_intent(proposal, scale.replicas, scale.resource_version)
        if verdict == d.Recovery.FINISHED:
            log.info("proposal %s/%s: interrupted apply had written; recording it", proposal.namespace, proposal.name)
            return self._complete(body, proposal, proposal.policy_name, proposal.intent.previous_replicas, scale.uid)
        if verdict == d.Recovery.NOT_WRITTEN:
            self._record(body, proposal, d.Outcome(Phase.APPROVED, d.Reason.APPROVED, d.approved_message(proposal)),
                         extra={"applying": None})
            raise Requeue()
        return self._finish(body, proposal, verdict)

    def _complete(self, body: dict, proposal: Proposal, policy_name: str, previous: int, target_uid: str) -> None:
        now = self.clock()
        # The policy first: the cooldown must hold even if we stop before the proposal's status.
        try:
            self.kube.patch_policy_status(proposal.namespace, policy_name, {
                "lastAppliedTime": format_time(now), "lastAppliedProposal": proposal.name})
        except NotFound:
            pass
        outcome = d.applied(proposal, previous)
        self._finish(body, proposal, outcome, extra={
            "appliedAt": format_time(now), "previousReplicas": previous, "appliedReplicas": proposal.replicas})
        approved_at = parse_time((body.get("status") or {}).get("approvedAt"))
        if approved_at:
            metrics.APPLY_LATENCY.observe(max(0.0, (now - approved_at).total_seconds()))
        self._event({"apiVersion": proposal.target.api_version, "kind": proposal.target.kind,
                     "name": proposal.target.name, "namespace": proposal.namespace, "uid": target_uid},
                    "Normal", "ScaledByScalegate",
                    f"scaled from {previous} to {proposal.replicas} replicas by proposal {proposal.name}, "
                    f"approved by {proposal.decision.approved_by}")
        return None

    def _forbidden(self, body: dict, proposal: Proposal, err: Exception, now: dt.datetime) -> float:
        # A refused request wrote nothing: no intent to keep, and the next try starts clean.
        log.warning("proposal %s/%s: operator forbidden: %s", proposal.namespace, proposal.name, err)
        self._finish(body, proposal, d.Outcome(
            Phase.APPROVED, OPERATOR_FORBIDDEN,
            f"the operator may not read or update the scale of {proposal.target.describe()}; grant its "
            "ServiceAccount get/update on that kind's scale subresource. Retrying until the proposal expires."),
            extra={"applying": None})
        return min(30.0, max(1.0, (proposal.valid_until - now).total_seconds()))

    # -- recording ---------------------------------------------------------------------
    def _finish(self, body: dict, proposal: Proposal, outcome: d.Outcome, extra: dict | None = None) -> float | None:
        extra = dict(extra or {})
        if outcome.terminal:
            extra.setdefault("applying", None)
        self._record(body, proposal, outcome, extra=extra)
        return None if outcome.terminal else outcome.requeue_after

    def _record(self, body: dict, proposal: Proposal | None, outcome: d.Outcome, extra: dict | None = None) -> dict:
        """Write the outcome to status (only if it changes anything), with an Event and a metric.
        Conditioned on the resourceVersion we decided on: a concurrent change re-runs us."""
        old = body.get("status") or {}
        now = self.clock()
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        status: dict[str, Any] = {"phase": outcome.phase, "reason": outcome.reason,
                                  "message": outcome.message, "observedGeneration": generation}
        conditions = set_condition(old.get("conditions"), "Applied", outcome.phase == Phase.APPLIED,
                                   outcome.reason, outcome.message, generation, now)
        approval = _approval_condition(proposal, outcome)
        if approval:
            conditions = set_condition(conditions, "Approved", approval[0], approval[1], approval[2], generation, now)
        status["conditions"] = conditions
        if proposal is not None:
            decision = proposal.decision
            if approval and approval[0] is True:
                status["approvedBy"] = decision.approved_by
                if decision.approval_ref:
                    status["approvalRef"] = decision.approval_ref
                if not old.get("approvedAt"):
                    status["approvedAt"] = format_time(now)
                    if proposal.created:
                        metrics.APPROVAL_WAIT.observe(max(0.0, (now - proposal.created).total_seconds()))
            if outcome.reason == d.Reason.REJECTED_BY_USER:
                status["rejectedBy"] = decision.rejected_by
        if outcome.terminal:
            status["finishedAt"] = format_time(now)
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
        self._written[(meta["namespace"], meta["name"])] = (updated.get("metadata") or {}).get("resourceVersion", "")
        transition = (old.get("phase"), old.get("reason")) != (outcome.phase, outcome.reason)
        if transition and outcome.reason != APPLYING:  # Applying is a step inside one decision
            metrics.PROPOSAL_OUTCOMES.labels(meta["namespace"], outcome.phase, outcome.reason).inc()
            log.info("proposal %s/%s: %s (%s): %s", meta["namespace"], meta["name"], outcome.phase,
                     outcome.reason, outcome.message)
            self._event({"apiVersion": API_VERSION, "kind": PROPOSAL_KIND, "name": meta["name"],
                         "namespace": meta["namespace"], "uid": meta.get("uid", "")},
                        "Warning" if outcome.phase in WARNING_PHASES else "Normal", outcome.reason, outcome.message)
        return updated

    def _event(self, involved: dict, event_type: str, reason: str, message: str) -> None:
        try:
            self.kube.emit_event(involved, event_type, reason, message)
        except Exception as err:  # an Event is a courtesy: losing one must not undo a decision
            log.warning("could not post event %s on %s/%s: %s", reason, involved.get("kind"), involved.get("name"), err)

    def _label_with_policy(self, body: dict, proposal: Proposal) -> None:
        """Proposals are found by their policy label; a hand-written one may lack it."""
        meta = body["metadata"]
        # Errors propagate: the queue retries with backoff rather than spinning.
        self.kube.label_proposal(meta["namespace"], meta["name"], {POLICY_LABEL: proposal.policy_name})


def _approval_condition(proposal: Proposal | None, outcome: d.Outcome) -> tuple[bool | str, str, str] | None:
    """The Approved condition: a person's decision as the operator verified it."""
    if proposal is None:
        return None
    refusals = {d.Reason.APPROVER_NOT_AUTHORIZED, d.Reason.SELF_APPROVAL, d.Reason.CONFLICTING_DECISION,
                d.Reason.REJECTED_BY_USER}
    if outcome.reason in refusals:
        return False, outcome.reason, outcome.message
    if outcome.reason in (d.Reason.AWAITING_APPROVAL, d.Reason.MISSING_APPROVER):
        return "Unknown", outcome.reason, outcome.message
    # Every outcome after the approval checks carries the (verified) approval along.
    after_approval = (Phase.APPROVED, Phase.APPLIED, Phase.REJECTED, Phase.STALE, Phase.FAILED)
    if proposal.decision.approved and outcome.phase in after_approval:
        return True, d.Reason.APPROVED, d.approved_message(proposal)
    return None
