"""The contract's replica rules (`scalegate.rules`), and that the operator, the forecaster
and the plugin apply the same ones: a count the forecaster sizes is one the operator
accepts, and the plugin shows a bound as broken exactly when the operator rejects it."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalegate import decision as d
from scalegate.forecast.series import ForecastError
from scalegate.forecast.sizing import size_replicas
from scalegate.model import DecisionAnnotations, Phase, Policy, Proposal, TargetRef
from scalegate.plugin import render
from scalegate.rules import Bounds, replicas_for

NOW = dt.datetime(2026, 11, 26, 20, 30, tzinfo=dt.timezone.utc)
WEB = TargetRef("apps/v1", "Deployment", "web")


def policy(bounds: Bounds) -> Policy:
    return Policy(namespace="shop", name="web", uid="uid-p", generation=1, target=WEB,
                  min_replicas=bounds.min_replicas, max_replicas=bounds.max_replicas,
                  max_step_up=bounds.max_step_up, max_step_down=bounds.max_step_down)


def proposal(current: int, replicas: int) -> Proposal:
    return Proposal(namespace="shop", name="web-1", uid="uid-1", generation=1, created=NOW, policy_name="web",
                    target=WEB, current_replicas=current, replicas=replicas,
                    valid_until=NOW + dt.timedelta(hours=1), reason="", phase=Phase.APPROVED,
                    decision=DecisionAnnotations(True, "alice", False, "", "forecaster", "", ""))


def proposal_body(current: int, replicas: int) -> dict:
    return {"metadata": {"name": "web-1"}, "spec": {"currentReplicas": current, "replicas": replicas}}


def policy_spec(bounds: Bounds) -> dict:
    fields = {"minReplicas": bounds.min_replicas, "maxReplicas": bounds.max_replicas,
              "maxStepUp": bounds.max_step_up, "maxStepDown": bounds.max_step_down}
    return {key: value for key, value in fields.items() if value is not None}


bounds_strategy = st.builds(
    lambda low, span, up, down: Bounds(low, low + span, up, down),
    st.integers(0, 30), st.integers(0, 30), st.none() | st.integers(1, 10), st.none() | st.integers(1, 10),
)


# -- the rules ---------------------------------------------------------------------------

def test_check_judges_range_then_the_step_of_its_direction():
    bounds = Bounds(2, 20, 5, 2)
    assert [(c.limit, c.holds) for c in bounds.check(9, 4)] == [
        ("minReplicas", True), ("maxReplicas", True), ("maxStepUp", True)]
    assert [(c.limit, c.holds) for c in bounds.check(6, 9)] == [
        ("minReplicas", True), ("maxReplicas", True), ("maxStepDown", False)]
    assert [c.problem for c in bounds.violations(30, 4)] == [
        "30 is above maxReplicas 20", "adding 26 replicas exceeds maxStepUp 5"]
    assert bounds.check(4, 4)[-1].limit == "maxReplicas"  # no step, no step limit judged


def test_nearest_cuts_range_first_then_step():
    assert Bounds(2, 15, 5, None).nearest(20, 4) == (9, ("maxReplicas", "maxStepUp"))
    assert Bounds(5, 30, 2, None).nearest(20, 1) == (3, ("maxStepUp",))
    assert Bounds().nearest(7, 1) == (7, ())


def test_of_spec_reads_a_raw_policy_leniently():
    assert Bounds.of_spec({"minReplicas": 1, "maxReplicas": "ten", "maxStepUp": True}) == Bounds(1, None, None, None)


def test_replicas_for_is_the_contracts_ceiling():
    assert replicas_for(410.0, 50.0) == 9
    assert replicas_for(100.0 + 1e-12, 50.0) == 2  # float noise costs no replica
    assert replicas_for(-5.0, 10.0) == 0
    with pytest.raises(ValueError):
        replicas_for(1.0, 0.0)


# -- one rule, three components -----------------------------------------------------------

@given(bounds=bounds_strategy, current=st.integers(0, 50), replicas=st.integers(0, 50))
def test_plugin_shows_out_of_bounds_exactly_when_the_operator_rejects(bounds, current, replicas):
    rejected = d.check_bounds(proposal(current, replicas), policy(bounds)) is not None
    shown = render.bounds_check(proposal_body(current, replicas), policy_spec(bounds))
    assert rejected == any(not holds for _, holds in shown)


@given(bounds=bounds_strategy, current=st.integers(0, 50), load=st.floats(0, 3000), capacity=st.floats(1, 100))
def test_the_forecaster_proposes_only_what_the_operator_accepts(bounds, current, load, capacity):
    try:
        sizing = size_replicas(load, capacity, current, bounds=bounds)
    except ForecastError as err:
        assert err.reason == "OutOfBounds"
        # no count is both in range and one step away: the operator would reject any
        assert all(d.check_bounds(proposal(current, r), policy(bounds)) is not None for r in range(0, 80))
        return
    assert d.check_bounds(proposal(current, sizing.replicas), policy(bounds)) is None
