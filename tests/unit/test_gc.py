"""Garbage collection of decided proposals (`handlers.collect_terminal_proposals`): aged by
the operator's own outcome record, never by status (finishedAt, phase), which a status
writer could set to make the collector delete what they may not delete."""

from __future__ import annotations

import datetime as dt

import pytest

from scalegate.handlers import collect_terminal_proposals
from scalegate.kube import Kube
from scalegate.model import Phase, format_time
from scalegate.records import OUTCOME, OutcomeRecord

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 26, 20, 30, tzinfo=UTC)
DAY = 86400.0
RETENTION = 7 * DAY


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def item(name: str, *, decided: float | None = None, phase: str | None = None, finished: float | None = None,
         created: float | None = None, valid_until: float | None = None, namespace: str = "shop",
         record_uid: str | None = None) -> dict:
    """A proposal: `decided` seconds ago by the operator's record, with `phase` and
    `finished` in status as anyone may have written them."""
    meta: dict = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "annotations": {}}
    if decided is not None:
        record = OutcomeRecord(uid=record_uid or f"uid-{name}", phase=Phase.APPLIED, reason="Applied", message="",
                               at=ago(decided))
        meta["annotations"][OUTCOME] = record.to_annotation()
    if created is not None:
        meta["creationTimestamp"] = format_time(ago(created))
    status = {}
    if phase is not None:
        status["phase"] = phase
    if finished is not None:
        status["finishedAt"] = format_time(ago(finished))
    spec = {"validUntil": format_time(ago(valid_until))} if valid_until is not None else {}
    return {"metadata": meta, "spec": spec, "status": status}


@pytest.fixture
def kube(mocker):
    return mocker.create_autospec(Kube, instance=True)


def deleted(kube) -> list[str]:
    return [call.args[1] for call in kube.delete_proposal.call_args_list]


@pytest.mark.parametrize(
    "proposal, collected",
    [
        pytest.param(item("old", decided=8 * DAY, phase=Phase.APPLIED), True, id="decided-long-ago"),
        pytest.param(item("exactly", decided=RETENTION, phase=Phase.EXPIRED), True, id="exactly-at-retention"),
        pytest.param(item("recent", decided=RETENTION - 1, phase=Phase.REJECTED, created=30 * DAY), False,
                     id="decided-recently-though-created-long-ago"),
        pytest.param(item("forged-clock", decided=60, phase=Phase.APPLIED, finished=10000 * DAY), False,
                     id="a-forged-finishedAt-does-not-age-it"),
        pytest.param(item("record-wins", decided=8 * DAY, phase=Phase.PENDING), True,
                     id="decided-though-status-says-pending"),
        pytest.param(item("forged-phase", phase=Phase.FAILED, finished=10000 * DAY, created=60, valid_until=-3600),
                     False, id="a-forged-terminal-phase-is-aged-from-creation-and-validUntil"),
        pytest.param(item("legacy", phase=Phase.STALE, created=9 * DAY, valid_until=8 * DAY), True,
                     id="decided-before-records-aged-from-validUntil"),
        pytest.param(item("legacy-new", phase=Phase.STALE, created=9 * DAY, valid_until=DAY), False,
                     id="decided-before-records-valid-until-recently"),
        pytest.param(item("no-times", phase=Phase.SUPERSEDED), False, id="no-timestamps-at-all"),
        pytest.param(item("pending", phase=Phase.PENDING, created=30 * DAY, valid_until=29 * DAY), False,
                     id="open-kept-however-old"),
        pytest.param(item("new", created=30 * DAY), False, id="no-status-yet"),
        pytest.param(item("copied", decided=30 * DAY, phase=Phase.APPLIED, record_uid="uid-other"), False,
                     id="a-record-for-another-object-is-no-clock"),
    ],
)
def test_collects_only_proposals_decided_before_the_retention(kube, proposal, collected):
    kube.iter_proposals.return_value = iter([proposal])
    count = collect_terminal_proposals(kube, RETENTION, now=NOW)
    assert count == (1 if collected else 0)
    assert deleted(kube) == ([proposal["metadata"]["name"]] if collected else [])


def test_a_mixed_sweep_deletes_with_the_uid_precondition(kube):
    kube.iter_proposals.return_value = iter([
        item("a", decided=8 * DAY, namespace="shop"),
        item("b", phase=Phase.PENDING, created=8 * DAY, namespace="shop"),
        item("c", decided=DAY, namespace="shop"),
        item("d", decided=10 * DAY, namespace="blog"),
    ])
    assert collect_terminal_proposals(kube, RETENTION, now=NOW) == 2
    kube.iter_proposals.assert_called_once_with(page_size=500)
    assert [call.args for call in kube.delete_proposal.call_args_list] == [
        ("shop", "a", "uid-a"), ("blog", "d", "uid-d")]


def test_nothing_to_collect(kube):
    kube.iter_proposals.return_value = iter([])
    assert collect_terminal_proposals(kube, RETENTION, now=NOW) == 0
    kube.delete_proposal.assert_not_called()


def test_now_defaults_to_the_current_time(kube):
    old = item("old")
    old["metadata"]["annotations"][OUTCOME] = OutcomeRecord(
        uid="uid-old", phase=Phase.APPLIED, reason="Applied", message="",
        at=dt.datetime(2000, 1, 1, tzinfo=UTC)).to_annotation()
    future = item("future")
    future["metadata"]["annotations"][OUTCOME] = OutcomeRecord(
        uid="uid-future", phase=Phase.APPLIED, reason="Applied", message="",
        at=dt.datetime(2999, 1, 1, tzinfo=UTC)).to_annotation()
    kube.iter_proposals.return_value = iter([old, future])
    assert collect_terminal_proposals(kube, RETENTION) == 1
    assert deleted(kube) == ["old"]
