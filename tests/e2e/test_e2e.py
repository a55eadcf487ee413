"""End to end: scalegate's image running as Pods on a real kubelet, installed as a user
installs it (`kubectl apply -f crds/ && kubectl apply -k OVERLAY`), through the approval
scenarios, with the operator and the forecaster in their Pods under their own
ServiceAccounts. One body per scenario, run on each target of conftest.py (the dev node
here; kind where Docker runs); a target the machine cannot host is skipped with the reason.
"""

from __future__ import annotations

import re
import time

import kubernetes
import pytest
from e2e.targets import NAMESPACE, Installed
from harness import wait_for
from operator_harness import Scenario, policy, proposal, wait_steady

pytestmark = pytest.mark.e2e

OPERATOR = "system:serviceaccount:scalegate:operator"
FORECASTER = "system:serviceaccount:scalegate:forecaster"
POLICY_LABEL = "scalegate.io/policy"


def propose(s: Scenario, body: dict) -> dict:
    """Create a proposal as the forecaster's ServiceAccount does (the admission policy
    wants the proposer named, and never lets it approve its own proposal)."""
    body["metadata"]["annotations"]["scalegate.io/proposed-by"] = FORECASTER
    return s.cluster.custom(user=FORECASTER).create_namespaced_custom_object(
        "scalegate.io", "v1alpha1", s.namespace, "scalingproposals", body)


def operator_writes(s: Scenario, target: str) -> list[dict] | None:
    """The operator's writes of `target`'s replicas, as the API server recorded them (None
    where the test cannot read the API server's audit log)."""
    if not s.cluster.has_audit_log:
        return None
    return s.cluster.scale_writes(s.namespace, target, user=OPERATOR)


def test_pods_run_the_image_as_its_unnamed_user_and_only_the_host_network_is_relaxed(e2e: Installed):
    for component in ("operator", "forecaster"):
        [pod] = [p for p in e2e.pods(component) if p.metadata.deletion_timestamp is None]
        [status] = pod.status.container_statuses
        assert status.ready and status.restart_count == 0, f"{component}: {status}\n{e2e.target.logs()}"
        assert pod.spec.security_context.run_as_user == 65532
        container = pod.spec.containers[0]
        assert container.security_context.read_only_root_filesystem is True
        assert container.security_context.capabilities.drop == ["ALL"]
    # The namespace still warns at the restricted level: the only violation is the host network.
    violations = re.findall(r'would violate PodSecurity "restricted:latest": (.*)', e2e.warnings)
    assert all(v.strip() == "host namespaces (hostNetwork=true)" for v in violations), e2e.warnings


def test_approved_proposal_is_applied_by_the_operator_pod(scenario: Scenario):
    s = scenario
    s.deploy("web", 2)
    s.create("scalingpolicies", policy("web", "web", min_replicas=1, max_replicas=10))
    propose(s, proposal("web-1", "web", "web", current=2, replicas=4))
    s.wait_phase("web-1", "Pending", timeout=60)
    s.approve("web-1")
    status = s.wait_phase("web-1", "Applied", timeout=60)["status"]
    assert s.replicas("web") == 4
    assert (status["approvedBy"], status["previousReplicas"], status["appliedReplicas"]) == ("alice", 2, 4)
    writes = operator_writes(s, "web")
    assert writes is None or len(writes) == 1, writes


def test_rejected_proposal_is_never_applied(scenario: Scenario):
    s = scenario
    s.deploy("web", 2)
    s.create("scalingpolicies", policy("web", "web", min_replicas=1, max_replicas=10))
    propose(s, proposal("web-1", "web", "web", current=2, replicas=5))
    s.wait_phase("web-1", "Pending", timeout=60)
    s.reject("web-1")
    s.wait_phase("web-1", "Rejected", timeout=60)
    wait_steady(lambda: s.replicas("web") == 2, duration=3)
    assert operator_writes(s, "web") in (None, [])


def test_out_of_bounds_proposal_is_rejected_not_clamped(scenario: Scenario):
    s = scenario
    s.deploy("web", 2)
    s.create("scalingpolicies", policy("web", "web", min_replicas=1, max_replicas=3))
    propose(s, proposal("web-1", "web", "web", current=2, replicas=8))
    s.approve("web-1")
    assert s.wait_phase("web-1", "Rejected", timeout=60)["status"]["reason"] == "OutOfBounds"
    assert s.replicas("web") == 2
    assert operator_writes(s, "web") in (None, [])


def test_admission_policy_refuses_an_approval_without_the_verb(scenario: Scenario):
    s = scenario
    s.deploy("web", 2)
    s.create("scalingpolicies", policy("web", "web"))
    propose(s, proposal("web-1", "web", "web", current=2, replicas=3))
    with pytest.raises(kubernetes.client.ApiException) as err:
        s.approve("web-1", user="mallory")
    assert err.value.status in (403, 422)
    wait_for(lambda: s.get_proposal("web-1").get("status", {}).get("phase") == "Pending", timeout=60,
             message="the proposal to stay Pending")


def leading_operator_pod(e2e: Installed) -> str:
    """The operator Pod that reconciles: the only one (the dev node runs one replica), or
    of manifests/' two replicas the holder of the Lease (its identity is POD_NAME_suffix)."""
    running = [p.metadata.name for p in e2e.pods("operator") if p.metadata.deletion_timestamp is None]
    if len(running) == 1:
        return running[0]

    def holder() -> str | None:
        identity = e2e.cluster.kubectl("-n", NAMESPACE, "get", "lease", "scalegate-operator", "-o",
                                       "jsonpath={.spec.holderIdentity}", check=False).stdout.strip()
        pod = identity.rsplit("_", 1)[0]
        return pod if pod in running else None

    return wait_for(holder, timeout=60, message="an operator replica to hold the lease scalegate-operator")


# Before the mid-burst test (pytest keeps file order): Prometheus holds data up to when the
# module was set up, and the forecaster refuses data that has gone stale since.
def test_forecaster_pod_proposes_from_prometheus_and_the_approval_is_applied(e2e: Installed, scenario: Scenario):
    if e2e.prometheus is None:
        pytest.skip(f"{e2e.target.name}'s Pods cannot reach a Prometheus on this host's loopback"
                    if not e2e.target.pods_reach_host_loopback else
                    "Debian's prometheus package (prometheus, promtool) is not installed")
    s = scenario
    s.deploy("web", 1)
    capacity = float(e2e.prometheus.shifted.quantile(0.99)) / 20
    s.create("scalingpolicies", policy("web", "web", min_replicas=1, max_replicas=60, proposalTTLSeconds=1800,
                                       forecast={"query": e2e.prometheus.query, "capacityPerReplica": capacity,
                                                 "horizonSeconds": 3600, "lookbackSeconds": 14 * 86400,
                                                 "stepSeconds": 300, "confidence": 0.95}))

    def proposed() -> dict | None:
        items = s.custom.list_namespaced_custom_object("scalegate.io", "v1alpha1", s.namespace, "scalingproposals",
                                                       label_selector=f"{POLICY_LABEL}=web")["items"]
        return items[0] if items else None

    started = time.monotonic()
    try:
        body = wait_for(proposed, timeout=300, interval=1, message="the forecaster Pod to propose")
    except AssertionError as err:
        raise AssertionError(f"{err}\npolicy status: {s.get_policy('web').get('status')}\n"
                             f"{e2e.target.logs()}") from None
    print(f"the forecaster Pod proposed in {time.monotonic() - started:.0f}s")
    assert body["metadata"]["annotations"]["scalegate.io/proposed-by"] == FORECASTER
    spec = body["spec"]
    assert spec["forecast"]["query"] == e2e.prometheus.query
    assert spec["currentReplicas"] == 1 and spec["replicas"] != 1

    name = body["metadata"]["name"]
    s.approve(name)
    s.wait_phase(name, "Applied", timeout=60)
    assert s.replicas("web") == spec["replicas"]


def test_operator_pod_deleted_mid_burst_its_successor_finishes_without_a_double_apply(
        e2e: Installed, scenario: Scenario):
    s = scenario
    count = 12
    for i in range(count):
        s.deploy(f"web-{i}", 2)
        s.create("scalingpolicies", policy(f"web-{i}", f"web-{i}", min_replicas=1, max_replicas=20))
        propose(s, proposal(f"web-{i}-1", f"web-{i}", f"web-{i}", current=2, replicas=3 + i))
    for i in range(count):
        s.wait_phase(f"web-{i}-1", "Pending", timeout=60)
    old = leading_operator_pod(e2e)

    # Half approved, then the operator's Pod is deleted (SIGTERM, as `kubectl delete pod`
    # does) while it works on them; the other half is approved once it is gone, so only
    # its successor can apply those.
    for i in range(count // 2):
        s.approve(f"web-{i}-1")
    e2e.cluster.kubectl("-n", NAMESPACE, "delete", "pod", old, "--wait=false")
    wait_for(lambda: old not in [p.metadata.name for p in e2e.pods("operator")], timeout=120, interval=0.5,
             message=f"the operator Pod {old} to be gone")
    applied = [i for i in range(count // 2) if (s.get_proposal(f"web-{i}-1").get("status") or {}).get("phase")
               == "Applied"]
    print(f"{len(applied)} of {count // 2} approved proposals applied before the operator Pod was gone")
    for i in range(count // 2, count):
        s.approve(f"web-{i}-1")

    def successor_ready() -> str | None:
        for pod in e2e.pods("operator"):
            statuses = pod.status.container_statuses or []
            if pod.metadata.deletion_timestamp is None and statuses and statuses[0].ready:
                return pod.metadata.name
        return None

    successor = wait_for(successor_ready, timeout=180, interval=0.5, message="a new operator Pod to be Ready")
    for i in range(count):
        s.wait_phase(f"web-{i}-1", "Applied", timeout=120)
    for i in range(count):
        assert s.replicas(f"web-{i}") == 3 + i
        writes = operator_writes(s, f"web-{i}")
        assert writes is None or len(writes) == 1, f"web-{i} was written {len(writes)} times: {writes}"
    [restarts] = [p.status.container_statuses[0].restart_count for p in e2e.pods("operator")
                  if p.metadata.name == successor]
    print(f"the successor {successor} finished with {restarts} restarts")
