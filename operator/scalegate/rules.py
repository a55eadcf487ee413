"""The contract's replica rules, written once: what a policy's bounds and step limits
allow, and how many replicas serve a load.

The operator judges proposals with them (check 3), the forecaster sizes its proposals
with them, and the kubectl plugin shows them; a copy in any of those would drift.

Basement: pure, and imports nothing of scalegate, so that `model`, `forecast`, `decision`
and the plugin can all import it without one bottom-layer package depending on another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

MIN_REPLICAS, MAX_REPLICAS = "minReplicas", "maxReplicas"
MAX_STEP_UP, MAX_STEP_DOWN = "maxStepUp", "maxStepDown"


@dataclass(frozen=True)
class LimitCheck:
    """One limit of a policy, judged against one change.

    Attributes
    ----------
    limit : str
        The policy field: ``minReplicas``, ``maxReplicas``, ``maxStepUp`` or ``maxStepDown``.
    value : int
        The limit's value in the policy.
    replicas, current : int
        The change judged: from ``current`` to ``replicas``.
    holds : bool
    """

    limit: str
    value: int
    replicas: int
    current: int
    holds: bool

    @property
    def step(self) -> int:
        return self.replicas - self.current

    @property
    def problem(self) -> str:
        """Why it does not hold, for a person ("" when it holds)."""
        if self.holds:
            return ""
        return {
            MIN_REPLICAS: f"{self.replicas} is below minReplicas {self.value}",
            MAX_REPLICAS: f"{self.replicas} is above maxReplicas {self.value}",
            MAX_STEP_UP: f"adding {self.step} replicas exceeds maxStepUp {self.value}",
            MAX_STEP_DOWN: f"removing {-self.step} replicas exceeds maxStepDown {self.value}",
        }[self.limit]


def _limit(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Bounds:
    """A policy's replica bounds and step limits; None is "no limit"."""

    min_replicas: int | None = None
    max_replicas: int | None = None
    max_step_up: int | None = None
    max_step_down: int | None = None

    @classmethod
    def of_spec(cls, spec: Mapping[str, Any]) -> "Bounds":
        """From a policy's raw `spec`, leniently: a field that is not an integer is no limit
        (for showing an object as it is; `model.Policy.parse` refuses such a policy)."""
        return cls(_limit(spec.get(MIN_REPLICAS)), _limit(spec.get(MAX_REPLICAS)),
                   _limit(spec.get(MAX_STEP_UP)), _limit(spec.get(MAX_STEP_DOWN)))

    def check(self, replicas: int, current: int) -> list[LimitCheck]:
        """Every limit that applies to the change from `current` to `replicas`, in the
        contract's order: minReplicas, maxReplicas, then the step limit of its direction
        (a step up is never judged by maxStepDown, nor a step down by maxStepUp)."""
        step = replicas - current
        checks = []
        if self.min_replicas is not None:
            checks.append(LimitCheck(MIN_REPLICAS, self.min_replicas, replicas, current,
                                     replicas >= self.min_replicas))
        if self.max_replicas is not None:
            checks.append(LimitCheck(MAX_REPLICAS, self.max_replicas, replicas, current,
                                     replicas <= self.max_replicas))
        if self.max_step_up is not None and step > 0:
            checks.append(LimitCheck(MAX_STEP_UP, self.max_step_up, replicas, current, step <= self.max_step_up))
        if self.max_step_down is not None and step < 0:
            checks.append(LimitCheck(MAX_STEP_DOWN, self.max_step_down, replicas, current,
                                     -step <= self.max_step_down))
        return checks

    def violations(self, replicas: int, current: int) -> list[LimitCheck]:
        """The limits the change breaks; empty when it may be applied."""
        return [check for check in self.check(replicas, current) if not check.holds]

    def nearest(self, desired: int, current: int) -> tuple[int, tuple[str, ...]]:
        """The count nearest `desired` that one change from `current` may reach, and the
        limits that cut it, in the order applied (range first, then step). The result may
        still break a limit when `current` is further out of range than one step allows:
        ask `violations` before proposing it."""
        replicas, cut = desired, []
        if self.min_replicas is not None and replicas < self.min_replicas:
            replicas = self.min_replicas
            cut.append(MIN_REPLICAS)
        if self.max_replicas is not None and replicas > self.max_replicas:
            replicas = self.max_replicas
            cut.append(MAX_REPLICAS)
        if self.max_step_up is not None and replicas > current + self.max_step_up:
            replicas = current + self.max_step_up
            cut.append(MAX_STEP_UP)
        if self.max_step_down is not None and replicas < current - self.max_step_down:
            replicas = current - self.max_step_down
            cut.append(MAX_STEP_DOWN)
        return replicas, tuple(cut)

    def value(self, limit: str) -> int | None:
        return {MIN_REPLICAS: self.min_replicas, MAX_REPLICAS: self.max_replicas,
                MAX_STEP_UP: self.max_step_up, MAX_STEP_DOWN: self.max_step_down}[limit]


def replicas_for(load: float, capacity_per_replica: float) -> int:
    """Whole replicas that serve `load` at `capacity_per_replica` each: the contract's
    ``ceil(upperBound / capacityPerReplica)`` (a negative load is none). A relative epsilon
    keeps float noise, e.g. 100.00000001 / 50, from costing a third replica."""
    if not capacity_per_replica > 0 or not math.isfinite(capacity_per_replica):
        raise ValueError(f"capacity_per_replica must be a positive number, got {capacity_per_replica!r}")
    if not math.isfinite(load):
        raise ValueError(f"load must be finite, got {load!r}")
    return max(0, math.ceil(max(load, 0.0) / capacity_per_replica - 1e-9))
