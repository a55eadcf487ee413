"""Pure decision logic: what may happen to a proposal, and why not.

No I/O here. The reconciler gathers facts (the proposal, its policy, the target's scale,
the autoscalers) one check at a time, in the contract's order, and asks these functions
what they mean. Each returns an `Outcome` that stops the apply, or None to go on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .model import InvalidObject, Phase, Policy, Proposal, TargetRef, format_time, parse_time
from .records import ApplyIntent


class Reason:
    AWAITING_APPROVAL = "AwaitingApproval"
    MISSING_APPROVER = "MissingApprover"
    APPROVED = "Approved"
    COOLDOWN = "CooldownActive"
    SUSPENDED = "PolicySuspended"
    APPLIED = "Applied"
    REJECTED_BY_USER = "RejectedByUser"
    CONFLICTING_DECISION = "ConflictingDecision"
    OUT_OF_BOUNDS = "OutOfBounds"
    APPROVER_NOT_AUTHORIZED = "ApproverNotAuthorized"
    SELF_APPROVAL = "SelfApproval"
    EXPIRED = "Expired"
    SUPERSEDED = "Superseded"
    TARGET_CHANGED = "TargetChanged"
    POLICY_NOT_FOUND = "PolicyNotFound"
    TARGET_MISMATCH = "TargetMismatch"
    TARGET_NOT_FOUND = "TargetNotFound"
    NO_SCALE_SUBRESOURCE = "NoScaleSubresource"
    CONFLICTING_AUTOSCALER = "ConflictingAutoscaler"
    INVALID_PROPOSAL = "InvalidProposal"
    INVALID_POLICY = "InvalidPolicy"
    CONFLICTING_POLICY = "ConflictingPolicy"
    TARGET_MANAGED = "TargetManaged"
    INVALID_RECORD = "InvalidRecord"


@dataclass(frozen=True)
class Outcome:
    phase: str
    reason: str
    message: str
    # Seconds after which time alone may change the answer (expiry, cooldown end).
    requeue_after: float | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in Phase.TERMINAL


def _seconds_until(moment: dt.datetime, now: dt.datetime) -> float:
    return max(0.0, (moment - now).total_seconds())


def later(moment: dt.datetime, seconds: float) -> dt.datetime | None:
    """`moment` plus `seconds`, or None when that is no representable time (past the year
    9999): a time out of range is an answer here, never an OverflowError that would fail
    the same reconcile again and again."""
    try:
        return moment + dt.timedelta(seconds=seconds)
    except OverflowError:
        return None


def with_ttl(proposal: Proposal, policy: Policy | None) -> Proposal:
    """The proposal as the operator judges it: valid until the earlier of its validUntil and
    its creation plus the policy's proposalTTLSeconds (the CRD's default when the policy
    cannot be read). Capped, not refused: the forecaster sets validUntil from the same TTL,
    so only a proposal written by hand claims longer, and it simply expires on time; every
    check that looks at expiry (check 1, the waits, the cooldown) sees the capped time."""
    if proposal.created is None:
        return proposal
    ttl = policy.proposal_ttl_seconds if policy is not None else Policy.proposal_ttl_seconds
    end = later(proposal.created, ttl)
    if end is None or end >= proposal.valid_until:
        return proposal
    return dataclasses.replace(proposal, valid_until=end)


def check_expiry_rejection_supersession(proposal: Proposal, now: dt.datetime,
                                        newest_name: str | None) -> Outcome | None:
    """Check 1: not expired, not rejected, not superseded by a newer proposal."""
    if now >= proposal.valid_until:
        return Outcome(Phase.EXPIRED, Reason.EXPIRED,
                       f"expired at {format_time(proposal.valid_until)} before it was applied; "
                       "a new forecast will propose again if still needed")
    decision = proposal.decision
    if decision.rejected:
        who = decision.rejected_by or "an unnamed user"
        why = f": {decision.reason}" if decision.reason else ""
        return Outcome(Phase.REJECTED, Reason.REJECTED_BY_USER, f"rejected by {who}{why}")
    if newest_name is not None and newest_name != proposal.name:
        return Outcome(Phase.SUPERSEDED, Reason.SUPERSEDED,
                       f"superseded by the newer proposal {newest_name} for policy {proposal.policy_name}")
    return None


def newest_proposal(candidates: Iterable[tuple[str, dt.datetime | None]]) -> str | None:
    """Name of the newest proposal among (name, creationTimestamp); the name breaks ties
    so that every reader agrees on one winner."""
    best: tuple[dt.datetime, str] | None = None
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    for name, created in candidates:
        key = (created or epoch, name)
        if best is None or key > best:
            best = key
    return best[1] if best else None


def check_approval(proposal: Proposal, now: dt.datetime) -> Outcome | None:
    """None when the proposal carries a complete approval; else why it waits or stops."""
    decision = proposal.decision
    if decision.approved and decision.rejected:
        # The admission policy forbids this; without it, doubt means no scaling.
        return Outcome(Phase.REJECTED, Reason.CONFLICTING_DECISION,
                       "both approved and rejected; nothing was applied")
    if not decision.approved:
        return Outcome(Phase.PENDING, Reason.AWAITING_APPROVAL,
                       f"waiting for approval until {format_time(proposal.valid_until)}: "
                       f"kubectl scalegate approve {proposal.name} -n {proposal.namespace}",
                       requeue_after=_seconds_until(proposal.valid_until, now))
    if not decision.approved_by:
        return Outcome(Phase.PENDING, Reason.MISSING_APPROVER,
                       "scalegate.io/approved is set but scalegate.io/approved-by is empty; "
                       "an approval must name the approving user",
                       requeue_after=_seconds_until(proposal.valid_until, now))
    if decision.proposed_by and decision.approved_by == decision.proposed_by:
        return Outcome(Phase.REJECTED, Reason.SELF_APPROVAL,
                       f"{decision.approved_by} proposed this change and cannot also approve it")
    return None


def approver_not_authorized(approver: str, proposal: Proposal) -> Outcome:
    return Outcome(Phase.REJECTED, Reason.APPROVER_NOT_AUTHORIZED,
                   f"{approver} may not approve scalingproposals in namespace {proposal.namespace} "
                   "(needs the verb 'approve', e.g. through the ClusterRole scalegate-approver)")


def check_policy(proposal: Proposal, policy: Policy | None, now: dt.datetime) -> Outcome | None:
    """Check 2: the policy exists, is not suspended, and targets the same object."""
    if policy is None:
        return Outcome(Phase.FAILED, Reason.POLICY_NOT_FOUND,
                       f"ScalingPolicy {proposal.policy_name} does not exist in namespace {proposal.namespace}")
    if not policy.target.same_object(proposal.target):
        return Outcome(Phase.FAILED, Reason.TARGET_MISMATCH,
                       f"the proposal targets {proposal.target.describe()} but policy {policy.name} "
                       f"now targets {policy.target.describe()}")
    if policy.suspend:
        return Outcome(Phase.APPROVED, Reason.SUSPENDED,
                       f"policy {policy.name} is suspended; the proposal waits until it is resumed "
                       "or expires", requeue_after=_seconds_until(proposal.valid_until, now))
    return None


def policy_claims(bodies: Iterable[Mapping[str, Any]]) -> list[tuple[str, dt.datetime | None, TargetRef]]:
    """(name, creationTimestamp, targetRef) of each policy among `bodies` whose target can be
    read (a policy whose spec cannot be parsed at all still claims its target if that much
    of it is readable)."""
    claims = []
    for body in bodies:
        meta = body.get("metadata") or {}
        try:
            target = TargetRef.parse((body.get("spec") or {}).get("targetRef"), "spec.targetRef")
            created = parse_time(meta.get("creationTimestamp"))
        except InvalidObject:
            continue
        claims.append((str(meta.get("name") or ""), created, target))
    return claims


def check_target_claim(policy: Policy, policy_created: dt.datetime | None,
                       claims: Iterable[tuple[str, dt.datetime | None, TargetRef]]) -> Outcome | None:
    """Check 2, continued: one policy per target. The cooldown and step limits are "on this
    target" (the contract), and a second policy for the same target would bring its own
    cooldown clock and limits, so the oldest policy (creation time, then name) governs the
    target and a proposal of any later one is refused. Refusing is simpler to reason about
    than merging the limits of several policies, and it says plainly what to fix."""
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    rivals = [(created or epoch, name) for name, created, target in claims
              if target.same_object(policy.target)]
    rivals.append((policy_created or epoch, policy.name))
    winner = min(rivals)[1]
    if winner == policy.name:
        return None
    return Outcome(Phase.FAILED, Reason.CONFLICTING_POLICY,
                   f"policy {policy.name} targets {policy.target.describe()}, which the older policy {winner} "
                   "already governs: one policy per target, so that its cooldown and step limits hold; "
                   f"nothing was applied (delete policy {policy.name} or point it at another target)")


def check_controller(proposal: Proposal, controller: tuple[str, str] | None) -> Outcome | None:
    """Check 4, first: the target is not controlled by another object (an ownerReference with
    controller: true, e.g. the ReplicaSet of a Deployment), whose controller would put its
    replicas back at once and make any receipt false."""
    if controller is None:
        return None
    kind, name = controller
    return Outcome(Phase.FAILED, Reason.TARGET_MANAGED,
                   f"{proposal.target.describe()} is controlled by {kind} {name}, which sets its replicas and "
                   f"would undo any change; nothing was applied (propose for {kind} {name} instead)")


def check_bounds(proposal: Proposal, policy: Policy) -> Outcome | None:
    """Check 3: within [min, max] and the step limits (`rules.Bounds`, the same rule the
    forecaster sizes with and the plugin shows). Out of bounds is rejected, never clamped."""
    problems = [check.problem for check in policy.bounds.violations(proposal.replicas, proposal.current_replicas)]
    if problems:
        return Outcome(Phase.REJECTED, Reason.OUT_OF_BOUNDS,
                       f"out of bounds of policy {policy.name}: " + "; ".join(problems) + " (never clamped)")
    return None


def check_staleness(proposal: Proposal, live_replicas: int) -> Outcome | None:
    """Check 4: the target still has the replicas the forecast saw."""
    if live_replicas != proposal.current_replicas:
        return Outcome(Phase.STALE, Reason.TARGET_CHANGED,
                       f"{proposal.target.describe()} now has {live_replicas} replicas, not the "
                       f"{proposal.current_replicas} this proposal was based on; nothing was applied")
    return None


def cooldown_remaining(policy: Policy, now: dt.datetime) -> float | None:
    """Seconds until the cooldown ends (0 when it has), or None when its end is no
    representable time (a lastAppliedTime near the year 9999)."""
    if policy.last_applied_time is None or policy.cooldown_seconds <= 0:
        return 0.0
    ends = later(policy.last_applied_time, policy.cooldown_seconds)
    return None if ends is None else _seconds_until(ends, now)


def check_cooldown(proposal: Proposal, policy: Policy, now: dt.datetime) -> Outcome | None:
    """Check 5: enough time since the last apply on this target; otherwise wait (still Approved)."""
    remaining = cooldown_remaining(policy, now)
    if remaining is None:
        assert policy.last_applied_time is not None
        return Outcome(Phase.FAILED, Reason.INVALID_POLICY,
                       f"the cooldown of policy {policy.name} cannot be computed: its status.lastAppliedTime "
                       f"{format_time(policy.last_applied_time)} plus cooldownSeconds {policy.cooldown_seconds} "
                       "is past the last representable time; nothing was applied (only the operator writes "
                       "lastAppliedTime: find out who wrote this one)")
    if remaining <= 0:
        return None
    ends = now + dt.timedelta(seconds=remaining)
    if ends >= proposal.valid_until:
        # It cannot be applied before it expires; say so now, expire on time.
        return Outcome(Phase.APPROVED, Reason.COOLDOWN,
                       f"cooldown of policy {policy.name} lasts until {format_time(ends)}, after this "
                       "proposal expires", requeue_after=_seconds_until(proposal.valid_until, now))
    return Outcome(Phase.APPROVED, Reason.COOLDOWN,
                   f"approved; waiting for the cooldown of policy {policy.name} to end at {format_time(ends)}",
                   requeue_after=remaining)


def autoscaler_targets(target: TargetRef, hpa_targets: Iterable[tuple[str, TargetRef]]) -> list[str]:
    """Names of the HorizontalPodAutoscalers (name, scaleTargetRef) that manage `target`."""
    return sorted(name for name, ref in hpa_targets if ref.same_object(target))


def check_autoscalers(proposal: Proposal, managing_hpas: list[str]) -> Outcome | None:
    """Check 6: no HorizontalPodAutoscaler manages the target (two writers would fight)."""
    if managing_hpas:
        return Outcome(Phase.FAILED, Reason.CONFLICTING_AUTOSCALER,
                       f"HorizontalPodAutoscaler {', '.join(managing_hpas)} also manages "
                       f"{proposal.target.describe()}; remove it or stop proposing for this target")
    return None


def applied(proposal: Proposal, previous: int, approver: str) -> Outcome:
    """Applied, approved by `approver` (as the operator verified them)."""
    return Outcome(Phase.APPLIED, Reason.APPLIED,
                   f"scaled {proposal.target.describe()} from {previous} to {proposal.replicas} replicas, "
                   f"approved by {approver}")


class Recovery:
    """What an apply intent left by an interrupted run means."""

    FINISHED = "finished"   # the write happened: record the outcome, do not scale again
    NOT_WRITTEN = "retry"   # the write did not happen: run the checks again


def recover_intent(proposal: Proposal, intent: ApplyIntent, live_replicas: int, live_uid: str,
                   live_generation: int) -> str | Outcome:
    """Decide from the target as it is now whether an interrupted apply wrote.

    The intent holds the target's uid and `metadata.generation`, read before the scale (and
    before the resourceVersion the write was conditioned on). The API server moves the
    generation on every change of the spec, replicas included, and never back; status
    updates do not move it. So:

    - same generation: nothing has changed the spec since the read, so our write (which
      changes replicas) did not land: run the checks again (they may apply it now);
    - generation moved and the replicas are the proposed ones: it landed (or someone else set
      exactly these replicas): record it, never write again;
    - generation moved and other replicas: either our write landed and someone undid it, or
      it never landed and someone else changed the target; the two cannot be told apart from
      the target, so fail closed: Stale, nothing more applied. Scaling again here is what
      would overwrite the other writer's change.
    A replaced target (another uid) is another object: Stale as well.
    """
    target = proposal.target.describe()
    if intent.target_uid and live_uid != intent.target_uid:
        return Outcome(Phase.STALE, Reason.TARGET_CHANGED,
                       f"an interrupted apply found {target} replaced by another object since it was read; "
                       "nothing more was applied")
    if intent.target_generation and live_generation == intent.target_generation:
        return Recovery.NOT_WRITTEN
    if live_replicas == intent.replicas:
        return Recovery.FINISHED
    return Outcome(Phase.STALE, Reason.TARGET_CHANGED,
                   f"an interrupted apply from {intent.previous_replicas} to {intent.replicas} replicas found "
                   f"{target} at {live_replicas} and changed since it was read (generation "
                   f"{intent.target_generation} -> {live_generation}): whether the write landed and was undone "
                   "or never landed cannot be told, so nothing more was applied")


def approved_message(proposal: Proposal, approver: str | None = None) -> str:
    ref = f" ({proposal.decision.approval_ref})" if proposal.decision.approval_ref else ""
    return f"approved by {approver or proposal.decision.approved_by}{ref}"
