"""Operator failover through the leader Lease (issue 16), on the real API server.

Two `scalegate operator --leader-elect` processes, as the operator's ServiceAccount with
the RBAC of manifests/, on short timings (lease 4 s, renew deadline 3 s, retry 0.5 s).
Every scale write is witnessed by the API server's audit log, and attributed to one of
the two processes by its User-Agent, which names the identity it holds the Lease as.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
import urllib.request

import pytest
from harness import Cluster, wait_for
from operator_harness import (
    OperatorProcess,
    Scenario,
    delete_lease,
    holds_lease,
    is_leader,
    leader_elect_args,
    lease_acquired,
    policy,
    proposal,
    writes_by,
)

from scalegate.dev.cluster import free_port
from scalegate.reconciler import FAULT_ENV, FAULT_SIGNAL_ENV

LEASE_DURATION, RENEW_DEADLINE, RETRY = 4.0, 3.0, 0.5
# Observation lag (a retry period, jittered) + a retry period to take it + slow requests.
TAKEOVER_MARGIN = 4.0

pytestmark = pytest.mark.skipif(bool(os.environ.get("SCALEGATE_TEST_KUBECONFIG")),
                                reason="witnesses writes with the dev cluster's audit log")


def operator(kubeconfig, path, namespace: str, env: dict | None = None, health: bool = False) -> OperatorProcess:
    return OperatorProcess(kubeconfig, path, namespaces=[namespace], env=env,
                           extra_args=leader_elect_args(LEASE_DURATION, RENEW_DEADLINE, RETRY),
                           health_port=free_port() if health else None)


def wait_leader(cluster: Cluster, op: OperatorProcess, timeout: float = 30) -> float:
    """Wait until `op` says it leads and the Lease names it; the time it took."""
    start = time.monotonic()
    wait_for(lambda: is_leader(op) and holds_lease(cluster, op), timeout=timeout, interval=0.05,
             message=f"operator {op.proc.pid} to lead")
    return time.monotonic() - start


def wait_standby(op: OperatorProcess) -> None:
    wait_for(lambda: "standing by as" in op.log() and is_leader(op) is False, timeout=30,
             message=f"operator {op.proc.pid} to stand by")


def health(op: OperatorProcess) -> tuple[int, dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/healthz", timeout=5) as response:
        return response.status, json.loads(response.read())


def scale_writes_by_agent(cluster: Cluster, namespace: str, name: str) -> list[str]:
    """The User-Agent of each successful write of the target's replicas."""
    return [e.get("userAgent") or "" for e in cluster.scale_writes(namespace, name)]


@pytest.fixture
def lease(cluster: Cluster):
    delete_lease(cluster)
    yield
    delete_lease(cluster)


def test_standby_takes_over_a_killed_leader_mid_burst_and_applies_each_approval_once(
        cluster: Cluster, namespace: str, component_kubeconfigs, tmp_path, lease):
    s = Scenario(cluster, namespace)
    s.grant_approve()
    count = 16
    for i in range(count):
        s.deploy(f"web-{i}", 2)
        s.create("scalingpolicies", policy(f"web-{i}", f"web-{i}"))
        s.create("scalingproposals", proposal(f"web-{i}-1", f"web-{i}", f"web-{i}", current=2, replicas=3 + i))
    kubeconfig = component_kubeconfigs["operator"]
    a = operator(kubeconfig, tmp_path / "a.log", namespace, health=True).start()
    b = None
    try:
        wait_leader(cluster, a)
        b = operator(kubeconfig, tmp_path / "b.log", namespace, health=True).start()
        wait_standby(b)
        for i in range(count):
            s.wait_phase(f"web-{i}-1", "Pending", timeout=60)  # the leader decided them; the standby did not
        # Readiness: both answer 200 (a standby can take over), each naming its role.
        (code_a, body_a), (code_b, body_b) = health(a), health(b)
        assert (code_a, body_a["leaderElection"]["role"]) == (200, "leader"), body_a
        assert (code_b, body_b["leaderElection"]["role"]) == (200, "standby"), body_b
        assert body_b["leaderElection"]["holder"] == body_a["leaderElection"]["identity"]

        # A burst of approvals; the leader is killed once it has applied a few, likely mid-apply.
        for i in range(count // 2):
            s.approve(f"web-{i}-1")
        wait_for(lambda: any((s.get_proposal(f"web-{i}-1").get("status") or {}).get("phase") == "Applied"
                             for i in range(count // 2)), timeout=30, interval=0.02, message="a first apply")
        killed = dt.datetime.now(dt.timezone.utc)
        a.kill()
        for i in range(count // 2, count):
            s.approve(f"web-{i}-1")
        took = wait_leader(cluster, b, timeout=LEASE_DURATION + 30)
        # Timed by the Lease itself (the standby's acquireTime), not by this test's polling,
        # which a loaded machine slows.
        takeover = (lease_acquired(cluster) - killed).total_seconds()
        print(f"standby led {takeover:.2f}s after the leader's SIGKILL (lease {LEASE_DURATION:g}s)")
        assert takeover <= LEASE_DURATION + TAKEOVER_MARGIN, f"takeover took {takeover:.1f}s ({took:.1f}s polled)"

        for i in range(count):
            s.wait_phase(f"web-{i}-1", "Applied", timeout=60)
        for i in range(count):
            assert s.replicas(f"web-{i}") == 3 + i
            agents = scale_writes_by_agent(cluster, namespace, f"web-{i}")
            assert len(agents) == 1, f"web-{i} was written {len(agents)} times: {agents}"
        by_a = sum(1 for i in range(count) if f"/{a.proc.pid}_" in scale_writes_by_agent(cluster, namespace,
                                                                                          f"web-{i}")[0])
        print(f"{by_a} of {count} applied by the killed leader, {count - by_a} by its successor")
        assert 0 < by_a < count
    finally:
        a.kill()
        if b is not None:
            b.stop()


@pytest.mark.parametrize("point, leader_writes", [("after-intent", 0), ("after-scale-write", 1)])
def test_a_takeover_mid_apply_finishes_it_with_exactly_one_write(
        cluster: Cluster, namespace: str, component_kubeconfigs, tmp_path, lease, point, leader_writes):
    """The leader dies between the writes of an apply; the standby finds its intent and
    either applies (the scale write never landed) or only records it (it landed)."""
    s = Scenario(cluster, namespace)
    s.grant_approve()
    s.deploy("web", 4)
    s.create("scalingpolicies", policy("web", "web"))
    s.create("scalingproposals", proposal("web-1", "web", "web", current=4, replicas=7))
    kubeconfig = component_kubeconfigs["operator"]
    a = operator(kubeconfig, tmp_path / "a.log", namespace, env=dict(os.environ, **{FAULT_ENV: point})).start()
    b = None
    try:
        wait_leader(cluster, a)
        b = operator(kubeconfig, tmp_path / "b.log", namespace).start()
        wait_standby(b)
        s.approve("web-1")
        wait_for(lambda: a.proc.poll() is not None, timeout=30, message=f"the leader to die at {point}")
        assert a.proc.returncode == -signal.SIGKILL
        s.wait_phase("web-1", "Applied", timeout=LEASE_DURATION + 30)
        assert s.replicas("web") == 7
        agents = scale_writes_by_agent(cluster, namespace, "web")
        assert len(agents) == 1, agents
        assert sum(f"/{a.proc.pid}_" in agent for agent in agents) == leader_writes, agents
    finally:
        a.kill()
        if b is not None:
            b.stop()


def test_a_leader_paused_past_its_renew_deadline_writes_nothing_after_resuming(
        cluster: Cluster, namespace: str, component_kubeconfigs, tmp_path, lease):
    """The leader is paused (SIGSTOP, by the fault hook) right after recording its intent,
    its scale write about to be sent. The standby takes over and applies; the old leader,
    resumed, must not send that write, nor any other."""
    s = Scenario(cluster, namespace)
    s.grant_approve()
    s.deploy("web", 4)
    s.create("scalingpolicies", policy("web", "web"))
    s.create("scalingproposals", proposal("web-1", "web", "web", current=4, replicas=7))
    kubeconfig = component_kubeconfigs["operator"]
    env = dict(os.environ, **{FAULT_ENV: "after-intent", FAULT_SIGNAL_ENV: "STOP"})
    a = operator(kubeconfig, tmp_path / "a.log", namespace, env=env).start()
    b = None
    try:
        wait_leader(cluster, a)
        b = operator(kubeconfig, tmp_path / "b.log", namespace).start()
        wait_standby(b)
        s.approve("web-1")
        wait_for(lambda: f"{FAULT_ENV}=after-intent: pausing the operator here" in a.log(), timeout=30,
                 message="the leader to pause after its intent")
        paused = time.monotonic()
        wait_leader(cluster, b, timeout=LEASE_DURATION + 30)
        s.wait_phase("web-1", "Applied", timeout=30)
        assert time.monotonic() - paused > RENEW_DEADLINE
        resumed = dt.datetime.now(dt.timezone.utc)
        a.proc.send_signal(signal.SIGCONT)
        # It resumes where it stopped (a worker about to write the scale) and its lease loop
        # finds the Lease taken; give both time to act.
        wait_for(lambda: "now held by" in a.log(), timeout=30, message="the resumed leader to see the new holder")
        time.sleep(3 * RETRY + 1)
        assert a.proc.poll() is None, a.log()[-3000:]
        assert is_leader(a) is False
        after = writes_by(cluster, a, since=resumed)
        assert after == [], [(e["verb"], e["objectRef"], (e.get("responseStatus") or {}).get("code")) for e in after]
        # The write it was about to send was refused, not lost in a race.
        wait_for(lambda: "NotLeader" in a.log(), timeout=30, message="the resumed leader's write refused")
        agents = scale_writes_by_agent(cluster, namespace, "web")
        everything = [(e["requestReceivedTimestamp"], e["verb"], e["objectRef"].get("resource"),
                       e["objectRef"].get("subresource"), (e.get("responseStatus") or {}).get("code"))
                      for e in writes_by(cluster, a)]
        assert len(agents) == 1 and f"/{b.proc.pid}_" in agents[0], (agents, everything, resumed)
        assert s.replicas("web") == 7
    finally:
        if a.proc and a.proc.poll() is None:
            a.proc.send_signal(signal.SIGCONT)
        a.kill()
        if b is not None:
            b.stop()
