"""Plans in the reconciler, against the in-memory API server of test_reconciler.py
(`FakeKube`) with a frozen clock: the first step applied like a single change, each later
step at its time (the reconcile's answer is the timer), the step in effect only after
downtime, stops (Stale, Rejected) that keep the receipts, suspension, supersession by a
newer approved proposal, and restarts at every write of a step."""

from __future__ import annotations

import datetime as dt
import inspect
import json

import pytest
from unit.test_reconciler import NOW, NS, WEB, Clock, FakeKube, policy_body, proposal_body

from scalegate.decision import Reason
from scalegate.kube import Kube
from scalegate.model import APPROVED, APPROVED_BY, Phase, format_time, parse_time
from scalegate.reconciler import STEP_FAULT_POINTS, Reconciler, fault_hook_from_env
from scalegate.records import APPLY_INTENT

MINUTE = 60.0


def at(minutes: float) -> dt.datetime:
    return NOW + dt.timedelta(minutes=minutes)


class PlanKube(FakeKube):
    def list_policy_proposal_metadata(self, namespace: str, policy: str,
                                      not_older_than: str | None = None) -> list[dict]:
        self._enter("list_policy_proposal_metadata", namespace, policy, not_older_than)
        return [dict(body["metadata"]) for (ns, _), body in self.proposals.items()
                if ns == namespace and body["spec"]["policyRef"]["name"] == policy]

    def receipts(self, name: str = "web-1") -> list[tuple[str, str]]:
        return [(r["at"], r["outcome"]) for r in self.status(name).get("steps") or []]


def plan_body(name: str = "web-1", steps=((-5, 9), (10, 12), (20, 6)), ends: float = 30, current: int = 4,
              created: dt.datetime = NOW - dt.timedelta(minutes=10), **kw) -> dict:
    """A plan: (minutes from NOW, replicas) per step, ending `ends` minutes from NOW."""
    body = proposal_body(name, current=current, replicas=steps[0][1], created=created, **kw)
    body["spec"]["schedule"] = [{"at": format_time(at(m)), "replicas": r} for m, r in steps]
    body["spec"]["endsAt"] = format_time(at(ends))
    return body


def stamp(minutes: float) -> str:
    return format_time(at(minutes))


def test_the_fake_lists_metadata_as_the_adapter_does():
    real = list(inspect.signature(Kube.list_policy_proposal_metadata).parameters)[1:]
    assert list(inspect.signature(PlanKube.list_policy_proposal_metadata).parameters)[1:] == real


@pytest.fixture
def kube() -> PlanKube:
    kube = PlanKube()
    kube.policies[(NS, "web")] = policy_body()  # cooldown 600 s: the steps are 10 minutes apart
    kube.scales[(NS, "web")] = {"replicas": 4, "rv": "100", "uid": "uid-deploy-web", "generation": 7}
    kube.proposals[(NS, "web-1")] = plan_body()
    return kube


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reconciler(kube, clock) -> Reconciler:
    return Reconciler(kube, clock=clock)


def reconcile(reconciler: Reconciler, name: str = "web-1"):
    return reconciler.reconcile(NS, name)


def target_events(kube: FakeKube) -> list[str]:
    return [e["message"] for e in kube.events if e["involved"]["kind"] == "Deployment"]


# -- the first step, then each step at its time ------------------------------------------------
def test_approved_the_plan_starts_with_the_step_in_effect_and_sleeps_until_the_next(kube, reconciler):
    seen_at_write = []
    kube.on("update_scale", lambda *_: seen_at_write.append(kube.intent()))
    assert reconcile(reconciler) == 10 * MINUTE  # the timer: the next step, not a poll
    assert kube.replicas() == 9 and kube.called("update_scale") == [(NS, WEB, 9, "100")]
    # The intent names the step it writes.
    assert seen_at_write[0]["step"] == stamp(-5) and seen_at_write[0]["replicas"] == 9
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.ACTIVE, "StepApplied")
    assert status["nextStepAt"] == stamp(10) and status["plannedSteps"] == 3
    assert status["steps"] == [{"at": stamp(-5), "replicas": 9, "outcome": "Applied", "appliedAt": stamp(0),
                                "previousReplicas": 4}]
    assert status["approvedBy"] == "alice" and "finishedAt" not in status
    assert kube.intent() is None and kube.outcome() is None  # not decided: steps to come
    assert kube.policies[(NS, "web")]["status"]["lastAppliedTime"] == stamp(0)
    assert kube.proposal_events() == [("Normal", "StepApplied")]
    assert target_events(kube) == ["scaled from 4 to 9 replicas by step 1 of 3 (at 2026-11-26T20:25:00Z) of plan "
                                   "web-1, approved by alice"]


def test_each_step_is_applied_at_its_time_once(kube, reconciler, clock):
    reconcile(reconciler)
    clock.advance(5 * MINUTE)  # woken early (another event): nothing is due
    assert reconcile(reconciler) == 5 * MINUTE
    assert len(kube.called("update_scale")) == 1
    clock.advance(5 * MINUTE)
    assert reconcile(reconciler) == 10 * MINUTE
    assert kube.replicas() == 12
    assert kube.called("update_scale")[-1] == (NS, WEB, 12, kube.called("update_scale")[-1][3])
    assert reconcile(reconciler) == 10 * MINUTE  # again at the same time: nothing more
    assert len(kube.called("update_scale")) == 2
    clock.advance(10 * MINUTE)
    assert reconcile(reconciler) == 10 * MINUTE  # the last step: the timer is endsAt
    assert kube.replicas() == 6 and "nextStepAt" not in kube.status()
    assert kube.receipts() == [(stamp(-5), "Applied"), (stamp(10), "Applied"), (stamp(20), "Applied")]
    assert [r["previousReplicas"] for r in kube.status()["steps"]] == [4, 9, 12]
    # One Event per step on the proposal and on the target.
    assert [r for _, r in kube.proposal_events()] == ["StepApplied"] * 3
    assert len(target_events(kube)) == 3

    clock.advance(10 * MINUTE)  # endsAt
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.APPLIED, "PlanCompleted")
    assert "3 of 3 steps applied" in status["message"] and len(status["steps"]) == 3
    assert kube.outcome()["phase"] == Phase.APPLIED and len(kube.called("update_scale")) == 3


def test_later_steps_are_not_held_by_the_cooldown_but_move_it(kube, reconciler, clock):
    reconcile(reconciler)
    kube.policies[(NS, "web")]["spec"]["cooldownSeconds"] = 3600  # raised since approval
    clock.advance(10 * MINUTE)
    reconcile(reconciler)
    assert kube.replicas() == 12
    assert kube.policies[(NS, "web")]["status"]["lastAppliedTime"] == stamp(10)


def test_steps_that_came_due_while_the_operator_was_down_are_not_replayed(kube, reconciler, clock):
    reconcile(reconciler)
    clock.advance(25 * MINUTE)  # step 2 (12) and step 3 (6) came due; step 3 is in effect
    assert reconcile(reconciler) == 5 * MINUTE
    assert [args[2] for args in kube.called("update_scale")] == [9, 6]  # 12 never written
    assert kube.receipts() == [(stamp(-5), "Applied"), (stamp(10), "Missed"), (stamp(20), "Applied")]
    missed = kube.status()["steps"][1]
    assert missed["reason"] == "LaterStepInEffect" and "step 3 of 3" in missed["message"]


def test_approved_after_a_later_step_came_due_that_step_is_the_first(kube, reconciler):
    kube.proposals[(NS, "web-1")] = plan_body(steps=((-25, 9), (-5, 12), (20, 6)))
    reconcile(reconciler)
    assert kube.replicas() == 12 and kube.status()["steps"][1]["previousReplicas"] == 4
    assert kube.receipts() == [(stamp(-25), "Missed"), (stamp(-5), "Applied")]


def test_approved_before_its_first_step_it_waits_for_it(kube, reconciler, clock):
    kube.proposals[(NS, "web-1")] = plan_body(steps=((5, 9), (15, 12)), ends=25)
    assert reconcile(reconciler) == 5 * MINUTE
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.APPROVED, "PlanScheduled")
    assert kube.called("update_scale") == []
    clock.advance(5 * MINUTE)
    assert reconcile(reconciler) == 10 * MINUTE and kube.replicas() == 9


def test_the_first_step_waits_out_the_cooldown_as_a_single_change_does(kube, reconciler, clock):
    kube.policies[(NS, "web")]["status"] = {"lastAppliedTime": stamp(-2)}
    assert reconcile(reconciler) == 8 * MINUTE
    assert (kube.status()["phase"], kube.status()["reason"]) == (Phase.APPROVED, Reason.COOLDOWN)
    clock.advance(8 * MINUTE)
    reconcile(reconciler)
    assert kube.replicas() == 9 and kube.status()["phase"] == Phase.ACTIVE


def test_a_step_already_in_place_is_applied_without_a_write(kube, reconciler, clock):
    kube.proposals[(NS, "web-1")] = plan_body(steps=((-5, 4), (10, 9)))
    reconcile(reconciler)
    assert kube.called("update_scale") == [] and kube.called("patch_proposal_annotations") == []
    assert kube.receipts() == [(stamp(-5), "Applied")] and kube.status()["phase"] == Phase.ACTIVE
    clock.advance(10 * MINUTE)
    reconcile(reconciler)
    assert kube.replicas() == 9


# -- the whole plan at approval ----------------------------------------------------------------
def test_an_out_of_bounds_step_rejects_the_whole_plan(kube, reconciler):
    kube.proposals[(NS, "web-1")] = plan_body(steps=((-5, 9), (10, 25), (20, 6)))
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.REJECTED, "OutOfBounds")
    assert "step 2 of 3" in status["message"] and "25 is above maxReplicas 20" in status["message"]
    assert kube.called("update_scale") == [] and kube.replicas() == 4


# -- what stops an active plan, receipts kept ----------------------------------------------------
def test_anyone_elses_change_stops_the_plan_as_stale_and_nothing_is_overwritten(kube, reconciler, clock):
    reconcile(reconciler)
    kube.set_replicas("web", 10)  # kubectl scale between steps
    clock.advance(10 * MINUTE)
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.STALE, Reason.TARGET_CHANGED)
    assert "now has 10 replicas, not the 9 the plan's previous step left" in status["message"]
    assert kube.replicas() == 10 and len(kube.called("update_scale")) == 1
    assert kube.receipts() == [(stamp(-5), "Applied"), (stamp(10), "Stale")]
    assert "nextStepAt" not in status and kube.outcome()["phase"] == Phase.STALE


def test_a_policy_tightened_since_approval_stops_the_plan(kube, reconciler, clock):
    reconcile(reconciler)
    kube.policies[(NS, "web")]["spec"]["maxReplicas"] = 10
    clock.advance(10 * MINUTE)
    reconcile(reconciler)
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.REJECTED, Reason.OUT_OF_BOUNDS)
    assert "12 is above maxReplicas 10" in status["message"] and kube.replicas() == 9
    assert kube.receipts() == [(stamp(-5), "Applied"), (stamp(10), "Rejected")]


def test_an_autoscaler_stops_the_plan(kube, reconciler, clock):
    reconcile(reconciler)
    kube.hpas[NS].append(("web-hpa", WEB))
    clock.advance(10 * MINUTE)
    reconcile(reconciler)
    assert (kube.status()["phase"], kube.status()["reason"]) == (Phase.FAILED, Reason.CONFLICTING_AUTOSCALER)
    assert kube.receipts()[-1] == (stamp(10), "Failed") and kube.replicas() == 9


# -- suspension ----------------------------------------------------------------------------------
def test_suspended_steps_are_skipped_and_the_step_in_effect_applies_on_resume(kube, reconciler, clock):
    reconcile(reconciler)
    kube.policies[(NS, "web")]["spec"]["suspend"] = True
    clock.advance(10 * MINUTE)
    assert reconcile(reconciler) == 10 * MINUTE
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.ACTIVE, Reason.SUSPENDED)
    assert kube.receipts() == [(stamp(-5), "Applied"), (stamp(10), "Skipped")] and kube.replicas() == 9
    assert reconcile(reconciler) == 10 * MINUTE and len(kube.status_writes()) == 2  # no write while still suspended
    clock.advance(2 * MINUTE)
    kube.policies[(NS, "web")]["spec"]["suspend"] = False  # resumed (the policy's event wakes the plan)
    reconcile(reconciler)
    assert kube.replicas() == 12
    assert kube.receipts() == [(stamp(-5), "Applied"), (stamp(10), "Applied")]  # one receipt per step
    assert kube.status()["reason"] == "StepApplied"


# -- supersession --------------------------------------------------------------------------------
def newer(kube: PlanKube, approved_by: str | None) -> None:
    kube.proposals[(NS, "web-2")] = plan_body("web-2", created=NOW, approved_by=approved_by)


def test_a_newer_proposal_supersedes_an_active_plan_only_once_approved(kube, reconciler, clock):
    reconcile(reconciler)
    newer(kube, None)  # pending
    clock.advance(10 * MINUTE)
    reconcile(reconciler)
    assert kube.status()["phase"] == Phase.ACTIVE and kube.replicas() == 12
    kube.proposals[(NS, "web-2")]["metadata"]["annotations"].update({APPROVED: "true", APPROVED_BY: "mallory"})
    clock.advance(1 * MINUTE)
    reconcile(reconciler)  # mallory may not approve: the plan goes on
    assert kube.status()["phase"] == Phase.ACTIVE
    kube.proposals[(NS, "web-2")]["metadata"]["annotations"][APPROVED_BY] = "bob"
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.SUPERSEDED, Reason.SUPERSEDED)
    assert "web-2" in status["message"] and "2 of 3 steps" in status["message"]
    assert kube.receipts() == [(stamp(-5), "Applied"), (stamp(10), "Applied")]
    clock.advance(10 * MINUTE)
    assert len(kube.called("update_scale")) == 2


def test_before_it_starts_any_newer_proposal_supersedes_a_plan(kube, reconciler):
    newer(kube, None)
    reconcile(reconciler)
    assert kube.status()["phase"] == Phase.SUPERSEDED and kube.called("update_scale") == []


# -- restarts ------------------------------------------------------------------------------------
class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


@pytest.mark.parametrize("point", STEP_FAULT_POINTS)
@pytest.mark.parametrize("step", [0, 1], ids=["first-step", "later-step"])
def test_killed_at_each_write_of_a_step_a_restart_applies_it_exactly_once(kube, clock, point, step):
    if step:
        reconcile(Reconciler(kube, clock=clock))
        clock.advance(10 * MINUTE)

    def fault(reached: str) -> None:
        if reached == point:
            raise Killed(point)

    with pytest.raises(Killed):
        Reconciler(kube, clock=clock, fault=fault).reconcile(NS, "web-1")
    clock.advance(30)  # back within the same step
    restarted = Reconciler(kube, clock=clock)
    for _ in range(3):  # the queue's looks after a restart
        if reconcile(restarted) != 0.0:
            break
    assert [args[2] for args in kube.called("update_scale")] == [9, 12][:step + 1]
    assert kube.receipts() == [(stamp(-5), "Applied"), (stamp(10), "Applied")][:step + 1]
    assert kube.intent() is None and kube.status()["phase"] == Phase.ACTIVE
    # Announced once; killed after the receipt, before its Events, a restart announces
    # nothing (it only removes the intent): an Event is a courtesy, a second one a false claim.
    assert len(target_events(kube)) == (step if point == "step-after-receipt" else step + 1)


def test_an_intent_for_a_step_that_did_not_land_is_retried_not_skipped(kube, clock):
    reconcile(Reconciler(kube, clock=clock))
    clock.advance(10 * MINUTE)
    kube.fail("update_scale", Killed("died before the write"))
    with pytest.raises(Killed):
        reconcile(Reconciler(kube, clock=clock))
    assert json.loads(kube.annotations()[APPLY_INTENT])["step"] == stamp(10)  # names its step
    reconcile(Reconciler(kube, clock=clock))
    reconcile(Reconciler(kube, clock=clock))
    assert kube.replicas() == 12 and kube.receipts()[-1] == (stamp(10), "Applied")


def test_after_a_restart_someone_elses_change_stops_the_plan(kube, clock):
    reconcile(Reconciler(kube, clock=clock))
    clock.advance(10 * MINUTE)

    def fault(reached: str) -> None:
        if reached == "step-after-scale-write":
            raise Killed(reached)

    with pytest.raises(Killed):
        Reconciler(kube, clock=clock, fault=fault).reconcile(NS, "web-1")
    kube.set_replicas("web", 3)  # undone by someone else meanwhile
    reconcile(Reconciler(kube, clock=clock))
    assert kube.status()["phase"] == Phase.STALE and kube.replicas() == 3
    assert len(kube.called("update_scale")) == 2


def test_the_step_fault_points_are_known_to_the_hook():
    assert callable(fault_hook_from_env({"SCALEGATE_FAULT_POINT": "step-after-scale-write"}))
    assert STEP_FAULT_POINTS[0] == "step-before-intent" and "step-after-receipt" in STEP_FAULT_POINTS


def test_next_step_at_round_trips(kube, reconciler):
    reconcile(reconciler)
    assert parse_time(kube.status()["nextStepAt"]) == at(10)


def test_a_plan_waiting_for_approval_shows_its_steps_and_the_next_ones_time(kube, reconciler):
    # kubectl get scalingproposals -o wide: the Steps and Next-Step columns of a Pending plan
    kube.proposals[(NS, "web-1")] = plan_body(approved_by=None)
    reconcile(reconciler)
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.PENDING, Reason.AWAITING_APPROVAL)
    assert status["plannedSteps"] == 3 and status["nextStepAt"] == stamp(10) and status["steps"] == []
    assert kube.called("update_scale") == []
