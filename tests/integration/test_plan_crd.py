"""Plans in the CRDs, on the real API server: a ScalingProposal's `spec.schedule` and
`spec.endsAt`, its plan status (phase Active, `nextStepAt`, `plannedSteps`, the `steps`
receipts), and a ScalingPolicy's `forecast.planHorizonSeconds` / `planStepSeconds`.

Valid plans are stored as written; each rule refuses its violation with a message that
names the field and tells a person what is wrong (the messages are asserted, so a rule
that is dropped or reworded to something useless fails here). A proposal without a
schedule validates as it did before plans existed.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from harness import Cluster
from operator_harness import Scenario

GROUP, VERSION = "scalegate.io", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PROPOSALS, POLICIES = "scalingproposals", "scalingpolicies"
CRDS = Path(__file__).resolve().parents[2] / "crds"
UTC = dt.timezone.utc
T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)
MAX_STEPS = 288



@pytest.fixture(scope="module", autouse=True)
def _without_admission_policies(cluster):
    """This module tests the CRDs and the watch alone, not the admission policies; an
    earlier module may have left them installed (they would judge labels, proposers and
    who writes status), so they are removed first: no order-dependent results."""
    cluster.ensure_no_admission_policies()

def at(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan(name: str = "plan", steps: int = 3, **spec: Any) -> dict:
    """A valid plan: 4 replicas now, then 9, 12, 6 ... hourly from T0; approvable for 30
    minutes after its first step; ends an hour after its last."""
    replicas = [9, 12, 6]
    schedule = [{"at": at(60 * i), "replicas": replicas[i % 3], "predictedPeak": 380.0 + i,
                 "upperBound": 410.0 + i} for i in range(steps)]
    body = {"apiVersion": API_VERSION, "kind": "ScalingProposal", "metadata": {"name": name},
            "spec": {"policyRef": {"name": "web"},
                     "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "currentReplicas": 4, "replicas": 9, "validUntil": at(30),
                     "reason": "day plan: peak of 575 req/s (95% upper bound) at 01:00",
                     "schedule": schedule, "endsAt": at(60 * steps)}}
    body["spec"].update(spec)
    return body


def single(name: str = "single", **spec: Any) -> dict:
    body = plan(name, **spec)
    for key in ("schedule", "endsAt"):
        if key not in spec:
            body["spec"].pop(key)
    return body


def policy(name: str = "web", spec: dict | None = None, **forecast: Any) -> dict:
    body = {"apiVersion": API_VERSION, "kind": "ScalingPolicy", "metadata": {"name": name},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 20,
                     "forecast": {"query": "sum(rate(http_requests_total[5m]))", "capacityPerReplica": 50,
                                  **forecast}}}
    body["spec"].update(spec or {})
    return body


def refusal(err: kubernetes.client.ApiException) -> str:
    try:
        return json.loads(err.body).get("message") or ""
    except (TypeError, ValueError, AttributeError):
        return str(err.body or err.reason or "")


def refused(s: Scenario, plural: str, body: dict) -> str:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        s.create(plural, body)
    assert caught.value.status == 422, refusal(caught.value)
    return refusal(caught.value)


def patch_status(s: Scenario, name: str, status: dict) -> dict:
    return s.custom.patch_namespaced_custom_object_status(GROUP, VERSION, s.namespace, PROPOSALS, name,
                                                          {"status": status})


# -- proposals: what is accepted ------------------------------------------------------------
def test_a_valid_plan_is_stored_as_written(scenario: Scenario):
    body = plan()
    stored = scenario.create(PROPOSALS, body)
    assert stored["spec"]["schedule"] == body["spec"]["schedule"]
    assert stored["spec"]["endsAt"] == body["spec"]["endsAt"]


@pytest.mark.parametrize("why, spec", [
    ("one step", {"schedule": [{"at": at(0), "replicas": 9}], "endsAt": at(60)}),
    ("the most steps, 5 minutes apart, a day", {
        "schedule": [{"at": at(5 * i), "replicas": 9 if i % 2 == 0 else 10} for i in range(MAX_STEPS)],
        "endsAt": at(5 * MAX_STEPS)}),
    ("steps seconds apart", {"schedule": [{"at": at(i / 60), "replicas": 9 + i} for i in range(4)],
                             "endsAt": at(1)}),
    ("holds the current replicas first, changes later", {
        "replicas": 4, "schedule": [{"at": at(0), "replicas": 4}, {"at": at(60), "replicas": 9}], "endsAt": at(120)}),
    ("first step exactly at validUntil, to approve ahead of the start", {
        "validUntil": at(0), "schedule": [{"at": at(0), "replicas": 9}], "endsAt": at(60)}),
    ("spans exactly 7 days", {"schedule": [{"at": at(0), "replicas": 9}], "endsAt": at(7 * 24 * 60)}),
    ("first step before the proposal's creation", {
        "validUntil": at(30), "schedule": [{"at": at(-10), "replicas": 9}], "endsAt": at(60)}),
    ("fractional seconds and an offset", {
        "schedule": [{"at": "2030-01-01T01:00:00.5+01:00", "replicas": 9}], "endsAt": "2030-01-01T01:00:00Z"}),
])
def test_valid_plans_are_accepted(scenario: Scenario, why: str, spec: dict):
    stored = scenario.create(PROPOSALS, plan(**spec))
    assert stored["spec"]["schedule"] == spec["schedule"], why


def test_a_single_change_validates_as_before(scenario: Scenario):
    stored = scenario.create(PROPOSALS, single())
    assert "schedule" not in stored["spec"] and "endsAt" not in stored["spec"]
    message = refused(scenario, PROPOSALS, single("same", replicas=4))
    assert "spec.replicas" in message and "replicas equals currentReplicas, so there is nothing to propose" in message


def test_the_whole_plan_is_immutable(scenario: Scenario):
    scenario.create(PROPOSALS, plan())
    changed = copy.deepcopy(plan()["spec"]["schedule"])
    changed[1]["replicas"] = 15
    for patch in ({"spec": {"schedule": changed}}, {"spec": {"endsAt": at(600)}}):
        with pytest.raises(kubernetes.client.ApiException) as caught:
            scenario.custom.patch_namespaced_custom_object(GROUP, VERSION, scenario.namespace, PROPOSALS, "plan",
                                                           patch)
        assert caught.value.status == 422
        assert "the spec of a ScalingProposal is immutable; create a new proposal instead" in refusal(caught.value)


# -- proposals: each rule refuses its violation, with a message a person understands --------
def _steps(*pairs: tuple[float, int]) -> list[dict]:
    return [{"at": at(minutes), "replicas": replicas} for minutes, replicas in pairs]


@pytest.mark.parametrize("why, spec, field, words", [
    ("replicas is not the first step's",
     {"replicas": 12}, "spec.replicas",
     "replicas must equal the replicas of the schedule's first step, the change applied when the plan is approved"),
    ("two steps at the same time",
     {"schedule": _steps((0, 9), (60, 12), (60, 6)), "endsAt": at(180)}, "spec.schedule",
     "the steps of the schedule must be in order of time, each step's at strictly after the one before"),
    ("steps out of order",
     {"schedule": _steps((0, 9), (120, 12), (60, 6)), "endsAt": at(180)}, "spec.schedule",
     "the steps of the schedule must be in order of time"),
    ("out of order, the same instant written in another offset",
     {"schedule": [{"at": at(0), "replicas": 9}, {"at": "2030-01-01T00:00:00-00:00", "replicas": 12}],
      "endsAt": at(60)}, "spec.schedule", "in order of time"),
    ("no step changes anything",
     {"replicas": 4, "schedule": _steps((0, 4), (60, 4)), "endsAt": at(120)}, "spec.schedule",
     "every step of the schedule equals currentReplicas, so there is nothing to propose"),
    ("a schedule without endsAt",
     {"endsAt": None}, "spec.endsAt",
     "a schedule needs endsAt, the time after which no step of the plan applies"),
    ("endsAt at the last step",
     {"endsAt": at(120)}, "spec.endsAt",
     "endsAt must be after the at of the schedule's last step, or the last step would never be in effect"),
    ("endsAt before the last step",
     {"endsAt": at(90)}, "spec.endsAt", "endsAt must be after the at of the schedule's last step"),
    ("the first step after validUntil",
     {"validUntil": at(30), "schedule": _steps((31, 9), (60, 12)), "endsAt": at(120)}, "spec.validUntil",
     "the schedule's first step must not be after validUntil, the deadline for approving and starting the plan"),
    ("longer than 7 days",
     {"endsAt": (T0 + dt.timedelta(days=7, seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}, "spec.endsAt",
     "a plan may span at most 7 days from its first step to endsAt; propose the rest as the next plan"),
    ("one step too many",
     {"schedule": [{"at": at(i), "replicas": 9 + i % 2} for i in range(MAX_STEPS + 1)], "endsAt": at(MAX_STEPS + 1)},
     "spec.schedule", "must have at most 288 items"),
    ("an empty schedule",
     {"schedule": []}, "spec.schedule", "should have at least 1 items"),
    ("a step without at",
     {"schedule": [{"replicas": 9}], "endsAt": at(60)}, "spec.schedule[0].at", "Required value"),
    ("a step without replicas",
     {"schedule": [{"at": at(0)}], "endsAt": at(60)}, "spec.schedule[0].replicas", "Required value"),
    ("a step with negative replicas",
     {"schedule": _steps((0, 9), (60, -1)), "endsAt": at(120)}, "spec.schedule[1].replicas",
     "should be greater than or equal to 0"),
    ("a step beyond the replicas any policy allows",
     {"schedule": _steps((0, 9), (60, 100001)), "endsAt": at(120)}, "spec.schedule[1].replicas",
     "should be less than or equal to 100000"),
    ("at in lower case",
     {"schedule": [{"at": "2030-01-01t00:00:00z", "replicas": 9}], "endsAt": at(60)}, "spec.schedule[0].at",
     "should match"),
    ("at without a zone",
     {"schedule": [{"at": "2030-01-01T00:00:00", "replicas": 9}], "endsAt": at(60)}, "spec.schedule[0].at",
     "should match"),
    ("endsAt not a time",
     {"endsAt": "tomorrow"}, "spec.endsAt", "should match"),
    # format: date-time alone lets a list through on Kubernetes 1.37; the timestamp rules refuse it
    # (a rule that cannot read its field reports the object it sits on, not its fieldPath).
    ("at a list",
     {"schedule": [{"at": [], "replicas": 9}], "endsAt": at(60)}, "spec.schedule[0]",
     "at must be an RFC 3339 date-time"),
    ("at a list of a time",
     {"schedule": [{"at": [at(0)], "replicas": 9}], "endsAt": at(60)}, "spec.schedule[0]",
     "at must be an RFC 3339 date-time"),
    ("endsAt a list",
     {"endsAt": [at(600)]}, "spec", "endsAt must be an RFC 3339 date-time"),
])
def test_plan_rules_refuse_with_a_message(scenario: Scenario, why: str, spec: dict, field: str, words: str):
    body = plan()
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key)
        else:
            body["spec"][key] = value
    message = refused(scenario, PROPOSALS, body)
    assert field in message and words in message, f"{why}: {message}"


def test_end_without_a_schedule_is_refused(scenario: Scenario):
    # Without the rule the API server would store endsAt on a single change, which means nothing.
    message = refused(scenario, PROPOSALS, single(endsAt=at(600)))
    assert "spec.endsAt" in message and "endsAt belongs to a schedule; remove it, or add the schedule it ends" in message


# -- proposals: the plan's status ---------------------------------------------------------
def receipt(minutes: float, **fields: Any) -> dict:
    return {"at": at(minutes), "replicas": 9, "outcome": "Applied", **fields}


def table(text: str) -> dict[str, str]:
    """The one row of kubectl's table by column (an empty cell is blank, so split at the
    header's column starts)."""
    header, row = text.splitlines()[:2]
    starts = [i for i, char in enumerate(header) if char != " " and (i == 0 or header[i - 1] == " ")]
    ends = starts[1:] + [None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


def test_plan_status_is_accepted_and_shown_by_kubectl_get(scenario: Scenario, cluster: Cluster):
    scenario.create(PROPOSALS, plan())
    patch_status(scenario, "plan", {
        "phase": "Active", "reason": "StepApplied", "message": "step 2 of 3 applied",
        "nextStepAt": at(120), "plannedSteps": 3,
        "steps": [receipt(0, appliedAt=at(1), previousReplicas=4, reason="Scaled", message="4 -> 9"),
                  receipt(60, replicas=12, outcome="Skipped", reason="PolicySuspended", message="suspended")]})
    stored = scenario.get_proposal("plan")["status"]
    assert stored["phase"] == "Active" and [r["outcome"] for r in stored["steps"]] == ["Applied", "Skipped"]

    columns = table(cluster.kubectl("get", "sprop", "plan", "-n", scenario.namespace).stdout)
    assert list(columns) == ["NAME", "TARGET", "CURRENT", "PROPOSED", "PHASE", "APPROVED-BY", "STEPS", "NEXT-STEP", "AGE"]
    assert columns | {"AGE": None} == {
        "NAME": "plan", "TARGET": "web", "CURRENT": "4", "PROPOSED": "9", "PHASE": "Active",
        "APPROVED-BY": "", "STEPS": "3", "NEXT-STEP": at(120), "AGE": None}
    wide = table(cluster.kubectl("get", "sprop", "plan", "-n", scenario.namespace, "-o", "wide").stdout)
    assert wide["ENDS-AT"] == at(180)

    # Every outcome of a step, and a nextStepAt cleared with null once no step remains.
    outcomes = ["Applied", "Skipped", "Missed", "Stale", "Rejected", "Failed"]
    patch_status(scenario, "plan", {"nextStepAt": None,
                                    "steps": [receipt(i, outcome=o) for i, o in enumerate(outcomes)]})
    assert [r["outcome"] for r in scenario.get_proposal("plan")["status"]["steps"]] == outcomes


@pytest.mark.parametrize("why, status, field, words", [
    ("an outcome the contract does not know",
     {"steps": [receipt(0, outcome="Done")]}, "status.steps[0].outcome", "Unsupported value"),
    ("two receipts for one step",
     {"steps": [receipt(0), receipt(0, outcome="Skipped")]}, "status.steps[1]", "Duplicate value"),
    ("a receipt without outcome",
     {"steps": [{"at": at(0), "replicas": 9}]}, "status.steps[0].outcome", "Required value"),
    ("more receipts than a plan has steps",
     {"steps": [receipt(i) for i in range(MAX_STEPS + 1)]}, "status.steps", "must have at most 288 items"),
    ("a phase the contract does not know",
     {"phase": "Running"}, "status.phase", "Unsupported value"),
    ("plannedSteps beyond the most steps",
     {"plannedSteps": MAX_STEPS + 1}, "status.plannedSteps", "should be less than or equal to 288"),
    # format: date-time alone lets a list through on Kubernetes 1.37 (a rule that cannot read
    # its field reports the object it sits on).
    ("nextStepAt a list", {"nextStepAt": []}, "status", "nextStepAt must be an RFC 3339 date-time"),
    ("a receipt's at a list", {"steps": [receipt(0) | {"at": [at(0)]}]}, "status.steps[0]",
     "at must be an RFC 3339 date-time"),
    ("a receipt's appliedAt a list", {"steps": [receipt(0, appliedAt=[1])]}, "status.steps[0]",
     "appliedAt must be an RFC 3339 date-time"),
])
def test_plan_status_rules_refuse_with_a_message(scenario: Scenario, why: str, status: dict, field: str,
                                                 words: str):
    scenario.create(PROPOSALS, plan())
    with pytest.raises(kubernetes.client.ApiException) as caught:
        patch_status(scenario, "plan", status)
    message = refusal(caught.value)
    assert caught.value.status == 422 and field in message and words in message, f"{why}: {message}"


# -- policies ------------------------------------------------------------------------------
@pytest.mark.parametrize("why, spec, forecast", [
    ("a day of hourly steps, the default cooldown", {}, {"planHorizonSeconds": 86400, "planStepSeconds": 3600}),
    ("a day of 5-minute steps: the most steps", {"cooldownSeconds": 300},
     {"planHorizonSeconds": 86400, "planStepSeconds": 300}),
    ("steps exactly as long as the cooldown", {"cooldownSeconds": 1800},
     {"planHorizonSeconds": 43200, "planStepSeconds": 1800}),
    ("a week, half the default lookback", {}, {"planHorizonSeconds": 604800, "planStepSeconds": 86400}),
    ("one step", {}, {"planHorizonSeconds": 3600, "planStepSeconds": 3600}),
    ("no plan: single changes, as before", {}, {}),
])
def test_valid_plan_settings_are_accepted(scenario: Scenario, why: str, spec: dict, forecast: dict):
    stored = scenario.create(POLICIES, policy(spec=spec, **forecast))
    for key, value in forecast.items():
        assert stored["spec"]["forecast"][key] == value, why


@pytest.mark.parametrize("why, spec, forecast, field, words", [
    ("a horizon without a step", {}, {"planHorizonSeconds": 86400}, "spec.forecast.planStepSeconds",
     "planHorizonSeconds and planStepSeconds go together; set both to propose plans, or neither to propose single changes"),
    ("a step without a horizon", {}, {"planStepSeconds": 3600}, "spec.forecast.planStepSeconds",
     "planHorizonSeconds and planStepSeconds go together"),
    ("steps shorter than the (default) cooldown", {}, {"planHorizonSeconds": 86400, "planStepSeconds": 300},
     "spec.forecast.planStepSeconds",
     "forecast.planStepSeconds must be at least cooldownSeconds, or a plan's steps would come faster than the target "
     "may be scaled"),
    ("steps shorter than a set cooldown", {"cooldownSeconds": 3601},
     {"planHorizonSeconds": 86400, "planStepSeconds": 3600}, "spec.forecast.planStepSeconds",
     "must be at least cooldownSeconds"),
    ("a horizon that is no whole number of steps", {}, {"planHorizonSeconds": 86400, "planStepSeconds": 7000},
     "spec.forecast.planHorizonSeconds", "planHorizonSeconds must be a whole number of steps, a multiple of planStepSeconds"),
    ("too many steps", {"cooldownSeconds": 60}, {"planHorizonSeconds": 86400, "planStepSeconds": 120},
     "spec.forecast.planHorizonSeconds",
     "a plan may have at most 288 steps; make planStepSeconds longer or planHorizonSeconds shorter"),
    ("steps finer than the load is read at", {"cooldownSeconds": 60},
     {"planHorizonSeconds": 3600, "planStepSeconds": 120, "stepSeconds": 300}, "spec.forecast.planStepSeconds",
     "planStepSeconds must be at least stepSeconds, the resolution the load is read at"),
    ("a plan longer than half the history", {},
     {"planHorizonSeconds": 86400, "planStepSeconds": 3600, "lookbackSeconds": 86400 + 3600},
     "spec.forecast.lookbackSeconds",
     "lookbackSeconds must cover at least two plan horizons (planHorizonSeconds) of history"),
    ("a horizon beyond 7 days", {}, {"planHorizonSeconds": 604800 + 86400, "planStepSeconds": 86400},
     "spec.forecast.planHorizonSeconds", "should be less than or equal to 604800"),
    ("a step under a minute", {"cooldownSeconds": 0}, {"planHorizonSeconds": 3600, "planStepSeconds": 30},
     "spec.forecast.planStepSeconds", "should be greater than or equal to 60"),
])
def test_bad_plan_settings_are_refused_with_a_message(scenario: Scenario, why: str, spec: dict, forecast: dict,
                                                      field: str, words: str):
    message = refused(scenario, POLICIES, policy(spec=spec, **forecast))
    assert field in message and words in message, f"{why}: {message}"


def test_plan_settings_are_checked_when_a_policy_changes(scenario: Scenario):
    scenario.create(POLICIES, policy(spec={"cooldownSeconds": 600}, planHorizonSeconds=86400, planStepSeconds=600))
    with pytest.raises(kubernetes.client.ApiException) as caught:
        scenario.custom.patch_namespaced_custom_object(GROUP, VERSION, scenario.namespace, POLICIES, "web",
                                                       {"spec": {"cooldownSeconds": 900}})
    assert caught.value.status == 422 and "must be at least cooldownSeconds" in refusal(caught.value)


# -- kubectl explain -------------------------------------------------------------------------
def _undescribed(schema: dict, path: str) -> list[str]:
    missing = [] if schema.get("description") else [path]
    for name, sub in (schema.get("properties") or {}).items():
        if name not in ("metadata",):
            missing += _undescribed(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        missing += _undescribed(schema["items"], f"{path}[]")
    return missing


def test_every_field_is_described():
    for file in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(file.read_text())
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _undescribed(schema, crd["spec"]["names"]["kind"]) == []


@pytest.mark.parametrize("resource, words", [
    ("scalingproposal.spec.schedule", "approved once and applied step by step"),
    ("scalingproposal.spec.schedule.upperBound", "PlanBreached"),
    ("scalingproposal.spec.endsAt", "after this time no step applies"),
    ("scalingproposal.status.steps.outcome", "Missed"),
    ("scalingproposal.status.nextStepAt", "next step is due"),
    ("scalingpolicy.spec.forecast.planStepSeconds", "At least cooldownSeconds"),
    ("scalingpolicy.spec.forecast.planHorizonSeconds", "at most 288 steps"),
])
def test_kubectl_explain_describes_plans(cluster: Cluster, resource: str, words: str):
    out = cluster.kubectl("explain", resource).stdout
    assert words in " ".join(out.split())
