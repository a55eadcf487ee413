"""The only module that talks to the API server: for the operator, the forecaster and
the kubectl plugin alike.

Credentials are loaded as kubectl loads them (`load_config`). Each call is a small
synchronous method answered as plain JSON, and every failure is one of a few exceptions,
all `KubeError`, that keep what the server said (HTTP status, its Status reason and
message, verbatim), so the reconciler can reason about them and a person can read them.
Called from worker threads.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import kubernetes
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from .model import GROUP, POLICY_PLURAL, PROPOSAL_KIND, PROPOSAL_PLURAL, VERSION, TargetRef, format_time, parse_time

REQUEST_TIMEOUT = (5, 20)  # connect, read (seconds): an unreachable cluster fails fast
MERGE_PATCH = "application/merge-patch+json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_OBJECT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
DEFAULT_KUBECONFIG = Path("~/.kube/config")
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


# -- errors: the one vocabulary ----------------------------------------------------------
class KubeError(Exception):
    """A request to the API server failed (or its credentials could not be loaded).

    The subclasses say how. `status` is the HTTP status (None when no answer came),
    `reason` and `message` the server's own Status reason and message, verbatim, when it
    sent one; `str()` is "<what was being done>: <message>"."""

    def __init__(self, what: str, message: str = "", status: int | None = None, reason: str = ""):
        super().__init__(f"{what}: {message}" if message else what)
        self.what = what
        self.message = message or what
        self.status = status
        self.reason = reason or type(self).__name__

    @property
    def kind(self) -> str:
        """The kind of failure, for metrics and logs: the class name (NotFound, ...)."""
        return type(self).__name__


class Unavailable(KubeError):
    """The API server could not answer now (unreachable, timed out, throttled, 5xx): try
    again later."""


class Unauthorized(KubeError):
    """The API server did not accept the credentials (HTTP 401: expired token, unknown
    certificate)."""


class Forbidden(KubeError):
    """Refused by RBAC or an admission policy (HTTP 403)."""


class NotFound(KubeError):
    """No such object, or no such kind served (HTTP 404)."""


class Conflict(KubeError):
    """The object changed since it was read (a resourceVersion or uid precondition
    failed), or one of that name already exists (HTTP 409)."""


class Invalid(KubeError, ValueError):
    """The API server refused the request's content (HTTP 400 or 422)."""


class NoScaleSubresource(KubeError):
    """The target's kind is served but has no scale subresource to scale it through."""


class ConfigError(KubeError):
    """No usable credentials: no kubeconfig, an unreadable one, or no such context."""


_BY_STATUS: dict[int, type[KubeError]] = {400: Invalid, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                          409: Conflict, 422: Invalid, 429: Unavailable}


def error_from_response(err: ApiException, what: str) -> KubeError:
    """The server's answer as one of the errors above, its Status kept verbatim (the
    HTTP reason phrase and body when the body is not a Status)."""
    status = err.status or 0
    reason, message = err.reason or "", ""
    body = err.body.decode(errors="replace") if isinstance(err.body, bytes) else err.body
    try:
        parsed = json.loads(body or "")
        if isinstance(parsed, dict):
            reason = parsed.get("reason") or reason
            message = parsed.get("message") or ""
    except (TypeError, ValueError):
        message = body.strip() if isinstance(body, str) else ""
    message = (message or f"HTTP {status} {err.reason or ''}".strip()).replace("\n", " ")
    cls = _BY_STATUS.get(status) or (Unavailable if status >= 500 else KubeError)
    return cls(what, message, status=status, reason=reason or cls.__name__)


def _unreachable(err: Exception, what: str, server: str) -> Unavailable:
    """A request that got no answer, in a few words ("connection refused", not urllib3's
    paragraph)."""
    cause = err
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        cause = err.reason
    text = str(cause)
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        text = "connection refused" if "refused" in text.lower() else text.split(": ", 1)[-1]
    elif isinstance(cause, ApiException):  # the client reports TLS failures as status 0
        text = str(cause.reason or cause)
    return Unavailable(what, f"cannot reach the Kubernetes API server at {server}: {text}")


# -- credentials -------------------------------------------------------------------------
def kubeconfig_paths(explicit: str | None) -> str:
    """The kubeconfig files to read, as kubectl picks them: --kubeconfig, else $KUBECONFIG
    (a list joined with the path separator, merged), else ~/.kube/config."""
    if explicit:
        return explicit
    env = os.environ.get("KUBECONFIG", "")
    if env.strip(os.pathsep):
        return env
    return str(DEFAULT_KUBECONFIG.expanduser())


def _existing(paths: str) -> list[str]:
    return [p for p in paths.split(os.pathsep) if p and Path(p).expanduser().is_file()]


def current_context(paths: str) -> str | None:
    """kubectl's rule for a list of kubeconfigs: the first file that sets current-context
    wins (the Python client's merger would let the last one win)."""
    for path in _existing(paths):
        try:
            config = yaml.safe_load(Path(path).expanduser().read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read kubeconfig {path}: {err}") from err
        if isinstance(config, dict) and config.get("current-context"):
            return str(config["current-context"])
    return None


def context_namespace(paths: str, context: str | None) -> str:
    """The namespace of `context` (default: the current context), else "default"."""
    contexts, _ = kubernetes.config.list_kube_config_contexts(config_file=paths)
    name = context or current_context(paths)
    chosen = next((c for c in contexts if c.get("name") == name), None)
    if chosen is None:
        if context:
            raise ConfigError(f'context "{context}" does not exist')
        raise ConfigError("no current context is set in the kubeconfig: use --context")
    return (chosen.get("context") or {}).get("namespace") or "default"


def load_config(kubeconfig: str | None = None,
                context: str | None = None) -> tuple[kubernetes.client.Configuration, str]:
    """(client configuration, default namespace), found as kubectl finds them: the
    `kubeconfig` given (which must exist), else $KUBECONFIG's files, else ~/.kube/config;
    with none of them, inside a Pod, its ServiceAccount. The namespace is the context's,
    in a Pod its own, else "default"."""
    paths = kubeconfig_paths(kubeconfig)
    config = kubernetes.client.Configuration()
    if kubeconfig and not _existing(paths):
        raise ConfigError(f"stat {kubeconfig}: no such file or directory")
    if not _existing(paths) and os.environ.get("KUBERNETES_SERVICE_HOST") and not context:
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
        except kubernetes.config.ConfigException as err:
            raise ConfigError(f"in-cluster credentials: {err}") from err
        namespace = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.is_file() else "default"
        return config, namespace
    if not _existing(paths):
        raise ConfigError(f"no kubeconfig found (looked at {paths}): set KUBECONFIG or use --kubeconfig")
    try:
        namespace = context_namespace(paths, context)  # first: says plainly if the context is missing
        kubernetes.config.load_kube_config(config_file=paths, context=context or current_context(paths),
                                           client_configuration=config, persist_config=False)
    except kubernetes.config.ConfigException as err:
        raise ConfigError(f"invalid kubeconfig {paths}: {err}") from err
    return config, namespace


def api_client(kubeconfig: str | None = None, context: str | None = None) -> kubernetes.client.ApiClient:
    """A client for a component (operator, forecaster) with the credentials `load_config` finds."""
    return _client(load_config(kubeconfig, context)[0])


def _client(config: kubernetes.client.Configuration, retries: int | None = None) -> kubernetes.client.ApiClient:
    config.connection_pool_maxsize = 64
    if retries is not None:
        config.retries = retries
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


@dataclass(frozen=True)
class Connection:
    """A person's connection, as kubectl makes it: the client, and the namespace commands
    default to (the context's)."""

    kube: "Kube"
    namespace: str


def connect(kubeconfig: str | None = None, context: str | None = None,
            component: str = "kubectl-scalegate") -> Connection:
    """Connect for a person, as kubectl does with --kubeconfig and --context: a refused
    connection is answered at once (no retries), since someone waits for it."""
    config, namespace = load_config(kubeconfig, context)
    return Connection(kube=Kube(_client(config, retries=0), component=component), namespace=namespace)


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


@dataclass(frozen=True)
class TargetObject:
    """What the operator reads of a target beside its scale (`Kube.get_target`)."""

    uid: str
    generation: int
    resource_version: str
    controller: tuple[str, str] | None = None  # (kind, name) of its ownerReference with controller: true

    @classmethod
    def from_api(cls, raw: dict) -> "TargetObject":
        meta = raw.get("metadata") or {}
        owner = next((o for o in meta.get("ownerReferences") or [] if isinstance(o, dict) and o.get("controller")),
                     None)
        return cls(uid=meta.get("uid", ""), generation=int(meta.get("generation") or 0),
                   resource_version=meta.get("resourceVersion", ""),
                   controller=(str(owner.get("kind") or ""), str(owner.get("name") or "")) if owner else None)


class Kube:
    """The calls scalegate makes, for every component. Tests of the callers replace this
    class (or its methods), not HTTP."""

    def __init__(self, api_client: kubernetes.client.ApiClient, component: str = "scalegate-operator"):
        self.api = api_client
        self.component = component
        self._resources: dict[str, dict[str, dict]] = {}
        self._resources_lock = threading.Lock()

    @property
    def server(self) -> str:
        """The API server's URL."""
        return str(self.api.configuration.host)

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
            if not err.status:  # no answer: the client reports TLS failures so
                raise _unreachable(err, what, self.server) from err
            raise error_from_response(err, what) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise _unreachable(err, what, self.server) from err
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
    def get_proposal(self, namespace: str, name: str, missing_ok: bool = True) -> dict | None:
        """The proposal; None if there is none, or with `missing_ok=False` the server's NotFound."""
        return self._get(f"get proposal {namespace}/{name}", self._custom_path(namespace, PROPOSAL_PLURAL, name),
                         missing_ok)

    def _get(self, what: str, path: str, missing_ok: bool) -> dict | None:
        try:
            return self._raw(what, "GET", path)
        except NotFound:
            if missing_ok:
                return None
            raise

    def list_policy_proposals(self, namespace: str, policy: str,
                              not_older_than: str | None = None) -> list[tuple[str, dt.datetime | None]]:
        """(name, creationTimestamp) of every proposal of `policy` (its spec.policyRef.name,
        which is immutable, not the label, which a person who may patch proposals could
        change); with `not_older_than`, a list at least as recent as that resourceVersion."""
        # Metadata only: names and creation times are all that is needed, and a policy's
        # history of proposals, evidence and all, would cost both sides far more. The CRD
        # declares spec.policyRef.name a selectable field, so the API server filters.
        query = [("fieldSelector", f"spec.policyRef.name={policy}")]
        if not_older_than:
            # From the API server's cache, yet at least as new as the proposal being decided.
            query += [("resourceVersion", not_older_than), ("resourceVersionMatch", "NotOlderThan")]
        result = self._raw(f"list proposals of policy {namespace}/{policy}", "GET",
                           self._custom_path(namespace, PROPOSAL_PLURAL), query=query, accept=METADATA_LIST)
        return [(item["metadata"]["name"], parse_time(item["metadata"].get("creationTimestamp")))
                for item in (result.get("items") or [])]

    def list_policy_proposal_metadata(self, namespace: str, policy: str,
                                      not_older_than: str | None = None) -> list[dict]:
        """The metadata (names, creation times, annotations) of every proposal of `policy`,
        as `list_policy_proposals` selects them: whether a newer one is approved is in the
        annotations, which is what stops an active plan."""
        query = [("fieldSelector", f"spec.policyRef.name={policy}")]
        if not_older_than:
            query += [("resourceVersion", not_older_than), ("resourceVersionMatch", "NotOlderThan")]
        result = self._raw(f"list proposals of policy {namespace}/{policy}", "GET",
                           self._custom_path(namespace, PROPOSAL_PLURAL), query=query, accept=METADATA_LIST)
        return [dict(item.get("metadata") or {}) for item in (result.get("items") or [])]

    def iter_proposals(self, namespace: str | None = None, page_size: int = 500,
                       selector: str | None = None, field_selector: str | None = None) -> Iterator[dict]:
        """Every proposal (in `namespace`, else in all; with a label `selector` or a
        `field_selector`, only those), fetched a page at a time so a sweep over thousands of
        old ones never holds them all in memory at once."""
        first = ([("limit", str(page_size))] + ([("labelSelector", selector)] if selector else [])
                 + ([("fieldSelector", field_selector)] if field_selector else []))
        query = first
        while True:
            result = self._raw("list proposals", "GET", self._custom_path(namespace, PROPOSAL_PLURAL), query=query)
            yield from (result.get("items") or [])
            token = (result.get("metadata") or {}).get("continue")
            if not token:
                return
            query = first + [("continue", token)]

    def delete_proposal(self, namespace: str, name: str, uid: str) -> None:
        try:
            self._raw(f"delete proposal {namespace}/{name}", "DELETE",
                      self._custom_path(namespace, PROPOSAL_PLURAL, name), body={"preconditions": {"uid": uid}})
        except (NotFound, Conflict):
            pass

    def label_proposal(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        self._raw(f"label proposal {namespace}/{name}", "PATCH", self._custom_path(namespace, PROPOSAL_PLURAL, name),
                  {"metadata": {"labels": labels}}, content_type=MERGE_PATCH)

    def annotate_proposal(self, namespace: str, name: str, annotations: dict[str, str]) -> dict:
        """One JSON merge patch: every annotation lands in the same request, or none does
        (the admission policy wants a decision and its author together)."""
        return self._raw(f"annotate proposal {namespace}/{name}", "PATCH",
                         self._custom_path(namespace, PROPOSAL_PLURAL, name),
                         {"metadata": {"annotations": annotations}}, content_type=MERGE_PATCH)

    def patch_proposal_annotations(self, namespace: str, name: str, annotations: dict[str, str | None],
                                   resource_version: str) -> dict:
        """Merge-patch annotations of the proposal (None removes one), only if it is unchanged
        since `resource_version` (else Conflict): the operator's records (records.py)."""
        return self._raw(f"record on proposal {namespace}/{name}", "PATCH",
                         self._custom_path(namespace, PROPOSAL_PLURAL, name),
                         {"metadata": {"annotations": annotations, "resourceVersion": resource_version}},
                         content_type=MERGE_PATCH)

    def get_policy(self, namespace: str, name: str, missing_ok: bool = True) -> dict | None:
        """The policy; None if there is none, or with `missing_ok=False` the server's NotFound."""
        return self._get(f"get policy {namespace}/{name}", self._custom_path(namespace, POLICY_PLURAL, name),
                         missing_ok)

    def list_policies(self, namespace: str | None = None, not_older_than: str | None = None,
                      target_name: str | None = None) -> list[dict]:
        """Every policy (in `namespace`, else in all); with `not_older_than`, a list at least
        as recent as that resourceVersion (from the API server's cache); with `target_name`,
        only the policies whose spec.targetRef.name is that (a selectable field of the CRD:
        the API server filters, so a namespace of thousands of policies is not sent)."""
        query = []
        if not_older_than:
            query = [("resourceVersion", not_older_than), ("resourceVersionMatch", "NotOlderThan")]
        if target_name:
            query.append(("fieldSelector", f"spec.targetRef.name={target_name}"))
        return self._raw("list policies", "GET", self._custom_path(namespace, POLICY_PLURAL),
                         query=query).get("items") or []

    def create_proposal(self, namespace: str, body: dict) -> dict:
        """Create a proposal; AlreadyExists (same name, i.e. same decision) is NotFound's
        opposite and reported as Conflict."""
        return self._raw(f"create proposal {namespace}/{body['metadata'].get('name')}", "POST",
                         self._custom_path(namespace, PROPOSAL_PLURAL), body)

    def whoami(self) -> str:
        """This client's user name, as the API server authenticated it (a SelfSubjectReview,
        as `kubectl auth whoami` asks): what the admission policy compares approved-by and
        proposed-by with."""
        what = "review own identity"
        review = self._raw(what, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                           {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        user = ((review.get("status") or {}).get("userInfo") or {}).get("username")
        if not user:
            raise KubeError(what, "the API server did not say who you are (SelfSubjectReview gave no user name)")
        return str(user)

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

    def _scalable_plural(self, target: TargetRef) -> str:
        """The plural of the target's kind; NoScaleSubresource when the kind has no scale."""
        plural, has_scale = self._resource(target)
        if not has_scale:
            raise NoScaleSubresource(f"{target.kind} ({target.api_version}) has no scale subresource")
        return plural

    def _scale_path(self, namespace: str, target: TargetRef) -> str:
        plural = self._scalable_plural(target)
        prefix = f"/api/{target.api_version}" if "/" not in target.api_version else f"/apis/{target.api_version}"
        return f"{prefix}/namespaces/{namespace}/{plural}/{target.name}/scale"

    def get_target(self, namespace: str, target: TargetRef) -> TargetObject:
        """The target object's metadata (not its scale): who controls it, and the generation
        that every change of its spec moves (a metadata-only GET). A kind with no scale
        subresource is NoScaleSubresource before anything is read: it can never be scaled,
        whether or not this client may read it (else a 403 would say "grant access")."""
        plural = self._scalable_plural(target)
        prefix = f"/api/{target.api_version}" if "/" not in target.api_version else f"/apis/{target.api_version}"
        return TargetObject.from_api(self._raw(f"read {target.describe()}", "GET",
                                               f"{prefix}/namespaces/{namespace}/{plural}/{target.name}",
                                               accept=METADATA_OBJECT))

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
        for item in (raw.get("items") or []):
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

    # -- leases (coordination.k8s.io/v1): leader election and shards, see leases.py -----
    @staticmethod
    def _lease_path(namespace: str, name: str = "") -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{path}/{name}" if name else path

    def get_lease(self, namespace: str, name: str) -> dict | None:
        """The Lease; None if there is none."""
        return self._get(f"get lease {namespace}/{name}", self._lease_path(namespace, name), True)

    def create_lease(self, namespace: str, name: str, spec: dict, labels: dict[str, str] | None = None) -> dict:
        """Create a Lease; Conflict (AlreadyExists) when another candidate created it first."""
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if labels:
            metadata["labels"] = labels
        return self._raw(f"create lease {namespace}/{name}", "POST", self._lease_path(namespace),
                         {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec})

    def replace_lease(self, namespace: str, name: str, spec: dict, resource_version: str,
                      metadata: dict | None = None) -> dict:
        """Replace the Lease's spec (a PUT) only if it is unchanged since `resource_version`
        (else Conflict): two candidates that read the same record cannot both win. The
        rest of `metadata` (labels, annotations of the object read) is kept as given."""
        if not resource_version:  # a PUT without one would overwrite whatever is there
            raise ValueError(f"replacing lease {namespace}/{name} needs the resourceVersion it was read at")
        meta = dict(metadata or {}, name=name, namespace=namespace, resourceVersion=resource_version)
        return self._raw(f"update lease {namespace}/{name}", "PUT", self._lease_path(namespace, name),
                         {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec})

    # -- events ------------------------------------------------------------------------
    def events_about(self, namespace: str, uid: str, kind: str = PROPOSAL_KIND) -> list[dict]:
        """The Events about one object (by uid)."""
        result = self._raw(f"list events of {kind} {uid}", "GET", f"/api/v1/namespaces/{namespace}/events",
                           query=[("fieldSelector", f"involvedObject.uid={uid},involvedObject.kind={kind}")])
        return list(result.get("items") or [])

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
