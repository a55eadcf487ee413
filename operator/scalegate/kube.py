"""The only module of the operator that talks to the API server.

Small, synchronous methods over the official client, each turning HTTP outcomes into
the few exceptions the reconciler reasons about. Called from worker threads.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from .model import GROUP, PROPOSAL_PLURAL, POLICY_LABEL, POLICY_PLURAL, VERSION, TargetRef, format_time, parse_time

REQUEST_TIMEOUT = (5, 20)  # connect, read (seconds)
MERGE_PATCH = "application/merge-patch+json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def api_client(kubeconfig: str | None) -> kubernetes.client.ApiClient:
    """A client from `kubeconfig`, else in-cluster config, else the default kubeconfig."""
    config = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)
    else:
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=config)
    config.connection_pool_maxsize = 64
    _throttle_credential_refresh(config)
    return kubernetes.client.ApiClient(config)


def _throttle_credential_refresh(config: kubernetes.client.Configuration, every_seconds: float = 10.0) -> None:
    """The config loaders re-apply the whole kubeconfig before every request (a few percent
    of the operator's CPU under load); credentials only need a look every few seconds. A
    token that expires in between costs one refused request, which is retried."""
    refresh = config.refresh_api_key_hook
    if refresh is None:
        return
    lock = threading.Lock()
    due = [0.0]

    def throttled(configuration) -> None:
        with lock:
            now = time.monotonic()
            if now < due[0]:
                return
            due[0] = now + every_seconds
            refresh(configuration)

    config.refresh_api_key_hook = throttled


class KubeError(Exception):
    """The API server could not answer now (unreachable, 5xx, timeout): try again later."""


class NotFound(Exception):
    pass


class Conflict(Exception):
    """The object changed since it was read (resourceVersion precondition failed)."""


class Forbidden(Exception):
    pass


class NoScaleSubresource(Exception):
    pass


@dataclass(frozen=True)
class Scale:
    replicas: int
    resource_version: str
    uid: str = ""

    @classmethod
    def from_api(cls, raw: dict) -> "Scale":
        meta = raw.get("metadata") or {}
        return cls(replicas=int((raw.get("spec") or {}).get("replicas") or 0),
                   resource_version=meta.get("resourceVersion", ""), uid=meta.get("uid", ""))


def _translate(err: ApiException, what: str) -> Exception:
    if err.status == 404:
        return NotFound(what)
    if err.status == 409:
        return Conflict(what)
    if err.status == 403:
        return Forbidden(f"{what}: {_message(err)}")
    if err.status == 422:
        return ValueError(f"{what}: {_message(err)}")
    return KubeError(f"{what}: HTTP {err.status} {_message(err)}")


def _message(err: ApiException) -> str:
    try:
        return json.loads(err.body).get("message", err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient, component: str = "scalegate-operator"):
        self.api = api_client
        self.component = component
        self._resources: dict[str, dict[str, dict]] = {}
        self._resources_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------
    def _raw(self, what: str, method: str, path: str, body: Any = None,
             content_type: str = "application/json", query: list[tuple[str, str]] | None = None,
             accept: str = "application/json") -> Any:
        """One API request with a JSON body, answered as plain JSON (no model classes:
        they cost more than the request on a busy operator)."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            request = self.api.param_serialize(method=method, resource_path=path, query_params=query or [],
                                               header_params=headers, body=body, auth_settings=["BearerToken"])
            response = self.api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
            data = response.read()
            if not 200 <= response.status <= 299:
                raise ApiException(status=response.status, reason=response.reason, body=data)
        except ApiException as err:
            raise _translate(err, what) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise KubeError(f"{what}: {err}") from err
        return json.loads(data) if data else {}

    @staticmethod
    def _custom_path(namespace: str | None, plural: str, name: str = "", sub: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}"
        if namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path

    # -- proposals and policies --------------------------------------------------------
    def get_proposal(self, namespace: str, name: str) -> dict | None:
        try:
            return self._raw(f"get proposal {namespace}/{name}", "GET",
                             self._custom_path(namespace, PROPOSAL_PLURAL, name))
        except NotFound:
            return None

    def list_policy_proposals(self, namespace: str, policy: str,
                              not_older_than: str | None = None) -> list[tuple[str, dt.datetime | None]]:
        """(name, creationTimestamp) of every proposal labelled for `policy`; with
        `not_older_than`, a list at least as recent as that resourceVersion."""
        # Metadata only: names and creation times are all that is needed, and a policy's
        # history of proposals, evidence and all, would cost both sides far more.
        query = [("labelSelector", f"{POLICY_LABEL}={policy}")]
        if not_older_than:
            # From the API server's cache, yet at least as new as the proposal being decided.
            query += [("resourceVersion", not_older_than), ("resourceVersionMatch", "NotOlderThan")]
        result = self._raw(f"list proposals of policy {namespace}/{policy}", "GET",
                           self._custom_path(namespace, PROPOSAL_PLURAL), query=query, accept=METADATA_LIST)
        return [(item["metadata"]["name"], parse_time(item["metadata"].get("creationTimestamp")))
                for item in result.get("items", [])]

    def iter_proposals(self, namespace: str | None = None, page_size: int = 500) -> Iterator[dict]:
        """Every proposal, fetched a page at a time so a sweep over thousands of old ones
        never holds them all in memory at once."""
        query = [("limit", str(page_size))]
        while True:
            result = self._raw("list proposals", "GET", self._custom_path(namespace, PROPOSAL_PLURAL), query=query)
            yield from result.get("items", [])
            token = (result.get("metadata") or {}).get("continue")
            if not token:
                return
            query = [("limit", str(page_size)), ("continue", token)]

    def delete_proposal(self, namespace: str, name: str, uid: str) -> None:
        try:
            self._raw(f"delete proposal {namespace}/{name}", "DELETE",
                      self._custom_path(namespace, PROPOSAL_PLURAL, name), body={"preconditions": {"uid": uid}})
        except (NotFound, Conflict):
            pass

    def label_proposal(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        self._raw(f"label proposal {namespace}/{name}", "PATCH", self._custom_path(namespace, PROPOSAL_PLURAL, name),
                  {"metadata": {"labels": labels}}, content_type=MERGE_PATCH)

    def get_policy(self, namespace: str, name: str) -> dict | None:
        try:
            return self._raw(f"get policy {namespace}/{name}", "GET", self._custom_path(namespace, POLICY_PLURAL, name))
        except NotFound:
            return None

    def list_policies(self, namespace: str | None = None) -> list[dict]:
        return self._raw("list policies", "GET", self._custom_path(namespace, POLICY_PLURAL)).get("items", [])

    def create_proposal(self, namespace: str, body: dict) -> dict:
        """Create a proposal; AlreadyExists (same name, i.e. same decision) is NotFound's
        opposite and reported as Conflict."""
        return self._raw(f"create proposal {namespace}/{body['metadata'].get('name')}", "POST",
                         self._custom_path(namespace, PROPOSAL_PLURAL), body)

    def whoami(self) -> str:
        """This client's user name, as the API server authenticated it (SelfSubjectReview)."""
        review = self._raw("review own identity", "POST",
                           "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                           {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        return review["status"]["userInfo"]["username"]

    def patch_proposal_status(self, namespace: str, name: str, status: dict,
                              resource_version: str | None = None) -> dict:
        """Merge-patch the proposal's status; with `resource_version`, only if unchanged."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self._raw(f"update status of proposal {namespace}/{name}", "PATCH",
                         self._custom_path(namespace, PROPOSAL_PLURAL, name, "status"), body,
                         content_type=MERGE_PATCH)

    def patch_policy_status(self, namespace: str, name: str, status: dict) -> dict:
        return self._raw(f"update status of policy {namespace}/{name}", "PATCH",
                         self._custom_path(namespace, POLICY_PLURAL, name, "status"), {"status": status},
                         content_type=MERGE_PATCH)

    # -- targets -----------------------------------------------------------------------
    def _resource(self, target: TargetRef) -> tuple[str, bool]:
        """(plural, has_scale) of the target's kind, from API discovery (cached)."""
        group_version = target.api_version
        with self._resources_lock:
            known = self._resources.get(group_version)
        if known is None:
            path = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
            try:
                listing = self._raw(f"discover {group_version}", "GET", path)
            except NotFound:
                listing = {"resources": []}
            known = {}
            names = {r["name"] for r in listing.get("resources", [])}
            for resource in listing.get("resources", []):
                if "/" not in resource["name"]:
                    known[resource["kind"]] = {"plural": resource["name"],
                                               "scale": f"{resource['name']}/scale" in names}
            with self._resources_lock:
                self._resources[group_version] = known
        entry = known.get(target.kind)
        if entry is None:
            with self._resources_lock:  # maybe a CRD installed since: look again next time
                self._resources.pop(group_version, None)
            raise NotFound(f"no kind {target.kind} is served in {group_version}")
        return entry["plural"], entry["scale"]

    def _scale_path(self, namespace: str, target: TargetRef) -> str:
        plural, has_scale = self._resource(target)
        if not has_scale:
            raise NoScaleSubresource(f"{target.kind} ({target.api_version}) has no scale subresource")
        prefix = f"/api/{target.api_version}" if "/" not in target.api_version else f"/apis/{target.api_version}"
        return f"{prefix}/namespaces/{namespace}/{plural}/{target.name}/scale"

    def get_scale(self, namespace: str, target: TargetRef) -> Scale:
        return Scale.from_api(self._raw(f"read scale of {target.describe()}", "GET",
                                        self._scale_path(namespace, target)))

    def update_scale(self, namespace: str, target: TargetRef, replicas: int, resource_version: str) -> Scale:
        """Write replicas through the scale subresource, only if the target is unchanged
        since `resource_version` was read (else Conflict)."""
        path = self._scale_path(namespace, target)
        body = {
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": target.name, "namespace": namespace, "resourceVersion": resource_version},
            "spec": {"replicas": replicas},
        }
        return Scale.from_api(self._raw(f"scale {target.describe()} to {replicas}", "PUT", path, body))

    def may_update_scale(self, namespace: str, target: TargetRef) -> bool:
        """Whether this client may write the target's scale (SelfSubjectAccessReview)."""
        plural, _ = self._resource(target)
        review = {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"group": target.group, "resource": plural, "subresource": "scale",
                                            "verb": "update", "namespace": namespace, "name": target.name}},
        }
        result = self._raw("review own access to the scale", "POST",
                           "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
        return bool((result.get("status") or {}).get("allowed"))

    def autoscalers(self, namespace: str) -> list[tuple[str, TargetRef]]:
        """(name, scaleTargetRef) of every HorizontalPodAutoscaler in the namespace."""
        raw = self._raw("list horizontalpodautoscalers", "GET",
                        f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers")
        found = []
        for item in raw.get("items", []):
            ref = (item.get("spec") or {}).get("scaleTargetRef") or {}
            found.append((item["metadata"]["name"],
                          TargetRef(api_version=ref.get("apiVersion") or "", kind=ref.get("kind") or "",
                                    name=ref.get("name") or "")))
        return found

    # -- authorization -----------------------------------------------------------------
    def user_may_approve(self, user: str, namespace: str, name: str) -> bool:
        """Ask the API server whether `user` holds the verb approve on this proposal.

        Only the user name is known from the annotation: group memberships cannot be
        verified from it, except the groups every ServiceAccount has."""
        groups = ["system:authenticated"]
        if user.startswith("system:serviceaccount:"):
            sa_namespace = user.split(":")[2]
            groups += ["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}"]
        review = {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": groups, "resourceAttributes": {
                "group": GROUP, "resource": PROPOSAL_PLURAL, "verb": "approve",
                "namespace": namespace, "name": name}},
        }
        result = self._raw("review the approver's access", "POST",
                           "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool((result.get("status") or {}).get("allowed"))

    # -- events ------------------------------------------------------------------------
    def emit_event(self, involved: dict, event_type: str, reason: str, message: str) -> None:
        """A Kubernetes Event on `involved` ({apiVersion, kind, name, namespace, uid})."""
        now = dt.datetime.now(dt.timezone.utc)
        namespace = involved["namespace"]
        event = {
            "metadata": {"name": f"{involved['name']}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
            "involvedObject": involved,
            "type": event_type, "reason": reason, "message": message[:1024],
            "firstTimestamp": format_time(now), "lastTimestamp": format_time(now), "count": 1,
            "source": {"component": self.component},
            "reportingComponent": self.component, "reportingInstance": self.component,
        }
        self._raw("post event", "POST", f"/api/v1/namespaces/{namespace}/events", event)
