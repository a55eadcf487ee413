"""Status conditions as Kubernetes API conventions describe them (pure helpers)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from .model import format_time


def set_condition(existing: Iterable[dict[str, Any]] | None, type_: str, status: bool | str, reason: str,
                  message: str, generation: int, now: dt.datetime) -> list[dict[str, Any]]:
    """Return the conditions with `type_` set; lastTransitionTime moves only when the
    status flips, so it tells when the aspect last changed, not when it was last written."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    conditions = [dict(c) for c in (existing or []) if isinstance(c, dict)]
    for condition in conditions:
        if condition.get("type") == type_:
            if condition.get("status") != status_text:
                condition["lastTransitionTime"] = format_time(now)
            condition.update(status=status_text, reason=reason, message=message,
                             observedGeneration=generation)
            condition.setdefault("lastTransitionTime", format_time(now))
            return conditions
    conditions.append({"type": type_, "status": status_text, "reason": reason, "message": message,
                       "lastTransitionTime": format_time(now), "observedGeneration": generation})
    return conditions


def find_condition(conditions: Iterable[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for condition in conditions or []:
        if isinstance(condition, dict) and condition.get("type") == type_:
            return condition
    return None
