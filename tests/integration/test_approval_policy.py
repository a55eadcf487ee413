"""The ValidatingAdmissionPolicy scalegate-approval, enforced by the real kube-apiserver:
who may approve or reject, as whom, and that a decision is final, while everything else a
component writes (kopf's annotations, labels, finalizers, status) passes untouched."""

from __future__ import annotations

import json
import uuid

import kubernetes
import pytest
import yaml
from harness import Cluster, wait_for

from scalegate.model import (
    APPROVAL_REF,
    APPROVED,
    APPROVED_BY,
    DECISION_REASON,
    GROUP,
    PROPOSAL_PLURAL,
    PROPOSED_BY,
    REJECTED,
    REJECTED_BY,
    VERSION,
)

FORECASTER = "system:serviceaccount:scalegate:forecaster"
OPERATOR = "system:serviceaccount:scalegate:operator"
POLICY = "scalegate-approval"
PREFIX = f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: "


# -- helpers ------------------------------------------------------------------------------
def proposal(name: str, proposed_by: str | None = FORECASTER, annotations: dict | None = None) -> dict:
    ann = dict(annotations or {})
    if proposed_by is not None:
        ann[PROPOSED_BY] = proposed_by
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal",
        "metadata": {"name": name, "labels": {"scalegate.io/policy": "web"}, "annotations": ann},
        "spec": {"policyRef": {"name": "web"},
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "currentReplicas": 4, "replicas": 9, "validUntil": "2099-01-01T00:00:00Z",
                 "reason": "peak of 410 req/s expected; 9 x 50 req/s covers it"},
    }


def create(cluster: Cluster, namespace: str, body: dict, user: str | None = None) -> dict:
    return cluster.custom(user).create_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL, body)


def patch(cluster: Cluster, namespace: str, name: str, body: dict, user: str | None = None) -> dict:
    return cluster.custom(user).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PROPOSAL_PLURAL, name, body, _content_type="application/merge-patch+json")


def annotate(cluster: Cluster, namespace: str, name: str, annotations: dict, user: str | None = None) -> dict:
    """One merge patch of annotations (None removes one)."""
    return patch(cluster, namespace, name, {"metadata": {"annotations": annotations}}, user)


def read(cluster: Cluster, namespace: str, name: str) -> dict:
    return cluster.custom().get_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL, name)


def refused(call, *args, **kwargs) -> tuple[int, str]:
    """(HTTP status, the server's message) of a request that must fail."""
    with pytest.raises(kubernetes.client.ApiException) as err:
        call(*args, **kwargs)
    return err.value.status, json.loads(err.value.body)["message"]


def grant(cluster: Cluster, namespace: str, user: str, clusterrole: str) -> None:
    """A RoleBinding of `clusterrole` to `user`, waited for until RBAC honours it."""
    cluster.kubectl("create", "rolebinding", f"{clusterrole}-{uuid.uuid4().hex[:6]}", "-n", namespace,
                    f"--clusterrole={clusterrole}",
                    f"--serviceaccount={user.split(':')[2]}:{user.split(':')[3]}"
                    if user.startswith("system:serviceaccount:") else f"--user={user}")


def grant_role(cluster: Cluster, namespace: str, user: str, verbs: list[str]) -> None:
    """A namespaced Role with `verbs` on scalingproposals, bound to `user`."""
    name = f"sprop-{uuid.uuid4().hex[:6]}"
    cluster.apply_yaml(yaml.safe_dump_all([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": namespace},
         "rules": [{"apiGroups": [GROUP], "resources": [PROPOSAL_PLURAL], "verbs": verbs}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]},
    ]))


def wait_allowed(cluster: Cluster, namespace: str, user: str, verb: str) -> None:
    groups = ["system:authenticated"]
    if user.startswith("system:serviceaccount:"):
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}"]
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": user, "groups": groups,
                       "resourceAttributes": {"group": GROUP, "resource": PROPOSAL_PLURAL,
                                              "verb": verb, "namespace": namespace}}}
    authz = kubernetes.client.AuthorizationV1Api(cluster.api_client())
    wait_for(lambda: authz.create_subject_access_review(review).status.allowed, timeout=30,
             message=f"RBAC to allow {user} to {verb} scalingproposals")


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def installed(cluster: Cluster):
    with cluster.scalegate_installed():
        yield


@pytest.fixture
def ns(cluster: Cluster, namespace: str) -> str:
    """A namespace where alice and carol approve, and a proposal `web-1` by the forecaster."""
    for user in ("alice", "carol"):
        grant(cluster, namespace, user, "scalegate-approver")
        wait_allowed(cluster, namespace, user, "approve")
    create(cluster, namespace, proposal("web-1"), user=FORECASTER)
    return namespace


def approve_as(user: str, **extra: str) -> dict:
    return {APPROVED: "true", APPROVED_BY: user, **extra}


# -- the policy itself --------------------------------------------------------------------
def test_policy_compiles_without_type_warnings_and_ignores_the_status_subresource(cluster: Cluster):
    admission = kubernetes.client.AdmissionregistrationV1Api(cluster.api_client())
    policy = wait_for(lambda: (p := admission.read_validating_admission_policy(POLICY)).status
                      and p.status.observed_generation == p.metadata.generation and p,
                      message="the policy's type checking")
    assert not (policy.status.type_checking and policy.status.type_checking.expression_warnings)
    rules = policy.spec.match_constraints.resource_rules
    assert [r.resources for r in rules] == [["scalingproposals"]]
    assert sorted(rules[0].operations) == ["CREATE", "UPDATE"]
    assert policy.spec.failure_policy == "Fail"
    binding = admission.read_validating_admission_policy_binding(POLICY)
    assert binding.spec.policy_name == POLICY and binding.spec.validation_actions == ["Deny"]


# -- approving and rejecting --------------------------------------------------------------
def test_an_approver_approves_and_all_annotations_land(cluster: Cluster, ns: str):
    annotate(cluster, ns, "web-1", approve_as("alice", **{
        APPROVAL_REF: "https://git.example/shop/merge_requests/42", DECISION_REASON: "campaign at 21:00"}),
        user="alice")
    ann = read(cluster, ns, "web-1")["metadata"]["annotations"]
    assert ann[APPROVED] == "true" and ann[APPROVED_BY] == "alice"
    assert ann[APPROVAL_REF] == "https://git.example/shop/merge_requests/42"
    assert ann[DECISION_REASON] == "campaign at 21:00"
    assert ann[PROPOSED_BY] == FORECASTER


def test_an_approver_rejects_with_a_reason(cluster: Cluster, ns: str):
    annotate(cluster, ns, "web-1", {REJECTED: "true", REJECTED_BY: "carol", DECISION_REASON: "cancelled"},
             user="carol")
    ann = read(cluster, ns, "web-1")["metadata"]["annotations"]
    assert (ann[REJECTED], ann[REJECTED_BY], ann[DECISION_REASON]) == ("true", "carol", "cancelled")


def test_a_user_without_the_approve_verb_is_denied_and_told_whom_to_ask(cluster: Cluster, ns: str):
    grant_role(cluster, ns, "bob", ["get", "list", "patch", "update"])  # may edit, may not approve
    wait_allowed(cluster, ns, "bob", "patch")
    status, message = refused(annotate, cluster, ns, "web-1", approve_as("bob"), user="bob")
    assert status == 403
    assert message.endswith(PREFIX + f"bob may not approve or reject ScalingProposals in namespace {ns}: ask an "
                            "administrator to bind you to the ClusterRole scalegate-approver (the verb approve "
                            "on scalingproposals.scalegate.io)")
    status, message = refused(annotate, cluster, ns, "web-1", {REJECTED: "true", REJECTED_BY: "bob"}, user="bob")
    assert status == 403 and "bob may not approve or reject" in message
    assert APPROVED not in read(cluster, ns, "web-1")["metadata"]["annotations"]


def test_the_forecaster_cannot_approve_its_own_proposal(cluster: Cluster, ns: str):
    # Its RBAC alone stops it: it may not even patch proposals.
    status, message = refused(annotate, cluster, ns, "web-1", approve_as(FORECASTER), user=FORECASTER)
    assert status == 403 and f'User "{FORECASTER}" cannot patch resource "scalingproposals"' in message
    # Even if someone binds it as an approver by mistake, the policy keeps the duties apart.
    grant(cluster, ns, FORECASTER, "scalegate-approver")
    wait_allowed(cluster, ns, FORECASTER, "approve")
    status, message = refused(annotate, cluster, ns, "web-1", approve_as(FORECASTER), user=FORECASTER)
    assert status == 403
    assert message.endswith(PREFIX + f"you ({FORECASTER}) proposed this ScalingProposal (scalegate.io/proposed-by),"
                            " so you cannot approve or reject it: ask another approver to decide")


def test_an_approver_who_proposed_it_cannot_decide_on_it(cluster: Cluster, ns: str):
    grant_role(cluster, ns, "dave", ["create"])
    grant(cluster, ns, "dave", "scalegate-approver")
    wait_allowed(cluster, ns, "dave", "create")
    wait_allowed(cluster, ns, "dave", "approve")
    create(cluster, ns, proposal("by-dave", proposed_by="dave"), user="dave")
    for decision in (approve_as("dave"), {REJECTED: "true", REJECTED_BY: "dave"}):
        status, message = refused(annotate, cluster, ns, "by-dave", decision, user="dave")
        assert status == 403 and "you (dave) proposed this ScalingProposal" in message
    annotate(cluster, ns, "by-dave", approve_as("alice"), user="alice")  # anyone else may


def test_naming_someone_else_as_approver_is_denied(cluster: Cluster, ns: str):
    status, message = refused(annotate, cluster, ns, "web-1", approve_as("carol"), user="alice")
    assert status == 403
    assert message.endswith(PREFIX + "set scalegate.io/approved-by to your user name, alice")
    status, message = refused(annotate, cluster, ns, "web-1", {REJECTED: "true", REJECTED_BY: "carol"}, user="alice")
    assert message.endswith("set scalegate.io/rejected-by to your user name, alice")
    # The administrator too: approved-by is who sent the request, whoever that is.
    admin = json.loads(cluster.kubectl("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]["username"]
    status, message = refused(annotate, cluster, ns, "web-1", approve_as("alice"))
    assert message.endswith(f"set scalegate.io/approved-by to your user name, {admin}")


@pytest.mark.parametrize("annotations, expected", [
    ({APPROVED: "true"}, 'set scalegate.io/approved: "true" and scalegate.io/approved-by: alice together, in one '
                         "request (kubectl scalegate approve NAME does both)"),
    ({APPROVED_BY: "alice"}, 'set scalegate.io/approved: "true" and scalegate.io/approved-by: alice together'),
    ({REJECTED: "true"}, 'set scalegate.io/rejected: "true" and scalegate.io/rejected-by: alice together'),
    ({REJECTED_BY: "alice"}, 'set scalegate.io/rejected: "true" and scalegate.io/rejected-by: alice together'),
    ({APPROVED: "yes", APPROVED_BY: "alice"}, 'scalegate.io/approved and scalegate.io/rejected take the value "true"'),
    ({APPROVAL_REF: "https://git.example/mr/1"}, "scalegate.io/approval-ref and scalegate.io/decision-reason belong "
                                                  "to a decision: set them in the same request as"),
    ({DECISION_REASON: "looks fine"}, "belong to a decision"),
], ids=["approved-alone", "approved-by-alone", "rejected-alone", "rejected-by-alone", "not-true", "ref-alone",
        "reason-alone"])
def test_a_decision_is_both_annotations_in_one_request(cluster: Cluster, ns: str, annotations, expected):
    status, message = refused(annotate, cluster, ns, "web-1", annotations, user="alice")
    assert status in (403, 422) and PREFIX in message and expected in message
    assert set(read(cluster, ns, "web-1")["metadata"]["annotations"]) == {PROPOSED_BY}


def test_approve_and_reject_together_is_denied(cluster: Cluster, ns: str):
    both = {**approve_as("alice"), REJECTED: "true", REJECTED_BY: "alice"}
    status, message = refused(annotate, cluster, ns, "web-1", both, user="alice")
    assert status == 422
    assert message.endswith(PREFIX + "a proposal is either approved or rejected, not both: set scalegate.io/approved "
                            "or scalegate.io/rejected, not both")


@pytest.mark.parametrize("change, expected", [
    ({APPROVED_BY: "carol"}, "the decision on this proposal is final (approved by alice): scalegate.io/approved-by "
                             "cannot be changed or removed: leave the decision annotations as they are"),
    ({APPROVED: None}, "the decision on this proposal is final (approved by alice): scalegate.io/approved cannot"),
    ({APPROVED: None, APPROVED_BY: None}, "scalegate.io/approved, scalegate.io/approved-by cannot be changed"),
    ({APPROVAL_REF: "https://git.example/mr/2"}, "scalegate.io/approval-ref cannot be changed or removed"),
    ({DECISION_REASON: None}, "scalegate.io/decision-reason cannot be changed or removed"),
    ({APPROVED: None, APPROVED_BY: None, REJECTED: "true", REJECTED_BY: "carol"},
     "the decision on this proposal is final (approved by alice)"),
    ({REJECTED: "true", REJECTED_BY: "carol"},
     "this proposal is already approved by alice and the decision is final: remove scalegate.io/rejected, "
     "scalegate.io/rejected-by from your change"),
], ids=["change-approver", "remove-approved", "remove-both", "change-ref", "remove-reason", "flip-to-rejected",
        "add-rejection"])
def test_a_made_decision_cannot_be_changed_or_removed(cluster: Cluster, ns: str, change, expected):
    annotate(cluster, ns, "web-1", approve_as("alice", **{APPROVAL_REF: "https://git.example/mr/1",
                                                          DECISION_REASON: "ok"}), user="alice")
    before = read(cluster, ns, "web-1")["metadata"]["annotations"]
    status, message = refused(annotate, cluster, ns, "web-1", change, user="carol")
    assert status == 403 and PREFIX in message and expected in message
    assert read(cluster, ns, "web-1")["metadata"]["annotations"] == before


def test_nothing_can_be_added_to_a_rejection_later(cluster: Cluster, ns: str):
    annotate(cluster, ns, "web-1", {REJECTED: "true", REJECTED_BY: "carol"}, user="carol")
    status, message = refused(annotate, cluster, ns, "web-1", {DECISION_REASON: "forgot to say why"}, user="carol")
    assert message.endswith("this proposal is already rejected by carol and the decision is final: remove "
                            "scalegate.io/decision-reason from your change")
    status, message = refused(annotate, cluster, ns, "web-1", approve_as("alice"), user="alice")
    assert "already rejected by carol" in message


def test_repeating_the_same_decision_is_a_no_op_that_passes(cluster: Cluster, ns: str):
    """GitOps tools re-apply what git says: the same annotations again must not fail."""
    annotate(cluster, ns, "web-1", approve_as("alice"), user="alice")
    annotate(cluster, ns, "web-1", approve_as("alice"), user="alice")
    annotate(cluster, ns, "web-1", approve_as("alice"), user="carol")  # unchanged values: nothing is decided


# -- the proposer -------------------------------------------------------------------------
def test_proposed_by_is_checked_on_create(cluster: Cluster, namespace: str):
    status, message = refused(create, cluster, namespace, proposal("forged", proposed_by="alice"), user=FORECASTER)
    assert status == 403
    assert message.endswith(PREFIX + "scalegate.io/proposed-by must name the user who creates the proposal: set it "
                            f"to your user name, {FORECASTER}, or leave it out of a proposal you create already "
                            "approved")
    status, message = refused(create, cluster, namespace, proposal("anonymous", proposed_by=None), user=FORECASTER)
    assert status == 422
    assert message.endswith("a new ScalingProposal must name who proposes it: add the annotation "
                            f"scalegate.io/proposed-by: {FORECASTER}")
    create(cluster, namespace, proposal("honest"), user=FORECASTER)


def test_proposed_by_never_changes(cluster: Cluster, ns: str):
    status, message = refused(annotate, cluster, ns, "web-1", {PROPOSED_BY: "alice"}, user="alice")
    assert status == 403
    assert message.endswith(PREFIX + "scalegate.io/proposed-by records who created this proposal and cannot be "
                            f'changed or removed: keep it "{FORECASTER}"')
    status, message = refused(annotate, cluster, ns, "web-1", {PROPOSED_BY: None}, user=OPERATOR)
    assert "cannot be changed or removed" in message


def test_a_proposal_created_already_decided_needs_a_listed_approver_naming_themselves(cluster: Cluster,
                                                                                     namespace: str):
    """GitOps: a pipeline's ServiceAccount that holds approve, and that a cluster admin lists
    in the GitOpsApprovers object scalegate, applies a proposal approved in git."""
    pipeline = f"system:serviceaccount:{namespace}:deployer"
    cluster.core().create_namespaced_service_account(namespace, {"metadata": {"name": "deployer"}})
    grant(cluster, namespace, pipeline, "scalegate-approver")
    grant_role(cluster, namespace, pipeline, ["create"])
    grant_role(cluster, namespace, "erin", ["create"])  # may create, may not approve
    for user, verb in ((pipeline, "create"), (pipeline, "approve"), ("erin", "create")):
        wait_allowed(cluster, namespace, user, verb)
    ref = {APPROVAL_REF: "https://git.example/shop/merge_requests/7"}
    from_git = proposal("from-git", proposed_by=None, annotations=approve_as(pipeline, **ref))

    # Not listed: refused by scalegate-gitops, however right the rest is.
    status, message = refused(create, cluster, namespace, from_git, user=pipeline)
    assert status == 403 and message.endswith(
        "ValidatingAdmissionPolicy 'scalegate-gitops' with binding 'scalegate-gitops' denied request: "
        f"{pipeline} may not create a ScalingProposal already approved or rejected: only the GitOps identities "
        "listed in the GitOpsApprovers object scalegate may; create it without a decision, with "
        f"scalegate.io/proposed-by: {pipeline}, and let another approver decide")

    with cluster.gitops_identities("system:serviceaccount:argocd:argocd-application-controller", pipeline):
        def admitted() -> dict | None:
            try:
                return create(cluster, namespace, from_git, user=pipeline)
            except kubernetes.client.ApiException as err:
                assert "scalegate-gitops" in err.body, err.body  # until the API server reads the new list
                return None
        created = wait_for(admitted, timeout=30, interval=0.5, message="the listed pipeline to be admitted")
        assert created["metadata"]["annotations"][APPROVED_BY] == pipeline
        # Re-applied unchanged by the next sync: passes.
        annotate(cluster, namespace, "from-git", approve_as(pipeline, **ref), user=pipeline)

        status, message = refused(create, cluster, namespace, proposal(
            "own", proposed_by=pipeline, annotations=approve_as(pipeline, **ref)), user=pipeline)
        assert status == 403 and f"you ({pipeline}) cannot create a proposal already approved or rejected while " \
                                 "naming yourself in scalegate.io/proposed-by" in message
        forged = proposal("other", proposed_by=FORECASTER, annotations=approve_as(pipeline, **ref))
        status, message = refused(create, cluster, namespace, forged, user=pipeline)
        assert "scalegate.io/proposed-by must name the user who creates the proposal" in message
        status, message = refused(create, cluster, namespace, proposal(
            "unnamed", proposed_by="", annotations=approve_as(pipeline, **ref)), user=pipeline)
        assert status == 422 and "scalegate.io/proposed-by is empty" in message
        status, message = refused(create, cluster, namespace, proposal(
            "no-ref", proposed_by=None, annotations=approve_as(pipeline)), user=pipeline)
        assert status == 422 and message.endswith(
            PREFIX + "a ScalingProposal created already approved or rejected must say where it was decided: set "
            "scalegate.io/approval-ref, e.g. to the merge request that approved it")
        status, message = refused(create, cluster, namespace, proposal(
            "someone", proposed_by=None, annotations=approve_as("alice", **ref)), user=pipeline)
        assert message.endswith(f"set scalegate.io/approved-by to your user name, {pipeline}")
    # erin holds no approve (and is not listed): refused by both policies, whichever speaks first.
    status, message = refused(create, cluster, namespace,
                              proposal("nope", proposed_by=None, annotations=approve_as("erin", **ref)), user="erin")
    assert status == 403 and ("erin may not approve or reject ScalingProposals" in message
                              or "erin may not create a ScalingProposal already approved" in message)


def test_an_empty_proposer_is_refused(cluster: Cluster, namespace: str):
    status, message = refused(create, cluster, namespace, proposal("empty", proposed_by=""), user=FORECASTER)
    assert status == 422
    assert message.endswith(PREFIX + "scalegate.io/proposed-by is empty: set it to your user name, "
                            f"{FORECASTER}, or leave it out of a proposal you create already approved")


# -- what passes untouched ----------------------------------------------------------------
def test_kopf_annotations_labels_and_finalizers_pass(cluster: Cluster, ns: str):
    for state in ("pending", "approved"):
        if state == "approved":
            annotate(cluster, ns, "web-1", approve_as("alice"), user="alice")
        patch(cluster, ns, "web-1", {"metadata": {
            "annotations": {"kopf.zalando.org/last-handled-configuration": json.dumps({"spec": {"replicas": 9}}),
                            "kopf.zalando.org/touch-dummy": state, "example.com/note": "anything"},
            "labels": {"scalegate.io/state": state, "team": "shop"},
            "finalizers": ["kopf.zalando.org/KopfFinalizerMarker"]}}, user=OPERATOR)
        patch(cluster, ns, "web-1", {"metadata": {
            "annotations": {"kopf.zalando.org/touch-dummy": None, "example.com/note": None},
            "labels": {"team": None}, "finalizers": []}}, user=OPERATOR)
    meta = read(cluster, ns, "web-1")["metadata"]
    assert meta["labels"]["scalegate.io/state"] == "approved"
    assert "kopf.zalando.org/last-handled-configuration" in meta["annotations"]
    assert meta["annotations"][APPROVED_BY] == "alice" and not meta.get("finalizers")


def test_status_writes_are_not_judged_by_this_policy(cluster: Cluster, ns: str):
    """scalegate-approval never judges status (scalegate-proposal-status does: only the
    operator writes it), and a /status write cannot change the decision annotations."""
    annotate(cluster, ns, "web-1", approve_as("alice"), user="alice")
    custom = cluster.custom(OPERATOR)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1",
        {"status": {"phase": "Approved", "approvedBy": "alice", "reason": "Approved"}},
        _content_type="application/merge-patch+json")
    # A /status patch by the operator carrying annotations the policy would refuse on the
    # main resource: the status subresource is not matched (and ignores metadata changes).
    updated = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1",
        {"metadata": {"annotations": {APPROVED_BY: "mallory"}}, "status": {"phase": "Applied"}},
        _content_type="application/merge-patch+json")
    assert updated["status"]["phase"] == "Applied"
    assert updated["metadata"]["annotations"][APPROVED_BY] == "alice"
    # The same change on the main resource is refused.
    body = read(cluster, ns, "web-1")
    body["metadata"]["annotations"][APPROVED_BY] = "mallory"
    status, message = refused(cluster.custom().replace_namespaced_custom_object, GROUP, VERSION, ns,
                              PROPOSAL_PLURAL, "web-1", body)
    assert status == 403 and "the decision on this proposal is final" in message


def test_the_operator_deletes_decided_proposals(cluster: Cluster, ns: str):
    """Garbage collection of terminal proposals: DELETE is not judged."""
    annotate(cluster, ns, "web-1", approve_as("alice"), user="alice")
    cluster.custom(OPERATOR).delete_namespaced_custom_object(GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1")
