"""`kubectl scalegate` without a cluster: text, numbers, the plot, flags and kubeconfig
handling, and the commands against a fake of the plugin's own API wrapper."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from scalegate import kube
from scalegate.forecast.prometheus import PrometheusSettings, PrometheusSource
from scalegate.model import (
    APPROVAL_REF,
    APPROVED,
    APPROVED_BY,
    DECISION_REASON,
    PROPOSED_BY,
    REJECTED,
    REJECTED_BY,
    Proposal,
)
from scalegate.plugin import cli as kubectl_plugin
from scalegate.plugin import explain, render

NOW = dt.datetime(2026, 11, 26, 21, 0, tzinfo=dt.timezone.utc)


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def proposal(name: str = "web-1", *, namespace: str = "shop", current: int = 4, replicas: int = 9,
             created: dt.datetime = NOW - dt.timedelta(minutes=5), annotations: dict | None = None,
             status: dict | None = None, forecast: dict | None = None, uid: str | None = None) -> dict:
    ann = {PROPOSED_BY: "system:serviceaccount:scalegate:forecaster", **(annotations or {})}
    return {
        "apiVersion": "scalegate.io/v1alpha1", "kind": "ScalingProposal",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}",
                     "creationTimestamp": stamp(created), "annotations": ann},
        "spec": {"policyRef": {"name": "web"},
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "currentReplicas": current, "replicas": replicas,
                 "validUntil": stamp(NOW + dt.timedelta(minutes=42)),
                 "reason": "peak of 410 req/s (95% upper bound) expected at 21:10; 9 x 50 req/s covers it",
                 "forecast": forecast if forecast is not None else {
                     "model": "holt-winters(additive, seasonal=288)", "query": "sum(rate(x[5m]))",
                     "window": {"start": stamp(NOW - dt.timedelta(days=2)), "end": stamp(NOW - dt.timedelta(minutes=6)),
                                "points": 577},
                     "horizonSeconds": 3600, "resolutionSeconds": 300, "predictedPeak": 380.0,
                     "peakTime": stamp(NOW + dt.timedelta(minutes=10)), "upperBound": 410.0, "lowerBound": 350.0,
                     "confidence": 0.95, "capacityPerReplica": 50, "coverage": 0.94,
                     "backtestError": {"metric": "MASE", "value": 0.61}}},
        "status": status or {},
    }


def policy(**spec) -> dict:
    base = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 20, "maxStepUp": 5, "maxStepDown": 2, "cooldownSeconds": 600}
    return {"metadata": {"name": "web", "namespace": "shop"}, "spec": {**base, **spec}}


# -- small parts ---------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (192, "3m12s"),
    (599, "9m59s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (5 * 3600 + 120, "5h2m"),
    (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"), (3 * 86400 + 4 * 3600, "3d4h"),
    (8 * 86400, "8d"), (400 * 86400, "400d"), (800 * 86400, "2y70d"), (3650 * 86400, "10y"),
])
def test_human_duration_matches_kubectl(seconds, text):
    assert render.human_duration(seconds) == text


def test_table_aligns_columns_and_marks_missing_cells():
    text = render.table(["NAME", "PHASE"], [["a-long-name", None], ["b", "Applied"]])
    assert text.splitlines() == ["NAME          PHASE", "a-long-name   <none>", "b             Applied"]


@pytest.mark.parametrize("value, text", [(410.0, "410"), (0.61, "0.61"), (12345.678, "12345.7"),
                                         (None, "<none>"), (float("nan"), "nan"), (1 / 3, "0.3333")])
def test_number(value, text):
    assert render.number(value) == text


def test_decided_by_prefers_the_operators_verified_record():
    assert render.decided_by(proposal()) == ("", "")
    assert render.decided_by(proposal(annotations={APPROVED: "true", APPROVED_BY: "alice"})) == ("approved", "alice")
    assert render.decided_by(proposal(annotations={REJECTED: "true", REJECTED_BY: "bob"})) == ("rejected", "bob")
    assert render.decided_by(proposal(annotations={APPROVED: "true", APPROVED_BY: "alice"},
                                      status={"approvedBy": "alice@corp"})) == ("approved", "alice@corp")


@pytest.mark.parametrize("value", ["true", " True ", "TRUE", "True", "true ", "yes", "1", ""])
@pytest.mark.parametrize("verdict", ["approved", "rejected"])
def test_plugin_reads_a_decision_as_the_operator_does(verdict, value):
    """Odd values included: `kubectl scalegate list/show` never shows a proposal as decided
    that the operator does not act on as decided, nor the other way round."""
    key, by = (APPROVED, APPROVED_BY) if verdict == "approved" else (REJECTED, REJECTED_BY)
    body = proposal(annotations={key: value, by: "alice"})
    operator_sees = getattr(Proposal.parse(body).decision, verdict)
    assert (render.decided_by(body) == (verdict, "alice")) == operator_sees
    assert (render.decided_by(body) == ("", "")) == (not operator_sees)
    assert operator_sees == (value == "true")  # the contract's value, as the admission policy accepts it
    if verdict == "approved":
        assert (render.proposal_row(body, NOW)[5] == "alice") == operator_sees


# -- list ------------------------------------------------------------------------------------
def test_proposal_table_sorted_with_namespace_column_and_wide():
    items = [proposal("web-2", namespace="b", replicas=12, status={"phase": "Applied", "approvedBy": "alice"}),
             proposal("web-1", namespace="a", created=NOW - dt.timedelta(hours=5, minutes=2))]
    lines = render.proposal_table(items, NOW, all_namespaces=True).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "TARGET", "CURRENT", "PROPOSED", "PHASE", "APPROVED-BY", "AGE"]
    assert lines[1].split() == ["a", "web-1", "Deployment/web", "4", "9", "<none>", "<none>", "5h2m"]
    assert lines[2].split() == ["b", "web-2", "Deployment/web", "4", "12", "Applied", "alice", "5m"]
    wide = render.proposal_table(items[:1], NOW, wide=True).splitlines()
    assert wide[0].split()[-4:] == ["POLICY", "VALID-UNTIL", "PROPOSED-BY", "REASON"]
    assert "system:serviceaccount:scalegate:forecaster" in wide[1]


def test_rejected_proposals_show_no_approver():
    row = render.proposal_row(proposal(annotations={REJECTED: "true", REJECTED_BY: "bob"}), NOW)
    assert row[5] is None


# -- show ------------------------------------------------------------------------------------
def test_bounds_check_mirrors_the_operators_rules():
    spec = policy()["spec"]
    assert render.bounds_check(proposal(), spec) == [("2 <= 9 replicas <= 20", True),
                                                     ("step +5 <= maxStepUp 5", True)]
    assert render.bounds_check(proposal(replicas=25), spec) == [("2 <= 25 replicas <= 20", False),
                                                                ("step +21 <= maxStepUp 5", False)]
    assert render.bounds_check(proposal(current=9, replicas=6), spec) == [
        ("2 <= 6 replicas <= 20", True), ("step -3 within maxStepDown 2", False)]
    assert render.bounds_check(proposal(), {"minReplicas": 1, "maxReplicas": 10}) == [("1 <= 9 replicas <= 10", True)]


def test_show_lists_the_evidence_in_order():
    events = [{"type": "Normal", "reason": "Proposed", "message": "4 -> 9", "source": {"component": "forecaster"},
               "lastTimestamp": stamp(NOW - dt.timedelta(minutes=4))}]
    history = [proposal("web-0", created=NOW - dt.timedelta(days=1), replicas=6,
                        status={"phase": "Applied", "approvedBy": "carol"})]
    text = render.show(proposal(annotations={APPROVED: "true", APPROVED_BY: "alice", DECISION_REASON: "go",
                                             APPROVAL_REF: "https://mr/1"},
                                status={"phase": "Approved", "conditions": [
                                    {"type": "Approved", "status": "True", "reason": "Approved",
                                     "message": "approved by alice", "lastTransitionTime": stamp(NOW)}]}),
                       NOW, policy=policy(), events=events, history=history)
    order = ["Name:", "Change:       4 -> 9 replicas (+5)", "Valid until:  ", "(in 42m)",
             "Decision:     approved by alice: go (ref https://mr/1)", "Forecast:",
             "Interval:    350 - 410 (95% interval)",
             "Coverage:    94%", "Bounds (ScalingPolicy web):", "Max step:    up 5, down 2", "Cooldown:    10m",
             "ok  2 <= 9 replicas <= 20", "Status:", "Phase:       Approved", "Conditions:", "Approved   True",
             "Events:", "forecaster", "History (other proposals for Deployment/web):", "web-0", "approved carol"]
    position = 0
    for part in order:  # each part found after the one before it
        found = text.find(part, position)
        assert found >= 0, f"{part!r} missing after position {position} in:\n{text}"
        position = found + len(part)


def test_show_degrades_to_notes_when_context_is_not_readable():
    text = render.show(proposal(forecast={}), NOW, policy=None, policy_error="policy not readable: forbidden",
                       events_error="events not readable: forbidden", history=[])
    assert "  <policy not readable: forbidden>" in text
    assert "  <events not readable: forbidden>" in text
    assert "Decision:     none yet: kubectl scalegate approve|reject web-1" in text
    assert "Model:       <none>" in text


def test_show_warns_when_the_policy_targets_something_else():
    other = policy(targetRef={"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"})
    assert "! the policy targets StatefulSet/db, not this proposal's target" in render.show(proposal(), NOW,
                                                                                             policy=other)


def test_same_target_ignores_the_version():
    a, b = proposal(), proposal("x")
    b["spec"]["targetRef"]["apiVersion"] = "apps/v2"
    assert render.same_target(a, b)
    b["spec"]["targetRef"]["name"] = "other"
    assert not render.same_target(a, b)


# -- explain: numbers ------------------------------------------------------------------------
def evidence(forecast: dict | None = None):
    return explain.ExplainedProposal.of(proposal(forecast=forecast)).evidence


def test_evidence_sizes_for_the_upper_bound():
    ev = evidence()
    assert (ev.sized_for, ev.capacity_per_replica, ev.needed) == (410.0, 50.0, 9)
    exact = evidence({"upperBound": 400.0, "capacityPerReplica": 50})
    assert exact.needed == 8  # exactly eight replicas' worth: no ninth for rounding noise
    peak_only = evidence({"predictedPeak": 101, "capacityPerReplica": 50})
    assert peak_only.sized_for == 101 and peak_only.needed == 3
    assert evidence({}).needed is None


def test_evidence_is_lenient_about_missing_or_odd_fields():
    view = explain.ExplainedProposal.of({"metadata": {}, "spec": {"forecast": {"predictedPeak": "lots", "window": {
        "start": "yesterday"}, "horizonSeconds": True}}})
    ev = view.evidence
    assert ev.predicted_peak is None and ev.window_start is None and ev.horizon_seconds is None
    assert view.target == "?/?"


def test_history_range_covers_the_window_and_what_happened_since():
    view = explain.ExplainedProposal.of(proposal())
    start, end, step = view.history_range(NOW)
    assert start == NOW - dt.timedelta(days=2) and step == 300
    assert end == NOW  # the horizon has not ended yet: up to now
    later = NOW + dt.timedelta(hours=5)
    assert view.history_range(later)[1] == view.evidence.horizon_end


def test_history_range_step_from_points_and_capped_at_prometheus_limit():
    forecast = proposal()["spec"]["forecast"]
    del forecast["resolutionSeconds"]
    view = explain.ExplainedProposal.of(proposal(forecast=forecast))
    ev = view.evidence
    assert view.history_range(NOW)[2] == int((ev.window_end - ev.window_start).total_seconds() / 576)
    forecast = {**forecast, "resolutionSeconds": 1,
                "window": {"start": stamp(NOW - dt.timedelta(days=30)), "end": stamp(NOW)}}
    start, end, step = explain.ExplainedProposal.of(proposal(forecast=forecast)).history_range(NOW)
    assert (end - start).total_seconds() / step <= explain.MAX_POINTS
    with pytest.raises(explain.HistoryUnavailable, match="no forecast window"):
        explain.ExplainedProposal.of(proposal(forecast={})).history_range(NOW)


def test_history_sums_series_and_drops_non_finite_samples():
    history = explain.history_of([
        {"metric": {"pod": "a"}, "values": [[100, "1.5"], [400, "2"], [700, "NaN"]]},
        {"metric": {"pod": "b"}, "values": [[100, "1"], [400, "+Inf"]]}])
    assert history.values == [2.5, 2.0] and history.series == 2
    assert history.times[0] == dt.datetime.fromtimestamp(100, dt.timezone.utc)
    with pytest.raises(explain.HistoryUnavailable, match="no samples"):
        explain.history_of([])


def test_fetch_history_reads_through_the_forecasters_client(mocker):
    client = mocker.Mock(name="PrometheusConnect")
    client.custom_query_range.return_value = [{"metric": {}, "values": [[100, "3"]]}]
    source = PrometheusSource(PrometheusSettings("http://prom:9090", timeout_seconds=4), client=client)
    history = explain.fetch_history(source, "up", NOW - dt.timedelta(hours=1), NOW, 60)
    assert history.values == [3.0]
    call = client.custom_query_range.call_args
    assert (call.args[0], call.kwargs["step"], call.kwargs["end_time"]) == ("up", "60", NOW)
    assert call.kwargs["params"] == {"timeout": "4"}


def test_fetch_history_from_nowhere_is_a_clear_note():
    source = PrometheusSource(PrometheusSettings("http://127.0.0.1:9", timeout_seconds=2, retries=0))
    with pytest.raises(explain.HistoryUnavailable, match="Prometheus at http://127.0.0.1:9 is unreachable"):
        explain.fetch_history(source, "up", NOW - dt.timedelta(hours=1), NOW, 60)


def wave(start: dt.datetime, end: dt.datetime, step: int = 300) -> explain.History:
    times, t = [], start
    while t <= end:
        times.append(t)
        t += dt.timedelta(seconds=step)
    values = [220 + 150 * math.sin(2 * math.pi * (x.timestamp() % 86400) / 86400) for x in times]
    return explain.History(times=times, values=values)


def test_explain_text_walks_from_forecast_to_sizing_to_bounds_to_history():
    body = proposal()
    history = wave(NOW - dt.timedelta(days=2), NOW)
    text = explain.explain_text(body, policy(), history, NOW)
    for part in ["shop/web-1: Deployment/web 4 -> 9 replicas", "fitted on 577 points",
                 "peak over the next 60m: 380 predicted at 2026-11-26 21:10 UTC",
                 "95% prediction interval: 350 .. 410", "MASE 0.61 (below 1 beats a seasonal-naive forecast)",
                 "the upper bound held 94% of the time in replay",
                 "410 (upper bound) / 50 per replica -> 9 replicas needed",
                 "proposed 9 x 50 = 450 (+9.8% vs the upper bound)", "now 4 x 50 = 200, covers 49% of the upper bound",
                 "ok  2 <= 9 replicas <= 20", "samples: last", "load exceeded today's capacity (200)",
                 "since the forecast: actual peak"]:
        assert part in text, f"{part!r} missing from:\n{text}"


def test_explain_text_says_when_the_proposal_differs_or_is_out_of_bounds():
    text = explain.explain_text(proposal(replicas=25), policy(suspend=True), None, NOW,
                                history_error="cannot read Prometheus")
    assert "the proposal differs from the 9 the sizing gives" in text
    assert "OUT 2 <= 25 replicas <= 20" in text
    assert "out of bounds: the operator rejects it (OutOfBounds), it never clamps" in text
    assert "the policy is suspended" in text
    assert "  <cannot read Prometheus>" in text
    assert "<policy not readable: nope>" in explain.explain_text(proposal(), None, None, NOW,
                                                                 policy_error="policy not readable: nope")


@pytest.mark.parametrize("with_history", [True, False])
def test_plot_writes_a_png(tmp_path: Path, with_history: bool):
    path = tmp_path / "plot.png"
    history = wave(NOW - dt.timedelta(days=2), NOW) if with_history else None
    explain.plot(str(path), proposal(), policy(), history, NOW)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == ((1500, 580) if with_history else (1250, 550))


def test_plot_copes_with_a_proposal_without_evidence(tmp_path: Path):
    explain.plot(str(tmp_path / "bare.png"), proposal(forecast={}), None, None, NOW)
    assert (tmp_path / "bare.png").stat().st_size > 5_000


# -- kubeconfig ------------------------------------------------------------------------------
def write_config(path: Path, contexts: list[tuple[str, str | None]], current: str) -> Path:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": current,
              "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
              "users": [{"name": "u", "user": {"token": "t"}}],
              "contexts": [{"name": name, "context": {"cluster": "c", "user": "u",
                                                      **({"namespace": ns} if ns else {})}}
                           for name, ns in contexts]}
    path.write_text(yaml.safe_dump(config))
    return path


def test_kubeconfig_paths_follow_kubectl(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("KUBECONFIG", "/a:/b")
    assert kube.kubeconfig_paths("/explicit") == "/explicit"
    assert kube.kubeconfig_paths(None) == "/a:/b"
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kube.kubeconfig_paths(None) == str(tmp_path / ".kube" / "config")


def test_namespace_comes_from_the_context(tmp_path: Path):
    path = write_config(tmp_path / "config", [("dev", "shop"), ("prod", None)], current="dev")
    assert kube.context_namespace(str(path), None) == "shop"
    assert kube.context_namespace(str(path), "prod") == "default"
    with pytest.raises(kube.ConfigError, match='context "nope" does not exist'):
        kube.context_namespace(str(path), "nope")


def test_kubeconfig_list_in_the_environment_is_merged(monkeypatch, tmp_path: Path):
    first = write_config(tmp_path / "one", [("dev", "shop")], current="dev")
    second = write_config(tmp_path / "two", [("other", "ops")], current="other")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    conn = kube.connect(None, "other")
    assert conn.namespace == "ops" and conn.kube.server == "https://127.0.0.1:6443"
    assert kube.connect(None, None).namespace == "shop"  # the first file's current-context wins
    assert conn.kube.api.configuration.retries == 0  # a person waits: no retries of a refused connection


def test_connect_errors_are_one_line(monkeypatch, tmp_path: Path):
    with pytest.raises(kube.ConfigError) as err:
        kube.connect(str(tmp_path / "absent"), None)
    assert kubectl_plugin.error_line(err.value) == f"error: stat {tmp_path}/absent: no such file or directory"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kube.ConfigError, match="no kubeconfig found"):
        kube.connect(None, None)


def test_server_errors_keep_the_servers_words():
    err = ApiException(status=403, reason="Forbidden")
    err.body = json.dumps({"kind": "Status", "reason": "Forbidden", "message": 'denied request: set it, alice',
                           "code": 403})
    converted = kube.error_from_response(err, "annotate proposal shop/web-1")
    assert isinstance(converted, kube.Forbidden) and converted.status == 403
    assert str(converted) == "annotate proposal shop/web-1: denied request: set it, alice"  # for logs
    assert kubectl_plugin.error_line(converted) == "Error from server (Forbidden): denied request: set it, alice"
    missing = ApiException(status=404, reason="Not Found")
    missing.body = json.dumps({"reason": "NotFound", "message": 'scalingproposals.scalegate.io "x" not found'})
    assert isinstance(kube.error_from_response(missing, "get"), kube.NotFound)
    garbled = ApiException(status=502, reason="Bad Gateway")
    garbled.body = b"<html>proxy error</html>"
    converted = kube.error_from_response(garbled, "list proposals")
    assert isinstance(converted, kube.Unavailable)
    assert kubectl_plugin.error_line(converted) == "Error from server (Bad Gateway): <html>proxy error</html>"
    assert isinstance(kube.error_from_response(ApiException(status=422, reason="Unprocessable Entity"), "x"),
                      kube.Invalid)
    assert type(kube.error_from_response(ApiException(status=410, reason="Gone"), "x")) is kube.KubeError


def test_an_unreachable_cluster_is_one_line_with_a_hint(tmp_path: Path):
    import socket
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = yaml.safe_load(write_config(tmp_path / "config", [("dev", "shop")], current="dev").read_text())
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    (tmp_path / "config").write_text(yaml.safe_dump(config))
    with pytest.raises(kube.Unavailable) as err:
        kube.connect(str(tmp_path / "config"), None).kube.whoami()
    assert kubectl_plugin.error_line(err.value) == (
        f"error: cannot reach the Kubernetes API server at http://127.0.0.1:{port}: connection refused "
        "(is the cluster running? check --kubeconfig / --context)")


# -- the commands, against a fake of our own API wrapper -------------------------------------
def refusal(cls: type[kube.KubeError], reason: str, message: str, status: int) -> kube.KubeError:
    return cls("a request", message, status=status, reason=reason)


class FakeKube:
    """Stands in for scalegate.kube.Kube, the methods the plugin calls: objects in a dict,
    refusals on request."""

    def __init__(self, objects: list[dict], user: str = "alice", refuse_patch: kube.KubeError | None = None):
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        self.user = user
        self.refuse_patch = refuse_patch
        self.patches: list[tuple[str, str, dict]] = []

    def get_proposal(self, namespace, name, missing_ok=True):
        assert not missing_ok  # the plugin shows the server's NotFound
        try:
            return self.objects[(namespace, name)]
        except KeyError:
            raise refusal(kube.NotFound, "NotFound", f'scalingproposals.scalegate.io "{name}" not found',
                          404) from None

    def iter_proposals(self, namespace=None, page_size=500, selector=None):
        return iter([o for (ns, _), o in self.objects.items() if namespace in (None, ns)])

    def get_policy(self, namespace, name, missing_ok=True):
        raise refusal(kube.Forbidden, "Forbidden", "no policies for you", 403)

    def events_about(self, namespace, uid, kind="ScalingProposal"):
        return []

    def whoami(self):
        return self.user

    def annotate_proposal(self, namespace, name, annotations):
        if self.refuse_patch:
            raise self.refuse_patch
        self.patches.append((namespace, name, annotations))
        self.objects[(namespace, name)]["metadata"]["annotations"].update(annotations)
        return self.objects[(namespace, name)]


def run(argv: list[str], fake: FakeKube, capsys, namespace: str = "shop") -> tuple[int, str, str]:
    seen = {}

    def connector(kubeconfig, context):
        seen.update(kubeconfig=kubeconfig, context=context)
        return kube.Connection(kube=fake, namespace=namespace)
    code = kubectl_plugin.main(argv, connector=connector)
    out, err = capsys.readouterr()
    run.seen = seen
    return code, out, err


def test_approve_writes_both_annotations_in_one_patch(capsys):
    fake = FakeKube([proposal()])
    code, out, err = run(["approve", "web-1", "--reason", "go", "--ref", "https://mr/1"], fake, capsys)
    assert code == 0 and out == "scalingproposal.scalegate.io/web-1 approved as alice\n"
    assert fake.patches == [("shop", "web-1", {APPROVED: "true", APPROVED_BY: "alice", APPROVAL_REF: "https://mr/1",
                                               DECISION_REASON: "go"})]
    code, out, _ = run(["approve", "web-1"], fake, capsys)
    assert code == 0 and out == "scalingproposal.scalegate.io/web-1 already approved by alice\n"
    assert len(fake.patches) == 1


def test_approving_a_finished_proposal_warns(capsys):
    fake = FakeKube([proposal(status={"phase": "Expired"})])
    code, out, err = run(["approve", "web-1"], fake, capsys)
    assert code == 0 and "warning: scalingproposal.scalegate.io/web-1 is Expired: the operator will not apply it" in err


def test_reject_writes_its_pair(capsys):
    fake = FakeKube([proposal()], user="bob")
    code, out, _ = run(["reject", "web-1", "--reason", "no"], fake, capsys)
    assert code == 0 and out == "scalingproposal.scalegate.io/web-1 rejected as bob\n"
    assert fake.patches[0][2] == {REJECTED: "true", REJECTED_BY: "bob", DECISION_REASON: "no"}


def test_a_refusal_is_printed_verbatim_with_exit_1(capsys):
    denial = refusal(kube.Forbidden, "Forbidden", "ValidatingAdmissionPolicy 'scalegate-approval' denied request: x",
                     403)
    code, out, err = run(["approve", "web-1"], FakeKube([proposal()], refuse_patch=denial), capsys)
    assert (code, out) == (1, "")
    assert err == "Error from server (Forbidden): ValidatingAdmissionPolicy 'scalegate-approval' denied request: x\n"


def test_missing_proposal_is_the_servers_not_found(capsys):
    code, out, err = run(["show", "nope"], FakeKube([]), capsys)
    assert code == 1 and err == 'Error from server (NotFound): scalingproposals.scalegate.io "nope" not found\n'


def test_flags_anywhere_and_namespace_default(capsys):
    fake = FakeKube([proposal(namespace="ops"), proposal("web-9", namespace="shop")])
    code, out, _ = run(["--kubeconfig", "/k", "--context", "c", "-n", "ops", "list", "-o", "name"], fake, capsys)
    assert code == 0 and out == "scalingproposal.scalegate.io/web-1\n"
    assert run.seen == {"kubeconfig": "/k", "context": "c"}
    code, out, _ = run(["list", "-o", "name", "--namespace", "ops", "--kubeconfig", "/j"], fake, capsys)
    assert out == "scalingproposal.scalegate.io/web-1\n" and run.seen["kubeconfig"] == "/j"
    code, out, _ = run(["list", "-o", "name"], fake, capsys)  # the context's namespace
    assert out == "scalingproposal.scalegate.io/web-9\n"
    code, out, err = run(["list", "-n", "empty"], fake, capsys)
    assert code == 0 and err == "No resources found in empty namespace.\n"


def test_list_json_is_a_kubernetes_list(capsys):
    code, out, _ = run(["list", "-A", "-o", "json"], FakeKube([proposal()]), capsys)
    assert json.loads(out)["kind"] == "List" and json.loads(out)["items"][0]["metadata"]["name"] == "web-1"


def test_show_and_explain_note_what_they_cannot_read(capsys, tmp_path: Path):
    code, out, _ = run(["show", "web-1"], FakeKube([proposal()]), capsys)
    assert code == 0 and "<policy not readable: no policies for you>" in out
    png = tmp_path / "p.png"
    code, out, err = run(["explain", "web-1", "--plot", str(png)], FakeKube([proposal()]), capsys)
    assert code == 0 and png.is_file() and f"plot written to {png}" in err
    code, _, err = run(["explain", "web-1", "--plot", str(tmp_path / "no" / "dir.png")], FakeKube([proposal()]), capsys)
    assert code == 1 and err.startswith(f"error: cannot write {tmp_path}/no/dir.png")


def test_explain_reaches_prometheus_with_the_forecasters_settings(capsys, monkeypatch, tmp_path: Path):
    """The same flags, environment and defaults as `scalegate forecaster`, and the same
    client: the token file is read, the CA and timeout passed on."""
    asked = []

    def query_range(self, query, start_ts, end_ts, step):
        asked.append(self.settings)
        return [{"metric": {}, "values": [[start_ts, "1"]]}]

    monkeypatch.setattr(PrometheusSource, "query_range", query_range)
    monkeypatch.setenv("SCALEGATE_PROMETHEUS_TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("SCALEGATE_PROMETHEUS_CA_FILE", "/env/ca.pem")
    (tmp_path / "token").write_text("t0k\n")
    code, out, err = run(["explain", "web-1", "--prometheus-url", "https://prom:9090", "--prometheus-token-file",
                          str(tmp_path / "token"), "--prometheus-ca-file", "/flag/ca.pem"], FakeKube([proposal()]),
                         capsys)
    assert (code, err) == (0, "")
    assert asked == [PrometheusSettings("https://prom:9090", bearer_token="t0k", ca_file="/flag/ca.pem",
                                        timeout_seconds=7.0)]
    assert "1 samples: last 1" in out
    code, _, _ = run(["explain", "web-1", "--prometheus-url", "https://prom:9090", "--prometheus-insecure",
                      "--prometheus-timeout", "3"], FakeKube([proposal()]), capsys)
    assert asked[-1] == PrometheusSettings("https://prom:9090", ca_file="/env/ca.pem", insecure_skip_verify=True,
                                           timeout_seconds=3.0)


def test_explain_with_an_unreadable_token_file_is_an_error(capsys, tmp_path: Path):
    code, out, err = run(["explain", "web-1", "--prometheus-url", "http://prom", "--prometheus-token-file",
                          str(tmp_path / "absent")], FakeKube([proposal()]), capsys)
    assert (code, out) == (1, "")
    assert err == f"error: cannot read the Prometheus token file {tmp_path}/absent: No such file or directory\n"


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        kubectl_plugin.main(["reject", "web-1", "--ref", "x"], connector=lambda *_: None)
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        kubectl_plugin.main(["list", "-o", "table"], connector=lambda *_: None)
    with pytest.raises(SystemExit):
        kubectl_plugin.main([], connector=lambda *_: None)
