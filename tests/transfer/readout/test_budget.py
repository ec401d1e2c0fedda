"""transfer/readout/budget.py: minutes from a run's own timing, and the curve's table."""
import json

import pytest

from transfer.readout.budget import curve_markdown, seconds_per_iteration


def test_minutes_per_iteration_are_the_median_after_the_first(tmp_path):
    rows = [{"iteration": 1, "time": 30.0}] + [{"iteration": i, "time": t} for i, t in [(2, 1.0), (3, 3.0), (4, 2.0)]]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert seconds_per_iteration(str(tmp_path)) == 2.0  # the first iteration (start-up) does not count
    with pytest.raises(ValueError, match="no metrics.jsonl rows"):
        seconds_per_iteration(str(tmp_path / "absent"))


def test_the_table_has_the_baseline_then_each_checkpoint_with_its_paired_difference():
    rows = [{"model": "random_init", "iteration": 0, "AP": 37.0, "std": 1.0},
            {"model": "houghcl", "iteration": 120, "AP": 40.5, "std": 0.5,
             "difference": {"mean": 3.5, "ci95": [1.25, 5.75], "verdict": "better"}},
            {"model": "houghcl", "iteration": 240, "AP": 38.0, "std": 0.5,
             "difference": {"mean": 1.0, "ci95": None, "verdict": "n = 1"}}]
    lines = curve_markdown(rows, {"houghcl": 0.05}).splitlines()
    assert lines[2] == "| random_init | 0 | 0 | 37.00 ± 1.00 | - | - | - |"
    assert lines[3] == "| houghcl | 120 | 6.0 | 40.50 ± 0.50 | +3.50 | [+1.25, +5.75] | better |"
    assert lines[4] == "| houghcl | 240 | 12.0 | 38.00 ± 0.50 | +1.00 | - | n = 1 |"
