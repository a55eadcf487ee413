"""The reconciler against an in-memory API server (`FakeKube`): the order of checks, what
is recorded for each outcome, and the apply protocol (intent first, resourceVersion
preconditions, recovery after an interruption). Time is frozen by an injected clock."""

from __future__ import annotations

import collections
import copy
import datetime as dt
import inspect
import json
from typing import Any, Callable

import pytest

from scalegate.decision import Reason
from scalegate.kube import Conflict, Forbidden, Kube, KubeError, NoScaleSubresource, NotFound, Scale, TargetObject
from scalegate.model import (
    APPROVAL_REF,
    APPROVED,
    APPROVED_BY,
    POLICY_LABEL,
    PROPOSED_BY,
    REJECTED,
    REJECTED_BY,
    Phase,
    TargetRef,
    format_time,
    parse_time,
)
from scalegate.reconciler import FAULT_POINTS, OPERATOR_FORBIDDEN, RECORD_RESTORED, Reconciler, fault_hook_from_env
from scalegate.records import APPLY_INTENT, OUTCOME, ApplyIntent, OutcomeRecord

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 26, 20, 30, tzinfo=UTC)
NS = "shop"
FORECASTER = "system:serviceaccount:scalegate:forecaster"
WEB = TargetRef("apps/v1", "Deployment", "web")


# -- an in-memory API server ------------------------------------------------------------

def merge_patch(target: dict, patch: dict) -> None:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeKube:
    """The `Kube` methods the reconciler uses, over dicts, with the API server's
    resourceVersion preconditions. `on(method, fn)` runs `fn(*args)` once, before the
    next call of `method` (to raise, or to change the world as a concurrent writer would)."""

    def __init__(self) -> None:
        self.proposals: dict[tuple[str, str], dict] = {}
        self.policies: dict[tuple[str, str], dict] = {}
        # (ns, target name) -> {replicas, rv, uid, generation, controller}
        self.scales: dict[tuple[str, str], dict] = {}
        self.no_scale: set[str] = set()
        self.hpas: dict[str, list[tuple[str, TargetRef]]] = collections.defaultdict(list)
        self.approvers: set[str] = {"alice", "bob"}
        self.calls: list[tuple[str, tuple]] = []
        self.events: list[dict] = []
        self._rv = 1000
        self._hooks: dict[str, list[Callable]] = collections.defaultdict(list)

    # test helpers
    def on(self, method: str, fn: Callable) -> None:
        self._hooks[method].append(fn)

    def fail(self, method: str, error: Exception, times: int = 1) -> None:
        def raise_(*_):
            raise error
        for _ in range(times):
            self.on(method, raise_)

    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _enter(self, method: str, *args) -> None:
        self.calls.append((method, args))
        if self._hooks[method]:
            self._hooks[method].pop(0)(*args)

    def called(self, method: str) -> list[tuple]:
        return [args for name, args in self.calls if name == method]

    def set_replicas(self, name: str, replicas: int) -> None:
        """Another writer changes the target (a new resourceVersion; a new generation if the
        replicas change, as the API server does for a change of the spec)."""
        scale = self.scales[(NS, name)]
        if scale["replicas"] != replicas:
            scale["generation"] = scale.get("generation", 1) + 1
        scale.update(replicas=replicas, rv=self.next_rv())

    def touch_proposal(self, name: str) -> None:
        """Another writer changes the proposal (a new resourceVersion)."""
        self.proposals[(NS, name)]["metadata"]["resourceVersion"] = self.next_rv()

    # proposals and policies
    def get_proposal(self, namespace: str, name: str, missing_ok: bool = True) -> dict | None:
        self._enter("get_proposal", namespace, name)
        body = self.proposals.get((namespace, name))
        if body is None and not missing_ok:
            raise NotFound(name)
        return copy.deepcopy(body) if body else None

    def list_policy_proposals(self, namespace: str, policy: str,
                              not_older_than: str | None = None) -> list[tuple[str, dt.datetime | None]]:
        self._enter("list_policy_proposals", namespace, policy, not_older_than)
        return [(body["metadata"]["name"], parse_time(body["metadata"].get("creationTimestamp")))
                for (ns, _), body in self.proposals.items()
                if ns == namespace and body["spec"]["policyRef"]["name"] == policy]  # by field, not label

    def list_policies(self, namespace: str | None = None, not_older_than: str | None = None,
                      target_name: str | None = None) -> list[dict]:
        self._enter("list_policies", namespace, not_older_than, target_name)
        return [copy.deepcopy(body) for (ns, _), body in self.policies.items() if namespace in (None, ns)
                and target_name in (None, ((body.get("spec") or {}).get("targetRef") or {}).get("name"))]

    def patch_proposal_annotations(self, namespace: str, name: str, annotations: dict[str, str | None],
                                   resource_version: str) -> dict:
        self._enter("patch_proposal_annotations", namespace, name, copy.deepcopy(annotations), resource_version)
        body = self.proposals.get((namespace, name))
        if body is None:
            raise NotFound(name)
        if resource_version != body["metadata"]["resourceVersion"]:
            raise Conflict(name)
        merge_patch(body["metadata"].setdefault("annotations", {}), annotations)
        body["metadata"]["resourceVersion"] = self.next_rv()
        return copy.deepcopy(body)

    def label_proposal(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        self._enter("label_proposal", namespace, name, labels)
        meta = self.proposals[(namespace, name)]["metadata"]
        meta.setdefault("labels", {}).update(labels)
        meta["resourceVersion"] = self.next_rv()

    def get_policy(self, namespace: str, name: str, missing_ok: bool = True) -> dict | None:
        self._enter("get_policy", namespace, name)
        body = self.policies.get((namespace, name))
        if body is None and not missing_ok:
            raise NotFound(name)
        return copy.deepcopy(body) if body else None

    def patch_proposal_status(self, namespace: str, name: str, status: dict,
                              resource_version: str | None = None) -> dict:
        self._enter("patch_proposal_status", namespace, name, copy.deepcopy(status), resource_version)
        body = self.proposals.get((namespace, name))
        if body is None:
            raise NotFound(name)
        if resource_version and resource_version != body["metadata"]["resourceVersion"]:
            raise Conflict(name)
        merge_patch(body.setdefault("status", {}), status)
        body["metadata"]["resourceVersion"] = self.next_rv()
        return copy.deepcopy(body)

    def patch_policy_status(self, namespace: str, name: str, status: dict) -> dict:
        self._enter("patch_policy_status", namespace, name, copy.deepcopy(status))
        body = self.policies.get((namespace, name))
        if body is None:
            raise NotFound(name)
        merge_patch(body.setdefault("status", {}), status)
        return copy.deepcopy(body)

    # targets
    def _scale(self, namespace: str, target: TargetRef) -> dict:
        if target.name in self.no_scale:
            raise NoScaleSubresource(f"{target.kind} has no scale subresource")
        try:
            return self.scales[(namespace, target.name)]
        except KeyError:
            raise NotFound(target.describe()) from None

    def get_target(self, namespace: str, target: TargetRef) -> TargetObject:
        self._enter("get_target", namespace, target)
        scale = self._scale(namespace, target)
        return TargetObject(uid=scale["uid"], generation=scale.get("generation", 1), resource_version=scale["rv"],
                            controller=scale.get("controller"))

    def get_scale(self, namespace: str, target: TargetRef) -> Scale:
        self._enter("get_scale", namespace, target)
        scale = self._scale(namespace, target)
        return Scale(scale["replicas"], scale["rv"], scale["uid"])

    def update_scale(self, namespace: str, target: TargetRef, replicas: int, resource_version: str) -> Scale:
        self._enter("update_scale", namespace, target, replicas, resource_version)
        scale = self._scale(namespace, target)
        if resource_version != scale["rv"]:
            raise Conflict(target.describe())
        if scale["replicas"] != replicas:
            scale["generation"] = scale.get("generation", 1) + 1
        scale.update(replicas=replicas, rv=self.next_rv())
        return Scale(scale["replicas"], scale["rv"], scale["uid"])

    def may_update_scale(self, namespace: str, target: TargetRef) -> bool:
        self._enter("may_update_scale", namespace, target)
        return not self._hooks.get("update_scale")  # a queued failure stands for a missing permission

    def autoscalers(self, namespace: str) -> list[tuple[str, TargetRef]]:
        self._enter("autoscalers", namespace)
        return list(self.hpas[namespace])

    def user_may_approve(self, user: str, namespace: str, name: str) -> bool:
        self._enter("user_may_approve", user, namespace, name)
        return user in self.approvers

    def emit_event(self, involved: dict, event_type: str, reason: str, message: str) -> None:
        self._enter("emit_event", involved, event_type, reason, message)
        self.events.append({"involved": involved, "type": event_type, "reason": reason, "message": message})

    # views for assertions
    def status(self, name: str = "web-1") -> dict:
        return self.proposals[(NS, name)].get("status") or {}

    def annotations(self, name: str = "web-1") -> dict:
        return self.proposals[(NS, name)]["metadata"].get("annotations") or {}

    def intent(self, name: str = "web-1") -> dict | None:
        text = self.annotations(name).get(APPLY_INTENT)
        return json.loads(text) if text else None

    def outcome(self, name: str = "web-1") -> dict | None:
        text = self.annotations(name).get(OUTCOME)
        return json.loads(text) if text else None

    def record_writes(self) -> list[dict]:
        return [args[2] for args in self.called("patch_proposal_annotations")]

    def replicas(self, name: str = "web") -> int:
        return self.scales[(NS, name)]["replicas"]

    def status_writes(self) -> list[dict]:
        return [args[2] for args in self.called("patch_proposal_status")]

    def proposal_events(self, name: str = "web-1") -> list[tuple[str, str]]:
        return [(e["type"], e["reason"]) for e in self.events
                if e["involved"]["kind"] == "ScalingProposal" and e["involved"]["name"] == name]


class Clock:
    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def proposal_body(name: str = "web-1", *, current: int = 4, replicas: int = 9, approved_by: str | None = "alice",
                  created: dt.datetime = NOW - dt.timedelta(minutes=10), valid_for: float = 3600,
                  labels: dict | None = None, annotations: dict | None = None, status: dict | None = None,
                  target: dict | None = None, policy: str = "web") -> dict:
    ann = {PROPOSED_BY: FORECASTER}
    if approved_by is not None:
        ann.update({APPROVED: "true", APPROVED_BY: approved_by})
    ann.update(annotations or {})
    body = {
        "apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingProposal",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1,
                     "resourceVersion": "1", "creationTimestamp": format_time(created),
                     "labels": {POLICY_LABEL: policy} if labels is None else labels, "annotations": ann},
        "spec": {"policyRef": {"name": policy},
                 "targetRef": target or {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "currentReplicas": current, "replicas": replicas,
                 "validUntil": format_time(NOW + dt.timedelta(seconds=valid_for)), "reason": "peak ahead"},
    }
    if status is not None:
        body["status"] = status
    return body


def policy_body(**spec) -> dict:
    values = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
              "minReplicas": 1, "maxReplicas": 20, "cooldownSeconds": 600, "proposalTTLSeconds": 7200}
    values.update(spec)
    return {"apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingPolicy",
            "metadata": {"name": "web", "namespace": NS, "uid": "uid-policy", "generation": 1,
                         "creationTimestamp": "2026-11-01T00:00:00Z"},
            "spec": values}


@pytest.fixture
def kube() -> FakeKube:
    kube = FakeKube()
    kube.policies[(NS, "web")] = policy_body()
    kube.scales[(NS, "web")] = {"replicas": 4, "rv": "100", "uid": "uid-deploy-web", "generation": 7}
    kube.proposals[(NS, "web-1")] = proposal_body()
    return kube


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reconciler(kube: FakeKube, clock: Clock) -> Reconciler:
    return Reconciler(kube, clock=clock)


def put(kube: FakeKube, body: dict) -> None:
    kube.proposals[(NS, body["metadata"]["name"])] = body


def reconcile(reconciler: Reconciler, name: str = "web-1"):
    return reconciler.reconcile(NS, name)


# -- the fake is faithful to the adapter ------------------------------------------------

@pytest.mark.parametrize("method", [
    "get_proposal", "list_policy_proposals", "label_proposal", "get_policy", "patch_proposal_status",
    "patch_policy_status", "get_scale", "update_scale", "may_update_scale", "autoscalers", "user_may_approve",
    "emit_event", "get_target", "list_policies", "patch_proposal_annotations",
])
def test_fake_kube_has_the_adapters_signatures(method):
    real = list(inspect.signature(getattr(Kube, method)).parameters)[1:]
    fake = list(inspect.signature(getattr(FakeKube, method)).parameters)[1:]
    assert fake == real


# -- the happy path ---------------------------------------------------------------------

def test_applies_and_records_the_receipt(kube, reconciler):
    assert reconcile(reconciler) is None
    assert kube.replicas() == 9
    status = kube.status()
    assert status["phase"] == Phase.APPLIED
    assert status["reason"] == Reason.APPLIED
    assert status["message"] == "scaled Deployment/web from 4 to 9 replicas, approved by alice"
    assert (status["previousReplicas"], status["appliedReplicas"]) == (4, 9)
    assert status["appliedAt"] == status["finishedAt"] == "2026-11-26T20:30:00Z"
    assert status["approvedBy"] == "alice"
    assert status["approvedAt"] == "2026-11-26T20:30:00Z"
    assert status["observedGeneration"] == 1
    assert "applying" not in status
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Applied"]["status"], conditions["Applied"]["reason"]) == ("True", "Applied")
    assert (conditions["Approved"]["status"], conditions["Approved"]["message"]) == ("True", "approved by alice")


def test_the_intent_is_recorded_before_the_scale_is_written(kube, reconciler):
    seen_at_write = []
    kube.on("update_scale", lambda *_: seen_at_write.append(kube.intent()))
    reconcile(reconciler)
    assert seen_at_write == [{"uid": "uid-web-1", "replicas": 9, "previousReplicas": 4, "resourceVersion": "100",
                              "targetUID": "uid-deploy-web", "targetGeneration": 7, "approvedBy": "alice",
                              "startedAt": "2026-11-26T20:30:00Z"}]
    # in an annotation (out of a status writer's reach), conditioned on the version decided on
    assert kube.called("patch_proposal_annotations")[0][3] == "1"
    assert "applying" not in kube.status()


def test_the_outcome_is_recorded_before_status_says_it(kube, reconciler):
    seen = []
    kube.on("patch_proposal_status", lambda *_: seen.append(kube.outcome()))
    reconcile(reconciler)
    assert seen == [{"uid": "uid-web-1", "phase": "Applied", "reason": "Applied",
                     "message": "scaled Deployment/web from 4 to 9 replicas, approved by alice",
                     "at": "2026-11-26T20:30:00Z", "approvedBy": "alice", "previousReplicas": 4,
                     "appliedReplicas": 9}]
    assert kube.intent() is None  # the outcome write drops the intent
    assert kube.status()["phase"] == Phase.APPLIED


def test_the_scale_write_carries_the_reads_resource_version(kube, reconciler):
    reconcile(reconciler)
    assert kube.called("update_scale") == [(NS, WEB, 9, "100")]


def test_every_write_of_the_proposal_is_conditioned_on_the_version_read(kube, reconciler):
    reconcile(reconciler)
    versions = [args[3] for name, args in kube.calls if name in ("patch_proposal_annotations",
                                                                   "patch_proposal_status")]
    assert len(versions) == 3 and versions[0] == "1"
    assert len(set(versions)) == 3  # each write builds on the previous one's answer


def test_policy_cooldown_is_recorded_before_the_applied_records(kube, reconciler, clock):
    order = []
    kube.on("patch_policy_status", lambda *_: order.append(("policy", kube.outcome(), kube.status().get("phase"))))
    reconcile(reconciler)
    assert order == [("policy", None, None)]  # the proposal was not yet recorded Applied
    assert kube.called("patch_policy_status") == [
        (NS, "web", {"lastAppliedTime": "2026-11-26T20:30:00Z", "lastAppliedProposal": "web-1"})]
    assert kube.policies[(NS, "web")]["status"]["lastAppliedTime"] == format_time(clock())
    names = [name for name, _ in kube.calls if name in ("update_scale", "patch_policy_status",
                                                        "patch_proposal_status", "patch_proposal_annotations")]
    assert names == ["patch_proposal_annotations", "update_scale", "patch_policy_status",
                     "patch_proposal_annotations", "patch_proposal_status"]


def test_events_on_the_proposal_and_on_the_target(kube, reconciler):
    reconcile(reconciler)
    # Applying is an internal step: one Event for the decision, not one per write.
    assert kube.proposal_events() == [("Normal", "Applied")]
    on_target = [e for e in kube.events if e["involved"]["kind"] == "Deployment"]
    assert len(on_target) == 1
    event = on_target[0]
    assert event["involved"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": NS,
                                 "uid": "uid-deploy-web"}
    assert (event["type"], event["reason"]) == ("Normal", "ScaledByScalegate")
    assert event["message"] == "scaled from 4 to 9 replicas by proposal web-1, approved by alice"
    proposal_event = kube.events[0]["involved"]
    assert proposal_event == {"apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingProposal", "name": "web-1",
                              "namespace": NS, "uid": "uid-web-1"}


def test_a_lost_event_does_not_undo_the_apply(kube, reconciler):
    for _ in range(3):
        kube.fail("emit_event", KubeError("events are down"))
    assert reconcile(reconciler) is None
    assert kube.status()["phase"] == Phase.APPLIED
    assert kube.replicas() == 9


def test_scale_down_is_applied_too(kube, reconciler):
    put(kube, proposal_body(current=4, replicas=2))
    reconcile(reconciler)
    assert kube.replicas() == 2
    assert (kube.status()["previousReplicas"], kube.status()["appliedReplicas"]) == (4, 2)


def test_approval_ref_is_carried_into_status(kube, reconciler):
    put(kube, proposal_body(annotations={APPROVAL_REF: "https://git.example/mr/42"}))
    reconcile(reconciler)
    assert kube.status()["approvalRef"] == "https://git.example/mr/42"
    assert kube.status()["approvedBy"] == "alice"


# -- the checks, in the contract's order, through the reconciler -------------------------

def test_pending_waits_for_approval_until_expiry(kube, reconciler):
    put(kube, proposal_body(approved_by=None))
    assert reconcile(reconciler) == 3600.0
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.PENDING, Reason.AWAITING_APPROVAL)
    assert "kubectl scalegate approve web-1 -n shop" in status["message"]
    approved = next(c for c in status["conditions"] if c["type"] == "Approved")
    assert approved["status"] == "Unknown"
    assert "approvedBy" not in status and "approvedAt" not in status
    assert not kube.called("user_may_approve") and not kube.called("get_scale")
    assert kube.proposal_events() == [("Normal", Reason.AWAITING_APPROVAL)]


def test_approval_after_pending_is_recorded_once(kube, reconciler, clock):
    put(kube, proposal_body(approved_by=None))
    reconcile(reconciler)
    meta = kube.proposals[(NS, "web-1")]["metadata"]
    meta["annotations"].update({APPROVED: "true", APPROVED_BY: "alice"})
    clock.advance(120)
    reconcile(reconciler)
    assert kube.status()["approvedAt"] == "2026-11-26T20:32:00Z"
    assert kube.status()["phase"] == Phase.APPLIED


def test_expired(kube, reconciler, clock):
    clock.advance(3600)
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.EXPIRED, Reason.EXPIRED)
    assert status["finishedAt"] == "2026-11-26T21:30:00Z"
    assert not kube.called("get_scale") and kube.replicas() == 4


def test_rejected_by_user(kube, reconciler):
    put(kube, proposal_body(approved_by=None, annotations={REJECTED: "true", REJECTED_BY: "bob"}))
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"], status["rejectedBy"]) == (Phase.REJECTED, Reason.REJECTED_BY_USER, "bob")
    approved = next(c for c in status["conditions"] if c["type"] == "Approved")
    assert (approved["status"], approved["reason"]) == ("False", Reason.REJECTED_BY_USER)
    assert kube.proposal_events() == [("Warning", Reason.REJECTED_BY_USER)]


def test_superseded_by_a_newer_proposal_of_the_same_policy(kube, reconciler):
    put(kube, proposal_body("web-2", created=NOW - dt.timedelta(minutes=1), approved_by=None))
    assert reconcile(reconciler, "web-1") is None
    status = kube.status("web-1")
    assert (status["phase"], status["reason"]) == (Phase.SUPERSEDED, Reason.SUPERSEDED)
    assert "web-2" in status["message"]
    assert kube.replicas() == 4
    # the approval is recorded only as the API server confirms it
    assert kube.called("user_may_approve") == [("alice", NS, "web-1")] and status["approvedBy"] == "alice"
    assert kube.outcome("web-1")["approvedBy"] == "alice"
    # the list is at least as recent as the state decided on
    assert kube.called("list_policy_proposals") == [(NS, "web", "1")]
    # the newer one is not superseded by the older one
    assert reconcile(reconciler, "web-2") == 3600.0
    assert kube.status("web-2")["phase"] == Phase.PENDING


def test_an_expired_approval_not_confirmed_records_no_approver(kube, reconciler, clock):
    put(kube, proposal_body(approved_by="mallory"))
    clock.advance(3600)
    reconcile(reconciler)
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.EXPIRED, Reason.EXPIRED)
    assert "approvedBy" not in status and "approvedBy" not in kube.outcome()


def test_a_newer_proposal_of_another_policy_does_not_supersede(kube, reconciler):
    put(kube, proposal_body("api-1", created=NOW, policy="api"))
    reconcile(reconciler)
    assert kube.status()["phase"] == Phase.APPLIED


def test_supersession_follows_the_policy_ref_not_the_label(kube, reconciler):
    """The label is an index a person who may patch proposals could change; spec.policyRef
    is immutable. A newer proposal of policy web supersedes, whatever its label says."""
    put(kube, proposal_body("web-2", created=NOW - dt.timedelta(minutes=1), approved_by=None,
                            labels={POLICY_LABEL: "api"}))
    reconcile(reconciler, "web-1")
    assert kube.status("web-1")["phase"] == Phase.SUPERSEDED and kube.replicas() == 4


def test_self_approval_is_rejected_without_asking_the_api_server(kube, reconciler):
    put(kube, proposal_body(approved_by=FORECASTER))
    kube.approvers.add(FORECASTER)
    assert reconcile(reconciler) is None
    assert (kube.status()["phase"], kube.status()["reason"]) == (Phase.REJECTED, Reason.SELF_APPROVAL)
    assert not kube.called("user_may_approve")
    assert kube.replicas() == 4


def test_unauthorized_approver_is_rejected_and_the_scale_never_read(kube, reconciler):
    put(kube, proposal_body(approved_by="mallory"))
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.REJECTED, Reason.APPROVER_NOT_AUTHORIZED)
    assert "mallory" in status["message"]
    assert kube.called("user_may_approve") == [("mallory", NS, "web-1")]
    assert not kube.called("get_scale") and not kube.called("get_target") and not kube.called("update_scale")
    approved = next(c for c in status["conditions"] if c["type"] == "Approved")
    assert (approved["status"], approved["reason"]) == ("False", Reason.APPROVER_NOT_AUTHORIZED)
    assert "approvedBy" not in status
    assert kube.proposal_events() == [("Warning", Reason.APPROVER_NOT_AUTHORIZED)]


@pytest.mark.parametrize(
    "setup, phase, reason, message_part, requeue",
    [
        pytest.param(lambda k: k.policies.clear(), Phase.FAILED, Reason.POLICY_NOT_FOUND,
                     "ScalingPolicy web does not exist", None, id="policy-missing"),
        pytest.param(lambda k: k.policies.update({(NS, "web"): policy_body(minReplicas=5, maxReplicas=3)}),
                     Phase.FAILED, Reason.INVALID_POLICY, "policy web is invalid: spec.maxReplicas (3)", None,
                     id="policy-invalid"),
        pytest.param(lambda k: k.policies.update({(NS, "web"): policy_body(
            targetRef={"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"})}),
            Phase.FAILED, Reason.TARGET_MISMATCH, "now targets Deployment/api", None, id="target-mismatch"),
        pytest.param(lambda k: k.policies.update({(NS, "web"): policy_body(suspend=True)}),
                     Phase.APPROVED, Reason.SUSPENDED, "policy web is suspended", 3600.0, id="suspended"),
        pytest.param(lambda k: k.policies.update({(NS, "web"): policy_body(maxReplicas=8)}),
                     Phase.REJECTED, Reason.OUT_OF_BOUNDS, "9 is above maxReplicas 8", None, id="above-max"),
        pytest.param(lambda k: k.policies.update({(NS, "web"): policy_body(maxStepUp=2)}),
                     Phase.REJECTED, Reason.OUT_OF_BOUNDS, "adding 5 replicas exceeds maxStepUp 2", None,
                     id="step-up"),
    ],
)
def test_policy_and_bounds_outcomes_never_read_the_scale(kube, reconciler, setup, phase, reason, message_part,
                                                           requeue):
    setup(kube)
    assert reconcile(reconciler) == requeue
    status = kube.status()
    assert (status["phase"], status["reason"]) == (phase, reason)
    assert message_part in status["message"]
    assert not kube.called("get_scale") and kube.replicas() == 4
    # an approval that was verified is carried along, whatever the outcome after it
    approved = next(c for c in status["conditions"] if c["type"] == "Approved")
    assert approved["status"] == "True" and status["approvedBy"] == "alice"
    expected_type = "Normal" if phase == Phase.APPROVED else "Warning"
    assert kube.proposal_events() == [(expected_type, reason)]


def test_stale_at_first_read_writes_no_intent_and_no_scale(kube, reconciler):
    kube.set_replicas("web", 6)
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.STALE, Reason.TARGET_CHANGED)
    assert "now has 6 replicas, not the 4" in status["message"]
    assert not kube.called("update_scale") and kube.replicas() == 6
    assert all("applying" not in s or s["applying"] is None for s in kube.status_writes())
    assert kube.proposal_events() == [("Warning", Reason.TARGET_CHANGED)]


def test_cooldown_waits_approved_and_looks_again_when_it_ends(kube, reconciler):
    kube.policies[(NS, "web")]["status"] = {"lastAppliedTime": format_time(NOW - dt.timedelta(seconds=100))}
    assert reconcile(reconciler) == 500.0
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.APPROVED, Reason.COOLDOWN)
    assert "20:38:20Z" in status["message"]
    assert not kube.called("update_scale") and "applying" not in status


def test_cooldown_over_applies(kube, reconciler, clock):
    kube.policies[(NS, "web")]["status"] = {"lastAppliedTime": format_time(NOW - dt.timedelta(seconds=100))}
    reconcile(reconciler)
    clock.advance(500)
    assert reconcile(reconciler) is None
    assert kube.status()["phase"] == Phase.APPLIED and kube.replicas() == 9


def test_conflicting_autoscaler_fails(kube, reconciler):
    kube.hpas[NS] = [("web-hpa", TargetRef("apps/v1", "Deployment", "web")),
                     ("api-hpa", TargetRef("apps/v1", "Deployment", "api"))]
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.FAILED, Reason.CONFLICTING_AUTOSCALER)
    assert "HorizontalPodAutoscaler web-hpa also manages Deployment/web" in status["message"]
    assert not kube.called("update_scale")


@pytest.mark.parametrize(
    "stale, cooling, hpa, reason",
    [
        pytest.param(True, True, True, Reason.TARGET_CHANGED, id="staleness-before-cooldown"),
        pytest.param(False, True, True, Reason.COOLDOWN, id="cooldown-before-autoscaler"),
        pytest.param(False, False, True, Reason.CONFLICTING_AUTOSCALER, id="autoscaler-last"),
    ],
)
def test_checks_4_to_6_in_order(kube, reconciler, stale, cooling, hpa, reason):
    if stale:
        kube.set_replicas("web", 5)
    if cooling:
        kube.policies[(NS, "web")]["status"] = {"lastAppliedTime": format_time(NOW)}
    if hpa:
        kube.hpas[NS] = [("web-hpa", WEB)]
    reconcile(reconciler)
    assert kube.status()["reason"] == reason


def test_bounds_are_checked_before_staleness(kube, reconciler):
    kube.policies[(NS, "web")] = policy_body(maxReplicas=8)
    kube.set_replicas("web", 6)
    reconcile(reconciler)
    assert kube.status()["reason"] == Reason.OUT_OF_BOUNDS


@pytest.mark.parametrize(
    "setup, reason",
    [
        pytest.param(lambda k: k.scales.clear(), Reason.TARGET_NOT_FOUND, id="target-missing"),
        pytest.param(lambda k: k.no_scale.add("web"), Reason.NO_SCALE_SUBRESOURCE, id="no-scale-subresource"),
    ],
)
def test_unreadable_target_fails(kube, reconciler, setup, reason):
    setup(kube)
    assert reconcile(reconciler) is None
    assert (kube.status()["phase"], kube.status()["reason"]) == (Phase.FAILED, reason)
    assert not kube.called("update_scale")


# -- Forbidden: the operator lacks a permission -----------------------------------------

@pytest.mark.parametrize("method", ["get_target", "get_scale", "update_scale"])
def test_forbidden_stays_approved_and_retries(kube, reconciler, method):
    kube.fail(method, Forbidden("deployments.apps/scale is forbidden"))
    assert reconcile(reconciler) == 30.0
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.APPROVED, OPERATOR_FORBIDDEN)
    assert "may not read Deployment/web or update its scale" in status["message"]  # stable text
    assert "ServiceAccount get on that kind and get/update on its scale" in status["message"]
    assert kube.replicas() == 4 and kube.intent() is None  # a refused write leaves no intent behind
    assert kube.proposal_events()[-1] == ("Normal", OPERATOR_FORBIDDEN)


@pytest.mark.parametrize("elapsed, requeue", [(3590, 10.0), (3599.8, 1.0)], ids=["10s-left", "almost-expired"])
def test_forbidden_retry_is_bounded_by_expiry(kube, reconciler, clock, elapsed, requeue):
    clock.advance(elapsed)
    kube.fail("get_scale", Forbidden("no"))
    assert reconcile(reconciler) == requeue


# -- concurrency: Conflicts --------------------------------------------------------------

def test_conflict_on_the_scale_write_rereads_and_ends_stale(kube, reconciler):
    kube.on("update_scale", lambda *_: kube.set_replicas("web", 6))  # an HPA or a person, just before us
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.STALE, Reason.TARGET_CHANGED)
    assert "now has 6 replicas" in status["message"]
    assert "applying" not in status
    assert len(kube.called("update_scale")) == 1
    assert len(kube.called("get_scale")) == 2
    assert kube.replicas() == 6  # the concurrent change was not overwritten
    assert not kube.called("patch_policy_status")


def test_conflict_with_unchanged_replicas_retries_with_the_fresh_version(kube, reconciler):
    moved = []

    def touch_deployment(*_):  # same replicas, new resourceVersion (e.g. a label was added)
        kube.set_replicas("web", 4)
        moved.append(kube.scales[(NS, "web")]["rv"])

    kube.on("update_scale", touch_deployment)
    assert reconcile(reconciler) is None
    assert kube.status()["phase"] == Phase.APPLIED and kube.replicas() == 9
    writes = kube.called("update_scale")
    assert [w[3] for w in writes] == ["100", moved[0]]
    # each write carried the resourceVersion of the read just before it, never an old one
    reads_then_writes = [(name, args) for name, args in kube.calls if name in ("get_scale", "update_scale")]
    assert [name for name, _ in reads_then_writes] == ["get_scale", "update_scale"] * 2
    intents = [json.loads(w[APPLY_INTENT])["resourceVersion"] for w in kube.record_writes() if w.get(APPLY_INTENT)]
    assert intents == ["100", moved[0]]


def test_a_target_that_keeps_changing_is_left_for_a_later_try(kube, reconciler):
    for _ in range(3):
        kube.on("update_scale", lambda *_: kube.set_replicas("web", 4))
    assert reconcile(reconciler) == 0.5
    rvs = [w[3] for w in kube.called("update_scale")]
    assert len(rvs) == 3 and len(set(rvs)) == 3
    assert kube.replicas() == 4
    # every write was refused by its precondition: no intent is left to be mistaken later
    assert kube.intent() is None
    assert reconcile(reconciler) is None
    assert kube.status()["phase"] == Phase.APPLIED and kube.replicas() == 9


def test_conflict_on_the_intent_write_reruns_without_scaling(kube, reconciler):
    kube.on("patch_proposal_annotations", lambda *_: kube.touch_proposal("web-1"))  # e.g. kubectl annotate
    assert reconcile(reconciler) == 0.0
    assert not kube.called("update_scale") and kube.replicas() == 4
    assert reconcile(reconciler) is None
    assert kube.status()["phase"] == Phase.APPLIED
    assert len(kube.called("update_scale")) == 1


def test_conflict_on_the_outcome_write_never_scales_twice(kube, reconciler):
    kube.on("patch_proposal_annotations", lambda *_: None)  # the intent write goes through
    kube.on("patch_proposal_annotations", lambda *_: kube.touch_proposal("web-1"))  # the outcome write conflicts
    assert reconcile(reconciler) == 0.0
    assert kube.replicas() == 9 and kube.intent()["replicas"] == 9 and kube.outcome() is None
    assert reconcile(reconciler) is None
    status = kube.status()
    assert status["phase"] == Phase.APPLIED
    assert (status["previousReplicas"], status["appliedReplicas"]) == (4, 9)
    assert len(kube.called("update_scale")) == 1


def test_conflict_on_the_final_status_write_is_written_again_from_the_record(kube, reconciler):
    kube.on("patch_proposal_status", lambda *_: kube.touch_proposal("web-1"))  # e.g. kubectl annotate
    assert reconcile(reconciler) is None
    assert kube.status()["phase"] == Phase.APPLIED and len(kube.called("update_scale")) == 1
    assert [e["reason"] for e in kube.events if e["involved"]["kind"] == "Deployment"] == ["ScaledByScalegate"]


# -- a body handed over by the watch ------------------------------------------------------

def test_a_body_from_the_watch_saves_the_read(kube, reconciler):
    assert reconciler.reconcile(NS, "web-1", copy.deepcopy(kube.proposals[(NS, "web-1")])) is None
    assert not kube.called("get_proposal")
    assert kube.status()["phase"] == Phase.APPLIED and kube.replicas() == 9


def test_an_outdated_body_from_the_watch_never_applies(kube, reconciler):
    """The watch delivered the approved state, but the approval was withdrawn since: the
    intent write is conditioned on the old resourceVersion, so nothing is scaled."""
    outdated = copy.deepcopy(kube.proposals[(NS, "web-1")])
    current = kube.proposals[(NS, "web-1")]
    for key in (APPROVED, APPROVED_BY):
        current["metadata"]["annotations"].pop(key)
    kube.touch_proposal("web-1")
    assert reconciler.reconcile(NS, "web-1", outdated) == 0.0  # look again, from a fresh read
    assert not kube.called("update_scale") and kube.replicas() == 4
    reconcile(reconciler)
    assert kube.called("get_proposal")
    assert (kube.status()["phase"], kube.status()["reason"]) == (Phase.PENDING, Reason.AWAITING_APPROVAL)
    assert not kube.called("update_scale")


def test_an_autoscaler_lookup_can_replace_the_listing(kube, clock):
    looked_up = []

    def index(namespace: str) -> list[tuple[str, TargetRef]]:
        looked_up.append(namespace)
        return [("web-hpa", WEB)]

    assert Reconciler(kube, clock=clock, autoscalers=index).reconcile(NS, "web-1") is None
    assert looked_up == [NS] and not kube.called("autoscalers")
    assert kube.status()["reason"] == Reason.CONFLICTING_AUTOSCALER


def test_proposal_deleted_during_the_reconcile(kube, reconciler):
    kube.on("patch_proposal_annotations", lambda *_: kube.proposals.clear())
    assert reconcile(reconciler) == 0.0
    assert not kube.called("update_scale")
    assert reconcile(reconciler) is None


# -- recovery of an interrupted apply ----------------------------------------------------

def with_intent(kube: FakeKube, *, replicas: int = 9, previous: int = 4, generation: int = 7,
                target_uid: str = "uid-deploy-web", approver: str = "alice") -> None:
    """web-1 as an interrupted apply left it: approved, its intent recorded (the target read
    at `generation`), nothing else."""
    intent = ApplyIntent(uid="uid-web-1", replicas=replicas, previous_replicas=previous, resource_version="100",
                         target_uid=target_uid, target_generation=generation, approved_by=approver,
                         started_at=NOW - dt.timedelta(seconds=30))
    put(kube, proposal_body(annotations={APPLY_INTENT: intent.to_annotation()},
                            status={"phase": Phase.APPROVED, "reason": Reason.APPROVED,
                                    "approvedBy": approver, "approvedAt": "2026-11-26T20:29:00Z"}))


def test_recovery_records_an_apply_that_happened_without_writing_again(kube, reconciler):
    with_intent(kube)
    kube.set_replicas("web", 9)  # our write had landed: generation 7 -> 8
    assert reconcile(reconciler) is None
    assert not kube.called("update_scale")
    status = kube.status()
    assert (status["phase"], status["previousReplicas"], status["appliedReplicas"]) == (Phase.APPLIED, 4, 9)
    assert status["appliedAt"] == "2026-11-26T20:30:00Z"
    assert status["approvedAt"] == "2026-11-26T20:29:00Z"  # kept from the first run
    assert kube.intent() is None and kube.outcome()["phase"] == Phase.APPLIED
    assert kube.called("patch_policy_status")[0][2]["lastAppliedTime"] == "2026-11-26T20:30:00Z"
    assert [e["reason"] for e in kube.events if e["involved"]["kind"] == "Deployment"] == ["ScaledByScalegate"]
    assert not kube.called("user_may_approve")  # verified before the intent was written; the intent names alice


def test_recovery_counts_an_apply_that_happened_even_after_expiry(kube, reconciler, clock):
    with_intent(kube)
    kube.set_replicas("web", 9)
    clock.advance(7200)
    reconcile(reconciler)
    assert kube.status()["phase"] == Phase.APPLIED


def test_recovery_of_an_unwritten_apply_clears_the_intent_and_decides_again(kube, reconciler):
    with_intent(kube)
    kube.scales[(NS, "web")].update(rv="105")  # a status update of the Deployment moved the version only
    assert reconcile(reconciler) == 0.0
    assert kube.intent() is None and not kube.called("update_scale")
    assert kube.status()["phase"] == Phase.APPROVED
    assert reconcile(reconciler) is None
    assert kube.called("update_scale") == [(NS, WEB, 9, "105")]
    assert kube.status()["phase"] == Phase.APPLIED


def test_recovery_of_an_unwritten_apply_runs_every_check_again(kube, reconciler):
    with_intent(kube)
    kube.policies[(NS, "web")] = policy_body(suspend=True)
    reconcile(reconciler)
    assert reconcile(reconciler) == 3600.0
    assert kube.status()["reason"] == Reason.SUSPENDED
    assert not kube.called("update_scale")


def test_recovery_with_the_target_elsewhere_is_stale(kube, reconciler):
    with_intent(kube)
    kube.set_replicas("web", 6)
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.STALE, Reason.TARGET_CHANGED)
    assert "found Deployment/web at 6" in status["message"]
    assert kube.intent() is None and kube.outcome()["phase"] == Phase.STALE
    assert not kube.called("update_scale")


def test_recovery_after_our_write_was_undone_never_scales_again(kube, reconciler):
    """Issue 15's window: our write landed (4 -> 9), another writer set 4 again, and we
    restarted before recording anything. The replicas alone look unwritten; the generation
    (7 at our read, 9 now) says the spec changed twice since, so nothing is written again."""
    with_intent(kube)
    kube.set_replicas("web", 9)
    kube.set_replicas("web", 4)
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.STALE, Reason.TARGET_CHANGED)
    assert "generation 7 -> 9" in status["message"] and "cannot be told" in status["message"]
    assert not kube.called("update_scale") and kube.replicas() == 4
    assert not kube.called("patch_policy_status")


def test_recovery_with_the_target_replaced_is_stale(kube, reconciler):
    with_intent(kube, target_uid="uid-of-the-deleted-one")
    assert reconcile(reconciler) is None
    assert kube.status()["phase"] == Phase.STALE and "replaced by another object" in kube.status()["message"]
    assert not kube.called("update_scale")


def test_recovery_with_the_target_gone_fails(kube, reconciler):
    with_intent(kube)
    kube.scales.clear()
    assert reconcile(reconciler) is None
    assert (kube.status()["phase"], kube.status()["reason"]) == (Phase.FAILED, Reason.TARGET_NOT_FOUND)
    assert kube.intent() is None


def test_recovery_without_permission_to_read_the_target_keeps_the_intent(kube, reconciler):
    with_intent(kube)
    kube.fail("get_target", Forbidden("deployments.apps is forbidden"))
    assert reconcile(reconciler) == 30.0
    assert kube.status()["reason"] == OPERATOR_FORBIDDEN
    assert kube.intent() is not None  # whether it wrote is still unknown: the next look decides


def test_a_crash_right_after_the_scale_write_is_recovered_once(kube, reconciler, clock):
    kube.fail("patch_policy_status", KubeError("connection reset"))  # we "die" right after scaling
    with pytest.raises(KubeError):
        reconcile(reconciler)
    assert kube.replicas() == 9 and kube.intent()["replicas"] == 9
    restarted = Reconciler(kube, clock=clock)
    assert reconcile(restarted) is None
    assert kube.status()["phase"] == Phase.APPLIED
    assert len(kube.called("update_scale")) == 1


class Killed(BaseException):
    """Stands for SIGKILL in the fault tests: nothing after it runs (not even except clauses)."""


@pytest.mark.parametrize("point, writes", [
    ("before-intent", 1), ("after-intent", 1), ("after-scale-write", 1), ("after-policy-status", 1),
    ("after-outcome-record", 1), ("after-proposal-status", 1)])
def test_killed_at_each_write_of_an_apply_a_restart_applies_exactly_once(kube, clock, point, writes):
    def fault(reached: str) -> None:
        if reached == point:
            raise Killed(point)

    with pytest.raises(Killed):
        Reconciler(kube, clock=clock, fault=fault).reconcile(NS, "web-1")
    restarted = Reconciler(kube, clock=clock)
    for _ in range(3):  # the queue's looks after a restart
        if reconcile(restarted) is None:
            break
    assert kube.status()["phase"] == Phase.APPLIED and kube.outcome()["phase"] == Phase.APPLIED
    assert (kube.status()["previousReplicas"], kube.status()["appliedReplicas"]) == (4, 9)
    assert len(kube.called("update_scale")) == writes and kube.replicas() == 9
    assert kube.intent() is None and "lastAppliedTime" in kube.policies[(NS, "web")]["status"]


def test_the_fault_hook_is_off_unless_set_and_refuses_an_unknown_point():
    assert fault_hook_from_env({}) is None
    assert callable(fault_hook_from_env({"SCALEGATE_FAULT_POINT": "after-scale-write"}))
    with pytest.raises(ValueError, match="is not one of before-intent, after-intent"):
        fault_hook_from_env({"SCALEGATE_FAULT_POINT": "after-scale"})
    assert FAULT_POINTS[0] == "before-intent" and FAULT_POINTS[-1] == "after-proposal-status"


# -- status is a record, not an authority ---------------------------------------------------

def applied_once(kube: FakeKube, reconciler: Reconciler) -> None:
    assert reconcile(reconciler) is None and kube.status()["phase"] == Phase.APPLIED
    kube.calls.clear()
    kube.events.clear()


@pytest.mark.parametrize("rewrite", [
    {"phase": Phase.PENDING, "applying": None},
    {"phase": Phase.APPROVED, "reason": Reason.APPROVED},
    {"phase": None, "reason": None},
], ids=["pending", "approved", "no-phase"])
def test_an_applied_proposal_whose_status_is_rewritten_is_never_applied_again(kube, reconciler, rewrite):
    applied_once(kube, reconciler)
    kube.set_replicas("web", 4)  # an admin scaled back: the proposal would apply again if decided afresh
    kube.patch_proposal_status(NS, "web-1", rewrite)
    kube.calls.clear()
    assert reconcile(reconciler) is None
    assert not kube.called("update_scale") and not kube.called("get_scale") and kube.replicas() == 4
    assert not kube.called("patch_policy_status")  # the cooldown does not move either
    status = kube.status()
    assert (status["phase"], status["previousReplicas"], status["appliedReplicas"]) == (Phase.APPLIED, 4, 9)
    assert status["approvedBy"] == "alice" and status["finishedAt"] == "2026-11-26T20:30:00Z"
    assert [(e["type"], e["reason"]) for e in kube.events] == [("Warning", RECORD_RESTORED)]


def test_a_stale_proposal_set_to_approved_is_not_applied(kube, reconciler):
    kube.set_replicas("web", 6)
    reconcile(reconciler)
    assert kube.status()["phase"] == Phase.STALE
    kube.set_replicas("web", 4)  # back to what the proposal was based on
    kube.patch_proposal_status(NS, "web-1", {"phase": Phase.APPROVED, "reason": Reason.APPROVED})
    assert reconcile(reconciler) is None
    assert not kube.called("update_scale") and kube.replicas() == 4
    assert kube.status()["phase"] == Phase.STALE


def test_a_forged_intent_in_status_is_no_receipt(kube, reconciler):
    """status.applying claiming the live replicas on an unapproved proposal: nothing is
    recorded Applied, no Event, no cooldown; the field is cleared."""
    put(kube, proposal_body(current=3, replicas=4, approved_by=None, status={"applying": {
        "replicas": 4, "previousReplicas": 3, "resourceVersion": "1", "startedAt": "2026-11-26T20:29:00Z"}}))
    assert reconcile(reconciler) == 3600.0
    assert (kube.status()["phase"], kube.status()["reason"]) == (Phase.PENDING, Reason.AWAITING_APPROVAL)
    assert "applying" not in kube.status()
    assert not kube.called("patch_policy_status") and not kube.called("update_scale")
    assert [e["involved"]["kind"] for e in kube.events] == ["ScalingProposal"]


def test_a_forged_approver_in_status_is_cleared_and_replaced_by_the_verified_one(kube, reconciler):
    put(kube, proposal_body(approved_by=None, status={"phase": Phase.PENDING, "approvedBy": "mallory",
                                                       "approvedAt": "2000-01-01T00:00:00Z"}))
    reconcile(reconciler)
    assert "approvedBy" not in kube.status() and "approvedAt" not in kube.status()
    kube.proposals[(NS, "web-1")]["metadata"]["annotations"].update({APPROVED: "true", APPROVED_BY: "alice"})
    reconcile(reconciler)
    assert kube.status()["approvedBy"] == "alice" and kube.outcome()["approvedBy"] == "alice"


def test_a_forged_terminal_phase_in_status_only_stops_the_operator(kube, reconciler):
    put(kube, proposal_body(status={"phase": Phase.FAILED}))
    assert reconcile(reconciler) is None
    assert [name for name, _ in kube.calls] == ["get_proposal"]


def test_a_record_written_for_another_object_is_acted_on_by_nothing(kube, reconciler):
    copied = OutcomeRecord(uid="uid-of-another", phase=Phase.REJECTED, reason="RejectedByUser", message="no",
                           at=NOW)
    put(kube, proposal_body(annotations={OUTCOME: copied.to_annotation()}))
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.FAILED, Reason.INVALID_RECORD)
    assert "written for another object" in status["message"]
    assert not kube.called("update_scale") and not kube.called("patch_proposal_annotations")


def test_an_unreadable_intent_is_acted_on_by_nothing(kube, reconciler):
    put(kube, proposal_body(annotations={APPLY_INTENT: "{not json"}))
    assert reconcile(reconciler) is None
    assert kube.status()["reason"] == Reason.INVALID_RECORD and not kube.called("update_scale")


# -- one policy per target, controlled targets, the TTL, times out of range ------------------

def test_a_second_policy_for_the_same_target_is_refused(kube, reconciler):
    second = policy_body()
    second["metadata"].update(name="web-b", uid="uid-b", creationTimestamp="2026-11-20T00:00:00Z")
    kube.policies[(NS, "web-b")] = second
    put(kube, proposal_body("b-1", policy="web-b"))
    assert reconcile(reconciler, "b-1") is None
    status = kube.status("b-1")
    assert (status["phase"], status["reason"]) == (Phase.FAILED, Reason.CONFLICTING_POLICY)
    assert "the older policy web already governs" in status["message"]
    assert not kube.called("get_scale") and kube.replicas() == 4
    # at least as recent as the proposal decided on; only the policies of its target's name
    assert kube.called("list_policies") == [(NS, "1", "web")]
    assert reconcile(reconciler, "web-1") is None and kube.status("web-1")["phase"] == Phase.APPLIED


def test_a_target_controlled_by_another_object_is_refused_before_any_write(kube, reconciler):
    kube.scales[(NS, "web")]["controller"] = ("Deployment", "web-parent")
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.FAILED, Reason.TARGET_MANAGED)
    assert "controlled by Deployment web-parent" in status["message"]
    assert not kube.called("update_scale") and kube.intent() is None


def test_valid_until_is_capped_by_the_policy_ttl(kube, reconciler, clock):
    kube.policies[(NS, "web")] = policy_body(proposalTTLSeconds=60)
    body = proposal_body(approved_by=None, created=NOW)
    body["spec"]["validUntil"] = "9999-12-31T23:59:59Z"
    put(kube, body)
    assert reconcile(reconciler) == 60.0  # looked at again when the TTL ends, not in the year 9999
    clock.advance(60)
    assert reconcile(reconciler) is None
    assert kube.status()["phase"] == Phase.EXPIRED and "2026-11-26T20:31:00Z" in kube.status()["message"]


def test_a_last_applied_time_out_of_range_fails_clearly_instead_of_raising(kube, reconciler):
    kube.policies[(NS, "web")]["status"] = {"lastAppliedTime": "9999-12-31T23:59:59Z"}
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.FAILED, Reason.INVALID_POLICY)
    assert "lastAppliedTime" in status["message"] and not kube.called("update_scale")


# -- invalid and terminal proposals ------------------------------------------------------

def _broken(mutate: Callable[[dict], Any]) -> dict:
    body = proposal_body()
    mutate(body)
    return body


@pytest.mark.parametrize(
    "mutate, message_part",
    [
        pytest.param(lambda b: b["spec"].update(replicas="nine"), "spec.replicas must be an integer",
                     id="replicas-string"),
        pytest.param(lambda b: b["spec"].pop("validUntil"), "spec.validUntil is required",
                     id="no-validUntil"),
        pytest.param(lambda b: b.update(status={"phase": "Done"}), "status.phase 'Done'",
                     id="unknown-phase"),
        pytest.param(lambda b: b.pop("spec"), "spec is missing", id="no-spec"),
    ],
)
def test_invalid_proposal_fails_closed(kube, reconciler, mutate, message_part):
    # Each run breaks a fresh body: a body built once at collection would carry one run's
    # writes into the next (mutation testing reruns the same parameters).
    put(kube, _broken(mutate))
    assert reconcile(reconciler) is None
    status = kube.status()
    assert (status["phase"], status["reason"]) == (Phase.FAILED, Reason.INVALID_PROPOSAL)
    assert message_part in status["message"] and "nothing was applied" in status["message"]
    assert status["finishedAt"] == "2026-11-26T20:30:00Z"
    assert kube.proposal_events() == [("Warning", Reason.INVALID_PROPOSAL)]
    assert [name for name, _ in kube.calls if name not in ("emit_event",)] == [
        "get_proposal", "patch_proposal_annotations", "patch_proposal_status"]
    assert kube.outcome()["reason"] == Reason.INVALID_PROPOSAL
    assert kube.replicas() == 4


def test_invalid_proposal_already_failed_is_left_alone(kube, reconciler):
    put(kube, _broken(lambda b: b.update(status={"phase": Phase.FAILED, "reason": "InvalidProposal"},
                                         spec={"bogus": True})))
    assert reconcile(reconciler) is None
    assert [name for name, _ in kube.calls] == ["get_proposal"]


def test_conflict_recording_an_invalid_proposal_reruns(kube, reconciler):
    put(kube, _broken(lambda b: b["spec"].update(replicas="nine")))
    kube.on("patch_proposal_status", lambda *_: kube.touch_proposal("web-1"))
    assert reconcile(reconciler) == 0.0


@pytest.mark.parametrize("phase", sorted(Phase.TERMINAL))
def test_terminal_proposals_are_not_touched(kube, reconciler, phase):
    put(kube, proposal_body(status={"phase": phase, "applying": {"replicas": 9, "previousReplicas": 4}}))
    assert reconcile(reconciler) is None
    assert [name for name, _ in kube.calls] == ["get_proposal"]


def test_a_deleted_proposal_is_nothing_to_do(kube, reconciler):
    kube.proposals.clear()
    assert reconcile(reconciler) is None
    assert [name for name, _ in kube.calls] == ["get_proposal"]


# -- idempotence: the same state, decided twice, is written once -------------------------

IDEMPOTENT_CASES = [
    pytest.param(lambda k: k.proposals.update({(NS, "web-1"): proposal_body(approved_by=None)}),
                 Reason.AWAITING_APPROVAL, id="pending"),
    pytest.param(lambda k: k.proposals.update({(NS, "web-1"): proposal_body(
        annotations={APPROVED: "true", APPROVED_BY: ""})}), Reason.MISSING_APPROVER, id="missing-approver"),
    pytest.param(lambda k: k.policies[(NS, "web")].update(status={"lastAppliedTime": format_time(NOW)}),
                 Reason.COOLDOWN, id="cooldown"),
    pytest.param(lambda k: k.policies.update({(NS, "web"): policy_body(suspend=True)}), Reason.SUSPENDED,
                 id="suspended"),
    pytest.param(lambda k: k.fail("get_scale", Forbidden("no"), times=2), OPERATOR_FORBIDDEN,
                 id="forbidden-reading-scale"),
]


@pytest.mark.parametrize("setup, reason", IDEMPOTENT_CASES)
def test_reconciling_the_same_state_twice_writes_once(kube, reconciler, setup, reason):
    setup(kube)
    first = reconcile(reconciler)
    second = reconcile(reconciler)
    assert first == second
    assert kube.status()["reason"] == reason
    assert len(kube.status_writes()) == 1
    assert len(kube.proposal_events()) == 1


@pytest.mark.parametrize("outcome_setup", [
    pytest.param(lambda k: None, id="applied"),
    pytest.param(lambda k: k.policies.clear(), id="failed"),
])
def test_a_terminal_outcome_is_final(kube, reconciler, outcome_setup):
    outcome_setup(kube)
    reconcile(reconciler)
    writes = len(kube.status_writes())
    reconcile(reconciler)
    assert len(kube.status_writes()) == writes


def test_forbidden_scale_write_retried_on_the_same_state_writes_nothing_new(kube, reconciler):
    kube.fail("update_scale", Forbidden("no update on deployments/scale"), times=5)
    reconcile(reconciler)
    writes, events = len(kube.status_writes()), len(kube.proposal_events())
    for _ in range(3):  # the queue's requeues while the permission is still missing
        if reconcile(reconciler) != 0.0:
            break
    assert kube.status()["reason"] == OPERATOR_FORBIDDEN
    assert (len(kube.status_writes()), len(kube.proposal_events())) == (writes, events)


# -- the policy label --------------------------------------------------------------------

@pytest.mark.parametrize("labels", [{}, {POLICY_LABEL: "api"}, {"app": "web"}], ids=["none", "wrong", "other-only"])
def test_missing_label_is_added_and_the_proposal_looked_at_again(kube, reconciler, labels):
    put(kube, proposal_body(labels=labels))
    assert reconcile(reconciler) == 0.0
    assert kube.called("label_proposal") == [(NS, "web-1", {POLICY_LABEL: "web"})]
    assert not kube.status_writes() and not kube.called("get_scale")
    assert reconcile(reconciler) is None
    assert kube.status()["phase"] == Phase.APPLIED


def test_label_failure_propagates_so_the_queue_backs_off(kube, reconciler):
    put(kube, proposal_body(labels={}))
    kube.fail("label_proposal", KubeError("apiserver unavailable"))
    with pytest.raises(KubeError):
        reconcile(reconciler)


# -- API errors propagate: the work queue retries with backoff ---------------------------

@pytest.mark.parametrize("method", ["get_proposal", "list_policy_proposals", "user_may_approve", "get_policy",
                                    "get_scale", "autoscalers", "patch_proposal_status", "update_scale",
                                    "patch_policy_status"])
def test_kube_errors_propagate(kube, reconciler, method):
    kube.fail(method, KubeError("HTTP 503"))
    with pytest.raises(KubeError, match="HTTP 503"):
        reconcile(reconciler)


def test_an_unknown_outcome_of_the_scale_write_is_recovered_from_the_intent(kube, reconciler):
    def write_then_timeout(*_):
        kube.set_replicas("web", 9)
        raise KubeError("read timed out")

    kube.on("update_scale", write_then_timeout)
    with pytest.raises(KubeError):
        reconcile(reconciler)
    assert reconcile(reconciler) is None
    assert kube.status()["phase"] == Phase.APPLIED
    assert len(kube.called("update_scale")) == 1
