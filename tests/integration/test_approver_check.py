"""The operator's own approver check (issue 15): where the admission policy scalegate-approval
does not apply, an approval is written by whoever may patch proposals, and only the
operator's SubjectAccessReview stands between it and the target. That review must ask about
the verb `approve`: the user here holds `patch` (and get, list, watch, update) on
scalingproposals, everything an approver has but `approve`, so a review that asked about
`patch` (or any verb they hold) would let the apply through and this test would fail.

The test arranges its own precondition, whatever ran before it: the binding of
scalegate-approval is removed for the module (as on a cluster that never installed it) and
put back afterwards if it was there."""

from __future__ import annotations

import os

import kubernetes
import pytest
import yaml
from harness import MANIFESTS, Cluster, wait_for
from operator_harness import OperatorProcess, Scenario, policy, proposal, wait_steady

GROUP, VERSION = "scalegate.io", "v1alpha1"
BINDING = "scalegate-approval"
OPERATOR = "system:serviceaccount:scalegate:operator"
# Every verb an approver holds on proposals (manifests/base/rbac/approver.yaml), but approve.
ALL_BUT_APPROVE = ["get", "list", "watch", "patch", "update"]


def _binding_document() -> dict:
    for doc in yaml.safe_load_all((MANIFESTS / "base" / "admission" / "approval-policy.yaml").read_text()):
        if doc and doc["kind"] == "ValidatingAdmissionPolicyBinding" and doc["metadata"]["name"] == BINDING:
            return doc
    raise AssertionError(f"no binding {BINDING} in approval-policy.yaml")


def _forged_approval_admitted(cluster: Cluster, namespace: str) -> bool:
    """Whether the API server lets the admin name someone else in approved-by (the binding
    refuses that): a probe that tells when the binding is really gone."""
    name = f"probe-{os.urandom(3).hex()}"
    body = proposal(name, "probe", "probe", 1, 2)  # no proposer: scalegate-approval refuses even that
    try:
        cluster.custom().create_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals", body)
    except kubernetes.client.ApiException:
        return False
    try:
        cluster.custom().patch_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals", name, {
            "metadata": {"annotations": {"scalegate.io/approved": "true", "scalegate.io/approved-by": "nobody"}}})
        return True
    except kubernetes.client.ApiException as err:
        assert err.status in (403, 422), err.body
        return False
    finally:
        cluster.custom().delete_namespaced_custom_object(GROUP, VERSION, namespace, "scalingproposals", name)


@pytest.fixture(scope="module")
def without_approval_policy(cluster: Cluster):
    """The cluster as if scalegate-approval were not installed, for this module."""
    had = cluster.kubectl("get", f"validatingadmissionpolicybinding/{BINDING}", check=False).returncode == 0
    cluster.kubectl("delete", f"validatingadmissionpolicybinding/{BINDING}", "--ignore-not-found")
    probe = cluster.create_namespace("no-approval-policy")
    try:
        wait_for(lambda: _forged_approval_admitted(cluster, probe), timeout=60, interval=0.5,
                 message=f"{BINDING} to be lifted")
        yield
    finally:
        if had:
            cluster.apply_yaml(yaml.safe_dump(_binding_document()))
            wait_for(lambda: not _forged_approval_admitted(cluster, probe), timeout=60, interval=0.5,
                     message=f"{BINDING} to be enforced again")
        cluster.delete_namespace(probe)


def test_an_approver_without_the_verb_approve_is_refused_by_the_operator(
        cluster: Cluster, namespace: str, component_kubeconfigs, tmp_path, without_approval_policy):
    s = Scenario(cluster, namespace)
    s.grant_approve("alice")  # the control: holds approve as well
    cluster.apply_yaml(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: proposal-editor, namespace: {namespace}}}
rules:
- apiGroups: [scalegate.io]
  resources: [scalingproposals]
  verbs: {ALL_BUT_APPROVE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: proposal-editor-pat, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: proposal-editor}}
subjects: [{{kind: User, name: pat, apiGroup: rbac.authorization.k8s.io}}]
""")
    authz = kubernetes.client.AuthorizationV1Api(cluster.api_client())

    def may(user: str, verb: str) -> bool:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": user, "groups": ["system:authenticated"], "resourceAttributes": {
                      "group": GROUP, "resource": "scalingproposals", "verb": verb, "namespace": namespace}}}
        return authz.create_subject_access_review(review).status.allowed

    wait_for(lambda: may("pat", "patch") and may("alice", "approve"), message="RBAC to take effect")
    assert all(may("pat", verb) for verb in ALL_BUT_APPROVE) and not may("pat", "approve")

    s.deploy("web", 4)
    s.create("scalingpolicies", policy("web", "web"))
    s.create("scalingproposals", proposal("web-1", "web", "web", current=4, replicas=6))
    s.approve("web-1", user="pat")  # admitted: no admission policy judges it here
    op = OperatorProcess(component_kubeconfigs["operator"], tmp_path / "operator.log",
                         namespaces=[namespace]).start()
    try:
        status = s.wait_phase("web-1", "Rejected")["status"]
        assert status["reason"] == "ApproverNotAuthorized"
        assert "pat may not approve scalingproposals in namespace" in status["message"]
        assert "approvedBy" not in status
        wait_steady(lambda: s.replicas("web") == 4, duration=2)
        if cluster.has_audit_log:
            assert cluster.scale_writes(namespace, "web", user=OPERATOR) == []

        # The control: the same, approved by someone who holds approve, is applied.
        s.create("scalingproposals", proposal("web-2", "web", "web", current=4, replicas=6))
        s.approve("web-2", user="alice")
        assert s.wait_phase("web-2", "Applied")["status"]["approvedBy"] == "alice"
    finally:
        op.stop()
    if cluster.has_audit_log:
        assert len(cluster.scale_writes(namespace, "web", user=OPERATOR)) == 1
