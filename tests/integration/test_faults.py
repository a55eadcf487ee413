"""Faults: the operator killed at random points, and another writer racing it.

CI runs a small slice; the full runs are the same tests with more rounds:
    SCALEGATE_FAULT_KILLS=50 SCALEGATE_FAULT_TARGETS=40 pytest tests/integration/test_faults.py
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from harness import Cluster, wait_for
from operator_harness import OperatorProcess, Scenario, policy, proposal
from scalegate.dev import DevCluster

KILLS = int(os.environ.get("SCALEGATE_FAULT_KILLS", "6"))
TARGETS = int(os.environ.get("SCALEGATE_FAULT_TARGETS", "12"))


def test_sigkill_during_a_burst_of_applies_never_scales_twice_nor_loses_an_outcome(
        cluster, namespace, component_kubeconfigs, tmp_path):
    s = Scenario(cluster, namespace)
    s.grant_approve()
    generations = {}
    for i in range(TARGETS):
        name = f"app-{i}"
        s.deploy(name, 2)
        s.create("scalingpolicies", policy(name, name, min_replicas=1, max_replicas=50))
        s.create("scalingproposals", proposal(name, name, name, current=2, replicas=3 + i % 5))
    apps = cluster.apps()
    for i in range(TARGETS):
        generations[f"app-{i}"] = apps.read_namespaced_deployment(f"app-{i}", namespace).metadata.generation
        s.approve(f"app-{i}")

    rng = random.Random(20261126)
    log = tmp_path / "operator.log"
    for _ in range(KILLS):
        op = OperatorProcess(component_kubeconfigs["operator"], log, namespaces=[namespace]).start(wait=False)
        # Kill anywhere from start-up to mid-burst.
        time.sleep(rng.uniform(0.3, 2.5))
        op.kill()

    final = OperatorProcess(component_kubeconfigs["operator"], log, namespaces=[namespace]).start()
    try:
        for i in range(TARGETS):
            s.wait_phase(f"app-{i}", "Applied", timeout=60)
    finally:
        final.stop()

    for i in range(TARGETS):
        name = f"app-{i}"
        deployment = apps.read_namespaced_deployment(name, namespace)
        assert deployment.spec.replicas == 3 + i % 5, name
        # Exactly one write to the spec: a second apply would have bumped it again.
        assert deployment.metadata.generation == generations[name] + 1, (
            f"{name} was written {deployment.metadata.generation - generations[name]} times")
        status = s.get_proposal(name)["status"]
        assert status["previousReplicas"] == 2 and status["appliedReplicas"] == 3 + i % 5
        assert "applying" not in status


def test_concurrent_writer_is_never_overwritten(cluster, namespace, operator):
    """Another writer keeps changing replicas while approvals arrive: each proposal is
    either applied from the replicas it saw, or Stale; none writes over the other writer."""
    s = Scenario(cluster, namespace)
    s.grant_approve()
    s.deploy("web", 4)
    s.create("scalingpolicies", policy("web", "web", min_replicas=1, max_replicas=100))
    apps = cluster.apps()
    stop = threading.Event()
    writes: list[int] = []

    def other_writer():
        value = 40
        while not stop.is_set():
            value += 1
            apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": value}})
            writes.append(value)
            time.sleep(0.05)

    outcomes = []
    thread = threading.Thread(target=other_writer)
    for round_ in range(5):
        current = apps.read_namespaced_deployment_scale("web", namespace).spec.replicas
        name = f"web-{round_}"
        s.create("scalingproposals", proposal(name, "web", "web", current=current, replicas=current + 2))
        if round_ == 0:
            thread.start()
        s.approve(name)
        body = wait_for(lambda: s.get_proposal(name).get("status", {}).get("phase") in ("Applied", "Stale")
                        and s.get_proposal(name), timeout=30, message=f"{name} decided")
        outcomes.append(body["status"])
    stop.set()
    thread.join()
    assert outcomes, "no outcomes"
    for status in outcomes:
        if status["phase"] == "Applied":
            # Applied only from the replicas it was based on: nothing of the other writer lost.
            assert status["previousReplicas"] + 2 == status["appliedReplicas"]
        else:
            assert status["reason"] == "TargetChanged"
    assert any(o["phase"] == "Stale" for o in outcomes), "the race never happened; the test proves nothing"


def test_api_server_and_etcd_restart_while_applying(tmp_path):
    """kube-apiserver and etcd crash (SIGKILL) and come back while approvals are being
    applied: the operator recovers by itself, applies each approved proposal exactly once,
    and applies nothing else. A private control plane, so the session's is not disturbed."""
    if os.environ.get("SCALEGATE_TEST_KUBECONFIG"):
        pytest.skip("restarts a dev control plane's processes")
    dev = DevCluster(state_dir=tmp_path / "cluster", log=lambda m: None)
    dev.up()
    try:
        cluster = Cluster(kubeconfig=dev.kubeconfig, dev=dev)
        cluster.install_crds()
        kubeconfigs = cluster.component_kubeconfigs(tmp_path)
        namespace = cluster.create_namespace("restart")
        s = Scenario(cluster, namespace)
        s.grant_approve()
        count = 8
        for i in range(count):
            s.deploy(f"app-{i}", 2)
            s.create("scalingpolicies", policy(f"app-{i}", f"app-{i}", min_replicas=1, max_replicas=20))
            s.create("scalingproposals", proposal(f"app-{i}", f"app-{i}", f"app-{i}", current=2, replicas=4))
        # One proposal stays unapproved: it must never be applied.
        s.deploy("idle", 2)
        s.create("scalingpolicies", policy("idle", "idle", min_replicas=1, max_replicas=20))
        s.create("scalingproposals", proposal("never", "idle", "idle", current=2, replicas=9))
        apps = cluster.apps()
        generations = {f"app-{i}": apps.read_namespaced_deployment(f"app-{i}", namespace).metadata.generation
                       for i in range(count)}
        op = OperatorProcess(kubeconfigs["operator"], tmp_path / "operator.log", namespaces=[namespace]).start()
        try:
            for i in range(count // 2):
                s.approve(f"app-{i}")
            dev.restart(("etcd", "kube-apiserver"))
            # Fresh clients: the old connections died with the server.
            cluster._clients.clear()
            s.custom = cluster.custom()
            for i in range(count // 2, count):
                s.approve(f"app-{i}")
            for i in range(count):
                s.wait_phase(f"app-{i}", "Applied", timeout=120)
            assert op.proc.poll() is None, "the operator died instead of recovering"
        finally:
            op.stop()
        for i in range(count):
            deployment = cluster.apps().read_namespaced_deployment(f"app-{i}", namespace)
            assert deployment.spec.replicas == 4
            assert deployment.metadata.generation == generations[f"app-{i}"] + 1
        assert s.get_proposal("never")["status"]["phase"] == "Pending"
        assert cluster.apps().read_namespaced_deployment("idle", namespace).spec.replicas == 2
    finally:
        dev.down(quiet=True)
