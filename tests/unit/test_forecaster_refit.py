"""The forecaster refits a policy's model only when it is due (issue 16, cheap rounds):
rounds between reuse the kept forecast, sized for the horizon from their own now."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from scalegate import forecaster as forecaster_module
from scalegate import metrics
from scalegate.forecast import refit
from scalegate.forecaster import Forecaster
from scalegate.kube import Kube, Scale

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 11, 26, 12, 0, 30, tzinfo=dt.timezone.utc)
MIN = dt.timedelta(minutes=1)


def policy_body(name: str = "web", **forecast) -> dict:
    return {"metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "generation": 1},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": 1, "maxReplicas": 100, "cooldownSeconds": 0, "proposalTTLSeconds": 1800,
                     "forecast": {"query": f'load{{app="{name}"}}', "capacityPerReplica": 10.0, **forecast}}}


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


class Source:
    """A noisy daily wave up to the clock's now, without noise after T0 (so that no sample
    breaks a kept forecast's band by chance); `surge_from` adds load from a time on."""

    def __init__(self, clock: Clock):
        self.clock, self.surge_from, self.calls = clock, None, []
        index = pd.date_range(end=T0 + 3 * 60 * MIN, periods=15 * 288, freq="5min")
        hours = (index.hour + index.minute / 60).to_numpy()
        noise = np.random.default_rng(11).normal(0, 3, len(index)) * (index < T0)
        self.load = pd.Series(100 + 60 * np.sin(2 * np.pi * hours / 24) + noise, index=index)

    def fetch(self, query, lookback_seconds, step_seconds, end=None):
        self.calls.append(lookback_seconds)
        load = self.load.copy()
        if self.surge_from is not None:
            load[load.index >= self.surge_from] += 500
        return load[(load.index < self.clock.now) & (load.index >= self.clock.now - dt.timedelta(days=14))]


@pytest.fixture
def setup(mocker):
    clock = Clock()
    kube = mocker.create_autospec(Kube, instance=True)
    kube.whoami.return_value = "system:serviceaccount:scalegate:forecaster"
    kube.get_scale.return_value = Scale(replicas=3, resource_version="1", uid="uid")
    kube.iter_proposals.return_value = iter([])
    source = Source(clock)
    fits = mocker.spy(forecaster_module, "fit_policy")
    return clock, source, fits, lambda **kw: Forecaster(kube=kube, source=source, clock=clock, **kw)


def decisions(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("scalegate_forecast_refit_decisions_total", {"reason": reason}) or 0


def test_rounds_between_refits_reuse_the_kept_forecast(setup):
    clock, _, fits, make = setup
    forecaster = make()
    kept_before = decisions("Kept")
    first = forecaster.run_policy(policy_body())
    assert first.outcome == "proposed" and fits.call_count == 1
    # the policy's own refit time, at most an hour after the fit (its phase spreads refits)
    refit_at = refit.next_refit(T0, 3600, refit.phase_of("shop/web", 3600)).to_pydatetime()
    rounds = [T0 + k * 5 * MIN for k in range(1, 13) if T0 + k * 5 * MIN < refit_at]
    for at in rounds:
        clock.now = at
        result = forecaster.run_policy(policy_body())
        assert result.outcome == "proposed", result.message
        # sized for the hour from this round's now, from the samples of the kept forecast
        proposal = result.proposal["spec"]
        assert proposal["forecast"]["horizonSeconds"] == 3600
        assert proposal["forecast"]["window"]["end"] == first.proposal["spec"]["forecast"]["window"]["end"]
    assert fits.call_count == 1 and decisions("Kept") == kept_before + len(rounds)
    clock.now = refit_at
    assert forecaster.run_policy(policy_body()).refit == "IntervalPassed"
    assert fits.call_count == 2


def test_the_kept_forecast_is_the_fits_own_band_over_the_hour_from_now(setup):
    clock, _, _, make = setup
    forecaster = make()
    forecaster.run_policy(policy_body())
    kept = forecaster._kept[("shop", "web")].forecast
    clock.now = T0 + 30 * MIN
    result = forecaster.run_policy(policy_body())
    times = pd.date_range(kept.window_end + pd.Timedelta(minutes=5), periods=len(kept.upper_band), freq="5min")
    inside = (times >= clock.now) & (times < clock.now + dt.timedelta(hours=1))
    upper = result.proposal["spec"]["forecast"]["upperBound"]
    assert upper == pytest.approx(max(np.asarray(kept.upper_band)[inside]))
    assert result.proposal["spec"]["replicas"] == int(np.ceil(upper / 10.0))


def test_load_above_the_kept_band_refits_at_once(setup):
    clock, source, fits, make = setup
    forecaster = make()
    forecaster.run_policy(policy_body())
    clock.now = T0 + 15 * MIN
    source.surge_from = T0 + 5 * MIN
    result = forecaster.run_policy(policy_body())
    assert fits.call_count == 2
    assert result.proposal["spec"]["forecast"]["window"]["end"] > "2026-11-26T12:05"


def test_the_capacity_changes_the_sizing_not_the_fit_and_the_query_refits(setup):
    clock, _, fits, make = setup
    forecaster = make()
    forecaster.run_policy(policy_body())
    clock.now = T0 + 15 * MIN
    doubled = forecaster.run_policy(policy_body(capacityPerReplica=20.0))
    assert fits.call_count == 1 and doubled.proposal["spec"]["forecast"]["capacityPerReplica"] == 20.0
    forecaster.run_policy(policy_body(query='sum(load{app="web"})'))
    assert fits.call_count == 2


def test_a_refit_interval_of_zero_fits_every_round_as_before(setup):
    clock, _, fits, make = setup
    forecaster = make(refit_interval=0)
    for minutes in (0, 15, 30):
        clock.now = T0 + minutes * MIN
        assert forecaster.run_policy(policy_body()).outcome == "proposed"
    assert fits.call_count == 3
    assert ("shop", "web") not in forecaster._kept


def test_a_failed_fit_keeps_nothing(setup, mocker):
    clock, _, fits, make = setup
    forecaster = make()
    forecaster.run_policy(policy_body())
    clock.now = T0 + 60 * MIN
    fits.side_effect = ZeroDivisionError("boom")
    assert forecaster.run_policy(policy_body()).reason == "FitFailed"
    assert ("shop", "web") not in forecaster._kept
    fits.side_effect = None
    clock.now = T0 + 65 * MIN
    forecaster.run_policy(policy_body())
    assert fits.call_count == 3  # refitted, not served from the forecast that was replaced


def test_plan_rounds_between_refits_judge_the_open_plan_without_fitting(setup):
    clock, _, fits, make = setup
    forecaster = make()
    plan = {"planHorizonSeconds": 6 * 3600, "planStepSeconds": 3600}
    first = forecaster.run_policy(policy_body(**plan))
    assert first.outcome == "proposed" and first.reason == "Proposed"
    forecaster.kube.iter_proposals.return_value = iter([{**first.proposal, "status": {"phase": "Pending"}}])
    forecaster.kube.iter_proposals.reset_mock()
    clock.now = T0 + 20 * MIN
    again = forecaster.run_policy(policy_body(**plan))
    assert fits.call_count == 1
    assert forecaster.kube.iter_proposals.call_count == 1  # the re-plan rule still judged the open plan
    assert (again.outcome, again.reason) == ("unchanged", "PlanHolds"), again.message


def test_forget_drops_what_is_kept_for_other_policies(setup):
    _, _, _, make = setup
    forecaster = make()
    forecaster.run_policy(policy_body("a"))
    forecaster.run_policy(policy_body("b"))
    forecaster.forget({("shop", "b")})
    assert set(forecaster._kept) == {("shop", "b")} and set(forecaster._previous) == {("shop", "b")}
