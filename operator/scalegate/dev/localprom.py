"""A real Prometheus on loopback, serving a recorded load series: for the demo and tests.

The series is shifted so that its last point is now (else retention would drop the old
blocks at start-up), written as an OpenMetrics gauge, turned into TSDB blocks with
`promtool tsdb create-blocks-from openmetrics`, and served by Debian's `prometheus` with
an empty scrape configuration.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

from .cluster import free_port, stop_process

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
# Day-long blocks: few to load, none so long that Prometheus compacts them at start-up.
MAX_BLOCK_DURATION = "24h"
# Far longer than any recorded series, so time-based retention never drops a block.
RETENTION = "3650d"


def binaries_available() -> bool:
    return shutil.which(PROMETHEUS) is not None and shutil.which(PROMTOOL) is not None


def shift_to_end(series: pd.Series, end: pd.Timestamp | None = None) -> pd.Series:
    """The same values, moved in time so the last one is at `end` (default: now, rounded
    down to the series' step, so that a range query ending now sees every point)."""
    step = (series.index[1] - series.index[0]).total_seconds() if len(series) > 1 else 60.0
    if end is None:
        end = pd.Timestamp(math.floor(time.time() / step) * step, unit="s", tz="UTC")
    index = series.index if series.index.tz is not None else series.index.tz_localize("UTC")
    return pd.Series(series.to_numpy(), index=index + (end - index[-1]), name=series.name)


def selector(metric: str, labels: dict[str, str]) -> str:
    """The PromQL selector that returns exactly the series written with these labels."""
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def write_openmetrics(path: Path, metric: str, series: list[tuple[pd.Series, dict[str, str]]]) -> None:
    """One OpenMetrics gauge `metric` with a series per (values, labels), timestamps in
    seconds, ending with `# EOF` (samples of one series must be contiguous)."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(f"# HELP {metric} Recorded load replayed by scalegate.\n# TYPE {metric} gauge\n")
        for values, labels in series:
            label_text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
            # Seconds since the epoch whatever the index's resolution (pandas may use us or ns).
            seconds = (values.index - pd.Timestamp(0, tz=values.index.tz)) / pd.Timedelta(seconds=1)
            for stamp, value in zip(seconds, values.to_numpy(), strict=True):
                out.write(f"{metric}{{{label_text}}} {_number(value)} {stamp:.3f}\n")
        out.write("# EOF\n")


def backfill(data_dir: Path, metric: str, series: list[tuple[pd.Series, dict[str, str]]]) -> None:
    """Write the series (already placed in time) into a TSDB at `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / f"{data_dir.name}.om"
    write_openmetrics(source, metric, series)
    proc = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                           f"--max-block-duration={MAX_BLOCK_DURATION}", str(source), str(data_dir)],
                          capture_output=True, text=True, timeout=1800)
    source.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"promtool could not backfill the series: {proc.stderr.strip() or proc.stdout.strip()}")


class LocalPrometheus:
    """Prometheus over `data_dir` on 127.0.0.1. With `detached`, it outlives this process
    (its pid is in `pid`) so that a command can start it and return."""

    def __init__(self, data_dir: Path, port: int | None = None, detached: bool = False):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.detached = detached
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "prometheus.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 60.0) -> "LocalPrometheus":
        if not binaries_available():
            raise RuntimeError("prometheus and promtool are needed (Debian: apt-get install prometheus)")
        config = self.data_dir.parent / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n", encoding="utf-8")
        with open(self.log_path, "ab") as log:
            process = self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.data_dir}",
                 f"--storage.tsdb.retention.time={RETENTION}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=self.detached)
        self._wait_ready(process, timeout)
        return self

    def _wait_ready(self, process: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        stop_process(self.process, grace=20)
        self.process = None
