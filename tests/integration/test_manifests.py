"""Every manifest scalegate ships is accepted by the real API server (server-side dry run),
and `kubectl apply -f crds/ && kubectl apply -k manifests/` installs everything."""

from __future__ import annotations

import json

import pytest
import yaml
from harness import CRDS, MANIFESTS, REPO, Cluster, pdb_versions, reapply_changes

from scalegate.model import manifest_yaml

OVERLAYS = sorted(p.parent for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))


def _namespaces_in(cluster: Cluster, target: str) -> list[str]:
    rendered = cluster.kubectl("kustomize", target).stdout
    return [doc["metadata"]["name"] for doc in yaml.safe_load_all(rendered)
            if doc and doc.get("kind") == "Namespace"]


def test_crds_pass_a_server_side_dry_run(cluster: Cluster):
    out = cluster.kubectl("apply", "--dry-run=server", "-f", str(CRDS)).stdout
    assert "scalingpolicies.scalegate.io" in out and "scalingproposals.scalegate.io" in out


@pytest.mark.parametrize("target", [MANIFESTS, *OVERLAYS], ids=lambda p: str(p.relative_to(REPO)))
def test_kustomizations_pass_a_server_side_dry_run(cluster: Cluster, target):
    # Namespaced objects can only be dry-run into namespaces that exist.
    for namespace in _namespaces_in(cluster, str(target)):
        cluster.kubectl("create", "namespace", namespace, check=False)
    proc = cluster.kubectl("apply", "--dry-run=server", "-k", str(target), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "(server dry run)" in proc.stdout


def test_install_is_complete_and_idempotent(cluster: Cluster):
    cluster.kubectl("apply", "-f", str(CRDS))
    first = cluster.kubectl("apply", "-k", str(MANIFESTS)).stdout
    for expected in ("namespace/scalegate", "serviceaccount/operator", "serviceaccount/forecaster",
                     "clusterrole.rbac.authorization.k8s.io/scalegate-approver",
                     "clusterrole.rbac.authorization.k8s.io/scalegate-viewer",
                     "validatingadmissionpolicy.admissionregistration.k8s.io/scalegate-approval",
                     "validatingadmissionpolicybinding.admissionregistration.k8s.io/scalegate-approval",
                     "deployment.apps/scalegate-operator", "deployment.apps/scalegate-forecaster"):
        assert expected in first, f"{expected} missing from:\n{first}"
    before = pdb_versions(cluster)
    second = cluster.kubectl("apply", "-k", str(MANIFESTS)).stdout
    assert not reapply_changes(cluster, second, before), second
    # Leave the cluster as other tests expect it: no admission policy unless they install it.
    cluster.kubectl("delete", "validatingadmissionpolicybinding", "scalegate-approval", "--ignore-not-found")
    cluster.kubectl("delete", "validatingadmissionpolicy", "scalegate-approval", "--ignore-not-found")


def test_deployments_meet_the_restricted_pod_security_standard(cluster: Cluster):
    # The scalegate namespace enforces `restricted`: a server-side dry run of the pods'
    # templates as Pods is refused if any field falls short.
    rendered = cluster.kubectl("kustomize", str(MANIFESTS)).stdout
    deployments = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") == "Deployment"]
    assert len(deployments) == 2
    cluster.kubectl("apply", "-f", str(MANIFESTS / "base" / "namespace.yaml"))
    for deployment in deployments:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": deployment["metadata"]["name"], "namespace": "scalegate"},
               "spec": deployment["spec"]["template"]["spec"]}
        proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod), check=False)
        assert proc.returncode == 0, proc.stderr
        assert "violate" not in proc.stderr.lower(), proc.stderr


def test_manifests_the_forecaster_writes_are_read_back_by_kubectl_as_written(cluster: Cluster):
    """The forecaster's YAML mode (GitOps) and `scalegate forecast --output yaml`: a policy may
    be named '1e5', and kubectl's reader takes such bare words for numbers (PyYAML does not
    quote them), which fails the apply."""
    words = {"a": "20e63", "b": "1e5", "c": "0o17", "d": "1_0", "e": "0x1F", "f": ".5", "g": "web", "h": "true"}
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "words", "labels": words}, "data": words}
    proc = cluster.kubectl("create", "--dry-run=client", "-o", "json", "-f", "-", input=manifest_yaml(body),
                           check=False)
    assert proc.returncode == 0, proc.stderr
    read = json.loads(proc.stdout)
    assert read["metadata"]["labels"] == words and read["data"] == words
