"""scalegate's alerts (manifests/alerts/scalegate-rules.yaml) under `promtool test rules`:
every alert has a test file in tests/alerts/ with cases where it fires (labels and the
exact text a person reads) and where it stays quiet. Also: the PrometheusRule of the
kustomize component carries exactly the rules file's groups, every metric an alert reads is
one scalegate exports, and every alert says what to do.

Skipped only where promtool is missing (Debian's `prometheus` package ships it;
operator/bootstrap.sh installs it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from scalegate import metrics

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "alerts" / "scalegate-rules.yaml"
GENERATOR = REPO / "manifests" / "alerts" / "generate.py"
COMPONENT = REPO / "manifests" / "components" / "alerts"
PROMETHEUS_RULE = COMPONENT / "prometheusrule.yaml"
TESTS = REPO / "tests" / "alerts"
TEST_FILES = sorted(TESTS.glob("*.test.yaml"))
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt install prometheus)")


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=TESTS)


# -- promtool ---------------------------------------------------------------------------------
@needs_promtool
def test_the_rules_file_is_valid():
    run = promtool("check", "rules", str(RULES))
    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_rule_tests_pass(test_file: Path):
    run = promtool("test", "rules", test_file.name)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_is_tested_firing_and_quiet():
    firing: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for test_file in TEST_FILES:
        document = yaml.safe_load(test_file.read_text())
        assert document["rule_files"] == ["../../manifests/alerts/scalegate-rules.yaml"], test_file.name
        for test in document["tests"]:
            for case in test.get("alert_rule_test", []):
                counts = firing if case.get("exp_alerts") else quiet
                counts[case["alertname"]] = counts.get(case["alertname"], 0) + 1
    names = set(alerts())
    assert names - set(firing) == set(), "alerts without a case where they fire"
    assert names - set(quiet) == set(), "alerts without a case where they stay quiet"
    assert set(firing) | set(quiet) <= names, "tests of alerts that do not exist"


# -- one source of truth ----------------------------------------------------------------------
def _generator():
    spec = importlib.util.spec_from_file_location("scalegate_alerts_generate", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_prometheus_rule_is_generated_from_the_rules_file():
    expected = _generator().render(RULES.read_text())
    assert PROMETHEUS_RULE.read_text() == expected, (
        "manifests/components/alerts/prometheusrule.yaml differs from manifests/alerts/scalegate-rules.yaml: "
        "run `python3 manifests/alerts/generate.py`")
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_the_component_is_a_kustomize_component_with_the_rule():
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    assert "prometheusrule.yaml" in kustomization["resources"]
    for name in kustomization["resources"]:
        assert (COMPONENT / name).is_file(), name


def test_the_component_renders_with_scalegates_manifests(tmp_path: Path):
    from scalegate.dev import kubectl_path

    kubectl = kubectl_path()
    if not Path(kubectl).exists() and not shutil.which(kubectl):
        pytest.skip("kubectl is not available (built by `scalegate dev-cluster up`, or on PATH)")
    # kustomize takes relative paths: a kustomization of the user's, beside scalegate's.
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(REPO / "manifests", tmp_path)],
        "components": [os.path.relpath(COMPONENT, tmp_path)]}))
    run = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(run.stdout) if doc}
    assert {("PrometheusRule", "scalegate"), ("ServiceMonitor", "scalegate"),
            ("Deployment", "scalegate-operator")} <= kinds
    monitor = next(doc for doc in yaml.safe_load_all(run.stdout) if doc and doc["kind"] == "ServiceMonitor")
    # The metrics' own namespace label (the proposal's) must survive the scrape.
    assert all(endpoint["honorLabels"] for endpoint in monitor["spec"]["endpoints"])


# -- what the alerts read and say -------------------------------------------------------------
def exported_names() -> set[str]:
    """Every sample name scalegate's registry can export."""
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    names = set()
    for family in metrics.REGISTRY.collect():
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    return names


@pytest.mark.parametrize("alert", sorted(alerts()))
def test_alerts_read_only_metrics_scalegate_exports(alert: str):
    used = set(re.findall(r"\bscalegate_[a-z_]+\b", alerts()[alert]["expr"]))
    assert used, "an alert on no scalegate metric"
    assert used - exported_names() == set(), "metrics not defined in operator/scalegate/metrics.py"


@pytest.mark.parametrize("alert", sorted(alerts()))
def test_every_alert_says_what_to_do(alert: str):
    rule = alerts()[alert]
    assert rule["labels"]["severity"] in ("info", "warning", "critical")
    assert rule["annotations"]["summary"] and "\n" not in rule["annotations"]["summary"]
    description = rule["annotations"]["description"]
    assert "kubectl " in description, "the description names a command to run"


@pytest.mark.parametrize("alert", ["ScalegateProposalAwaitingApproval", "ScalegateProposalExpiringUnapproved",
                                   "ScalegatePlanBreached"])
def test_alerts_that_need_a_decision_say_how_to_decide(alert: str):
    description = alerts()[alert]["annotations"]["description"]
    assert "kubectl scalegate list -" in description and "kubectl scalegate approve --all -n" in description
