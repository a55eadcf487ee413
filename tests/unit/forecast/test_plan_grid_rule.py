"""benchmarks/backtest_all.py: the rule that chooses the default plan step and horizon from
the trade-off table (stated in the README, fixed before the grid was measured)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "backtest_all.py"


def _script():
    spec = importlib.util.spec_from_file_location("scalegate_backtest_all", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(step, horizon, approvals, mean_under, worst_under, cost):
    return {"plan_step_seconds": step, "plan_horizon_seconds": horizon, "approvals_per_day": approvals,
            "mean_under_provisioned": mean_under, "worst_under_provisioned": worst_under,
            "replica_hours_vs_oracle": cost}


def test_goals_are_the_issues_and_inclusive():
    met = _script().goals_met(_row(3600, 86400, 1.5, 0.010, 0.03, 1.15))
    assert met == {"approvals": True, "mean_under": True, "worst_under": True, "cost": True}
    met = _script().goals_met(_row(3600, 86400, 1.51, 0.0101, 0.0301, 1.151))
    assert met == {"approvals": False, "mean_under": False, "worst_under": False, "cost": False}


def test_of_the_cells_meeting_every_goal_the_longest_horizon_then_the_coarsest_step():
    table = [
        _row(600, 86400, 1.2, 0.005, 0.02, 1.05),    # meets all, finest step
        _row(1800, 86400, 1.3, 0.006, 0.02, 1.08),   # meets all, coarser: chosen
        _row(3600, 86400, 1.3, 0.012, 0.02, 1.10),   # coarsest, but misses the mean
        _row(3600, 43200, 1.4, 0.004, 0.01, 1.02),   # meets all, shorter horizon, better figures
    ]
    chosen = _script().choose_default(table)
    assert (chosen["plan_step_seconds"], chosen["plan_horizon_seconds"]) == (1800, 86400)


def test_when_none_meets_every_goal_the_cells_meeting_the_most():
    table = [
        _row(3600, 86400, 1.3, 0.012, 0.04, 1.30),   # 1 of 4
        _row(600, 43200, 2.1, 0.006, 0.02, 1.10),    # 3 of 4: chosen (the longest horizon of the 3s)
        _row(3600, 21600, 4.2, 0.005, 0.02, 1.10),   # 3 of 4, shorter horizon
    ]
    chosen = _script().choose_default(table)
    assert (chosen["plan_step_seconds"], chosen["plan_horizon_seconds"]) == (600, 43200)
    assert _script().choose_default([]) is None


def test_report_reprints_a_saved_grid_with_its_choice(tmp_path, capsys):
    import json

    row = dict(_row(3600, 86400, 1.2, 0.005, 0.02, 1.2), meets_goal=False, series=1)
    strategies = {"scalegate": {"under_provisioned_fraction": 0.005, "replica_hours": 120.0},
                  "oracle": {"under_provisioned_fraction": 0.0, "replica_hours": 100.0}}
    report = {"settings": {"approval_delay_seconds": 1800}, "goal": {}, "table": [row],
              "series": {"3600:86400": {"s1": {"strategies": strategies, "approvals_per_day": {"scalegate": 1.2},
                                               "plan": {"reasons": {"NoActivePlan": 1, "EndsSoon": 7},
                                                        "breach_fraction": 0.01}}}}}
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(report))
    assert _script().main(["--report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  60m      24h           1.20         0.50%          2.00%     1.200x     -" in out
    assert "s1" in out and "EndsSoon 7, NoActivePlan 1" in out
    assert "default by the README's rule: step 3600s, horizon 86400s; goals met: 3 of 4 (missed: cost)" in out
