"""Typed views of ScalingPolicy and ScalingProposal: names of the contract, and
parsing that turns an API object into plain values or a clear `InvalidObject`.

Ground floor: imports nothing else of scalegate and does no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

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
    APPLIED = "Applied"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    SUPERSEDED = "Superseded"
    STALE = "Stale"
    FAILED = "Failed"

    TERMINAL = frozenset({APPLIED, REJECTED, EXPIRED, SUPERSEDED, STALE, FAILED})
    ALL = (PENDING, APPROVED, APPLIED, REJECTED, EXPIRED, SUPERSEDED, STALE, FAILED)


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


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


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


@dataclass(frozen=True)
class ForecastSpec:
    query: str
    capacity_per_replica: float
    horizon_seconds: int = 3600
    lookback_seconds: int = 14 * 86400
    step_seconds: int = 300
    confidence: float = 0.95

    @classmethod
    def parse(cls, raw: Any, where: str = "spec.forecast") -> "ForecastSpec | None":
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise InvalidObject(f"{where} must be an object")
        capacity = raw.get("capacityPerReplica")
        if isinstance(capacity, bool) or not isinstance(capacity, (int, float)) or capacity <= 0:
            raise InvalidObject(f"{where}.capacityPerReplica must be a number > 0, got {capacity!r}")
        confidence = raw.get("confidence", 0.95)
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
            raise InvalidObject(f"{where}.confidence must be in [0.5, 1), got {confidence!r}")
        return cls(
            query=_str(raw.get("query"), f"{where}.query"),
            capacity_per_replica=float(capacity),
            horizon_seconds=_int(raw.get("horizonSeconds", 3600), f"{where}.horizonSeconds", minimum=60),
            lookback_seconds=_int(raw.get("lookbackSeconds", 14 * 86400), f"{where}.lookbackSeconds", minimum=3600),
            step_seconds=_int(raw.get("stepSeconds", 300), f"{where}.stepSeconds", minimum=1),
            confidence=float(confidence),
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
    max_step_up: int | None
    max_step_down: int | None
    cooldown_seconds: int
    proposal_ttl_seconds: int
    suspend: bool
    forecast: ForecastSpec | None
    last_applied_time: dt.datetime | None

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
        suspend = spec.get("suspend", False)
        if not isinstance(suspend, bool):
            raise InvalidObject("spec.suspend must be true or false")
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            target=TargetRef.parse(spec.get("targetRef"), "spec.targetRef"),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            max_step_up=_int(spec.get("maxStepUp"), "spec.maxStepUp", optional=True, minimum=1),
            max_step_down=_int(spec.get("maxStepDown"), "spec.maxStepDown", optional=True, minimum=1),
            cooldown_seconds=_int(spec.get("cooldownSeconds", 0), "spec.cooldownSeconds"),
            proposal_ttl_seconds=_int(spec.get("proposalTTLSeconds", 3600), "spec.proposalTTLSeconds", minimum=1),
            suspend=suspend,
            forecast=ForecastSpec.parse(spec.get("forecast")),
            last_applied_time=parse_time(status.get("lastAppliedTime")),
        )


@dataclass(frozen=True)
class Decision:
    """What people said about a proposal, read from its decision annotations."""

    approved: bool
    approved_by: str
    rejected: bool
    rejected_by: str
    proposed_by: str
    approval_ref: str
    reason: str

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> "Decision":
        ann = annotations or {}
        return cls(
            approved=str(ann.get(APPROVED, "")).strip().lower() == "true",
            approved_by=str(ann.get(APPROVED_BY, "")).strip(),
            rejected=str(ann.get(REJECTED, "")).strip().lower() == "true",
            rejected_by=str(ann.get(REJECTED_BY, "")).strip(),
            proposed_by=str(ann.get(PROPOSED_BY, "")).strip(),
            approval_ref=str(ann.get(APPROVAL_REF, "")).strip(),
            reason=str(ann.get(DECISION_REASON, "")).strip(),
        )


@dataclass(frozen=True)
class ApplyIntent:
    """Written to status before the scale write, so a restart can tell whether it happened."""

    replicas: int
    previous_replicas: int
    resource_version: str
    started_at: dt.datetime

    @classmethod
    def parse(cls, raw: Any) -> "ApplyIntent | None":
        if not isinstance(raw, Mapping) or not raw:
            return None
        return cls(
            replicas=_int(raw.get("replicas"), "status.applying.replicas"),
            previous_replicas=_int(raw.get("previousReplicas"), "status.applying.previousReplicas"),
            resource_version=str(raw.get("resourceVersion") or ""),
            started_at=parse_time(raw.get("startedAt")) or dt.datetime.now(dt.timezone.utc),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "previousReplicas": self.previous_replicas,
                "resourceVersion": self.resource_version, "startedAt": format_time(self.started_at)}


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
    decision: Decision
    phase: str
    intent: ApplyIntent | None
    forecast: Mapping[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.phase in Phase.TERMINAL

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
            decision=Decision.from_annotations(meta.get("annotations")),
            phase=phase,
            intent=ApplyIntent.parse(status.get("applying")),
            forecast=spec.get("forecast") or {},
        )
