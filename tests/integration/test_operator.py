"""The operator against the real API server: every phase reached through the real API,
with the operator running as its own ServiceAccount."""

from __future__ import annotations

import datetime as dt

import kubernetes
import pytest
from harness import wait_for
from operator_harness import Scenario, policy, proposal, wait_steady

PROPOSALS, POLICIES = "scalingproposals", "scalingpolicies"
OPERATOR = "system:serviceaccount:scalegate:operator"


@pytest.fixture(autouse=True)
def _operator_running(operator):
    yield
    assert operator.proc.poll() is None, f"operator died:\n{operator.log()[-3000:]}"


def test_approved_in_bounds_proposal_scales_and_leaves_receipts(scenario: Scenario):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", min_replicas=2, max_replicas=20, maxStepUp=5))
    s.create(PROPOSALS, proposal("web-1", "web", "web", current=4, replicas=9))
    s.wait_phase("web-1", "Pending")
    assert s.replicas("web") == 4

    s.approve("web-1")
    body = s.wait_phase("web-1", "Applied")
    assert s.replicas("web") == 9
    status = body["status"]
    assert status["approvedBy"] == "alice"
    assert status["previousReplicas"] == 4 and status["appliedReplicas"] == 9
    assert status["appliedAt"] and "applying" not in status
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Applied"]["status"] == "True" and conditions["Applied"]["reason"] == "Applied"
    assert conditions["Approved"]["status"] == "True" and "alice" in conditions["Approved"]["message"]
    assert s.get_policy("web")["status"]["lastAppliedProposal"] == "web-1"

    reasons = wait_for(lambda: {e.reason for e in s.events_for("ScalingProposal", "web-1")} >= {"Applied"}
                       and {e.reason for e in s.events_for("ScalingProposal", "web-1")}, message="events")
    assert {"AwaitingApproval", "Applied"} <= reasons
    # The target's Event is posted after the proposal's.
    wait_for(lambda: any(e.reason == "ScaledByScalegate" and "approved by alice" in e.message
                         for e in s.events_for("Deployment", "web")), message="the target's ScaledByScalegate Event")
    if s.cluster.has_audit_log:  # the API server's own record: exactly one write, by the operator
        writes = wait_for(lambda: s.cluster.scale_writes(s.namespace, "web"), message="the audited scale write")
        wait_steady(lambda: len(s.cluster.scale_writes(s.namespace, "web")) == 1, duration=1.0)
        assert [w["user"]["username"] for w in writes] == [OPERATOR]
        assert writes[0]["objectRef"]["subresource"] == "scale"


@pytest.mark.parametrize("replicas, extra, expected", [
    (25, {}, "above maxReplicas 20"),
    (1, {}, "below minReplicas 2"),
    (12, {"maxStepUp": 5}, "exceeds maxStepUp 5"),
], ids=["above-max", "below-min", "step-up"])
def test_out_of_bounds_is_rejected_never_clamped(scenario: Scenario, replicas, extra, expected):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", min_replicas=2, max_replicas=20, **extra))
    s.create(PROPOSALS, proposal("web-1", "web", "web", current=4, replicas=replicas))
    s.approve("web-1")
    status = s.wait_phase("web-1", "Rejected")["status"]
    assert status["reason"] == "OutOfBounds" and expected in status["message"]
    assert s.replicas("web") == 4
    if s.cluster.has_audit_log:
        wait_steady(lambda: s.cluster.scale_writes(s.namespace, "web") == [], duration=1.0)


def test_rejected_by_a_person(scenario: Scenario):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    s.create(PROPOSALS, proposal("web-1", "web", "web", current=4, replicas=6))
    s.reject("web-1")
    status = s.wait_phase("web-1", "Rejected")["status"]
    assert status["reason"] == "RejectedByUser" and status["rejectedBy"] == "alice"
    assert s.replicas("web") == 4
    if s.cluster.has_audit_log:
        wait_steady(lambda: s.cluster.scale_writes(s.namespace, "web") == [], duration=1.0)


def test_expires_on_time_without_approval(scenario: Scenario):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    # Valid long enough to be seen Pending first, on a loaded machine too.
    s.create(PROPOSALS, proposal("web-1", "web", "web", current=4, replicas=6, valid_for=10))
    s.wait_phase("web-1", "Pending")
    status = s.wait_phase("web-1", "Expired", timeout=40)["status"]
    assert status["reason"] == "Expired"
    s.approve("web-1")  # too late: nothing happens
    wait_steady(lambda: s.replicas("web") == 4 and s.get_proposal("web-1")["status"]["phase"] == "Expired")


def test_newer_proposal_supersedes_older(scenario: Scenario):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    s.create(PROPOSALS, proposal("web-old", "web", "web", current=4, replicas=6))
    s.wait_phase("web-old", "Pending")
    # creationTimestamp has one-second resolution: make "newer" unambiguous.
    created = s.get_proposal("web-old")["metadata"]["creationTimestamp"]
    wait_for(lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") > created,
             message="the next second")
    s.create(PROPOSALS, proposal("web-new", "web", "web", current=4, replicas=8))
    s.approve("web-old")
    status = s.wait_phase("web-old", "Superseded")["status"]
    assert "web-new" in status["message"]
    assert s.replicas("web") == 4
    s.approve("web-new")
    s.wait_phase("web-new", "Applied")
    assert s.replicas("web") == 8


def test_target_changed_since_forecast_is_stale(scenario: Scenario):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    s.create(PROPOSALS, proposal("web-1", "web", "web", current=4, replicas=8))
    s.cluster.apps().patch_namespaced_deployment_scale("web", s.namespace, {"spec": {"replicas": 5}})
    s.approve("web-1")
    status = s.wait_phase("web-1", "Stale")["status"]
    assert status["reason"] == "TargetChanged" and "now has 5 replicas" in status["message"]
    assert s.replicas("web") == 5


def test_cooldown_waits_then_applies_on_time(scenario: Scenario):
    s = scenario
    s.deploy("web", 4)
    # Long enough that web-2 is created, approved and seen waiting within it on a loaded machine.
    s.create(POLICIES, policy("web", "web", cooldownSeconds=20))
    s.create(PROPOSALS, proposal("web-1", "web", "web", current=4, replicas=6))
    s.approve("web-1")
    s.wait_phase("web-1", "Applied")
    s.create(PROPOSALS, proposal("web-2", "web", "web", current=6, replicas=7))
    s.approve("web-2")
    status = s.wait_phase("web-2", "Approved")["status"]
    wait_for(lambda: s.get_proposal("web-2")["status"].get("reason") == "CooldownActive", message="cooldown")
    assert s.replicas("web") == 6
    s.wait_phase("web-2", "Applied", timeout=60)
    assert s.replicas("web") == 7
    del status


def test_horizontal_pod_autoscaler_on_target_fails_the_proposal(scenario: Scenario):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    kubernetes.client.AutoscalingV2Api(s.cluster.api_client()).create_namespaced_horizontal_pod_autoscaler(
        s.namespace, {"metadata": {"name": "web-hpa"}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 10,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 80}}}]}})
    s.create(PROPOSALS, proposal("web-1", "web", "web", current=4, replicas=6))
    s.approve("web-1")
    status = s.wait_phase("web-1", "Failed")["status"]
    assert status["reason"] == "ConflictingAutoscaler" and "web-hpa" in status["message"]


def test_missing_policy_and_missing_target_fail(scenario: Scenario):
    s = scenario
    s.create(PROPOSALS, proposal("orphan", "nopolicy", "web", current=4, replicas=6))
    s.approve("orphan")
    assert s.wait_phase("orphan", "Failed")["status"]["reason"] == "PolicyNotFound"

    s.create(POLICIES, policy("ghost", "ghost"))
    s.create(PROPOSALS, proposal("ghost-1", "ghost", "ghost", current=4, replicas=6))
    s.approve("ghost-1")
    assert s.wait_phase("ghost-1", "Failed")["status"]["reason"] == "TargetNotFound"


def test_suspended_policy_holds_until_resumed(scenario: Scenario):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", suspend=True))
    s.create(PROPOSALS, proposal("web-1", "web", "web", current=4, replicas=6))
    s.approve("web-1")
    wait_for(lambda: s.get_proposal("web-1").get("status", {}).get("reason") == "PolicySuspended",
             message="PolicySuspended")
    assert s.replicas("web") == 4
    s.custom.patch_namespaced_custom_object("scalegate.io", "v1alpha1", s.namespace, POLICIES, "web",
                                            {"spec": {"suspend": False}})
    s.wait_phase("web-1", "Applied")
    assert s.replicas("web") == 6


def test_statefulsets_scale_through_the_generic_scale_subresource(scenario: Scenario):
    s = scenario
    s.cluster.apps().create_namespaced_stateful_set(s.namespace, {
        "metadata": {"name": "db"}, "spec": {
            "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                         "spec": {"containers": [{"name": "db", "image": "registry.invalid/db:1"}]}}}})
    s.create(POLICIES, policy("db", "db", kind="StatefulSet"))
    s.create(PROPOSALS, proposal("db-1", "db", "db", current=1, replicas=3, kind="StatefulSet"))
    s.approve("db-1")
    s.wait_phase("db-1", "Applied")
    assert s.cluster.apps().read_namespaced_stateful_set_scale("db", s.namespace).spec.replicas == 3


def test_malformed_proposal_does_not_crash_the_operator(scenario: Scenario, operator):
    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    # A proposal whose validUntil the schema accepts but is in the past, next to a valid one.
    past = proposal("old", "web", "web", current=4, replicas=6)
    past["spec"]["validUntil"] = "2001-01-01T00:00:00Z"
    s.create(PROPOSALS, past)
    assert s.wait_phase("old", "Expired")["status"]["reason"] == "Expired"
    assert operator.proc.poll() is None


def test_operator_exports_prometheus_metrics(scenario: Scenario, operator):
    import urllib.request

    s = scenario
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    s.create(PROPOSALS, proposal("web-1", "web", "web", current=4, replicas=5))
    s.approve("web-1")
    s.wait_phase("web-1", "Applied")

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()
    text = wait_for(lambda: (t := scrape()) and f'namespace="{s.namespace}",phase="Applied"' in t and t,
                    message="the Applied outcome in /metrics")
    assert "# TYPE scalegate_apply_latency_seconds histogram" in text
    assert "scalegate_approval_wait_seconds_count" in text
    assert "scalegate_proposals_active" in text
