import json

import pytest
import torch

from pretrain.backbone import build_resnet
from transfer.data.synthetic import write_voc


def trees_like(tmp_path):
    """A VOC folder with the trees' split names (train, test)."""
    voc = write_voc(str(tmp_path), classes=("box",), train=6, test=3, size=(96, 96))
    (tmp_path / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").rename(
        tmp_path / "VOC2007" / "ImageSets" / "Main" / "train.txt")
    return voc


def test_checkpoints_are_probed_and_paired_with_random_init(tmp_path, run_tool):
    voc = trees_like(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    # Iteration 2 holds exactly the random init the curve compares with; iteration 4 another draw.
    torch.save(build_resnet(seed=0).state_dict(), run / "model_0000002.pth")
    torch.save(build_resnet(seed=7).state_dict(), run / "model_0000004.pth")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "time": t}) + "\n"
                                               for i, t in ((1, 9.0), (2, 0.5), (3, 0.7), (4, 0.6))))
    out = tmp_path / "curve"
    result = run_tool("budget_curve", run, "--voc", voc, "--seeds", 3, "--out", out)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "curve.json").read_text())["rows"]
    assert [(r["model"], r["iteration"]) for r in rows] == [("random_init", 0), ("run", 2), ("run", 4)]
    same = rows[1]["difference"]
    assert same["differences"] == [0.0, 0.0, 0.0] and same["verdict"] == "not distinguishable at 95%"
    other = rows[2]["difference"]
    expected = [rows[2]["results"][str(s)]["dense"]["AP"] - rows[0]["results"][str(s)]["dense"]["AP"]
                for s in range(3)]
    assert other["differences"] == pytest.approx(expected) and any(d != 0 for d in expected)
    # Minutes: iterations x the median time of the rows after the first (0.6 s).
    assert json.loads((tmp_path / "curve.json").read_text())["minutes_per_iteration"]["run"] == pytest.approx(0.01)
    assert "| run | 4 | 0.0 |" in (tmp_path / "curve.md").read_text()
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_without_checkpoints_is_named(tmp_path, run_tool):
    voc = trees_like(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text(json.dumps({"iteration": 2, "time": 1.0}) + "\n")
    result = run_tool("budget_curve", tmp_path / "empty", "--voc", voc, "--out", tmp_path / "c")
    assert result.returncode == 1 and "empty: no model_*.pth" in result.stderr
    assert not (tmp_path / "c.md").exists()
