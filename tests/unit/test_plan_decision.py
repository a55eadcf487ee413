"""The pure plan checks in `decision`: the whole plan judged at approval, which step is in
effect at a time (steps that came due are not replayed), when the plan next needs the
operator (its timer), the staleness basis a step is judged against, the receipts, and
which newer proposal supersedes an active plan."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from scalegate import decision as d
from scalegate.decision import Reason
from scalegate.model import Phase, PlanStep, Policy, Proposal, StepOutcome, StepReceipt
from scalegate.records import ApplyIntent

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)
FORECASTER = "system:serviceaccount:scalegate:forecaster"


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def stamp(minutes: float) -> str:
    return at(minutes).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan(replicas=(9, 12, 6), current: int = 4, every: float = 60, receipts: list[dict] | None = None,
         name: str = "web-1", created: float = -10) -> Proposal:
    """Steps of `replicas` every `every` minutes from T0, ending one step after the last."""
    schedule = [{"at": stamp(every * i), "replicas": r} for i, r in enumerate(replicas)]
    return Proposal.parse({
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "creationTimestamp": stamp(created),
                     "annotations": {"scalegate.io/proposed-by": FORECASTER}},
        "spec": {"policyRef": {"name": "web"},
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "currentReplicas": current, "replicas": replicas[0], "validUntil": stamp(30), "reason": "plan",
                 "schedule": schedule, "endsAt": stamp(every * len(replicas))},
        "status": {"steps": receipts or []},
    })


def policy(**spec) -> Policy:
    values = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
              "minReplicas": 2, "maxReplicas": 20, "cooldownSeconds": 600}
    values.update(spec)
    return Policy.parse({"metadata": {"name": "web", "namespace": "shop"}, "spec": values})


def applied(minutes: float, replicas: int, previous: int) -> dict:
    return {"at": stamp(minutes), "replicas": replicas, "outcome": "Applied", "appliedAt": stamp(minutes),
            "previousReplicas": previous}


# -- the whole plan at approval -------------------------------------------------------------
def test_a_plan_within_the_policy_passes():
    assert d.check_plan(plan(), policy(maxStepUp=5, maxStepDown=6)) is None


@pytest.mark.parametrize("replicas, spec, words", [
    ((9, 25, 6), {}, "step 2 of 3 (at 2030-01-01T01:00:00Z): 25 is above maxReplicas 20"),
    ((9, 12, 1), {}, "step 3 of 3 (at 2030-01-01T02:00:00Z): 1 is below minReplicas 2"),
    # From spec.currentReplicas (4) to the first step: +5 is one too many.
    ((9, 12, 6), {"maxStepUp": 4}, "step 1 of 3 (at 2030-01-01T00:00:00Z): adding 5 replicas exceeds maxStepUp 4"),
    # Between consecutive steps: 12 -> 6.
    ((9, 12, 6), {"maxStepDown": 5}, "step 3 of 3 (at 2030-01-01T02:00:00Z): removing 6 replicas exceeds "
                                     "maxStepDown 5"),
    # Steps an hour apart, a cooldown of two.
    ((9, 12, 6), {"cooldownSeconds": 7200}, "step 2 of 3 (at 2030-01-01T01:00:00Z): 3600s after the step before, "
                                            "less than cooldownSeconds 7200"),
], ids=["above-max", "below-min", "first-step-up", "step-down-between-steps", "spacing"])
def test_any_violation_rejects_the_whole_plan_never_clamped(replicas, spec, words):
    outcome = d.check_plan(plan(replicas), policy(**spec))
    assert outcome is not None
    assert (outcome.phase, outcome.reason) == (Phase.REJECTED, Reason.OUT_OF_BOUNDS)
    assert words in outcome.message and "whole plan" in outcome.message and "never clamped" in outcome.message


def test_a_rejected_plan_lists_a_few_problems_and_counts_the_rest():
    outcome = d.check_plan(plan((30,) * 8, every=1), policy())
    assert outcome is not None
    # 8 steps above max, 7 gaps shorter than the cooldown: 5 shown, 10 counted.
    assert outcome.message.count("above maxReplicas") + outcome.message.count("cooldownSeconds") == 5
    assert "and 10 more" in outcome.message


# -- which step is in effect, and the timer -----------------------------------------------
@pytest.mark.parametrize("minutes, expected", [
    (-1, None),      # before the first step
    (0, 0),          # a step is in effect from its at
    (59.9, 0),
    (60, 1),
    (150, 2),        # several came due (operator down): only the one in effect counts
    (179.9, 2),
    (180, None),     # endsAt: the plan is over
    (500, None),
])
def test_the_step_in_effect(minutes, expected):
    assert d.step_in_effect(plan(), at(minutes)) == expected


def test_the_timer_is_the_next_step_then_the_end():
    p = plan()
    assert d.plan_wake(p, at(-5)) == 300
    assert d.plan_wake(p, at(0)) == 3600            # step 2 at 60 minutes
    assert d.plan_wake(p, at(59.5)) == 30
    assert d.plan_wake(p, at(130)) == 50 * 60        # no step left: endsAt
    assert d.plan_wake(p, at(200)) == 0
    assert d.next_step(p, at(30)) == 1 and d.next_step(p, at(130)) is None and d.next_step(p, at(200)) is None
    assert not d.plan_ended(p, at(179.9)) and d.plan_ended(p, at(180))


def test_plan_status_names_the_next_step_and_counts_the_steps():
    p = plan()
    receipt = StepReceipt(at=at(0), replicas=9, outcome=StepOutcome.APPLIED, applied_at=at(1), previous_replicas=4)
    status = d.plan_status(p, (receipt,), at(1))
    assert status == {"plannedSteps": 3, "nextStepAt": "2030-01-01T01:00:00Z",
                      "steps": [{"at": "2030-01-01T00:00:00Z", "replicas": 9, "outcome": "Applied",
                                 "appliedAt": "2030-01-01T00:01:00Z", "previousReplicas": 4}]}
    assert d.plan_status(p, (receipt,), at(121))["nextStepAt"] is None


# -- the staleness basis and the checks of one step ------------------------------------------
def test_the_basis_is_what_the_last_applied_step_left():
    assert d.plan_basis(plan()) == 4                                   # nothing applied: currentReplicas
    p = plan(receipts=[applied(0, 9, 4)])
    assert d.plan_basis(p) == 9 and d.plan_started(p)
    skipped = {"at": stamp(60), "replicas": 12, "outcome": "Skipped", "reason": "PolicySuspended"}
    assert d.plan_basis(plan(receipts=[applied(0, 9, 4), skipped])) == 9  # a skipped step changed nothing
    assert d.plan_basis(plan(receipts=[applied(0, 9, 4), applied(60, 12, 9)])) == 12
    assert not d.plan_started(plan(receipts=[skipped]))


def test_a_step_is_judged_against_the_policy_as_it_is_now():
    p = plan(receipts=[applied(0, 9, 4)])
    assert d.check_step_bounds(p, 1, policy(maxStepUp=3), 9) is None
    outcome = d.check_step_bounds(p, 1, policy(maxReplicas=10), 9)
    assert outcome is not None and (outcome.phase, outcome.reason) == (Phase.REJECTED, Reason.OUT_OF_BOUNDS)
    assert "12 is above maxReplicas 10" in outcome.message and "as it is now" in outcome.message
    # The step limit counts from what the target has (the basis), not from the step before
    # in the schedule: after a skipped step the change is larger.
    outcome = d.check_step_bounds(p, 2, policy(maxStepUp=3), 2)
    assert outcome is not None and "adding 4 replicas exceeds maxStepUp 3" in outcome.message


def test_anyone_elses_change_makes_a_step_stale():
    p = plan(receipts=[applied(0, 9, 4)])
    assert d.check_step_staleness(p, 9, 9) is None
    outcome = d.check_step_staleness(p, 9, 10)
    assert outcome is not None and (outcome.phase, outcome.reason) == (Phase.STALE, Reason.TARGET_CHANGED)
    assert "now has 10 replicas, not the 9 the plan's previous step left" in outcome.message
    first = d.check_step_staleness(plan(), 4, 5)
    assert first is not None and "not the 4 this plan was based on" in first.message


def test_a_stop_names_the_step():
    stop = d.stopped_at_step(plan(), 1, d.Outcome(Phase.STALE, Reason.TARGET_CHANGED, "web changed"))
    assert stop.phase == Phase.STALE and stop.message.startswith("the plan stopped at step 2 of 3 (at ")


# -- receipts --------------------------------------------------------------------------------
def test_steps_that_came_due_unseen_are_missed_not_replayed():
    p = plan(receipts=[applied(0, 9, 4)], replicas=(9, 12, 6, 8), every=60)
    outcome = d.step_applied(p, 3, 9, "alice", at(190))
    receipt = d.step_receipt(p, 3, outcome, previous=9, applied_at=at(190))
    receipts = d.receipts_with(p, 3, receipt)
    assert [(r.at, r.outcome) for r in receipts] == [
        (at(0), "Applied"), (at(60), "Missed"), (at(120), "Missed"), (at(180), "Applied")]
    missed = receipts[1]
    assert missed.reason == d.LATER_STEP_IN_EFFECT and missed.replicas == 12 and missed.applied_at is None
    assert "step 4 of 4" in missed.message and "not replayed" in missed.message
    assert receipts[3].previous_replicas == 9 and receipts[3].applied_at == at(190)


def test_a_skipped_step_applied_after_the_resume_keeps_one_receipt():
    skipped = {"at": stamp(60), "replicas": 12, "outcome": "Skipped", "reason": "PolicySuspended"}
    p = plan(receipts=[applied(0, 9, 4), skipped])
    receipt = d.step_receipt(p, 1, d.step_applied(p, 1, 9, "alice", at(70)), previous=9, applied_at=at(70))
    receipts = d.receipts_with(p, 1, receipt)
    assert [(r.at, r.outcome) for r in receipts] == [(at(0), "Applied"), (at(60), "Applied")]


@pytest.mark.parametrize("phase, reason, kind", [
    (Phase.ACTIVE, Reason.SUSPENDED, StepOutcome.SKIPPED),
    (Phase.STALE, Reason.TARGET_CHANGED, StepOutcome.STALE),
    (Phase.REJECTED, Reason.OUT_OF_BOUNDS, StepOutcome.REJECTED),
    (Phase.FAILED, Reason.CONFLICTING_AUTOSCALER, StepOutcome.FAILED),
    (Phase.FAILED, Reason.POLICY_NOT_FOUND, StepOutcome.FAILED),
])
def test_each_outcome_has_its_receipt(phase, reason, kind):
    receipt = d.step_receipt(plan(), 1, d.Outcome(phase, reason, "why"), previous=9)
    assert (receipt.outcome, receipt.reason, receipt.message, receipt.replicas) == (kind, reason, "why", 12)
    assert receipt.applied_at is None and receipt.at == at(60)


def test_an_ending_plan_gets_a_receipt_for_every_step_that_came_due():
    p = plan(receipts=[applied(0, 9, 4)])
    receipts = d.receipts_until(p, at(500))
    assert [r.outcome for r in receipts] == ["Applied", "Missed", "Missed"]
    assert [r.outcome for r in d.receipts_until(p, at(61))] == ["Applied", "Missed"]
    assert d.receipts_until(p, at(30)) == p.receipts
    done = d.plan_completed(p, receipts, "alice")
    assert (done.phase, done.reason) == (Phase.APPLIED, d.PLAN_COMPLETED) and done.terminal
    assert "1 of 3 steps applied, approved by alice" in done.message


# -- outcomes while active ------------------------------------------------------------------
def test_an_applied_step_keeps_the_plan_active_until_its_next_step():
    p = plan(receipts=[applied(0, 9, 4)])
    outcome = d.step_applied(p, 0, 4, "alice", at(1))
    assert (outcome.phase, outcome.reason) == (Phase.ACTIVE, d.STEP_APPLIED) and not outcome.terminal
    assert outcome.requeue_after == 59 * 60
    assert "scaled Deployment/web from 4 to 9 replicas, approved by alice" in outcome.message
    assert "next: step 2 of 3" in outcome.message
    last = d.step_applied(p, 2, 12, "alice", at(121), wrote=False)
    assert "already had its 6 replicas" in last.message and "the plan ends at 2030-01-01T03:00:00Z" in last.message
    assert last.requeue_after == 59 * 60


def test_a_suspended_policy_skips_the_step_and_the_plan_goes_on():
    outcome = d.step_skipped(plan(), 1, policy(suspend=True), at(60))
    assert (outcome.phase, outcome.reason) == (Phase.ACTIVE, Reason.SUSPENDED) and outcome.requeue_after == 3600
    assert "step 2 of 3" in outcome.message and "skipped" in outcome.message


def test_approved_before_its_first_step_the_plan_waits_for_it():
    outcome = d.plan_scheduled(plan(), at(-10), "alice")
    assert (outcome.phase, outcome.reason, outcome.requeue_after) == (Phase.APPROVED, d.PLAN_SCHEDULED, 600)
    ended = d.plan_ended_unstarted(plan())
    assert (ended.phase, ended.reason) == (Phase.EXPIRED, d.PLAN_ENDED)


# -- supersession of an active plan ----------------------------------------------------------
def meta(name: str, created: float, approved_by: str | None = None, **annotations: str) -> dict:
    ann = {"scalegate.io/proposed-by": FORECASTER, **annotations}
    if approved_by:
        ann.update({"scalegate.io/approved": "true", "scalegate.io/approved-by": approved_by})
    return {"name": name, "creationTimestamp": stamp(created), "annotations": ann}


def test_only_a_newer_approved_proposal_supersedes_an_active_plan():
    p = plan(created=-10)
    others = [
        meta("web-1", -10, "alice"),                         # itself
        meta("web-old", -20, "alice"),                       # older
        meta("web-pending", 5),                              # newer, not approved
        meta("web-yes", 5.5, **{"scalegate.io/approved": "yes", "scalegate.io/approved-by": "bob"}),  # not "true"
        meta("web-nameless", 6, **{"scalegate.io/approved": "true"}),  # no approver named
        meta("web-self", 7, FORECASTER),                     # approved by its proposer
        meta("web-both", 8, "alice", **{"scalegate.io/rejected": "true", "scalegate.io/rejected-by": "bob"}),
        meta("web-2", 9, "bob"),
        meta("web-3", 12, "carol"),
    ]
    assert d.superseding_candidates(p, others) == [("web-3", "carol"), ("web-2", "bob")]
    assert d.superseding_candidates(p, others[:7]) == []
    # Same second: the name breaks the tie, as for single changes.
    assert d.superseding_candidates(p, [meta("web-0", -10, "bob"), meta("web-2", -10, "bob")]) == [("web-2", "bob")]
    outcome = d.plan_superseded(plan(receipts=[applied(0, 9, 4)]), "web-3")
    assert (outcome.phase, outcome.reason) == (Phase.SUPERSEDED, Reason.SUPERSEDED)
    assert "newer approved proposal web-3" in outcome.message and "1 of 3 steps" in outcome.message


# -- the intent names its step ---------------------------------------------------------------
def test_an_intent_names_the_step_it_writes():
    step = PlanStep(at=at(60) + dt.timedelta(microseconds=250), replicas=12)
    intent = ApplyIntent(uid="u", replicas=12, previous_replicas=9, resource_version="7", target_uid="t",
                         target_generation=3, approved_by="alice", started_at=at(60), step=step.at)
    assert ApplyIntent.from_annotation(intent.to_annotation()) == intent
    single = dataclasses.replace(intent, step=None)
    assert '"step"' not in single.to_annotation()
    assert ApplyIntent.from_annotation(single.to_annotation()).step is None
