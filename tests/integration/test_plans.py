"""Plans on the real API server, with the operator running as its own ServiceAccount: a plan
approved once is applied step by step, each step at its time with a receipt; an
out-of-bounds step rejects the whole plan; anyone else's change between steps stops it as
Stale; SIGKILL at a step boundary neither skips the step in effect nor applies a step twice;
suspend and resume; a newer approved plan supersedes an active one.

Scale writes are counted with the API server's audit log, not the operator's own record.
Steps are a few seconds apart (the policies' cooldown allows it), so each test takes
seconds, not hours.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
from harness import wait_for
from operator_harness import OperatorProcess, Scenario, policy, proposal, wait_steady

PROPOSALS, POLICIES = "scalingproposals", "scalingpolicies"
OPERATOR = "system:serviceaccount:scalegate:operator"
UTC = dt.timezone.utc


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan(name: str, current: int, steps: list[tuple[float, int]], ends: float, *, valid_for: float = 60,
         policy_name: str = "web", target: str = "web") -> tuple[dict, list[dt.datetime]]:
    """A plan for Deployment `target`: (seconds from now, replicas) per step, ending `ends`
    seconds from now. Times are whole seconds (the next one up), as the forecaster writes them.
    Returns the proposal and the steps' times."""
    base = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    times = [base + dt.timedelta(seconds=offset) for offset, _ in steps]
    body = proposal(name, policy_name, target, current=current, replicas=steps[0][1], valid_for=valid_for)
    body["spec"]["schedule"] = [{"at": stamp(t), "replicas": r} for t, (_, r) in zip(times, steps, strict=True)]
    body["spec"]["endsAt"] = stamp(base + dt.timedelta(seconds=ends))
    body["spec"]["reason"] = f"test plan: {current} -> " + ", ".join(str(r) for _, r in steps)
    return body, times


def receipts(s: Scenario, name: str) -> list[tuple[str, str]]:
    return [(r["at"], r["outcome"]) for r in (s.get_proposal(name).get("status") or {}).get("steps") or []]


def wait_receipts(s: Scenario, name: str, count: int, timeout: float = 30) -> list[dict]:
    def enough():
        steps = (s.get_proposal(name).get("status") or {}).get("steps") or []
        return steps if len(steps) >= count else None
    try:
        return wait_for(enough, timeout=timeout, interval=0.1, message=f"{count} receipts on {name}")
    except AssertionError as err:
        raise AssertionError(f"{err}\nstatus now: {s.get_proposal(name).get('status')}") from None


def operator_writes(s: Scenario, target: str = "web") -> list[dict]:
    return s.cluster.scale_writes(s.namespace, target, user=OPERATOR)


def audit_time(event: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))


def reasons(s: Scenario, kind: str, name: str) -> list[str]:
    return [e.reason for e in s.events_for(kind, name)]


# Restarts the module's operator: first, so no other test is disturbed.
@pytest.mark.parametrize("point", ["step-after-intent", "step-after-scale-write"],
                         ids=["write-not-landed", "write-landed"])
def test_sigkill_at_a_step_boundary_neither_skips_nor_repeats_a_step(
        scenario: Scenario, operator, component_kubeconfigs, tmp_path, point):
    """At every step of the plan the operator dies (SIGKILL) at `point`: just after the step's
    intent (the scale was not written: the restart must apply the step, not skip it) or just
    after the scale write (it landed: the restart must record it, not write it again). A
    clean operator then picks the step up; once its receipt is there, a faulty one takes
    over again for the next step."""
    s = scenario
    if not s.cluster.has_audit_log:
        pytest.skip("counts writes with the dev cluster's audit log")
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", min_replicas=2, max_replicas=20, cooldownSeconds=2))
    generation = s.cluster.apps().read_namespaced_deployment("web", s.namespace).metadata.generation
    kubeconfig = component_kubeconfigs["operator"]
    starts = iter(range(100))

    def start(fault: str | None) -> OperatorProcess:
        env = dict(os.environ, SCALEGATE_FAULT_POINT=fault) if fault else None
        return OperatorProcess(kubeconfig, tmp_path / f"op-{next(starts)}.log", namespaces=[s.namespace],
                               env=env).start()

    operator.stop()  # the operators below are the only ones
    current = start(point)
    try:
        # 20 s apart: each step's kill, clean restart, receipt and faulty restart fit between.
        body, times = plan("web-plan", 4, [(2, 6), (22, 9), (42, 7)], ends=55, valid_for=90)
        s.create(PROPOSALS, body)
        s.approve("web-plan")
        for step in range(len(times)):
            wait_for(lambda dying=current.proc: dying.poll() is not None, timeout=60, interval=0.05,
                     message=f"the operator killed at {point} of step {step + 1}")
            assert current.proc.returncode == -9, current.log()[-2000:]
            current = start(None)
            wait_receipts(s, "web-plan", step + 1)
            current.stop()
            current = start(point if step + 1 < len(times) else None)
        s.wait_phase("web-plan", "Applied", timeout=60)
    finally:
        current.stop()
        operator.start()

    # No step skipped: each has an Applied receipt, none Missed, each from what the step
    # before it left (a step recorded as already in place would say otherwise).
    assert receipts(s, "web-plan") == [(stamp(t), "Applied") for t in times]
    assert [r["previousReplicas"] for r in s.get_proposal("web-plan")["status"]["steps"]] == [4, 6, 9]
    # None applied twice: exactly one audited write per step, each at or after its time.
    writes = operator_writes(s)
    assert len(writes) == 3, [w["requestReceivedTimestamp"] for w in writes]
    for write, moment in zip(writes, times, strict=True):
        assert audit_time(write) >= moment
    deployment = s.cluster.apps().read_namespaced_deployment("web", s.namespace)
    assert deployment.spec.replicas == 7 and deployment.metadata.generation == generation + 3
    assert "scalegate.io/applying" not in (s.get_proposal("web-plan")["metadata"].get("annotations") or {})


def test_a_plan_is_applied_step_by_step_each_at_its_time(scenario: Scenario, operator):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", min_replicas=2, max_replicas=20, maxStepUp=5, cooldownSeconds=3))
    # The first step 8 s out: created, seen and approved before it, on a loaded machine too.
    body, times = plan("web-plan", 4, [(8, 6), (12, 9), (16, 7)], ends=28)
    s.create(PROPOSALS, body)
    s.wait_phase("web-plan", "Pending")
    s.approve("web-plan")
    # Approved before its first step: it waits for it.
    status = s.wait_phase("web-plan", "Approved")["status"]
    assert status["reason"] == "PlanScheduled" and s.replicas("web") == 4

    seen = []  # (when, replicas) of every change observed
    deadline = times[-1] + dt.timedelta(seconds=5)
    while dt.datetime.now(UTC) < deadline:
        replicas = s.replicas("web")
        if not seen or seen[-1][1] != replicas:
            seen.append((dt.datetime.now(UTC), replicas))
        time.sleep(0.05)
    assert [r for _, r in seen] == [4, 6, 9, 7], seen
    for (when, _), moment in zip(seen[1:], times, strict=True):
        assert moment <= when <= moment + dt.timedelta(seconds=5), (when, moment)

    active = s.get_proposal("web-plan")["status"]
    assert active["phase"] == "Active" and active["plannedSteps"] == 3 and "nextStepAt" not in active
    steps = active["steps"]
    assert [(r["at"], r["outcome"], r["replicas"], r["previousReplicas"]) for r in steps] == [
        (stamp(times[0]), "Applied", 6, 4), (stamp(times[1]), "Applied", 9, 6), (stamp(times[2]), "Applied", 7, 9)]
    for receipt, moment in zip(steps, times, strict=True):
        assert stamp(moment) <= receipt["appliedAt"]

    done = s.wait_phase("web-plan", "Applied", timeout=20)["status"]
    assert done["reason"] == "PlanCompleted" and "3 of 3 steps applied" in done["message"]
    assert done["approvedBy"] == "alice" and len(done["steps"]) == 3
    assert wait_for(lambda: reasons(s, "ScalingProposal", "web-plan").count("StepApplied") == 3, message="events")
    assert reasons(s, "Deployment", "web").count("ScaledByScalegate") == 3
    if s.cluster.has_audit_log:  # the API server's record: one write per step, none early
        writes = operator_writes(s)
        assert len(writes) == 3
        for write, moment in zip(writes, times, strict=True):
            assert audit_time(write) >= moment


def test_an_out_of_bounds_step_rejects_the_whole_plan(scenario: Scenario, operator):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", min_replicas=2, max_replicas=20, cooldownSeconds=1))
    body, _ = plan("web-plan", 4, [(-1, 6), (4, 25), (8, 7)], ends=12)
    s.create(PROPOSALS, body)
    s.approve("web-plan")
    status = s.wait_phase("web-plan", "Rejected")["status"]
    assert status["reason"] == "OutOfBounds"
    assert "whole plan" in status["message"] and "step 2 of 3" in status["message"]
    assert "25 is above maxReplicas 20" in status["message"]
    assert s.replicas("web") == 4  # not even the first, valid step
    if s.cluster.has_audit_log:
        wait_steady(lambda: s.cluster.scale_writes(s.namespace, "web") == [], duration=1.0)


def test_a_manual_scale_between_steps_stops_the_plan_and_nothing_is_overwritten(scenario: Scenario, operator):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", min_replicas=2, max_replicas=20, cooldownSeconds=1))
    # The next step 15 s out: the other writer acts well before it.
    body, times = plan("web-plan", 4, [(-1, 6), (15, 9), (25, 7)], ends=30)
    s.create(PROPOSALS, body)
    s.approve("web-plan")
    s.wait_phase("web-plan", "Active")
    assert s.replicas("web") == 6
    s.cluster.kubectl("scale", "deployment/web", "--replicas=5", "-n", s.namespace)  # someone else

    status = s.wait_phase("web-plan", "Stale", timeout=40)["status"]
    assert status["reason"] == "TargetChanged"
    assert "now has 5 replicas, not the 6 the plan's previous step left" in status["message"]
    assert receipts(s, "web-plan") == [(stamp(times[0]), "Applied"), (stamp(times[1]), "Stale")]
    # Past the last step: the other writer's 5 stands.
    wait_for(lambda: dt.datetime.now(UTC) > times[2] + dt.timedelta(seconds=1), timeout=40, message="the last step")
    assert s.replicas("web") == 5
    if s.cluster.has_audit_log:
        assert len(operator_writes(s)) == 1


def test_suspend_skips_due_steps_and_resume_applies_the_step_in_effect(scenario: Scenario, operator):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", min_replicas=2, max_replicas=20, cooldownSeconds=1))
    # Steps 15 s apart: suspended before step 2 and resumed before step 3 on a loaded machine too.
    body, times = plan("web-plan", 4, [(-1, 6), (15, 9), (30, 7)], ends=36)
    s.create(PROPOSALS, body)
    s.approve("web-plan")
    s.wait_phase("web-plan", "Active")
    s.custom.patch_namespaced_custom_object("scalegate.io", "v1alpha1", s.namespace, POLICIES, "web",
                                            {"spec": {"suspend": True}})

    steps = wait_receipts(s, "web-plan", 2, timeout=40)
    skipped = steps[1]
    assert (skipped["at"], skipped["outcome"], skipped.get("reason")) == (stamp(times[1]), "Skipped", "PolicySuspended")
    status = s.get_proposal("web-plan")["status"]
    assert (status["phase"], status["reason"]) == ("Active", "PolicySuspended")
    wait_steady(lambda: s.replicas("web") == 6, duration=1.0)  # nothing applied while suspended

    s.custom.patch_namespaced_custom_object("scalegate.io", "v1alpha1", s.namespace, POLICIES, "web",
                                            {"spec": {"suspend": False}})
    # Resumed before the next step: the step in effect is applied now, its receipt replaced.
    wait_for(lambda: s.replicas("web") == 9, timeout=10, message="the step in effect applied on resume")
    assert dt.datetime.now(UTC) < times[2]
    assert receipts(s, "web-plan") == [(stamp(times[0]), "Applied"), (stamp(times[1]), "Applied")]
    s.wait_phase("web-plan", "Applied", timeout=50)
    assert s.replicas("web") == 7
    assert receipts(s, "web-plan") == [(stamp(t), "Applied") for t in times]
    if s.cluster.has_audit_log:
        assert len(operator_writes(s)) == 3


def test_a_newer_plan_supersedes_an_active_one_only_once_approved(scenario: Scenario, operator):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", min_replicas=2, max_replicas=20, cooldownSeconds=1))
    old, old_times = plan("web-old", 4, [(-1, 6), (40, 9)], ends=60, valid_for=120)
    s.create(PROPOSALS, old)
    s.approve("web-old")
    s.wait_phase("web-old", "Active")
    created = s.get_proposal("web-old")["metadata"]["creationTimestamp"]
    wait_for(lambda: stamp(dt.datetime.now(UTC)) > created, message="the next second")  # unambiguously newer

    new, new_times = plan("web-new", 6, [(-1, 8), (30, 10)], ends=60, valid_for=120)
    s.create(PROPOSALS, new)
    s.wait_phase("web-new", "Pending")
    # Pending: the active plan goes on (not superseded, as a pending single change would be).
    wait_steady(lambda: s.get_proposal("web-old")["status"]["phase"] == "Active", duration=1.5)

    s.approve("web-new")
    # Promptly, though the old plan's next step is more than half a minute away.
    status = s.wait_phase("web-old", "Superseded", timeout=10)["status"]
    assert "newer approved proposal web-new" in status["message"] and "1 of 2 steps" in status["message"]
    assert receipts(s, "web-old") == [(stamp(old_times[0]), "Applied")]
    s.wait_phase("web-new", "Active")
    assert s.replicas("web") == 8
    assert receipts(s, "web-new") == [(stamp(new_times[0]), "Applied")]
    if s.cluster.has_audit_log:
        assert len(operator_writes(s)) == 2
