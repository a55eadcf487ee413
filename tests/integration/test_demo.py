"""README's main command: the demo runs the whole loop on a fresh local control plane."""

from __future__ import annotations

import json
import os
import re
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
        assert "pending proposals, and web-" in out and "Pending" in out
        # The proposal as an approver sees it (kubectl scalegate show), then how to approve it.
        assert "      Name:         web-" in out and "      Bounds (ScalingPolicy web):" in out
        assert "kubectl scalegate approve --all -n scalegate-demo" in out
        assert "kubectl scalegate approve web-" in out and "scalegate.io/approved-by=scalegate-dev-admin" in out
        # --approve approves with the batch command, as a person would.
        assert "approving as scalegate-dev-admin: kubectl scalegate approve --all -n scalegate-demo --yes" in out
        assert re.search(r"scalingproposal.scalegate.io/web-\S+ approved as scalegate-dev-admin", out)
        if "      Plan:         " in out:  # a day's plan: shown step by step, applied from its first step
            assert re.search(r"Plan: +2[45] steps every 1h, ", out), out
            assert "Schedule (now: the step in effect" in out and "PREDICTED-PEAK" in out
            assert re.search(r"Active: step 1 of 2[45] \(at \S+\): scaled Deployment/web from 2 to \d+ replicas", out)
        else:  # the forecaster proposes single changes (until it makes plans)
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
