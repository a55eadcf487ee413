"""Text for people: kubectl-like tables, ages, and the evidence of one proposal.

Pure functions of API objects (plain dicts as the server sends them) and a `now`, so
every line here is tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ..model import (
    GROUP,
    PROPOSAL_KIND,
    PROPOSAL_PLURAL,
    DecisionAnnotations,
    Evidence,
    InvalidObject,
    Phase,
    Policy,
    StepOutcome,
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


def length(seconds: float) -> str:
    """A configured length, exactly: 1h, 30m, 1h30m, 90s (an age is rounded; a plan's step is not)."""
    s = int(seconds)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


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


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "", empty: str = NONE) -> str:
    """Columns separated by three spaces, as kubectl's printer does; no trailing blanks.
    A missing cell (None or "") reads `empty`."""
    body = [[empty if cell is None or cell == "" else str(cell) for cell in row] for row in rows]
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


# -- plans ---------------------------------------------------------------------------------
#: Phases in which a plan may still apply steps (no phase yet: the operator has not seen it).
OPEN_PHASES = frozenset({"", Phase.PENDING, Phase.APPROVED, Phase.ACTIVE})
#: Problems of a plan that `plan_checks` lists one by one (the rest are counted), as the operator does.
PLAN_PROBLEMS_SHOWN = 5


def _when(value: Any) -> dt.datetime | None:
    try:
        return parse_time(value)
    except InvalidObject:
        return None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _figure(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class ScheduledStep:
    """One step of a plan as shown (`spec.schedule[index]`), with its receipt from
    `status.steps` (matched by the step's time), if it came due."""

    index: int
    at: dt.datetime | None
    at_text: str
    replicas: int | None
    predicted_peak: float | None
    upper_bound: float | None
    receipt: Mapping[str, Any] | None = None

    @property
    def number(self) -> int:
        """1-based, as the operator's messages count steps ("step 2 of 24")."""
        return self.index + 1

    @property
    def outcome(self) -> str:
        return str((self.receipt or {}).get("outcome") or "")


@dataclass(frozen=True)
class PlanView:
    """A proposal's plan, read leniently (a strange object is shown, not refused): its steps
    with their receipts, when it ends, and the proposal's phase and basis."""

    steps: tuple[ScheduledStep, ...]
    ends_at: dt.datetime | None
    phase: str
    current: int | None

    @classmethod
    def of(cls, obj: Mapping) -> "PlanView | None":
        """None for a single change (no `spec.schedule`)."""
        spec, status = _spec(obj), _status(obj)
        raw = spec.get("schedule")
        if not isinstance(raw, list) or not raw:
            return None
        receipts: dict[dt.datetime, Mapping] = {}
        for item in status.get("steps") or []:
            at = _when(item.get("at")) if isinstance(item, Mapping) else None
            if at is not None:
                receipts[at] = item
        steps = []
        for i, item in enumerate(raw):
            item = item if isinstance(item, Mapping) else {}
            at = _when(item.get("at"))
            steps.append(ScheduledStep(
                index=i, at=at, at_text=format_time(at) if at else str(item.get("at", "?")),
                replicas=_integer(item.get("replicas")), predicted_peak=_figure(item.get("predictedPeak")),
                upper_bound=_figure(item.get("upperBound")), receipt=receipts.get(at) if at else None))
        return cls(steps=tuple(steps), ends_at=_when(spec.get("endsAt")), phase=str(status.get("phase") or ""),
                   current=_integer(spec.get("currentReplicas")))

    @property
    def open(self) -> bool:
        """The plan may still apply steps (not in a terminal phase)."""
        return self.phase in OPEN_PHASES

    def ended(self, now: dt.datetime) -> bool:
        return self.ends_at is not None and now >= self.ends_at

    def in_effect(self, now: dt.datetime) -> ScheduledStep | None:
        """The step the schedule puts in effect at `now` (the last whose time has come),
        while the plan is open and has not ended; for a Pending plan, the step an approval
        now would apply."""
        if not self.open or self.ended(now):
            return None
        due = [s for s in self.steps if s.at is not None and s.at <= now]
        return due[-1] if due else None

    def next(self, now: dt.datetime) -> ScheduledStep | None:
        """The next step due after `now`, while the plan is open."""
        if not self.open or self.ended(now):
            return None
        return next((s for s in self.steps if s.at is not None and s.at > now
                     and (self.ends_at is None or s.at < self.ends_at)), None)

    @property
    def every(self) -> float | None:
        """The usual length of a step (the most common gap between steps; the first and the
        last may be shorter), in seconds; None for a plan of one step."""
        times = [s.at for s in self.steps if s.at is not None]
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        return Counter(gaps).most_common(1)[0][0] if gaps else None

    @property
    def replicas(self) -> list[int]:
        return [s.replicas for s in self.steps if s.replicas is not None]

    def summary(self, now: dt.datetime) -> str:
        """'24 steps every 1h, 2026-11-27T00:00:00Z to 2026-11-28T00:00:00Z (ends in 23h), 2 - 14 replicas'."""
        count = len(self.steps)
        text = f"{count} step{'s' if count != 1 else ''}"
        if self.every:
            text += f" every {length(self.every)}"
        first = self.steps[0].at_text
        if self.ends_at is not None:
            ends = format_time(self.ends_at)
            text += f", {first} to {ends} ({'ended' if self.ended(now) else 'ends'} {until(ends, now)})"
        else:
            text += f" from {first}, no end"
        if self.replicas:
            text += f", {min(self.replicas)} - {max(self.replicas)} replicas"
        return text

    def line(self, now: dt.datetime) -> str:
        """The plan in one line, for lists: 'plan: 24 steps every 1h, 4 -> 9 first, 2 - 14 replicas, ends ...'."""
        count = len(self.steps)
        text = f"plan: {count} step{'s' if count != 1 else ''}"
        if self.every:
            text += f" every {length(self.every)}"
        first = self.steps[0].replicas
        text += f", {self.current} -> {first} first"
        if self.replicas:
            text += f", {min(self.replicas)} - {max(self.replicas)} replicas"
        if self.ends_at is not None:
            text += f", ends {format_time(self.ends_at)}"
        return text


def _receipt_change(receipt: Mapping[str, Any] | None) -> str:
    """'4 -> 9' for an applied step (what it found, what it set)."""
    if not receipt or receipt.get("outcome") != StepOutcome.APPLIED:
        return ""
    previous, replicas = receipt.get("previousReplicas"), receipt.get("replicas")
    return f"{previous if previous is not None else '?'} -> {replicas}"


def schedule_table(plan: PlanView, now: dt.datetime, indent: str = "  ") -> str:
    """The schedule, one row per step: when, how many replicas, the forecast it was sized
    for, and its receipt once it came due (outcome, applied at, previous -> replicas). The
    step in effect is marked `now`, the next one `next`. Receipts that are not Applied are
    followed by their reason and message."""
    current, following = plan.in_effect(now), plan.next(now)
    rows = []
    for step in plan.steps:
        mark = "now" if step is current else "next" if step is following else ""
        receipt = step.receipt or {}
        applied_at = _when(receipt.get("appliedAt"))
        rows.append([mark, step.number, step.at_text, step.replicas if step.replicas is not None else NONE,
                     number(step.predicted_peak), number(step.upper_bound), receipt.get("outcome"),
                     format_time(applied_at) if applied_at else "", _receipt_change(receipt)])
    lines = [table(["", "STEP", "AT", "REPLICAS", "PREDICTED-PEAK", "UPPER-BOUND", "OUTCOME", "APPLIED-AT",
                    "CHANGE"], rows, indent=indent, empty="")]
    for step in plan.steps:
        receipt = step.receipt or {}
        if step.outcome and step.outcome != StepOutcome.APPLIED:
            why = " ".join(filter(None, [f"({receipt.get('reason')})" if receipt.get("reason") else "",
                                         str(receipt.get("message") or "")]))
            lines.append(f"{indent}step {step.number}: {step.outcome}{' ' + why if why else ''}")
    return "\n".join(lines)


def plan_checks(proposal: Mapping, policy_spec: Mapping) -> list[tuple[str, bool]]:
    """(line, holds) for the operator's check of a whole plan at approval: every step within
    minReplicas..maxReplicas, every change (from currentReplicas to the first step, then
    between consecutive steps) within maxStepUp / maxStepDown (`rules.Bounds`, as for a
    single change), and consecutive steps at least cooldownSeconds apart. A summary line
    per rule, then each step that breaks one (the first five, the rest counted)."""
    plan = PlanView.of(proposal)
    if plan is None or not plan.replicas:
        return []
    bounds = Bounds.of_spec(policy_spec)
    cooldown = policy_spec.get("cooldownSeconds", Policy.cooldown_seconds)
    cooldown = cooldown if isinstance(cooldown, int) and not isinstance(cooldown, bool) else Policy.cooldown_seconds
    problems: list[str] = []
    broken: set[str] = set()
    ups: list[int] = []
    downs: list[int] = []
    gaps: list[float] = []
    previous, previous_at = plan.current, None
    for step in plan.steps:
        if step.replicas is None:
            continue
        where = f"step {step.number} (at {step.at_text})"
        if previous is not None:
            for check in bounds.check(step.replicas, previous):
                if not check.holds:
                    broken.add(check.limit)
                    problems.append(f"{where}: {check.problem}")
            if step.replicas != previous:
                (ups if step.replicas > previous else downs).append(step.replicas - previous)
        if previous_at is not None and step.at is not None:
            gap = (step.at - previous_at).total_seconds()
            gaps.append(gap)
            if gap < cooldown:
                broken.add("cooldownSeconds")
                problems.append(f"{where}: {length(gap)} after the step before, less than cooldownSeconds "
                                f"{cooldown}")
        previous, previous_at = step.replicas, step.at
    low, high = min(plan.replicas), max(plan.replicas)
    span = f"{low} - {high}" if low != high else f"{low}"
    lines: list[tuple[str, bool]] = []
    if bounds.min_replicas is not None or bounds.max_replicas is not None:
        lines.append((f"{bounds.min_replicas if bounds.min_replicas is not None else 0} <= every step's replicas "
                      f"({span})" + (f" <= {bounds.max_replicas}" if bounds.max_replicas is not None else ""),
                      not broken & {MIN_REPLICAS, MAX_REPLICAS}))
    if bounds.max_step_up is not None:
        largest = f"largest +{max(ups)}" if ups else "no step up"
        lines.append((f"every step up <= maxStepUp {bounds.max_step_up} ({largest})", MAX_STEP_UP not in broken))
    if bounds.max_step_down is not None:
        largest = f"largest {min(downs)}" if downs else "no step down"
        lines.append((f"every step down within maxStepDown {bounds.max_step_down} ({largest})",
                      MAX_STEP_DOWN not in broken))
    if gaps:
        lines.append((f"steps at least cooldownSeconds {length(cooldown)} apart (closest {length(min(gaps))})",
                      "cooldownSeconds" not in broken))
    lines += [(problem, False) for problem in problems[:PLAN_PROBLEMS_SHOWN]]
    if len(problems) > PLAN_PROBLEMS_SHOWN:
        lines.append((f"and {len(problems) - PLAN_PROBLEMS_SHOWN} more", False))
    return lines


def next_step_text(plan: PlanView, now: dt.datetime) -> str:
    """'step 2 at 2026-11-27T01:00:00Z (in 42m): 9 -> 12 replicas', or why there is none."""
    following = plan.next(now)
    if following is not None:
        before = plan.steps[following.index - 1].replicas if following.index else plan.current
        return (f"step {following.number} at {following.at_text} ({until(following.at_text, now)}): "
                f"{before} -> {following.replicas} replicas")
    if not plan.open:
        return f"none: the plan is {plan.phase}"
    if plan.ends_at is not None:
        ends = format_time(plan.ends_at)
        return f"none: the plan {'ended' if plan.ended(now) else 'ends'} at {ends} ({until(ends, now)})"
    return "none"


# -- list ----------------------------------------------------------------------------------
COLUMNS = ["NAME", "TARGET", "CURRENT", "PROPOSED", "PHASE", "APPROVED-BY", "AGE"]
# A plan's columns (empty for a single change): its steps, the next one due, its end.
WIDE_COLUMNS = ["POLICY", "VALID-UNTIL", "STEPS", "NEXT-STEP", "ENDS-AT", "PROPOSED-BY", "REASON"]


def proposal_row(obj: Mapping, now: dt.datetime, wide: bool = False) -> list[Any]:
    meta, spec, status = _meta(obj), _spec(obj), _status(obj)
    verdict, user = decided_by(obj)
    row = [meta.get("name"), target_text(obj), spec.get("currentReplicas"), spec.get("replicas"),
           status.get("phase"), user if verdict == "approved" else None, age(meta.get("creationTimestamp"), now)]
    if wide:
        plan = PlanView.of(obj)
        following = plan.next(now) if plan else None
        row += [(spec.get("policyRef") or {}).get("name"), spec.get("validUntil"),
                len(plan.steps) if plan else None, following.at_text if following else None,
                format_time(plan.ends_at) if plan and plan.ends_at else None,
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


# -- approve --all -------------------------------------------------------------------------
def not_approvable(obj: Mapping, now: dt.datetime) -> str:
    """Why `approve --all` does not offer (or no longer approves) this proposal; "" when it
    is waiting for a decision: Pending (or not yet seen by the operator), undecided, and
    before its validUntil."""
    phase = _status(obj).get("phase") or ""
    if phase not in ("", Phase.PENDING):
        return f"it is {phase} now"
    decision = decision_of(obj)
    if decision.approved:
        return f"already approved by {decision.approved_by or '(nobody named)'}"
    if decision.rejected:
        return f"already rejected by {decision.rejected_by or '(nobody named)'}"
    valid_until = _when(_spec(obj).get("validUntil"))
    if valid_until is not None and valid_until <= now:
        return f"its validUntil ({format_time(valid_until)}) has passed"
    return ""


def pending_approvals(items: Sequence[Mapping], now: dt.datetime) -> list[Mapping]:
    """The proposals `approve --all` offers, in order of name (as `list` shows them)."""
    return sorted((o for o in items if not not_approvable(o, now)), key=lambda o: str(_meta(o).get("name", "")))


def change_text(obj: Mapping, now: dt.datetime) -> str:
    """A proposal's change in one line: '4 -> 9 (+5)', or the plan's summary."""
    plan = PlanView.of(obj)
    if plan is not None:
        return plan.line(now)
    current, replicas = _integer(_spec(obj).get("currentReplicas")), _integer(_spec(obj).get("replicas"))
    text = f"{_spec(obj).get('currentReplicas')} -> {_spec(obj).get('replicas')}"
    if current is not None and replicas is not None:
        text += f" ({replicas - current:+d})"
    return text


def approval_table(pending: Sequence[Mapping], items: Sequence[Mapping], now: dt.datetime) -> str:
    """What `approve --all` would approve, one line each: target, change or plan, and how
    long it stays approvable; an active plan of the same policy that an approval replaces
    is named (an active plan is superseded only by a newer approved proposal)."""
    active: dict[str, list[str]] = {}
    for other in items:
        if _status(other).get("phase") == Phase.ACTIVE:
            active.setdefault(str((_spec(other).get("policyRef") or {}).get("name")), []).append(
                str(_meta(other).get("name")))
    rows = []
    for obj in pending:
        change = change_text(obj, now)
        replaced = [n for n in active.get(str((_spec(obj).get("policyRef") or {}).get("name")), [])
                    if n != _meta(obj).get("name")]
        if replaced:
            change += f"; replaces the active plan {', '.join(replaced)}"
        valid_until = _spec(obj).get("validUntil")
        rows.append([_meta(obj).get("name"), target_text(obj), change, f"{valid_until} ({until(valid_until, now)})"])
    return table(["NAME", "TARGET", "CHANGE", "VALID-UNTIL"], rows)


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
    plan = PlanView.of(proposal)
    change = f"{current} -> {replicas} replicas"
    if isinstance(current, int) and isinstance(replicas, int):
        change += f" ({replicas - current:+d})"
    if plan is not None:
        change += " at the plan's first step"
    lines = [
        _field("Name", meta.get("name")),
        _field("Namespace", meta.get("namespace")),
        _field("Policy", (spec.get("policyRef") or {}).get("name")),
        _field("Target", f"{ref.get('kind')}/{ref.get('name')} ({ref.get('apiVersion')})"),
        _field("Change", change),
    ]
    if plan is not None:
        lines += [_field("Plan", plan.summary(now)), _field("Next step", next_step_text(plan, now))]
    lines += [
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

    if plan is not None:
        lines.append("Schedule (now: the step in effect, next: the one due next; a receipt once a step came due):")
        lines.append(schedule_table(plan, now))

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
        checks = plan_checks(proposal, pspec) if plan is not None else bounds_check(proposal, pspec)
        for text, holds in checks:
            lines.append(f"  {'ok ' if holds else 'OUT'} {text}")
    else:
        lines.append(f"  <{policy_error or 'not found'}>")

    lines.append("Status:")
    lines += ["  " + _field(label, value, 13) for label, value in [
        ("Phase", status.get("phase")), ("Reason", status.get("reason")), ("Message", status.get("message")),
    ]]
    for label, key in [("Approved at", "approvedAt"), ("Applied at", "appliedAt"),
                       ("Applied", "appliedReplicas"), ("Previous", "previousReplicas"),
                       ("Next step", "nextStepAt"), ("Finished at", "finishedAt")]:
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
