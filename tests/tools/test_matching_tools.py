"""tools/eval_matching.py and tools/visualize_matches.py as a user runs them."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
PYTHON = sys.executable


@pytest.mark.slow
def test_eval_matching_oracle_is_perfect(image_folder, tmp_path):
    out = tmp_path / "m.json"
    result = subprocess.run([PYTHON, os.path.join(TOOLS, "eval_matching.py"), "--images", image_folder, "--pairs",
                             "6", "--size", "128", "--out", str(out), "MODEL.DEPTH", "18"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["geometric"] == 1.0 and data["exact"]["geometric"]["all"] == 1.0
    assert 0.0 < data["threshold"] <= 1.0  # every positive pair counts
    for key in ("argmax", "hough", "hough_transform"):
        assert 0.0 <= data[key] <= 1.0
        assert data["settings"]["variants"][key]["label"] in result.stdout
    assert data["counts"]["pairs"] == 6 and data["counts"]["query_cells_with_partner"] > 0
    assert "| geometric: geometric oracle | 1.000 |" in result.stdout


@pytest.mark.slow
def test_eval_matching_reads_the_depth_from_the_weights(image_folder, tmp_path):
    import torch
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "m.json"
    result = subprocess.run([PYTHON, os.path.join(TOOLS, "eval_matching.py"), "--images", image_folder, "--pairs",
                             "2", "--size", "96", "--weights", str(tmp_path / "r18.pth"), "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["settings"]["depth"] == 18
    result = subprocess.run([PYTHON, os.path.join(TOOLS, "eval_matching.py"), "--images", image_folder, "--pairs",
                             "2", "--weights", str(tmp_path / "r18.pth"), "--depth", "50", "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1 and "r18.pth: holds a ResNet-18, not a ResNet-50" in result.stderr
    # A converted Detectron2 file is named as such, in one line, instead of torch.load's weights_only advice.
    subprocess.run([PYTHON, os.path.join(TOOLS, "convert.py"), str(tmp_path / "r18.pth"), str(tmp_path / "r18.pkl")],
                   check=True, capture_output=True, cwd=ROOT, timeout=300)
    result = subprocess.run([PYTHON, os.path.join(TOOLS, "eval_matching.py"), "--images", image_folder, "--pairs",
                             "2", "--weights", str(tmp_path / "r18.pkl"), "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1 and "r18.pkl: is already a Detectron2 file" in result.stderr
    assert "weights_only" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_picture_is_written_at_the_right_size(image_folder, tmp_path):
    out = tmp_path / "matches.png"
    result = subprocess.run([PYTHON, os.path.join(TOOLS, "visualize_matches.py"), "--images", image_folder,
                             "--size", "128", "--pairs", "8", "--show", "2", "--out", str(out)], capture_output=True,
                            text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("argmax", "hough", "hough_transform"):  # every appearance-based matcher of the registry
        assert f"\n{name}: " in result.stdout
    assert "Drawn: the 2 pairs where the matchers disagree most" in result.stdout
    with Image.open(out) as img:
        # two pairs x three matchers, each a label line and the views; five caption lines on top
        assert img.size == (2 * 128 + 8, 6 * (128 + 18) + 5 * 18)
        pixels = np.asarray(img.convert("RGB"))
    colours = {tuple(c) for c in pixels.reshape(-1, 3).tolist()}
    assert colours & {(40, 200, 60), (240, 160, 30), (230, 40, 40)}  # matches were drawn
    for row in range(6):  # every row shows both views, not a blank
        top = 5 * 18 + row * (128 + 18) + 18
        assert pixels[top:top + 128].std() > 0
