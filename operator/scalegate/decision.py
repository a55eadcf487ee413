"""Pure decision logic: what may happen to a proposal, and why not.

No I/O here. The reconciler gathers facts (the proposal, its policy, the target's scale,
the autoscalers) one check at a time, in the contract's order, and asks these functions
what they mean. Each returns an `Outcome` that stops the apply, or None to go on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

from .model import Phase, Policy, Proposal, TargetRef, format_time


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


def cooldown_remaining(policy: Policy, now: dt.datetime) -> float:
    if policy.last_applied_time is None or policy.cooldown_seconds <= 0:
        return 0.0
    ends = policy.last_applied_time + dt.timedelta(seconds=policy.cooldown_seconds)
    return _seconds_until(ends, now)


def check_cooldown(proposal: Proposal, policy: Policy, now: dt.datetime) -> Outcome | None:
    """Check 5: enough time since the last apply on this target; otherwise wait (still Approved)."""
    remaining = cooldown_remaining(policy, now)
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


def applied(proposal: Proposal, previous: int) -> Outcome:
    approver = proposal.decision.approved_by
    return Outcome(Phase.APPLIED, Reason.APPLIED,
                   f"scaled {proposal.target.describe()} from {previous} to {proposal.replicas} replicas, "
                   f"approved by {approver}")


class Recovery:
    """What an apply intent left by an interrupted run means."""

    FINISHED = "finished"   # the write happened: record the outcome, do not scale again
    NOT_WRITTEN = "retry"   # the write did not happen: run the checks again


def recover_intent(proposal: Proposal, live_replicas: int, live_resource_version: str) -> str | Outcome:
    """Decide from the target's scale whether an interrupted apply wrote or not."""
    intent = proposal.intent
    assert intent is not None
    if live_replicas == intent.replicas:
        return Recovery.FINISHED
    if live_replicas == intent.previous_replicas:
        # Unchanged replicas: our write did not land (a status update may have moved the
        # resourceVersion, which alone proves nothing), so the checks decide again.
        return Recovery.NOT_WRITTEN
    return Outcome(Phase.STALE, Reason.TARGET_CHANGED,
                   f"an interrupted apply found {proposal.target.describe()} at {live_replicas} replicas, "
                   f"neither the previous {intent.previous_replicas} nor the proposed {intent.replicas}; "
                   "nothing more was applied")


def approved_message(proposal: Proposal) -> str:
    ref = f" ({proposal.decision.approval_ref})" if proposal.decision.approval_ref else ""
    return f"approved by {proposal.decision.approved_by}{ref}"
