"""The apply path of `scalegate.kube` at the HTTP boundary: what each call the operator
makes from reading a proposal to writing the scale and its receipts sends to the API server
(method, path, query, headers, body), how it reads the answer, and how a refusal becomes
one of kube's errors. The API client is replaced below `Kube._raw` (its `param_serialize`
and `call_api`), so everything kube itself does is exercised.

Written to kill the mutants that tests/mutation/run.sh found surviving in kube.py: the
reconciler's tests replace the whole `Kube`, so nothing else checks these requests.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from scalegate import kube as kube_module
from scalegate.kube import (
    METADATA_LIST,
    METADATA_OBJECT,
    REQUEST_TIMEOUT,
    Conflict,
    Forbidden,
    Invalid,
    Kube,
    KubeError,
    NoScaleSubresource,
    NotFound,
    Scale,
    TargetObject,
    Unauthorized,
    Unavailable,
    error_from_response,
)
from scalegate.model import TargetRef

MERGE = "application/merge-patch+json"
DEPLOYMENT = TargetRef(api_version="apps/v1", kind="Deployment", name="web")
APPS_V1 = {"resources": [
    {"name": "deployments", "kind": "Deployment"}, {"name": "deployments/scale", "kind": "Scale"},
    {"name": "deployments/status", "kind": "Deployment"},
    {"name": "controllerrevisions", "kind": "ControllerRevision"},
]}
CORE_V1 = {"resources": [
    {"name": "replicationcontrollers", "kind": "ReplicationController"},
    {"name": "replicationcontrollers/scale", "kind": "Scale"},
    {"name": "pods", "kind": "Pod"},
]}


class Response:
    def __init__(self, status: int, body: bytes, reason: str = ""):
        self.status, self._body, self.reason = status, body, reason

    def read(self) -> bytes:
        return self._body


class Configuration:
    host = "https://api.example:6443"


class FakeApi:
    """An ApiClient that records every request and answers from a script: a dict of
    (method, path) -> (status, body) or an exception to raise."""

    def __init__(self, answers: dict | None = None):
        self.configuration = Configuration()
        self.answers = dict(answers or {})
        self.requests: list[dict] = []

    def param_serialize(self, method, resource_path, query_params, header_params, body, auth_settings):
        return (method, resource_path, list(query_params), dict(header_params), body, list(auth_settings))

    def call_api(self, method, path, query, headers, body, auth, _request_timeout=None):
        self.requests.append({"method": method, "path": path, "query": query, "headers": headers, "body": body,
                              "auth": auth, "timeout": _request_timeout})
        answer = self.answers.get((method, path), (200, {}))
        if isinstance(answer, Exception):
            raise answer
        status, payload = answer[0], answer[1]
        reason = answer[2] if len(answer) > 2 else "OK"
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return Response(status, data, reason)

    @property
    def last(self) -> dict:
        return self.requests[-1]


def make(answers: dict | None = None) -> tuple[Kube, FakeApi]:
    api = FakeApi({("GET", "/apis/apps/v1"): (200, APPS_V1), ("GET", "/api/v1"): (200, CORE_V1), **(answers or {})})
    return Kube(api, component="scalegate-operator"), api


def status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "status": "Failure", "code": code, "reason": reason,
                       "message": message}).encode()


# -- the plumbing: one request, one answer --------------------------------------------------
def test_a_get_asks_for_json_with_the_token_and_the_timeout_and_no_body():
    kube, api = make({("GET", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/web-1"):
                      (200, {"metadata": {"name": "web-1"}})})
    assert kube.get_proposal("shop", "web-1") == {"metadata": {"name": "web-1"}}
    request = api.last
    assert request["headers"] == {"Accept": "application/json"}
    assert request["body"] is None and request["query"] == []
    assert request["auth"] == ["BearerToken"] and request["timeout"] == REQUEST_TIMEOUT


@pytest.mark.parametrize("status", [200, 201, 299])
def test_every_2xx_is_an_answer(status):
    kube, _ = make({("GET", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingpolicies/web"):
                    (status, {"metadata": {"name": "web"}})})
    assert kube.get_policy("shop", "web") == {"metadata": {"name": "web"}}


@pytest.mark.parametrize("status", [199, 300])
def test_outside_2xx_is_an_error(status):
    kube, _ = make({("GET", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingpolicies/web"):
                    (status, {}, "odd")})
    with pytest.raises(KubeError) as err:
        kube.get_policy("shop", "web")
    assert err.value.status == status


def test_an_empty_answer_is_an_empty_object():
    kube, _ = make({("PATCH", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingpolicies/web/status"): (200, b"")})
    assert kube.patch_policy_status("shop", "web", {"lastAppliedTime": "x"}) == {}


@pytest.mark.parametrize("status, cls", [(400, Invalid), (401, Unauthorized), (403, Forbidden), (404, NotFound),
                                         (409, Conflict), (422, Invalid), (429, Unavailable), (500, Unavailable),
                                         (503, Unavailable), (418, KubeError)])
def test_a_refusal_keeps_the_servers_status_reason_and_message(status, cls):
    path = "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/web-1/status"
    kube, _ = make({("PATCH", path): (status, status_body(status, "SomeReason", "the server's\nown words"))})
    with pytest.raises(KubeError) as err:
        kube.patch_proposal_status("shop", "web-1", {"phase": "Applied"})
    assert type(err.value) is cls
    assert err.value.status == status and err.value.reason == "SomeReason"
    assert err.value.message == "the server's own words"
    assert str(err.value) == "update status of proposal shop/web-1: the server's own words"


def test_a_refusal_without_a_status_body_says_what_http_said():
    err = error_from_response(ApiException(status=503, reason="Service Unavailable"), "read scale")
    assert type(err) is Unavailable and err.message == "HTTP 503 Service Unavailable"
    assert err.reason == "Service Unavailable" and str(err) == "read scale: HTTP 503 Service Unavailable"
    text = error_from_response(ApiException(status=502, reason="Bad Gateway", http_resp=None), "x")
    assert text.message == "HTTP 502 Bad Gateway"
    plain = ApiException(status=500, reason="")
    plain.body = b"  upstream exploded \n"
    assert error_from_response(plain, "x").message == "upstream exploded"
    assert error_from_response(plain, "x").reason == "Unavailable"  # no reason given: the kind's name


def test_a_status_body_that_is_not_an_object_keeps_the_http_reason():
    err = ApiException(status=409, reason="Conflict")
    err.body = json.dumps(["not", "a", "status"])
    made = error_from_response(err, "x")
    assert type(made) is Conflict and made.reason == "Conflict" and made.message == "HTTP 409 Conflict"


def test_no_answer_at_all_is_unavailable_and_names_the_server():
    tls = ApiException(status=0, reason="certificate verify failed")
    kube, _ = make({("GET", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/a"): tls})
    with pytest.raises(Unavailable) as err:
        kube.get_proposal("shop", "a")
    assert str(err.value) == ("get proposal shop/a: cannot reach the Kubernetes API server at "
                              "https://api.example:6443: certificate verify failed")
    refused = urllib3.exceptions.MaxRetryError(None, "/x", urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"))
    kube, _ = make({("GET", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/b"): refused})
    with pytest.raises(Unavailable, match="at https://api.example:6443: connection refused$"):
        kube.get_proposal("shop", "b")
    kube, _ = make({("GET", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/c"): OSError("reset")})
    with pytest.raises(Unavailable, match="reset"):
        kube.get_proposal("shop", "c")


def test_kube_error_defaults():
    err = KubeError("read scale")
    assert str(err) == "read scale" and err.message == "read scale" and err.status is None
    assert err.reason == "KubeError" and err.kind == "KubeError"
    assert Conflict("x", "y").kind == "Conflict" and Conflict("x", "y").reason == "Conflict"
    assert Forbidden("x", "y", reason="").reason == "Forbidden"


# -- reading the proposal and its policy -----------------------------------------------------
def test_a_missing_proposal_or_policy_is_none_unless_asked_to_fail():
    gone = (404, status_body(404, "NotFound", "gone"))
    kube, _ = make({("GET", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/gone"): gone,
                    ("GET", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingpolicies/gone"): gone})
    assert kube.get_proposal("shop", "gone") is None and kube.get_policy("shop", "gone") is None
    with pytest.raises(NotFound):
        kube.get_proposal("shop", "gone", missing_ok=False)
    with pytest.raises(NotFound):
        kube.get_policy("shop", "gone", missing_ok=False)


def test_other_errors_of_a_read_are_not_swallowed():
    kube, _ = make({("GET", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/p"):
                    (403, status_body(403, "Forbidden", "no"))})
    with pytest.raises(Forbidden):
        kube.get_proposal("shop", "p")


def test_a_policys_proposals_are_listed_by_its_selectable_field_as_metadata():
    path = "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals"
    items = {"items": [{"metadata": {"name": "web-1", "creationTimestamp": "2026-11-26T20:00:00Z",
                                     "annotations": {"a": "b"}}},
                       {"metadata": {"name": "web-2"}}]}
    kube, api = make({("GET", path): (200, items)})
    assert kube.list_policy_proposals("shop", "web") == [
        ("web-1", dt.datetime(2026, 11, 26, 20, 0, tzinfo=dt.timezone.utc)), ("web-2", None)]
    assert api.last["query"] == [("fieldSelector", "spec.policyRef.name=web")]
    assert api.last["headers"]["Accept"] == METADATA_LIST
    kube.list_policy_proposals("shop", "web", not_older_than="42")
    assert api.last["query"] == [("fieldSelector", "spec.policyRef.name=web"), ("resourceVersion", "42"),
                                 ("resourceVersionMatch", "NotOlderThan")]
    assert kube.list_policy_proposal_metadata("shop", "web") == [item["metadata"] for item in items["items"]]
    assert api.last["query"] == [("fieldSelector", "spec.policyRef.name=web")]
    assert api.last["headers"]["Accept"] == METADATA_LIST and api.last["path"] == path
    kube.list_policy_proposal_metadata("shop", "web", not_older_than="7")
    assert api.last["query"][1:] == [("resourceVersion", "7"), ("resourceVersionMatch", "NotOlderThan")]
    kube, _ = make({("GET", path): (200, {})})
    assert kube.list_policy_proposals("shop", "web") == [] and kube.list_policy_proposal_metadata("shop", "web") == []


def test_the_policies_of_a_target_are_listed_by_its_selectable_field():
    path = "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingpolicies"
    kube, api = make({("GET", path): (200, {"items": [{"metadata": {"name": "web"}}]})})
    assert kube.list_policies("shop", not_older_than="42", target_name="web") == [{"metadata": {"name": "web"}}]
    assert api.last["query"] == [("resourceVersion", "42"), ("resourceVersionMatch", "NotOlderThan"),
                                 ("fieldSelector", "spec.targetRef.name=web")]
    kube.list_policies("shop")
    assert api.last["query"] == []


# -- the writes of an apply -----------------------------------------------------------------
def test_the_records_are_a_merge_patch_conditioned_on_the_resource_version():
    kube, api = make()
    kube.patch_proposal_annotations("shop", "web-1", {"scalegate.io/applying": "{}", "x": None}, "17")
    assert api.last["method"] == "PATCH"
    assert api.last["path"] == "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/web-1"
    assert api.last["headers"] == {"Accept": "application/json", "Content-Type": MERGE}
    assert api.last["body"] == {"metadata": {"annotations": {"scalegate.io/applying": "{}", "x": None},
                                             "resourceVersion": "17"}}


def test_the_proposals_status_is_a_merge_patch_of_the_status_subresource():
    kube, api = make()
    kube.patch_proposal_status("shop", "web-1", {"phase": "Applied"})
    assert (api.last["method"], api.last["path"]) == (
        "PATCH", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/web-1/status")
    assert api.last["headers"]["Content-Type"] == MERGE and api.last["body"] == {"status": {"phase": "Applied"}}
    kube.patch_proposal_status("shop", "web-1", {"phase": "Applied"}, resource_version="9")
    assert api.last["body"] == {"status": {"phase": "Applied"}, "metadata": {"resourceVersion": "9"}}


def test_the_policys_status_is_a_merge_patch_of_its_status_subresource():
    kube, api = make()
    kube.patch_policy_status("shop", "web", {"lastAppliedTime": "2026-11-26T20:00:00Z"})
    assert (api.last["method"], api.last["path"]) == (
        "PATCH", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingpolicies/web/status")
    assert api.last["headers"]["Content-Type"] == MERGE
    assert api.last["body"] == {"status": {"lastAppliedTime": "2026-11-26T20:00:00Z"}}


def test_the_label_is_a_merge_patch():
    kube, api = make()
    kube.label_proposal("shop", "web-1", {"scalegate.io/policy": "web"})
    assert (api.last["method"], api.last["path"], api.last["headers"]["Content-Type"]) == (
        "PATCH", "/apis/scalegate.io/v1alpha1/namespaces/shop/scalingproposals/web-1", MERGE)
    assert api.last["body"] == {"metadata": {"labels": {"scalegate.io/policy": "web"}}}


def test_the_scale_write_carries_the_resource_version_read_before_it():
    path = "/apis/apps/v1/namespaces/shop/deployments/web/scale"
    kube, api = make({("PUT", path): (200, {"metadata": {"resourceVersion": "101", "uid": "u-1"},
                                             "spec": {"replicas": 9}})})
    assert kube.update_scale("shop", DEPLOYMENT, 9, "100") == Scale(replicas=9, resource_version="101", uid="u-1")
    assert api.last["method"] == "PUT" and api.last["path"] == path
    assert api.last["headers"] == {"Accept": "application/json", "Content-Type": "application/json"}
    assert api.last["body"] == {"apiVersion": "autoscaling/v1", "kind": "Scale",
                                "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "100"},
                                "spec": {"replicas": 9}}


def test_a_conflicting_scale_write_is_conflict():
    path = "/apis/apps/v1/namespaces/shop/deployments/web/scale"
    kube, _ = make({("PUT", path): (409, status_body(409, "Conflict", "the object has been modified"))})
    with pytest.raises(Conflict, match="scale Deployment/web to 9: the object has been modified"):
        kube.update_scale("shop", DEPLOYMENT, 9, "100")


# -- the target ----------------------------------------------------------------------------
def test_the_scale_is_read_where_discovery_says_and_discovery_is_asked_once():
    path = "/apis/apps/v1/namespaces/shop/deployments/web/scale"
    kube, api = make({("GET", path): (200, {"metadata": {"resourceVersion": "5", "uid": "u"},
                                             "spec": {"replicas": 4}})})
    assert kube.get_scale("shop", DEPLOYMENT) == Scale(replicas=4, resource_version="5", uid="u")
    assert kube.get_scale("shop", DEPLOYMENT).replicas == 4
    assert [r["path"] for r in api.requests] == ["/apis/apps/v1", path, path]


def test_the_core_group_is_discovered_under_api():
    target = TargetRef(api_version="v1", kind="ReplicationController", name="rc")
    path = "/api/v1/namespaces/shop/replicationcontrollers/rc/scale"
    kube, api = make({("GET", path): (200, {"spec": {"replicas": 2}})})
    assert kube.get_scale("shop", target).replicas == 2
    assert [r["path"] for r in api.requests] == ["/api/v1", path]
    kube.update_scale("shop", target, 3, "1")
    assert api.last["path"] == path
    kube.get_target("shop", target)
    assert api.last["path"] == "/api/v1/namespaces/shop/replicationcontrollers/rc"


def test_a_kind_without_scale_is_no_scale_subresource():
    with pytest.raises(NoScaleSubresource, match=r"ControllerRevision \(apps/v1\) has no scale subresource"):
        make()[0].get_scale("shop", TargetRef(api_version="apps/v1", kind="ControllerRevision", name="x"))
    with pytest.raises(NoScaleSubresource):
        make()[0].update_scale("shop", TargetRef(api_version="v1", kind="Pod", name="x"), 1, "1")


def test_a_kind_without_scale_is_refused_before_its_object_is_read():
    """The operator may not read most such kinds: a 403 would ask for a grant that could
    never make the proposal applicable (found by the API fuzz test)."""
    kube, api = make()
    with pytest.raises(NoScaleSubresource, match=r"ControllerRevision \(apps/v1\) has no scale subresource"):
        kube.get_target("shop", TargetRef(api_version="apps/v1", kind="ControllerRevision", name="x"))
    assert [r["path"] for r in api.requests] == ["/apis/apps/v1"]  # discovery only


def test_an_unknown_kind_is_not_found_and_looked_up_again_next_time():
    kube, api = make()
    target = TargetRef(api_version="apps/v1", kind="Rollout", name="x")
    with pytest.raises(NotFound, match="no kind Rollout is served in apps/v1"):
        kube.get_scale("shop", target)
    with pytest.raises(NotFound):
        kube.get_scale("shop", target)
    assert [r["path"] for r in api.requests] == ["/apis/apps/v1", "/apis/apps/v1"]


def test_a_group_version_that_is_not_served_is_not_found():
    kube, _ = make({("GET", "/apis/example.io/v1"): (404, status_body(404, "NotFound", "no"))})
    with pytest.raises(NotFound, match="no kind Thing is served in example.io/v1"):
        kube.get_scale("shop", TargetRef(api_version="example.io/v1", kind="Thing", name="x"))


def test_the_target_is_read_as_metadata():
    path = "/apis/apps/v1/namespaces/shop/deployments/web"
    kube, api = make({("GET", path): (200, {"metadata": {
        "uid": "u-1", "generation": 7, "resourceVersion": "55",
        "ownerReferences": [{"kind": "Other", "name": "o"}, "junk",
                            {"kind": "Rollout", "name": "r", "controller": True}]}})})
    assert kube.get_target("shop", DEPLOYMENT) == TargetObject(uid="u-1", generation=7, resource_version="55",
                                                               controller=("Rollout", "r"))
    assert api.last["path"] == path and api.last["headers"]["Accept"] == METADATA_OBJECT


def test_scale_and_target_objects_read_what_is_there():
    assert Scale.from_api({}) == Scale(replicas=0, resource_version="", uid="")
    assert Scale.from_api({"spec": {"replicas": None}, "metadata": {"resourceVersion": "3"}}).replicas == 0
    assert TargetObject.from_api({}) == TargetObject(uid="", generation=0, resource_version="", controller=None)
    assert TargetObject.from_api({"metadata": {"ownerReferences": [{"kind": "A", "name": "a",
                                                                   "controller": False}]}}).controller is None
    assert TargetObject.from_api({"metadata": {"ownerReferences": [{"controller": True}]}}).controller == ("", "")


def test_autoscalers_are_listed_with_their_targets():
    path = "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers"
    kube, api = make({("GET", path): (200, {"items": [
        {"metadata": {"name": "h1"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                                "name": "web"}}},
        {"metadata": {"name": "h2"}, "spec": {}},
    ]})})
    assert kube.autoscalers("shop") == [("h1", DEPLOYMENT), ("h2", TargetRef(api_version="", kind="", name=""))]
    assert api.last["method"] == "GET" and api.last["path"] == path
    kube, _ = make({("GET", path): (200, {})})
    assert kube.autoscalers("shop") == []


# -- the approver, and the events ------------------------------------------------------------
@pytest.mark.parametrize("user, groups", [
    ("alice", ["system:authenticated"]),
    ("system:serviceaccount:argocd:app", ["system:authenticated", "system:serviceaccounts",
                                          "system:serviceaccounts:argocd"]),
])
def test_the_approver_is_asked_about_the_verb_approve_on_that_proposal(user, groups):
    path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    kube, api = make({("POST", path): (201, {"status": {"allowed": True}})})
    assert kube.user_may_approve(user, "shop", "web-1") is True
    assert api.last["method"] == "POST" and api.last["path"] == path
    assert api.last["body"] == {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": {
            "group": "scalegate.io", "resource": "scalingproposals", "verb": "approve",
            "namespace": "shop", "name": "web-1"}}}


@pytest.mark.parametrize("answer", [{"status": {"allowed": False}}, {"status": {}}, {}])
def test_anything_but_allowed_is_not_allowed(answer):
    kube, _ = make({("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews"): (201, answer)})
    assert kube.user_may_approve("alice", "shop", "web-1") is False


def test_an_event_names_its_object_component_and_time(monkeypatch):
    kube, api = make()
    involved = {"apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingProposal", "name": "web-1",
                "namespace": "shop", "uid": "u-1"}
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    kube.emit_event(involved, "Normal", "Applied", "m" * 2000)
    after = dt.datetime.now(dt.timezone.utc)
    event = api.last["body"]
    assert (api.last["method"], api.last["path"]) == ("POST", "/api/v1/namespaces/shop/events")
    assert event["metadata"]["namespace"] == "shop" and event["metadata"]["name"].startswith("web-1.")
    assert len(event["metadata"]["name"]) == len("web-1.") + 12
    assert event["involvedObject"] == involved
    assert (event["type"], event["reason"], event["message"]) == ("Normal", "Applied", "m" * 1024)
    assert event["count"] == 1 and event["firstTimestamp"] == event["lastTimestamp"]
    stamp = dt.datetime.strptime(event["firstTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert before <= stamp <= after
    assert event["source"] == {"component": "scalegate-operator"}
    assert event["reportingComponent"] == event["reportingInstance"] == "scalegate-operator"


def test_the_server_is_the_clients_host():
    assert make()[0].server == "https://api.example:6443"
    assert kube_module.Kube(FakeApi()).component == "scalegate-operator"
