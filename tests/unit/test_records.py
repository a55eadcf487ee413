"""The operator's records in a proposal's annotations (`scalegate.records`): written and read
back, and never trusted when they are unreadable or were written for another object."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from scalegate.model import InvalidObject, Phase
from scalegate.records import APPLY_INTENT, OUTCOME, ApplyIntent, OutcomeRecord, Records

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 26, 20, 30, tzinfo=UTC)
INTENT = ApplyIntent(uid="uid-1", replicas=9, previous_replicas=4, resource_version="100", target_uid="uid-d",
                     target_generation=7, approved_by="alice", started_at=T0)
APPLIED = OutcomeRecord(uid="uid-1", phase=Phase.APPLIED, reason="Applied", message="scaled", at=T0,
                        approved_by="alice", previous_replicas=4, applied_replicas=9)


def meta(uid: str = "uid-1", **annotations: str) -> dict:
    return {"uid": uid, "annotations": annotations}


def test_intent_round_trips_as_compact_json():
    text = INTENT.to_annotation()
    assert json.loads(text) == {"uid": "uid-1", "replicas": 9, "previousReplicas": 4, "resourceVersion": "100",
                                "targetUID": "uid-d", "targetGeneration": 7, "approvedBy": "alice",
                                "startedAt": "2026-11-26T20:30:00Z"}
    assert " " not in text
    assert ApplyIntent.from_annotation(text) == INTENT


def test_outcome_round_trips_and_leaves_out_what_it_lacks():
    assert OutcomeRecord.from_annotation(APPLIED.to_annotation()) == APPLIED
    stale = OutcomeRecord(uid="uid-1", phase=Phase.STALE, reason="TargetChanged", message="moved", at=T0)
    assert set(json.loads(stale.to_annotation())) == {"uid", "phase", "reason", "message", "at"}
    assert OutcomeRecord.from_annotation(stale.to_annotation()) == stale


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("{", "is not JSON", id="not-json"),
        pytest.param("[]", "must be a JSON object", id="list"),
        pytest.param(json.dumps({"uid": "uid-1", "phase": "Pending", "reason": "x", "at": "2026-11-26T20:30:00Z"}),
                     "'Pending' is not a terminal phase", id="open-phase"),
        pytest.param(json.dumps({"uid": "uid-1", "phase": "Applied", "reason": "x"}), "at is required",
                     id="no-time"),
        pytest.param(json.dumps({"uid": "uid-1", "phase": "Applied", "reason": "x", "at": "soon"}),
                     "'soon' is not an RFC 3339", id="bad-time"),
        pytest.param(json.dumps({"phase": "Applied", "reason": "x", "at": "2026-11-26T20:30:00Z"}),
                     "uid must be a non-empty string", id="no-uid"),
    ],
)
def test_unreadable_outcomes_are_refused(text, message):
    with pytest.raises(InvalidObject, match=message):
        OutcomeRecord.from_annotation(text)


def test_unreadable_intent_is_refused():
    raw = json.loads(INTENT.to_annotation())
    raw["replicas"] = "nine"
    with pytest.raises(InvalidObject, match="replicas must be an integer >= 0"):
        ApplyIntent.from_annotation(json.dumps(raw))


def test_records_read_from_metadata():
    assert Records.read(meta()) == Records()
    found = Records.read(meta(**{APPLY_INTENT: INTENT.to_annotation(), OUTCOME: APPLIED.to_annotation()}))
    assert (found.intent, found.outcome, found.error) == (INTENT, APPLIED, "")


def test_a_record_written_for_another_object_is_not_trusted():
    """E.g. a proposal copied with `kubectl get -o yaml | kubectl create`: the API server gives
    the copy another uid, so the record it carries means nothing and the operator acts on nothing."""
    copied = Records.read(meta(uid="uid-2", **{OUTCOME: APPLIED.to_annotation()}))
    assert copied.outcome is None and copied.intent is None
    assert "written for another object (uid uid-1, not this proposal's uid-2)" in copied.error


def test_an_unreadable_record_is_an_error_not_an_exception():
    broken = Records.read(meta(**{APPLY_INTENT: "not json"}))
    assert broken.intent is None and "is not JSON" in broken.error
