"""Text for people: kubectl-like tables, ages, and the evidence of one proposal.

Pure functions of API objects (plain dicts as the server sends them) and a `now`, so
every line here is tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ..model import (
    GROUP,
    PROPOSAL_KIND,
    PROPOSAL_PLURAL,
    DecisionAnnotations,
    Evidence,
    InvalidObject,
    Policy,
    format_time,
    parse_time,
)
from ..rules import MAX_REPLICAS, MAX_STEP_DOWN, MAX_STEP_UP, MIN_REPLICAS, Bounds

NONE = "<none>"
RESOURCE = f"{PROPOSAL_PLURAL}.{GROUP}"  # as kubectl names the resource in messages
KIND_REF = f"{PROPOSAL_KIND.lower()}.{GROUP}"  # kubectl's "kind.group/name" for -o name and results


# -- small parts -------------------------------------------------------------------------
def human_duration(seconds: float) -> str:
    """An age the way kubectl prints one: 45s, 3m12s, 17m, 5h2m, 20h, 3d4h, 40d, 2y100d."""
    if seconds < -1:
        return "<invalid>"
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: Any, now: dt.datetime) -> str:
    try:
        moment = parse_time(timestamp)
    except InvalidObject:
        return "<invalid>"
    return human_duration((now - moment).total_seconds()) if moment else NONE


def until(timestamp: Any, now: dt.datetime) -> str:
    """'in 42m' or '5m ago' (a time that may lie ahead, unlike an age)."""
    try:
        moment = parse_time(timestamp)
    except InvalidObject:
        return "<invalid>"
    if moment is None:
        return NONE
    delta = (moment - now).total_seconds()
    return f"in {human_duration(delta)}" if delta >= 0 else f"{human_duration(-delta)} ago"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "") -> str:
    """Columns separated by three spaces, as kubectl's printer does; no trailing blanks."""
    body = [[NONE if cell is None or cell == "" else str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) if body else len(str(h))
              for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *body]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append((indent + "   ".join(cells)).rstrip())
    return "\n".join(lines)


def number(value: Any) -> str:
    """A load figure, short: 410, 410.5, 0.61, 1.23e+06."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return NONE if value is None else str(value)
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


def _stamp(moment: dt.datetime | None) -> str:
    return format_time(moment) if moment is not None else NONE


def _meta(obj: Mapping) -> Mapping:
    return obj.get("metadata") or {}


def _spec(obj: Mapping) -> Mapping:
    return obj.get("spec") or {}


def _status(obj: Mapping) -> Mapping:
    return obj.get("status") or {}


def annotations_of(obj: Mapping) -> Mapping[str, str]:
    return _meta(obj).get("annotations") or {}


def target_text(obj: Mapping) -> str:
    ref = _spec(obj).get("targetRef") or {}
    return f"{ref.get('kind', '?')}/{ref.get('name', '?')}"


def decision_of(obj: Mapping) -> DecisionAnnotations:
    """The decision annotations, read as the operator reads them."""
    return DecisionAnnotations.parse(annotations_of(obj))


def decided_by(obj: Mapping) -> tuple[str, str]:
    """('approved'|'rejected'|'', user): from status (the operator's verified record) first,
    else the annotations (already checked by the admission policy)."""
    status, decision = _status(obj), decision_of(obj)
    if status.get("approvedBy"):
        return "approved", status["approvedBy"]
    if status.get("rejectedBy"):
        return "rejected", status["rejectedBy"]
    if decision.approved:
        return "approved", decision.approved_by
    if decision.rejected:
        return "rejected", decision.rejected_by
    return "", ""


# -- list ----------------------------------------------------------------------------------
COLUMNS = ["NAME", "TARGET", "CURRENT", "PROPOSED", "PHASE", "APPROVED-BY", "AGE"]
WIDE_COLUMNS = ["POLICY", "VALID-UNTIL", "PROPOSED-BY", "REASON"]


def proposal_row(obj: Mapping, now: dt.datetime, wide: bool = False) -> list[Any]:
    meta, spec, status = _meta(obj), _spec(obj), _status(obj)
    verdict, user = decided_by(obj)
    row = [meta.get("name"), target_text(obj), spec.get("currentReplicas"), spec.get("replicas"),
           status.get("phase"), user if verdict == "approved" else None, age(meta.get("creationTimestamp"), now)]
    if wide:
        row += [(spec.get("policyRef") or {}).get("name"), spec.get("validUntil"),
                decision_of(obj).proposed_by, status.get("reason")]
    return row


def proposal_table(items: Sequence[Mapping], now: dt.datetime, *, all_namespaces: bool = False,
                   wide: bool = False) -> str:
    headers = (["NAMESPACE"] if all_namespaces else []) + COLUMNS + (WIDE_COLUMNS if wide else [])
    ordered = sorted(items, key=lambda o: (_meta(o).get("namespace", ""), _meta(o).get("name", "")))
    rows = [([_meta(o).get("namespace")] if all_namespaces else []) + proposal_row(o, now, wide) for o in ordered]
    return table(headers, rows)


def as_list(items: Sequence[Mapping]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": list(items)}


def dump(obj: Any, output: str) -> str:
    if output == "json":
        return json.dumps(obj, indent=4)
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).rstrip("\n")


# -- show ----------------------------------------------------------------------------------
def _field(label: str, value: Any, width: int = 14) -> str:
    return f"{label + ':':<{width}}{NONE if value is None or value == '' else value}"


def bounds_check(proposal: Mapping, policy_spec: Mapping) -> list[tuple[str, bool]]:
    """(line, holds) for each bound of the policy the proposal is judged against: the
    operator's check 3 (`rules.Bounds`), in its order."""
    spec = _spec(proposal)
    replicas, current = spec.get("replicas"), spec.get("currentReplicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        return []
    if not isinstance(current, int) or isinstance(current, bool):
        current = replicas  # no basis for a step: judge the range alone
    checks = {check.limit: check for check in Bounds.of_spec(policy_spec).check(replicas, current)}
    lines: list[tuple[str, bool]] = []
    low, high = checks.get(MIN_REPLICAS), checks.get(MAX_REPLICAS)
    if low and high:
        lines.append((f"{low.value} <= {replicas} replicas <= {high.value}", low.holds and high.holds))
    elif low:
        lines.append((f"{low.value} <= {replicas} replicas", low.holds))
    elif high:
        lines.append((f"{replicas} replicas <= {high.value}", high.holds))
    if MAX_STEP_UP in checks:
        up = checks[MAX_STEP_UP]
        lines.append((f"step +{up.step} <= maxStepUp {up.value}", up.holds))
    if MAX_STEP_DOWN in checks:
        down = checks[MAX_STEP_DOWN]
        lines.append((f"step {down.step} within maxStepDown {down.value}", down.holds))
    return lines


def show(proposal: Mapping, now: dt.datetime, *, policy: Mapping | None = None, policy_error: str = "",
         events: Sequence[Mapping] | None = None, events_error: str = "",
         history: Sequence[Mapping] | None = None) -> str:
    """Everything an approver needs in one screen, in the order they judge it."""
    meta, spec, status, said = _meta(proposal), _spec(proposal), _status(proposal), decision_of(proposal)
    ev = Evidence.parse(spec.get("forecast"))
    ref = spec.get("targetRef") or {}
    current, replicas = spec.get("currentReplicas"), spec.get("replicas")
    change = f"{current} -> {replicas} replicas"
    if isinstance(current, int) and isinstance(replicas, int):
        change += f" ({replicas - current:+d})"
    lines = [
        _field("Name", meta.get("name")),
        _field("Namespace", meta.get("namespace")),
        _field("Policy", (spec.get("policyRef") or {}).get("name")),
        _field("Target", f"{ref.get('kind')}/{ref.get('name')} ({ref.get('apiVersion')})"),
        _field("Change", change),
        _field("Reason", spec.get("reason")),
        _field("Valid until", f"{spec.get('validUntil')} ({until(spec.get('validUntil'), now)})"),
        _field("Proposed by", said.proposed_by),
        _field("Created", f"{meta.get('creationTimestamp')} ({age(meta.get('creationTimestamp'), now)} ago)"),
    ]
    verdict, user = decided_by(proposal)
    if verdict:
        decision = f"{verdict} by {user}"
        if said.reason:
            decision += f": {said.reason}"
        if said.approval_ref:
            decision += f" (ref {said.approval_ref})"
    else:
        decision = "none yet: kubectl scalegate approve|reject " + str(meta.get("name"))
    lines.append(_field("Decision", decision))

    lines.append("Forecast:")
    interval = NONE
    if ev.lower_bound is not None or ev.upper_bound is not None:
        interval = f"{number(ev.lower_bound)} - {number(ev.upper_bound)}"
        if ev.confidence is not None:
            interval += f" ({ev.confidence:.0%} interval)"
    has_window = ev.window_start or ev.window_end or ev.points is not None
    has_backtest = ev.backtest_metric is not None or ev.backtest_value is not None
    rows = [
        ("Model", ev.model),
        ("Query", ev.query),
        ("Window", f"{_stamp(ev.window_start)} .. {_stamp(ev.window_end)} "
                   f"({ev.points if ev.points is not None else '?'} points)" if has_window else None),
        ("Horizon", human_duration(ev.horizon_seconds) if ev.horizon_seconds is not None else None),
        ("Peak", f"{number(ev.predicted_peak)}" + (f" at {_stamp(ev.peak_time)}" if ev.peak_time else "")
         if ev.predicted_peak is not None else None),
        ("Interval", interval),
        ("Per replica", number(ev.capacity_per_replica) if ev.capacity_per_replica else None),
        ("Backtest", f"{ev.backtest_metric or 'error'} {number(ev.backtest_value)}" if has_backtest else None),
        ("Coverage", f"{ev.coverage:.0%}" if ev.coverage is not None else None),
    ]
    lines += ["  " + _field(label, value, 13) for label, value in rows]

    policy_name = (spec.get("policyRef") or {}).get("name")
    lines.append(f"Bounds (ScalingPolicy {policy_name}):")
    if policy is not None:
        pspec = _spec(policy)
        steps = f"up {pspec.get('maxStepUp', 'unlimited')}, down {pspec.get('maxStepDown', 'unlimited')}"
        lines += [
            "  " + _field("Replicas", f"{pspec.get('minReplicas')} - {pspec.get('maxReplicas')}", 13),
            "  " + _field("Max step", steps, 13),
            "  " + _field("Cooldown", human_duration(pspec.get("cooldownSeconds", Policy.cooldown_seconds) or 0), 13),
            "  " + _field("Suspended", "yes" if pspec.get("suspend") else "no", 13),
        ]
        ptarget = pspec.get("targetRef") or {}
        if ptarget and (ptarget.get("kind"), ptarget.get("name")) != (ref.get("kind"), ref.get("name")):
            lines.append(f"  ! the policy targets {ptarget.get('kind')}/{ptarget.get('name')}, "
                         "not this proposal's target")
        for text, holds in bounds_check(proposal, pspec):
            lines.append(f"  {'ok ' if holds else 'OUT'} {text}")
    else:
        lines.append(f"  <{policy_error or 'not found'}>")

    lines.append("Status:")
    lines += ["  " + _field(label, value, 13) for label, value in [
        ("Phase", status.get("phase")), ("Reason", status.get("reason")), ("Message", status.get("message")),
    ]]
    for label, key in [("Approved at", "approvedAt"), ("Applied at", "appliedAt"),
                       ("Applied", "appliedReplicas"), ("Previous", "previousReplicas"),
                       ("Finished at", "finishedAt")]:
        if status.get(key) is not None:
            lines.append("  " + _field(label, status.get(key), 13))

    conditions = status.get("conditions") or []
    lines.append("Conditions:")
    if conditions:
        lines.append(table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
                           [[c.get("type"), c.get("status"), c.get("reason"),
                             age(c.get("lastTransitionTime"), now), c.get("message")] for c in conditions],
                           indent="  "))
    else:
        lines.append(f"  {NONE}")

    lines.append("Events:")
    if events_error:
        lines.append(f"  <{events_error}>")
    elif events:
        ordered = sorted(events, key=lambda e: str(_event_time(e)))[-10:]
        lines.append(table(["TYPE", "REASON", "AGE", "FROM", "MESSAGE"],
                           [[e.get("type"), e.get("reason"), age(_event_time(e), now),
                             (e.get("source") or {}).get("component") or e.get("reportingComponent"),
                             e.get("message")] for e in ordered], indent="  "))
    else:
        lines.append(f"  {NONE}")

    lines.append(f"History (other proposals for {ref.get('kind')}/{ref.get('name')}):")
    if history:
        newest = sorted(history, key=lambda o: str(_meta(o).get("creationTimestamp")), reverse=True)[:10]
        lines.append(table(["NAME", "CURRENT", "PROPOSED", "PHASE", "DECIDED-BY", "AGE"],
                           [[_meta(o).get("name"), _spec(o).get("currentReplicas"), _spec(o).get("replicas"),
                             _status(o).get("phase"), " ".join(filter(None, decided_by(o))) or None,
                             age(_meta(o).get("creationTimestamp"), now)] for o in newest], indent="  "))
    else:
        lines.append(f"  {NONE}")
    return "\n".join(lines)


def _event_time(event: Mapping) -> Any:
    return (event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
            or _meta(event).get("creationTimestamp"))


def same_target(a: Mapping, b: Mapping) -> bool:
    ra, rb = _spec(a).get("targetRef") or {}, _spec(b).get("targetRef") or {}
    group = lambda ref: str(ref.get("apiVersion", "")).rpartition("/")[0]  # noqa: E731
    return (group(ra), ra.get("kind"), ra.get("name")) == (group(rb), rb.get("kind"), rb.get("name"))
