"""manifests/: `kubectl apply -k` installs them, and each identity holds exactly what its
job needs. The components are tested with real ServiceAccount tokens (TokenRequest), so
the API server sees them as it will in a cluster, not as an impersonated name."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import kubernetes
import pytest
import yaml
from harness import MANIFESTS, Cluster, pdb_versions, reapply_changes, wait_for

from scalegate.model import APPROVED, APPROVED_BY, GROUP, POLICY_PLURAL, PROPOSAL_PLURAL, PROPOSED_BY, VERSION
from scalegate.shards import member_lease, shard_lease

OPERATOR = "system:serviceaccount:scalegate:operator"
FORECASTER = "system:serviceaccount:scalegate:forecaster"
POLICY = "scalegate-approval"


# -- helpers ------------------------------------------------------------------------------
def client_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))


def forbidden(call, *args, **kwargs) -> str:
    """The server's message of a request that must be refused with 403."""
    with pytest.raises(kubernetes.client.ApiException) as err:
        call(*args, **kwargs)
    assert err.value.status == 403, err.value.body
    return json.loads(err.value.body)["message"]


def can_i(client: kubernetes.client.ApiClient, verb: str, resource: str, namespace: str,
          group: str = GROUP, subresource: str = "") -> bool:
    """Ask as the client itself (SelfSubjectAccessReview), as `kubectl auth can-i` does."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"group": group, "resource": resource, "subresource": subresource,
                                              "verb": verb, "namespace": namespace}}}
    return kubernetes.client.AuthorizationV1Api(client).create_self_subject_access_review(review).status.allowed


def proposal(name: str, proposed_by: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal",
        "metadata": {"name": name, "labels": {"scalegate.io/policy": "web"}, "annotations": {PROPOSED_BY: proposed_by}},
        "spec": {"policyRef": {"name": "web"},
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "currentReplicas": 2, "replicas": 3, "validUntil": "2099-01-01T00:00:00Z", "reason": "test"},
    }


def policy() -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingPolicy", "metadata": {"name": "web"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 10}}


def workload(kind: str) -> dict:
    spec = {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}}}
    if kind == "StatefulSet":
        spec["serviceName"] = "web"
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "web"}, "spec": spec}


def event(namespace: str, name: str) -> dict:
    return {"metadata": {"name": f"{name}.{uuid.uuid4().hex[:8]}"},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal", "name": name,
                               "namespace": namespace},
            "type": "Normal", "reason": "Test", "message": "an event", "source": {"component": "test"}}


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed(cluster: Cluster):
    with cluster.scalegate_installed(wait_enforced=False) as out:
        yield out


@pytest.fixture(scope="module")
def accounts(cluster: Cluster, installed, tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("rbac-kubeconfigs")
    found: dict = {}
    for name in ("operator", "forecaster"):
        found[f"{name}-kubeconfig"] = cluster.service_account_kubeconfig("scalegate", name, directory)
        found[name] = client_for(found[f"{name}-kubeconfig"])
    return found


@pytest.fixture
def world(cluster: Cluster, namespace: str) -> str:
    """A namespace with a policy, a proposal by the forecaster, and scalable workloads."""
    custom = cluster.custom()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, POLICY_PLURAL, policy())
    cluster.custom(FORECASTER).create_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL,
                                                               proposal("web-1", FORECASTER))
    apps = cluster.apps()
    apps.create_namespaced_deployment(namespace, workload("Deployment"))
    apps.create_namespaced_stateful_set(namespace, workload("StatefulSet"))
    return namespace


# -- the manifests ------------------------------------------------------------------------
def test_kustomization_installs_everything_and_reapplies_unchanged(cluster: Cluster, installed):
    rendered = list(yaml.safe_load_all(cluster.kubectl("kustomize", str(MANIFESTS)).stdout))
    names = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in rendered}
    assert {
        ("Namespace", "", "scalegate"),
        ("ServiceAccount", "scalegate", "operator"), ("ServiceAccount", "scalegate", "forecaster"),
        ("ClusterRole", "", "scalegate-operator"), ("ClusterRoleBinding", "", "scalegate-operator"),
        ("ClusterRole", "", "scalegate-forecaster"), ("ClusterRoleBinding", "", "scalegate-forecaster"),
        ("ClusterRole", "", "scalegate-approver"), ("ClusterRole", "", "scalegate-viewer"),
        ("ValidatingAdmissionPolicy", "", "scalegate-approval"),
        ("ValidatingAdmissionPolicyBinding", "", "scalegate-approval"),
    } <= names
    before = pdb_versions(cluster)
    again = cluster.kubectl("apply", "-k", str(MANIFESTS)).stdout
    changed = [line for line in reapply_changes(cluster, again, before)
               if not line.startswith(("deployment", "service/"))]
    assert not changed, again


def test_every_rbac_rule_says_why():
    for path in sorted((MANIFESTS / "base" / "rbac").glob("*.yaml")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if re.match(r"\s*- apiGroups:", line):
                previous = next(lines[i] for i in range(number - 1, -1, -1) if lines[i].strip())
                assert previous.strip().startswith("#"), f"{path.name}:{number + 1}: rule without a comment"


def test_no_role_but_the_approvers_holds_approve():
    for path in sorted((MANIFESTS / "base" / "rbac").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in ("ClusterRole", "Role"):
                holds = any("approve" in r.get("verbs", []) or "*" in r.get("verbs", []) for r in doc["rules"])
                assert holds == (doc["metadata"]["name"] == "scalegate-approver"), doc["metadata"]["name"]


# -- the operator ---------------------------------------------------------------------------
OPERATOR_MAY = [
    ("get", "scalingproposals", GROUP, ""), ("watch", "scalingproposals", GROUP, ""), ("patch", "scalingproposals", GROUP, ""),
    ("delete", "scalingproposals", GROUP, ""), ("patch", "scalingproposals", GROUP, "status"),
    ("get", "scalingpolicies", GROUP, ""), ("list", "scalingpolicies", GROUP, ""),
    ("watch", "scalingpolicies", GROUP, ""), ("patch", "scalingpolicies", GROUP, "status"),
    ("get", "deployments", "apps", "scale"), ("update", "deployments", "apps", "scale"),
    ("get", "statefulsets", "apps", "scale"), ("update", "statefulsets", "apps", "scale"),
    ("get", "replicasets", "apps", "scale"), ("update", "replicasets", "apps", "scale"),
    ("get", "deployments", "apps", ""), ("get", "statefulsets", "apps", ""), ("get", "replicasets", "apps", ""),
    ("list", "horizontalpodautoscalers", "autoscaling", ""), ("watch", "horizontalpodautoscalers", "autoscaling", ""),
    ("create", "events", "", ""),
]
# Least privilege (issue 17): what no code of the operator uses is not granted.
OPERATOR_MAY_NOT = [
    ("update", "scalingproposals", GROUP, ""), ("update", "scalingproposals", GROUP, "status"),
    ("update", "scalingpolicies", GROUP, "status"), ("patch", "deployments", "apps", "scale"),
    ("patch", "events", "", ""), ("create", "events", "events.k8s.io", ""),
    ("approve", "scalingproposals", GROUP, ""), ("create", "scalingproposals", GROUP, ""),
    ("update", "scalingpolicies", GROUP, ""), ("patch", "scalingpolicies", GROUP, ""),
    ("delete", "scalingpolicies", GROUP, ""), ("create", "scalingpolicies", GROUP, ""),
    ("update", "deployments", "apps", ""), ("patch", "deployments", "apps", ""), ("list", "deployments", "apps", ""),
    ("update", "statefulsets", "apps", ""), ("update", "replicasets", "apps", ""),
    ("create", "horizontalpodautoscalers", "autoscaling", ""), ("get", "secrets", "", ""),
    ("list", "pods", "", ""), ("delete", "events", "", ""),
]


@pytest.mark.parametrize("verb, resource, group, sub", OPERATOR_MAY, ids=lambda v: v or "-")
def test_operator_may(accounts, world, verb, resource, group, sub):
    assert can_i(accounts["operator"], verb, resource, world, group, sub)


@pytest.mark.parametrize("verb, resource, group, sub", OPERATOR_MAY_NOT, ids=lambda v: v or "-")
def test_operator_may_not(accounts, world, verb, resource, group, sub):
    assert not can_i(accounts["operator"], verb, resource, world, group, sub)


def test_operator_does_its_job_with_its_own_token(cluster: Cluster, accounts, world):
    op = accounts["operator"]
    custom, apps = kubernetes.client.CustomObjectsApi(op), kubernetes.client.AppsV1Api(op)
    ns = world
    assert [p["metadata"]["name"] for p in custom.list_cluster_custom_object(GROUP, VERSION, PROPOSAL_PLURAL)["items"]
            if p["metadata"]["namespace"] == ns] == ["web-1"]
    custom.list_cluster_custom_object(GROUP, VERSION, PROPOSAL_PLURAL, watch=True, timeout_seconds=1,
                                      _preload_content=False).release_conn()
    custom.get_namespaced_custom_object(GROUP, VERSION, ns, POLICY_PLURAL, "web")
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1",
                                          {"metadata": {"labels": {"scalegate.io/policy": "web"}}},
                                          _content_type="application/merge-patch+json")
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1",
                                                 {"status": {"phase": "Pending"}},
                                                 _content_type="application/merge-patch+json")
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, POLICY_PLURAL, "web",
                                                 {"status": {"lastAppliedTime": "2026-01-01T00:00:00Z"}},
                                                 _content_type="application/merge-patch+json")
    scale = apps.read_namespaced_deployment_scale("web", ns)
    scale.spec.replicas = 3
    assert apps.replace_namespaced_deployment_scale("web", ns, scale).spec.replicas == 3
    assert apps.read_namespaced_stateful_set_scale("web", ns).spec.replicas == 2
    kubernetes.client.AutoscalingV2Api(op).list_namespaced_horizontal_pod_autoscaler(ns)
    kubernetes.client.CoreV1Api(op).create_namespaced_event(ns, event(ns, "web-1"))
    review = kubernetes.client.AuthorizationV1Api(op).create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "alice", "resourceAttributes": {"group": GROUP, "resource": PROPOSAL_PLURAL,
                                                         "verb": "approve", "namespace": ns, "name": "web-1"}}})
    assert review.status.allowed is False
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1")


def test_operator_is_refused_what_it_must_not_do(cluster: Cluster, accounts, world):
    op = accounts["operator"]
    custom, apps = kubernetes.client.CustomObjectsApi(op), kubernetes.client.AppsV1Api(op)
    ns = world
    # It may patch proposals (labels), so an approval reaches the admission policy, which
    # asks RBAC for the verb approve: refused there, with the policy's message.
    message = forbidden(custom.patch_namespaced_custom_object, GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1",
                        {"metadata": {"annotations": {APPROVED: "true", APPROVED_BY: OPERATOR}}},
                        _content_type="application/merge-patch+json")
    assert f"{OPERATOR} may not approve or reject ScalingProposals in namespace {ns}" in message
    message = forbidden(custom.create_namespaced_custom_object, GROUP, VERSION, ns, PROPOSAL_PLURAL,
                        proposal("by-operator", OPERATOR))
    assert f'User "{OPERATOR}" cannot create resource "scalingproposals"' in message
    forbidden(apps.patch_namespaced_deployment, "web", ns, {"spec": {"replicas": 5}})
    forbidden(custom.patch_namespaced_custom_object, GROUP, VERSION, ns, POLICY_PLURAL, "web",
              {"spec": {"maxReplicas": 100}}, _content_type="application/merge-patch+json")
    forbidden(kubernetes.client.CoreV1Api(op).list_namespaced_secret, ns)


# -- the forecaster -----------------------------------------------------------------------
FORECASTER_MAY = [
    ("get", "scalingpolicies", GROUP, ""), ("list", "scalingpolicies", GROUP, ""),
    ("patch", "scalingpolicies", GROUP, "status"), ("create", "scalingproposals", GROUP, ""),
    ("list", "scalingproposals", GROUP, ""),  # a policy with plans is re-planned against its open plan
    ("create", "events", "", ""),  # PlanBreached on the plan in effect
    ("get", "deployments", "apps", "scale"), ("get", "statefulsets", "apps", "scale"),
    ("get", "replicasets", "apps", "scale"),
]
# Least privilege (issue 17): what no code of the forecaster uses is not granted.
FORECASTER_MAY_NOT = [
    ("watch", "scalingpolicies", GROUP, ""), ("update", "scalingpolicies", GROUP, "status"),
    ("get", "scalingproposals", GROUP, ""), ("watch", "scalingproposals", GROUP, ""),
    ("create", "events", "events.k8s.io", ""), ("patch", "events", "", ""), ("delete", "events", "", ""),
    ("approve", "scalingproposals", GROUP, ""), ("update", "scalingproposals", GROUP, ""),
    ("patch", "scalingproposals", GROUP, ""), ("delete", "scalingproposals", GROUP, ""),
    ("patch", "scalingproposals", GROUP, "status"), ("update", "scalingpolicies", GROUP, ""),
    ("patch", "scalingpolicies", GROUP, ""),
    ("update", "deployments", "apps", "scale"), ("patch", "deployments", "apps", "scale"),
    ("update", "statefulsets", "apps", "scale"), ("get", "deployments", "apps", ""),
    ("list", "horizontalpodautoscalers", "autoscaling", ""), ("get", "secrets", "", ""),
]


@pytest.mark.parametrize("verb, resource, group, sub", FORECASTER_MAY, ids=lambda v: v or "-")
def test_forecaster_may(accounts, world, verb, resource, group, sub):
    assert can_i(accounts["forecaster"], verb, resource, world, group, sub)


@pytest.mark.parametrize("verb, resource, group, sub", FORECASTER_MAY_NOT, ids=lambda v: v or "-")
def test_forecaster_may_not(accounts, world, verb, resource, group, sub):
    assert not can_i(accounts["forecaster"], verb, resource, world, group, sub)


def test_forecaster_does_its_job_with_its_own_token(cluster: Cluster, accounts, world):
    fc = accounts["forecaster"]
    custom, apps = kubernetes.client.CustomObjectsApi(fc), kubernetes.client.AppsV1Api(fc)
    ns = world
    assert [p["metadata"]["name"] for p in
            custom.list_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL)["items"]
            if p["metadata"]["namespace"] == ns] == ["web"]
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, POLICY_PLURAL, "web",
        {"status": {"conditions": [{"type": "ForecastReady", "status": "False", "reason": "InsufficientData",
                                    "message": "2 days of history, 7 needed",
                                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
        _content_type="application/merge-patch+json")
    assert apps.read_namespaced_deployment_scale("web", ns).spec.replicas == 2
    assert apps.read_namespaced_stateful_set_scale("web", ns).spec.replicas == 2
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PROPOSAL_PLURAL,
                                                     proposal("web-2", FORECASTER))
    assert created["metadata"]["annotations"][PROPOSED_BY] == FORECASTER
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PROPOSAL_PLURAL,
                                                  label_selector="scalegate.io/policy=web")
    assert "web-2" in [p["metadata"]["name"] for p in listed["items"]]


def test_forecaster_is_refused_what_it_must_not_do(cluster: Cluster, accounts, world):
    fc = accounts["forecaster"]
    custom, apps = kubernetes.client.CustomObjectsApi(fc), kubernetes.client.AppsV1Api(fc)
    ns = world
    message = forbidden(custom.patch_namespaced_custom_object, GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1",
                        {"metadata": {"annotations": {APPROVED: "true", APPROVED_BY: FORECASTER}}},
                        _content_type="application/merge-patch+json")
    assert f'User "{FORECASTER}" cannot patch resource "scalingproposals"' in message
    forbidden(custom.patch_namespaced_custom_object, GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1",
              {"metadata": {"labels": {"x": "y"}}}, _content_type="application/merge-patch+json")
    forbidden(custom.get_namespaced_custom_object, GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1")
    body = cluster.custom().get_namespaced_custom_object(GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1")
    forbidden(custom.replace_namespaced_custom_object, GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1", body)
    forbidden(custom.delete_namespaced_custom_object, GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1")
    scale = apps.read_namespaced_deployment_scale("web", ns)
    scale.spec.replicas = 7
    message = forbidden(apps.replace_namespaced_deployment_scale, "web", ns, scale)
    assert f'User "{FORECASTER}" cannot update resource "deployments/scale"' in message
    forbidden(apps.patch_namespaced_stateful_set_scale, "web", ns, {"spec": {"replicas": 7}})
    forbidden(apps.read_namespaced_deployment, "web", ns)
    assert cluster.apps().read_namespaced_deployment_scale("web", ns).spec.replicas == 2
    # Its RBAC lets it patch the policy's status; the admission policy keeps it to its own
    # fields (polled: this module does not wait for the policies to be loaded).
    years = iter(range(2001, 2100))

    def refused_last_applied() -> bool:
        try:
            custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, POLICY_PLURAL, "web", {"status": {"lastAppliedTime": f"{next(years)}-01-01T00:00:00Z"}},
                _content_type="application/merge-patch+json")
        except kubernetes.client.ApiException as err:
            assert err.status == 403, err.body
            return "ValidatingAdmissionPolicy 'scalegate-policy-status'" in err.body
        return False
    wait_for(refused_last_applied, timeout=30, interval=0.2, message="scalegate-policy-status to refuse the forecaster")


# -- people ---------------------------------------------------------------------------------
def test_approver_role_decides_but_neither_creates_nor_writes_status(cluster: Cluster, installed, namespace: str):
    cluster.kubectl("create", "rolebinding", "approvers", "-n", namespace, "--clusterrole=scalegate-approver",
                    "--user=alice")

    def can(verb: str, resource: str = PROPOSAL_PLURAL, sub: str = "") -> bool:
        args = ["auth", "can-i", verb, f"{resource}.{GROUP}", "-n", namespace]
        if sub:
            args += ["--subresource", sub]
        return cluster.kubectl(*args, user="alice", check=False).stdout.strip() == "yes"

    wait_for(lambda: can("approve"), timeout=30, message="the approver binding to take effect")
    for verb in ("get", "list", "watch", "patch", "update", "approve"):
        assert can(verb), verb
    assert can("list", POLICY_PLURAL)
    assert not can("create") and not can("delete")
    assert not can("patch", sub="status") and not can("update", sub="status")
    assert not can("patch", POLICY_PLURAL) and not can("approve", POLICY_PLURAL)


def test_viewer_is_aggregated_into_view_and_no_built_in_role_can_approve(cluster: Cluster, installed,
                                                                         namespace: str):
    for role, user in (("view", "vera"), ("edit", "eddie"), ("admin", "ada")):
        cluster.kubectl("create", "rolebinding", role, "-n", namespace, f"--clusterrole={role}", f"--user={user}")

    def can(user: str, verb: str, resource: str) -> bool:
        return cluster.kubectl("auth", "can-i", verb, f"{resource}.{GROUP}", "-n", namespace, user=user,
                               check=False).stdout.strip() == "yes"

    # The aggregation controller folds scalegate-viewer into view/edit/admin: poll for it.
    wait_for(lambda: all(can(u, "list", r) for u in ("vera", "eddie", "ada")
                         for r in (PROPOSAL_PLURAL, POLICY_PLURAL)),
             timeout=60, interval=0.5, message="scalegate-viewer to be aggregated into view, edit and admin")
    for user in ("vera", "eddie", "ada"):
        assert can(user, "get", PROPOSAL_PLURAL) and can(user, "watch", POLICY_PLURAL)
        assert not can(user, "approve", PROPOSAL_PLURAL), f"{user} must not approve through a built-in role"
    assert not can("vera", "patch", PROPOSAL_PLURAL) and not can("vera", "create", PROPOSAL_PLURAL)


# -- Leases (issue 16) ---------------------------------------------------------------------
def may_lease(client: kubernetes.client.ApiClient, verb: str, name: str, namespace: str = "scalegate") -> bool:
    """SelfSubjectAccessReview for one Lease by name (RBAC's resourceNames)."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"group": "coordination.k8s.io", "resource": "leases", "verb": verb,
                                              "namespace": namespace, "name": name}}}
    return kubernetes.client.AuthorizationV1Api(client).create_self_subject_access_review(review).status.allowed


def test_each_component_writes_only_its_own_leases_in_the_scalegate_namespace(accounts, world):
    op, fc = accounts["operator"], accounts["forecaster"]
    shard, member = shard_lease(0, 8), member_lease(7, 8)
    for verb in ("get", "update"):
        assert may_lease(op, verb, "scalegate-operator")
        assert may_lease(fc, verb, shard) and may_lease(fc, verb, member)
    # Not each other's, not another controller's, not elsewhere, and never delete.
    assert not may_lease(op, "update", shard) and not may_lease(fc, "update", "scalegate-operator")
    assert not may_lease(op, "update", "kube-controller-manager", "kube-system")
    assert not may_lease(fc, "update", shard, world) and not may_lease(op, "update", "scalegate-operator", world)
    assert not any(may_lease(c, "delete", n) for c in (op, fc) for n in ("scalegate-operator", shard))
    # A shard count the Role does not name is refused: replicas given another --shards fail loudly.
    assert not may_lease(fc, "update", shard_lease(0, 9))
