"""The forecaster end to end: a real Prometheus serving a recorded real load series, the
real API server, the forecaster running as scalegate:forecaster; and the GitOps path where
the proposal goes through git and a pipeline applies it approved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import Cluster, load_dir, wait_for
from operator_harness import Scenario
from prometheus_harness import PrometheusHarness, binaries_available

from scalegate import metrics
from scalegate.forecast import load_csv
from scalegate.forecast.prometheus import PrometheusSettings, PrometheusSource
from scalegate.forecaster import Forecaster
from scalegate.kube import Kube, api_client

SERIES = load_dir() / "nasa_http_jul95_5min.csv"

pytestmark = pytest.mark.skipif(not binaries_available(),
                                reason="Debian's prometheus package (prometheus, promtool) is not installed")


@pytest.fixture(scope="module")
def recorded_load():
    series = load_csv(SERIES)
    return series.iloc[: 14 * 288]  # two weeks of 5-minute points


@pytest.fixture(scope="module")
def prometheus(recorded_load):
    with PrometheusHarness(recorded_load, metric="http_requests", labels={"app": "web", "namespace": "shop"}) as prom:
        yield prom


def forecast_policy(query: str, capacity: float, **extra) -> dict:
    spec = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 60, "cooldownSeconds": 0, "proposalTTLSeconds": 1800,
            "forecast": {"query": query, "capacityPerReplica": capacity, "horizonSeconds": 3600,
                         "lookbackSeconds": 14 * 86400, "stepSeconds": 300, "confidence": 0.95}}
    spec.update(extra)
    return {"apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingPolicy", "metadata": {"name": "web"},
            "spec": spec}


def forecaster_for(kubeconfig: Path, prometheus_url: str, **kwargs) -> Forecaster:
    kube = Kube(api_client(str(kubeconfig)), component="scalegate-forecaster")
    source = PrometheusSource(PrometheusSettings(url=prometheus_url, timeout_seconds=10, retries=0))
    return Forecaster(kube=kube, source=source, **kwargs)


def test_forecaster_proposes_with_its_evidence_and_fails_closed_without_metrics(
        cluster: Cluster, namespace: str, component_kubeconfigs, prometheus, recorded_load):
    s = Scenario(cluster, namespace)
    s.deploy("web", 1)
    capacity = float(recorded_load.quantile(0.99)) / 20
    s.create("scalingpolicies", forecast_policy(prometheus.query, capacity))
    forecaster = forecaster_for(component_kubeconfigs["forecaster"], prometheus.url)

    result = forecaster.run_policy(s.get_policy("web"))
    assert result.outcome == "proposed", result.message
    name = result.proposal["metadata"]["name"]
    body = s.get_proposal(name)
    meta, spec = body["metadata"], body["spec"]
    assert meta["annotations"]["scalegate.io/proposed-by"] == "system:serviceaccount:scalegate:forecaster"
    assert meta["labels"]["scalegate.io/policy"] == "web"
    assert meta["ownerReferences"][0]["kind"] == "ScalingPolicy"
    assert spec["currentReplicas"] == 1 and 1 <= spec["replicas"] <= 60 and spec["replicas"] != 1
    evidence = spec["forecast"]
    assert evidence["query"] == prometheus.query
    assert evidence["window"]["points"] >= 13 * 288
    assert evidence["upperBound"] >= evidence["predictedPeak"] >= evidence["lowerBound"]
    assert evidence["backtestError"]["metric"] == "MASE" and evidence["backtestError"]["value"] > 0
    assert 0 < evidence["coverage"] <= 1 and evidence["confidence"] == 0.95
    assert spec["replicas"] * capacity >= evidence["upperBound"] or "capped" in spec["reason"] \
        or "limit" in spec["reason"].lower() or spec["replicas"] == 60
    policy_status = s.get_policy("web")["status"]
    ready = {c["type"]: c for c in policy_status["conditions"]}["ForecastReady"]
    assert (ready["status"], ready["reason"]) == ("True", "Proposed")
    assert policy_status["lastProposal"] == name

    # Prometheus gone: no proposal, ForecastReady=False with MetricsUnavailable, a failure metric.
    before = metrics.REGISTRY.get_sample_value("scalegate_forecast_failures_total", {
        "namespace": namespace, "policy": "web", "reason": "MetricsUnavailable"}) or 0
    prometheus.stop()
    try:
        forecaster._identity = None
        result = forecaster.run_policy(s.get_policy("web"))
        assert (result.outcome, result.reason) == ("failed", "MetricsUnavailable")
        proposals = s.custom.list_namespaced_custom_object("scalegate.io", "v1alpha1", namespace,
                                                           "scalingproposals")["items"]
        assert [p["metadata"]["name"] for p in proposals] == [name]
        ready = {c["type"]: c for c in s.get_policy("web")["status"]["conditions"]}["ForecastReady"]
        assert (ready["status"], ready["reason"]) == ("False", "MetricsUnavailable")
        after = metrics.REGISTRY.get_sample_value("scalegate_forecast_failures_total", {
            "namespace": namespace, "policy": "web", "reason": "MetricsUnavailable"})
        assert after == before + 1
    finally:
        prometheus.start()
    # And it recovers when Prometheus is back (the harness serves it on a new port).
    forecaster.source = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=10, retries=0))
    assert forecaster.run_policy(s.get_policy("web")).outcome in ("proposed", "unchanged")
    ready = {c["type"]: c for c in s.get_policy("web")["status"]["conditions"]}["ForecastReady"]
    assert ready["status"] == "True"


def test_query_returning_several_series_is_refused(cluster: Cluster, namespace: str, component_kubeconfigs,
                                                    prometheus, recorded_load):
    s = Scenario(cluster, namespace)
    s.deploy("web", 1)
    # Matches the series and `up`-less nothing else: use a regex that also matches a second
    # synthetic series made by arithmetic on the label set.
    query = f'{prometheus.query} or label_replace({prometheus.query}, "copy", "1", "", "")'
    s.create("scalingpolicies", forecast_policy(query, 10.0))
    result = forecaster_for(component_kubeconfigs["forecaster"], prometheus.url).run_policy(s.get_policy("web"))
    assert result.outcome == "failed" and "series" in result.message
    assert not s.custom.list_namespaced_custom_object("scalegate.io", "v1alpha1", namespace,
                                                      "scalingproposals")["items"]


def test_gitops_manifest_applied_approved_by_a_pipeline_is_applied(
        cluster: Cluster, namespace: str, component_kubeconfigs, operator, prometheus, recorded_load, tmp_path):
    s = Scenario(cluster, namespace)
    s.deploy("web", 1)
    capacity = float(recorded_load.quantile(0.99)) / 20
    s.create("scalingpolicies", forecast_policy(prometheus.query, capacity))

    # 1. The forecaster writes the proposal into a working copy of the GitOps repository.
    out = subprocess.run(
        [sys.executable, "-m", "scalegate.cli", "forecast", f"{namespace}/web", "--once", "--output", "yaml",
         "--output-dir", str(tmp_path / "repo"), "--prometheus-url", prometheus.url,
         "--kubeconfig", str(component_kubeconfigs["forecaster"])],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    files = list((tmp_path / "repo" / namespace).glob("*.yaml"))
    assert len(files) == 1
    manifest = yaml.safe_load(files[0].read_text())
    assert "scalegate.io/proposed-by" not in manifest["metadata"]["annotations"]
    assert manifest["metadata"]["annotations"]["scalegate.io/forecast-by"].endswith(":forecaster")
    assert not s.custom.list_namespaced_custom_object("scalegate.io", "v1alpha1", namespace,
                                                      "scalingproposals")["items"], "yaml mode must not create"

    # 2. The merge request approves it: the pipeline's identity and the MR as the reference.
    pipeline = f"system:serviceaccount:{namespace}:gitops"
    manifest["metadata"]["annotations"].update({
        "scalegate.io/approved": "true", "scalegate.io/approved-by": pipeline,
        "scalegate.io/approval-ref": "https://git.example/shop/-/merge_requests/42"})
    files[0].write_text(yaml.safe_dump(manifest, sort_keys=False))
    cluster.core().create_namespaced_service_account(namespace, {"metadata": {"name": "gitops"}})
    cluster.apply_yaml(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: gitops-approves, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: scalegate-approver}}
subjects: [{{kind: ServiceAccount, name: gitops, namespace: {namespace}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: gitops-creates-proposals, namespace: {namespace}}}
rules: [{{apiGroups: [scalegate.io], resources: [scalingproposals], verbs: [create, get, patch]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: gitops-creates-proposals, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: gitops-creates-proposals}}
subjects: [{{kind: ServiceAccount, name: gitops, namespace: {namespace}}}]
""")
    pipeline_kubeconfig = cluster.service_account_kubeconfig(namespace, "gitops", tmp_path)

    # 3. The pipeline applies the repository, through the admission policy; the operator
    #    applies the approved proposal.
    #    The cluster admin lists the pipeline as a GitOps approver (scalegate-gitops); the
    #    API server reads the list within a moment, so the first apply is retried until admitted.
    with cluster.scalegate_installed(), cluster.gitops_identities(pipeline):
        def apply_once() -> subprocess.CompletedProcess | None:
            run = subprocess.run([cluster.kubectl_binary, f"--kubeconfig={pipeline_kubeconfig}", "apply",
                                  "-f", str(files[0])], capture_output=True, text=True, timeout=60)
            return run if run.returncode == 0 or "scalegate-gitops" not in run.stderr else None
        applied = wait_for(apply_once, timeout=30, interval=0.5, message="scalegate-gitops to admit the pipeline")
    assert applied.returncode == 0, applied.stderr
    name = manifest["metadata"]["name"]
    status = s.wait_phase(name, "Applied", timeout=60)["status"]
    assert status["approvedBy"] == pipeline
    assert status["approvalRef"] == "https://git.example/shop/-/merge_requests/42"
    assert s.replicas("web") == manifest["spec"]["replicas"]
