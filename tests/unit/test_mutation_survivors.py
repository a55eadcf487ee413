"""Behaviour that mutation testing (tests/mutation/run.sh) found undefended: each test here
kills mutants of scalegate's core that survived the rest of the unit suite, by checking
what the code is for, not how it is written. Grouped by module; each group names the
mutants it was written against (mutmut's names, e.g. rules.xǁBoundsǁnearest__mutmut_4)."""
# ruff: noqa: F811 (the fixtures kube, clock and reconciler are test_reconciler's, imported above)

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from unit.test_kube_apply_path import make as _kube
from unit.test_reconciler import NOW, NS, clock, kube, policy_body, proposal_body, reconcile, reconciler  # noqa: F401

from scalegate import decision as d
from scalegate import metrics
from scalegate.kube import Forbidden, Unavailable, error_from_response
from scalegate.model import (
    APPROVAL_REF,
    APPROVED,
    APPROVED_BY,
    ForecastSpec,
    InvalidObject,
    Phase,
    PlanSettings,
    PlanStep,
    Policy,
    Proposal,
    StepOutcome,
    StepReceipt,
    TargetRef,
    format_time,
    parse_plan,
    parse_receipts,
    parse_time,
)
from scalegate.reconciler import Reconciler
from scalegate.records import APPLY_INTENT, OUTCOME, ApplyIntent, OutcomeRecord
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


# PlanSettings.parse__mutmut_50: the count of steps is a whole number.
def test_too_many_plan_steps_are_counted_in_whole_steps():
    assert _invalid(PlanSettings.parse, {"planHorizonSeconds": 290 * 60, "planStepSeconds": 60, "stepSeconds": 60}) == (
        "a plan may have at most 288 steps; spec.forecast.planHorizonSeconds / planStepSeconds is 290")


# -- kube (apply path) ------------------------------------------------------------------------
# error_from_response__mutmut_40; _unreachable__mutmut_20, _23, _24, _30; Kube._raw__mutmut_49;
# list_policy_proposal_metadata__mutmut_17, patch_proposal_annotations__mutmut_1,
# _resource__mutmut_11, autoscalers__mutmut_9: an error says what was being done, then what
# the server (or the network) said, in a few words.
def test_an_http_error_without_reason_phrase_says_only_the_status():
    assert error_from_response(ApiException(status=503, reason=""), "read scale").message == "HTTP 503"


@pytest.mark.parametrize("text, said", [
    # urllib3 prefixes the connection ("<connection>: message"): the message is kept whole.
    ("Failed to establish a new connection: [Errno -2] Name or service not known",
     "Failed to establish a new connection: [Errno -2] Name or service not known"),
    ("timed out", "timed out"),
])
def test_an_unreachable_server_is_named_with_the_cause_in_a_few_words(text, said):
    cause = urllib3.exceptions.MaxRetryError(None, "/x", urllib3.exceptions.NewConnectionError(None, text))
    path = "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/a"
    kube, _ = _kube({("GET", path): cause})
    with pytest.raises(Unavailable) as err:
        kube.get_proposal("shop", "a")
    assert str(err.value) == f"get proposal shop/a: cannot reach the Kubernetes API server at https://api.example:6443: {said}"
    assert err.value.what == "get proposal shop/a"


@pytest.mark.parametrize("call, method, path, what", [
    (lambda k: k.list_policy_proposal_metadata("shop", "web"), "GET",
     "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals", "list proposals of policy shop/web"),
    (lambda k: k.patch_proposal_annotations("shop", "web-1", {"a": "b"}, "7"), "PATCH",
     "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/web-1", "record on proposal shop/web-1"),
    (lambda k: k.get_scale("shop", TargetRef("example.io/v1", "Thing", "x")), "GET", "/apis/example.io/v1",
     "discover example.io/v1"),
    (lambda k: k.autoscalers("shop"), "GET", "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers",
     "list horizontalpodautoscalers"),
])
def test_every_error_names_what_was_being_done(call, method, path, what):
    kube, _ = _kube({(method, path): (403, json.dumps({"reason": "Forbidden", "message": "no"}).encode())})
    with pytest.raises(Forbidden) as err:
        call(kube)
    assert str(err.value) == f"{what}: no"


# -- decision ---------------------------------------------------------------------------------
def _plan(steps=((-5, 9), (10, 12), (20, 6)), ends: float = 30, receipts=(), created=None, name="web-1") -> Proposal:
    body = proposal_body(name, current=4, replicas=steps[0][1], created=created or NOW - dt.timedelta(minutes=10))
    body["spec"]["schedule"] = [{"at": format_time(NOW + dt.timedelta(minutes=m)), "replicas": r} for m, r in steps]
    body["spec"]["endsAt"] = format_time(NOW + dt.timedelta(minutes=ends))
    body["status"] = {"steps": list(receipts)}
    return Proposal.parse(body)


# approver_not_authorized__mutmut_7, _8: the refusal tells how to get the right.
def test_an_unauthorized_approver_is_told_what_grants_approve():
    outcome = d.approver_not_authorized("mallory", Proposal.parse(proposal_body()))
    assert outcome.message == ("mallory may not approve scalingproposals in namespace shop (needs the verb "
                               "'approve', e.g. through the ClusterRole scalegate-approver)")


# recover_intent__mutmut_10, _21: a recovery that cannot tell says that nothing more was applied.
def test_a_recovery_that_fails_closed_says_nothing_more_was_applied():
    proposal = Proposal.parse(proposal_body())
    intent = ApplyIntent(uid="uid-web-1", replicas=9, previous_replicas=4, resource_version="100",
                         target_uid="uid-deploy-web", target_generation=7, approved_by="alice", started_at=NOW)
    replaced = d.recover_intent(proposal, intent, 9, "uid-other", 1)
    undone = d.recover_intent(proposal, intent, 5, "uid-deploy-web", 8)
    assert replaced.message == ("an interrupted apply found Deployment/web replaced by another object since it was "
                                "read; nothing more was applied")
    assert undone.message.endswith("whether the write landed and was undone or never landed cannot be told, "
                                   "so nothing more was applied")


# receipts_until__mutmut_21; check_step_staleness__mutmut_17; plan_completed__mutmut_9: what
# a plan's receipts and outcomes say.
def test_a_missed_step_says_why_it_was_not_applied():
    missed = d.receipts_until(_plan(), NOW)
    assert [(r.outcome, r.message) for r in missed] == [
        ("Missed", "not applied: the plan ended or was superseded before the operator came to it "
                   "(steps that came due are not replayed)")]


def test_a_stale_step_says_someone_else_changed_the_target():
    outcome = d.check_step_staleness(_plan(), 4, 5)
    assert outcome.message == ("Deployment/web now has 5 replicas, not the 4 this plan was based on; "
                               "someone else changed it, so nothing was applied")


def test_a_completed_plan_says_when_it_ended():
    outcome = d.plan_completed(_plan(), (), "alice")
    assert outcome.message == "the plan ended at 2026-11-26T21:00:00Z: 0 of 3 steps applied, approved by alice"


# superseding_candidates__mutmut_1, _19: a proposal without a creation time is older than
# any, and one unreadable candidate does not hide the others.
def test_superseding_candidates_survive_odd_metadata():
    plan = _plan()
    newer = {"name": "web-3", "creationTimestamp": format_time(NOW),
             "annotations": {APPROVED: "true", APPROVED_BY: "bob"}}
    others = [{"name": "web-0", "annotations": {APPROVED: "true", APPROVED_BY: "bob"}},
              {"name": "web-2", "creationTimestamp": "not a time"}, newer]
    assert d.superseding_candidates(plan, others) == [("web-3", "bob")]


# -- reconciler (single changes) ------------------------------------------------------------------
# _write_outcome__mutmut_37: only an applied outcome records the replicas it applied.
def test_a_refused_outcome_records_no_applied_replicas(kube, reconciler):
    kube.proposals[(NS, "web-1")] = proposal_body(approved_by="mallory")
    assert reconcile(reconciler) is None
    record = kube.outcome()
    assert record["phase"] == Phase.REJECTED and "appliedReplicas" not in record and "previousReplicas" not in record


# _apply__mutmut_13, _15, _36, _81: an apply that fails after the approval was verified keeps
# the verified approver and the approval's reference in the record and in status, and says why.
@pytest.mark.parametrize("break_target, reason, message_part", [
    (lambda k: k.scales.pop((NS, "web")), "TargetNotFound", "Deployment/web not found"),
    (lambda k: k.no_scale.add("web"), "NoScaleSubresource", "has no scale subresource"),
    (lambda k: k.set_replicas("web", 5), "TargetChanged", "Deployment/web"),
])
def test_a_failed_apply_keeps_the_verified_approver_and_reference(kube, reconciler, break_target, reason,
                                                                    message_part):
    kube.proposals[(NS, "web-1")] = proposal_body(annotations={APPROVAL_REF: "https://git.example/mr/1"})
    break_target(kube)
    assert reconcile(reconciler) is None
    status = kube.status()
    assert status["reason"] == reason and message_part in status["message"]
    assert status["approvedBy"] == "alice" and status["approvalRef"] == "https://git.example/mr/1"
    assert kube.outcome()["approvedBy"] == "alice"


# _apply__mutmut_93: while the operator still may not write the scale, a second look writes
# no intent (it could not land) and changes nothing.
def test_still_forbidden_writes_no_intent(kube, reconciler):
    kube.fail("update_scale", Forbidden("update scale", "forbidden"), times=2)
    reconcile(reconciler)
    assert kube.status()["reason"] == "OperatorForbidden"
    writes = len(kube.record_writes())
    reconcile(reconciler)
    assert len(kube.record_writes()) == writes and kube.intent() is None
    assert kube.replicas() == 4


# _recover__mutmut_16, _31: an interrupted apply's approver (named in the intent, verified
# before it) is kept when the recovery fails.
def test_a_recovery_that_cannot_read_the_target_keeps_the_approver(kube, reconciler):
    intent = ApplyIntent(uid="uid-web-1", replicas=9, previous_replicas=4, resource_version="100",
                         target_uid="uid-deploy-web", target_generation=7, approved_by="alice", started_at=NOW)
    kube.proposals[(NS, "web-1")] = proposal_body(annotations={APPLY_INTENT: intent.to_annotation()})
    kube.scales.pop((NS, "web"))
    assert reconcile(reconciler) is None
    assert kube.status()["approvedBy"] == "alice" and kube.outcome()["approvedBy"] == "alice"


# _restore__mutmut_15, _16, _41: status put back from the record says what the record says.
def test_status_restored_from_the_record_has_its_receipt(kube, reconciler):
    record = OutcomeRecord(uid="uid-web-1", phase=Phase.APPLIED, reason="Applied", message="scaled from 4 to 9",
                           at=NOW - dt.timedelta(minutes=1), approved_by="alice", previous_replicas=4,
                           applied_replicas=9)
    kube.proposals[(NS, "web-1")] = proposal_body(annotations={OUTCOME: record.to_annotation()},
                                                  status={"phase": "Approved"})
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["message"]) == (Phase.APPLIED, "scaled from 4 to 9")
    assert (status["appliedAt"], status["previousReplicas"], status["appliedReplicas"]) == (
        format_time(NOW - dt.timedelta(minutes=1)), 4, 9)
    assert kube.replicas() == 4  # nothing applied again


# _involved__mutmut_4, _13, _17, _18, _22, _25: an Event names its proposal fully.
def test_events_name_the_proposal(kube, reconciler):
    reconcile(reconciler)
    involved = [e["involved"] for e in kube.events if e["involved"]["kind"] == "ScalingProposal"]
    assert involved and all(i == {"apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingProposal",
                                  "name": "web-1", "namespace": NS, "uid": "uid-web-1"} for i in involved)
    # The plan's step Events name it through Reconciler._involved (the single change's
    # receipt builds the same dict in _record): the same five fields.
    assert Reconciler._involved(proposal_body()) == involved[0]
    body = proposal_body()
    del body["metadata"]["uid"]
    assert Reconciler._involved(body)["uid"] == ""


# _complete__mutmut_87, _91, _95: the apply latency is measured from the approval status recorded.
def test_the_apply_latency_is_observed_from_the_recorded_approval(kube, reconciler):
    before = metrics.REGISTRY.get_sample_value("scalegate_apply_latency_seconds_count") or 0.0
    kube.proposals[(NS, "web-1")] = proposal_body(status={"phase": "Approved",
                                                          "approvedAt": format_time(NOW - dt.timedelta(seconds=3))})
    reconcile(reconciler)
    assert kube.status()["phase"] == Phase.APPLIED
    assert metrics.REGISTRY.get_sample_value("scalegate_apply_latency_seconds_count") == before + 1
    assert metrics.REGISTRY.get_sample_value("scalegate_apply_latency_seconds_bucket", {"le": "5.0"}) >= 1


# is_own_write (no tests): the operator knows its own writes by resourceVersion, and only them.
def test_own_writes_are_known_by_resource_version(kube, reconciler):
    reconcile(reconciler)
    mine = kube.proposals[(NS, "web-1")]["metadata"]["resourceVersion"]
    assert reconciler.is_own_write(NS, "web-1", mine)
    assert not reconciler.is_own_write(NS, "web-1", "1") and not reconciler.is_own_write(NS, "web-1", None)
    assert not reconciler.is_own_write(NS, "web-2", mine)


# -- more of the same, from the run over every target ----------------------------------------------
# parse_plan__mutmut_12, _19, _41, _42, _76: a broken plan's refusal, word for word.
@pytest.mark.parametrize("spec, message", [
    ({"endsAt": "2026-11-26T23:00:00Z"}, "spec.endsAt belongs to a schedule, and there is none"),
    ({"schedule": []}, "spec.schedule must be a list of at least one step"),
    ({"schedule": [{"at": "2026-11-26T22:00:00Z", "replicas": 3}, {"at": "2026-11-26T21:00:00Z", "replicas": 4}],
      "replicas": 3, "endsAt": "2026-11-26T23:00:00Z"},
     "spec.schedule[1].at must be after spec.schedule[0].at: steps are in order of time"),
    ({"schedule": [{"at": "2026-11-26T22:00:00Z", "replicas": 3}], "replicas": 3, "endsAt": "2026-11-26T22:00:00Z"},
     "spec.endsAt must be after the last step's at"),
])
def test_more_plan_refusals_word_for_word(spec, message):
    assert _invalid(parse_plan, spec, None) == message


# TargetRef.parse__mutmut_34, _38: each field is named as the CRD names it.
@pytest.mark.parametrize("ref, message", [
    ({"apiVersion": "Apps/V1", "kind": "Deployment", "name": "web"},
     "spec.targetRef.apiVersion 'Apps/V1' is not a valid apiVersion"),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "name": "Web_1"}, "spec.targetRef.name 'Web_1' is not a valid name"),
])
def test_every_target_field_is_named_in_its_refusal(ref, message):
    assert _invalid(TargetRef.parse, ref, "spec.targetRef") == message


# DecisionAnnotations.parse__mutmut_51: no decision reason is an empty one.
def test_an_absent_decision_reason_is_empty():
    assert Proposal.parse(proposal_body()).decision.reason == ""


# check_expiry_rejection_supersession__mutmut_9, _10: an expiry says what happens next.
def test_an_expiry_says_a_new_forecast_will_propose_again():
    outcome = d.check_expiry_rejection_supersession(Proposal.parse(proposal_body(valid_for=0)), NOW, None)
    assert outcome.message == (f"expired at {format_time(NOW)} before it was applied; "
                               "a new forecast will propose again if still needed")


# policy_claims__mutmut_29: one unreadable policy does not hide the others' claims.
def test_an_unreadable_policy_does_not_hide_the_claims_after_it():
    broken = {"metadata": {"name": "broken"}, "spec": {"targetRef": {"kind": "Deployment"}}}
    claims = d.policy_claims([broken, policy_body()])
    assert [(name, target.name) for name, _, target in claims] == [("web", "web")]


# check_target_claim__mutmut_1, _2: a policy without a creation time counts as the oldest.
def test_a_rival_without_creation_time_is_the_oldest():
    policy = Policy.parse(policy_body())
    outcome = d.check_target_claim(policy, NOW, [("old", None, policy.target)])
    assert outcome is not None and outcome.reason == d.Reason.CONFLICTING_POLICY and "older policy old" in outcome.message


# check_cooldown__mutmut_21: the cooldown holds to its last second.
def test_the_cooldown_holds_until_it_ends():
    body = policy_body(cooldownSeconds=600)
    body["status"] = {"lastAppliedTime": format_time(NOW - dt.timedelta(seconds=599))}
    outcome = d.check_cooldown(Proposal.parse(proposal_body()), Policy.parse(body), NOW)
    assert outcome is not None and outcome.reason == d.Reason.COOLDOWN and outcome.requeue_after == 1.0


# check_plan__mutmut_29: a rejected plan lists its problems separated as a sentence.
def test_a_rejected_plan_lists_each_problem():
    outcome = d.check_plan(_plan(steps=((-5, 30), (10, 40))), Policy.parse(policy_body()))
    assert outcome is not None
    assert "; step 2 of 2 (at " in outcome.message and "XX" not in outcome.message


# reconcile__mutmut_16, _17, _19: an error of the operator's own is counted as Internal.
def test_an_internal_error_is_counted_as_internal(kube, reconciler):
    def internal() -> float:
        return metrics.REGISTRY.get_sample_value("scalegate_reconcile_errors_total", {"error": "Internal"}) or 0.0
    before = internal()
    kube.fail("get_proposal", ZeroDivisionError("a bug"))
    with pytest.raises(ZeroDivisionError):
        reconcile(reconciler)
    assert internal() == before + 1


# _recover__mutmut_31: a recovery refused by RBAC keeps the intent's (verified) approver.
def test_a_forbidden_recovery_keeps_the_approver(kube, reconciler):
    intent = ApplyIntent(uid="uid-web-1", replicas=9, previous_replicas=4, resource_version="100",
                         target_uid="uid-deploy-web", target_generation=7, approved_by="alice", started_at=NOW)
    kube.proposals[(NS, "web-1")] = proposal_body(annotations={APPLY_INTENT: intent.to_annotation()})
    kube.fail("get_target", Forbidden("read Deployment/web", "forbidden"))
    reconcile(reconciler)
    assert (kube.status()["reason"], kube.status()["approvedBy"]) == ("OperatorForbidden", "alice")
    assert kube.intent() is not None  # kept for the next look


# _complete__mutmut_75, _77, _78, _81: when the proposal's status write after an apply meets a
# terminal status already written (by another operator instance), it is not overwritten, and
# the target still gets its Event.
def test_a_terminal_status_written_meanwhile_is_not_overwritten(kube, reconciler):
    def another_operator_finished(*_):
        body = kube.proposals[(NS, "web-1")]
        body["status"] = {"phase": "Applied", "message": "recorded by another instance"}
        kube.touch_proposal("web-1")
    kube.on("patch_proposal_status", another_operator_finished)
    reconcile(reconciler)
    assert kube.replicas() == 9
    assert kube.status()["message"] == "recorded by another instance"
    assert [e["reason"] for e in kube.events if e["involved"]["kind"] == "Deployment"] == ["ScaledByScalegate"]
