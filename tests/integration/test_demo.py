"""README's main command: the demo runs the whole loop on a fresh local control plane."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from scalegate.dev.localprom import binaries_available
from scalegate.forecast.plans import step_offset
from scalegate.kube import Kube, api_client
from scalegate.model import TargetRef

WEB = TargetRef("apps/v1", "Deployment", "web")


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
        # The demo's policy asks for a day's plan: the proposal is one, shown step by step and
        # applied from its first step.
        assert "warning: the policy asks for plans" not in out
        # A day in hourly steps: it ends a day after the hour the plan starts in, and a first
        # step shorter than the cooldown (5 min) merges into the next: 23 or 24 steps.
        assert re.search(r"a plan of 2[34] steps, from \S+ to \S+", out), out
        assert re.search(r"Plan: +2[34] steps every 1h, ", out), out
        assert "Schedule (now: the step in effect" in out and "PREDICTED-PEAK" in out
        assert re.search(r"Active: step 1 of 2[34] \(at \S+\): scaled Deployment/web from 2 to \d+ replicas", out)
        assert re.search(r"step at \S+: Applied at \S+, 2 -> \d+ replicas", out), out
        # the policy's steps come at its own minute of the hour (plans.step_offset)
        minute = step_offset("scalegate-demo/web", 3600) // 60
        assert re.search(rf"next step at \d{{4}}-\d\d-\d\dT\d\d:{minute:02d}:00Z", out), out
        state = json.loads((tmp_path / "demo" / "state.json").read_text())
        pids = [state["operatorPid"], state["prometheusPid"]]
        # What the API server holds, not what the demo printed: a plan, Active, its first step applied.
        name = re.search(r"pending proposals, and (web-\S+) as an approver sees it", out).group(1)
        kube = Kube(api_client(state["kubeconfig"]))
        proposal = kube.get_proposal("scalegate-demo", name)
        schedule, status = proposal["spec"]["schedule"], proposal["status"]
        assert len(schedule) > 1 and proposal["spec"]["endsAt"] > schedule[-1]["at"]
        assert status["phase"] == "Active", status
        first = status["steps"][0]
        assert (first["at"], first["outcome"], first["previousReplicas"]) == (schedule[0]["at"], "Applied", 2)
        assert first["replicas"] == schedule[0]["replicas"] == kube.get_scale("scalegate-demo", WEB).replicas
        assert status["nextStepAt"] == schedule[1]["at"]
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
