"""Pure sizing: from an upper bound of load to a replica count within a policy's limits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Sizing:
    """The replicas to propose and why.

    Attributes
    ----------
    replicas : int
        The count after every limit; equal to ``current_replicas`` means "no proposal".
    desired_replicas : int
        ``ceil(upper_bound / capacity_per_replica)`` before any limit.
    current_replicas : int
        The replicas the decision started from.
    limited_by : tuple of str
        The policy fields that cut the desired count, in the order applied
        (``minReplicas``, ``maxReplicas``, ``maxStepUp``, ``maxStepDown``).
    reason : str
        One line for the proposal's ``spec.reason``.
    """

    replicas: int
    desired_replicas: int
    current_replicas: int
    limited_by: tuple[str, ...]
    reason: str

    @property
    def changes(self) -> bool:
        """True when the result differs from the current replicas, i.e. a proposal is due."""
        return self.replicas != self.current_replicas


def size_replicas(
    upper_bound: float,
    capacity_per_replica: float,
    current_replicas: int,
    *,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    max_step_up: int | None = None,
    max_step_down: int | None = None,
    confidence: float = 0.95,
    peak_time: datetime | None = None,
    unit: str = "",
) -> Sizing:
    """Replicas that cover ``upper_bound``, cut by the policy's limits.

    First ``ceil(upper_bound / capacity_per_replica)``, then clamped to
    ``[min_replicas, max_replicas]``, then to one step of at most
    ``max_step_up`` / ``max_step_down`` from ``current_replicas``. Any limit
    may be None (absent). When ``current_replicas`` is further out of range
    than one step allows, the step limit wins (the move is gradual) and both
    limits are named.

    Parameters
    ----------
    upper_bound : float
        Upper bound of the peak load over the horizon; negative is taken as 0.
    capacity_per_replica : float
        Load one replica serves at its target utilisation; must be > 0.
    current_replicas : int
        Replicas now.
    confidence : float, default 0.95
        Only used in the reason text.
    peak_time : datetime, optional
        When the peak is expected (UTC); only used in the reason text.
    unit : str, default ""
        Unit of load for the reason text, e.g. ``"req/s"``.
    """
    if not capacity_per_replica > 0 or not math.isfinite(capacity_per_replica):
        raise ValueError(f"capacity_per_replica must be a positive number, got {capacity_per_replica!r}")
    if not math.isfinite(upper_bound):
        raise ValueError(f"upper_bound must be finite, got {upper_bound!r}")
    # A relative epsilon keeps e.g. 100.00000001 / 50 from asking for a third replica.
    desired = max(0, math.ceil(max(upper_bound, 0.0) / capacity_per_replica - 1e-9))
    replicas = desired
    limited: list[str] = []
    if min_replicas is not None and replicas < min_replicas:
        replicas = min_replicas
        limited.append("minReplicas")
    if max_replicas is not None and replicas > max_replicas:
        replicas = max_replicas
        limited.append("maxReplicas")
    if max_step_up is not None and replicas > current_replicas + max_step_up:
        replicas = current_replicas + max_step_up
        limited.append("maxStepUp")
    if max_step_down is not None and replicas < current_replicas - max_step_down:
        replicas = current_replicas - max_step_down
        limited.append("maxStepDown")
    limits = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "maxStepUp": max_step_up,
        "maxStepDown": max_step_down,
    }
    reason = _reason(upper_bound, capacity_per_replica, desired, confidence, peak_time, unit)
    if limited:
        reason += "; " + ", ".join(f"capped by {name}={limits[name]}" for name in limited)
        reason += f" ({replicas} instead of {desired})"
    return Sizing(replicas, desired, current_replicas, tuple(limited), reason)


def _reason(upper_bound, capacity, desired, confidence, peak_time, unit) -> str:
    unit_text = f" {unit}" if unit else ""
    when = f" expected at {peak_time:%H:%M} UTC" if peak_time is not None else ""
    return (
        f"peak of {format_load(upper_bound)}{unit_text} ({confidence:.0%} upper bound){when}; "
        f"{desired} x {format_load(capacity)}{unit_text} covers it"
    )


def format_load(value: float) -> str:
    """A load figure for people: three significant digits, no exponent below 1e6."""
    value = float(value)
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"
