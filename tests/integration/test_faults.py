"""Faults: the operator killed at each write of an apply, and another writer racing it.

Every scale write is witnessed by the API server's audit log (`Cluster.scale_writes`), never
by the operator's own record. The operator is killed where it claims to be by the test hook
SCALEGATE_FAULT_POINT (reconciler.fault_hook_from_env), and each test checks, before the
restart, that the kill landed there: the process died of SIGKILL, and the API server holds
exactly the writes made before that point.

CI runs a small slice; the full runs are the same tests with more rounds:
    SCALEGATE_FAULT_KILLS=50 SCALEGATE_FAULT_TARGETS=40 SCALEGATE_FAULT_RACES=200 \\
        pytest tests/integration/test_faults.py
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import kubernetes
import pytest
from harness import Cluster, wait_for
from operator_harness import OperatorProcess, Scenario, policy, proposal, wait_steady

from scalegate.dev import DevCluster
from scalegate.reconciler import FAULT_ENV, FAULT_POINTS
from scalegate.records import APPLY_INTENT, OUTCOME

KILLS = int(os.environ.get("SCALEGATE_FAULT_KILLS", "6"))
TARGETS = int(os.environ.get("SCALEGATE_FAULT_TARGETS", "12"))
RACES = int(os.environ.get("SCALEGATE_FAULT_RACES", "8"))
OPERATOR = "system:serviceaccount:scalegate:operator"

pytestmark = pytest.mark.skipif(bool(os.environ.get("SCALEGATE_TEST_KUBECONFIG")),
                                reason="witnesses writes with the dev cluster's audit log")


def operator_write_codes(cluster: Cluster, namespace: str, name: str) -> list[int]:
    """The HTTP status of each write of the target's scale by the operator, as the API
    server's audit log recorded it (0 when it recorded none)."""
    codes = []
    for event in cluster.dev.audit_events():
        ref = event.get("objectRef") or {}
        if (event.get("stage") in ("ResponseComplete", "Panic") and event.get("verb") in ("update", "patch")
                and (ref.get("namespace"), ref.get("name"), ref.get("subresource")) == (namespace, name, "scale")
                and (event.get("user") or {}).get("username") == OPERATOR):
            codes.append(int((event.get("responseStatus") or {}).get("code") or 0))
    return codes


def operator_writes(cluster: Cluster, namespace: str, name: str) -> int:
    """The operator's successful writes of the target's scale (audit log)."""
    return sum(1 for code in operator_write_codes(cluster, namespace, name) if 200 <= code < 300)


def written_once(cluster: Cluster, namespace: str, name: str, generation: int) -> None:
    """Where kills land at random, a scale write may be cut off with the operator: the API
    server may have applied it, or not, and records it without a success status (an
    unknown outcome, 5xx or none). So: at most one write recorded as successful, at least
    one that may have landed, and the API server's own count of changes to the spec (the
    generation) moved exactly once."""
    codes = operator_write_codes(cluster, namespace, name)
    landed = [c for c in codes if 200 <= c < 300]
    unknown = [c for c in codes if c == 0 or c >= 500]
    assert len(landed) <= 1 and len(landed) + len(unknown) >= 1, f"{name}: operator writes {codes}"
    now = cluster.apps().read_namespaced_deployment(name, namespace).metadata.generation
    assert now == generation + 1, f"{name}: the spec changed {now - generation} times; operator writes {codes}"


def annotations(s: Scenario, name: str) -> dict:
    return s.get_proposal(name)["metadata"].get("annotations") or {}


def killed_at(point: str, kubeconfig, log, namespace: str) -> OperatorProcess:
    """Run the operator with the fault hook at `point` until the hook kills it."""
    env = dict(os.environ, **{FAULT_ENV: point})
    op = OperatorProcess(kubeconfig, log, namespaces=[namespace], env=env).start(wait=False)
    wait_for(lambda: op.proc.poll() is not None, timeout=90, message=f"the operator to be killed at {point}")
    assert op.proc.returncode == -signal.SIGKILL, f"exit {op.proc.returncode}, not SIGKILL:\n{op.log()[-3000:]}"
    assert f"{FAULT_ENV}={point}: killing the operator here" in op.log(), op.log()[-3000:]
    return op


# What the API server holds when the hook fires at each point: (operator scale writes,
# intent recorded, outcome recorded, lastAppliedTime written, status phase).
AT_THE_KILL = {
    "before-intent": (0, False, False, False, "Pending"),
    "after-intent": (0, True, False, False, "Pending"),
    "after-scale-write": (1, True, False, False, "Pending"),
    "after-policy-status": (1, True, False, True, "Pending"),
    "after-outcome-record": (1, False, True, True, "Pending"),
    "after-proposal-status": (1, False, True, True, "Applied"),
}


def test_every_fault_point_is_tested():
    assert set(AT_THE_KILL) == set(FAULT_POINTS)


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_killed_at_each_write_of_an_apply_a_restart_applies_exactly_once(cluster, namespace, component_kubeconfigs,
                                                                        tmp_path, point):
    s = Scenario(cluster, namespace)
    s.grant_approve()
    s.deploy("web", 4)
    s.create("scalingpolicies", policy("web", "web", cooldownSeconds=600))
    s.create("scalingproposals", proposal("web-1", "web", "web", current=4, replicas=6))
    s.approve("web-1")  # before any operator runs: the first one applies at once
    log = tmp_path / "operator.log"
    killed_at(point, component_kubeconfigs["operator"], log, namespace)

    writes, intent, outcome, cooled, phase = AT_THE_KILL[point]
    assert operator_writes(cluster, namespace, "web") == writes
    assert s.replicas("web") == (6 if writes else 4)
    assert (APPLY_INTENT in annotations(s, "web-1"), OUTCOME in annotations(s, "web-1")) == (intent, outcome)
    assert ("lastAppliedTime" in (s.get_policy("web").get("status") or {})) == cooled
    assert ((s.get_proposal("web-1").get("status") or {}).get("phase") or "Pending") == phase

    op = OperatorProcess(component_kubeconfigs["operator"], log, namespaces=[namespace]).start()
    try:
        status = s.wait_phase("web-1", "Applied", timeout=60)["status"]
        wait_steady(lambda: operator_writes(cluster, namespace, "web") == 1, duration=2)
    finally:
        op.stop()
    assert (status["previousReplicas"], status["appliedReplicas"], status["approvedBy"]) == (4, 6, "alice")
    assert s.replicas("web") == 6
    record = json.loads(annotations(s, "web-1")[OUTCOME])
    assert (record["phase"], record["previousReplicas"], record["appliedReplicas"]) == ("Applied", 4, 6)
    assert APPLY_INTENT not in annotations(s, "web-1") and "applying" not in status
    assert s.get_policy("web")["status"]["lastAppliedProposal"] == "web-1"


def test_a_write_undone_before_the_restart_is_never_made_again(cluster, namespace, component_kubeconfigs, tmp_path):
    """Issue 15's window: the operator's write lands, another writer sets the previous
    replicas back, and the operator restarts before recording anything. The replicas look
    as if nothing was written; the target's generation, recorded in the intent, says the
    spec changed twice since. The operator fails closed (Stale) and never scales again."""
    s = Scenario(cluster, namespace)
    s.grant_approve()
    s.deploy("web", 4)
    s.create("scalingpolicies", policy("web", "web"))
    s.create("scalingproposals", proposal("web-1", "web", "web", current=4, replicas=6))
    s.approve("web-1")
    log = tmp_path / "operator.log"
    killed_at("after-scale-write", component_kubeconfigs["operator"], log, namespace)
    assert s.replicas("web") == 6 and operator_writes(cluster, namespace, "web") == 1
    cluster.apps().patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 4}})  # undone

    op = OperatorProcess(component_kubeconfigs["operator"], log, namespaces=[namespace]).start()
    try:
        status = s.wait_phase("web-1", "Stale", timeout=60)["status"]
        wait_steady(lambda: s.replicas("web") == 4, duration=3)
    finally:
        op.stop()
    assert status["reason"] == "TargetChanged" and "cannot be told" in status["message"]
    # The API server's record: our write, then the undo, and nothing after it.
    assert [w["user"]["username"] == OPERATOR for w in cluster.scale_writes(namespace, "web")] == [True, False]


def test_sigkill_during_a_burst_of_applies_never_scales_twice_nor_loses_an_outcome(
        cluster, namespace, component_kubeconfigs, tmp_path):
    """A soak test on top of the fault points above: kills at random times during a burst.
    Whatever they hit, each target's spec is changed exactly once (see `written_once`)."""
    s = Scenario(cluster, namespace)
    s.grant_approve()
    for i in range(TARGETS):
        name = f"app-{i}"
        s.deploy(name, 2)
        s.create("scalingpolicies", policy(name, name, min_replicas=1, max_replicas=50))
        s.create("scalingproposals", proposal(name, name, name, current=2, replicas=3 + i % 5))
    generations = {f"app-{i}": cluster.apps().read_namespaced_deployment(f"app-{i}", namespace).metadata.generation
                   for i in range(TARGETS)}
    for i in range(TARGETS):
        s.approve(f"app-{i}")

    rng = random.Random(20261126)
    log = tmp_path / "operator.log"
    for _ in range(KILLS):
        op = OperatorProcess(component_kubeconfigs["operator"], log, namespaces=[namespace]).start(wait=False)
        time.sleep(rng.uniform(2.0, 5.0))  # importing the operator alone takes about 2 s here
        op.kill()

    final = OperatorProcess(component_kubeconfigs["operator"], log, namespaces=[namespace]).start()
    try:
        for i in range(TARGETS):
            s.wait_phase(f"app-{i}", "Applied", timeout=60)
    finally:
        final.stop()
    for i in range(TARGETS):
        name = f"app-{i}"
        assert s.replicas(name) == 3 + i % 5, name
        written_once(cluster, namespace, name, generations[name])
        status = s.get_proposal(name)["status"]
        assert status["previousReplicas"] == 2 and status["appliedReplicas"] == 3 + i % 5
        assert APPLY_INTENT not in annotations(s, name)


# -- another writer --------------------------------------------------------------------------
def replica_history(cluster: Cluster, namespace: str, name: str, stop: threading.Event,
                    into: list[tuple[int, int]]) -> threading.Thread:
    """Every version of the Deployment's replicas, in the API server's own order (a watch
    from the list's resourceVersion): (resourceVersion, replicas)."""
    apps = kubernetes.client.AppsV1Api(cluster.api_client())
    start = apps.read_namespaced_deployment(name, namespace)
    into.append((int(start.metadata.resource_version), start.spec.replicas))

    def run() -> None:
        version = start.metadata.resource_version
        while not stop.is_set():
            watch = kubernetes.watch.Watch()
            for event in watch.stream(apps.list_namespaced_deployment, namespace,
                                      field_selector=f"metadata.name={name}", resource_version=version,
                                      timeout_seconds=2):
                obj = event["object"]
                version = obj.metadata.resource_version
                into.append((int(version), obj.spec.replicas))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_concurrent_writer_is_never_overwritten(cluster, namespace, component_kubeconfigs, tmp_path):
    """Another writer changes the replicas at random moments while proposals are approved.
    Its writes set even replicas, the proposals odd ones (current + 1), so the API server's
    own history of the Deployment tells whose write each version is. Every write of the
    operator must sit directly on the version its proposal was based on (nothing of the
    other writer's in between: never an overwrite), each proposal is either Applied exactly
    once or Stale with no write, and the audit log agrees on who wrote how often."""
    s = Scenario(cluster, namespace)
    s.grant_approve()
    s.deploy("web", 1000)
    s.create("scalingpolicies", policy("web", "web", min_replicas=1, max_replicas=100000))
    apps = cluster.apps()
    history: list[tuple[int, int]] = []
    stop = threading.Event()
    watcher = replica_history(cluster, namespace, "web", stop, history)
    rng = random.Random(15)
    other = [1000]
    op = OperatorProcess(component_kubeconfigs["operator"], tmp_path / "operator.log", namespaces=[namespace]).start()
    outcomes = {}
    try:
        for round_ in range(RACES):
            current = apps.read_namespaced_deployment_scale("web", namespace).spec.replicas
            name = f"web-{round_}"
            base = current if current % 2 == 0 else current + 1  # the other writer's next values stay even
            replicas = current + 1 if current % 2 == 0 else current + 2  # the operator's always odd
            s.create("scalingproposals", proposal(name, "web", "web", current=current, replicas=replicas))

            def other_writes(base: int = base) -> None:
                other.append(max(other[-1], base) + 2)
                apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": other[-1]}})

            # The first round's other write lands before the approval, so at least one
            # proposal must go Stale whatever the timing; the later rounds race at random.
            if round_ == 0:
                other_writes()
            s.approve(name)
            for _ in range(rng.randint(0, 2) if round_ else 0):
                time.sleep(rng.uniform(0.0, 0.25))
                other_writes()
            outcomes[name] = wait_for(
                lambda name=name: (st := s.get_proposal(name).get("status") or {}).get("phase") in ("Applied", "Stale")
                and st, timeout=30, message=f"{name} decided")
    finally:
        op.stop()
        time.sleep(1)
        stop.set()
        watcher.join(timeout=10)

    changes = [(rv, r) for i, (rv, r) in enumerate(history) if i == 0 or r != history[i - 1][1]]
    values = [r for _, r in changes]
    # The watch saw every write of the replicas the audit log saw (nothing missed between them).
    audited = [w for w in cluster.scale_writes(namespace, "web") if w["objectRef"].get("subresource") == "scale"]
    assert len(values) - 1 == len(audited), (values, len(history))
    applied = {name: st for name, st in outcomes.items() if st["phase"] == "Applied"}
    for st in outcomes.values():
        assert st["phase"] == "Applied" or st["reason"] == "TargetChanged", st
    odd = [i for i, r in enumerate(values) if r % 2 == 1]
    assert len(odd) == len(applied) == operator_writes(cluster, namespace, "web")
    # The operator's writes: each directly on top of the version its proposal saw.
    receipts = {(st["previousReplicas"], st["appliedReplicas"]) for st in applied.values()}
    assert {(values[i - 1], values[i]) for i in odd} == receipts, values
    assert all(v in values for v in other[1:]), "a write of the other writer is missing from the history"
    assert outcomes["web-0"]["phase"] == "Stale", "a write before the approval was overwritten"
    assert applied, "nothing was applied: the test proves nothing"


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
        generations = {f"app-{i}": cluster.apps().read_namespaced_deployment(f"app-{i}", namespace).metadata.generation
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
                # Generous: a second control plane restarting on a shared 2-core machine.
                s.wait_phase(f"app-{i}", "Applied", timeout=300)
            assert op.proc.poll() is None, "the operator died instead of recovering"
        finally:
            op.stop()
        for i in range(count):
            assert cluster.apps().read_namespaced_deployment(f"app-{i}", namespace).spec.replicas == 4
            written_once(cluster, namespace, f"app-{i}", generations[f"app-{i}"])
        assert s.get_proposal("never")["status"]["phase"] == "Pending"
        assert cluster.apps().read_namespaced_deployment("idle", namespace).spec.replicas == 2
        assert operator_writes(cluster, namespace, "idle") == 0
    finally:
        dev.down(quiet=True)
