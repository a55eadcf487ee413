"""Conditions follow the Kubernetes API conventions: lastTransitionTime tells when the
status last flipped, not when the condition was last written."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from scalegate.conditions import find_condition, set_condition

UTC = dt.timezone.utc
T1 = dt.datetime(2026, 11, 26, 20, 0, tzinfo=UTC)
T2 = T1 + dt.timedelta(minutes=5)
T3 = T1 + dt.timedelta(minutes=10)


def applied(status, reason="R", message="m", generation=1, now=T1, existing=None):
    return set_condition(existing, "Applied", status, reason, message, generation, now)


@pytest.mark.parametrize("existing", [None, []], ids=["none", "empty"])
def test_new_condition_has_every_field(existing):
    assert applied(False, "Applying", "scaling", 3, T1, existing) == [{
        "type": "Applied", "status": "False", "reason": "Applying", "message": "scaling",
        "lastTransitionTime": "2026-11-26T20:00:00Z", "observedGeneration": 3,
    }]


@pytest.mark.parametrize(
    "status, text",
    [(True, "True"), (False, "False"), ("Unknown", "Unknown"), ("True", "True")],
    ids=["bool-true", "bool-false", "unknown", "string-true"],
)
def test_status_is_written_as_text(status, text):
    assert applied(status)[0]["status"] == text


def test_same_status_keeps_the_transition_time_but_updates_the_rest():
    first = applied(False, "CooldownActive", "waiting", 1, T1)
    second = applied(False, "PolicySuspended", "suspended", 2, T2, existing=first)
    assert second == [{
        "type": "Applied", "status": "False", "reason": "PolicySuspended", "message": "suspended",
        "lastTransitionTime": "2026-11-26T20:00:00Z", "observedGeneration": 2,
    }]


@pytest.mark.parametrize("same_as_bool", [True, False])
def test_bool_and_text_status_are_the_same_status(same_as_bool):
    first = applied("True" if same_as_bool else "False", now=T1)
    second = applied(same_as_bool, now=T2, existing=first)
    assert second[0]["lastTransitionTime"] == "2026-11-26T20:00:00Z"


def test_flip_moves_the_transition_time_each_time():
    first = applied(False, now=T1)
    flipped = applied(True, now=T2, existing=first)
    assert flipped[0]["lastTransitionTime"] == "2026-11-26T20:05:00Z"
    back = applied(False, now=T3, existing=flipped)
    assert back[0]["lastTransitionTime"] == "2026-11-26T20:10:00Z"
    to_unknown = applied("Unknown", now=T3 + dt.timedelta(minutes=1), existing=back)
    assert to_unknown[0]["lastTransitionTime"] == "2026-11-26T20:11:00Z"


def test_existing_condition_without_transition_time_gets_one():
    existing = [{"type": "Applied", "status": "False", "reason": "X", "message": ""}]
    assert applied(False, now=T2, existing=existing)[0]["lastTransitionTime"] == "2026-11-26T20:05:00Z"


def test_other_conditions_are_kept_in_order_and_untouched():
    approved = {"type": "Approved", "status": "True", "reason": "Approved", "message": "by alice",
                "lastTransitionTime": "2026-11-26T19:00:00Z", "observedGeneration": 1}
    existing = [approved, applied(False, now=T1)[0]]
    result = applied(True, "Applied", "done", 1, T2, existing=existing)
    assert [c["type"] for c in result] == ["Approved", "Applied"]
    assert result[0] == approved
    assert result[1]["status"] == "True"


def test_a_new_type_is_appended():
    existing = applied(True, now=T1)
    result = set_condition(existing, "Approved", "Unknown", "AwaitingApproval", "waiting", 1, T2)
    assert [c["type"] for c in result] == ["Applied", "Approved"]
    assert result[1]["lastTransitionTime"] == "2026-11-26T20:05:00Z"


def test_input_is_not_mutated():
    existing = applied(False, now=T1)
    snapshot = copy.deepcopy(existing)
    result = applied(True, "Applied", "done", 2, T2, existing=existing)
    assert existing == snapshot
    assert result is not existing and result[0] is not existing[0]


def test_entries_that_are_not_objects_are_dropped():
    result = applied(True, now=T1, existing=["garbage", None, {"type": "Other", "status": "True"}])
    assert [c["type"] for c in result] == ["Other", "Applied"]


def test_accepts_any_iterable():
    result = applied(True, now=T2, existing=(c for c in applied(True, now=T1)))
    assert result[0]["lastTransitionTime"] == "2026-11-26T20:00:00Z"


def test_find_condition():
    conditions = set_condition(applied(True), "Approved", True, "Approved", "ok", 1, T1)
    assert find_condition(conditions, "Approved")["message"] == "ok"
    assert find_condition(conditions, "Applied")["status"] == "True"
    assert find_condition(conditions, "Ready") is None
    assert find_condition(None, "Applied") is None
    assert find_condition(["junk", {"type": "Applied", "status": "False"}], "Applied")["status"] == "False"
