"""Every CEL expression of scalegate's admission policies earns its place, on the real API
server: for each `validations[]` entry and each `matchConditions` entry of every
ValidatingAdmissionPolicy in manifests/base/admission/, a request (its witness) that the
policy as shipped decides one way and the same policy without that one expression decides
the other way.

- A validation: the full policy denies the witness (with that validation's message and
  status), the policy without it admits the witness. So the test fails if the validation
  is removed from the manifest, or stops being the one that denies.
- A matchCondition: the full policy admits the witness (the condition keeps it out), the
  policy without the condition denies it.

How, in one API server and without sleeping: each policy is installed twice or more under
other names, each copy bound (namespaceSelector) to its own namespaces: the full copy to
every test namespace but those where one of its expressions is left out, and one copy per
expression, without it, to that expression's namespace. The other policies are present in
full everywhere, so a witness is admitted only if every other expression admits it too.
The manifests' own bindings are lifted for the module (and restored). A copy is known to
be enforced when a probe request is denied by a sentinel validation added to the copy
(it refuses objects labelled with the copy's name, which no witness carries); the harness
polls for that.

Variables are not removed one by one (an expression that names a removed variable does not
compile, and the policy then refuses everything, failurePolicy Fail): a static check
instead makes sure that each variable is used by a validation, a message or another used
variable, so that none gates nothing.

SCALEGATE_ADMISSION_DIR points the test at another directory of policies (used to check
the test itself: remove an expression there, and its test must fail).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import kubernetes
import pytest
import yaml
from harness import MANIFESTS, Cluster, admission_policies, wait_for

from scalegate.model import (
    APPROVAL_REF,
    APPROVED,
    APPROVED_BY,
    DECISION_REASON,
    GROUP,
    POLICY_LABEL,
    POLICY_PLURAL,
    PROPOSAL_PLURAL,
    PROPOSED_BY,
    REJECTED,
    REJECTED_BY,
    VERSION,
)
from scalegate.records import APPLY_INTENT, OUTCOME

ADMISSION = Path(os.environ.get("SCALEGATE_ADMISSION_DIR") or MANIFESTS / "base" / "admission")
OPERATOR = "system:serviceaccount:scalegate:operator"
FORECASTER = "system:serviceaccount:scalegate:forecaster"
RUN_LABEL = "scalegate.io/expr-run"
VARIANT_LABEL = "scalegate.io/expr-variant"
PROBE_LABEL = "scalegate.io/expr-probe"
FULL = "full"
RECORD = '{"uid": "not-this-proposal"}'  # a record's content does not matter to the policy
STATUS_BY_REASON = {"Forbidden": 403, "Invalid": 422, "Unauthorized": 401, "RequestEntityTooLarge": 413}


# -- the expressions, from the manifests ---------------------------------------------------
@dataclass(frozen=True)
class Expression:
    policy: str   # the ValidatingAdmissionPolicy's name, e.g. scalegate-approval
    kind: str     # "validations" or "matchConditions"
    index: int
    text: str
    reason: str   # a validation's reason (Forbidden when absent, as the API server says)

    @property
    def id(self) -> str:
        short = self.policy.removeprefix("scalegate-")
        return f"{short}.{'v' if self.kind == 'validations' else 'mc'}{self.index}"


def policy_documents() -> dict[str, dict]:
    """Every document of the admission directory by (kind, name)."""
    docs = {}
    for path in sorted(ADMISSION.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def expressions() -> list[Expression]:
    found = []
    for (kind, name), doc in policy_documents().items():
        if kind != "ValidatingAdmissionPolicy":
            continue
        for i, entry in enumerate(doc["spec"].get("validations") or []):
            found.append(Expression(name, "validations", i, entry["expression"], entry.get("reason", "Forbidden")))
        for i, entry in enumerate(doc["spec"].get("matchConditions") or []):
            found.append(Expression(name, "matchConditions", i, entry["expression"], "Forbidden"))
    return found


EXPRESSIONS = expressions()


# -- the identities ------------------------------------------------------------------------
@dataclass
class Users:
    """Who makes the requests: people impersonated by the admin (names unique to the run),
    the components' ServiceAccounts (their RBAC from manifests/), and the admin (None)."""

    proposer: str     # may create and patch proposals and policies; not `approve`
    approver: str     # the same and `approve` (ClusterRole scalegate-approver)
    other: str        # another approver
    gitops: str       # an approver listed as a GitOps identity
    operator: str = OPERATOR
    forecaster: str = FORECASTER
    admin: None = None


@dataclass
class Env:
    cluster: Cluster
    run: str
    users: Users
    namespaces: dict[str, str]        # variant ("full" or an expression id) -> namespace
    copies: dict[str, str]            # variant id of a copy ("<policy>/full" or an expression id) -> copy name

    # -- requests ------------------------------------------------------------------------
    def custom(self, user: str | None) -> kubernetes.client.CustomObjectsApi:
        return self.cluster.custom(user)

    def proposal(self, ns: str, name: str, user: str | None, annotations: dict | None = None,
                 labels: dict | None = None, proposer: bool = True) -> dict:
        """Create a proposal as `user`, naming `user` its proposer unless told otherwise."""
        notes = {PROPOSED_BY: user} if proposer and user else {}
        notes.update(annotations or {})
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal",
                "metadata": {"name": name, "labels": {POLICY_LABEL: "p"} if labels is None else labels,
                             "annotations": {k: v for k, v in notes.items() if v is not None}},
                "spec": {"policyRef": {"name": "p"},
                         "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                         "currentReplicas": 1, "replicas": 2, "validUntil": "2099-01-01T00:00:00Z",
                         "reason": "admission expression test"}}
        return self.custom(user).create_namespaced_custom_object(GROUP, VERSION, ns, PROPOSAL_PLURAL, body)

    def annotate(self, ns: str, name: str, user: str | None, annotations: dict, labels: dict | None = None) -> dict:
        metadata: dict[str, Any] = {"annotations": annotations}
        if labels is not None:
            metadata["labels"] = labels
        return self.custom(user).patch_namespaced_custom_object(
            GROUP, VERSION, ns, PROPOSAL_PLURAL, name, {"metadata": metadata},
            _content_type="application/merge-patch+json")

    def proposal_status(self, ns: str, name: str, user: str | None, status: dict) -> dict:
        return self.custom(user).patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PROPOSAL_PLURAL, name, {"status": status},
            _content_type="application/merge-patch+json")

    def policy(self, ns: str, name: str, user: str | None, labels: dict | None = None) -> dict:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingPolicy",
                "metadata": {"name": name, "labels": labels or {}},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                         "minReplicas": 1, "maxReplicas": 3}}
        return self.custom(user).create_namespaced_custom_object(GROUP, VERSION, ns, POLICY_PLURAL, body)

    def label_policy(self, ns: str, name: str, user: str | None, labels: dict) -> dict:
        return self.custom(user).patch_namespaced_custom_object(
            GROUP, VERSION, ns, POLICY_PLURAL, name, {"metadata": {"labels": labels}},
            _content_type="application/merge-patch+json")

    def policy_status(self, ns: str, name: str, user: str | None, status: dict) -> dict:
        return self.custom(user).patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, POLICY_PLURAL, name, {"status": status},
            _content_type="application/merge-patch+json")

    # -- deciding ------------------------------------------------------------------------
    def approve(self, ns: str, name: str, user: str) -> dict:
        return self.annotate(ns, name, user, {APPROVED: "true", APPROVED_BY: user})


def now_text() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the witnesses: one request per expression ----------------------------------------------
@dataclass
class Witness:
    """`setup` (admitted under every variant) then `request`: the full policy denies the
    request with a message containing `message` (a validation), or admits it and the
    policy without the expression denies it so (a matchCondition)."""

    request: Callable[[Env, str, str], Any]
    message: str
    setup: Callable[[Env, str, str], Any] = lambda env, ns, name: None


def _w(request, message, setup=None) -> Witness:
    return Witness(request, message, setup or (lambda env, ns, name: None))


def _created_by_proposer(env: Env, ns: str, name: str) -> None:
    env.proposal(ns, name, env.users.proposer)


def _created_by_approver(env: Env, ns: str, name: str) -> None:
    env.proposal(ns, name, env.users.approver)


def _approved(env: Env, ns: str, name: str) -> None:
    env.proposal(ns, name, env.users.proposer)
    env.approve(ns, name, env.users.approver)


def _policy_by_admin(env: Env, ns: str, name: str) -> None:
    env.policy(ns, name, None)


def _proposal_in_phase(phase: str) -> Callable[[Env, str, str], None]:
    def setup(env: Env, ns: str, name: str) -> None:
        env.proposal(ns, name, env.users.proposer)
        env.proposal_status(ns, name, env.users.operator, {"phase": phase})
    return setup


WITNESSES: dict[str, Witness] = {
    # scalegate-approval: who proposed it
    "approval.v0": _w(lambda e, ns, n: e.proposal(ns, n, e.users.proposer, proposer=False),
                      "a new ScalingProposal must name who proposes it"),
    "approval.v1": _w(lambda e, ns, n: e.proposal(ns, n, e.users.proposer, {PROPOSED_BY: "somebody-else"}),
                      "scalegate.io/proposed-by must name the user who creates the proposal"),
    "approval.v2": _w(lambda e, ns, n: e.annotate(ns, n, None, {PROPOSED_BY: "somebody-else"}),
                      "records who created this proposal and cannot be changed or removed",
                      _created_by_proposer),
    "approval.v3": _w(lambda e, ns, n: e.proposal(ns, n, e.users.proposer, {PROPOSED_BY: ""}),
                      "scalegate.io/proposed-by is empty"),
    # a decision is final
    "approval.v4": _w(lambda e, ns, n: e.annotate(ns, n, None, {APPROVED_BY: e.users.other}),
                      "the decision on this proposal is final", _approved),
    "approval.v5": _w(lambda e, ns, n: e.annotate(ns, n, None, {DECISION_REASON: "afterwards"}),
                      "and the decision is final: remove scalegate.io/decision-reason", _approved),
    "approval.v6": _w(lambda e, ns, n: e.annotate(ns, n, e.users.approver, {
                          APPROVED: "true", APPROVED_BY: e.users.approver,
                          REJECTED: "true", REJECTED_BY: e.users.approver}),
                      "a proposal is either approved or rejected, not both", _created_by_proposer),
    # who may decide: the verb approve, and never the proposer
    "approval.v7": _w(lambda e, ns, n: e.approve(ns, n, e.users.proposer),
                      "may not approve or reject ScalingProposals", _created_by_approver),
    "approval.v8": _w(lambda e, ns, n: e.approve(ns, n, e.users.approver),
                      "proposed this ScalingProposal (scalegate.io/proposed-by), so you cannot",
                      _created_by_approver),
    # the shape of a decision
    "approval.v9": _w(lambda e, ns, n: e.annotate(ns, n, e.users.approver,
                                                  {APPROVED: "yes", APPROVED_BY: e.users.approver}),
                      'take the value "true"', _created_by_proposer),
    "approval.v10": _w(lambda e, ns, n: e.annotate(ns, n, e.users.approver, {APPROVED: "true"}),
                       'set scalegate.io/approved: "true" and scalegate.io/approved-by', _created_by_proposer),
    "approval.v11": _w(lambda e, ns, n: e.annotate(ns, n, e.users.approver, {REJECTED: "true"}),
                       'set scalegate.io/rejected: "true" and scalegate.io/rejected-by', _created_by_proposer),
    "approval.v12": _w(lambda e, ns, n: e.annotate(ns, n, e.users.approver,
                                                   {APPROVED: "true", APPROVED_BY: e.users.other}),
                       "set scalegate.io/approved-by to your user name", _created_by_proposer),
    "approval.v13": _w(lambda e, ns, n: e.annotate(ns, n, e.users.approver,
                                                   {REJECTED: "true", REJECTED_BY: e.users.other}),
                       "set scalegate.io/rejected-by to your user name", _created_by_proposer),
    "approval.v14": _w(lambda e, ns, n: e.annotate(ns, n, None, {DECISION_REASON: "no decision"}),
                       "belong to a decision", _created_by_proposer),
    "approval.v15": _w(lambda e, ns, n: e.proposal(ns, n, e.users.gitops, {
                           APPROVED: "true", APPROVED_BY: e.users.gitops}, proposer=False),
                       "must say where it was decided"),
    # scalegate-gitops: only listed identities create a proposal already decided
    "gitops.v0": _w(lambda e, ns, n: e.proposal(ns, n, e.users.approver, {
                        APPROVED: "true", APPROVED_BY: e.users.approver,
                        APPROVAL_REF: "https://git.example/mr/1"}, proposer=False),
                    "may not create a ScalingProposal already approved or rejected"),
    # ... and judges only such creates: an ordinary proposal by an unlisted identity passes
    "gitops.mc0": _w(lambda e, ns, n: e.proposal(ns, n, e.users.proposer),
                     "may not create a ScalingProposal already approved or rejected"),
    # scalegate-proposal-record: the operator's record annotations
    "proposal-record.v0": _w(lambda e, ns, n: e.proposal(ns, n, e.users.proposer, {APPLY_INTENT: RECORD}),
                             "a new ScalingProposal cannot carry scalegate.io/applying"),
    "proposal-record.v1": _w(lambda e, ns, n: e.annotate(ns, n, e.users.operator, {OUTCOME: RECORD + " "}),
                             "was decided by the operator (scalegate.io/outcome) and that record is final",
                             lambda e, ns, n: (_created_by_proposer(e, ns, n),
                                               e.annotate(ns, n, e.users.operator, {OUTCOME: RECORD}))),
    "proposal-record.v2": _w(lambda e, ns, n: e.annotate(ns, n, e.users.proposer, {APPLY_INTENT: RECORD}),
                             "may not change scalegate.io/applying", _created_by_proposer),
    # scalegate-proposal-label
    "proposal-label.v0": _w(lambda e, ns, n: e.proposal(ns, n, e.users.proposer, labels={}),
                            "carries the label scalegate.io/policy equal to spec.policyRef.name"),
    "proposal-label.v1": _w(lambda e, ns, n: e.annotate(ns, n, None, {}, labels={POLICY_LABEL: "other"}),
                            "must stay equal to spec.policyRef.name", _created_by_proposer),
    # scalegate-proposal-status
    "proposal-status.v0": _w(lambda e, ns, n: e.proposal_status(ns, n, e.users.proposer, {"phase": "Pending"}),
                             "may not change the status of ScalingProposal", _created_by_proposer),
    "proposal-status.v1": _w(lambda e, ns, n: e.proposal_status(ns, n, e.users.operator,
                                                                {"phase": "Applied", "message": "rewritten"}),
                             "a terminal phase is final", _proposal_in_phase("Applied")),
    "proposal-status.v2": _w(lambda e, ns, n: e.proposal_status(ns, n, e.users.operator, {"phase": "Pending"}),
                             "only moves forward", _proposal_in_phase("Approved")),
    # scalegate-policy-status
    "policy-status.v0": _w(lambda e, ns, n: e.policy_status(ns, n, e.users.proposer, {"lastForecastTime": now_text()}),
                           "may not change the status of ScalingPolicy", _policy_by_admin),
    "policy-status.v1": _w(lambda e, ns, n: e.policy_status(ns, n, e.users.forecaster, {"lastAppliedTime": now_text()}),
                           "the forecaster writes only", _policy_by_admin),
    "policy-status.v2": _w(lambda e, ns, n: e.policy_status(ns, n, e.users.operator, {"lastForecastTime": now_text()}),
                           "the operator writes only", _policy_by_admin),
    # scalegate-policy-target
    "policy-target.v0": _w(lambda e, ns, n: e.policy(ns, n, e.users.proposer),
                           "so it needs the right to scale it yourself"),
    # ... judged only on create or a changed spec: a label needs no right to scale
    "policy-target.mc0": _w(lambda e, ns, n: e.label_policy(ns, n, e.users.proposer, {"team": "shop"}),
                            "so it needs the right to scale it yourself", _policy_by_admin),
}


# -- installing the copies -----------------------------------------------------------------
def _copy_name(run: str, variant: str) -> str:
    return f"expr-{run}-{variant.replace('.', '-').replace('/', '-')}"


def _sentinel(name: str) -> dict:
    return {"expression": f"object.metadata.?labels[?'{PROBE_LABEL}'].orValue('') != '{name}'",
            "message": f"probe of {name}", "reason": "Forbidden"}


def parameter_copies(run: str, identities: list[str]) -> tuple[list[dict], dict[str, str]]:
    """A copy of each policy's parameter object (scalegate-gitops's list of GitOps
    identities), listing `identities`; and the copy's name by the original's."""
    docs, objects, names = policy_documents(), [], {}
    for (kind, _), doc in docs.items():
        ref = doc["spec"].get("paramRef") if kind == "ValidatingAdmissionPolicyBinding" else None
        if not ref:
            continue
        param_kind = docs[("ValidatingAdmissionPolicy", doc["spec"]["policyName"])]["spec"]["paramKind"]["kind"]
        param = copy.deepcopy(docs[(param_kind, ref["name"])])
        param["metadata"] = {k: v for k, v in param["metadata"].items() if k in ("namespace", "labels")}
        param["metadata"]["name"] = names[ref["name"]] = f"expr-{run}-{ref['name']}"
        param["metadata"].setdefault("labels", {})[RUN_LABEL] = run
        if param_kind == "ConfigMap":  # one user name per line, trimmed
            param["data"]["identities"] = "\n".join(["someone-else", *[f"  {i} " for i in identities]])
        else:
            param["spec"]["identities"] = ["someone-else", *identities]
        objects.append(param)
    return objects, names


def build_copies(run: str, param_names: dict[str, str]) -> tuple[list[dict], dict[str, str]]:
    """The policy copies and their bindings; and variant -> copy name."""
    docs = policy_documents()
    by_policy: dict[str, list[Expression]] = {}
    for e in EXPRESSIONS:
        by_policy.setdefault(e.policy, []).append(e)
    objects, copies = [], {}
    for (kind, name), doc in docs.items():
        if kind != "ValidatingAdmissionPolicy":
            continue
        binding = docs[("ValidatingAdmissionPolicyBinding", name)]
        ids = [e.id for e in by_policy.get(name, [])]
        variants: list[tuple[str, Expression | None]] = [(f"{name}/{FULL}", None)]
        variants += [(e.id, e) for e in by_policy.get(name, [])]
        for variant, left_out in variants:
            copy_name = _copy_name(run, variant if left_out else name.removeprefix("scalegate-") + "-full")
            copies[variant] = copy_name
            spec = copy.deepcopy(doc["spec"])
            if left_out is not None:
                del spec[left_out.kind][left_out.index]
                if not spec[left_out.kind]:
                    del spec[left_out.kind]
            spec["validations"] = list(spec.get("validations") or []) + [_sentinel(copy_name)]
            labels = {RUN_LABEL: run}
            objects.append({"apiVersion": doc["apiVersion"], "kind": kind,
                            "metadata": {"name": copy_name, "labels": labels}, "spec": spec})
            selector = {"matchLabels": {RUN_LABEL: run}, "matchExpressions": [
                {"key": VARIANT_LABEL, "operator": "In", "values": [left_out.id]} if left_out else
                {"key": VARIANT_LABEL, "operator": "NotIn", "values": ids}]}
            if left_out is None and not ids:
                selector["matchExpressions"] = []
            binding_spec = copy.deepcopy(binding["spec"])
            binding_spec.update(policyName=copy_name, matchResources={"namespaceSelector": selector})
            if "paramRef" in binding_spec:
                binding_spec["paramRef"]["name"] = param_names[binding_spec["paramRef"]["name"]]
            objects.append({"apiVersion": binding["apiVersion"], "kind": "ValidatingAdmissionPolicyBinding",
                            "metadata": {"name": copy_name, "labels": labels}, "spec": binding_spec})
    return objects, copies


def refusal(call: Callable[[], Any]) -> tuple[int, str] | None:
    """(status, message) if the request is refused, None if admitted."""
    try:
        call()
    except kubernetes.client.ApiException as err:
        try:
            return err.status, json.loads(err.body)["message"]
        except (TypeError, ValueError, KeyError):
            return err.status, str(err.body)
    return None


def probe(env: Env, policy_name: str, copy_name: str, ns: str) -> Callable[[], bool]:
    """A request that every expression admits and only `copy_name`'s sentinel denies:
    returns a poll that is true once the API server enforces that copy in `ns`."""
    u, label = env.users, {PROBE_LABEL: copy_name}
    key = uuid.uuid4().hex[:6]
    if policy_name == "scalegate-proposal-status":
        env.proposal(ns, f"probe-{key}", u.proposer, labels={POLICY_LABEL: "p", **label})
        attempt = lambda: env.proposal_status(ns, f"probe-{key}", u.operator, {"phase": "Pending"})  # noqa: E731
    elif policy_name == "scalegate-policy-status":
        env.policy(ns, f"probe-{key}", None, labels=label)
        attempt = lambda: env.policy_status(ns, f"probe-{key}", u.forecaster,  # noqa: E731
                                            {"lastForecastTime": now_text()})
    elif policy_name == "scalegate-policy-target":
        attempt = lambda: env.policy(ns, f"probe-{uuid.uuid4().hex[:6]}", None, labels=label)  # noqa: E731
    elif policy_name == "scalegate-gitops":
        attempt = lambda: env.proposal(  # noqa: E731
            ns, f"probe-{uuid.uuid4().hex[:6]}", u.gitops,
            {APPROVED: "true", APPROVED_BY: u.gitops, APPROVAL_REF: "https://git.example/mr/probe"},
            labels={POLICY_LABEL: "p", **label}, proposer=False)
    else:  # the policies on proposals' main resource
        attempt = lambda: env.proposal(ns, f"probe-{uuid.uuid4().hex[:6]}", u.proposer,  # noqa: E731
                                       labels={POLICY_LABEL: "p", **label})

    def enforced() -> bool:
        """Refused by the sentinel. Admitted: not yet enforced. Refused by something else
        (RBAC not yet in effect): not yet known, shown on timeout as `last`."""
        refused = refusal(attempt)
        enforced.last = refused  # type: ignore[attr-defined]
        return refused is not None and f"probe of {copy_name}" in refused[1]
    return enforced


@pytest.fixture(scope="module")
def env(cluster: Cluster):
    # A letter first: the run is a label value, and kubectl's YAML reads a bare '20e63' (which
    # PyYAML leaves unquoted) as a number, failing the apply (CI, 30 Nov).
    run = "r" + uuid.uuid4().hex[:5]
    users = Users(proposer=f"expr-{run}-proposer", approver=f"expr-{run}-approver",
                  other=f"expr-{run}-other", gitops=f"expr-{run}-gitops")
    # The manifests' own policies apply to every namespace: lift them for the module.
    had = {name for name in admission_policies()
           if cluster.kubectl("get", "validatingadmissionpolicy", name, check=False).returncode == 0}
    cluster.remove_admission_policies()
    cluster.kubectl("apply", "-f", str(MANIFESTS / "base" / "namespace.yaml"))
    cluster.kubectl("apply", "-f", str(MANIFESTS / "base" / "rbac"))
    params, param_names = parameter_copies(run, [users.gitops])
    writer = f"expr-{run}-writer"
    rbac = "rbac.authorization.k8s.io"
    cluster.apply_yaml(yaml.safe_dump_all([
        *params,
        {"apiVersion": f"{rbac}/v1", "kind": "ClusterRole", "metadata": {"name": writer}, "rules": [
            {"apiGroups": [GROUP], "resources": [PROPOSAL_PLURAL, POLICY_PLURAL],
             "verbs": ["get", "list", "create", "update", "patch"]},
            {"apiGroups": [GROUP], "resources": [f"{PROPOSAL_PLURAL}/status", f"{POLICY_PLURAL}/status"],
             "verbs": ["get", "update", "patch"]}]},
        *[{"apiVersion": f"{rbac}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": f"{role}-{run}"},
           "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": role},
           "subjects": [{"kind": "User", "apiGroup": rbac, "name": user} for user in subjects]}
          for role, subjects in ((writer, [users.proposer, users.approver, users.other, users.gitops]),
                                 ("scalegate-approver", [users.approver, users.other, users.gitops]))],
    ]))
    namespaces = {}
    for variant in [FULL] + [e.id for e in EXPRESSIONS]:
        name = f"expr-{run}-{variant.replace('.', '-')}"
        cluster.core().create_namespace({"metadata": {"name": name, "labels": {
            RUN_LABEL: run, VARIANT_LABEL: variant, "scalegate.io/test": "true"}}})
        namespaces[variant] = name
    objects, copies = build_copies(run, param_names)
    e = Env(cluster, run, users, namespaces, copies)
    try:
        cluster.apply_yaml(yaml.safe_dump_all(objects))
        authz = kubernetes.client.AuthorizationV1Api(cluster.api_client())
        for user, verb in ((users.proposer, "create"), (users.approver, "approve"), (users.gitops, "approve")):
            review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
                "user": user, "groups": ["system:authenticated"], "resourceAttributes": {
                    "group": GROUP, "resource": PROPOSAL_PLURAL, "verb": verb, "namespace": namespaces[FULL]}}}
            wait_for(lambda r=review: authz.create_subject_access_review(r).status.allowed, timeout=30,
                     message=f"RBAC to let {user} {verb} proposals")
        # Every copy enforced where it is bound: full copies in the full namespace, each
        # expression's copy in its own.
        policy_of = {x.id: x.policy for x in EXPRESSIONS}
        for variant, copy_name in copies.items():
            full = "/" in variant
            policy_name = variant.partition("/")[0] if full else policy_of[variant]
            ns = namespaces[FULL if full else variant]
            enforced = probe(e, policy_name, copy_name, ns)
            try:
                wait_for(enforced, timeout=60, interval=0.2, message=f"the API server to enforce {copy_name} in {ns}")
            except AssertionError as err:
                raise AssertionError(f"{err}; the probe's last refusal (None: admitted): "
                                     f"{getattr(enforced, 'last', None)}") from None
        yield e
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
                        "-l", f"{RUN_LABEL}={run}", "--ignore-not-found", check=False)
        cluster.kubectl("delete", "namespace", "-l", f"{RUN_LABEL}={run}", "--wait=false", check=False)
        cluster.kubectl("delete", f"clusterrolebinding/{writer}-{run}", f"clusterrolebinding/scalegate-approver-{run}",
                        f"clusterrole/{writer}", "--ignore-not-found", check=False)
        for param in params:
            where = ["-n", param["metadata"]["namespace"]] if param["metadata"].get("namespace") else []
            cluster.kubectl("delete", param["kind"].lower(), param["metadata"]["name"], *where,
                            "--ignore-not-found", check=False)
        if had:
            for path in sorted((MANIFESTS / "base" / "admission").glob("*.yaml")):
                names = {d["metadata"]["name"] for d in yaml.safe_load_all(path.read_text())
                         if d and d.get("kind") == "ValidatingAdmissionPolicy"}
                if names & had:
                    cluster.kubectl("apply", "-f", str(path))


# -- the tests -------------------------------------------------------------------------------
def test_every_expression_has_a_witness():
    """A new validation or matchCondition needs its witness here (and a removed one loses it)."""
    ids = [e.id for e in EXPRESSIONS]
    assert len(ids) == len(set(ids))
    assert sorted(set(ids) - set(WITNESSES)) == [], "expressions without a witness in WITNESSES"
    assert sorted(set(WITNESSES) - set(ids)) == [], "witnesses of expressions that are no longer there"


def _identifiers(text: str) -> set[str]:
    return set(re.findall(r"variables\.([A-Za-z_][A-Za-z0-9_]*)", text))


@pytest.mark.parametrize("policy_name", sorted({e.policy for e in EXPRESSIONS}))
def test_every_variable_gates_something(policy_name):
    """A variable that no validation, message or matchCondition reaches (directly or through
    other variables) is dead weight that reads as a guarantee."""
    spec = policy_documents()[("ValidatingAdmissionPolicy", policy_name)]["spec"]
    variables = {v["name"]: v["expression"] for v in spec.get("variables") or []}
    used: set[str] = set()
    frontier = set()
    for entry in spec.get("validations") or []:
        frontier |= _identifiers(entry["expression"] + " " + entry.get("messageExpression", ""))
    while frontier - used:
        name = (frontier - used).pop()
        used.add(name)
        frontier |= _identifiers(variables.get(name, ""))
    assert sorted(set(variables) - used) == []


def _denial(env: Env, expr: Expression, refused: tuple[int, str] | None, message: str, copy_name: str) -> None:
    assert refused is not None, f"{expr.id}: admitted, but {copy_name} should deny it"
    status, text = refused
    assert f"ValidatingAdmissionPolicy '{copy_name}'" in text and message in text, (
        f"{expr.id}: refused, but not by {copy_name} with '{message}': {status} {text}")
    if expr.kind == "validations":
        assert status == STATUS_BY_REASON.get(expr.reason, 400), (expr.reason, status, text)


@pytest.mark.parametrize("expr", EXPRESSIONS, ids=lambda e: e.id)
def test_expression_decides_its_witness(env: Env, expr: Expression):
    witness = WITNESSES.get(expr.id)
    assert witness is not None, f"no witness for {expr.policy} {expr.kind}[{expr.index}]: {expr.text}"
    name = f"w-{expr.id}"
    full_ns, without_ns = env.namespaces[FULL], env.namespaces[expr.id]
    full_copy, without_copy = env.copies[f"{expr.policy}/{FULL}"], env.copies[expr.id]
    for ns in (full_ns, without_ns):
        witness.setup(env, ns, name)
    with_it = refusal(lambda: witness.request(env, full_ns, name))
    without_it = refusal(lambda: witness.request(env, without_ns, name))
    if expr.kind == "validations":
        _denial(env, expr, with_it, witness.message, full_copy)
        assert without_it is None, f"{expr.id}: still refused without the expression: {without_it}"
    else:
        assert with_it is None, f"{expr.id}: the full policy should not judge this request: {with_it}"
        _denial(env, expr, without_it, witness.message, without_copy)
