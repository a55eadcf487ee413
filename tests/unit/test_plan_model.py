"""Plans in the model: a proposal's schedule and end (`PlanStep`, `Proposal.schedule`,
`Proposal.ends_at`), its plan status (`StepReceipt`), and a policy's plan settings
(`PlanSettings`). Parsing refuses what the CRDs refuse, with InvalidObject, so an object
stored before a rule existed (or under an older CRD) is never acted on as a plan."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from scalegate.model import (
    MAX_PLAN_STEPS,
    OPEN_PROPOSALS_FIELD_SELECTOR,
    ForecastSpec,
    InvalidObject,
    Phase,
    PlanSettings,
    PlanStep,
    Policy,
    Proposal,
    StepOutcome,
    StepReceipt,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def proposal(**spec: Any) -> dict:
    body = {"metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"policyRef": {"name": "web"},
                     "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "currentReplicas": 4, "replicas": 9, "validUntil": at(30), "reason": "plan",
                     "schedule": [{"at": at(0), "replicas": 9, "predictedPeak": 380.0, "upperBound": 410.0},
                                  {"at": at(60), "replicas": 12, "predictedPeak": 520, "upperBound": 575.5},
                                  {"at": at(120), "replicas": 6}],
                     "endsAt": at(180)}}
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key)
        else:
            body["spec"][key] = value
    return body


def policy(spec: dict | None = None, **forecast: Any) -> dict:
    return {"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 20, **(spec or {}),
                     "forecast": {"query": "sum(x)", "capacityPerReplica": 50, **forecast}}}


# -- phase -----------------------------------------------------------------------------------
def test_active_is_a_phase_and_not_terminal():
    assert Phase.ACTIVE == "Active" and Phase.ACTIVE in Phase.ALL and Phase.ACTIVE not in Phase.TERMINAL
    # The operator keeps watching an active plan: the watch filter lets it through.
    assert "Active" not in OPEN_PROPOSALS_FIELD_SELECTOR
    assert Proposal.parse(proposal() | {"status": {"phase": "Active"}}).terminal is False


# -- the schedule --------------------------------------------------------------------------------
def test_a_plan_parses_to_typed_steps():
    parsed = Proposal.parse(proposal())
    assert parsed.is_plan
    assert parsed.schedule == (
        PlanStep(at=T0, replicas=9, predicted_peak=380.0, upper_bound=410.0),
        PlanStep(at=T0 + dt.timedelta(hours=1), replicas=12, predicted_peak=520.0, upper_bound=575.5),
        PlanStep(at=T0 + dt.timedelta(hours=2), replicas=6))
    assert parsed.ends_at == T0 + dt.timedelta(hours=3)
    assert isinstance(parsed.schedule[1].predicted_peak, float)


def test_a_single_change_has_no_plan():
    parsed = Proposal.parse(proposal(schedule=None, endsAt=None))
    assert not parsed.is_plan and parsed.schedule == () and parsed.ends_at is None
    assert parsed.next_step_at is None and parsed.receipts == ()


def test_steps_round_trip_to_the_spec():
    raw = proposal()["spec"]["schedule"]
    assert [step.to_dict() for step in Proposal.parse(proposal()).schedule] == raw
    # Sub-second steps keep their fraction: two steps are never written as one time.
    step = PlanStep(at=dt.datetime(2030, 1, 1, 0, 0, 0, 500000, tzinfo=UTC), replicas=3)
    assert step.to_dict() == {"at": "2030-01-01T00:00:00.500000Z", "replicas": 3}
    assert PlanStep.parse(step.to_dict(), "s") == step


@pytest.mark.parametrize("why, spec", [
    ("one step", {"schedule": [{"at": at(0), "replicas": 9}], "endsAt": at(1)}),
    ("the most steps", {"schedule": [{"at": at(5 * i), "replicas": 9} for i in range(MAX_PLAN_STEPS)],
                        "endsAt": at(5 * MAX_PLAN_STEPS)}),
    ("first step exactly at validUntil", {"validUntil": at(0)}),
    ("spans exactly 7 days", {"endsAt": at(7 * 24 * 60)}),
    ("first step equals the current replicas", {
        "replicas": 4, "schedule": [{"at": at(0), "replicas": 4}, {"at": at(60), "replicas": 9}], "endsAt": at(120)}),
    ("an offset", {"schedule": [{"at": "2030-01-01T01:00:00+01:00", "replicas": 9}], "endsAt": at(60)}),
])
def test_valid_plans_parse(why: str, spec: dict):
    assert Proposal.parse(proposal(**spec)).is_plan, why


@pytest.mark.parametrize("why, spec, words", [
    ("replicas is not the first step's", {"replicas": 12}, "must equal the first step's replicas"),
    ("two steps at one time", {"schedule": [{"at": at(0), "replicas": 9}, {"at": at(0), "replicas": 12}]},
     "spec.schedule[1].at must be after spec.schedule[0].at"),
    ("the same instant in another offset", {"schedule": [{"at": at(60), "replicas": 9},
                                                         {"at": "2030-01-01T02:00:00+01:00", "replicas": 12}],
                                            "validUntil": at(60)},
     "spec.schedule[1].at must be after"),
    ("steps out of order", {"schedule": [{"at": at(0), "replicas": 9}, {"at": at(90), "replicas": 12},
                                         {"at": at(60), "replicas": 6}]}, "spec.schedule[2].at must be after"),
    ("no endsAt", {"endsAt": None}, "spec.endsAt is required with a schedule"),
    ("endsAt at the last step", {"endsAt": at(120)}, "spec.endsAt must be after the last step"),
    ("endsAt without a schedule", {"schedule": None}, "spec.endsAt belongs to a schedule"),
    ("first step after validUntil", {"validUntil": at(-1)}, "must not be after spec.validUntil"),
    ("longer than 7 days", {"endsAt": (T0 + dt.timedelta(days=7, seconds=1)).isoformat()}, "at most 7 days"),
    ("too many steps", {"schedule": [{"at": at(i), "replicas": 9} for i in range(MAX_PLAN_STEPS + 1)],
                        "endsAt": at(MAX_PLAN_STEPS + 1)}, "at most 288 steps"),
    ("an empty schedule", {"schedule": []}, "at least one step"),
    ("a schedule that is no list", {"schedule": {"at": at(0), "replicas": 9}}, "must be a list"),
    ("a step that is no object", {"schedule": [9]}, "spec.schedule[0] must be an object"),
    ("a step without at", {"schedule": [{"replicas": 9}]}, "spec.schedule[0].at is required"),
    ("a step's at that is a list", {"schedule": [{"at": [at(0)], "replicas": 9}]},
     "spec.schedule[0].at: expected an RFC 3339 timestamp"),
    ("a step's at that is no time", {"schedule": [{"at": "soon", "replicas": 9}]},
     "spec.schedule[0].at: 'soon' is not an RFC 3339 timestamp"),
    ("a step without replicas", {"schedule": [{"at": at(0)}]}, "spec.schedule[0].replicas is required"),
    ("a step with negative replicas", {"schedule": [{"at": at(0), "replicas": 9}, {"at": at(60), "replicas": -1}]},
     "spec.schedule[1].replicas must be >= 0"),
    ("a step with fractional replicas", {"schedule": [{"at": at(0), "replicas": 9.5}]},
     "spec.schedule[0].replicas must be an integer"),
    ("a step with boolean replicas", {"schedule": [{"at": at(0), "replicas": True}]},
     "spec.schedule[0].replicas must be an integer"),
    ("an upper bound that is no number", {"schedule": [{"at": at(0), "replicas": 9, "upperBound": "high"}]},
     "spec.schedule[0].upperBound must be a finite number"),
    ("a predicted peak that is not finite", {"schedule": [{"at": at(0), "replicas": 9, "predictedPeak": float("nan")}]},
     "spec.schedule[0].predictedPeak must be a finite number"),
    ("endsAt that is a list", {"endsAt": [at(180)]}, "spec.endsAt: expected an RFC 3339 timestamp"),
])
def test_bad_plans_are_invalid(why: str, spec: dict, words: str):
    body = proposal(**spec)
    if "schedule" in spec and isinstance(spec["schedule"], list) and spec["schedule"] \
            and isinstance(spec["schedule"][0], dict) and "endsAt" not in spec:
        body["spec"]["endsAt"] = at(24 * 60)  # keep endsAt valid unless the case is about it
    with pytest.raises(InvalidObject) as err:
        Proposal.parse(body)
    assert words in str(err.value), why


# -- the plan's status -----------------------------------------------------------------------
def test_receipts_and_next_step_parse_and_round_trip():
    receipts = [{"at": at(0), "replicas": 9, "outcome": "Applied", "appliedAt": at(1), "previousReplicas": 4,
                 "reason": "Scaled", "message": "4 -> 9"},
                {"at": at(60), "replicas": 12, "outcome": "Skipped", "reason": "PolicySuspended"}]
    parsed = Proposal.parse(proposal() | {"status": {"phase": "Active", "nextStepAt": at(120), "steps": receipts}})
    assert parsed.next_step_at == T0 + dt.timedelta(hours=2)
    assert parsed.receipts[0] == StepReceipt(at=T0, replicas=9, outcome=StepOutcome.APPLIED,
                                             applied_at=T0 + dt.timedelta(minutes=1), previous_replicas=4,
                                             reason="Scaled", message="4 -> 9")
    assert parsed.receipts[1].outcome == StepOutcome.SKIPPED and parsed.receipts[1].applied_at is None
    assert [r.to_dict() for r in parsed.receipts] == receipts


def test_every_outcome_of_the_crd_is_known():
    crd = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "scalingproposals.scalegate.io.yaml")
                         .read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert tuple(schema["steps"]["items"]["properties"]["outcome"]["enum"]) == StepOutcome.ALL
    assert schema["steps"]["maxItems"] == MAX_PLAN_STEPS
    assert set(schema["phase"]["enum"]) == set(Phase.ALL)


@pytest.mark.parametrize("status, words", [
    ({"steps": [{"at": at(0), "replicas": 9, "outcome": "Done"}]}, "status.steps[0].outcome 'Done' is not one of"),
    ({"steps": [{"at": at(0), "replicas": 9}]}, "status.steps[0].outcome None is not one of"),
    ({"steps": [{"replicas": 9, "outcome": "Applied"}]}, "status.steps[0].at is required"),
    ({"steps": [{"at": at(0), "outcome": "Applied"}]}, "status.steps[0].replicas is required"),
    ({"steps": {"at": at(0)}}, "status.steps must be a list"),
    ({"steps": ["Applied"]}, "status.steps[0] must be an object"),
    ({"nextStepAt": []}, "status.nextStepAt: expected an RFC 3339 timestamp"),
    ({"steps": [{"at": at(0), "replicas": 9, "outcome": "Applied", "appliedAt": [1]}]},
     "status.steps[0].appliedAt: expected an RFC 3339 timestamp"),
])
def test_bad_receipts_are_invalid(status: dict, words: str):
    with pytest.raises(InvalidObject) as err:
        Proposal.parse(proposal() | {"status": status})
    assert words in str(err.value)


# -- the policy's plan settings ------------------------------------------------------------------
def test_plan_settings_parse():
    parsed = Policy.parse(policy(planHorizonSeconds=86400, planStepSeconds=3600))
    assert parsed.forecast.plan == PlanSettings(horizon_seconds=86400, step_seconds=3600)
    assert parsed.forecast.plan.steps == 24
    most = Policy.parse(policy({"cooldownSeconds": 300}, planHorizonSeconds=86400, planStepSeconds=300))
    assert most.forecast.plan.steps == MAX_PLAN_STEPS


def test_no_plan_settings_means_single_changes():
    assert Policy.parse(policy()).forecast.plan is None
    assert ForecastSpec(query="q", capacity_per_replica=1.0).plan is None


@pytest.mark.parametrize("spec, forecast, words", [
    ({}, {"planHorizonSeconds": 86400}, "go together"),
    ({}, {"planStepSeconds": 3600}, "go together"),
    ({}, {"planHorizonSeconds": 86400, "planStepSeconds": 300},
     "spec.forecast.planStepSeconds (300) must be at least spec.cooldownSeconds (600)"),  # the default cooldown
    ({"cooldownSeconds": 3601}, {"planHorizonSeconds": 86400, "planStepSeconds": 3600},
     "must be at least spec.cooldownSeconds (3601)"),
    ({}, {"planHorizonSeconds": 86400, "planStepSeconds": 7000}, "must be a multiple of"),
    ({"cooldownSeconds": 60}, {"planHorizonSeconds": 86400, "planStepSeconds": 120}, "at most 288 steps"),
    ({"cooldownSeconds": 60}, {"planHorizonSeconds": 3600, "planStepSeconds": 120, "stepSeconds": 300},
     "planStepSeconds (120) must be at least spec.forecast.stepSeconds (300)"),
    ({}, {"planHorizonSeconds": 86400, "planStepSeconds": 3600, "lookbackSeconds": 90000},
     "lookbackSeconds (90000) must cover at least two plan horizons"),
    ({}, {"planHorizonSeconds": 691200, "planStepSeconds": 86400}, "planHorizonSeconds must be at most 604800"),
    ({"cooldownSeconds": 0}, {"planHorizonSeconds": 3600, "planStepSeconds": 30}, "planStepSeconds must be >= 60"),
    ({}, {"planHorizonSeconds": "86400", "planStepSeconds": 3600}, "planHorizonSeconds must be an integer"),
    ({}, {"planHorizonSeconds": 86400, "planStepSeconds": True}, "planStepSeconds must be an integer"),
])
def test_bad_plan_settings_are_invalid(spec: dict, forecast: dict, words: str):
    with pytest.raises(InvalidObject) as err:
        Policy.parse(policy(spec, **forecast))
    assert words in str(err.value)


def test_proposal_body_is_not_modified_by_parsing():
    body = proposal()
    before = copy.deepcopy(body)
    Proposal.parse(body)
    assert body == before
