"""The forecaster's process pool: a forecast that fails in a worker comes back as its
reason, and a pool whose worker died is replaced, so one bad fit never stops the round."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import signal

import numpy as np
import pandas as pd
import pytest

from scalegate.forecaster import Forecaster
from scalegate.kube import Kube, Scale

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def policy_body(name: str) -> dict:
    return {
        "apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingPolicy",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "generation": 1},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": 1, "maxReplicas": 50,
                 "forecast": {"query": f'load{{app="{name}"}}', "capacityPerReplica": 10.0,
                              "horizonSeconds": 3600, "lookbackSeconds": 14 * 86400, "stepSeconds": 300}},
    }


def daily_load(days: float) -> pd.Series:
    index = pd.date_range(end=NOW - dt.timedelta(minutes=5), periods=int(days * 288), freq="5min")
    hours = (index.hour + index.minute / 60).to_numpy()
    noise = np.random.default_rng(7).normal(0, 3, len(index))
    return pd.Series(100 + 60 * np.sin(2 * np.pi * hours / 24) + noise, index=index)


class Source:
    """Two weeks of daily load for app "good", half a day (too little) for anything else."""

    def fetch(self, query: str, lookback_seconds: int, step_seconds: int, end=None) -> pd.Series:
        return daily_load(14 if '"good"' in query else 0.5)


@pytest.fixture
def forecaster(mocker):
    kube = mocker.create_autospec(Kube, instance=True)
    kube.whoami.return_value = "system:serviceaccount:scalegate:forecaster"
    kube.get_scale.return_value = Scale(replicas=1, resource_version="1", uid="uid")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=1)
    # refit_interval=0: every run fits in the pool (a kept forecast would need no worker)
    made = Forecaster(kube=kube, source=Source(), output="yaml", clock=lambda: NOW, pool=pool, refit_interval=0)
    yield made
    made.pool.shutdown(cancel_futures=True)
    pool.shutdown(cancel_futures=True)


def test_a_forecast_refused_in_a_worker_keeps_its_reason_and_the_pool(forecaster):
    pool = forecaster.pool
    refused = forecaster.run_policy(policy_body("short"))
    assert (refused.outcome, refused.reason) == ("failed", "InsufficientData")
    assert forecaster.pool is pool
    assert forecaster.run_policy(policy_body("good")).outcome == "proposed"


def test_a_pool_whose_worker_died_is_replaced(forecaster):
    broken = forecaster.pool
    assert forecaster.run_policy(policy_body("good")).outcome == "proposed"  # starts the worker
    for process in list(broken._processes.values()):
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=10)
    result = forecaster.run_policy(policy_body("good"))
    assert result.outcome in ("proposed", "unchanged"), result.message
    assert forecaster.pool is not broken
