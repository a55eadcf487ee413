import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalegate.forecast import plans
from scalegate.forecast.pipeline import Forecast
from scalegate.forecast.plans import Plan, PlannedStep, build_plan, ramp, replan, step_times
from scalegate.forecast.series import ForecastError
from scalegate.rules import Bounds

pytestmark = pytest.mark.unit

T = pd.Timestamp("2026-11-27T00:00:00Z")
MIN = pd.Timedelta(minutes=1)
HOUR = pd.Timedelta(hours=1)


def forecast_of(upper, median=None, origin=T, step=300) -> Forecast:
    """A forecast whose first sample is at ``origin``, with the given per-sample bands."""
    median = upper if median is None else median
    return Forecast(
        model="test", window_start=origin - pd.Timedelta(days=2), window_end=origin - pd.Timedelta(seconds=step),
        points=576, horizon_seconds=len(upper) * step, predicted_peak=float(max(median)),
        upper_bound=float(max(upper)), lower_bound=0.0, peak_time=origin, confidence=0.95, backtest_error=1.0,
        coverage=0.975, resolution_seconds=step, step_seconds=step,
        upper_band=tuple(float(x) for x in upper), median_band=tuple(float(x) for x in median),
    )


def plan_of(replicas, start=T, every=HOUR, needed=None, upper=None, expected=None, name="", peak=None) -> Plan:
    needed = needed or [None] * len(replicas)
    upper = upper or [None] * len(replicas)
    expected = expected or [None] * len(replicas)
    peak = peak or [None] * len(replicas)
    steps = tuple(PlannedStep(start + k * every, r, p, u, n, e)
                  for k, (r, n, u, e, p) in enumerate(zip(replicas, needed, upper, expected, peak, strict=False)))
    return Plan(steps, start + len(replicas) * every, name=name)


# -- step times --------------------------------------------------------------------------------


def test_steps_start_now_then_follow_whole_steps_since_the_epoch():
    now = T + pd.Timedelta(minutes=37, seconds=12)
    ats, ends_at = step_times(now, 3600, 6 * 3600)
    assert ats == [now] + [T + k * HOUR for k in range(1, 6)]
    assert ends_at == T + 6 * HOUR  # six steps: the first a partial one


def test_a_first_step_shorter_than_the_cooldown_runs_on_to_the_second_boundary():
    now = T + 55 * MIN
    ats, _ = step_times(now, 3600, 3 * 3600, min_first_step_seconds=600)
    assert ats == [now, T + 2 * HOUR]  # 5 minutes to 01:00 is less than the cooldown
    ats, _ = step_times(now, 3600, 3 * 3600, min_first_step_seconds=300)
    assert ats == [now, T + HOUR, T + 2 * HOUR]


# -- building ------------------------------------------------------------------------------------


def test_each_step_covers_the_highest_upper_band_of_its_samples():
    # 5-minute samples, 30-minute steps over 2 hours: four steps of six samples each
    upper = [100, 110, 120, 130, 140, 150] + [90] * 6 + [200] + [50] * 5 + [70] * 6 + [999] * 4
    median = [x - 20 for x in upper]
    plan = build_plan(forecast_of(upper, median), 50.0, 2, 1800, 7200, now=T)
    assert [s.at for s in plan.steps] == [T + k * 30 * MIN for k in range(4)]
    assert plan.ends_at == T + 2 * HOUR
    assert [s.upper_bound for s in plan.steps] == [150, 90, 200, 70]  # the samples after the end do not count
    assert [s.predicted_peak for s in plan.steps] == [130, 70, 180, 50]
    assert [s.replicas for s in plan.steps] == [3, 2, 4, 2]  # ceil(upper / 50)
    assert [s.needed for s in plan.steps] == [3, 2, 4, 2]
    assert [s.expected for s in plan.steps] == [3, 2, 4, 1]  # ceil(predicted / 50)
    assert plan.replicas == 3 and plan.current_replicas == 2
    assert plan.ramped == () and plan.capped == ()


def test_bounds_raise_to_min_replicas_and_cap_at_max_replicas_naming_it():
    plan = build_plan(forecast_of([40] * 12 + [900] * 12), 50.0, 2, 3600, 7200, now=T,
                      bounds=Bounds(min_replicas=3, max_replicas=10))
    assert [s.replicas for s in plan.steps] == [3, 10]
    assert plan.capped == ((1, "maxReplicas"),)


def test_a_rise_beyond_max_step_up_is_ramped_up_earlier_never_clamped():
    upper = [100] * 4 * 12 + [500] * 2 * 12  # 2 replicas for four hours, then 10
    plan = build_plan(forecast_of(upper), 50.0, 2, 3600, 6 * 3600, now=T, bounds=Bounds(max_step_up=3))
    replicas = [s.replicas for s in plan.steps]
    assert replicas == [2, 2, 4, 7, 10, 10]
    assert all(s.replicas >= s.needed for s in plan.steps)
    assert plan.ramped == (2, 3)
    assert all(b - a <= 3 for a, b in zip(replicas, replicas[1:], strict=False))


def test_a_fall_beyond_max_step_down_steps_down_no_faster_than_allowed():
    upper = [500] * 2 * 12 + [100] * 3 * 12
    plan = build_plan(forecast_of(upper), 50.0, 10, 3600, 5 * 3600, now=T, bounds=Bounds(max_step_down=3))
    assert [s.replicas for s in plan.steps] == [10, 10, 7, 4, 2]
    assert plan.ramped == (2, 3)


def test_steps_out_of_reach_of_the_current_replicas_climb_by_max_step_up_and_are_named():
    plan = build_plan(forecast_of([500] * 48), 50.0, 1, 3600, 4 * 3600, now=T, bounds=Bounds(max_step_up=4))
    assert [s.replicas for s in plan.steps] == [5, 9, 10, 10]
    assert plan.capped == ((0, "maxStepUp"), (1, "maxStepUp"))


def test_current_replicas_further_out_of_range_than_the_steps_allow_propose_nothing():
    with pytest.raises(ForecastError) as err:
        build_plan(forecast_of([100] * 24), 50.0, 50, 3600, 7200, now=T,
                   bounds=Bounds(max_replicas=20, max_step_down=5))
    assert err.value.reason == "OutOfBounds"


def test_a_forecast_shorter_than_the_plan_is_refused():
    with pytest.raises(ValueError):
        build_plan(forecast_of([100] * 12), 50.0, 2, 3600, 7200, now=T)


@given(
    needs=st.lists(st.integers(0, 40), min_size=1, max_size=24),
    current=st.integers(0, 40),
    up=st.one_of(st.none(), st.integers(1, 6)),
    down=st.one_of(st.none(), st.integers(1, 6)),
)
def test_ramp_keeps_the_limits_and_is_the_cheapest_schedule_that_does(needs, current, up, down):
    out = ramp(needs, current, Bounds(max_step_up=up, max_step_down=down))
    previous = [current] + out[:-1]
    for k, (r, before) in enumerate(zip(out, previous, strict=False)):
        assert up is None or r - before <= up
        assert down is None or before - r <= down
        if r < needs[k]:
            # only what no schedule could reach: a climb at full speed from the current replicas
            assert up is not None and r == current + (k + 1) * up
        elif r > needs[k]:
            # raised only as far as a limit demands: by the step down before it or the rise after it
            by_fall = down is not None and r == before - down
            by_rise = up is not None and k + 1 < len(out) and r == out[k + 1] - up
            assert by_fall or by_rise


# -- re-planning ---------------------------------------------------------------------------------


def decide(open_plan, new, now=T, **kwargs):
    return replan(open_plan, new, now, approval_seconds=1800, interval_seconds=3600, **kwargs)


OPEN = plan_of([10] * 24, start=T - 2 * HOUR, name="web-1")  # 10 replicas until T + 22h


def new_plan(needed, every=HOUR, replicas=None, expected=None):
    # by default the predicted load needs two replicas fewer than the upper bound
    expected = expected or [n - 2 for n in needed]
    return plan_of(replicas or needed, start=T, every=every, needed=needed, expected=expected)


def test_without_an_open_plan_one_is_proposed():
    decision = decide(None, new_plan([10] * 24))
    assert decision.propose and decision.reason == "NoActivePlan"


def test_a_plan_that_covers_the_new_forecast_holds():
    decision = decide(OPEN, new_plan([10] * 22 + [30, 30]))  # beyond the open plan's end: not its business
    assert not decision.propose and decision.reason == "PlanHolds"


def test_a_shortfall_the_next_round_could_no_longer_fix_proposes_now_once_the_plan_was_breached():
    # the step 01:00-02:00 needs 12: only this round's plan (approved by 00:30) fixes 01:00-01:30
    short = new_plan([10, 12] + [10] * 22)
    decision = decide(OPEN, short, breached=True)
    assert decision.propose and decision.reason == "FallsShort"
    assert "web-1 has 10 replicas at 01:00 UTC" in decision.message and "needs 12" in decision.message
    assert "exceeded" in decision.message


def test_a_shortfall_of_the_upper_bound_alone_is_a_second_opinion_not_evidence():
    decision = decide(OPEN, new_plan([10, 12] + [10] * 22), breached=False)
    assert not decision.propose and decision.reason == "PlanHolds"


def test_a_plan_short_of_even_the_predicted_load_is_replaced_without_a_breach():
    decision = decide(OPEN, new_plan([10, 13] + [10] * 22, expected=[8, 11] + [8] * 22))
    assert decision.propose and decision.reason == "FallsShort"
    assert "even the predicted load needs 11" in decision.message


def test_a_distant_shortfall_is_left_to_a_later_round():
    decision = decide(OPEN, new_plan([10] * 5 + [12] + [10] * 18, expected=[10] * 5 + [12] + [8] * 18),
                      breached=True)
    assert not decision.propose and decision.reason == "PlanHolds"


def test_a_shortfall_before_a_new_plan_could_be_approved_is_not_a_reason():
    # 10-minute steps: only 00:00-00:10 needs more, and no plan proposed now is approved before 00:30
    decision = decide(OPEN, new_plan([12] + [10] * 143, every=10 * MIN), breached=True)
    assert not decision.propose
    decision = decide(OPEN, new_plan([10] * 4 + [12] + [10] * 139, every=10 * MIN), breached=True)  # 00:40 is in reach
    assert decision.propose and decision.reason == "FallsShort"


def test_a_plan_ending_within_the_approval_time_and_a_round_is_replaced():
    ending = plan_of([10] * 3, start=T - 2 * HOUR)  # ends at 01:00, within 30 min + 1 h
    decision = decide(ending, new_plan([10] * 24))
    assert decision.propose and decision.reason == "EndsSoon"
    later = plan_of([10] * 4, start=T - 2 * HOUR)  # ends at 02:00: the next round is still in time
    assert not decide(later, new_plan([10] * 24)).propose


def test_a_plan_holding_more_than_the_threshold_above_the_new_one_is_wasteful():
    decision = decide(OPEN, new_plan([8] * 24))  # 10 / 8: 25% more than needed
    assert decision.propose and decision.reason == "Wasteful"
    assert "25% more" in decision.message
    assert not decide(OPEN, new_plan([9] * 24)).propose  # 11%: under the 20% threshold
    assert decide(OPEN, new_plan([9] * 24), waste_threshold=0.1).reason == "Wasteful"


def test_waste_within_the_two_forecasts_bands_is_a_second_opinion_not_waste():
    # 10 replicas against 8 is 25% more replica-hours, but the open plan's own predicted load (70)
    # is below the new upper bound (75): the forecasts disagree within their bands
    new = plan_of([8] * 24, start=T, needed=[8] * 24, expected=[6] * 24, upper=[75.0] * 24)
    within = plan_of([10] * 24, start=T - 2 * HOUR, peak=[70.0] * 24, upper=[95.0] * 24)
    decision = decide(within, new)
    assert not decision.propose and decision.reason == "PlanHolds"
    beyond = plan_of([10] * 24, start=T - 2 * HOUR, peak=[80.0] * 24, upper=[95.0] * 24)
    decision = decide(beyond, new)
    assert decision.propose and decision.reason == "Wasteful"
    assert "predicted load is above the new upper bound" in decision.message


def test_waste_counts_only_from_when_a_new_plan_could_take_over():
    # the new plan needs little only in the first 30 minutes, which it could never change
    needed = [2] * 3 + [10] * 141
    assert not decide(OPEN, new_plan(needed, every=10 * MIN)).propose


# -- breaches ------------------------------------------------------------------------------------


def test_load_above_a_steps_upper_bound_is_a_breach_once():
    plan = plan_of([2, 2, 2], upper=[100.0, 100.0, None])
    index = pd.date_range(T, periods=36, freq="5min")
    load = pd.Series(90.0, index=index)
    load[T + 70 * MIN] = 120.0  # in the second step
    load[T + 130 * MIN] = 500.0  # the third step has no bound: it cannot be breached
    found = plans.breaches(plan, load)
    assert [(b.step_at, b.peak, b.peak_time) for b in found] == [(T + HOUR, 120.0, T + 70 * MIN)]
    assert "120 at 01:10 UTC exceeded the upper bound 100 of the step at 01:00 UTC" in found[0].describe()
    assert plans.breaches(plan, load, skip=[T + HOUR]) == []


def test_plan_replicas_in_effect_hold_the_last_step_after_the_end():
    plan = plan_of([3, 5])
    times = pd.DatetimeIndex([T - MIN, T, T + 61 * MIN, T + 5 * HOUR])
    assert plan.replicas_at(times).tolist() == [-1, 3, 5, 5]
    assert plan.replica_seconds(T + 30 * MIN, T + 3 * HOUR) == 3 * 1800 + 5 * 3600


def test_plan_resolution_is_no_wider_than_a_step():
    assert plans.plan_resolution(600, 300) == 600
    assert plans.plan_resolution(1800, 300) == 1800
    assert plans.plan_resolution(3600, 300) == 3600
    assert plans.plan_resolution(7200, 300) == 3600  # never coarser than an hour
    assert plans.plan_resolution(1800, 1800) == 1800
    assert math.isclose(plans.forecast_horizon(86400, 300), 86400 + 4 * 300)


def test_each_policy_has_its_own_minute_of_the_step_and_its_plans_line_up():
    from scalegate.forecast.plans import step_offset, step_times

    offsets = {step_offset(f"shop/app-{i}", 3600) for i in range(200)}
    assert all(o % 60 == 0 and 0 <= o < 3600 for o in offsets) and len(offsets) > 40  # spread over the hour
    assert step_offset("shop/web", 3600) == step_offset("shop/web", 3600) == 2100  # stable: 35 past
    now = pd.Timestamp("2026-11-26T12:00:30Z")
    ats, ends = step_times(now, 3600, 86400, offset_seconds=2100)
    assert ats[:3] == [now, pd.Timestamp("2026-11-26T12:35:00Z"), pd.Timestamp("2026-11-26T13:35:00Z")]
    assert ends == pd.Timestamp("2026-11-27T11:35:00Z") and len(ats) == 24
    later, _ = step_times(now + pd.Timedelta(hours=5, minutes=3), 3600, 86400, offset_seconds=2100)
    assert set(later[1:]) <= {pd.Timestamp("2026-11-26T12:35:00Z") + k * pd.Timedelta(hours=1) for k in range(48)}
    assert step_times(now, 3600, 86400) == step_times(now, 3600, 86400, offset_seconds=3600)  # whole steps: none
