"""Garbage collection of terminal proposals (`handlers.collect_terminal_proposals`): only
terminal proposals older than the retention go, aged by finishedAt, else by creation."""

from __future__ import annotations

import datetime as dt

import pytest

from scalegate.handlers import collect_terminal_proposals
from scalegate.kube import Kube
from scalegate.model import Phase, format_time

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 26, 20, 30, tzinfo=UTC)
DAY = 86400.0
RETENTION = 7 * DAY


def ago(seconds: float) -> str:
    return format_time(NOW - dt.timedelta(seconds=seconds))


def item(name: str, phase: str | None, *, finished: str | None = None, created: str | None = None,
         namespace: str = "shop") -> dict:
    meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    if created:
        meta["creationTimestamp"] = created
    status = {}
    if phase is not None:
        status["phase"] = phase
    if finished is not None:
        status["finishedAt"] = finished
    return {"metadata": meta, "status": status}


@pytest.fixture
def kube(mocker):
    return mocker.create_autospec(Kube, instance=True)


def deleted(kube) -> list[str]:
    return [call.args[1] for call in kube.delete_proposal.call_args_list]


@pytest.mark.parametrize(
    "proposal, collected",
    [
        pytest.param(item("old-applied", Phase.APPLIED, finished=ago(8 * DAY), created=ago(9 * DAY)), True,
                     id="terminal-finished-long-ago"),
        pytest.param(item("exactly", Phase.EXPIRED, finished=ago(RETENTION), created=ago(9 * DAY)), True,
                     id="terminal-exactly-at-retention"),
        pytest.param(item("recent", Phase.REJECTED, finished=ago(RETENTION - 1), created=ago(30 * DAY)), False,
                     id="finished-recently-though-created-long-ago"),
        pytest.param(item("no-finish-old", Phase.STALE, created=ago(8 * DAY)), True,
                     id="no-finishedAt-falls-back-to-creation"),
        pytest.param(item("no-finish-new", Phase.FAILED, created=ago(DAY)), False,
                     id="no-finishedAt-created-recently"),
        pytest.param(item("no-times", Phase.SUPERSEDED), False, id="no-timestamps-at-all"),
        pytest.param(item("pending", Phase.PENDING, created=ago(30 * DAY)), False, id="pending-kept-however-old"),
        pytest.param(item("approved", Phase.APPROVED, finished=ago(30 * DAY), created=ago(30 * DAY)), False,
                     id="approved-kept"),
        pytest.param(item("new", None, created=ago(30 * DAY)), False, id="no-status-yet"),
    ],
)
def test_collects_only_old_terminal_proposals(kube, proposal, collected):
    kube.iter_proposals.return_value = iter([proposal])
    count = collect_terminal_proposals(kube, RETENTION, now=NOW)
    assert count == (1 if collected else 0)
    assert deleted(kube) == ([proposal["metadata"]["name"]] if collected else [])


@pytest.mark.parametrize("phase", sorted(Phase.TERMINAL))
def test_every_terminal_phase_is_collected(kube, phase):
    kube.iter_proposals.return_value = iter([item("p", phase, finished=ago(8 * DAY))])
    assert collect_terminal_proposals(kube, RETENTION, now=NOW) == 1


def test_a_mixed_sweep_deletes_with_the_uid_precondition(kube):
    kube.iter_proposals.return_value = iter([
        item("a", Phase.APPLIED, finished=ago(8 * DAY), namespace="shop"),
        item("b", Phase.PENDING, created=ago(8 * DAY), namespace="shop"),
        item("c", Phase.EXPIRED, finished=ago(DAY), namespace="shop"),
        item("d", Phase.REJECTED, finished=ago(10 * DAY), namespace="blog"),
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
    kube.iter_proposals.return_value = iter([
        item("old", Phase.APPLIED, finished="2000-01-01T00:00:00Z"),
        item("future", Phase.APPLIED, finished="2999-01-01T00:00:00Z"),
    ])
    assert collect_terminal_proposals(kube, RETENTION) == 1
    assert deleted(kube) == ["old"]
