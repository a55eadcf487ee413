"""What a real Pod does to a process, reproduced around `scalegate operator`: a uid with
no passwd entry and no USER/LOGNAME/HOME (the image's 65532 under containerd), settings
that arrive only through the ConfigMap's environment, probes on a bound address, and
SIGTERM when the Pod stops.

The uid without a passwd entry comes from a user namespace (`unshare --user
--map-user=65532`): inside it the process's uid is 65532 and no name resolves, exactly as
in the container, while its files stay readable. The e2e tests on a real kubelet run the
image itself.
"""

from __future__ import annotations

import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from harness import Cluster, wait_for
from operator_harness import OperatorProcess, Scenario, policy, proposal

from scalegate.dev.cluster import free_port

PROPOSALS, POLICIES = "scalingproposals", "scalingpolicies"
IMAGE_UID = 65532


def _unnamed_uid_prefix() -> list[str]:
    """A command prefix that runs as IMAGE_UID with no passwd entry, or skip saying why."""
    try:
        pwd.getpwuid(IMAGE_UID)
        pytest.skip(f"uid {IMAGE_UID} has a passwd entry on this machine; the test needs one without")
    except KeyError:
        pass
    unshare = shutil.which("unshare")
    if not unshare:
        pytest.skip("unshare (util-linux) is not installed")
    prefix = [unshare, "--user", f"--map-user={IMAGE_UID}", f"--map-group={IMAGE_UID}"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import os; print(os.getuid())"],
                           capture_output=True, text=True, timeout=60, env={})
    if probe.returncode != 0 or probe.stdout.strip() != str(IMAGE_UID):
        pytest.skip(f"user namespaces are not available here: {probe.stderr.strip()[-300:]}")
    return prefix


def _pod_like_env(**extra: str) -> dict[str, str]:
    """What a container's process gets: PATH and the Deployment's variables; no USER,
    LOGNAME or HOME (the image sets HOME=/tmp, set here too)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", **extra}


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def readable_kubeconfig(cluster: Cluster) -> Path:
    """The operator's ServiceAccount kubeconfig in a directory any uid can read."""
    directory = Path(tempfile.mkdtemp(prefix="scalegate-runtime-"))
    directory.chmod(0o755)
    try:
        cluster.component_kubeconfigs(directory)
        for path in directory.iterdir():
            path.chmod(0o644)
        yield directory / "kubeconfig-scalegate-operator"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_operator_runs_as_a_uid_without_a_name_and_stops_cleanly_on_sigterm(
        scenario: Scenario, readable_kubeconfig: Path, tmp_path: Path):
    prefix = _unnamed_uid_prefix()
    s = scenario
    health = free_port()
    operator = OperatorProcess(readable_kubeconfig, tmp_path / "operator.log", namespaces=[s.namespace],
                               env=_pod_like_env(POD_NAME="scalegate-operator-7d9f-abcde"), prefix=prefix,
                               health_port=health)
    operator.start(wait=False)
    try:
        wait_for(lambda: _healthy(health) or operator.proc.poll() is not None, timeout=60,
                 message="the operator's /healthz")
        assert operator.proc.poll() is None, f"operator exited:\n{operator.log()[-3000:]}"
        assert "getpwuid" not in operator.log()

        # It works, not only starts: an approved proposal is applied by this process.
        s.deploy("web", 2)
        s.create(POLICIES, policy("web", "web", min_replicas=1, max_replicas=10))
        s.create(PROPOSALS, proposal("web-1", "web", "web", current=2, replicas=4))
        s.approve("web-1")
        s.wait_phase("web-1", "Applied")
        assert s.replicas("web") == 4

        operator.proc.send_signal(signal.SIGTERM)
        code = operator.proc.wait(timeout=30)
        assert code == 0, f"exit code {code} on SIGTERM:\n{operator.log()[-3000:]}"
    finally:
        operator.kill()


def test_a_configmap_value_reaches_a_running_operator(scenario: Scenario, component_kubeconfigs,
                                                      tmp_path: Path):
    """Retention and sweep interval set only in the ConfigMap (as envFrom hands them to the
    Pod) take effect: a rejected proposal is deleted about a second after it finished.
    With the built-in defaults (7 days, hourly) it would stay."""
    s = scenario
    configmap = s.cluster.core().create_namespaced_config_map(s.namespace, {
        "metadata": {"name": "scalegate-config"},
        "data": {"SCALEGATE_RETENTION_SECONDS": "1", "SCALEGATE_GC_INTERVAL_SECONDS": "1"}})
    environment = dict(_pod_like_env(), **configmap.data, PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    operator = OperatorProcess(component_kubeconfigs["operator"], tmp_path / "operator.log",
                               namespaces=[s.namespace], env=environment).start()
    try:
        s.deploy("web", 2)
        s.create(POLICIES, policy("web", "web"))
        s.create(PROPOSALS, proposal("web-1", "web", "web", current=2, replicas=4))
        s.wait_phase("web-1", "Pending")
        s.reject("web-1")
        s.wait_phase("web-1", "Rejected")

        def gone() -> bool:
            names = [item["metadata"]["name"] for item in s.custom.list_namespaced_custom_object(
                "scalegate.io", "v1alpha1", s.namespace, PROPOSALS)["items"]]
            return "web-1" not in names
        wait_for(gone, timeout=30, interval=0.2, message="the sweep configured by the ConfigMap")
        assert "retention 1s" in operator.log()
    finally:
        operator.stop()


def test_a_flag_overrides_the_configmap(scenario: Scenario, component_kubeconfigs, tmp_path: Path):
    environment = dict(_pod_like_env(), SCALEGATE_WORKERS="3", PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    operator = OperatorProcess(component_kubeconfigs["operator"], tmp_path / "operator.log",
                               namespaces=[scenario.namespace], env=environment,
                               extra_args=["--workers", "5"]).start()
    try:
        assert "5 workers" in operator.log()
    finally:
        operator.stop()


def test_a_bad_setting_is_refused_at_start_with_its_name(component_kubeconfigs, tmp_path: Path):
    environment = dict(_pod_like_env(), SCALEGATE_WORKERS="many", PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    proc = subprocess.run([sys.executable, "-m", "scalegate.cli", "operator", "--kubeconfig",
                           str(component_kubeconfigs["operator"])], env=environment, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "SCALEGATE_WORKERS='many' is not a valid int" in proc.stderr
