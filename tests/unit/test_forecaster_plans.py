"""The forecaster with plans: a plan proposed when the re-plan rule says so against the
policy's newest open plan, a plan the operator accepts, and PlanBreached once per step."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from scalegate import metrics
from scalegate.decision import check_plan
from scalegate.forecaster import Forecaster, open_plans
from scalegate.kube import Kube, Scale
from scalegate.model import OPEN_PROPOSALS_FIELD_SELECTOR, Policy, Proposal

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 11, 26, 12, 0, 30, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)


def policy_body(**spec) -> dict:
    body = {
        "apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingPolicy",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web", "generation": 1},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 50, "cooldownSeconds": 600, "proposalTTLSeconds": 1800,
                 "forecast": {"query": 'load{app="web"}', "capacityPerReplica": 10.0, "intervalSeconds": 900,
                              "lookbackSeconds": 14 * 86400, "stepSeconds": 300,
                              "planHorizonSeconds": 86400, "planStepSeconds": 3600}},
    }
    body["spec"].update(spec)
    return body


def daily_load(days: float = 14, surge_from: dt.datetime | None = None) -> pd.Series:
    index = pd.date_range(end=NOW - dt.timedelta(seconds=30), periods=int(days * 288), freq="5min")
    hours = (index.hour + index.minute / 60).to_numpy()
    values = 100 + 60 * np.sin(2 * np.pi * hours / 24) + np.random.default_rng(7).normal(0, 3, len(index))
    if surge_from is not None:
        values[index >= surge_from] += 400
    return pd.Series(values, index=index)


class Source:
    def __init__(self, series):
        self.series = series

    def fetch(self, query, lookback_seconds, step_seconds, end=None):
        return self.series


@pytest.fixture
def kube(mocker):
    kube = mocker.create_autospec(Kube, instance=True)
    kube.whoami.return_value = "system:serviceaccount:scalegate:forecaster"
    kube.get_scale.return_value = Scale(replicas=10, resource_version="1", uid="uid")
    kube.iter_proposals.return_value = iter([])
    return kube


def forecaster(kube, series=None) -> Forecaster:
    return Forecaster(kube=kube, source=Source(daily_load() if series is None else series), clock=lambda: NOW)


def plan_body(name: str, phase: str, start: dt.datetime, replicas: list[int], *, created: dt.datetime,
              upper: float | None = None, valid_until: dt.datetime | None = None) -> dict:
    schedule = [{"at": (start + k * HOUR).strftime("%Y-%m-%dT%H:%M:%SZ"), "replicas": r}
                | ({"upperBound": upper} if upper is not None else {}) for k, r in enumerate(replicas)]
    return {
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}",
                     "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"), "labels": {"scalegate.io/policy": "web"}},
        "spec": {"policyRef": {"name": "web"}, "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "currentReplicas": 10, "replicas": replicas[0], "reason": "test", "schedule": schedule,
                 "endsAt": (start + len(replicas) * HOUR).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "validUntil": ((valid_until or start + HOUR)).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "status": {"phase": phase},
    }


def test_without_an_open_plan_a_day_plan_is_proposed_that_the_operator_accepts(kube):
    body = policy_body(maxStepUp=2, maxStepDown=2)
    result = forecaster(kube).run_policy(body)
    assert result.outcome == "proposed", result.message
    manifest = kube.create_proposal.call_args.args[1]
    spec = manifest["spec"]
    # The policy's steps are at 35 past each hour (its own offset, plans.step_offset): a day
    # after the boundary before now, 11:35, the plan ends
    assert spec["reason"].startswith("NoActivePlan: no open plan. Plan: 24 steps of 1h over 23h 34 min from 12:00")
    assert spec["replicas"] == spec["schedule"][0]["replicas"] and spec["currentReplicas"] == 10
    assert spec["schedule"][0]["at"] == "2026-11-26T12:00:30Z"  # the first step: now
    assert spec["schedule"][1]["at"] == "2026-11-26T12:35:00Z" and spec["endsAt"] == "2026-11-27T11:35:00Z"
    assert all("upperBound" in step and "predictedPeak" in step for step in spec["schedule"])
    assert spec["forecast"]["horizonSeconds"] == 84870
    kube.iter_proposals.assert_called_once_with("shop", selector="scalegate.io/policy=web",
                                                field_selector=OPEN_PROPOSALS_FIELD_SELECTOR)
    proposal = Proposal.parse(manifest | {"status": {}})  # the CRD's rules for a plan, as model reads them
    assert check_plan(proposal, Policy.parse(body)) is None  # bounds, step limits, spacing: as approved
    # a daily cycle of 40..160 at 10 per replica: the plan follows it, within the step limit of 2
    replicas = [step.replicas for step in proposal.schedule]
    assert max(replicas) >= 16 and min(replicas) <= 6
    assert all(abs(b - a) <= 2 for a, b in zip([10] + replicas, replicas, strict=False))


def proposed_now(kube, phase: str, policy: dict | None = None) -> dict:
    """The plan the forecaster proposes now (without an open plan), as stored in `phase`."""
    kube.iter_proposals.return_value = iter([])
    forecaster(kube).run_policy(policy or policy_body())
    manifest = kube.create_proposal.call_args.args[1]
    kube.create_proposal.reset_mock()
    created = {"creationTimestamp": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"), "uid": "uid-" + manifest["metadata"]["name"]}
    return manifest | {"metadata": manifest["metadata"] | created, "status": {"phase": phase}}


def test_a_plan_that_still_covers_the_forecast_is_kept(kube):
    kube.iter_proposals.return_value = iter([proposed_now(kube, "Active")])
    result = forecaster(kube).run_policy(policy_body())
    assert (result.outcome, result.reason) == ("unchanged", "PlanHolds"), result.message
    kube.create_proposal.assert_not_called()
    kube.iter_proposals.return_value = iter([])  # without it, the next round proposes again
    assert forecaster(kube).run_policy(policy_body()).reason == "Proposed"


def ending_at(body: dict, ends_at: dt.datetime) -> dict:
    spec = body["spec"]
    kept = [step for step in spec["schedule"] if step["at"] < ends_at.strftime("%Y-%m-%dT%H:%M:%SZ")]
    return body | {"spec": spec | {"schedule": kept, "endsAt": ends_at.strftime("%Y-%m-%dT%H:%M:%SZ")}}


def test_a_plan_ending_within_the_approval_time_is_followed_by_the_next(kube):
    current = proposed_now(kube, "Active")
    # 50 minutes left: more than proposalTTLSeconds (30 min) and a round (15 min), the next round is in time
    kube.iter_proposals.return_value = iter([ending_at(current, NOW + dt.timedelta(minutes=50))])
    result = forecaster(kube).run_policy(policy_body())
    assert result.reason == "PlanHolds", result.message
    # 40 minutes left: now or never
    kube.iter_proposals.return_value = iter([ending_at(current, NOW + dt.timedelta(minutes=40))])
    result = forecaster(kube).run_policy(policy_body())
    assert result.outcome == "proposed"
    assert kube.create_proposal.call_args.args[1]["spec"]["reason"].startswith(
        f"EndsSoon: plan {current['metadata']['name']} ends at 12:40 UTC")


def test_a_pending_plan_is_the_one_judged_and_the_newest_open_one_wins(kube):
    old_active = plan_body("web-1", "Active", NOW - 10 * HOUR, [2] * 24, created=NOW - 10 * HOUR)
    covering_pending = proposed_now(kube, "Pending")
    expired_pending = plan_body("web-3", "Pending", NOW - HOUR, [2] * 24, created=NOW + dt.timedelta(minutes=1),
                                valid_until=NOW - dt.timedelta(minutes=1))
    rejected = plan_body("web-4", "", NOW - HOUR, [2] * 24, created=NOW + dt.timedelta(minutes=2),
                         valid_until=NOW + HOUR)
    rejected["metadata"]["annotations"] = {"scalegate.io/rejected": "true", "scalegate.io/rejected-by": "alice"}
    bodies = [old_active, covering_pending, expired_pending, rejected]
    open_plan, active = open_plans(bodies, NOW)
    assert (open_plan.name, active.name) == (covering_pending["metadata"]["name"], "web-1")
    kube.iter_proposals.return_value = iter(bodies)
    result = forecaster(kube).run_policy(policy_body())
    assert result.reason == "PlanHolds", result.message


def cheap_policy() -> dict:
    """Capacity 2 per replica: bands several replicas wide, so a plan one replica short of the
    upper bound is not short of the predicted load."""
    body = policy_body(maxReplicas=200)
    body["spec"]["forecast"]["capacityPerReplica"] = 2.0
    return body


def short_by_one(kube, earlier_bound: float) -> dict:
    """The plan the forecaster would propose now with one replica fewer at every step (short of
    the upper bound, not of the predicted load), after a step from two hours ago whose upper
    bound was `earlier_bound` (the load then was about 100)."""
    body = proposed_now(kube, "Active", cheap_policy())
    spec = body["spec"]
    earlier = (NOW - 2 * HOUR).strftime("%Y-%m-%dT%H:%M:%SZ")
    schedule = [{"at": earlier, "replicas": spec["replicas"] - 1, "upperBound": earlier_bound}]
    schedule += [step | {"replicas": step["replicas"] - 1} for step in spec["schedule"]]
    body["spec"] = spec | {"schedule": schedule, "replicas": schedule[0]["replicas"]}
    body["metadata"] = body["metadata"] | {"name": "web-1", "uid": "uid-web-1"}
    body["status"]["steps"] = [{"at": earlier, "replicas": schedule[0]["replicas"], "outcome": "Applied",
                                "appliedAt": earlier}]
    return body


def test_a_plan_short_of_the_new_upper_bound_is_kept_without_evidence(kube):
    kube.iter_proposals.return_value = iter([short_by_one(kube, earlier_bound=1000.0)])
    result = forecaster(kube).run_policy(cheap_policy())
    assert result.reason == "PlanHolds", result.message
    kube.emit_event.assert_not_called()


def test_a_breach_is_one_event_and_makes_a_plan_short_of_the_new_bound_fall_short(kube):
    body = cheap_policy()
    active = short_by_one(kube, earlier_bound=50.0)
    before = metrics.REGISTRY.get_sample_value("scalegate_plan_breaches_total", {"namespace": "shop", "policy": "web"}) or 0
    made = forecaster(kube)
    kube.iter_proposals.return_value = iter([active])
    result = made.run_policy(body)
    assert result.outcome == "proposed", result.message
    reason = kube.create_proposal.call_args.args[1]["spec"]["reason"]
    assert reason.startswith("FallsShort: plan web-1 has") and "its own upper bound was exceeded" in reason
    event = kube.emit_event.call_args
    assert event.args[0]["name"] == "web-1" and event.args[0]["uid"] == "uid-web-1"
    assert event.args[1:3] == ("Warning", "PlanBreached")
    assert "exceeded the upper bound 50 of the step at 10:00 UTC" in event.args[3]
    after = metrics.REGISTRY.get_sample_value("scalegate_plan_breaches_total", {"namespace": "shop", "policy": "web"})
    assert after == before + 1

    kube.iter_proposals.return_value = iter([active])
    made.run_policy(body)  # the same step again: no second Event, no second count
    assert kube.emit_event.call_count == 1
    assert metrics.REGISTRY.get_sample_value("scalegate_plan_breaches_total", {"namespace": "shop", "policy": "web"}) == after


# -- what a round writes at scale (issue 16) -------------------------------------------------
def test_a_round_lists_the_open_proposals_once_per_namespace_not_once_per_policy(kube):
    active = proposed_now(kube, "Active")
    superseded = proposed_now(kube, "Superseded") | {"metadata": active["metadata"] | {"name": "web-old"}}
    api = policy_body() | {"metadata": {"name": "api", "namespace": "shop", "uid": "uid-api", "generation": 1}}
    other = policy_body() | {"metadata": {"name": "web", "namespace": "other", "uid": "uid-o", "generation": 1}}
    kube.iter_proposals.reset_mock()
    kube.iter_proposals.side_effect = lambda namespace, **_: iter([superseded, active] if namespace == "shop" else [])
    results = {(r.namespace, r.policy): r for r in forecaster(kube).run_round([policy_body(), api, other])}
    # one list per namespace, of the open proposals only
    assert sorted(c.args[0] for c in kube.iter_proposals.call_args_list) == ["other", "shop"]
    assert all(c.kwargs == {"field_selector": OPEN_PROPOSALS_FIELD_SELECTOR} for c in kube.iter_proposals.call_args_list)
    # web's active plan holds (its terminal one is passed over); api and other/web have none
    assert results["shop", "web"].reason == "PlanHolds", results["shop", "web"].message
    assert results["shop", "api"].reason == results["other", "web"].reason == "Proposed"
    assert {c.args[1]["spec"]["policyRef"]["name"] for c in kube.create_proposal.call_args_list} == {"api", "web"}


def test_a_round_whose_list_fails_lets_each_policy_list_its_own(kube):
    from scalegate.kube import KubeError

    active = proposed_now(kube, "Active")
    calls = []

    def listing(namespace, **kwargs):
        calls.append(kwargs)
        if "selector" not in kwargs:
            raise KubeError("list proposals: 503")
        return iter([active])

    kube.iter_proposals.side_effect = listing
    [result] = forecaster(kube).run_round([policy_body()])
    assert result.reason == "PlanHolds", result.message
    assert calls[-1] == {"selector": "scalegate.io/policy=web", "field_selector": OPEN_PROPOSALS_FIELD_SELECTOR}


def test_status_is_written_when_the_verdict_changes_or_it_is_an_hour_old(kube):
    from scalegate.forecaster import STATUS_REFRESH_SECONDS

    body = policy_body()
    clock = [NOW]
    later = daily_load(days=15)  # a day more: each round reads the samples up to its time
    later.index = later.index + 2 * HOUR

    class Recorded(Source):
        def fetch(self, query, lookback_seconds, step_seconds, end=None):
            return self.series[self.series.index <= pd.Timestamp(end)]

    runner = Forecaster(kube=kube, source=Recorded(later), clock=lambda: clock[0])

    def round_at(moment: dt.datetime, policy: dict) -> dict:
        """One round at `moment` on `policy` as listed; the policy as the next list shows it."""
        clock[0] = moment
        kube.iter_proposals.return_value = iter([active])
        kube.patch_policy_status.reset_mock()
        assert runner.run_policy(policy).reason == "PlanHolds"
        if not kube.patch_policy_status.called:
            return policy
        return policy | {"status": kube.patch_policy_status.call_args.args[2]}

    kube.iter_proposals.return_value = iter([])
    assert runner.run_policy(body).reason == "Proposed"  # no status yet: written, with lastProposal
    manifest = kube.create_proposal.call_args.args[1]
    active = manifest | {"metadata": manifest["metadata"] | {"creationTimestamp": "2026-11-26T12:00:30Z",
                                                             "uid": "uid-plan"}, "status": {"phase": "Active"}}
    body = body | {"status": kube.patch_policy_status.call_args.args[2]}
    assert body["status"]["lastForecastTime"] == "2026-11-26T12:00:30Z"
    assert body["status"]["lastProposal"] == manifest["metadata"]["name"]
    body = round_at(NOW + dt.timedelta(minutes=1), body)  # PlanHolds: a new verdict, written
    assert body["status"]["conditions"][0]["reason"] == "PlanHolds"
    for minutes in (15, 30, 45):  # the same verdict: not rewritten
        assert round_at(NOW + dt.timedelta(minutes=minutes), body) is body
    assert STATUS_REFRESH_SECONDS == 3600
    assert round_at(NOW + HOUR, body) is body  # 59 minutes old: not yet
    refreshed = round_at(NOW + HOUR + dt.timedelta(minutes=1), body)  # an hour old: rewritten
    assert refreshed["status"]["lastForecastTime"] == "2026-11-26T13:01:30Z"
    # a new generation of the policy is a new verdict
    changed = refreshed | {"metadata": refreshed["metadata"] | {"generation": 2}}
    assert round_at(NOW + HOUR + dt.timedelta(minutes=15), changed) is not changed


def test_status_write_needed_judges_the_verdict_not_the_message():
    from scalegate.forecaster import status_write_needed

    def status(reason="PlanHolds", message="m", ready="True", at="2026-11-26T12:00:30Z", **extra):
        return {"conditions": [{"type": "ForecastReady", "status": ready, "reason": reason, "message": message,
                                "observedGeneration": 1}], "lastForecastTime": at, "observedGeneration": 1, **extra}

    later = NOW + dt.timedelta(minutes=20)
    assert not status_write_needed(status(), status(message="other numbers"), later)
    assert status_write_needed(status(), status(reason="TooUncertain", ready="False"), later)
    assert status_write_needed(status(), status(ready="False"), later)
    assert status_write_needed(status(lastProposal="web-1"), status(lastProposal="web-2"), later)
    assert not status_write_needed(status(lastProposal="web-1"), status(), later)  # none named: kept
    assert status_write_needed(status(), status(), NOW + HOUR)  # the refresh
    assert status_write_needed(None, status(), later)
    assert status_write_needed(status(at="yesterday"), status(), later)


def test_policies_that_take_long_to_list_are_listed_less_often(kube, monkeypatch):
    import threading

    from scalegate import forecaster as module

    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])

    def slow_list(namespace):
        clock[0] += 2.0  # thousands of policies: two seconds to list
        return []

    kube.list_policies.side_effect = slow_list
    waits = []

    class OneTick(threading.Event):
        def wait(self, timeout=None):
            waits.append(timeout)
            self.set()
            return True

    module.run_forever(forecaster(kube), None, tick=5.0, stop=OneTick())
    assert waits == [2.0 * module.LIST_TIME_FACTOR]  # listing stays under a tenth of the time
