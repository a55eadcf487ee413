"""Typed views of ScalingPolicy and ScalingProposal: names of the contract, and
parsing that turns an API object into plain values or a clear `InvalidObject`.

One home each for the rules of reading the contract's objects: the defaults of absent
fields (the CRDs' own, see tests/unit/test_crd_defaults.py), the decision annotations
(`DecisionAnnotations`, for the operator and the plugin alike) and the evidence a proposal
carries (`Evidence`, written by the forecaster and read back by the plugin).

Ground floor: imports only `rules` (the contract's replica rules) and does no I/O.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, overload

import yaml

from .rules import Bounds, replicas_for

GROUP = "scalegate.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
POLICY_KIND, POLICY_PLURAL = "ScalingPolicy", "scalingpolicies"
PROPOSAL_KIND, PROPOSAL_PLURAL = "ScalingProposal", "scalingproposals"

# Decision annotations: the only annotations the admission policy judges.
APPROVED = f"{GROUP}/approved"
APPROVED_BY = f"{GROUP}/approved-by"
REJECTED = f"{GROUP}/rejected"
REJECTED_BY = f"{GROUP}/rejected-by"
PROPOSED_BY = f"{GROUP}/proposed-by"
APPROVAL_REF = f"{GROUP}/approval-ref"  # e.g. the merge request that approved it (GitOps)
DECISION_REASON = f"{GROUP}/decision-reason"  # free text from `kubectl scalegate approve --reason`
POLICY_LABEL = f"{GROUP}/policy"
APPROVE_VERB = "approve"


class Phase:
    PENDING = "Pending"
    APPROVED = "Approved"
    ACTIVE = "Active"  # a plan with steps still to come (not terminal)
    APPLIED = "Applied"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    SUPERSEDED = "Superseded"
    STALE = "Stale"
    FAILED = "Failed"

    TERMINAL = frozenset({APPLIED, REJECTED, EXPIRED, SUPERSEDED, STALE, FAILED})
    ALL = (PENDING, APPROVED, ACTIVE, APPLIED, REJECTED, EXPIRED, SUPERSEDED, STALE, FAILED)


#: Server-side filter for proposals that may still need the operator (the CRD declares
#: status.phase a selectable field). A proposal that turns terminal leaves the watch as a
#: DELETED event, so terminal ones cost the operator nothing, however many there are.
OPEN_PROPOSALS_FIELD_SELECTOR = ",".join(f"status.phase!={phase}" for phase in sorted(Phase.TERMINAL))


_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_API_VERSION = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9]+((alpha|beta)[0-9]+)?")
_KIND = re.compile(r"[A-Z][A-Za-z0-9]*")


class InvalidObject(ValueError):
    """An object the API server accepted but scalegate cannot act on safely."""


def parse_time(value: Any) -> dt.datetime | None:
    """RFC 3339 timestamp (as the API server writes it) to an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if not isinstance(value, str):
        raise InvalidObject(f"expected an RFC 3339 timestamp, got {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):  # RFC 3339 allows either case
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise InvalidObject(f"{value!r} is not an RFC 3339 timestamp") from err
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    try:
        parsed.astimezone(dt.timezone.utc)
    except OverflowError as err:  # e.g. 0001-01-01T00:00:00+01:00: no such instant in UTC
        raise InvalidObject(f"{value!r} is outside the range of representable times") from err
    return parsed


def read_time(value: Any) -> dt.datetime | None:
    """A time read from status (which others may write), for scheduling, display and
    metrics only: None when absent or unreadable, never an error."""
    try:
        return parse_time(value)
    except InvalidObject:
        return None


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@overload
def _int(value: Any, where: str, *, optional: Literal[False] = False, minimum: int | None = 0) -> int: ...
@overload
def _int(value: Any, where: str, *, optional: Literal[True], minimum: int | None = 0) -> int | None: ...
def _int(value: Any, where: str, *, optional: bool = False, minimum: int | None = 0) -> int | None:
    if value is None:
        if optional:
            return None
        raise InvalidObject(f"{where} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidObject(f"{where} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidObject(f"{where} must be >= {minimum}, got {value}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidObject(f"{where} must be a non-empty string")
    return value


@dataclass(frozen=True)
class TargetRef:
    api_version: str
    kind: str
    name: str

    @property
    def group(self) -> str:
        return self.api_version.split("/", 1)[0] if "/" in self.api_version else ""

    @property
    def version(self) -> str:
        return self.api_version.split("/", 1)[-1]

    def same_object(self, other: "TargetRef") -> bool:
        """Same workload: group, kind and name (a version change is the same object)."""
        return (self.group, self.kind, self.name) == (other.group, other.kind, other.name)

    def describe(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def parse(cls, raw: Any, where: str) -> "TargetRef":
        if not isinstance(raw, Mapping):
            raise InvalidObject(f"{where} must be an object with apiVersion, kind and name")
        ref = cls(
            api_version=_str(raw.get("apiVersion"), f"{where}.apiVersion"),
            kind=_str(raw.get("kind"), f"{where}.kind"),
            name=_str(raw.get("name"), f"{where}.name"),
        )
        # The same patterns as the CRDs: these strings become parts of request paths.
        for field_name, value, pattern in (("apiVersion", ref.api_version, _API_VERSION),
                                           ("kind", ref.kind, _KIND), ("name", ref.name, _NAME)):
            if not pattern.fullmatch(value):
                raise InvalidObject(f"{where}.{field_name} {value!r} is not a valid {field_name}")
        return ref

    def to_dict(self) -> dict[str, str]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}


# Defaults: each field's default is the CRD's (the API server fills it in on create), and
# parsing an object without the field assumes the same; tests/unit/test_crd_defaults.py
# compares every `default:` in crds/ with these.

@dataclass(frozen=True)
class ForecastSpec:
    """A policy's `spec.forecast`: how its load is forecast."""

    query: str
    capacity_per_replica: float
    horizon_seconds: int = 3600
    lookback_seconds: int = 14 * 86400
    step_seconds: int = 300
    confidence: float = 0.95
    interval_seconds: int = 900
    plan: PlanSettings | None = None  # planHorizonSeconds and planStepSeconds, see PlanSettings

    @classmethod
    def parse(cls, raw: Any, where: str = "spec.forecast") -> "ForecastSpec | None":
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise InvalidObject(f"{where} must be an object")
        capacity = raw.get("capacityPerReplica")
        if isinstance(capacity, bool) or not isinstance(capacity, (int, float)) or capacity <= 0:
            raise InvalidObject(f"{where}.capacityPerReplica must be a number > 0, got {capacity!r}")
        confidence = raw.get("confidence", cls.confidence)
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
            raise InvalidObject(f"{where}.confidence must be in [0.5, 1), got {confidence!r}")
        return cls(
            query=_str(raw.get("query"), f"{where}.query"),
            capacity_per_replica=float(capacity),
            horizon_seconds=_int(raw.get("horizonSeconds", cls.horizon_seconds), f"{where}.horizonSeconds",
                                 minimum=60),
            lookback_seconds=_int(raw.get("lookbackSeconds", cls.lookback_seconds), f"{where}.lookbackSeconds",
                                  minimum=3600),
            step_seconds=_int(raw.get("stepSeconds", cls.step_seconds), f"{where}.stepSeconds", minimum=1),
            confidence=float(confidence),
            interval_seconds=_int(raw.get("intervalSeconds", cls.interval_seconds), f"{where}.intervalSeconds",
                                  minimum=60),
            plan=PlanSettings.parse(raw, where),
        )


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    uid: str
    generation: int
    target: TargetRef
    min_replicas: int
    max_replicas: int
    max_step_up: int | None = None
    max_step_down: int | None = None
    cooldown_seconds: int = 600
    proposal_ttl_seconds: int = 3600
    suspend: bool = False
    forecast: ForecastSpec | None = None
    last_applied_time: dt.datetime | None = None

    @property
    def bounds(self) -> Bounds:
        """The replica bounds and step limits every applied proposal must respect."""
        return Bounds(self.min_replicas, self.max_replicas, self.max_step_up, self.max_step_down)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> "Policy":
        meta = body.get("metadata") or {}
        spec = body.get("spec")
        status = body.get("status") or {}
        if not isinstance(spec, Mapping):
            raise InvalidObject("spec is missing")
        min_replicas = _int(spec.get("minReplicas"), "spec.minReplicas")
        max_replicas = _int(spec.get("maxReplicas"), "spec.maxReplicas")
        if max_replicas < min_replicas:
            raise InvalidObject(f"spec.maxReplicas ({max_replicas}) is below spec.minReplicas ({min_replicas})")
        suspend = spec.get("suspend", cls.suspend)
        if not isinstance(suspend, bool):
            raise InvalidObject("spec.suspend must be true or false")
        policy = cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            target=TargetRef.parse(spec.get("targetRef"), "spec.targetRef"),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            max_step_up=_int(spec.get("maxStepUp"), "spec.maxStepUp", optional=True, minimum=1),
            max_step_down=_int(spec.get("maxStepDown"), "spec.maxStepDown", optional=True, minimum=1),
            cooldown_seconds=_int(spec.get("cooldownSeconds", cls.cooldown_seconds), "spec.cooldownSeconds"),
            proposal_ttl_seconds=_int(spec.get("proposalTTLSeconds", cls.proposal_ttl_seconds),
                                      "spec.proposalTTLSeconds", minimum=1),
            suspend=suspend,
            forecast=ForecastSpec.parse(spec.get("forecast")),
            last_applied_time=parse_time(status.get("lastAppliedTime")),
        )
        _check_plan_cooldown(policy)
        return policy


@dataclass(frozen=True)
class DecisionAnnotations:
    """What people said about a proposal: its decision annotations, parsed once for the
    operator and the plugin alike.

    `approved` and `rejected` hold only for the value "true", exactly as the admission
    policy accepts it (the contract's value); anything else (" True ", "yes") decides
    nothing, so a value the API server would have refused never approves. Names and texts
    are read without surrounding blanks.
    """

    approved: bool
    approved_by: str
    rejected: bool
    rejected_by: str
    proposed_by: str
    approval_ref: str
    reason: str

    @classmethod
    def parse(cls, annotations: Mapping[str, str] | None) -> "DecisionAnnotations":
        ann = annotations or {}
        return cls(
            approved=ann.get(APPROVED) == "true",
            approved_by=str(ann.get(APPROVED_BY, "")).strip(),
            rejected=ann.get(REJECTED) == "true",
            rejected_by=str(ann.get(REJECTED_BY, "")).strip(),
            proposed_by=str(ann.get(PROPOSED_BY, "")).strip(),
            approval_ref=str(ann.get(APPROVAL_REF, "")).strip(),
            reason=str(ann.get(DECISION_REASON, "")).strip(),
        )


def _number(value: Any) -> float | None:
    """A finite number, else None (JSON has no NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Evidence:
    """A proposal's `spec.forecast`: why this number of replicas, and from what data.

    The forecaster writes it (`to_spec`), the plugin reads it back (`parse`); the fields
    are those of the CRD (tests/unit/test_evidence.py compares them). Every field may be
    None: a proposal written by hand carries what its author chose, and `parse` is lenient
    (a field of the wrong type reads as None), because showing a strange proposal is
    better than refusing to.
    """

    model: str | None = None
    query: str | None = None
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    points: int | None = None
    horizon_seconds: int | None = None
    resolution_seconds: int | None = None
    predicted_peak: float | None = None
    peak_time: dt.datetime | None = None
    upper_bound: float | None = None
    lower_bound: float | None = None
    confidence: float | None = None
    coverage: float | None = None
    capacity_per_replica: float | None = None
    backtest_metric: str | None = None
    backtest_value: float | None = None

    def to_spec(self) -> dict[str, Any]:
        """The `spec.forecast` object; absent and non-finite figures are left out, load
        figures rounded to 6 decimals, times to whole seconds."""
        def rounded(value: float | None) -> float | None:
            value = _number(value)
            return None if value is None else round(value, 6)

        def stamp(value: dt.datetime | None) -> str | None:
            return None if value is None else format_time(value)

        def whole(value: int | None) -> int | None:
            return None if value is None else int(value)

        spec = {
            "model": self.model,
            "query": self.query,
            "window": {"start": stamp(self.window_start), "end": stamp(self.window_end),
                       "points": whole(self.points)},
            "horizonSeconds": whole(self.horizon_seconds),
            "resolutionSeconds": whole(self.resolution_seconds),
            "predictedPeak": rounded(self.predicted_peak),
            "peakTime": stamp(self.peak_time),
            "upperBound": rounded(self.upper_bound),
            "lowerBound": rounded(self.lower_bound),
            "confidence": _number(self.confidence),
            "coverage": rounded(self.coverage),
            "capacityPerReplica": _number(self.capacity_per_replica),
            "backtestError": {"metric": self.backtest_metric, "value": rounded(self.backtest_value)},
        }
        return _without_none(spec)

    @classmethod
    def parse(cls, raw: Any) -> "Evidence":
        """Read a `spec.forecast` back, leniently (see the class)."""
        forecast = raw if isinstance(raw, Mapping) else {}
        window = _mapping(forecast.get("window"))
        backtest = _mapping(forecast.get("backtestError"))
        return cls(
            model=_text(forecast.get("model")),
            query=_text(forecast.get("query")),
            window_start=read_time(window.get("start")),
            window_end=read_time(window.get("end")),
            points=_whole(window.get("points")),
            horizon_seconds=_whole(forecast.get("horizonSeconds")),
            resolution_seconds=_whole(forecast.get("resolutionSeconds")),
            predicted_peak=_number(forecast.get("predictedPeak")),
            peak_time=read_time(forecast.get("peakTime")),
            upper_bound=_number(forecast.get("upperBound")),
            lower_bound=_number(forecast.get("lowerBound")),
            confidence=_number(forecast.get("confidence")),
            coverage=_number(forecast.get("coverage")),
            capacity_per_replica=_number(forecast.get("capacityPerReplica")),
            backtest_metric=_text(backtest.get("metric")),
            backtest_value=_number(backtest.get("value")),
        )

    @property
    def sized_for(self) -> float | None:
        """The load the replicas are sized for: the interval's upper bound, else the peak."""
        return self.upper_bound if self.upper_bound is not None else self.predicted_peak

    @property
    def needed(self) -> int | None:
        """Replicas that serve `sized_for` at `capacity_per_replica` each (`rules.replicas_for`)."""
        if self.sized_for is None or not self.capacity_per_replica or self.capacity_per_replica < 0:
            return None
        return replicas_for(self.sized_for, self.capacity_per_replica)

    @property
    def horizon_end(self) -> dt.datetime | None:
        """The end of the time the forecast covers."""
        if self.window_end is None or self.horizon_seconds is None:
            return None
        return self.window_end + dt.timedelta(seconds=self.horizon_seconds)


def _without_none(tree: dict[str, Any]) -> dict[str, Any]:
    """The tree without None values, and without objects left empty."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _without_none(value) or None
        if value is not None:
            out[key] = value
    return out


# -- plans ---------------------------------------------------------------------------------
# A proposal may carry a plan (spec.schedule): the replicas for each step of the next
# hours, approved once and applied step by step. The limits are the CRDs'; parsing refuses
# what the CRDs refuse, so an object stored before a rule existed is not acted on.

#: Most steps in one plan (the CRDs' maxItems of spec.schedule and status.steps, and the
#: most planHorizonSeconds / planStepSeconds): a day of 5-minute steps.
MAX_PLAN_STEPS = 288
#: Longest plan, first step to endsAt (the CRDs' limit, and planHorizonSeconds' maximum).
MAX_PLAN_SPAN = dt.timedelta(days=7)


@dataclass(frozen=True)
class PlanSettings:
    """A policy's plan settings (`spec.forecast.planHorizonSeconds` and `planStepSeconds`):
    how far one plan reaches and how long each of its steps lasts. Both or neither; without
    them the forecaster proposes single changes."""

    horizon_seconds: int
    step_seconds: int

    @property
    def steps(self) -> int:
        """Steps in one plan."""
        return self.horizon_seconds // self.step_seconds

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str = "spec.forecast") -> "PlanSettings | None":
        """From a policy's `spec.forecast`; None when it sets neither field. `stepSeconds`
        and `lookbackSeconds` are read with the CRD's defaults, as `ForecastSpec` reads them."""
        horizon = _int(raw.get("planHorizonSeconds"), f"{where}.planHorizonSeconds", optional=True, minimum=60)
        step = _int(raw.get("planStepSeconds"), f"{where}.planStepSeconds", optional=True, minimum=60)
        if horizon is None and step is None:
            return None
        if horizon is None or step is None:
            raise InvalidObject(f"{where}.planHorizonSeconds and {where}.planStepSeconds go together: "
                                "set both or neither")
        if horizon > MAX_PLAN_SPAN.total_seconds():
            raise InvalidObject(f"{where}.planHorizonSeconds must be at most {int(MAX_PLAN_SPAN.total_seconds())}, "
                                f"got {horizon}")
        if horizon % step:
            raise InvalidObject(f"{where}.planHorizonSeconds ({horizon}) must be a multiple of "
                                f"{where}.planStepSeconds ({step})")
        if horizon // step > MAX_PLAN_STEPS:
            raise InvalidObject(f"a plan may have at most {MAX_PLAN_STEPS} steps; {where}.planHorizonSeconds / "
                                f"planStepSeconds is {horizon // step}")
        resolution = _int(raw.get("stepSeconds", ForecastSpec.step_seconds), f"{where}.stepSeconds", minimum=1)
        if step < resolution:
            raise InvalidObject(f"{where}.planStepSeconds ({step}) must be at least {where}.stepSeconds ({resolution})")
        lookback = _int(raw.get("lookbackSeconds", ForecastSpec.lookback_seconds), f"{where}.lookbackSeconds")
        if lookback < 2 * horizon:
            raise InvalidObject(f"{where}.lookbackSeconds ({lookback}) must cover at least two plan horizons "
                                f"({2 * horizon})")
        return cls(horizon_seconds=horizon, step_seconds=step)


def _check_plan_cooldown(policy: "Policy") -> None:
    """A plan's steps are applies, and the cooldown holds between them."""
    plan = policy.forecast.plan if policy.forecast else None
    if plan is not None and plan.step_seconds < policy.cooldown_seconds:
        raise InvalidObject(f"spec.forecast.planStepSeconds ({plan.step_seconds}) must be at least "
                            f"spec.cooldownSeconds ({policy.cooldown_seconds})")


def _time_of(value: Any, where: str) -> dt.datetime | None:
    """`parse_time`, with the field named in the refusal."""
    try:
        return parse_time(value)
    except InvalidObject as err:
        raise InvalidObject(f"{where}: {err}") from err


def _instant(moment: dt.datetime) -> str:
    """RFC 3339 in UTC, to the microsecond where there is one: two steps of a plan are
    never written as the same time (receipts are keyed by it)."""
    utc = moment.astimezone(dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PlanStep:
    """One step of a plan (`spec.schedule[]`): `replicas` from `at` until the next step's
    `at` (the last one until the plan's `endsAt`), with the forecast it was sized for."""

    at: dt.datetime
    replicas: int
    predicted_peak: float | None = None
    upper_bound: float | None = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> "PlanStep":
        if not isinstance(raw, Mapping):
            raise InvalidObject(f"{where} must be an object with at and replicas")
        at = _time_of(raw.get("at"), f"{where}.at")
        if at is None:
            raise InvalidObject(f"{where}.at is required")
        figures = {}
        for key in ("predictedPeak", "upperBound"):
            value = raw.get(key)
            if value is not None and _number(value) is None:
                raise InvalidObject(f"{where}.{key} must be a finite number, got {value!r}")
            figures[key] = _number(value)
        return cls(at=at, replicas=_int(raw.get("replicas"), f"{where}.replicas"),
                   predicted_peak=figures["predictedPeak"], upper_bound=figures["upperBound"])

    def to_dict(self) -> dict[str, Any]:
        """The `spec.schedule[]` item (figures to 6 decimals)."""
        step: dict[str, Any] = {"at": _instant(self.at), "replicas": self.replicas}
        for key, figure in (("predictedPeak", _number(self.predicted_peak)), ("upperBound", _number(self.upper_bound))):
            if figure is not None:
                step[key] = round(figure, 6)
        return step


def parse_plan(spec: Mapping[str, Any], valid_until: dt.datetime | None
               ) -> tuple[tuple[PlanStep, ...], dt.datetime | None]:
    """A proposal's plan, `(schedule, ends_at)`, or `((), None)` for a single change.

    Refuses (InvalidObject) what the CRD's rules refuse: an empty or too long schedule,
    steps not strictly in order of time, `spec.replicas` other than the first step's, a
    first step after `validUntil`, `endsAt` missing, not after the last step or more than
    7 days after the first, and `endsAt` without a schedule."""
    raw, ends_raw = spec.get("schedule"), spec.get("endsAt")
    if raw is None:
        if ends_raw is not None:
            raise InvalidObject("spec.endsAt belongs to a schedule, and there is none")
        return (), None
    if not isinstance(raw, list) or not raw:
        raise InvalidObject("spec.schedule must be a list of at least one step")
    if len(raw) > MAX_PLAN_STEPS:
        raise InvalidObject(f"spec.schedule may have at most {MAX_PLAN_STEPS} steps, got {len(raw)}")
    schedule = tuple(PlanStep.parse(item, f"spec.schedule[{i}]") for i, item in enumerate(raw))
    for i in range(1, len(schedule)):
        if schedule[i].at <= schedule[i - 1].at:
            raise InvalidObject(f"spec.schedule[{i}].at must be after spec.schedule[{i - 1}].at: "
                                "steps are in order of time")
    replicas = spec.get("replicas")
    if replicas != schedule[0].replicas:
        raise InvalidObject(f"spec.replicas ({replicas!r}) must equal the first step's replicas "
                            f"({schedule[0].replicas})")
    if valid_until is not None and schedule[0].at > valid_until:
        raise InvalidObject("the first step of spec.schedule must not be after spec.validUntil")
    ends_at = _time_of(ends_raw, "spec.endsAt")
    if ends_at is None:
        raise InvalidObject("spec.endsAt is required with a schedule")
    if ends_at <= schedule[-1].at:
        raise InvalidObject("spec.endsAt must be after the last step's at")
    if ends_at - schedule[0].at > MAX_PLAN_SPAN:
        raise InvalidObject("a plan may span at most 7 days from its first step to spec.endsAt")
    return schedule, ends_at


class StepOutcome:
    """What happened to one step of a plan when it came due (`status.steps[].outcome`)."""

    APPLIED = "Applied"    # written to the target (or already in place)
    SKIPPED = "Skipped"    # the policy was suspended
    MISSED = "Missed"      # came due while the operator was down and a later step was in effect
    STALE = "Stale"        # the target was no longer what the previous step left: the plan stopped
    REJECTED = "Rejected"  # outside the policy as it was then: the plan stopped
    FAILED = "Failed"      # see the receipt's reason

    ALL = (APPLIED, SKIPPED, MISSED, STALE, REJECTED, FAILED)


@dataclass(frozen=True)
class StepReceipt:
    """The receipt of one step that came due (`status.steps[]`), keyed by the step's `at`."""

    at: dt.datetime
    replicas: int
    outcome: str
    applied_at: dt.datetime | None = None
    previous_replicas: int | None = None
    reason: str = ""
    message: str = ""

    @classmethod
    def parse(cls, raw: Any, where: str) -> "StepReceipt":
        if not isinstance(raw, Mapping):
            raise InvalidObject(f"{where} must be an object")
        at = _time_of(raw.get("at"), f"{where}.at")
        if at is None:
            raise InvalidObject(f"{where}.at is required")
        outcome = raw.get("outcome")
        if outcome not in StepOutcome.ALL:
            raise InvalidObject(f"{where}.outcome {outcome!r} is not one of {', '.join(StepOutcome.ALL)}")
        return cls(at=at, replicas=_int(raw.get("replicas"), f"{where}.replicas"), outcome=outcome,
                   applied_at=_time_of(raw.get("appliedAt"), f"{where}.appliedAt"),
                   previous_replicas=_int(raw.get("previousReplicas"), f"{where}.previousReplicas", optional=True),
                   reason=str(raw.get("reason") or ""), message=str(raw.get("message") or ""))

    def to_dict(self) -> dict[str, Any]:
        receipt: dict[str, Any] = {"at": _instant(self.at), "replicas": self.replicas, "outcome": self.outcome}
        if self.applied_at is not None:
            receipt["appliedAt"] = format_time(self.applied_at)
        if self.previous_replicas is not None:
            receipt["previousReplicas"] = self.previous_replicas
        if self.reason:
            receipt["reason"] = self.reason
        if self.message:
            receipt["message"] = self.message
        return receipt


def parse_receipts(raw: Any) -> tuple[StepReceipt, ...]:
    """A proposal's `status.steps`; absent is none."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidObject("status.steps must be a list")
    return tuple(StepReceipt.parse(item, f"status.steps[{i}]") for i, item in enumerate(raw))


@dataclass(frozen=True)
class Proposal:
    namespace: str
    name: str
    uid: str
    generation: int
    created: dt.datetime | None
    policy_name: str
    target: TargetRef
    current_replicas: int
    replicas: int
    valid_until: dt.datetime
    reason: str
    decision: DecisionAnnotations
    phase: str
    forecast: Evidence = field(default_factory=Evidence)
    # A plan (see parse_plan); empty and None for a single change.
    schedule: tuple[PlanStep, ...] = ()
    ends_at: dt.datetime | None = None
    next_step_at: dt.datetime | None = None     # status.nextStepAt, the operator's record
    receipts: tuple[StepReceipt, ...] = ()      # status.steps, the operator's record

    @property
    def terminal(self) -> bool:
        return self.phase in Phase.TERMINAL

    @property
    def is_plan(self) -> bool:
        return bool(self.schedule)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> "Proposal":
        meta = body.get("metadata") or {}
        spec = body.get("spec")
        status = body.get("status") or {}
        if not isinstance(spec, Mapping):
            raise InvalidObject("spec is missing")
        policy_ref = spec.get("policyRef")
        if not isinstance(policy_ref, Mapping):
            raise InvalidObject("spec.policyRef must be an object with a name")
        valid_until = parse_time(spec.get("validUntil"))
        if valid_until is None:
            raise InvalidObject("spec.validUntil is required")
        phase = status.get("phase") or ""
        if phase and phase not in Phase.ALL:
            raise InvalidObject(f"status.phase {phase!r} is not a known phase")
        schedule, ends_at = parse_plan(spec, valid_until)
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            created=parse_time(meta.get("creationTimestamp")),
            policy_name=_str(policy_ref.get("name"), "spec.policyRef.name"),
            target=TargetRef.parse(spec.get("targetRef"), "spec.targetRef"),
            current_replicas=_int(spec.get("currentReplicas"), "spec.currentReplicas"),
            replicas=_int(spec.get("replicas"), "spec.replicas"),
            valid_until=valid_until,
            reason=str(spec.get("reason") or ""),
            decision=DecisionAnnotations.parse(meta.get("annotations")),
            phase=phase,
            forecast=Evidence.parse(spec.get("forecast")),
            schedule=schedule,
            ends_at=ends_at,
            next_step_at=_time_of(status.get("nextStepAt"), "status.nextStepAt"),
            receipts=parse_receipts(status.get("steps")),
        )


# -- manifests ----------------------------------------------------------------------------
class _ManifestDumper(yaml.SafeDumper):
    """PyYAML quotes what YAML 1.1 reads as another type, but kubectl's reader also takes
    '1e5', '20e63' or '0o17' for numbers, and such a name or label value would then fail the
    apply ("cannot unmarshal number into ... of type string")."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "'" if _reads_as_number(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _reads_as_number(text: str) -> bool:
    for parse in (float, lambda s: int(s, 0)):
        try:
            parse(text)
            return True
        except ValueError:
            pass
    return False


_ManifestDumper.add_representer(str, _represent_str)


def manifest_yaml(document: Mapping[str, Any]) -> str:
    """`document` as YAML that kubectl reads back as written (keys in their order)."""
    return yaml.dump(document, Dumper=_ManifestDumper, sort_keys=False)
