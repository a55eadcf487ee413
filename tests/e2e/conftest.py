"""Fixtures of the end-to-end tests: one installation per target for the whole module
(targets.py), a fresh namespace per test, and the Pods' logs printed when a test fails."""

from __future__ import annotations

import pytest
from e2e.targets import TARGETS, Installed, install
from harness import load_dir
from operator_harness import Scenario
from prometheus_harness import PrometheusHarness, binaries_available

from scalegate.forecast import load_csv

SERIES_LABELS = {"app": "web", "namespace": "shop"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so a fixture can tell a failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="module", params=sorted(TARGETS))
def e2e(request, tmp_path_factory) -> Installed:
    """scalegate installed on one target, shared by the module's tests; everything it
    started is stopped (the dev node undoes its changes to the machine) even on failure."""
    target_class = TARGETS[request.param]
    reason = target_class.unavailable()
    if reason:
        pytest.skip(reason)
    target = target_class(tmp_path_factory.mktemp(request.param))
    prometheus = None
    try:
        target.up()
        if target.pods_reach_host_loopback and binaries_available():
            series = load_csv(load_dir() / "nasa_http_jul95_5min.csv").iloc[: 14 * 288]  # two weeks
            prometheus = PrometheusHarness(series, metric="http_requests", labels=SERIES_LABELS)
            prometheus.__enter__()
        warnings = install(target, prometheus.url if prometheus else None)
        yield Installed(target, prometheus, warnings)
    finally:
        try:
            if prometheus is not None:
                prometheus.__exit__(None, None, None)
        finally:
            target.down()


@pytest.fixture
def scenario(e2e: Installed, request) -> Scenario:
    namespace = e2e.cluster.create_namespace("e2e")
    s = Scenario(e2e.cluster, namespace)
    s.grant_approve()
    yield s
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(f"scalegate's Pods on {e2e.target.name}, last lines:\n{e2e.target.logs()}")
    e2e.cluster.delete_namespace(namespace)
