"""Fixtures for tests that run scalegate's components against the real API server,
each with its own ServiceAccount's identity and the RBAC from manifests/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness import Cluster
from operator_harness import OperatorProcess, Scenario


@pytest.fixture(scope="session")
def component_kubeconfigs(cluster: Cluster, tmp_path_factory) -> dict[str, Path]:
    """Kubeconfigs with real tokens of scalegate:operator and scalegate:forecaster."""
    directory = tmp_path_factory.mktemp("sa-kubeconfigs")
    return cluster.component_kubeconfigs(directory)


@pytest.fixture(scope="module")
def operator(component_kubeconfigs, tmp_path_factory) -> OperatorProcess:
    """One operator, watching all namespaces as scalegate:operator, for a test module."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    proc = OperatorProcess(component_kubeconfigs["operator"], log).start()
    yield proc
    proc.stop()
    if os.environ.get("SCALEGATE_TEST_SHOW_OPERATOR_LOG"):
        print(proc.log())


@pytest.fixture
def scenario(cluster: Cluster, namespace: str) -> Scenario:
    s = Scenario(cluster, namespace)
    s.grant_approve()
    return s
