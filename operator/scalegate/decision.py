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

from .model import (
    DecisionAnnotations,
    InvalidObject,
    Phase,
    Policy,
    Proposal,
    StepOutcome,
    StepReceipt,
    TargetRef,
    format_time,
    parse_time,
)
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


# -- plans ---------------------------------------------------------------------------------
# A plan (spec.schedule) is approved once and applied step by step. The whole plan is
# judged at approval (`check_plan`); each later step, when due, passes checks 2, 3, 4 and 6
# against the policy as it is then, with the replicas the plan's previous step left as the
# staleness basis. The receipts (status.steps) say what happened to each step that came due.
# Plan-only reasons (the others are shared with single changes):
PLAN_SCHEDULED = "PlanScheduled"      # approved; the first step is not due yet (Approved)
STEP_APPLIED = "StepApplied"          # a step was applied (Active)
PLAN_COMPLETED = "PlanCompleted"      # endsAt passed (Applied)
PLAN_ENDED = "PlanEnded"              # endsAt passed before the first step could be applied (Expired)
LATER_STEP_IN_EFFECT = "LaterStepInEffect"  # a Missed receipt: not replayed
#: How many problems of a rejected plan the message lists (the rest are counted).
PLAN_PROBLEMS_SHOWN = 5


def describe_step(proposal: Proposal, index: int) -> str:
    """'step 2 of 5 (at 2026-11-27T01:00:00Z)', for messages."""
    return f"step {index + 1} of {len(proposal.schedule)} (at {format_time(proposal.schedule[index].at)})"


def check_plan(proposal: Proposal, policy: Policy) -> Outcome | None:
    """Check 3 for a whole plan, at approval: every step within minReplicas..maxReplicas,
    every change within maxStepUp/maxStepDown (from spec.currentReplicas to the first step,
    and between consecutive steps), and consecutive steps at least cooldownSeconds apart.
    Any violation rejects the whole plan, never clamped, and the message lists what breaks."""
    problems = []
    previous = proposal.current_replicas
    for i, step in enumerate(proposal.schedule):
        for check in policy.bounds.violations(step.replicas, previous):
            problems.append(f"{describe_step(proposal, i)}: {check.problem}")
        if i > 0:
            gap = (step.at - proposal.schedule[i - 1].at).total_seconds()
            if gap < policy.cooldown_seconds:
                problems.append(f"{describe_step(proposal, i)}: {gap:g}s after the step before, less than "
                                f"cooldownSeconds {policy.cooldown_seconds}")
        previous = step.replicas
    if not problems:
        return None
    shown = "; ".join(problems[:PLAN_PROBLEMS_SHOWN])
    more = len(problems) - PLAN_PROBLEMS_SHOWN
    if more > 0:
        shown += f"; and {more} more"
    return Outcome(Phase.REJECTED, Reason.OUT_OF_BOUNDS,
                   f"the whole plan is rejected, out of bounds of policy {policy.name}: {shown} "
                   "(never clamped; nothing was applied)")


def step_in_effect(proposal: Proposal, now: dt.datetime) -> int | None:
    """Index of the step in effect at `now`: the last one whose `at` has come, while the plan
    has not ended (`endsAt`). None before the first step and from endsAt on."""
    if not proposal.schedule or (proposal.ends_at is not None and now >= proposal.ends_at):
        return None
    index = None
    for i, step in enumerate(proposal.schedule):
        if step.at > now:
            break
        index = i
    return index


def plan_ended(proposal: Proposal, now: dt.datetime) -> bool:
    """endsAt has come: no step applies any more."""
    return proposal.ends_at is not None and now >= proposal.ends_at


def next_step(proposal: Proposal, now: dt.datetime) -> int | None:
    """Index of the next step due after `now` (the first not yet in effect), or None when no
    step is left before endsAt."""
    if plan_ended(proposal, now):
        return None
    for i, step in enumerate(proposal.schedule):
        if step.at > now:
            return i
    return None


def plan_wake(proposal: Proposal, now: dt.datetime) -> float:
    """Seconds until time alone changes what the plan needs: its next step, else endsAt.
    The operator's timer for the plan (no polling in between)."""
    following = next_step(proposal, now)
    if following is not None:
        return _seconds_until(proposal.schedule[following].at, now)
    if proposal.ends_at is not None:
        return _seconds_until(proposal.ends_at, now)
    return 0.0


def receipt_of(proposal: Proposal, index: int) -> StepReceipt | None:
    """The receipt of step `index`, if it came due and has one."""
    at = proposal.schedule[index].at
    return next((r for r in proposal.receipts if r.at == at), None)


def plan_started(proposal: Proposal) -> bool:
    """Whether a step of the plan has been applied (the plan is Active, or was)."""
    return any(r.outcome == StepOutcome.APPLIED for r in proposal.receipts)


def plan_basis(proposal: Proposal) -> int:
    """The replicas the target should have now if nobody else changed it: what the plan's
    last applied step left, or spec.currentReplicas before any. The staleness basis of the
    next step."""
    applied_steps = [r for r in proposal.receipts if r.outcome == StepOutcome.APPLIED]
    if not applied_steps:
        return proposal.current_replicas
    return max(applied_steps, key=lambda r: r.at).replicas


def _missed(proposal: Proposal, index: int, why: str) -> StepReceipt:
    step = proposal.schedule[index]
    return StepReceipt(at=step.at, replicas=step.replicas, outcome=StepOutcome.MISSED,
                       reason=LATER_STEP_IN_EFFECT,
                       message=f"not applied: {why} (steps that came due are not replayed)")


def receipts_with(proposal: Proposal, index: int, receipt: StepReceipt) -> tuple[StepReceipt, ...]:
    """The plan's receipts once step `index` is decided: `receipt` for it (replacing one it
    had, e.g. Skipped while suspended and applied after the resume), and a Missed receipt for
    each earlier step that came due without one: only the step in effect is applied, the
    ones before it are not replayed. Receipts of other steps are kept as they are. In order
    of time."""
    by_at = {r.at: r for r in proposal.receipts}
    for i in range(index):
        if proposal.schedule[i].at not in by_at:
            by_at[proposal.schedule[i].at] = _missed(
                proposal, i, f"{describe_step(proposal, index)} was already in effect when the operator came to it")
    by_at[receipt.at] = receipt
    return tuple(sorted(by_at.values(), key=lambda r: r.at))


def receipts_until(proposal: Proposal, now: dt.datetime) -> tuple[StepReceipt, ...]:
    """The receipts with a Missed one for every step that came due by `now` (at most endsAt)
    without one: for a plan that ends or is superseded before the operator came to them."""
    moment = min(now, proposal.ends_at) if proposal.ends_at is not None else now
    by_at = {r.at: r for r in proposal.receipts}
    for i, step in enumerate(proposal.schedule):
        if step.at <= moment and step.at not in by_at:
            by_at[step.at] = _missed(proposal, i, "the plan ended or was superseded before the operator came to it")
    return tuple(sorted(by_at.values(), key=lambda r: r.at))


def step_receipt(proposal: Proposal, index: int, outcome: Outcome, previous: int | None = None,
                 applied_at: dt.datetime | None = None) -> StepReceipt:
    """The receipt of step `index` for an outcome: Applied (with when and from what),
    Skipped (suspended), or the outcome that stopped the plan (Stale, Rejected, Failed)."""
    step = proposal.schedule[index]
    if outcome.phase == Phase.ACTIVE and outcome.reason == STEP_APPLIED:
        return StepReceipt(at=step.at, replicas=step.replicas, outcome=StepOutcome.APPLIED,
                           applied_at=applied_at, previous_replicas=previous)
    kind = {Phase.STALE: StepOutcome.STALE, Phase.REJECTED: StepOutcome.REJECTED,
            Phase.ACTIVE: StepOutcome.SKIPPED}.get(outcome.phase, StepOutcome.FAILED)
    return StepReceipt(at=step.at, replicas=step.replicas, outcome=kind, previous_replicas=previous,
                       reason=outcome.reason, message=outcome.message)


def plan_status(proposal: Proposal, receipts: tuple[StepReceipt, ...], now: dt.datetime) -> dict[str, Any]:
    """The plan's part of status: the receipts, the number of steps, and when the next one is
    due (null once none is left, or when the plan is over)."""
    following = next_step(proposal, now)
    return {"plannedSteps": len(proposal.schedule), "steps": [r.to_dict() for r in receipts],
            "nextStepAt": proposal.schedule[following].to_dict()["at"] if following is not None else None}


def _what_next(proposal: Proposal, now: dt.datetime) -> str:
    following = next_step(proposal, now)
    if following is not None:
        return f"next: {describe_step(proposal, following)}, {proposal.schedule[following].replicas} replicas"
    ends = format_time(proposal.ends_at) if proposal.ends_at is not None else "(no end)"
    return f"no step left; the plan ends at {ends}"


def plan_scheduled(proposal: Proposal, now: dt.datetime, approver: str) -> Outcome:
    """Approved before the first step's time: it waits for it (a timer, still Approved)."""
    first = proposal.schedule[0]
    return Outcome(Phase.APPROVED, PLAN_SCHEDULED,
                   f"approved by {approver}; the plan's first step ({first.replicas} replicas) is due at "
                   f"{format_time(first.at)}", requeue_after=_seconds_until(first.at, now))


def plan_ended_unstarted(proposal: Proposal) -> Outcome:
    ends = format_time(proposal.ends_at) if proposal.ends_at is not None else "(no end)"
    return Outcome(Phase.EXPIRED, PLAN_ENDED,
                   f"the plan ended at {ends} before its first step could be applied; nothing was applied")


def step_applied(proposal: Proposal, index: int, previous: int, approver: str, now: dt.datetime,
                 wrote: bool = True) -> Outcome:
    """A step was applied (or its replicas were already in place): Active until endsAt."""
    step = proposal.schedule[index]
    did = (f"scaled {proposal.target.describe()} from {previous} to {step.replicas} replicas" if wrote
           else f"{proposal.target.describe()} already had its {step.replicas} replicas")
    return Outcome(Phase.ACTIVE, STEP_APPLIED,
                   f"{describe_step(proposal, index)}: {did}, approved by {approver}; {_what_next(proposal, now)}",
                   requeue_after=plan_wake(proposal, now))


def step_skipped(proposal: Proposal, index: int, policy: Policy, now: dt.datetime) -> Outcome:
    """The policy is suspended when a step comes due: the step is skipped, the plan goes on."""
    return Outcome(Phase.ACTIVE, Reason.SUSPENDED,
                   f"policy {policy.name} is suspended: {describe_step(proposal, index)} was skipped, nothing was "
                   f"applied; the step in effect is applied when the policy is resumed; {_what_next(proposal, now)}",
                   requeue_after=plan_wake(proposal, now))


def stopped_at_step(proposal: Proposal, index: int, outcome: Outcome) -> Outcome:
    """A check failed for a due step: the plan stops with that outcome (earlier receipts kept)."""
    return Outcome(outcome.phase, outcome.reason,
                   f"the plan stopped at {describe_step(proposal, index)}: {outcome.message}")


def check_step_bounds(proposal: Proposal, index: int, policy: Policy, basis: int) -> Outcome | None:
    """Check 3 for one due step, against the policy as it is now: the step's replicas within
    the bounds, and the change from what the previous step left within the step limits."""
    step = proposal.schedule[index]
    problems = [check.problem for check in policy.bounds.violations(step.replicas, basis)]
    if problems:
        return Outcome(Phase.REJECTED, Reason.OUT_OF_BOUNDS,
                       f"out of bounds of policy {policy.name} as it is now: " + "; ".join(problems)
                       + " (never clamped; nothing was applied)")
    return None


def check_step_staleness(proposal: Proposal, basis: int, live_replicas: int) -> Outcome | None:
    """Check 4 for a step: the target has what the plan's previous step left (or, before the
    first, spec.currentReplicas); anyone else's change stops the plan."""
    if live_replicas != basis:
        left = "the plan's previous step left" if plan_started(proposal) else "this plan was based on"
        return Outcome(Phase.STALE, Reason.TARGET_CHANGED,
                       f"{proposal.target.describe()} now has {live_replicas} replicas, not the {basis} {left}; "
                       "someone else changed it, so nothing was applied")
    return None


def plan_completed(proposal: Proposal, receipts: tuple[StepReceipt, ...], approver: str | None) -> Outcome:
    """endsAt has come: the plan is done (Applied), whatever each step's receipt says."""
    applied_steps = sum(1 for r in receipts if r.outcome == StepOutcome.APPLIED)
    ends = format_time(proposal.ends_at) if proposal.ends_at is not None else "(no end)"
    by = f", approved by {approver}" if approver else ""
    return Outcome(Phase.APPLIED, PLAN_COMPLETED,
                   f"the plan ended at {ends}: {applied_steps} of {len(proposal.schedule)} steps applied{by}")


def superseding_candidates(proposal: Proposal, others: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(name, approver) of every proposal of the same policy newer than this active plan that
    carries a complete approval (approved, an approver named, not rejected, not approved by
    its proposer), newest first. `others` are the proposals' metadata. An active plan is
    superseded only by a newer approved proposal; the operator still asks the API server
    whether the approver may approve before it stops the plan."""
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    mine = (proposal.created or epoch, proposal.name)
    found = []
    for meta in others:
        name = str(meta.get("name") or "")
        try:
            created = parse_time(meta.get("creationTimestamp"))
        except InvalidObject:
            continue
        key = (created or epoch, name)
        if name == proposal.name or key <= mine:
            continue
        decision = DecisionAnnotations.parse(meta.get("annotations"))
        if (decision.approved and decision.approved_by and not decision.rejected
                and decision.approved_by != decision.proposed_by):
            found.append((key, name, decision.approved_by))
    return [(name, approver) for _, name, approver in sorted(found, reverse=True)]


def plan_superseded(proposal: Proposal, newer: str) -> Outcome:
    applied_steps = sum(1 for r in proposal.receipts if r.outcome == StepOutcome.APPLIED)
    return Outcome(Phase.SUPERSEDED, Reason.SUPERSEDED,
                   f"superseded by the newer approved proposal {newer} for policy {proposal.policy_name}; "
                   f"{applied_steps} of {len(proposal.schedule)} steps had been applied, no more will be")
