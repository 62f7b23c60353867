"""The run report's held-out section: intervals, the first-vs-last z, where per turn it moved."""

import json
import math

import pytest

from agentopd.metrics.report import two_proportion_z, wilson, write_report


def test_wilson_and_z_against_hand_computed_values():
    lo, hi = wilson(17, 32)
    assert (round(lo, 3), round(hi, 3)) == (0.364, 0.691)
    assert wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12) and 0 < wilson(0, 10)[1] < 0.31
    p = 22 / 64
    assert two_proportion_z(5, 32, 17, 32) == pytest.approx((17 / 32 - 5 / 32) / math.sqrt(p * (1 - p) * 2 / 32))
    assert two_proportion_z(0, 10, 0, 10) == 0.0


def test_report_names_the_stages_and_the_turn_that_moved(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"env": "e", "warm_start_steps": 2}))
    rows = [{"step": 0, "eval/success": 0.25, "eval/episodes": 8.0, "eval_turn/0/on_track": 0.25},
            {"step": 1, "loss/ce": 0.5, "stage/warm_start": 1.0},
            {"step": 2, "eval/success": 0.75, "eval/episodes": 8.0, "eval_turn/0/on_track": 0.875,
             "eval_turn/1/on_track": 0.75},
            {"step": 3, "eval/success": 0.875, "eval/episodes": 8.0, "eval_turn/0/on_track": 0.875,
             "eval_turn/1/on_track": 0.875, "eval_stop/loop": 0.125}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| 2 | after the warm start (step 2) | 6/8 = 0.750 |" in md
    assert f"z = {two_proportion_z(2, 8, 7, 8):.2f}" in md and "beyond noise" in md
    assert "Step 0 -> 3: the largest per-turn change is after turn 0 (0.25 -> 0.88" in md
    assert "Step 2 -> 3: the largest per-turn change is after turn 1 (0.75 -> 0.88" in md
    assert (tmp_path / "per_turn_success.png").exists()
