"""Run the real operator as a subprocess against the test cluster, the way users run it.

Importable from tests as `operator_harness`.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import Cluster, wait_for

from scalegate.dev.cluster import free_port, stop_process

GROUP, VERSION = "scalegate.io", "v1alpha1"


class OperatorProcess:
    """`scalegate operator` in a subprocess; `kill()` is a SIGKILL, `stop()` a clean exit."""

    def __init__(self, kubeconfig: Path, log_path: Path, namespaces: list[str] | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None, health_port: int | None = None):
        """`env` replaces the environment (default: this process's); `prefix` runs the
        command under another one (e.g. `unshare` as another uid)."""
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.namespaces = namespaces or []
        self.extra_args = extra_args or []
        self.env = env
        self.prefix = prefix or []
        self.metrics_port = free_port()
        self.health_port = health_port
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "OperatorProcess":
        health = f"127.0.0.1:{self.health_port}" if self.health_port else "0"
        args = [*self.prefix, sys.executable, "-m", "scalegate.cli", "operator", "--kubeconfig", str(self.kubeconfig),
                "--metrics-bind-address", f"127.0.0.1:{self.metrics_port}", "--health-probe-bind-address", health,
                *self.extra_args]
        for namespace in self.namespaces:
            args += ["--namespace", namespace]
        log = open(self.log_path, "ab")
        env = dict(os.environ if self.env is None else self.env, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        if wait:
            wait_for(lambda: "scalegate operator started" in self.log() or self.proc.poll() is not None,
                     timeout=60, message="the operator to start")
            assert self.proc.poll() is None, f"operator exited:\n{self.log()[-3000:]}"
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        stop_process(self.proc, grace=30)


# -- object builders ------------------------------------------------------------------
def deployment(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": name, "image": "registry.invalid/app:1"}]}}},
    }


def policy(name: str, target: str, *, min_replicas: int = 1, max_replicas: int = 20, kind: str = "Deployment",
           **extra) -> dict:
    spec = {"targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
            "minReplicas": min_replicas, "maxReplicas": max_replicas, "cooldownSeconds": 0}
    spec.update(extra)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingPolicy", "metadata": {"name": name}, "spec": spec}


def proposal(name: str, policy_name: str, target: str, current: int, replicas: int, *,
             valid_for: float = 3600, kind: str = "Deployment", annotations: dict | None = None,
             labels: dict | None = None) -> dict:
    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=valid_for)
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal",
        "metadata": {"name": name, "labels": {"scalegate.io/policy": policy_name, **(labels or {})},
                     "annotations": annotations or {}},
        "spec": {"policyRef": {"name": policy_name},
                 "targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
                 "currentReplicas": current, "replicas": replicas,
                 "validUntil": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "reason": f"test: {current} -> {replicas}"},
    }


class Scenario:
    """Helpers bound to one namespace of the test cluster."""

    def __init__(self, cluster: Cluster, namespace: str, approver: str = "alice"):
        self.cluster = cluster
        self.namespace = namespace
        self.approver = approver
        self.custom = cluster.custom()

    def grant_approve(self, user: str | None = None) -> None:
        user = user or self.approver
        self.cluster.apply_yaml(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: test-approver, namespace: {self.namespace}}}
rules:
- apiGroups: [scalegate.io]
  resources: [scalingproposals]
  verbs: [get, list, watch, patch, update, approve]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: test-approver-{user}, namespace: {self.namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: test-approver}}
subjects: [{{kind: User, name: {user}, apiGroup: rbac.authorization.k8s.io}}]
""")

    def create(self, plural: str, body: dict) -> dict:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body)

    def deploy(self, name: str, replicas: int) -> dict:
        return self.cluster.apps().create_namespaced_deployment(self.namespace, deployment(name, replicas))

    def replicas(self, name: str) -> int:
        return self.cluster.apps().read_namespaced_deployment_scale(name, self.namespace).spec.replicas

    def get_proposal(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "scalingproposals", name)

    def get_policy(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "scalingpolicies", name)

    def approve(self, name: str, user: str | None = None, approved_by: str | None = None) -> dict:
        user = user or self.approver
        return self.cluster.custom(user=user).patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "scalingproposals", name,
            {"metadata": {"annotations": {"scalegate.io/approved": "true",
                                          "scalegate.io/approved-by": approved_by or user}}})

    def reject(self, name: str, user: str | None = None) -> dict:
        user = user or self.approver
        return self.cluster.custom(user=user).patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "scalingproposals", name,
            {"metadata": {"annotations": {"scalegate.io/rejected": "true", "scalegate.io/rejected-by": user}}})

    def wait_phase(self, name: str, phase: str, timeout: float = 30) -> dict:
        def reached():
            body = self.get_proposal(name)
            return body if (body.get("status") or {}).get("phase") == phase else None
        try:
            return wait_for(reached, timeout=timeout, interval=0.1, message=f"proposal {name} to be {phase}")
        except AssertionError as err:
            raise AssertionError(f"{err}\nstatus now: {self.get_proposal(name).get('status')}") from None

    def events_for(self, kind: str, name: str) -> list:
        events = self.cluster.core().list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}").items
        return events


def wait_steady(check, duration: float = 1.5, interval: float = 0.1) -> None:
    """Assert `check()` stays true for `duration` seconds (for 'nothing happens' claims)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert check()
        time.sleep(interval)


# -- leader election (issue 16) ---------------------------------------------------------
LEASE_NAMESPACE, LEASE_NAME = "scalegate", "scalegate-operator"


def leader_elect_args(lease_duration: float = 4, renew_deadline: float = 3, retry_period: float = 0.5) -> list[str]:
    """`scalegate operator` flags for leader election on the manifests' Lease (the only
    one the operator's Role may update), with short timings for tests."""
    return ["--leader-elect", "--leader-elect-lease-duration", str(lease_duration),
            "--leader-elect-renew-deadline", str(renew_deadline), "--leader-elect-retry-period", str(retry_period),
            "--leader-elect-namespace", LEASE_NAMESPACE, "--leader-elect-lease-name", LEASE_NAME]


def delete_lease(cluster: Cluster) -> None:
    """No Lease left by an earlier test: the first operator of a test creates it."""
    cluster.kubectl("delete", "lease", "-n", LEASE_NAMESPACE, LEASE_NAME, "--ignore-not-found", "--wait=true")


def lease_holder(cluster: Cluster) -> str:
    proc = cluster.kubectl("get", "lease", "-n", LEASE_NAMESPACE, LEASE_NAME, "-o",
                           "jsonpath={.spec.holderIdentity}", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def lease_acquired(cluster: Cluster) -> dt.datetime:
    """When the Lease's holder took it (its acquireTime, microseconds, UTC)."""
    stamp = cluster.kubectl("get", "lease", "-n", LEASE_NAMESPACE, LEASE_NAME, "-o",
                            "jsonpath={.spec.acquireTime}").stdout.strip()
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def is_leader(op: OperatorProcess) -> bool | None:
    """The operator's own scalegate_leader gauge (None when /metrics does not answer)."""
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("scalegate_leader{")]
    return bool(values) and values[0] == 1.0


def holds_lease(cluster: Cluster, op: OperatorProcess) -> bool:
    """Whether the Lease names this process (identities are "<host>/<pid>_<random>")."""
    return f"/{op.proc.pid}_" in lease_holder(cluster)


def writes_by(cluster: Cluster, op: OperatorProcess, since: dt.datetime | None = None) -> list[dict]:
    """Every write (successful or not) that the API server's audit log attributes to this
    operator process (its User-Agent names its identity), received after `since`. The
    dev cluster audits writes to workloads and to scalegate's objects."""
    assert cluster.dev is not None, "the audit log needs the dev cluster"
    marker = f"/{op.proc.pid}_"
    found = []
    for event in cluster.dev.audit_events():
        if event.get("stage") not in ("ResponseComplete", "Panic") or marker not in (event.get("userAgent") or ""):
            continue
        received = dt.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if since is None or received >= since:
            found.append(event)
    return found
