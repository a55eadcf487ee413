"""A real Prometheus serving a recorded series, for integration tests.

Usage::

    with PrometheusHarness(series) as prom:
        PrometheusSource(PrometheusSettings(prom.url)).fetch(prom.query, ...)

The series' timestamps are shifted so that its last point lands on the most
recent whole step before now; the points are written as OpenMetrics text (a
gauge), turned into TSDB blocks with ``promtool tsdb create-blocks-from
openmetrics``, and served by ``prometheus`` on a free loopback port with an
empty scrape configuration and a temporary data directory.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"

#: Backfilled blocks of a day: few blocks to load, and none so long that
#: Prometheus' own compaction has to rewrite them at start-up.
MAX_BLOCK_DURATION = "24h"
#: Far longer than any test series, so time-based retention never drops a block.
RETENTION = "3650d"


def binaries_available() -> bool:
    """True when both ``prometheus`` and ``promtool`` are on PATH."""
    return shutil.which(PROMETHEUS) is not None and shutil.which(PROMTOOL) is not None


def shift_to_end(series: pd.Series, end: pd.Timestamp | None = None) -> pd.Series:
    """The same values, moved in time so that the last one is at ``end``.

    ``end`` defaults to now rounded down to the series' step, so a range query
    ending now at that step sees every point.
    """
    step = (series.index[1] - series.index[0]).total_seconds() if len(series) > 1 else 60.0
    if end is None:
        now = time.time()
        end = pd.Timestamp(math.floor(now / step) * step, unit="s", tz="UTC")
    return pd.Series(series.to_numpy(), index=series.index + (end - series.index[-1]), name=series.name)


def write_openmetrics(series: pd.Series, path: Path, metric: str, labels: dict[str, str]) -> None:
    """Write ``series`` as one OpenMetrics gauge (timestamps in seconds), ending with ``# EOF``."""
    label_text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    with open(path, "w", encoding="utf-8") as out:
        out.write(f"# HELP {metric} Recorded load replayed for scalegate tests.\n")
        out.write(f"# TYPE {metric} gauge\n")
        for stamp, value in zip(series.index, series.to_numpy()):
            out.write(f"{metric}{{{label_text}}} {_number(value)} {stamp.timestamp():.3f}\n")
        out.write("# EOF\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusHarness:
    """Backfill ``series`` into a fresh TSDB and run Prometheus over it.

    Parameters
    ----------
    series : pandas.Series
        Values on a regular DatetimeIndex (any dates; they are shifted to end now).
    metric : str, default "scalegate_test_load"
    labels : dict, optional
        Default ``{"job": "scalegate-test", "app": "web"}``.
    end : pandas.Timestamp, optional
        Where the last point goes; default now rounded down to the step.
    ready_timeout : float, default 60
        Seconds to wait for ``/-/ready``.

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:PORT`` once started.
    query : str
        A PromQL selector that returns exactly the backfilled series.
    shifted : pandas.Series
        The series as stored (after the time shift).
    """

    def __init__(
        self,
        series: pd.Series,
        metric: str = "scalegate_test_load",
        labels: dict[str, str] | None = None,
        end: pd.Timestamp | None = None,
        ready_timeout: float = 60.0,
    ):
        self.metric = metric
        self.labels = labels or {"job": "scalegate-test", "app": "web"}
        self.shifted = shift_to_end(series, end)
        self.ready_timeout = ready_timeout
        self.url = ""
        self.query = metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items())) + "}"
        self._workdir: Path | None = None
        self._process: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> "PrometheusHarness":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        """Create the blocks, start Prometheus and wait until it is ready."""
        if not binaries_available():
            raise RuntimeError("prometheus and promtool must be on PATH (Debian: apt-get install prometheus)")
        self._workdir = Path(tempfile.mkdtemp(prefix="scalegate-prom-"))
        data_dir = self._workdir / "data"
        data_dir.mkdir()
        source = self._workdir / "series.om"
        write_openmetrics(self.shifted, source, self.metric, self.labels)
        subprocess.run(
            [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
             f"--max-block-duration={MAX_BLOCK_DURATION}", str(source), str(data_dir)],
            check=True, capture_output=True, timeout=120,
        )
        config = self._workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n", encoding="utf-8")
        port = free_loopback_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(self._workdir / "prometheus.log", "wb")
        self._process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
             f"--storage.tsdb.retention.time={RETENTION}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._process.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {self.ready_timeout:.0f}s")

    def log_text(self) -> str:
        """Prometheus' own log so far (for failure messages)."""
        path = self._workdir / "prometheus.log" if self._workdir else None
        return path.read_text(errors="replace")[-4000:] if path and path.exists() else ""

    def stop(self) -> None:
        """Stop Prometheus (SIGTERM, then SIGKILL after 20 s) and remove the temporary files."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
