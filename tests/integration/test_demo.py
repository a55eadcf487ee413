"""README's main command: the demo runs the whole loop on a fresh local control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from scalegate.dev.localprom import binaries_available


@pytest.mark.skipif(not binaries_available(), reason="Debian's prometheus package is not installed")
def test_demo_proposes_prints_how_to_approve_and_applies_when_approved(tmp_path):
    env = dict(os.environ, SCALEGATE_DEMO_DIR=str(tmp_path / "demo"),
               SCALEGATE_DEV_CLUSTER_DIR=str(tmp_path / "cluster"))
    env.pop("KUBECONFIG", None)

    def demo(*args):
        return subprocess.run([sys.executable, "-m", "scalegate.cli", "demo", *args], capture_output=True,
                              text=True, env=env, timeout=600)

    up = demo("--dev-cluster", "--approve")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout
        assert "[1/8] starting a local control plane" in out
        assert "pending proposals:" in out and "Pending" in out
        assert "kubectl scalegate approve web-" in out and "scalegate.io/approved-by=scalegate-dev-admin" in out
        assert "Applied: scaled Deployment/web from 2 to" in out
        state = json.loads((tmp_path / "demo" / "state.json").read_text())
        pids = [state["operatorPid"], state["prometheusPid"]]
    finally:
        down = demo("down")
    assert down.returncode == 0, down.stderr
    assert "demo torn down" in down.stdout
    assert not (tmp_path / "demo").exists() and not (tmp_path / "cluster").exists()
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        stat = f"/proc/{pid}/stat"
        assert not os.path.exists(stat) or open(stat).read().rsplit(")", 1)[1].split()[0] == "Z"
