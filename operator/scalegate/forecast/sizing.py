"""Pure sizing: from an upper bound of load to a replica count within a policy's limits.

The rules themselves (replicas for a load, what the bounds and step limits allow) are
`scalegate.rules`, which the operator judges proposals with: a count sized here is one the
operator accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..rules import Bounds, replicas_for
from .series import ForecastError


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
    bounds: Bounds | None = None,
    confidence: float = 0.95,
    peak_time: datetime | None = None,
    unit: str = "",
) -> Sizing:
    """Replicas that cover ``upper_bound``, cut by the policy's limits.

    First ``ceil(upper_bound / capacity_per_replica)`` (:func:`scalegate.rules.replicas_for`),
    then the nearest count within ``bounds`` (:meth:`scalegate.rules.Bounds.nearest`): the
    range ``[minReplicas, maxReplicas]``, then one step of at most ``maxStepUp`` /
    ``maxStepDown`` from ``current_replicas``. Any limit may be None (absent).

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

    Raises
    ------
    ValueError
        ``capacity_per_replica`` is not a positive number, or ``upper_bound`` not finite.
    ForecastError
        ``OutOfBounds``: ``current_replicas`` is further out of the range than one step
        allows, so every count the operator would accept is out of reach; a proposal
        would only be rejected (the contract never clamps), so none is made.
    """
    bounds = bounds or Bounds()
    desired = replicas_for(upper_bound, capacity_per_replica)
    replicas, limited = bounds.nearest(desired, current_replicas)
    broken = bounds.violations(replicas, current_replicas)
    if broken:
        raise ForecastError(
            "OutOfBounds",
            f"{current_replicas} replicas now: no single change the policy allows reaches its range "
            f"({'; '.join(check.problem for check in broken)}); widen the policy's step limit, "
            "or scale the target into the range by hand",
        )
    reason = _reason(upper_bound, capacity_per_replica, desired, confidence, peak_time, unit)
    if limited:
        reason += "; " + ", ".join(f"capped by {name}={bounds.value(name)}" for name in limited)
        reason += f" ({replicas} instead of {desired})"
    return Sizing(replicas, desired, current_replicas, limited, reason)


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
