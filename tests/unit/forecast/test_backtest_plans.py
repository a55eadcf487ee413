"""The backtest with plans: approvals counted per approved plan, the approval delay."""

import json

import numpy as np
import pandas as pd
import pytest

from scalegate.forecast.backtest import DEFAULT_STRATEGIES, BacktestSettings, PlanBook, run_backtest
from scalegate.forecast.plans import Plan, PlannedStep

pytestmark = pytest.mark.unit

DAY = 86400
T = pd.Timestamp("2026-11-27T00:00:00Z")
MIN = pd.Timedelta(minutes=1)
HOUR = pd.Timedelta(hours=1)


def daily_cycle(days, step=300) -> pd.Series:
    n = int(days * DAY / step)
    index = pd.date_range("2024-01-01", periods=n, freq=f"{step}s", tz="UTC")
    # rounded so that one day repeats the last bit for bit
    return pd.Series(np.round(100 + 50 * np.sin(2 * np.pi * np.arange(n) * step / DAY), 6), index=index)


def hourly(replicas, start, upper=None) -> Plan:
    upper = upper or [None] * len(replicas)
    steps = enumerate(zip(replicas, upper, strict=True))
    return Plan(tuple(PlannedStep(start + k * HOUR, r, None, u) for k, (r, u) in steps),
                start + len(replicas) * HOUR)


def test_a_plan_takes_over_only_after_the_approval_delay_and_a_superseded_one_costs_no_approval():
    book = PlanBook(initial=3, delay_seconds=1800)
    first = hourly([5] * 4, T, upper=[60.0] * 4)  # ends at 04:00
    book.propose(first, T)
    assert book.replicas_at(T + 20 * MIN) == 3  # the replicas before it run until it is approved
    assert book.open_plan(T + 20 * MIN) is first  # the pending plan is the one to judge new ones against
    book.propose(hourly([7] * 24, T + 2 * HOUR), T + 2 * HOUR)  # approved at 02:30, unless...
    newest = hourly([9] * 24, T + 2 * HOUR + 10 * MIN)
    book.propose(newest, T + 2 * HOUR + 10 * MIN)  # ...a newer one comes first: it is never approved
    book.close(T + 30 * HOUR)
    assert (book.proposed, book.approved) == (3, 2)

    times = pd.date_range(T, T + 3 * HOUR, freq="5min")
    replicas, upper = book.timeline(times)
    expected = np.where(times < T + 30 * MIN, 3, np.where(times < T + 2 * HOUR + 40 * MIN, 5, 9))
    assert replicas.tolist() == expected.tolist()
    assert np.isinf(upper[times < T + 30 * MIN]).all() and (upper[(times >= T + 30 * MIN) & (times < T + HOUR)] == 60).all()


def test_the_last_step_holds_after_a_plan_ends_and_a_proposal_approved_after_the_replay_does_not_count():
    book = PlanBook(initial=3, delay_seconds=3600)
    book.propose(hourly([5, 6, 7], T), T)  # approved at 01:00, from the step in effect then
    book.propose(hourly([8] * 24, T + 5 * HOUR), T + 5 * HOUR + 30 * MIN)  # approved at 06:30
    book.close(T + 6 * HOUR)  # the replay ended first
    assert book.approved == 1
    replicas, _ = book.timeline(pd.date_range(T, T + 6 * HOUR, freq="h", inclusive="left"))
    assert replicas.tolist() == [3, 6, 7, 7, 7, 7]


def test_every_strategy_reports_approvals_per_day_one_per_change():
    result = run_backtest(daily_cycle(3), BacktestSettings(capacity_per_replica=10, train_days=2, eval_days=1))
    payload = result.to_json()
    assert set(payload["approvals_per_day"]) == set(DEFAULT_STRATEGIES)
    for name, figures in result.strategies.items():
        assert result.approvals_per_day[name] == figures.proposals  # one evaluated day
    assert result.strategies["static-peak"].proposals == 1  # its one change, to the historical peak
    assert payload["plan"] is None
    json.dumps(payload)


SETTINGS = dict(capacity_per_replica=10, train_days=5, eval_days=2, plan_horizon_seconds=DAY, plan_step_seconds=3600)


def test_plans_cost_one_approval_each_a_day_plan_about_once_a_day():
    result = run_backtest(daily_cycle(7), BacktestSettings(**SETTINGS), ("scalegate", "oracle"))
    # a perfect cycle: the first plan, then each next one an hour before the last ends
    assert result.plan["reasons"] == {"NoActivePlan": 1, "EndsSoon": 2, "PlanHolds": 45}
    assert (result.plan["proposed"], result.plan["approved"]) == (3, 3)
    assert result.approvals_per_day["scalegate"] == pytest.approx(1.5)
    assert result.strategies["scalegate"].proposals == 3
    assert result.strategies["scalegate"].under_provisioned_fraction == 0.0
    assert result.approvals_per_day["oracle"] == result.strategies["oracle"].proposals / 2


def test_the_replicas_before_a_plan_run_until_its_approval_delay_is_over():
    series = daily_cycle(7)
    immediate = run_backtest(series, BacktestSettings(**SETTINGS), ("scalegate", "oracle"))
    delayed = run_backtest(series, BacktestSettings(**SETTINGS, approval_delay_seconds=1800), ("scalegate", "oracle"))
    start = 5 * 288
    # the load rises past what the initial 10 replicas serve during the first plan's 30 minutes of waiting
    missed = int(np.sum(series.to_numpy()[start : start + 6] > 100))
    assert missed > 0
    assert immediate.strategies["scalegate"].under_provisioned_fraction == 0.0
    assert delayed.strategies["scalegate"].under_provisioned_fraction == pytest.approx(missed / (2 * 288))
    assert delayed.approvals_per_day["scalegate"] == immediate.approvals_per_day["scalegate"]


def test_single_changes_wait_out_the_approval_delay_too():
    series = daily_cycle(3)
    settings = dict(capacity_per_replica=10, train_days=2, eval_days=1)
    immediate = run_backtest(series, BacktestSettings(**settings), ("scalegate", "oracle"))
    delayed = run_backtest(series, BacktestSettings(**settings, approval_delay_seconds=1800), ("scalegate", "oracle"))
    assert delayed.strategies["scalegate"].under_provisioned_fraction > immediate.strategies[
        "scalegate"].under_provisioned_fraction
    assert delayed.strategies["oracle"] == immediate.strategies["oracle"]  # the baselines are not gated


def test_plan_settings_go_together():
    with pytest.raises(ValueError):
        BacktestSettings(plan_horizon_seconds=DAY)
    with pytest.raises(ValueError):
        BacktestSettings(plan_horizon_seconds=DAY, plan_step_seconds=7000)


def test_cli_replays_plans_and_prints_approvals_per_day(tmp_path, capsys):
    import argparse

    from scalegate.forecast.backtest_cli import register

    path = tmp_path / "cycle.csv"
    series = daily_cycle(7)
    pd.DataFrame({"timestamp": series.index.tz_localize(None), "value": series.to_numpy()}).to_csv(path, index=False)
    parser = argparse.ArgumentParser(prog="scalegate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["backtest", "--data", str(path), "--capacity-per-replica", "10", "--train-days", "5",
                              "--eval-days", "2", "--plan-horizon", "86400", "--plan-step", "3600",
                              "--approval-delay", "1800", "--json"])
    assert args.func(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["approvals_per_day"]["scalegate"] == pytest.approx(1.5)
    assert payload["plan"]["approval_delay_seconds"] == 1800 and payload["plan"]["plan_step_seconds"] == 3600
    args = parser.parse_args(["backtest", "--data", str(path), "--plan-step", "3600"])
    assert args.func(args) == 2  # a step without a horizon
    assert "--plan-step needs --plan-horizon" in capsys.readouterr().err
