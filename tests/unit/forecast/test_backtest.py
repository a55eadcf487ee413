import argparse
import json

import numpy as np
import pandas as pd
import pytest
from harness import load_dir

from scalegate.forecast.backtest import DEFAULT_STRATEGIES, BacktestSettings, default_capacity, run_backtest
from scalegate.forecast.backtest_cli import register
from scalegate.forecast.series import load_csv

pytestmark = pytest.mark.unit

DAY = 86400


def daily_cycle(days=4, step=300, noise=0.0, seed=0) -> pd.Series:
    n = int(days * DAY / step)
    index = pd.date_range("2024-01-01", periods=n, freq=f"{step}s", tz="UTC")
    t = np.arange(n) * step
    # rounded so that one day repeats the last bit for bit
    values = np.round(100 + 50 * np.sin(2 * np.pi * t / DAY), 6) + np.random.default_rng(seed).normal(0, noise, n)
    return pd.Series(values, index=index)


def parse(*argv):
    parser = argparse.ArgumentParser(prog="scalegate")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["backtest", *argv])


def test_oracle_and_seasonal_naive_on_a_perfect_daily_cycle():
    settings = BacktestSettings(capacity_per_replica=10, train_days=2, eval_days=1)
    result = run_backtest(daily_cycle(days=3), settings, ("seasonal-naive", "static-peak", "oracle"))
    oracle = result.strategies["oracle"]
    naive = result.strategies["seasonal-naive"]
    assert result.decisions == 24
    assert oracle.under_provisioned_fraction == 0.0
    # yesterday's interval is exactly today's: seasonal naive is the oracle here
    assert naive.replica_hours == oracle.replica_hours
    assert naive.under_provisioned_fraction == 0.0
    assert naive.mase == pytest.approx(0.0, abs=1e-9)
    assert result.strategies["static-peak"].replica_hours == 24 * 15  # ceil(150 / 10) all day
    assert result.strategies["static-peak"].mase is None


def test_reactive_lags_one_step_and_scales_down_after_stabilisation():
    step = 300
    index = pd.date_range("2024-01-01", periods=3 * 288, freq=f"{step}s", tz="UTC")
    load = np.full(len(index), 50.0)
    start = 2 * 288
    load[start + 10 : start + 20] = 200.0  # a 50-minute surge on the evaluated day
    settings = BacktestSettings(capacity_per_replica=10, train_days=2, eval_days=1)
    result = run_backtest(pd.Series(load, index=index), settings, ("reactive", "oracle"))
    reactive = result.strategies["reactive"]
    # one sample late at the start of the surge: 1 of 288 samples under-provisioned
    assert reactive.under_provisioned_fraction == pytest.approx(1 / 288)
    # up to 20 replicas for the surge, back down after the 5-minute window: two changes
    assert reactive.proposals == 2
    # 5 replicas all day, plus 15 more for the surge's 10 samples shifted by one, plus one stabilisation step
    assert reactive.replica_hours == pytest.approx((288 * 5 + 11 * 15) * step / 3600)
    assert reactive.mase is None


def test_reactive_tolerance_keeps_replicas_within_ten_percent():
    index = pd.date_range("2024-01-01", periods=3 * 288, freq="300s", tz="UTC")
    load = np.full(len(index), 100.0)
    load[2 * 288 + 5 :] = 108.0  # 8% over what 10 replicas serve: inside the tolerance
    settings = BacktestSettings(capacity_per_replica=10, train_days=2, eval_days=1)
    result = run_backtest(pd.Series(load, index=index), settings, ("reactive", "oracle"))
    assert result.strategies["reactive"].proposals == 0
    no_tolerance = BacktestSettings(capacity_per_replica=10, train_days=2, eval_days=1, reactive_tolerance=0.0)
    assert run_backtest(pd.Series(load, index=index), no_tolerance, ("reactive", "oracle")).strategies[
        "reactive"
    ].proposals == 1


def test_every_contract_strategy_reports_every_figure():
    series = load_csv(load_dir() / "ec2_cpu_utilization_53ea38.csv")
    result = run_backtest(series, BacktestSettings(eval_days=1))
    payload = result.to_json()
    assert list(payload["strategies"]) == list(DEFAULT_STRATEGIES)
    for figures in payload["strategies"].values():
        assert set(figures) == {"under_provisioned_fraction", "replica_hours", "mase", "proposals"}
        assert 0.0 <= figures["under_provisioned_fraction"] <= 1.0
        assert figures["replica_hours"] > 0
    assert payload["strategies"]["oracle"]["under_provisioned_fraction"] == 0.0
    assert payload["strategies"]["reactive"]["mase"] is None
    assert payload["strategies"]["scalegate"]["mase"] > 0
    assert result.capacity_per_replica == pytest.approx(default_capacity(series))
    assert 0.5 <= payload["settings"]["bound_coverage"]["scalegate"] <= 1.0
    # the default pointwise band: each sample under its own upper band ~97.5% of the time
    assert 0.9 <= payload["settings"]["band_coverage"]["scalegate"] <= 1.0
    assert payload["settings"]["band_coverage"]["scalegate"] <= payload["settings"]["sample_coverage"]["scalegate"]
    json.dumps(payload)  # plain JSON types only


@pytest.mark.parametrize(
    "name, train_days, eval_days",
    [
        ("nasa_http_jul95_5min", 9, 2),  # strong daily cycle, surges (now 0.3% at 1.18x)
        ("rds_cpu_utilization_cc0c53", 10, 3),  # no cycle; a level shift 0.7 days in (now 2.1% at 1.01x)
    ],
)
def test_goal_regression(name, train_days, eval_days):
    """A loose guard of decision quality: the full goal is <= 1% at <= 1.15x over all series."""
    settings = BacktestSettings(train_days=train_days, eval_days=eval_days)
    result = run_backtest(load_csv(load_dir() / f"{name}.csv"), settings, ("scalegate", "oracle"))
    scalegate, oracle = result.strategies["scalegate"], result.strategies["oracle"]
    assert scalegate.under_provisioned_fraction <= 0.05
    assert scalegate.replica_hours <= 1.5 * oracle.replica_hours


def test_cli_prints_one_json_object(capsys):
    args = parse("--data", str(load_dir() / "ec2_cpu_utilization_53ea38.csv"), "--eval-days", "0.5", "--json")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    payload = json.loads(out)
    assert set(payload["strategies"]) == set(DEFAULT_STRATEGIES)


def test_cli_table_and_options(capsys, tmp_path):
    path = tmp_path / "cycle.csv"
    series = daily_cycle(days=3, noise=2.0)
    pd.DataFrame({"timestamp": series.index.tz_localize(None), "value": series.to_numpy()}).to_csv(path, index=False)
    args = parse(
        "--data", str(path), "--capacity-per-replica", "10", "--horizon", "1800", "--decision-interval", "1800",
        "--train-days", "2", "--eval-days", "1", "--confidence", "0.9",
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "48 decisions" in out
    assert "capacity 10 per replica" in out
    for name in DEFAULT_STRATEGIES:
        assert name in out


def test_cli_refuses_a_missing_file(capsys, tmp_path):
    args = parse("--data", str(tmp_path / "nope.csv"))
    assert args.func(args) == 2
    assert "No such file" in capsys.readouterr().err


def test_cli_refuses_a_series_shorter_than_the_training_days(capsys, tmp_path):
    path = tmp_path / "short.csv"
    series = daily_cycle(days=3)
    pd.DataFrame({"timestamp": series.index.tz_localize(None), "value": series.to_numpy()}).to_csv(path, index=False)
    args = parse("--data", str(path), "--train-days", "7")
    assert args.func(args) == 2
    assert "InsufficientData" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--confidence", "1.5"), ("--horizon", "0"), ("--capacity-per-replica", "-1")])
def test_cli_rejects_bad_numbers(flag, value):
    with pytest.raises(SystemExit):
        parse("--data", "x.csv", flag, value)
