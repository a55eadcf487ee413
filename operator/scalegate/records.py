"""The operator's own record of what it did with a proposal: where it lives and how it is read.

Status is a record for people, not an authority for the operator: a status writer could set
an Applied proposal back to Pending, a Stale one to Approved, or forge an apply in progress.
So the two facts that must survive any status rewrite live in annotations of the proposal,
which the operator writes through the main resource:

- ``scalegate.io/applying`` (`ApplyIntent`): written just before the scale write, conditioned
  on the proposal's resourceVersion, with the target's uid and ``metadata.generation`` as read
  before the write. After a restart `decision.recover_intent` compares them with the target
  as it is, to tell "our write landed" from "it never did" (or fail closed when it cannot).
- ``scalegate.io/outcome`` (`OutcomeRecord`): the terminal decision (Applied, Stale, Rejected,
  ...), written before status says it. A proposal with an outcome is final whatever its
  status says: the operator restores status from it and never decides again. The garbage
  collector's clock is its ``at``.

Why annotations are out of a status writer's reach: a write to the ``/status`` subresource
of a custom resource changes nothing but status (the API server keeps the rest of the object
as it was). Who may write these two annotations through the main resource is the admission
policy scalegate-proposal-record's job: only the operator's ServiceAccount, never on create,
and an outcome once written is final. Each record also names the proposal's uid, which the
API server assigns on create, so a record copied onto another object (or written into a new
one on a cluster without that policy) is recognised and trusted for nothing.

Pure: parsing and writing JSON only, no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Literal, Mapping, overload

from .model import GROUP, InvalidObject, Phase, format_time, parse_time

APPLY_INTENT = f"{GROUP}/applying"
OUTCOME = f"{GROUP}/outcome"
KEYS = (APPLY_INTENT, OUTCOME)


def _json(text: Any, key: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise InvalidObject(f"annotation {key} must be a JSON object")
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise InvalidObject(f"annotation {key} is not JSON: {err}") from err
    if not isinstance(raw, dict):
        raise InvalidObject(f"annotation {key} must be a JSON object")
    return raw


def _dump(values: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in values.items() if v is not None}, sort_keys=True, separators=(",", ":"))


@overload
def _count(raw: Mapping[str, Any], field: str, key: str, optional: Literal[False] = False) -> int: ...
@overload
def _count(raw: Mapping[str, Any], field: str, key: str, optional: Literal[True]) -> int | None: ...
def _count(raw: Mapping[str, Any], field: str, key: str, optional: bool = False) -> int | None:
    value = raw.get(field)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidObject(f"annotation {key}: {field} must be an integer >= 0, got {value!r}")
    return value


def _text(raw: Mapping[str, Any], field: str, key: str, required: bool = True) -> str:
    value = raw.get(field, "")
    if not isinstance(value, str) or (required and not value):
        raise InvalidObject(f"annotation {key}: {field} must be a non-empty string")
    return value


def _time(raw: Mapping[str, Any], field: str, key: str) -> dt.datetime:
    moment = parse_time(raw.get(field))
    if moment is None:
        raise InvalidObject(f"annotation {key}: {field} is required")
    return moment


@dataclass(frozen=True)
class ApplyIntent:
    """An apply about to write the target's scale (annotation ``scalegate.io/applying``)."""

    uid: str                 # the proposal's: a record on any other object means nothing
    replicas: int            # being written
    previous_replicas: int   # read from the scale just before
    resource_version: str    # of that read: the write's precondition
    target_uid: str          # the target read before the write: a replaced target is another object
    target_generation: int   # its metadata.generation, which every change of its spec moves
    approved_by: str         # the approver, verified (SubjectAccessReview) before the intent was written
    started_at: dt.datetime
    # A plan's step (its spec.schedule[].at) this apply is for; None for a single change.
    # Each step is its own apply: a restart finishes or retries that step, never another.
    step: dt.datetime | None = None

    def to_annotation(self) -> str:
        step = self.step.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z") if self.step else None
        return _dump({"uid": self.uid, "replicas": self.replicas, "previousReplicas": self.previous_replicas,
                      "resourceVersion": self.resource_version, "targetUID": self.target_uid,
                      "targetGeneration": self.target_generation, "approvedBy": self.approved_by,
                      "startedAt": format_time(self.started_at), "step": step})

    @classmethod
    def from_annotation(cls, text: Any) -> "ApplyIntent":
        raw = _json(text, APPLY_INTENT)
        return cls(uid=_text(raw, "uid", APPLY_INTENT),
                   replicas=_count(raw, "replicas", APPLY_INTENT),
                   previous_replicas=_count(raw, "previousReplicas", APPLY_INTENT),
                   resource_version=_text(raw, "resourceVersion", APPLY_INTENT, required=False),
                   target_uid=_text(raw, "targetUID", APPLY_INTENT, required=False),
                   target_generation=_count(raw, "targetGeneration", APPLY_INTENT),
                   approved_by=_text(raw, "approvedBy", APPLY_INTENT),
                   started_at=_time(raw, "startedAt", APPLY_INTENT),
                   step=_time(raw, "step", APPLY_INTENT) if raw.get("step") is not None else None)


@dataclass(frozen=True)
class OutcomeRecord:
    """The terminal decision on a proposal (annotation ``scalegate.io/outcome``)."""

    uid: str
    phase: str               # one of Phase.TERMINAL
    reason: str
    message: str
    at: dt.datetime          # when it was decided: the garbage collector's clock
    approved_by: str = ""    # the approver as the operator verified it (SubjectAccessReview), if it did
    previous_replicas: int | None = None  # Applied only: the change made
    applied_replicas: int | None = None

    def to_annotation(self) -> str:
        return _dump({"uid": self.uid, "phase": self.phase, "reason": self.reason, "message": self.message,
                      "at": format_time(self.at), "approvedBy": self.approved_by or None,
                      "previousReplicas": self.previous_replicas, "appliedReplicas": self.applied_replicas})

    @classmethod
    def from_annotation(cls, text: Any) -> "OutcomeRecord":
        raw = _json(text, OUTCOME)
        phase = _text(raw, "phase", OUTCOME)
        if phase not in Phase.TERMINAL:
            raise InvalidObject(f"annotation {OUTCOME}: phase {phase!r} is not a terminal phase")
        return cls(uid=_text(raw, "uid", OUTCOME), phase=phase, reason=_text(raw, "reason", OUTCOME),
                   message=_text(raw, "message", OUTCOME, required=False), at=_time(raw, "at", OUTCOME),
                   approved_by=_text(raw, "approvedBy", OUTCOME, required=False),
                   previous_replicas=_count(raw, "previousReplicas", OUTCOME, optional=True),
                   applied_replicas=_count(raw, "appliedReplicas", OUTCOME, optional=True))


@dataclass(frozen=True)
class Records:
    """What the operator recorded on one proposal. `error` says why a record present could
    not be trusted (unreadable, or written for another object); the operator then acts on
    nothing (fails closed)."""

    intent: ApplyIntent | None = None
    outcome: OutcomeRecord | None = None
    error: str = ""

    @classmethod
    def read(cls, metadata: Mapping[str, Any]) -> "Records":
        annotations = metadata.get("annotations") or {}
        uid = metadata.get("uid") or ""
        found: dict[str, Any] = {}
        for key, kind in ((APPLY_INTENT, ApplyIntent), (OUTCOME, OutcomeRecord)):
            if key not in annotations:
                continue
            try:
                record = kind.from_annotation(annotations[key])
            except InvalidObject as err:
                return cls(error=str(err))
            if not uid or record.uid != uid:
                return cls(error=f"annotation {key} was written for another object (uid {record.uid}, "
                                 f"not this proposal's {uid or '(none)'})")
            found[key] = record
        return cls(intent=found.get(APPLY_INTENT), outcome=found.get(OUTCOME))
