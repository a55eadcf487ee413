"""Shared fixtures: the real API server, CRDs installed once, a fresh namespace per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Cluster, start_cluster
from hypothesis import settings

# No per-example deadline: these machines are shared and noisy, and a slow example is not
# a wrong one (speed is for benchmarks).
settings.register_profile("scalegate", deadline=None)
settings.load_profile("scalegate")

_MARK_BY_DIR = {"unit": "unit", "integration": "integration", "e2e_kind": "e2e_kind"}


def pytest_collection_modifyitems(config, items):
    # Tests are marked by where they live, so `-m unit` needs no discipline to stay true.
    for item in items:
        parts = Path(str(item.fspath)).parts
        for directory, mark in _MARK_BY_DIR.items():
            if directory in parts:
                item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    cluster, stop = start_cluster()
    try:
        cluster.install_crds()
        yield cluster
    finally:
        stop()


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    name = cluster.create_namespace()
    yield name
    cluster.delete_namespace(name)
