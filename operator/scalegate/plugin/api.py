"""The plugin's only contact with the API server: a kubeconfig loaded the way kubectl
loads it, a handful of calls, and every failure turned into a one-line `PluginError`.

The server's own words are kept: a refusal (RBAC, the admission policy, not found) is shown
as kubectl shows it, ``Error from server (Reason): <message verbatim>``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from ..model import GROUP, PROPOSAL_KIND, PROPOSAL_PLURAL, POLICY_PLURAL, VERSION

#: (connect, read) seconds for each request: an unreachable cluster fails fast.
REQUEST_TIMEOUT = (5, 30)
DEFAULT_KUBECONFIG = Path("~/.kube/config")
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class PluginError(Exception):
    """Something the user has to see, in one line; the command exits non-zero."""


class ServerError(PluginError):
    """The API server answered with an error Status: shown as kubectl shows it."""

    def __init__(self, status: int, reason: str, message: str):
        self.status, self.reason, self.message = status, reason, message
        super().__init__(f"Error from server ({reason}): {message}")


class NotFound(ServerError):
    pass


class Unreachable(PluginError):
    pass


def server_error(err: ApiException) -> ServerError:
    """The Status the server sent, verbatim; HTTP reason phrases when the body is not one."""
    reason, message = err.reason or "Error", ""
    try:
        body = json.loads(err.body or "")
        if isinstance(body, dict):
            reason = body.get("reason") or reason
            message = body.get("message") or ""
    except (TypeError, ValueError):
        message = (err.body or "").strip() if isinstance(err.body, str) else ""
    if not message:
        message = f"HTTP {err.status} {err.reason}"
    cls = NotFound if err.status == 404 else ServerError
    return cls(err.status, reason, message.replace("\n", " "))


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
            raise PluginError(f"error: cannot read kubeconfig {path}: {err}") from err
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
            raise PluginError(f'error: context "{context}" does not exist')
        raise PluginError("error: no current context is set in the kubeconfig: use --context")
    return (chosen.get("context") or {}).get("namespace") or "default"


@dataclass
class Connection:
    api: "Api"
    namespace: str  # the default namespace: the context's, else "default"


def connect(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """Load credentials like kubectl: the kubeconfig (or in-cluster config inside a pod)."""
    paths = kubeconfig_paths(kubeconfig)
    config = kubernetes.client.Configuration()
    if kubeconfig and not _existing(paths):
        raise PluginError(f"error: stat {kubeconfig}: no such file or directory")
    if not _existing(paths) and os.environ.get("KUBERNETES_SERVICE_HOST") and not context:
        kubernetes.config.load_incluster_config(client_configuration=config)
        namespace = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.is_file() else "default"
    else:
        if not _existing(paths):
            raise PluginError("error: no kubeconfig found (looked at "
                              f"{paths}): set KUBECONFIG or use --kubeconfig")
        try:
            namespace = context_namespace(paths, context)  # first: says plainly if the context is missing
            kubernetes.config.load_kube_config(config_file=paths, context=context or current_context(paths),
                                               client_configuration=config, persist_config=False)
        except kubernetes.config.ConfigException as err:
            raise PluginError(f"error: invalid kubeconfig {paths}: {err}") from err
    config.retries = 0  # urllib3 would retry a refused connection; kubectl does not
    return Connection(api=Api(kubernetes.client.ApiClient(config), config.host), namespace=namespace)


class Api:
    """The calls the plugin makes. Tests of the commands replace this class, not HTTP."""

    def __init__(self, client: kubernetes.client.ApiClient, server: str):
        self.client = client
        self.server = server
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)
        self.authn = kubernetes.client.AuthenticationV1Api(client)

    def _call(self, fn, *args, **kwargs) -> Any:
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as err:
            if err.status == 0 or err.status is None:
                raise Unreachable(f"error: cannot reach the Kubernetes API server at {self.server}: "
                                  f"{err.reason}") from err
            raise server_error(err) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            cause = err
            if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
                cause = err.reason
            text = str(cause)
            if isinstance(cause, urllib3.exceptions.NewConnectionError):
                text = "connection refused" if "refused" in text.lower() else text.split(": ", 1)[-1]
            raise Unreachable(f"error: cannot reach the Kubernetes API server at {self.server}: {text} "
                              "(is the cluster running? check --kubeconfig / --context)") from err

    # -- proposals and policies --------------------------------------------------------
    def get_proposal(self, namespace: str, name: str) -> dict:
        return self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace,
                          PROPOSAL_PLURAL, name)

    def list_proposals(self, namespace: str | None, selector: str | None = None) -> list[dict]:
        kwargs = {"label_selector": selector} if selector else {}
        if namespace:
            result = self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                                PROPOSAL_PLURAL, **kwargs)
        else:
            result = self._call(self.custom.list_cluster_custom_object, GROUP, VERSION, PROPOSAL_PLURAL, **kwargs)
        return list(result.get("items") or [])

    def get_policy(self, namespace: str, name: str) -> dict:
        return self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace,
                          POLICY_PLURAL, name)

    def patch_annotations(self, namespace: str, name: str, annotations: dict[str, str]) -> dict:
        """One JSON merge patch: every annotation lands in the same request, or none does."""
        return self._call(self.custom.patch_namespaced_custom_object, GROUP, VERSION, namespace,
                          PROPOSAL_PLURAL, name, {"metadata": {"annotations": annotations}},
                          _content_type="application/merge-patch+json")

    # -- around them -------------------------------------------------------------------
    def events_for(self, namespace: str, uid: str) -> list[dict]:
        """Events about one object (by uid), oldest first, as plain dicts."""
        result = self._call(self.core.list_namespaced_event, namespace,
                            field_selector=f"involvedObject.uid={uid},involvedObject.kind={PROPOSAL_KIND}")
        return [self.client.sanitize_for_serialization(e) for e in result.items]

    def whoami(self) -> str:
        """The user name the API server sees for these credentials (SelfSubjectReview,
        as `kubectl auth whoami` asks): what the admission policy compares approved-by with."""
        review = self._call(self.authn.create_self_subject_review,
                            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        user = review.status.user_info.username if review.status and review.status.user_info else ""
        if not user:
            raise PluginError("error: the API server did not say who you are (SelfSubjectReview gave no user name)")
        return user
