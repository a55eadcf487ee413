"""The approval gate attacked (issue 17), one test per finding, on the real API server
with scalegate's admission policies installed and the operator running as its own
ServiceAccount. Each attack is made by a user holding exactly the rights the finding
names (impersonated by the admin, or the components' real tokens), never by the admin.

Where an admission policy now refuses an attack, a second test checks that the operator
does not depend on it alone: the same write is made where the API server allows it (as
the operator's own identity, or with the policy's binding lifted for the block, as on a
cluster without it or a record written before it existed), and the operator must still
not scale twice, record a false receipt, or delete early. Scale writes are witnessed by
the API server's audit log where the dev cluster keeps one, not by the operator's record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid

import kubernetes
import pytest
import yaml
from harness import CRDS, MANIFESTS, Cluster, admission_policies, wait_for
from operator_harness import OperatorProcess, Scenario, policy, proposal, wait_steady

from scalegate.model import (
    APPROVAL_REF,
    APPROVED,
    APPROVED_BY,
    GROUP,
    POLICY_LABEL,
    POLICY_PLURAL,
    PROPOSAL_PLURAL,
    PROPOSED_BY,
    VERSION,
)
from scalegate.records import OUTCOME

OPERATOR = "system:serviceaccount:scalegate:operator"
FORECASTER = "system:serviceaccount:scalegate:forecaster"
ADMISSION = MANIFESTS / "base" / "admission"
PROPOSALS, POLICIES = PROPOSAL_PLURAL, POLICY_PLURAL


# -- helpers --------------------------------------------------------------------------------
def denied_by(policy_name: str) -> str:
    return f"ValidatingAdmissionPolicy '{policy_name}' with binding '{policy_name}' denied request: "


def refused(call, *args, **kwargs) -> tuple[int, str]:
    """(HTTP status, the server's message) of a request that must fail."""
    with pytest.raises(kubernetes.client.ApiException) as err:
        call(*args, **kwargs)
    return err.value.status, json.loads(err.value.body)["message"]


def now_text(offset: float = 0.0) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def patch_status(cluster: Cluster, user: str | None, namespace: str, plural: str, name: str, status: dict) -> dict:
    return cluster.custom(user).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, {"status": status}, _content_type="application/merge-patch+json")


def patch(cluster: Cluster, user: str | None, namespace: str, plural: str, name: str, body: dict) -> dict:
    return cluster.custom(user).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, body, _content_type="application/merge-patch+json")


def create(cluster: Cluster, user: str | None, namespace: str, plural: str, body: dict) -> dict:
    return cluster.custom(user).create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def propose(s: Scenario, name: str, policy_name: str, target: str, current: int, replicas: int,
            **kwargs) -> dict:
    """A proposal as the forecaster makes it: created by its identity, naming itself."""
    body = proposal(name, policy_name, target, current, replicas, annotations={PROPOSED_BY: FORECASTER}, **kwargs)
    return create(s.cluster, FORECASTER, s.namespace, PROPOSALS, body)


def exists(s: Scenario, name: str) -> bool:
    try:
        s.get_proposal(name)
        return True
    except kubernetes.client.ApiException as err:
        if err.status == 404:
            return False
        raise


def phase(s: Scenario, name: str) -> str | None:
    return (s.get_proposal(name).get("status") or {}).get("phase")


def grant(cluster: Cluster, namespace: str, user: str, rules: list[dict]) -> None:
    """A Role with exactly `rules`, bound to `user`; waits until RBAC honours every rule."""
    name = f"gate-{uuid.uuid4().hex[:6]}"
    subject = ({"kind": "ServiceAccount", "name": user.split(":")[3], "namespace": user.split(":")[2]}
               if user.startswith("system:serviceaccount:")
               else {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"})
    cluster.apply_yaml(yaml.safe_dump_all([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": namespace}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [subject]},
    ]))
    for rule in rules:
        resource, _, sub = rule["resources"][0].partition("/")
        wait_allowed(cluster, namespace, user, rule["verbs"][0], resource, rule["apiGroups"][0], sub,
                     name=(rule.get("resourceNames") or [""])[0])


def wait_allowed(cluster: Cluster, namespace: str, user: str, verb: str, resource: str = PROPOSALS,
                 group: str = GROUP, subresource: str = "", name: str = "") -> None:
    groups = ["system:authenticated"]
    if user.startswith("system:serviceaccount:"):
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}"]
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": user, "groups": groups,
                       "resourceAttributes": {"group": group, "resource": resource, "subresource": subresource,
                                              "verb": verb, "namespace": namespace, "name": name}}}
    authz = kubernetes.client.AuthorizationV1Api(cluster.api_client())
    wait_for(lambda: authz.create_subject_access_review(review).status.allowed, timeout=30,
             message=f"RBAC to allow {user} to {verb} {resource}/{subresource}")


def bind_approver(cluster: Cluster, namespace: str, user: str) -> None:
    flag = (f"--serviceaccount={user.split(':')[2]}:{user.split(':')[3]}"
            if user.startswith("system:serviceaccount:") else f"--user={user}")
    cluster.kubectl("create", "rolebinding", f"approver-{uuid.uuid4().hex[:6]}", "-n", namespace,
                    "--clusterrole=scalegate-approver", flag)
    wait_allowed(cluster, namespace, user, "approve")


def operator_scale_writes(cluster: Cluster, namespace: str, name: str, resource: str = "deployments") -> list | None:
    """The operator's successful writes of a target's scale, as the API server's audit log
    recorded them; None where no audit log is kept (a cluster other than the dev one)."""
    audit = getattr(cluster.dev, "audit_events", None) if cluster.dev else None
    if audit is None:
        return None
    return [e for e in audit()
            if e.get("stage") == "ResponseComplete" and e.get("verb") in ("update", "patch")
            and (e.get("objectRef") or {}).get("resource") == resource
            and (e.get("objectRef") or {}).get("subresource") == "scale"
            and (e.get("objectRef") or {}).get("namespace") == namespace
            and (e.get("objectRef") or {}).get("name") == name
            and (e.get("responseStatus") or {}).get("code", 500) < 300
            and (e.get("user") or {}).get("username") == OPERATOR]


def scaled_events(s: Scenario, kind: str, name: str) -> list:
    return [e for e in s.events_for(kind, name) if e.reason == "ScaledByScalegate"]


def applies(s: Scenario, name: str, kind: str = "Deployment", resource: str = "deployments") -> int:
    """How often the operator has scaled the target: the audit log's count where there is
    one, else its ScaledByScalegate Events."""
    writes = operator_scale_writes(s.cluster, s.namespace, name, resource)
    return len(writes) if writes is not None else len(scaled_events(s, kind, name))


# -- knowing when a policy is enforced, and lifting one for a block ----------------------------
class Probes:
    """One request per admission policy that the policy must refuse: it tells when the API
    server enforces a policy (after installing it) or no longer does (its binding lifted)."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.namespace = cluster.create_namespace("gate-probe")
        self.admin = json.loads(cluster.kubectl("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]["username"]
        create(cluster, None, self.namespace, POLICIES, policy("probe", "probe"))
        create(cluster, None, self.namespace, PROPOSALS, self._proposal("probe"))
        grant(cluster, self.namespace, "gate-prober", [
            {"apiGroups": [GROUP], "resources": [POLICIES], "verbs": ["create", "delete"]}])

    def _proposal(self, name: str, annotations: dict | None = None, labels: bool = True) -> dict:
        body = proposal(name, "probe", "probe", 1, 2, annotations={PROPOSED_BY: self.admin, **(annotations or {})})
        if not labels:
            del body["metadata"]["labels"]
        return body

    def _attempt(self, policy_name: str) -> str | None:
        """The refusal's message, or None if the request went through (undone again)."""
        ns, key = self.namespace, uuid.uuid4().hex[:6]
        cleanup = None
        try:
            if policy_name == "scalegate-approval":
                cleanup = (PROPOSALS, create(self.cluster, None, ns, PROPOSALS, self._proposal(
                    f"p-{key}", {PROPOSED_BY: "somebody-else"}))["metadata"]["name"])
            elif policy_name == "scalegate-gitops":
                body = self._proposal(f"p-{key}", {APPROVED: "true", APPROVED_BY: self.admin,
                                                    APPROVAL_REF: "https://git.example/probe"})
                del body["metadata"]["annotations"][PROPOSED_BY]
                cleanup = (PROPOSALS, create(self.cluster, None, ns, PROPOSALS, body)["metadata"]["name"])
            elif policy_name == "scalegate-proposal-label":
                cleanup = (PROPOSALS, create(self.cluster, None, ns, PROPOSALS,
                                             self._proposal(f"p-{key}", labels=False))["metadata"]["name"])
            elif policy_name == "scalegate-proposal-record":
                cleanup = (PROPOSALS, create(self.cluster, None, ns, PROPOSALS, self._proposal(
                    f"p-{key}", {"scalegate.io/outcome": "{}"}))["metadata"]["name"])
            elif policy_name == "scalegate-proposal-status":
                patch_status(self.cluster, None, ns, PROPOSALS, "probe", {"message": f"probe {key}"})
            elif policy_name == "scalegate-policy-status":
                patch_status(self.cluster, None, ns, POLICIES, "probe", {"lastProposal": f"probe-{key}"})
            elif policy_name == "scalegate-policy-target":
                cleanup = (POLICIES, create(self.cluster, "gate-prober", ns, POLICIES,
                                            policy(f"p-{key}", "probe"))["metadata"]["name"])
            else:
                raise AssertionError(f"no probe for {policy_name}")
        except kubernetes.client.ApiException as err:
            return json.loads(err.body).get("message", err.body)
        if cleanup:
            self.cluster.custom().delete_namespaced_custom_object(GROUP, VERSION, ns, cleanup[0], cleanup[1])
        return None

    def enforced(self, policy_name: str) -> bool:
        message = self._attempt(policy_name)
        return message is not None and denied_by(policy_name) in message

    def wait_enforced(self, policy_name: str) -> None:
        wait_for(lambda: self.enforced(policy_name), timeout=60, interval=0.5,
                 message=f"the admission policy {policy_name} to be enforced")


def _binding_document(policy_name: str) -> dict:
    for path in sorted(ADMISSION.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "ValidatingAdmissionPolicyBinding" and doc["metadata"]["name"] == policy_name:
                return doc
    raise AssertionError(f"no binding {policy_name} in {ADMISSION}")


@contextlib.contextmanager
def lifted(cluster: Cluster, probes: Probes, policy_name: str):
    """The policy's binding removed for the block, as on a cluster that never installed it;
    restored (and enforced again) afterwards, whatever happens."""
    cluster.kubectl("delete", f"validatingadmissionpolicybinding/{policy_name}")
    try:
        wait_for(lambda: not probes.enforced(policy_name), timeout=60, interval=0.5,
                 message=f"the admission policy {policy_name} to be lifted")
        yield
    finally:
        cluster.apply_yaml(yaml.safe_dump(_binding_document(policy_name)))
        probes.wait_enforced(policy_name)


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probes(cluster: Cluster):
    with cluster.scalegate_installed():
        found = Probes(cluster)
        for name in admission_policies():
            found.wait_enforced(name)
        yield found
        cluster.delete_namespace(found.namespace)


@pytest.fixture(autouse=True)
def _operator_running(probes, operator):
    yield
    assert operator.proc.poll() is None, f"operator died:\n{operator.log()[-3000:]}"


STATUS_WRITER = [  # mallory: may read proposals and write both status subresources, nothing else
    {"apiGroups": [GROUP], "resources": [f"{PROPOSALS}/status", f"{POLICIES}/status"],
     "verbs": ["get", "patch", "update"]},
    {"apiGroups": [GROUP], "resources": [PROPOSALS, POLICIES], "verbs": ["get", "list"]},
]


@pytest.fixture
def s(scenario: Scenario) -> Scenario:
    """The namespace's people: alice approves (the Scenario's Role with approve), mallory
    writes status but may not approve."""
    grant(scenario.cluster, scenario.namespace, "mallory", STATUS_WRITER)
    return scenario


def applied_once(s: Scenario, name: str, proposal_name: str, current: int, replicas: int, **policy_spec) -> None:
    """Deployment `name` at `current`, its policy, and proposal `proposal_name` approved by
    alice and applied: the operator's one legitimate scale write."""
    s.deploy(name, current)
    s.create(POLICIES, policy(name, name, **policy_spec))
    propose(s, proposal_name, name, name, current, replicas)
    s.approve(proposal_name)
    s.wait_phase(proposal_name, "Applied")
    assert s.replicas(name) == replicas
    wait_for(lambda: applies(s, name) == 1, message="the one audited scale write")


# -- 1. replay through status -----------------------------------------------------------------
def test_f01_status_rewrites_that_would_replay_an_apply_are_refused(s: Scenario, cluster: Cluster):
    """A user with write access to scalingproposals/status (no approve) may not reopen an
    Applied proposal or revive a Stale one; nor may the admin; nor the operator itself
    reopen a terminal record."""
    ns = s.namespace
    applied_once(s, "web", "web-1", 4, 6)
    cluster.apps().patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 4}})  # scaled back
    propose(s, "web-2", "web", "web", 5, 8)
    s.approve("web-2")
    s.wait_phase("web-2", "Stale")

    for user in ("mallory", None):
        status, message = refused(patch_status, cluster, user, ns, PROPOSALS, "web-1",
                                  {"phase": "Pending", "applying": None})
        assert status == 403 and denied_by("scalegate-proposal-status") in message
        assert "may not change the status of ScalingProposal web-1" in message
        status, message = refused(patch_status, cluster, user, ns, PROPOSALS, "web-2", {"phase": "Approved"})
        assert status == 403 and "may not change the status of ScalingProposal web-2" in message
    status, message = refused(patch_status, cluster, OPERATOR, ns, PROPOSALS, "web-1",
                              {"phase": "Pending", "applying": None})
    assert status == 403 and message.endswith(denied_by("scalegate-proposal-status") + "ScalingProposal web-1 is "
                                              "Applied, and a terminal phase is final: its record cannot change "
                                              "(a new situation needs a new proposal)")
    # An open record moves forward only, the operator's own writes included.
    s.deploy("held", 2)
    s.create(POLICIES, policy("held", "held", suspend=True))
    propose(s, "held-1", "held", "held", 2, 3)
    s.approve("held-1")
    wait_for(lambda: (s.get_proposal("held-1").get("status") or {}).get("reason") == "PolicySuspended",
             message="held-1 to wait for its suspended policy")
    status, message = refused(patch_status, cluster, OPERATOR, ns, PROPOSALS, "held-1", {"phase": "Pending"})
    assert status == 403 and message.endswith(denied_by("scalegate-proposal-status") + "the phase of "
                                              "ScalingProposal held-1 only moves forward (Pending, Approved, then "
                                              "a terminal phase): Approved to Pending is refused")
    wait_steady(lambda: phase(s, "web-1") == "Applied" and phase(s, "web-2") == "Stale"
                and s.replicas("web") == 4 and applies(s, "web") == 1, duration=3)


def test_f01_operator_applies_at_most_once_even_if_status_is_rewritten(s: Scenario, cluster: Cluster,
                                                                       probes: Probes):
    """Where the status is not guarded (the policy lifted), a rewritten record still never
    makes the operator scale again: neither an Applied proposal set back to Pending, nor a
    Stale one set to Approved once the target has the replicas it was based on. The record
    policy is lifted too, so that only the operator's own logic stands in the way (mallory
    may write status, not the annotations where the operator keeps its records), and status
    is put back from those records."""
    ns = s.namespace
    applied_once(s, "web", "web-1", 4, 6)
    cluster.apps().patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 4}})  # scaled back
    with lifted(cluster, probes, "scalegate-proposal-status"), lifted(cluster, probes, "scalegate-proposal-record"):
        # web-1 is the newest proposal and the target is back at its currentReplicas: decided
        # afresh, it would apply again.
        patch_status(cluster, "mallory", ns, PROPOSALS, "web-1", {"phase": "Pending", "applying": None})
        wait_for(lambda: phase(s, "web-1") == "Applied", message="web-1's status restored from the record")
        wait_steady(lambda: s.replicas("web") == 4 and applies(s, "web") == 1, duration=4)
        propose(s, "web-2", "web", "web", 5, 8)
        s.approve("web-2")
        s.wait_phase("web-2", "Stale")
        cluster.apps().patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 5}})
        patch_status(cluster, "mallory", ns, PROPOSALS, "web-2", {"phase": "Approved"})
        wait_for(lambda: phase(s, "web-2") == "Stale", message="web-2's status restored from the record")
        wait_steady(lambda: s.replicas("web") == 5 and applies(s, "web") == 1, duration=4)
    assert len(scaled_events(s, "Deployment", "web")) == 1
    assert {e.reason for e in s.events_for("ScalingProposal", "web-1")} >= {"RecordRestored"}


def test_f01_a_copied_record_is_trusted_for_nothing(s: Scenario, cluster: Cluster, probes: Probes):
    """Where the record policy is lifted, a proposal created with another proposal's outcome
    record (as a copy would carry it) is not taken as decided: the record names another uid,
    so the operator acts on nothing and says why."""
    applied_once(s, "web", "web-1", 4, 6)
    record = s.get_proposal("web-1")["metadata"]["annotations"][OUTCOME]
    with lifted(cluster, probes, "scalegate-proposal-record"):
        create(cluster, FORECASTER, s.namespace, PROPOSALS, proposal(
            "web-2", "web", "web", 6, 8, annotations={PROPOSED_BY: FORECASTER, OUTCOME: record}))
    s.approve("web-2")
    status = s.wait_phase("web-2", "Failed")["status"]
    assert status["reason"] == "InvalidRecord" and "written for another object" in status["message"]
    wait_steady(lambda: s.replicas("web") == 6 and applies(s, "web") == 1, duration=2)


# -- 2. forged apply record ---------------------------------------------------------------------
def test_f02_forged_apply_records_are_refused(s: Scenario, cluster: Cluster):
    ns = s.namespace
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    propose(s, "web-1", "web", "web", 4, 6)
    s.wait_phase("web-1", "Pending")
    intent = {"replicas": 4, "previousReplicas": 3, "resourceVersion": "1", "startedAt": now_text()}
    for forged in ({"applying": intent}, {"approvedBy": "mallory"}, {"phase": "Applied", "approvedBy": "alice"}):
        status, message = refused(patch_status, cluster, "mallory", ns, PROPOSALS, "web-1", forged)
        assert status == 403 and denied_by("scalegate-proposal-status") in message
        assert message.startswith('scalingproposals.scalegate.io "web-1" is forbidden') and "mallory may not" in message
    wait_steady(lambda: phase(s, "web-1") == "Pending" and not scaled_events(s, "Deployment", "web"), duration=2)
    assert "approvedBy" not in s.get_proposal("web-1")["status"]


def test_f02_the_records_the_operator_acts_on_are_written_only_by_it(s: Scenario, cluster: Cluster):
    """The operator's own record (annotations scalegate.io/applying and scalegate.io/outcome,
    which it trusts where status is only for people) is out of reach of everyone else:
    not on create, not by an approver who may patch proposals, and an outcome is final."""
    ns = s.namespace
    applied_once(s, "web", "web-1", 4, 6)
    uid = s.get_proposal("web-1")["metadata"]["uid"]
    intent = json.dumps({"uid": uid, "replicas": 4, "previousReplicas": 3, "resourceVersion": "1",
                         "targetUID": "x", "targetGeneration": 1, "approvedBy": "alice", "startedAt": now_text()})
    outcome = json.dumps({"uid": uid, "phase": "Applied", "reason": "Applied", "message": "m", "at": now_text()})
    body = proposal("web-2", "web", "web", 6, 7, annotations={PROPOSED_BY: FORECASTER,
                                                            "scalegate.io/outcome": outcome})
    status, message = refused(create, cluster, FORECASTER, ns, PROPOSALS, body)
    assert status == 422 and message.endswith(denied_by("scalegate-proposal-record") + "a new ScalingProposal "
                                              "cannot carry scalegate.io/outcome: it is the operator's record of "
                                              "what it did with a proposal; remove it")
    # On an open proposal, an approver (who may patch proposals, to decide) may not write one.
    propose(s, "web-3", "web", "web", 6, 7)
    s.wait_phase("web-3", "Pending")
    for record in ({"scalegate.io/applying": intent}, {"scalegate.io/outcome": outcome}):
        status, message = refused(patch, cluster, "alice", ns, PROPOSALS, "web-3", {"metadata": {"annotations": record}})
        assert status == 403 and message.endswith(
            denied_by("scalegate-proposal-record") + f"alice may not change {next(iter(record))} of ScalingProposal "
            "web-3: it is the record of what the operator did, written only by system:serviceaccount:scalegate:operator")
    # Written by the operator's identity (if the operator has not written it already), an outcome is final.
    annotations = s.get_proposal("web-1")["metadata"].get("annotations") or {}
    if "scalegate.io/outcome" not in annotations:
        patch(cluster, OPERATOR, ns, PROPOSALS, "web-1", {"metadata": {"annotations": {"scalegate.io/outcome": outcome}}})
    for change in ({"scalegate.io/outcome": None}, {"scalegate.io/outcome": outcome.replace("Applied", "Failed")}):
        for user in ("alice", OPERATOR):
            status, message = refused(patch, cluster, user, ns, PROPOSALS, "web-1", {"metadata": {"annotations": change}})
            assert status == 403 and message.endswith(
                denied_by("scalegate-proposal-record") + "ScalingProposal web-1 was decided by the operator "
                "(scalegate.io/outcome) and that record is final: leave it as it is (a new situation needs a new "
                "proposal)"), message
    status, message = refused(patch, cluster, "alice", ns, PROPOSALS, "web-1",
                              {"metadata": {"annotations": {"scalegate.io/applying": intent}}})
    assert status == 403 and "web-1 was decided by the operator (scalegate.io/outcome)" in message
    patch(cluster, "alice", ns, PROPOSALS, "web-1", {"metadata": {"annotations": {"example.com/note": "free"}}})


def test_f02_operator_records_only_its_own_applies_and_verified_approvers(s: Scenario, cluster: Cluster):
    """Written where the status policy allows it (as the operator's own identity): an apply
    intent on an unapproved proposal whose replicas equal the live count is not a receipt
    (no Applied, no ScaledByScalegate Event, no cooldown started), and an approvedBy nobody
    verified is cleared, then replaced by the real approver's name."""
    ns = s.namespace
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    propose(s, "web-1", "web", "web", 3, 4)
    s.wait_phase("web-1", "Pending")
    patch_status(cluster, OPERATOR, ns, PROPOSALS, "web-1", {"applying": {
        "replicas": 4, "previousReplicas": 3, "resourceVersion": "1", "startedAt": now_text()}})
    wait_steady(lambda: phase(s, "web-1") == "Pending" and not scaled_events(s, "Deployment", "web")
                and "lastAppliedTime" not in (s.get_policy("web").get("status") or {}), duration=6)

    s.deploy("api", 4)
    s.create(POLICIES, policy("api", "api"))
    propose(s, "api-1", "api", "api", 4, 6)
    s.wait_phase("api-1", "Pending")
    patch_status(cluster, OPERATOR, ns, PROPOSALS, "api-1", {"approvedBy": "mallory"})
    wait_for(lambda: "approvedBy" not in s.get_proposal("api-1")["status"], timeout=15,
             message="the operator to clear an approvedBy nobody verified")
    s.approve("api-1")
    assert s.wait_phase("api-1", "Applied")["status"]["approvedBy"] == "alice"
    messages = wait_for(lambda: [e.message for e in scaled_events(s, "Deployment", "api")],
                        message="the ScaledByScalegate Event")
    assert messages == ["scaled from 4 to 6 replicas by proposal api-1, approved by alice"]


# -- 3. deletion through status ------------------------------------------------------------------
def test_f03_status_writes_that_would_make_the_gc_delete_are_refused(s: Scenario, cluster: Cluster):
    ns = s.namespace
    applied_once(s, "web", "web-1", 4, 6)
    propose(s, "web-2", "web", "web", 6, 7)
    s.wait_phase("web-2", "Pending")
    status, message = refused(patch_status, cluster, "mallory", ns, PROPOSALS, "web-1",
                              {"finishedAt": "2000-01-01T00:00:00Z"})
    assert status == 403 and denied_by("scalegate-proposal-status") in message
    status, message = refused(patch_status, cluster, "mallory", ns, PROPOSALS, "web-2",
                              {"phase": "Failed", "finishedAt": "2000-01-01T00:00:00Z"})
    assert status == 403 and denied_by("scalegate-proposal-status") in message
    # mallory may not delete them herself, which is what the forged clock was for.
    status, _ = refused(cluster.custom("mallory").delete_namespaced_custom_object, GROUP, VERSION, ns,
                        PROPOSALS, "web-1")
    assert status == 403
    assert s.get_proposal("web-1")["status"]["finishedAt"] != "2000-01-01T00:00:00Z"
    assert phase(s, "web-2") == "Pending"


def test_f03_garbage_collector_keeps_its_own_clock(s: Scenario, cluster: Cluster, probes: Probes,
                                                   component_kubeconfigs, tmp_path):
    """Where status is not guarded, a forged finishedAt (and a forged terminal phase) does
    not make the garbage collector delete proposals early: with a retention of an hour,
    proposals a minute old survive sweeps every second."""
    ns = s.namespace
    applied_once(s, "web", "web-1", 4, 6)
    propose(s, "web-2", "web", "web", 6, 7)
    s.wait_phase("web-2", "Pending")
    with lifted(cluster, probes, "scalegate-proposal-status"):
        patch_status(cluster, "mallory", ns, PROPOSALS, "web-1", {"finishedAt": "2000-01-01T00:00:00Z"})
        patch_status(cluster, "mallory", ns, PROPOSALS, "web-2",
                     {"phase": "Failed", "finishedAt": "2000-01-01T00:00:00Z"})
    collector = OperatorProcess(component_kubeconfigs["operator"], tmp_path / "gc-operator.log", namespaces=[ns],
                                extra_args=["--retention", "3600", "--gc-interval", "1"]).start()
    try:
        wait_steady(lambda: exists(s, "web-1") and exists(s, "web-2"), duration=6)
    finally:
        collector.stop()


# -- 4. empty proposer, and create-and-approve in one request --------------------------------------
def test_f04_a_proposal_names_its_creator_and_only_listed_pipelines_create_it_approved(s: Scenario,
                                                                                      cluster: Cluster):
    ns = s.namespace
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    # erin may create proposals (not approve): an empty proposer is refused.
    grant(cluster, ns, "erin", [{"apiGroups": [GROUP], "resources": [PROPOSALS], "verbs": ["create", "get"]}])
    body = proposal("by-erin", "web", "web", 4, 6, annotations={PROPOSED_BY: ""})
    status, message = refused(create, cluster, "erin", ns, PROPOSALS, body)
    assert status == 422 and message.endswith(denied_by("scalegate-approval") + "scalegate.io/proposed-by is empty: "
                                              "set it to your user name, erin, or leave it out of a proposal you "
                                              "create already approved")
    # dave may create and approve: creating it approved is for listed pipelines only.
    grant(cluster, ns, "dave", [{"apiGroups": [GROUP], "resources": [PROPOSALS], "verbs": ["create", "get"]}])
    bind_approver(cluster, ns, "dave")
    ref = {APPROVAL_REF: "https://git.example/shop/merge_requests/7"}
    for decided in ({APPROVED: "true", APPROVED_BY: "dave", **ref},
                    {APPROVED: "true", APPROVED_BY: "dave", PROPOSED_BY: "", **ref}):
        status, message = refused(create, cluster, "dave", ns, PROPOSALS,
                                  proposal("by-dave", "web", "web", 4, 6, annotations=decided))
        assert status in (403, 422) and "by-dave" in message
    status, message = refused(create, cluster, "dave", ns, PROPOSALS, proposal(
        "by-dave", "web", "web", 4, 6, annotations={APPROVED: "true", APPROVED_BY: "dave", **ref}))
    assert message.endswith(denied_by("scalegate-gitops") + "dave may not create a ScalingProposal already approved "
                            "or rejected: only the GitOps identities listed in the GitOpsApprovers object "
                            "scalegate may; create it without a decision, with "
                            "scalegate.io/proposed-by: dave, and let another approver decide")
    assert s.replicas("web") == 4

    # A listed pipeline still may, with an approval-ref, and the operator applies it.
    pipeline = f"system:serviceaccount:{ns}:deployer"
    cluster.core().create_namespaced_service_account(ns, {"metadata": {"name": "deployer"}})
    grant(cluster, ns, pipeline, [{"apiGroups": [GROUP], "resources": [PROPOSALS], "verbs": ["create", "get"]}])
    bind_approver(cluster, ns, pipeline)
    with cluster.gitops_identities("system:serviceaccount:argocd:argocd-application-controller", pipeline):
        def created() -> bool:
            try:
                create(cluster, pipeline, ns, PROPOSALS, proposal(
                    "from-git", "web", "web", 4, 6, annotations={APPROVED: "true", APPROVED_BY: pipeline, **ref}))
                return True
            except kubernetes.client.ApiException as err:
                assert denied_by("scalegate-gitops") in err.body, err.body  # until the list is read
                return False
        wait_for(created, timeout=30, interval=0.5, message="the listed pipeline to be admitted")
        # Listed, but without saying where it was decided: refused.
        no_ref = proposal("from-git-2", "web", "web", 4, 6, annotations={APPROVED: "true", APPROVED_BY: pipeline})
        status, message = refused(create, cluster, pipeline, ns, PROPOSALS, no_ref)
        assert status == 422 and message.endswith(
            denied_by("scalegate-approval") + "a ScalingProposal created already approved or rejected must say "
            "where it was decided: set scalegate.io/approval-ref, e.g. to the merge request that approved it")
    status = s.wait_phase("from-git", "Applied")["status"]
    assert status["approvedBy"] == pipeline and status["approvalRef"] == ref[APPROVAL_REF]
    assert s.replicas("web") == 6


# -- 5. supersession by a mutable label -------------------------------------------------------------
def test_f05_the_policy_label_is_kept_equal_to_the_policy_ref(s: Scenario, cluster: Cluster):
    ns = s.namespace
    s.deploy("web", 4)
    s.deploy("api", 4)
    s.create(POLICIES, policy("web", "web"))
    s.create(POLICIES, policy("api", "api"))
    propose(s, "web-old", "web", "web", 4, 6)
    created = s.get_proposal("web-old")["metadata"]["creationTimestamp"]
    wait_for(lambda: now_text() > created, message="the next second")
    propose(s, "web-new", "web", "web", 4, 8)
    propose(s, "api-1", "api", "api", 4, 5)
    s.approve("api-1")
    s.wait_phase("api-1", "Applied")
    propose(s, "api-2", "api", "api", 5, 6)
    s.approve("api-2")
    s.wait_phase("api-2", "Applied")

    # alice may patch proposals (to decide), but not the index.
    for name, labels in (("web-new", {POLICY_LABEL: None}), ("web-new", {POLICY_LABEL: "api"}),
                         ("api-1", {POLICY_LABEL: "web"})):
        status, message = refused(patch, cluster, "alice", ns, PROPOSALS, name, {"metadata": {"labels": labels}})
        assert status == 403 and denied_by("scalegate-proposal-label") in message
        assert f"the label scalegate.io/policy of ScalingProposal {name} is the index of its policy" in message
    body = proposal("web-odd", "web", "web", 4, 7, annotations={PROPOSED_BY: FORECASTER}, labels={POLICY_LABEL: "api"})
    status, message = refused(create, cluster, FORECASTER, ns, PROPOSALS, body)
    assert status == 422 and message.endswith(denied_by("scalegate-proposal-label") + "a new ScalingProposal carries "
                                              "the label scalegate.io/policy equal to spec.policyRef.name: set it "
                                              "to web")
    # Other labels are still free, and the older proposal is still superseded.
    patch(cluster, "alice", ns, PROPOSALS, "web-new", {"metadata": {"labels": {"team": "shop"}}})
    s.approve("web-old")
    assert "web-new" in s.wait_phase("web-old", "Superseded")["status"]["message"]
    assert s.replicas("web") == 4 and s.get_proposal("api-1")["status"]["phase"] == "Applied"


def test_f05_supersession_follows_the_policy_ref_not_the_label(s: Scenario, cluster: Cluster, probes: Probes):
    """Where the label is not guarded (scalegate-proposal-label lifted), a newer proposal
    whose label was removed or pointed elsewhere still supersedes the older one: the
    operator finds a policy's proposals by spec.policyRef.name, which is immutable."""
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web"))
    propose(s, "web-old", "web", "web", 4, 6)
    created = s.get_proposal("web-old")["metadata"]["creationTimestamp"]
    wait_for(lambda: now_text() > created, message="the next second")
    propose(s, "web-new", "web", "web", 4, 8)
    s.reject("web-new")  # decided: the operator no longer touches it, so the label stays as written below
    s.wait_phase("web-new", "Rejected")
    with lifted(cluster, probes, "scalegate-proposal-label"):
        patch(cluster, None, s.namespace, PROPOSALS, "web-new", {"metadata": {"labels": {POLICY_LABEL: "api"}}})
        s.approve("web-old")
        assert "web-new" in s.wait_phase("web-old", "Superseded")["status"]["message"]
    wait_steady(lambda: s.replicas("web") == 4 and applies(s, "web") == 0, duration=2)


# -- 6. confused deputy ---------------------------------------------------------------------------
def test_f06_policies_only_for_what_you_may_scale(s: Scenario, cluster: Cluster):
    ns = s.namespace
    s.deploy("web", 1)
    author = {"apiGroups": [GROUP], "resources": [POLICIES], "verbs": ["create", "update", "patch", "get"]}
    grant(cluster, ns, "pat", [author])  # may write policies, may not scale web
    grant(cluster, ns, "sam", [author, {"apiGroups": ["apps"], "resources": ["deployments/scale"],
                                        "verbs": ["update"], "resourceNames": ["web"]}])
    wide = policy("web", "web", min_replicas=0, max_replicas=100000)
    status, message = refused(create, cluster, "pat", ns, POLICIES, wide)
    assert status == 403 and message.endswith(
        denied_by("scalegate-policy-target") + "pat may not create ScalingPolicy web: a policy lets approved "
        "proposals scale Deployment web, so it needs the right to scale it yourself (update on "
        f"deployments.apps/scale named web in namespace {ns}), which you do not hold")
    create(cluster, "sam", ns, POLICIES, policy("web", "web", min_replicas=1, max_replicas=3))
    status, message = refused(patch, cluster, "pat", ns, POLICIES, "web", {"spec": {"minReplicas": 0,
                                                                                   "maxReplicas": 100000}})
    assert status == 403 and "pat may not change ScalingPolicy web" in message
    status, message = refused(patch, cluster, "sam", ns, POLICIES, "web",
                              {"spec": {"targetRef": {"name": "db"}}})  # sam may scale web only
    assert status == 403 and "update on deployments.apps/scale named db" in message
    patch(cluster, "pat", ns, POLICIES, "web", {"metadata": {"labels": {"team": "shop"}}})  # metadata is free
    assert s.get_policy("web")["spec"]["maxReplicas"] == 3
    # The rest of the original attack, the GitOps path to 0, no longer has a policy to use.
    propose(s, "web-1", "web", "web", 1, 0)
    s.approve("web-1")
    assert s.wait_phase("web-1", "Rejected")["status"]["reason"] == "OutOfBounds"
    assert s.replicas("web") == 1


# -- 7. two policies, one target ------------------------------------------------------------------
def test_f07_a_second_policy_for_the_same_target_is_refused(s: Scenario, cluster: Cluster):
    """The cooldown and step limits hold on the target, so a second policy for a target that
    already has one is refused: its proposals fail with ConflictingPolicy, naming the first."""
    ns = s.namespace
    grant(cluster, ns, "sam", [
        {"apiGroups": [GROUP], "resources": [POLICIES], "verbs": ["create", "get"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update"]}])
    s.deploy("web", 2)
    create(cluster, "sam", ns, POLICIES, policy("web-a", "web", cooldownSeconds=600, maxStepUp=2))
    propose(s, "a-1", "web-a", "web", 2, 4)
    s.approve("a-1")
    s.wait_phase("a-1", "Applied")
    create(cluster, "sam", ns, POLICIES, policy("web-b", "web"))
    propose(s, "b-1", "web-b", "web", 4, 8)
    s.approve("b-1")
    wait_for(lambda: (phase(s, "b-1") not in (None, "Pending", "Approved")) or s.replicas("web") != 4,
             message="the second policy's proposal to be decided")
    status = s.get_proposal("b-1")["status"]
    assert s.replicas("web") == 4 and applies(s, "web") == 1, status
    assert (status["phase"], status["reason"]) == ("Failed", "ConflictingPolicy"), status
    assert "web-a" in status["message"]


# -- 8. targets owned by a controller --------------------------------------------------------------
def test_f08_a_target_managed_by_a_controller_is_refused(s: Scenario, cluster: Cluster):
    ns = s.namespace
    grant(cluster, ns, "sam", [
        {"apiGroups": [GROUP], "resources": [POLICIES], "verbs": ["create", "get"]},
        {"apiGroups": ["apps"], "resources": ["replicasets/scale"], "verbs": ["update"]}])
    s.deploy("web", 2)
    owned = wait_for(lambda: [rs for rs in cluster.apps().list_namespaced_replica_set(ns).items
                              if any(o.controller and o.kind == "Deployment" and o.name == "web"
                                     for o in rs.metadata.owner_references or [])],
                     timeout=30, message="the Deployment controller's ReplicaSet")[0].metadata.name
    create(cluster, "sam", ns, POLICIES, policy("rs", owned, kind="ReplicaSet", max_replicas=40))
    propose(s, "rs-1", "rs", owned, 2, 5, kind="ReplicaSet")
    s.approve("rs-1")
    wait_for(lambda: phase(s, "rs-1") not in (None, "Pending", "Approved"), message="rs-1 to be decided")
    status = s.get_proposal("rs-1")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "TargetManaged"), status
    assert "Deployment web" in status["message"]
    assert applies(s, owned, kind="ReplicaSet", resource="replicasets") == 0
    assert not scaled_events(s, "ReplicaSet", owned)


# -- 9. proposalTTLSeconds --------------------------------------------------------------------------
def test_f09_a_proposal_expires_at_its_creation_plus_the_policy_ttl(s: Scenario, cluster: Cluster):
    """validUntil is capped at creation + proposalTTLSeconds: a proposal claiming the year
    9999 expires after the policy's 60 s like any other, and a late approval applies nothing."""
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", proposalTTLSeconds=60))
    body = proposal("web-1", "web", "web", 4, 6, annotations={PROPOSED_BY: FORECASTER})
    body["spec"]["validUntil"] = "9999-12-31T23:59:59Z"
    create(cluster, FORECASTER, s.namespace, PROPOSALS, body)
    s.wait_phase("web-1", "Pending")
    status = s.wait_phase("web-1", "Expired", timeout=90)["status"]
    assert status["reason"] == "Expired"
    s.approve("web-1")
    wait_steady(lambda: s.replicas("web") == 4 and phase(s, "web-1") == "Expired", duration=3)
    assert applies(s, "web") == 0


# -- 10. the forecaster and the cooldown -------------------------------------------------------------
def test_f10_the_forecaster_cannot_move_the_cooldown(s: Scenario, cluster: Cluster, component_kubeconfigs):
    ns = s.namespace
    applied_once(s, "web", "web-1", 4, 6, cooldownSeconds=600)
    forecaster = kubernetes.client.CustomObjectsApi(
        kubernetes.config.new_client_from_config(config_file=str(component_kubeconfigs["forecaster"])))
    last_applied = s.get_policy("web")["status"]["lastAppliedTime"]
    for forged in ({"lastAppliedTime": None}, {"lastAppliedTime": "2000-01-01T00:00:00Z"},
                   {"lastAppliedTime": "9999-12-31T23:59:59Z"}, {"lastAppliedProposal": None}):
        with pytest.raises(kubernetes.client.ApiException) as err:
            forecaster.patch_namespaced_custom_object_status(GROUP, VERSION, ns, POLICIES, "web", {"status": forged},
                                                             _content_type="application/merge-patch+json")
        message = json.loads(err.value.body)["message"]
        assert err.value.status == 403 and message.endswith(
            denied_by("scalegate-policy-status") + "the forecaster writes only ForecastReady, lastForecastTime, "
            "lastProposal and observedGeneration of ScalingPolicy web; lastAppliedTime, lastAppliedProposal and "
            "the other conditions are the operator's record of its applies")
    # Nor may anyone else with write access to the status subresource, the admin included.
    for user in ("mallory", None):
        status, message = refused(patch_status, cluster, user, ns, POLICIES, "web", {"lastAppliedTime": None})
        assert status == 403 and denied_by("scalegate-policy-status") in message
        assert "may not change the status of ScalingPolicy web: it is written only by scalegate's operator" in message
    # And the operator keeps to its own fields: ForecastReady is the forecaster's word.
    status, message = refused(patch_status, cluster, OPERATOR, ns, POLICIES, "web", {"conditions": [{
        "type": "ForecastReady", "status": "True", "reason": "Proposed", "message": "forged",
        "lastTransitionTime": now_text()}]})
    assert status == 403 and message.endswith(denied_by("scalegate-policy-status") + "the operator writes only "
                                              "lastAppliedTime, lastAppliedProposal and conditions other than "
                                              "ForecastReady of ScalingPolicy web; the rest is the forecaster's")
    # Its own fields it still writes, with its own token.
    forecaster.patch_namespaced_custom_object_status(GROUP, VERSION, ns, POLICIES, "web", {"status": {
        "lastForecastTime": now_text(), "lastProposal": "web-2", "conditions": [{
            "type": "ForecastReady", "status": "True", "reason": "Proposed", "message": "proposed web-2",
            "lastTransitionTime": now_text()}]}}, _content_type="application/merge-patch+json")
    assert s.get_policy("web")["status"]["lastAppliedTime"] == last_applied
    propose(s, "web-2", "web", "web", 6, 7)
    s.approve("web-2")
    wait_for(lambda: (s.get_proposal("web-2").get("status") or {}).get("reason") == "CooldownActive",
             message="the cooldown")
    wait_steady(lambda: s.replicas("web") == 6 and applies(s, "web") == 1, duration=2)


def test_f10_a_last_applied_time_out_of_range_fails_clearly_and_never_loops(s: Scenario, cluster: Cluster,
                                                                              operator):
    """A lastAppliedTime the cooldown cannot be computed from (written here as the operator's
    own identity, the only one the status policy lets write it) fails the approved proposal
    with InvalidPolicy naming the field, instead of an error every minute under a stale
    Pending/AwaitingApproval."""
    ns = s.namespace
    s.deploy("web", 4)
    s.create(POLICIES, policy("web", "web", cooldownSeconds=600))
    patch_status(cluster, OPERATOR, ns, POLICIES, "web", {"lastAppliedTime": "9999-12-31T23:59:59Z"})
    propose(s, "web-1", "web", "web", 4, 6)
    s.approve("web-1")
    status = s.wait_phase("web-1", "Failed", timeout=20)["status"]
    assert status["reason"] == "InvalidPolicy" and "lastAppliedTime" in status["message"], status
    wait_steady(lambda: s.replicas("web") == 4 and phase(s, "web-1") == "Failed", duration=2)
    assert applies(s, "web") == 0


# -- the policies themselves ----------------------------------------------------------------------
def test_every_admission_policy_compiles_cleanly_and_fails_closed(cluster: Cluster):
    admission = kubernetes.client.AdmissionregistrationV1Api(cluster.api_client())
    for name in admission_policies():
        found = wait_for(lambda name=name: (p := admission.read_validating_admission_policy(name)).status
                         and p.status.observed_generation == p.metadata.generation and p,
                         message=f"{name}'s type checking")
        assert not (found.status.type_checking and found.status.type_checking.expression_warnings), name
        assert found.spec.failure_policy == "Fail", name
        binding = admission.read_validating_admission_policy_binding(name)
        assert binding.spec.policy_name == name and binding.spec.validation_actions == ["Deny"], name


def test_every_policy_status_field_has_one_owner():
    """scalegate-policy-status names who writes each field; a field added to the CRD must
    be given to the operator or the forecaster there, or nobody guards it."""
    crd = yaml.safe_load((CRDS / "scalingpolicies.scalegate.io.yaml").read_text())
    fields = set(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"])
    vap = next(d for d in yaml.safe_load_all((ADMISSION / "status-policy.yaml").read_text())
               if d and d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == "scalegate-policy-status")
    variables = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}
    owned = {owner: set(re.findall(r"status\.\?(\w+)", variables[owner]))
             | ({"conditions"} if "variables.conditions" in variables[owner] else set())
             for owner in ("operatorFieldsKept", "forecasterFieldsKept")}
    assert owned["operatorFieldsKept"] | owned["forecasterFieldsKept"] == fields
    assert owned["operatorFieldsKept"] & owned["forecasterFieldsKept"] == {"conditions"}  # split by type
