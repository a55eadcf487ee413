"""Behaviour that mutation testing (tests/mutation/run.sh) found undefended: each test here
kills mutants of scalegate's core that survived the rest of the unit suite, by checking
what the code is for, not how it is written. Grouped by module; each group names the
mutants it was written against (mutmut's names, e.g. rules.xǁBoundsǁnearest__mutmut_4)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from scalegate.model import (
    ForecastSpec,
    InvalidObject,
    PlanSettings,
    PlanStep,
    Policy,
    Proposal,
    StepOutcome,
    StepReceipt,
    TargetRef,
    parse_plan,
    parse_receipts,
    parse_time,
)
from scalegate.rules import MAX_REPLICAS, MAX_STEP_DOWN, MAX_STEP_UP, MIN_REPLICAS, Bounds, replicas_for


# -- rules -------------------------------------------------------------------------------------
# nearest__mutmut_4, _9, _14, _21: a limit that the desired count only reaches (not passes)
# cut nothing, and must not be named as the reason the forecaster proposed less.
@pytest.mark.parametrize("bounds, desired, current", [
    (Bounds(min_replicas=3), 3, 5),
    (Bounds(max_replicas=8), 8, 5),
    (Bounds(max_step_up=2), 7, 5),
    (Bounds(max_step_down=2), 3, 5),
])
def test_a_limit_reached_exactly_cuts_nothing(bounds, desired, current):
    assert bounds.nearest(desired, current) == (desired, ())


@pytest.mark.parametrize("bounds, desired, expected", [
    (Bounds(min_replicas=3), 2, (3, (MIN_REPLICAS,))),
    (Bounds(max_replicas=8), 9, (8, (MAX_REPLICAS,))),
    (Bounds(max_step_up=2), 8, (7, (MAX_STEP_UP,))),
    (Bounds(max_step_down=2), 2, (3, (MAX_STEP_DOWN,))),
])
def test_a_limit_passed_by_one_cuts_and_is_named(bounds, desired, expected):
    assert bounds.nearest(desired, 5) == expected


# check__mutmut_33: a step of one is a step up; every limit that applies is listed (the
# plugin shows them), and the step limit of that direction applies to it.
def test_a_step_of_one_is_judged_by_max_step_up():
    checks = Bounds(max_step_up=1, max_step_down=1).check(5, 4)
    assert [(c.limit, c.holds) for c in checks] == [(MAX_STEP_UP, True)]
    checks = Bounds(max_step_up=1, max_step_down=1).check(3, 4)
    assert [(c.limit, c.holds) for c in checks] == [(MAX_STEP_DOWN, True)]
    assert Bounds(max_step_up=1).check(4, 4) == [] and Bounds(max_step_down=1).check(4, 4) == []


# replicas_for__mutmut_7, _10: the refusal says what was wrong, with the value.
def test_replicas_for_says_which_input_is_wrong():
    with pytest.raises(ValueError, match=r"capacity_per_replica must be a positive number, got 0\.0"):
        replicas_for(10.0, 0.0)
    with pytest.raises(ValueError, match=r"load must be finite, got nan"):
        replicas_for(float("nan"), 5.0)


# -- model -------------------------------------------------------------------------------------
def _proposal_body(**spec) -> dict:
    return {"metadata": {"name": "web-1", "namespace": "shop", "uid": "uid-1"},
            "spec": {"policyRef": {"name": "web"},
                     "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "currentReplicas": 3, "replicas": 3, "validUntil": "2026-11-27T00:00:00Z", "reason": "r",
                     **spec}}


def _invalid(call, *args) -> str:
    with pytest.raises(InvalidObject) as err:
        call(*args)
    return str(err.value)


@pytest.fixture
def new_york(monkeypatch):
    """The process's local time zone set to one that is not UTC, for the test."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# x__instant__mutmut_2: a plan's times are written in UTC on any machine (receipts are
# keyed by them, and the CRD reads them as UTC instants).
def test_plan_times_are_written_in_utc_whatever_the_local_zone(new_york):
    at = dt.datetime(2026, 11, 26, 20, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert PlanStep(at=at, replicas=3).to_dict()["at"] == "2026-11-26T19:30:00Z"
    assert PlanStep(at=at.replace(microsecond=5), replicas=3).to_dict()["at"] == "2026-11-26T19:30:00.000005Z"
    assert StepReceipt(at=at, replicas=3, outcome=StepOutcome.APPLIED).to_dict()["at"] == "2026-11-26T19:30:00Z"


# x_parse_time__mutmut_15: RFC 3339 allows a lower-case z (Python's parser does not).
def test_a_lower_case_z_is_utc():
    assert parse_time("2026-11-26T20:30:00z") == dt.datetime(2026, 11, 26, 20, 30, tzinfo=dt.timezone.utc)


# PlanStep.to_dict__mutmut_28: figures are written to 6 decimals, both of them.
def test_plan_step_figures_are_written_to_six_decimals():
    step = PlanStep(at=dt.datetime(2026, 11, 26, 20, 30, tzinfo=dt.timezone.utc), replicas=3,
                    predicted_peak=1.23456789, upper_bound=2.34567891)
    assert step.to_dict() == {"at": "2026-11-26T20:30:00Z", "replicas": 3, "predictedPeak": 1.234568,
                              "upperBound": 2.345679}


# parse_plan__mutmut_50, _56, _83; parse_receipts__mutmut_4; StepReceipt.parse__mutmut_20;
# Proposal.parse__mutmut_17: the refusals a person reads in the proposal's status
# ("Failed InvalidProposal: ..."), word for word.
def test_a_plan_is_refused_in_words_that_name_the_problem():
    steps = [{"at": "2026-11-26T21:00:00Z", "replicas": 3}, {"at": "2026-11-26T22:00:00Z", "replicas": 5}]
    valid_until = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
    assert _invalid(parse_plan, {"schedule": steps, "replicas": 4, "endsAt": "2026-11-26T23:00:00Z"},
                    valid_until) == "spec.replicas (4) must equal the first step's replicas (3)"
    assert _invalid(parse_plan, {"schedule": steps, "replicas": 3, "endsAt": "2026-11-26T23:00:00Z"},
                    dt.datetime(2026, 11, 26, 20, tzinfo=dt.timezone.utc)) == (
        "the first step of spec.schedule must not be after spec.validUntil")
    assert _invalid(parse_plan, {"schedule": steps, "replicas": 3, "endsAt": "2026-12-04T21:00:01Z"},
                    valid_until) == "a plan may span at most 7 days from its first step to spec.endsAt"
    assert _invalid(parse_receipts, {"at": "x"}) == "status.steps must be a list"
    assert _invalid(parse_receipts, [{"at": "2026-11-26T21:00:00Z", "replicas": 3, "outcome": "Done"}]) == (
        "status.steps[0].outcome 'Done' is not one of Applied, Skipped, Missed, Stale, Rejected, Failed")
    assert _invalid(Proposal.parse, {"metadata": {"name": "web-1"}}) == "spec is missing"


# TargetRef.parse__mutmut_41: the refusal names the field and the value.
def test_a_target_that_is_no_valid_path_part_is_named():
    assert _invalid(TargetRef.parse, {"apiVersion": "apps/v1", "kind": "deployment", "name": "web"},
                    "spec.targetRef") == "spec.targetRef.kind 'deployment' is not a valid kind"


# Proposal.parse__mutmut_96, _100, _103, _107; StepReceipt.parse__mutmut_66: what is absent
# reads as empty text (never None, never a made-up value).
def test_absent_metadata_and_receipt_texts_are_empty():
    body = _proposal_body()
    body["metadata"] = {}
    proposal = Proposal.parse(body)
    assert (proposal.namespace, proposal.name, proposal.uid) == ("", "", "")
    receipt = StepReceipt.parse({"at": "2026-11-26T21:00:00Z", "replicas": 3, "outcome": "Applied"}, "s")
    assert (receipt.reason, receipt.message) == ("", "")
    assert receipt.to_dict() == {"at": "2026-11-26T21:00:00Z", "replicas": 3, "outcome": "Applied"}


# ForecastSpec.parse__mutmut_101, _113, _117: intervalSeconds' minimum is the CRD's 60, and
# every refusal names the field where the caller says it is.
def test_forecast_spec_limits_and_where_they_are_named():
    base = {"query": "q", "capacityPerReplica": 10}
    assert ForecastSpec.parse({**base, "intervalSeconds": 60}).interval_seconds == 60
    assert _invalid(ForecastSpec.parse, {**base, "intervalSeconds": 59}) == (
        "spec.forecast.intervalSeconds must be >= 60, got 59")
    assert _invalid(ForecastSpec.parse, {**base, "planHorizonSeconds": 3600}, "x.forecast") == (
        "x.forecast.planHorizonSeconds and x.forecast.planStepSeconds go together: set both or neither")


# PlanSettings.parse__mutmut_17, _40, _60, _63: the limits are the CRD's, at their edges;
# the plan's step is compared with the policy's own stepSeconds.
def test_plan_settings_at_the_edges_of_their_limits():
    assert PlanSettings.parse({"planHorizonSeconds": 60, "planStepSeconds": 60, "stepSeconds": 60}) == (
        PlanSettings(horizon_seconds=60, step_seconds=60))
    week = 7 * 86400
    assert PlanSettings.parse({"planHorizonSeconds": week, "planStepSeconds": week // 288}) == (
        PlanSettings(horizon_seconds=week, step_seconds=week // 288))
    assert PlanSettings.parse({"planHorizonSeconds": 3600, "planStepSeconds": 60, "stepSeconds": 1}) == (
        PlanSettings(horizon_seconds=3600, step_seconds=60))
    assert _invalid(PlanSettings.parse, {"planHorizonSeconds": 3600, "planStepSeconds": 300, "stepSeconds": 600}) == (
        "spec.forecast.planStepSeconds (300) must be at least spec.forecast.stepSeconds (600)")


# Policy.parse__mutmut_147: maxStepDown's minimum is the CRD's 1 (0 would forbid every step down).
def test_max_step_down_of_zero_is_refused():
    body = {"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 5, "maxStepDown": 0}}
    assert _invalid(Policy.parse, body) == "spec.maxStepDown must be >= 1, got 0"
