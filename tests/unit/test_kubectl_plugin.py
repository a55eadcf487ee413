"""`kubectl scalegate` without a cluster: text, numbers, the plot, flags and kubeconfig
handling, and the commands against a fake of the plugin's own API wrapper."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
import sys
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


def plan(name: str = "web-plan", *, replicas: tuple[int, ...] = (9, 12, 14, 10, 8), current: int = 4,
         first: dt.datetime = NOW - dt.timedelta(minutes=70), every: dt.timedelta = dt.timedelta(hours=1),
         status: dict | None = None, **kwargs) -> dict:
    """A plan of hourly steps (the first 70 minutes ago by default: step 2 is in effect, step 3
    next), each sized for 45.5 x its replicas."""
    body = proposal(name, current=current, replicas=replicas[0], status=status, **kwargs)
    body["spec"]["schedule"] = [{"at": stamp(first + i * every), "replicas": r, "predictedPeak": 40.0 * r,
                                 "upperBound": 45.5 * r} for i, r in enumerate(replicas)]
    body["spec"]["endsAt"] = stamp(first + len(replicas) * every)
    return body


def receipt(at: dt.datetime, replicas: int, outcome: str = "Applied", previous: int | None = None,
            **extra) -> dict:
    item = {"at": stamp(at), "replicas": replicas, "outcome": outcome, **extra}
    if outcome == "Applied":
        item["appliedAt"] = stamp(at + dt.timedelta(seconds=2))
    if previous is not None:
        item["previousReplicas"] = previous
    return item


FIRST = NOW - dt.timedelta(minutes=70)
ACTIVE = {"phase": "Active", "nextStepAt": stamp(FIRST + dt.timedelta(hours=2)), "plannedSteps": 5, "steps": [
    receipt(FIRST, 9, previous=4),
    receipt(FIRST + dt.timedelta(hours=1), 12, previous=9)]}


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
    assert wide[0].split()[-7:] == ["POLICY", "VALID-UNTIL", "STEPS", "NEXT-STEP", "ENDS-AT", "PROPOSED-BY", "REASON"]
    assert "system:serviceaccount:scalegate:forecaster" in wide[1]


def test_list_wide_shows_a_plans_steps_next_step_and_end():
    items = [plan(status=ACTIVE), proposal("web-1"), plan("web-done", status={"phase": "Stale"})]
    lines = render.proposal_table(items, NOW, wide=True).splitlines()
    header = lines[0].split()
    column = {name: header.index(name) for name in ("STEPS", "NEXT-STEP", "ENDS-AT", "POLICY", "REASON")}
    assert header[-7:] == ["POLICY", "VALID-UNTIL", "STEPS", "NEXT-STEP", "ENDS-AT", "PROPOSED-BY", "REASON"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert [rows["web-plan"][column[c]] for c in ("STEPS", "NEXT-STEP", "ENDS-AT")] == [
        "5", stamp(FIRST + dt.timedelta(hours=2)), stamp(FIRST + dt.timedelta(hours=5))]
    assert [rows["web-1"][column[c]] for c in ("STEPS", "NEXT-STEP", "ENDS-AT")] == ["<none>"] * 3
    # A plan that stopped has no next step, whatever its times say.
    assert rows["web-done"][column["NEXT-STEP"]] == "<none>" and rows["web-done"][column["STEPS"]] == "5"
    # The default columns stay those of a single change.
    assert render.proposal_table(items, NOW).splitlines()[0].split() == render.COLUMNS


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


def schedule_rows(text: str) -> dict[str, list[str]]:
    """The schedule table of `show`, by step number: the row's cells after the marker."""
    table = text.split("Schedule")[1].split("Bounds")[0].splitlines()[1:]
    header = table[0]
    rows = {}
    for line in table[1:]:
        if not line.startswith("  step"):
            cells = line.split()
            mark = line[:header.index("STEP")].strip()
            rows[cells[1] if mark else cells[0]] = [mark] + (cells[2:] if mark else cells[1:])
    return rows


def test_show_prints_a_plans_schedule_with_receipts_and_marks_now_and_next():
    body = plan(status=ACTIVE)
    text = render.show(body, NOW, policy=policy(maxStepDown=5))
    assert "Change:       4 -> 9 replicas (+5) at the plan's first step" in text
    assert (f"Plan:         5 steps every 1h, {stamp(FIRST)} to {stamp(FIRST + dt.timedelta(hours=5))} (ends in 3h50m),"
            " 8 - 14 replicas") in text
    assert f"Next step:    step 3 at {stamp(FIRST + dt.timedelta(hours=2))} (in 50m): 12 -> 14 replicas" in text
    rows = schedule_rows(text)
    at = lambda i: stamp(FIRST + dt.timedelta(hours=i))  # noqa: E731
    assert rows == {
        "1": ["", at(0), "9", "360", "409.5", "Applied", stamp(FIRST + dt.timedelta(seconds=2)), "4", "->", "9"],
        "2": ["now", at(1), "12", "480", "546", "Applied", stamp(FIRST + dt.timedelta(hours=1, seconds=2)),
              "9", "->", "12"],
        "3": ["next", at(2), "14", "560", "637"],
        "4": ["", at(3), "10", "400", "455"],
        "5": ["", at(4), "8", "320", "364"]}
    assert "Next step:   " + at(2) in text  # status.nextStepAt, the operator's record
    for line in ["ok  2 <= every step's replicas (8 - 14) <= 20", "ok  every step up <= maxStepUp 5 (largest +5)",
                 "ok  every step down within maxStepDown 5 (largest -4)",
                 "ok  steps at least cooldownSeconds 10m apart (closest 1h)"]:
        assert line in text, f"{line!r} missing from:\n{text}"


def test_show_notes_receipts_that_stopped_a_plan_and_marks_nothing_once_it_stopped():
    stale = receipt(FIRST + dt.timedelta(hours=1), 12, "Stale", previous=7, reason="TargetChanged",
                    message="Deployment/web now has 7 replicas, not the 9 the plan's previous step left")
    body = plan(status={"phase": "Stale", "reason": "TargetChanged", "steps": [receipt(FIRST, 9, previous=4), stale]})
    text = render.show(body, NOW, policy=policy())
    rows = schedule_rows(text)
    assert rows["2"][0] == "" and rows["2"][-1] == "Stale"  # no applied-at, no change: it was not applied
    assert all(row[0] == "" for row in rows.values())  # a stopped plan has no step in effect, none next
    assert ("  step 2: Stale (TargetChanged) Deployment/web now has 7 replicas, not the 9 the plan's previous step "
            "left") in text
    assert "Next step:    none: the plan is Stale" in text
    # Pending: the step an approval now would apply is marked, and the plan's step limits judged.
    pending = render.show(plan(), NOW, policy=policy())
    assert schedule_rows(pending)["2"][0] == "now" and schedule_rows(pending)["3"][0] == "next"
    assert "OUT every step down within maxStepDown 2 (largest -4)" in pending
    assert (f"OUT step 4 (at {stamp(FIRST + dt.timedelta(hours=3))}): removing 4 replicas exceeds maxStepDown 2"
            in pending)


PLAN_CASES = {
    "fits": ((9, 12, 14, 10, 8), 4, {"maxStepDown": 5}),
    "a step above maxReplicas": ((9, 12, 21), 4, {"maxStepUp": 10}),
    "a step below minReplicas": ((3, 1), 4, {}),
    "first step too far from currentReplicas": ((10, 11), 4, {}),
    "a rise between steps too steep": ((9, 15), 9, {}),
    "a fall between steps too steep": ((9, 6), 9, {}),
    "no step limits": ((9, 20, 2), 4, {"maxStepUp": None, "maxStepDown": None}),
    "steps closer than the cooldown": ((9, 10), 9, {"cooldownSeconds": 7200}),
    "steps exactly the cooldown apart": ((9, 10), 9, {"cooldownSeconds": 3600}),
}


@pytest.mark.parametrize("case", PLAN_CASES)
def test_plan_checks_hold_exactly_when_the_operator_accepts_the_whole_plan(case):
    """`show` and `explain` say OUT for a plan exactly when the operator's check of the whole
    plan at approval (decision.check_plan) rejects it, and name the same steps."""
    from scalegate import decision
    from scalegate.model import Policy as ParsedPolicy

    replicas, current, changes = PLAN_CASES[case]
    body = plan(replicas=replicas, current=current)
    spec = {k: v for k, v in {**policy()["spec"], **changes}.items() if v is not None}
    checks = render.plan_checks(body, spec)
    verdict = decision.check_plan(Proposal.parse(body), ParsedPolicy.parse({"metadata": {"name": "web"},
                                                                            "spec": spec}))
    assert all(holds for _, holds in checks) == (verdict is None), (checks, verdict)
    shown = [re.match(r"step (\d+) \(at [^)]*\): (.*)", text).groups() for text, holds in checks
             if not holds and text.startswith("step ")]
    said = re.findall(r"step (\d+) of \d+ \(at [^)]*\): ([^;(]*[^;( ])", verdict.message if verdict else "")
    assert [n for n, _ in shown] == [n for n, _ in said]
    limits = [(n, why) for n, why in said if "cooldownSeconds" not in why]  # the rules' own words
    assert [(n, why) for n, why in shown if "cooldownSeconds" not in why] == limits


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


def breached_history(first_step_peak: float) -> explain.History:
    """Two days of the daily wave to now, the plan's first step's hour lifted to `first_step_peak`."""
    history = wave(NOW - dt.timedelta(days=2), NOW)
    values = [first_step_peak if FIRST <= t < FIRST + dt.timedelta(hours=1) else v
              for t, v in zip(history.times, history.values, strict=True)]
    return explain.History(times=history.times, values=values)


def test_explain_text_compares_each_step_of_a_plan_with_the_realised_load():
    body = plan(status=ACTIVE)
    text = explain.explain_text(body, policy(maxStepDown=5), breached_history(500.0), NOW)
    assert "shop/web-1" not in text and "Deployment/web 4 -> 9 replicas at the first step of a plan of 5" in text
    table = text.split("\nPlan\n")[1].split("\n\n")[0].splitlines()
    assert table[0].strip().startswith("5 steps every 1h")
    rows = {line.split()[0] if not line[2:8].strip() else line.split()[1]: line.split() for line in table[2:7]}
    # STEP AT UPPER-BOUND NEEDED REPLICAS CAPACITY REALISED-PEAK
    assert rows["1"][1:] == [stamp(FIRST), "409.5", "9", "9", "450", "500", "BREACHED"]
    assert rows["2"] == ["now", "2", stamp(FIRST + dt.timedelta(hours=1)), "546", "11", "12", "600", "113.9"]
    assert rows["3"] == ["next", "3", stamp(FIRST + dt.timedelta(hours=2)), "637", "13", "14", "700"]
    assert "the realised load rose above the upper bound of step 1 (the forecaster posts PlanBreached for it)" in text
    assert "OUT" not in text.split("Bounds")[1].split("Load history")[0]
    calm = explain.explain_text(body, policy(), breached_history(400.0), NOW)  # above the peak, under the bound
    assert "BREACHED" not in calm and "stayed under every upper bound so far (2 steps with samples)" in calm
    unread = explain.explain_text(body, policy(), None, NOW)
    assert "realised load not read (pass --prometheus-url URL to compare each step with it)" in unread


def test_history_of_a_plan_reaches_to_its_end_or_now():
    view = explain.ExplainedProposal.of(plan(first=NOW - dt.timedelta(hours=4)))
    assert view.history_range(NOW)[1] == NOW  # the plan runs on: up to now
    assert view.history_range(NOW + dt.timedelta(days=1))[1] == view.plan.ends_at


def test_plot_of_a_plan_draws_the_schedule_against_the_realised_load():
    from matplotlib.colors import to_hex
    from matplotlib.dates import num2date
    from matplotlib.figure import Figure

    body = plan(status=ACTIVE)
    view = explain.ExplainedProposal.of(body)
    ax = Figure().add_subplot(1, 1, 1)
    explain._draw_plan(ax, view, view.plan, policy()["spec"], 50.0, breached_history(500.0),
                       FIRST - dt.timedelta(hours=2), view.plan.ends_at, NOW, legend=True)
    lines = {line.get_label(): line for line in ax.get_lines()}
    capacity = lines["planned capacity (replicas x 50)"]
    assert capacity.get_drawstyle() == "steps-post"
    assert list(capacity.get_ydata()) == [450, 600, 700, 500, 400, 400]
    assert list(capacity.get_xdata()) == [FIRST + dt.timedelta(hours=i) for i in range(6)]  # to endsAt
    load = lines["realised load"]
    assert max(load.get_ydata()) == 500.0 and min(load.get_xdata()) >= FIRST - dt.timedelta(hours=2)
    # Each step's upper bound over its own hour; the breached one in red.
    bounds = [(round(c.get_segments()[0][0][1], 1), to_hex(c.get_colors()[0])) for c in ax.collections
              if c.get_linestyle()[0][1] is None]
    assert bounds == [(409.5, to_hex("tab:red")), (546.0, to_hex("tab:orange")), (637.0, to_hex("tab:orange")),
                      (455.0, to_hex("tab:orange")), (364.0, to_hex("tab:orange"))]
    first = [c for c in ax.collections if c.get_linestyle()[0][1] is None][0].get_segments()[0]
    assert [num2date(x) for x, _ in first] == [FIRST, FIRST + dt.timedelta(hours=1)]
    # The receipts: two steps applied, at their applied times.
    applied = lines["step applied"]
    assert list(applied.get_ydata()) == [450, 600] and "upper bound breached by the realised load" in lines
    assert list(applied.get_xdata()) == [FIRST + dt.timedelta(seconds=2), FIRST + dt.timedelta(hours=1, seconds=2)]
    assert {"now", "capacity before the plan 4 x 50 = 200", "policy max 20 replicas = 1000"} <= set(lines)


@pytest.mark.parametrize("with_history", [True, False])
def test_plot_of_a_plan_writes_a_png(tmp_path: Path, with_history: bool):
    path = tmp_path / "plan.png"
    explain.plot(str(path), plan(status=ACTIVE), policy(), breached_history(500.0) if with_history else None, NOW)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert int.from_bytes(data[16:20], "big") == (1500 if with_history else 1250)


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
    refusals on request (`refuse_patch` for every patch, `refuse` per name), a Conflict
    on the first guarded patch of the names in `conflict_once`, and `on_get(name)` run
    before each read (to change an object between listing and approving)."""

    def __init__(self, objects: list[dict], user: str = "alice", refuse_patch: kube.KubeError | None = None,
                 refuse: dict[str, kube.KubeError] | None = None, conflict_once: set[str] | None = None):
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        for i, obj in enumerate(objects):
            obj["metadata"].setdefault("resourceVersion", str(100 + i))
        self.user = user
        self.refuse_patch = refuse_patch
        self.refuse = refuse or {}
        self.conflict_once = set(conflict_once or ())
        self.on_get = lambda name: None
        self.patches: list[tuple[str, str, dict]] = []
        self.guarded: list[tuple[str, str]] = []  # (name, resourceVersion) of each guarded patch that landed

    def get_proposal(self, namespace, name, missing_ok=True):
        self.on_get(name)
        try:
            return self.objects[(namespace, name)]
        except KeyError:
            if missing_ok:
                return None
            raise refusal(kube.NotFound, "NotFound", f'scalingproposals.scalegate.io "{name}" not found',
                          404) from None

    def iter_proposals(self, namespace=None, page_size=500, selector=None):
        def matches(obj):
            labels = obj["metadata"].get("labels") or {}
            return not selector or all(labels.get(k) == v for k, v in (part.split("=") for part in selector.split(",")))
        return iter([o for (ns, _), o in self.objects.items() if namespace in (None, ns) and matches(o)])

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

    def patch_proposal_annotations(self, namespace, name, annotations, resource_version):
        obj = self.objects[(namespace, name)]
        if name in self.conflict_once:
            self.conflict_once.discard(name)
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        if resource_version != obj["metadata"]["resourceVersion"]:
            raise refusal(kube.Conflict, "Conflict", "the object has been modified", 409)
        if name in self.refuse:
            raise self.refuse[name]
        self.guarded.append((name, resource_version))
        return self.annotate_proposal(namespace, name, annotations)


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


# -- approve --all ---------------------------------------------------------------------------
class Terminal(io.StringIO):
    """stdin as a person at a terminal, typing `answers`."""

    def isatty(self):
        return True


def batch(annotations: dict | None = None, **kwargs) -> list[dict]:
    """A namespace's proposals: two pending (a plan and a single change), one in another
    namespace, one applied, one already approved, one rejected, one past its validUntil."""
    expired = proposal("web-old")
    expired["spec"]["validUntil"] = stamp(NOW - dt.timedelta(minutes=1))
    return [plan("web-plan", status={"phase": "Pending"}), proposal("api-1", status={"phase": "Pending"}),
            proposal("elsewhere", namespace="ops"), proposal("web-0", status={"phase": "Applied"}),
            proposal("web-ok", annotations={APPROVED: "true", APPROVED_BY: "bob"}),
            proposal("web-no", annotations={REJECTED: "true", REJECTED_BY: "bob"}), expired]


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.setattr(kubectl_plugin, "_now", lambda: NOW)


def test_approve_all_lists_what_it_would_approve_then_approves_each_in_its_own_patch(capsys, clock):
    fake = FakeKube(batch())
    code, out, err = run(["approve", "--all", "--yes", "--reason", "standup", "--ref", "https://mr/7"], fake, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "2 pending proposals in namespace shop, to approve as alice:"
    assert lines[1].split() == ["NAME", "TARGET", "CHANGE", "VALID-UNTIL"]
    assert lines[2].split()[:2] == ["api-1", "Deployment/web"] and "4 -> 9 (+5)" in lines[2]
    assert lines[2].endswith(f"{stamp(NOW + dt.timedelta(minutes=42))} (in 42m)")
    assert lines[3].split()[:2] == ["web-plan", "Deployment/web"]
    assert (f"plan: 5 steps every 1h, 4 -> 9 first, 8 - 14 replicas, ends {stamp(FIRST + dt.timedelta(hours=5))}"
            in lines[3])
    assert lines[4:] == ["scalingproposal.scalegate.io/api-1 approved as alice",
                         "scalingproposal.scalegate.io/web-plan approved as alice"]
    wanted = {APPROVED: "true", APPROVED_BY: "alice", APPROVAL_REF: "https://mr/7", DECISION_REASON: "standup"}
    assert fake.patches == [("shop", "api-1", wanted), ("shop", "web-plan", wanted)]
    # Each guarded by the resourceVersion it was read at: what is approved is what was listed.
    assert fake.guarded == [("api-1", "101"), ("web-plan", "100")]
    assert "2 approved, 0 refused, 0 skipped (of 2 listed)" in err


def test_approve_all_collects_each_refusal_in_the_servers_words_and_exits_1(capsys, clock):
    denial = refusal(kube.Forbidden, "Forbidden", "ValidatingAdmissionPolicy 'scalegate-approval' with binding "
                     "'scalegate-approval' denied request: you (alice) proposed this ScalingProposal", 403)
    fake = FakeKube(batch(), refuse={"api-1": denial})
    code, out, err = run(["approve", "--all", "--yes"], fake, capsys)
    assert code == 1
    assert ("scalingproposal.scalegate.io/api-1: Error from server (Forbidden): ValidatingAdmissionPolicy "
            "'scalegate-approval' with binding 'scalegate-approval' denied request: you (alice) proposed this "
            "ScalingProposal\n") in err
    assert out.splitlines()[-1] == "scalingproposal.scalegate.io/web-plan approved as alice"  # the rest goes on
    assert [name for _, name, _ in fake.patches] == ["web-plan"]
    assert "1 approved, 1 refused, 0 skipped (of 2 listed)" in err
    # Every one refused (no approve verb): nothing written, each refusal printed.
    nobody = refusal(kube.Forbidden, "Forbidden", "bob may not approve or reject ScalingProposals", 403)
    fake = FakeKube(batch(), refuse={"api-1": nobody, "web-plan": nobody}, user="bob")
    code, out, err = run(["approve", "--all", "--yes"], fake, capsys)
    assert code == 1 and fake.patches == []
    assert err.count("Error from server (Forbidden): bob may not approve or reject ScalingProposals") == 2


def test_approve_all_without_a_terminal_and_without_yes_refuses_and_approves_nothing(capsys, clock, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\ny\n"))  # piped in: not a person at a terminal
    fake = FakeKube(batch())
    code, out, err = run(["approve", "--all"], fake, capsys)
    assert (code, fake.patches) == (1, [])
    assert "web-plan" in out  # it still shows what it would have approved
    assert err == ("error: approve --all asks before approving each proposal, and there is no terminal to ask on: "
                   "run it in a terminal, or add --yes to approve the 2 listed above\n")


@pytest.mark.parametrize("answers, approved, skipped", [
    ("y\nn\n", ["api-1"], ["web-plan"]),
    ("maybe\nn\nyes\n", ["web-plan"], ["api-1"]),  # asked again until it is an answer
    ("a\n", ["api-1", "web-plan"], []),  # this one and all the rest, without asking again
    ("q\n", [], ["api-1", "web-plan"]),
    ("y\n", ["api-1"], ["web-plan"]),  # the end of input stops, approving nothing more
])
def test_approve_all_asks_before_each(capsys, clock, monkeypatch, answers, approved, skipped):
    monkeypatch.setattr(sys, "stdin", Terminal(answers))
    fake = FakeKube(batch())
    code, out, err = run(["approve", "--all"], fake, capsys)
    assert code == 0
    assert [name for _, name, _ in fake.patches] == approved
    questions = err.count("[y/n/a/q] ")
    assert questions == {"a\n": 1, "q\n": 1, "maybe\nn\nyes\n": 3}.get(answers, 2)
    assert "approve api-1 (Deployment/web, 4 -> 9 (+5))? [y/n/a/q] " in err
    assert f"{len(approved)} approved, 0 refused, {len(skipped)} skipped (of 2 listed)" in err
    if "maybe" in answers:
        assert "please answer y (approve this one), n (skip it), a (approve it and all the rest) or q (stop)" in err


def test_approve_all_with_a_selector_and_nothing_pending(capsys, clock):
    items = batch()
    items[0]["metadata"]["labels"] = {"scalegate.io/policy": "web"}
    fake = FakeKube(items)
    code, out, _ = run(["approve", "--all", "-l", "scalegate.io/policy=web", "--yes"], fake, capsys)
    assert code == 0 and [name for _, name, _ in fake.patches] == ["web-plan"]
    assert out.splitlines()[0] == ("1 pending proposal in namespace shop matching scalegate.io/policy=web, to approve "
                                   "as alice:")
    code, out, err = run(["approve", "--all", "-n", "ops", "-l", "scalegate.io/policy=api"], fake, capsys)
    assert (code, out) == (0, "")
    assert err == "No pending proposals to approve in ops namespace matching scalegate.io/policy=api.\n"


def test_approve_all_skips_what_changed_since_it_was_listed_and_retries_a_conflict(capsys, clock):
    items = batch() + [proposal("web-gone", status={"phase": "Pending"}),
                       proposal("web-new", status={"phase": "Pending"})]
    fake = FakeKube(items, conflict_once={"web-plan"})

    def meanwhile(name):  # between the listing and each approval
        if name == "api-1":
            fake.objects[("shop", "api-1")]["status"] = {"phase": "Expired"}
        if name == "web-gone":
            fake.objects.pop(("shop", "web-gone"), None)
        if name == "web-new":
            fake.objects[("shop", "web-new")] = proposal("web-new", uid="another", status={"phase": "Pending"})
    fake.on_get = meanwhile
    code, out, err = run(["approve", "--all", "--yes"], fake, capsys)
    assert code == 0, err
    assert "scalingproposal.scalegate.io/api-1 skipped: it is Expired now" in err
    assert "scalingproposal.scalegate.io/web-gone skipped: it was deleted since it was listed" in err
    assert ("scalingproposal.scalegate.io/web-new skipped: it was replaced by another proposal of the same name since "
            "it was listed") in err
    # Its status changed between the read and the patch: read again and approved.
    assert [name for _, name, _ in fake.patches] == ["web-plan"] and fake.guarded == [("web-plan", "101")]
    assert "1 approved, 0 refused, 3 skipped (of 4 listed)" in err


@pytest.mark.parametrize("argv, message", [
    (["approve", "web-1", "--all"], "approve takes a NAME or --all, not both"),
    (["approve"], "approve needs the NAME of a proposal, or --all"),
    (["approve", "web-1", "--yes"], "-l/--selector and --yes go with --all"),
    (["approve", "web-1", "-l", "a=b"], "-l/--selector and --yes go with --all"),
])
def test_approve_all_usage_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        kubectl_plugin.main(argv, connector=lambda *_: None)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


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
