"""Metrics that mean what their names say: reconcile errors counted by kind when the work
queue retries them, the forecaster's last successful round set only when a round did its
work, and a forecast's failure reason naming what failed (Prometheus, the API server, or
the forecaster itself)."""

from __future__ import annotations

import asyncio
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from scalegate import forecaster as forecaster_module
from scalegate import metrics
from scalegate.forecast.series import ForecastError
from scalegate.forecaster import Forecaster, RoundResult, round_succeeded
from scalegate.kube import Conflict, Forbidden, Kube, Scale, Unavailable
from scalegate.model import APPROVED, APPROVED_BY, POLICY_LABEL, PROPOSED_BY, format_time
from scalegate.reconciler import Reconciler
from scalegate.workqueue import WorkQueue

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def sample(name: str, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def reconcile_errors(kind: str) -> float:
    return sample("scalegate_reconcile_errors_total", error=kind)


def failures(policy: str, reason: str) -> float:
    return sample("scalegate_forecast_failures_total", namespace="shop", policy=policy, reason=reason)


# -- scalegate_reconcile_errors_total --------------------------------------------------------
def pending_proposal() -> dict:
    return {
        "apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingProposal",
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "uid-web-1", "generation": 1,
                     "resourceVersion": "7", "creationTimestamp": format_time(NOW - dt.timedelta(minutes=5)),
                     "labels": {POLICY_LABEL: "web"}, "annotations": {PROPOSED_BY: "forecaster"}},
        "spec": {"policyRef": {"name": "web"},
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "currentReplicas": 4, "replicas": 9,
                 "validUntil": format_time(NOW + dt.timedelta(hours=1)), "reason": "peak ahead"},
    }


@pytest.fixture
def kube(mocker):
    kube = mocker.create_autospec(Kube, instance=True)
    kube.list_policy_proposals.return_value = []
    return kube


def test_an_api_error_the_queue_retries_is_counted_by_kind(kube):
    """Through the work queue, as the operator runs it: the first reconcile meets an
    unavailable API server and fails, the queue retries it with backoff, the second works."""
    kube.get_proposal.side_effect = [Unavailable("get proposal shop/web-1", "HTTP 503"), None]
    reconciler = Reconciler(kube, clock=lambda: NOW)
    before = reconcile_errors("Unavailable")

    async def main() -> None:
        done = asyncio.Event()

        async def work(key):
            try:
                return reconciler.reconcile(*key)
            finally:
                if kube.get_proposal.call_count == 2:
                    done.set()

        queue = WorkQueue(work, concurrency=1, min_backoff=0.01)
        queue.start()
        queue.add(("shop", "web-1"))
        await asyncio.wait_for(done.wait(), timeout=10)
        await queue.stop()

    asyncio.run(main())
    assert kube.get_proposal.call_count == 2  # retried
    assert reconcile_errors("Unavailable") == before + 1


def test_a_conflict_on_the_status_write_is_counted_and_decided_again(kube):
    kube.patch_proposal_status.side_effect = Conflict("update status of proposal shop/web-1", "changed")
    before = reconcile_errors("Conflict")
    again = Reconciler(kube, clock=lambda: NOW).reconcile("shop", "web-1", pending_proposal())
    assert again == 0.0  # from a fresh read, at once
    assert reconcile_errors("Conflict") == before + 1


def test_a_refusal_and_an_internal_error_are_counted_apart(kube):
    reconciler = Reconciler(kube, clock=lambda: NOW)
    body = pending_proposal()
    body["metadata"]["labels"] = {}  # the reconciler labels it first
    kube.label_proposal.side_effect = Forbidden("label proposal shop/web-1", "no patch for you", status=403)
    forbidden, internal = reconcile_errors("Forbidden"), reconcile_errors("Internal")
    with pytest.raises(Forbidden):
        reconciler.reconcile("shop", "web-1", body)
    kube.list_policy_proposals.side_effect = KeyError("metadata")
    with pytest.raises(KeyError):
        reconciler.reconcile("shop", "web-1", pending_proposal())
    assert (reconcile_errors("Forbidden"), reconcile_errors("Internal")) == (forbidden + 1, internal + 1)


def test_a_reconcile_that_works_counts_nothing(kube):
    body = pending_proposal()
    body["metadata"]["annotations"].update({APPROVED: "true", APPROVED_BY: "forecaster"})  # self-approval
    kube.patch_proposal_status.return_value = {"metadata": {"resourceVersion": "8"}}
    before = {kind: reconcile_errors(kind) for kind in ("Unavailable", "Conflict", "Forbidden", "Internal")}
    Reconciler(kube, clock=lambda: NOW).reconcile("shop", "web-1", body)
    assert kube.patch_proposal_status.called
    assert {kind: reconcile_errors(kind) for kind in before} == before


# -- the forecaster --------------------------------------------------------------------------
def policy_body(name: str) -> dict:
    return {"metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "generation": 1},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": 1, "maxReplicas": 50,
                     "forecast": {"query": f'load{{app="{name}"}}', "capacityPerReplica": 10.0}}}


class Source:
    """Prometheus as the test wants it: down for some apps, else `days` of a daily wave."""

    def __init__(self, down: set[str] = frozenset(), days: float = 0.5):
        self.down, self.days = down, days

    def fetch(self, query: str, lookback_seconds: int, step_seconds: int, end=None) -> pd.Series:
        if any(f'"{app}"' in query for app in self.down):
            raise ForecastError("MetricsUnavailable", "Prometheus at http://prom:9090 is unreachable")
        index = pd.date_range(end=NOW - dt.timedelta(minutes=5), periods=int(self.days * 288), freq="5min")
        hours = (index.hour + index.minute / 60).to_numpy()
        return pd.Series(100 + 60 * np.sin(2 * np.pi * hours / 24), index=index)


@pytest.fixture
def make_forecaster(mocker):
    def make(source: Source, **kwargs) -> Forecaster:
        kube = mocker.create_autospec(Kube, instance=True)
        kube.whoami.return_value = "system:serviceaccount:scalegate:forecaster"
        kube.get_scale.return_value = Scale(replicas=1, resource_version="1", uid="uid")
        return Forecaster(kube=kube, source=source, clock=lambda: NOW, **kwargs)
    return make


def last_round() -> float:
    return sample("scalegate_forecaster_last_successful_round_timestamp_seconds")


def test_a_round_where_every_policy_failed_is_not_successful(make_forecaster):
    metrics.LAST_SUCCESSFUL_ROUND.set(0)
    results = make_forecaster(Source(down={"a", "b"})).run_round([policy_body("a"), policy_body("b")])
    assert {(r.outcome, r.reason) for r in results} == {("failed", "MetricsUnavailable")}
    assert last_round() == 0


def test_a_round_with_one_policy_evaluated_is_successful(make_forecaster):
    """Refused on its own data (too little of it) is a verdict: the forecaster worked."""
    metrics.LAST_SUCCESSFUL_ROUND.set(0)
    results = make_forecaster(Source(down={"a"})).run_round([policy_body("a"), policy_body("b")])
    assert {r.policy: r.reason for r in results} == {"a": "MetricsUnavailable", "b": "InsufficientData"}
    assert last_round() > 0


@pytest.mark.parametrize("outcomes, succeeded", [
    ([("proposed", "Proposed")], True),
    ([("unchanged", "NoChange"), ("failed", "ApiError")], True),
    ([("failed", "TooUncertain")], True),
    ([("failed", "InvalidPolicy")], True),
    ([("skipped", "Suspended")], False),
    ([("failed", "FitFailed"), ("failed", "ForecastFailed"), ("failed", "ApiError")], False),
    ([], False),
])
def test_round_succeeded(outcomes, succeeded):
    assert round_succeeded([RoundResult("shop", f"p{i}", o, r, "") for i, (o, r) in enumerate(outcomes)]) == succeeded


def test_an_internal_error_in_fitting_is_fit_failed_not_metrics_unavailable(make_forecaster, mocker):
    mocker.patch.object(forecaster_module, "forecast_series", side_effect=ZeroDivisionError("division by zero"))
    before = failures("fit", "FitFailed")
    result = make_forecaster(Source()).run_round([policy_body("fit")])[0]
    assert (result.outcome, result.reason) == ("failed", "FitFailed")
    assert "ZeroDivisionError" in result.message
    assert failures("fit", "FitFailed") == before + 1 and failures("fit", "MetricsUnavailable") == 0


def test_errors_past_the_forecast_name_the_api_server_or_the_forecaster(make_forecaster, tmp_path):
    """An API refusal when creating the proposal is ApiError; our own error writing it
    (here: a GitOps output directory that is a file) is ForecastFailed. Neither is
    MetricsUnavailable, and each reaches the metric and the policy's condition."""
    before = {key: failures(*key) for key in (("api", "ApiError"), ("own", "ForecastFailed"))}
    refusing = make_forecaster(Source(days=3))
    refusing.kube.create_proposal.side_effect = Forbidden("create proposal shop/api", "no create", status=403)
    result = refusing.run_round([policy_body("api")])[0]
    assert (result.outcome, result.reason) == ("failed", "ApiError")
    assert failures("api", "ApiError") == before["api", "ApiError"] + 1
    assert failures("api", "MetricsUnavailable") == 0
    ready = refusing.kube.patch_policy_status.call_args.args[2]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "ApiError")

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    writing = make_forecaster(Source(days=3), output="yaml", output_dir=not_a_dir)
    result = writing.run_round([policy_body("own")])[0]
    assert (result.outcome, result.reason) == ("failed", "ForecastFailed")
    assert result.message.startswith("internal error: ")
    assert failures("own", "ForecastFailed") == before["own", "ForecastFailed"] + 1
    assert failures("own", "MetricsUnavailable") == 0
