"""A proposal's evidence (`spec.forecast`) has one schema, `model.Evidence`: the
forecaster writes it with it, and the operator's model, `kubectl scalegate show` and
`explain` read it back with it, to the same values."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from scalegate.forecaster import build_proposal, evidence_of, forecast_policy
from scalegate.model import Evidence, Policy, Proposal
from scalegate.plugin import explain, render

CRDS = Path(__file__).resolve().parents[2] / "crds"
UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

FULL = Evidence(
    model="holt-winters(additive, damped, seasonal=144)", query='sum(rate(http_requests_total{app="web"}[5m]))',
    window_start=dt.datetime(2026, 11, 24, 12, 0, tzinfo=UTC), window_end=dt.datetime(2026, 11, 26, 11, 55, tzinfo=UTC),
    points=576, horizon_seconds=3600, resolution_seconds=600, predicted_peak=380.5,
    peak_time=dt.datetime(2026, 11, 26, 12, 40, tzinfo=UTC), upper_bound=410.25, lower_bound=350.0,
    confidence=0.95, coverage=0.974, capacity_per_replica=50.0, backtest_metric="MASE", backtest_value=0.61,
)


def crd_forecast_fields() -> set[str]:
    crd = yaml.safe_load((CRDS / "scalingproposals.scalegate.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return set(_paths(spec["properties"]["forecast"]))


def _paths(schema: dict, prefix: str = ""):
    for name, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            yield from _paths(sub, f"{prefix}{name}.")
        else:
            yield prefix + name


def _keys(tree: dict, prefix: str = ""):
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{name}.")
        else:
            yield prefix + name


def test_evidence_writes_every_field_of_the_crd_and_no_other():
    assert set(_keys(FULL.to_spec())) == crd_forecast_fields()


def test_round_trip():
    spec = FULL.to_spec()
    assert spec["window"] == {"start": "2026-11-24T12:00:00Z", "end": "2026-11-26T11:55:00Z", "points": 576}
    assert spec["backtestError"] == {"metric": "MASE", "value": 0.61}
    assert Evidence.parse(spec) == FULL
    assert Evidence.parse(yaml.safe_load(yaml.safe_dump(spec))) == FULL  # as it comes back from the server
    assert Evidence.parse(None) == Evidence() and Evidence().to_spec() == {}


def test_figures_json_cannot_carry_are_left_out():
    spec = Evidence(upper_bound=1 / 3, coverage=math.nan, backtest_metric="MASE", backtest_value=math.inf).to_spec()
    assert spec == {"upperBound": 0.333333, "backtestError": {"metric": "MASE"}}


def test_parse_is_lenient():
    odd = {"model": 7, "window": "yesterday", "predictedPeak": "lots", "horizonSeconds": True,
           "peakTime": "soon", "backtestError": {"value": math.nan}}
    assert Evidence.parse(odd) == Evidence()


def four_days_of_daily_load() -> pd.Series:
    """A daily cycle around 100 with some noise, sampled every 5 minutes up to NOW."""
    steps = np.arange(4 * 288)
    load = 100 + 60 * np.sin(2 * np.pi * steps / 288) + np.random.default_rng(3).normal(0, 3, len(steps))
    return pd.Series(load, index=pd.date_range(end=NOW - dt.timedelta(minutes=5), periods=len(steps), freq="5min"))


@pytest.fixture(scope="module")
def written() -> tuple:
    policy = Policy.parse({
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web", "generation": 1},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 50,
                 "forecast": {"query": 'load{app="web"}', "capacityPerReplica": 10.0}},
    })
    sized = forecast_policy(four_days_of_daily_load(), policy, 3, NOW)
    manifest = build_proposal(policy, sized, "system:serviceaccount:scalegate:forecaster", NOW)
    return sized.forecast, evidence_of(sized.forecast, policy.forecast), yaml.safe_load(yaml.safe_dump(manifest))


def test_the_forecaster_writes_the_forecast_it_made(written):
    forecast, _, manifest = written
    read = Evidence.parse(manifest["spec"]["forecast"])
    assert read.model == forecast.model and read.query == 'load{app="web"}'
    assert (read.window_start, read.window_end, read.points) == (forecast.window_start, forecast.window_end,
                                                                 forecast.points)
    assert (read.horizon_seconds, read.resolution_seconds) == (3600, forecast.resolution_seconds)
    for name, value in [("predicted_peak", forecast.predicted_peak), ("upper_bound", forecast.upper_bound),
                        ("lower_bound", forecast.lower_bound), ("backtest_value", forecast.backtest_error)]:
        assert getattr(read, name) == pytest.approx(value, abs=1e-6), name
    assert read.peak_time == forecast.peak_time and read.confidence == 0.95 and read.capacity_per_replica == 10.0
    assert read.backtest_metric == "MASE"
    assert read.needed == manifest["spec"]["replicas"]  # within bounds, the sizing is the evidence's


def test_every_reader_reads_the_same_evidence(written):
    _, evidence, manifest = written
    read = Evidence.parse(evidence.to_spec())
    assert Evidence.parse(manifest["spec"]["forecast"]) == read
    assert Proposal.parse(manifest).forecast == read  # the operator's model
    assert explain.ExplainedProposal.of(manifest).evidence == read  # kubectl scalegate explain
    shown = render.show(manifest, NOW)  # kubectl scalegate show
    assert f"Interval:    {render.number(read.lower_bound)} - {render.number(read.upper_bound)} (95% interval)" in shown
