"""Behaviour that mutation testing (tests/mutation/run.sh) found undefended: each test here
kills mutants of scalegate's core that survived the rest of the unit suite, by checking
what the code is for, not how it is written. Grouped by module; each group names the
mutants it was written against (mutmut's names, e.g. rules.xǁBoundsǁnearest__mutmut_4)."""

from __future__ import annotations

import pytest

from scalegate.rules import MAX_REPLICAS, MAX_STEP_DOWN, MAX_STEP_UP, MIN_REPLICAS, Bounds, replicas_for


# -- rules -------------------------------------------------------------------------------------
# nearest__mutmut_4, _9, _14, _21: a limit that the desired count only reaches (not passes)
# cut nothing, and must not be named as the reason the forecaster proposed less.
@pytest.mark.parametrize("bounds, desired, current", [
    (Bounds(min_replicas=3), 3, 5),
    (Bounds(max_replicas=8), 8, 5),
    (Bounds(max_step_up=2), 7, 5),
    (Bounds(max_step_down=2), 3, 5),
])
def test_a_limit_reached_exactly_cuts_nothing(bounds, desired, current):
    assert bounds.nearest(desired, current) == (desired, ())


@pytest.mark.parametrize("bounds, desired, expected", [
    (Bounds(min_replicas=3), 2, (3, (MIN_REPLICAS,))),
    (Bounds(max_replicas=8), 9, (8, (MAX_REPLICAS,))),
    (Bounds(max_step_up=2), 8, (7, (MAX_STEP_UP,))),
    (Bounds(max_step_down=2), 2, (3, (MAX_STEP_DOWN,))),
])
def test_a_limit_passed_by_one_cuts_and_is_named(bounds, desired, expected):
    assert bounds.nearest(desired, 5) == expected


# check__mutmut_33: a step of one is a step up; every limit that applies is listed (the
# plugin shows them), and the step limit of that direction applies to it.
def test_a_step_of_one_is_judged_by_max_step_up():
    checks = Bounds(max_step_up=1, max_step_down=1).check(5, 4)
    assert [(c.limit, c.holds) for c in checks] == [(MAX_STEP_UP, True)]
    checks = Bounds(max_step_up=1, max_step_down=1).check(3, 4)
    assert [(c.limit, c.holds) for c in checks] == [(MAX_STEP_DOWN, True)]
    assert Bounds(max_step_up=1).check(4, 4) == [] and Bounds(max_step_down=1).check(4, 4) == []


# replicas_for__mutmut_7, _10: the refusal says what was wrong, with the value.
def test_replicas_for_says_which_input_is_wrong():
    with pytest.raises(ValueError, match=r"capacity_per_replica must be a positive number, got 0\.0"):
        replicas_for(10.0, 0.0)
    with pytest.raises(ValueError, match=r"load must be finite, got nan"):
        replicas_for(float("nan"), 5.0)
