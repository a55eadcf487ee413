"""The control plane the other tests rely on is a real one: schemas, RBAC and admission
policies are enforced by kube-apiserver itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import kubernetes
import pytest
from harness import Cluster, wait_for

from scalegate.dev import KUBERNETES_VERSION, DevCluster
from scalegate.dev.cluster import _pid_is


def test_server_reports_the_pinned_version(cluster: Cluster):
    if os.environ.get("SCALEGATE_TEST_KUBECONFIG"):
        pytest.skip("an external cluster runs its own version")
    info = kubernetes.client.VersionApi(cluster.api_client()).get_code()
    assert info.git_version == KUBERNETES_VERSION


def test_schema_violation_is_refused_with_the_servers_message(cluster: Cluster, namespace: str):
    policy = {
        "apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingPolicy",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": -1, "maxReplicas": 3},
    }
    with pytest.raises(kubernetes.client.ApiException) as err:
        cluster.custom().create_namespaced_custom_object("scalegate.io", "v1alpha1", namespace,
                                                         "scalingpolicies", policy)
    assert err.value.status == 422
    assert "spec.minReplicas" in err.value.body and "greater than or equal to 0" in err.value.body


def test_user_without_rbac_is_forbidden(cluster: Cluster, namespace: str):
    with pytest.raises(kubernetes.client.ApiException) as err:
        cluster.custom(user="mallory").list_namespaced_custom_object(
            "scalegate.io", "v1alpha1", namespace, "scalingproposals")
    assert err.value.status == 403
    message = json.loads(err.value.body)["message"]
    assert 'User "mallory" cannot list resource "scalingproposals"' in message


def test_validating_admission_policy_is_enforced(cluster: Cluster, namespace: str):
    name = f"test-deny-{uuid.uuid4().hex[:6]}"
    policy = f"""
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: [v1]
        operations: [CREATE]
        resources: [configmaps]
  validations:
    - expression: "!has(object.data) || !('forbidden' in object.data)"
      message: "the key 'forbidden' is not allowed"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {namespace}}}
"""
    cluster.apply_yaml(policy)
    try:
        def denied():
            try:
                cluster.core().create_namespaced_config_map(
                    namespace, {"metadata": {"generateName": "c-"}, "data": {"forbidden": "x"}})
            except kubernetes.client.ApiException as err:
                return err.status == 422 and "the key 'forbidden' is not allowed" in err.body
            return False
        # Policies take effect once the API server has loaded them: poll, do not sleep.
        wait_for(denied, timeout=30, interval=0.5, message="the admission policy to deny")
        cluster.core().create_namespaced_config_map(namespace, {"metadata": {"name": "fine"}, "data": {"ok": "1"}})
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
        cluster.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")


def test_deployments_get_a_scale_subresource_and_garbage_collection_runs(cluster: Cluster, namespace: str):
    apps = cluster.apps()
    deployment = {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}}},
    }
    created = apps.create_namespaced_deployment(namespace, deployment)
    assert apps.read_namespaced_deployment_scale("web", namespace).spec.replicas == 2
    # kube-controller-manager runs: the Deployment gets a ReplicaSet owned by it.
    wait_for(lambda: apps.list_namespaced_replica_set(namespace).items, timeout=30,
             message="the deployment controller to create a ReplicaSet")
    cm = cluster.core().create_namespaced_config_map(namespace, {
        "metadata": {"name": "owned", "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": created.metadata.uid}]}})
    assert cm.metadata.name == "owned"
    apps.delete_namespaced_deployment("web", namespace)

    def collected():
        try:
            cluster.core().read_namespaced_config_map("owned", namespace)
        except kubernetes.client.ApiException as err:
            return err.status == 404
        return False
    wait_for(collected, timeout=60, interval=0.5, message="garbage collection of an owned object")


def test_dev_cluster_cli_up_is_idempotent_and_down_leaves_nothing(tmp_path):
    if os.environ.get("SCALEGATE_TEST_KUBECONFIG"):
        pytest.skip("uses the dev control plane")
    env = dict(os.environ, SCALEGATE_DEV_CLUSTER_DIR=str(tmp_path / "dc"))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "scalegate.cli", "dev-cluster", *args],
                              capture_output=True, text=True, env=env, timeout=300)

    first = cli("up")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"export KUBECONFIG={tmp_path / 'dc' / 'kubeconfig'}"
    processes = DevCluster(state_dir=tmp_path / "dc").read_state().processes
    pids = [p.pid for p in processes]
    assert len(pids) == 3

    second = cli("up")
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stderr
    assert [p.pid for p in DevCluster(state_dir=tmp_path / "dc").read_state().processes] == pids

    status = cli("status")
    assert status.returncode == 0 and '"ready": true' in status.stdout
    assert cli("env").stdout.strip() == first.stdout.strip()

    down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not (tmp_path / "dc").exists()
    for proc in processes:
        assert not _pid_is(proc.pid, proc.binary), f"{proc.name} (pid {proc.pid}) survived down"
    assert cli("status").returncode == 1


def test_dev_cluster_recovers_from_a_killed_run(tmp_path):
    if os.environ.get("SCALEGATE_TEST_KUBECONFIG"):
        pytest.skip("uses the dev control plane")
    dev = DevCluster(state_dir=tmp_path / "dc", log=lambda m: None)
    state = dev.up()
    try:
        # Simulate a crash: the API server dies, its state file stays behind.
        apiserver = next(p for p in state.processes if p.name == "kube-apiserver")
        os.kill(apiserver.pid, 9)
        wait_for(lambda: not _pid_is(apiserver.pid, apiserver.binary), timeout=10, message="the kill")
        messages = []
        recovered = DevCluster(state_dir=tmp_path / "dc", log=messages.append).up(timeout=120)
        assert any("not healthy" in m for m in messages)
        assert recovered.api_port and DevCluster(state_dir=tmp_path / "dc").status()["ready"]
    finally:
        DevCluster(state_dir=tmp_path / "dc", log=lambda m: None).down()


def test_port_in_use_is_a_clear_error(tmp_path, monkeypatch):
    import socket

    from scalegate.dev import DevClusterError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        monkeypatch.setenv("SCALEGATE_DEV_CLUSTER_PORT", str(sock.getsockname()[1]))
        with pytest.raises(DevClusterError, match="already in use"):
            DevCluster(state_dir=tmp_path / "dc", log=lambda m: None).up()
