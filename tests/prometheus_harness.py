"""A real Prometheus serving a recorded series, for integration tests.

Usage::

    with PrometheusHarness(series) as prom:
        PrometheusSource(PrometheusSettings(prom.url)).fetch(prom.query, ...)

A thin test wrapper over `scalegate.dev.localprom` (which the demo uses too): a private
temporary TSDB, backfilled once; `stop()` and `start()` again serve the same data
(on a new port), to test a Prometheus outage.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from scalegate.dev.localprom import LocalPrometheus, backfill, binaries_available, selector, shift_to_end

__all__ = ["PrometheusHarness", "binaries_available"]


class PrometheusHarness:
    """Backfill `series` (shifted to end now, or at `end`) and run Prometheus over it.

    Attributes: `url` once started, `query` (a selector for exactly this series),
    `shifted` (the series as stored)."""

    def __init__(self, series: pd.Series, metric: str = "scalegate_test_load",
                 labels: dict[str, str] | None = None, end: pd.Timestamp | None = None,
                 ready_timeout: float = 60.0):
        self.metric = metric
        self.labels = labels or {"job": "scalegate-test", "app": "web"}
        self.shifted = shift_to_end(series, end)
        self.ready_timeout = ready_timeout
        self.query = selector(metric, self.labels)
        self._workdir: Path | None = None
        self._server: LocalPrometheus | None = None

    @property
    def url(self) -> str:
        return self._server.url if self._server else ""

    def __enter__(self) -> "PrometheusHarness":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def start(self) -> None:
        if not binaries_available():
            raise RuntimeError("prometheus and promtool must be on PATH (Debian: apt-get install prometheus)")
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="scalegate-prom-"))
            backfill(self._workdir / "data", self.metric, [(self.shifted, self.labels)])
        self._server = LocalPrometheus(self._workdir / "data").start(timeout=self.ready_timeout)

    def log_text(self) -> str:
        return self._server.log_tail() if self._server else ""

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
