"""Parsing of ScalingPolicy and ScalingProposal bodies: valid shapes, defaults, and every
way a body is refused with an `InvalidObject` that names the field."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
import yaml

from scalegate.model import (
    APPROVAL_REF,
    APPROVED,
    APPROVED_BY,
    DECISION_REASON,
    PROPOSED_BY,
    REJECTED,
    REJECTED_BY,
    DecisionAnnotations,
    Evidence,
    ForecastSpec,
    InvalidObject,
    Phase,
    Policy,
    Proposal,
    TargetRef,
    format_time,
    manifest_yaml,
    parse_time,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 26, 20, 30, tzinfo=UTC)


def policy_body(**spec_overrides) -> dict:
    spec = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 2,
        "maxReplicas": 20,
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "scalegate.io/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": {"name": "web", "namespace": "shop", "uid": "pol-uid", "generation": 3},
        "spec": spec,
    }


def proposal_body(**spec_overrides) -> dict:
    spec = {
        "policyRef": {"name": "web"},
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "currentReplicas": 4,
        "replicas": 9,
        "validUntil": "2026-11-26T21:30:00Z",
        "reason": "peak of 410 req/s expected at 21:10",
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "scalegate.io/v1alpha1",
        "kind": "ScalingProposal",
        "metadata": {
            "name": "web-7f3a2",
            "namespace": "shop",
            "uid": "prop-uid",
            "generation": 1,
            "creationTimestamp": "2026-11-26T20:30:00Z",
            "annotations": {PROPOSED_BY: "system:serviceaccount:scalegate:forecaster"},
        },
        "spec": spec,
    }


# -- timestamps -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("2026-11-26T21:30:00Z", dt.datetime(2026, 11, 26, 21, 30, tzinfo=UTC), id="zulu"),
        pytest.param("2026-11-26T21:30:00.250Z", dt.datetime(2026, 11, 26, 21, 30, 0, 250000, tzinfo=UTC),
                     id="fractional-seconds"),
        pytest.param(" 2026-11-26T21:30:00Z ", dt.datetime(2026, 11, 26, 21, 30, tzinfo=UTC), id="surrounding-space"),
        pytest.param("2026-11-26T23:30:00+02:00", dt.datetime(2026, 11, 26, 21, 30, tzinfo=UTC), id="offset"),
        pytest.param("2026-11-26T21:30:00", dt.datetime(2026, 11, 26, 21, 30, tzinfo=UTC), id="naive-means-utc"),
    ],
)
def test_parse_time_reads_rfc3339(text, expected):
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("empty", [None, ""], ids=["none", "empty-string"])
def test_parse_time_of_nothing_is_none(empty):
    assert parse_time(empty) is None


def test_parse_time_passes_datetimes_through_and_makes_naive_ones_utc():
    aware = dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert parse_time(aware) is aware
    assert parse_time(dt.datetime(2026, 1, 1)) == dt.datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "value, message",
    [
        pytest.param("yesterday", "'yesterday' is not an RFC 3339 timestamp", id="words"),
        pytest.param("2026-13-01T00:00:00Z", "is not an RFC 3339 timestamp", id="month-13"),
        pytest.param(1764189000, "expected an RFC 3339 timestamp, got 1764189000", id="unix-int"),
        pytest.param(["2026-11-26T21:30:00Z"], "expected an RFC 3339 timestamp", id="list"),
    ],
)
def test_parse_time_refuses_what_is_not_a_timestamp(value, message):
    with pytest.raises(InvalidObject, match=message.replace("(", r"\(")):
        parse_time(value)


def test_format_time_is_utc_zulu_without_microseconds():
    moment = dt.datetime(2026, 11, 26, 23, 30, 5, 999999, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_time(moment) == "2026-11-26T21:30:05Z"
    assert parse_time(format_time(T0)) == T0


# -- TargetRef --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "api_version, group, version",
    [("apps/v1", "apps", "v1"), ("v1", "", "v1"), ("example.com/v1beta2", "example.com", "v1beta2")],
    ids=["apps", "core", "custom"],
)
def test_target_ref_group_and_version(api_version, group, version):
    ref = TargetRef(api_version, "Thing", "x")
    assert (ref.group, ref.version) == (group, version)


@pytest.mark.parametrize(
    "other, same",
    [
        pytest.param(TargetRef("apps/v1", "Deployment", "web"), True, id="identical"),
        pytest.param(TargetRef("apps/v1beta1", "Deployment", "web"), True, id="other-version-same-object"),
        pytest.param(TargetRef("extensions/v1beta1", "Deployment", "web"), False, id="other-group"),
        pytest.param(TargetRef("apps/v1", "StatefulSet", "web"), False, id="other-kind"),
        pytest.param(TargetRef("apps/v1", "Deployment", "api"), False, id="other-name"),
    ],
)
def test_target_ref_same_object(other, same):
    assert TargetRef("apps/v1", "Deployment", "web").same_object(other) is same


def test_target_ref_round_trip_and_describe():
    raw = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}
    ref = TargetRef.parse(raw, "spec.targetRef")
    assert ref.to_dict() == raw
    assert ref.describe() == "StatefulSet/db"


@pytest.mark.parametrize(
    "raw, message",
    [
        pytest.param(None, "spec.targetRef must be an object with apiVersion, kind and name", id="missing"),
        pytest.param("apps/v1/Deployment/web", "spec.targetRef must be an object", id="string"),
        pytest.param({"kind": "Deployment", "name": "web"}, "spec.targetRef.apiVersion must be a non-empty string",
                     id="no-apiVersion"),
        pytest.param({"apiVersion": "apps/v1", "kind": "", "name": "web"}, "spec.targetRef.kind must be a non-empty",
                     id="empty-kind"),
        pytest.param({"apiVersion": "apps/v1", "kind": "Deployment", "name": 7}, "spec.targetRef.name must be a non-empty",
                     id="int-name"),
    ],
)
def test_target_ref_refusals(raw, message):
    with pytest.raises(InvalidObject, match=message):
        TargetRef.parse(raw, "spec.targetRef")


# -- ScalingPolicy ----------------------------------------------------------------------

def test_policy_parses_a_full_body():
    body = policy_body(
        maxStepUp=5, maxStepDown=2, cooldownSeconds=300, proposalTTLSeconds=1800, suspend=True,
        forecast={"query": "sum(rate(x[5m]))", "capacityPerReplica": 50, "horizonSeconds": 7200,
                  "lookbackSeconds": 86400, "stepSeconds": 60, "confidence": 0.9, "intervalSeconds": 120},
    )
    body["status"] = {"lastAppliedTime": "2026-11-26T20:00:00Z"}
    policy = Policy.parse(body)
    assert policy.namespace == "shop" and policy.name == "web" and policy.uid == "pol-uid"
    assert policy.generation == 3
    assert policy.target == TargetRef("apps/v1", "Deployment", "web")
    assert (policy.min_replicas, policy.max_replicas) == (2, 20)
    assert (policy.max_step_up, policy.max_step_down) == (5, 2)
    assert policy.cooldown_seconds == 300
    assert policy.proposal_ttl_seconds == 1800
    assert policy.suspend is True
    assert policy.forecast == ForecastSpec("sum(rate(x[5m]))", 50.0, 7200, 86400, 60, 0.9, 120)
    assert isinstance(policy.forecast.capacity_per_replica, float)
    assert policy.last_applied_time == dt.datetime(2026, 11, 26, 20, 0, tzinfo=UTC)


def test_policy_defaults():
    policy = Policy.parse(policy_body())
    assert policy.max_step_up is None and policy.max_step_down is None
    assert policy.cooldown_seconds == 600  # the CRD's default (test_crd_defaults.py checks them all)
    assert policy.proposal_ttl_seconds == 3600
    assert policy.suspend is False
    assert policy.forecast is None
    assert policy.last_applied_time is None


def test_policy_without_metadata_or_status_still_parses():
    body = policy_body()
    del body["metadata"]
    policy = Policy.parse(body)
    assert (policy.namespace, policy.name, policy.uid, policy.generation) == ("", "", "", 0)


def test_policy_min_equal_max_and_zero_are_allowed():
    policy = Policy.parse(policy_body(minReplicas=0, maxReplicas=0))
    assert (policy.min_replicas, policy.max_replicas) == (0, 0)


def _without(body: dict, key: str) -> dict:
    body = copy.deepcopy(body)
    del body["spec"][key]
    return body


@pytest.mark.parametrize(
    "body, message",
    [
        pytest.param({"metadata": {"name": "web"}}, "spec is missing", id="no-spec"),
        pytest.param({"spec": ["minReplicas", 1]}, "spec is missing", id="spec-not-object"),
        pytest.param(_without(policy_body(), "minReplicas"), "spec.minReplicas is required", id="no-min"),
        pytest.param(_without(policy_body(), "maxReplicas"), "spec.maxReplicas is required", id="no-max"),
        pytest.param(policy_body(minReplicas="2"), "spec.minReplicas must be an integer, got '2'", id="min-string"),
        pytest.param(policy_body(minReplicas=2.0), "spec.minReplicas must be an integer, got 2.0", id="min-float"),
        pytest.param(policy_body(maxReplicas=True), "spec.maxReplicas must be an integer, got True", id="max-bool"),
        pytest.param(policy_body(minReplicas=-1), "spec.minReplicas must be >= 0, got -1", id="min-negative"),
        pytest.param(policy_body(minReplicas=5, maxReplicas=3),
                     r"spec.maxReplicas \(3\) is below spec.minReplicas \(5\)", id="max-below-min"),
        pytest.param(policy_body(maxStepUp=0), "spec.maxStepUp must be >= 1, got 0", id="step-up-zero"),
        pytest.param(policy_body(maxStepDown=False), "spec.maxStepDown must be an integer, got False",
                     id="step-down-bool"),
        pytest.param(policy_body(cooldownSeconds=-5), "spec.cooldownSeconds must be >= 0, got -5", id="cooldown-negative"),
        pytest.param(policy_body(proposalTTLSeconds=0), "spec.proposalTTLSeconds must be >= 1, got 0", id="ttl-zero"),
        pytest.param(policy_body(suspend="false"), "spec.suspend must be true or false", id="suspend-string"),
        pytest.param(policy_body(targetRef={"apiVersion": "apps/v1", "kind": "Deployment"}),
                     "spec.targetRef.name must be a non-empty string", id="target-without-name"),
        pytest.param(policy_body(forecast="sum(x)"), "spec.forecast must be an object", id="forecast-string"),
        pytest.param(policy_body(forecast={"query": "q"}),
                     "spec.forecast.capacityPerReplica must be a number > 0, got None", id="no-capacity"),
        pytest.param(policy_body(forecast={"query": "q", "capacityPerReplica": 0}),
                     "capacityPerReplica must be a number > 0, got 0", id="capacity-zero"),
        pytest.param(policy_body(forecast={"query": "q", "capacityPerReplica": True}),
                     "capacityPerReplica must be a number > 0, got True", id="capacity-bool"),
        pytest.param(policy_body(forecast={"query": "q", "capacityPerReplica": 50, "confidence": 1.0}),
                     r"spec.forecast.confidence must be in \[0.5, 1\), got 1.0", id="confidence-one"),
        pytest.param(policy_body(forecast={"query": "q", "capacityPerReplica": 50, "confidence": 0.4}),
                     "confidence must be in", id="confidence-low"),
        pytest.param(policy_body(forecast={"capacityPerReplica": 50}),
                     "spec.forecast.query must be a non-empty string", id="no-query"),
        pytest.param(policy_body(forecast={"query": "q", "capacityPerReplica": 50, "horizonSeconds": 59}),
                     "spec.forecast.horizonSeconds must be >= 60, got 59", id="horizon-short"),
        pytest.param(policy_body(forecast={"query": "q", "capacityPerReplica": 50, "stepSeconds": 0}),
                     "spec.forecast.stepSeconds must be >= 1, got 0", id="step-zero"),
    ],
)
def test_policy_refusals_name_the_field(body, message):
    with pytest.raises(InvalidObject, match=message):
        Policy.parse(body)


def test_policy_with_a_bad_last_applied_time_is_refused():
    body = policy_body()
    body["status"] = {"lastAppliedTime": "soon"}
    with pytest.raises(InvalidObject, match="'soon' is not an RFC 3339 timestamp"):
        Policy.parse(body)


def test_invalid_object_is_a_value_error():
    assert issubclass(InvalidObject, ValueError)


# -- decision annotations ---------------------------------------------------------------

def test_decision_reads_every_annotation_and_trims_names():
    decision = DecisionAnnotations.parse({
        APPROVED: "true", APPROVED_BY: " alice ", REJECTED: "false", REJECTED_BY: "",
        PROPOSED_BY: "system:serviceaccount:scalegate:forecaster", APPROVAL_REF: "!42", DECISION_REASON: " ok ",
    })
    assert decision == DecisionAnnotations(approved=True, approved_by="alice", rejected=False, rejected_by="",
                                           proposed_by="system:serviceaccount:scalegate:forecaster",
                                           approval_ref="!42", reason="ok")


@pytest.mark.parametrize("value", ["yes", "1", "", "True-ish", " True ", "TRUE", "true ", "True"])
def test_only_true_means_true(value):
    """Exactly the value the contract names and the admission policy accepts: anything
    else decides nothing (the API server would have refused it)."""
    decision = DecisionAnnotations.parse({APPROVED: value, REJECTED: value})
    assert not decision.approved and not decision.rejected


@pytest.mark.parametrize("annotations", [None, {}], ids=["none", "empty"])
def test_no_annotations_is_no_decision(annotations):
    decision = DecisionAnnotations.parse(annotations)
    assert not decision.approved and not decision.rejected
    assert decision.approved_by == decision.rejected_by == decision.proposed_by == ""


# -- ScalingProposal --------------------------------------------------------------------

def test_proposal_parses_a_full_body():
    body = proposal_body(forecast={"model": "holt-winters", "upperBound": 410.0})
    body["metadata"]["annotations"].update({APPROVED: "true", APPROVED_BY: "alice", APPROVAL_REF: "!42"})
    body["status"] = {"phase": "Approved"}
    proposal = Proposal.parse(body)
    assert (proposal.namespace, proposal.name, proposal.uid, proposal.generation) == (
        "shop", "web-7f3a2", "prop-uid", 1)
    assert proposal.created == T0
    assert proposal.policy_name == "web"
    assert proposal.target == TargetRef("apps/v1", "Deployment", "web")
    assert (proposal.current_replicas, proposal.replicas) == (4, 9)
    assert proposal.valid_until == dt.datetime(2026, 11, 26, 21, 30, tzinfo=UTC)
    assert proposal.reason == "peak of 410 req/s expected at 21:10"
    assert proposal.decision.approved and proposal.decision.approved_by == "alice"
    assert proposal.decision.approval_ref == "!42"
    assert proposal.decision.proposed_by == "system:serviceaccount:scalegate:forecaster"
    assert proposal.phase == Phase.APPROVED and not proposal.terminal
    assert proposal.forecast == Evidence(model="holt-winters", upper_bound=410.0)


def test_proposal_defaults():
    body = proposal_body()
    del body["spec"]["reason"]
    del body["metadata"]["creationTimestamp"]
    proposal = Proposal.parse(body)
    assert proposal.phase == ""
    assert proposal.created is None
    assert proposal.reason == ""
    assert proposal.forecast == Evidence()
    assert not proposal.terminal


@pytest.mark.parametrize("phase", sorted(Phase.TERMINAL))
def test_terminal_phases(phase):
    body = proposal_body()
    body["status"] = {"phase": phase}
    assert Proposal.parse(body).terminal


@pytest.mark.parametrize("phase", [Phase.PENDING, Phase.APPROVED, ""])
def test_active_phases(phase):
    body = proposal_body()
    body["status"] = {"phase": phase}
    assert not Proposal.parse(body).terminal


def test_zero_replicas_is_a_valid_proposal():
    assert Proposal.parse(proposal_body(replicas=0)).replicas == 0


@pytest.mark.parametrize(
    "body, message",
    [
        pytest.param({"metadata": {"name": "x"}}, "spec is missing", id="no-spec"),
        pytest.param({"spec": None}, "spec is missing", id="null-spec"),
        pytest.param(proposal_body(policyRef=None), "spec.policyRef must be an object with a name", id="no-policyRef"),
        pytest.param(proposal_body(policyRef="web"), "spec.policyRef must be an object", id="policyRef-string"),
        pytest.param(proposal_body(policyRef={}), "spec.policyRef.name must be a non-empty string", id="policyRef-no-name"),
        pytest.param(proposal_body(validUntil=None), "spec.validUntil is required", id="no-validUntil"),
        pytest.param(proposal_body(validUntil="tomorrow"), "'tomorrow' is not an RFC 3339 timestamp",
                     id="bad-validUntil"),
        pytest.param(proposal_body(validUntil=1764189000), "expected an RFC 3339 timestamp", id="int-validUntil"),
        pytest.param(proposal_body(targetRef=None), "spec.targetRef must be an object", id="no-targetRef"),
        pytest.param(proposal_body(currentReplicas=None), "spec.currentReplicas is required", id="no-current"),
        pytest.param(proposal_body(replicas="9"), "spec.replicas must be an integer, got '9'", id="replicas-string"),
        pytest.param(proposal_body(replicas=9.5), "spec.replicas must be an integer, got 9.5", id="replicas-float"),
        pytest.param(proposal_body(replicas=True), "spec.replicas must be an integer, got True", id="replicas-bool"),
        pytest.param(proposal_body(currentReplicas=False), "spec.currentReplicas must be an integer, got False",
                     id="current-bool"),
        pytest.param(proposal_body(replicas=-1), "spec.replicas must be >= 0, got -1", id="replicas-negative"),
        pytest.param(proposal_body(currentReplicas=-3), "spec.currentReplicas must be >= 0, got -3",
                     id="current-negative"),
    ],
)
def test_proposal_refusals_name_the_field(body, message):
    with pytest.raises(InvalidObject, match=message):
        Proposal.parse(body)


def test_unknown_phase_is_refused():
    body = proposal_body()
    body["status"] = {"phase": "Done"}
    with pytest.raises(InvalidObject, match="status.phase 'Done' is not a known phase"):
        Proposal.parse(body)


def test_bad_creation_timestamp_is_refused():
    body = proposal_body()
    body["metadata"]["creationTimestamp"] = "a while ago"
    with pytest.raises(InvalidObject, match="'a while ago' is not an RFC 3339 timestamp"):
        Proposal.parse(body)


# -- status is a record, not an authority ------------------------------------------------

def test_an_apply_intent_in_status_is_not_read():
    """The operator's intent lives in the annotation scalegate.io/applying (records.py): a
    status.applying, whatever it holds, neither makes the proposal invalid nor means anything."""
    body = proposal_body()
    body["status"] = {"phase": "Approved", "applying": {"replicas": "nine", "previousReplicas": 4}}
    proposal = Proposal.parse(body)
    assert not hasattr(proposal, "intent") and proposal.phase == Phase.APPROVED



def test_manifest_yaml_quotes_what_any_yaml_reader_could_take_for_a_number():
    words = ["20e63", "1e5", "0o17", "1_0", "0x1F", ".5", "-3", "web", "web-1e5", "2026-11-30T07:00:00Z"]
    text = manifest_yaml({"metadata": {"labels": {str(i): w for i, w in enumerate(words)}}})
    for word in ["20e63", "1e5", "0o17", "1_0", "0x1F", ".5", "-3"]:
        assert f"'{word}'" in text, text
    assert "web-1e5" in text and "'web-1e5'" not in text  # words stay plain
    assert yaml.safe_load(text)["metadata"]["labels"] == {str(i): w for i, w in enumerate(words)}
