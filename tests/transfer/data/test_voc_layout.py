"""transfer/data/voc_layout.py: the same boxes as Detectron2's reader, and one clear line for every malformed file."""
import os

import pytest
import torch

from transfer.data.synthetic import write_voc
from transfer.data.voc_layout import VOCError, box_problem, read_annotation, scan_split, voc_records, write_annotation
from transfer.readout.dense_probe import load_tiles


def test_tiles_hold_the_boxes_detectron2_reads(tmp_path):
    pascal_voc = pytest.importorskip("detectron2.data.datasets.pascal_voc")
    voc = write_voc(str(tmp_path), classes=("person", "car"), train=3, test=2)
    for split in ("trainval", "test"):
        ours = load_tiles(voc, split, ["car", "person"])
        reference = pascal_voc.load_voc_instances(voc, split, ["car", "person"])
        assert [t["file_name"] for t in ours] == [r["file_name"] for r in reference]
        for tile, record in zip(ours, reference):
            expected = torch.tensor([a["bbox"] for a in record["annotations"]], dtype=torch.float32).reshape(-1, 4)
            assert torch.equal(tile["boxes"], expected)
        assert voc_records(voc, split, ["car", "person"], box_mode=0) == reference  # BoxMode.XYXY_ABS is 0
    # Only the classes asked for.
    assert all(len(t["boxes"]) == 0 for t in load_tiles(voc, "test", ["dog"]))


def test_a_split_of_one_image_is_read(tmp_path):
    voc = write_voc(str(tmp_path), train=1, test=1)
    records = voc_records(voc, "test", ["person", "car"])
    assert [r["image_id"] for r in records] == ["000001"] and len(records[0]["annotations"]) == 2


def test_written_annotations_read_back(tmp_path):
    path = str(tmp_path / "a.xml")
    write_annotation(path, "a.jpg", (200, 100), [("tree", (0, 0, 50, 40)), ("car", (10.4, 20, 199.6, 100))])
    size, objects = read_annotation(path)
    assert size == (200, 100)
    assert [(o.name, o.box, o.difficult) for o in objects] == [("tree", (1, 1, 50, 40), False),
                                                               ("car", (11, 21, 200, 100), False)]


def annotation(tmp_path, body, name="000000"):
    folder = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "Annotations" / f"{name}.xml").write_text(body)
    (folder / "ImageSets/Main/train.txt").write_text(name + "\n")
    return str(folder)


SIZE = "<size><width>100</width><height>80</height><depth>3</depth></size>"


def obj(box, name="<name>tree</name>"):
    return (f"<object>{name}<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax>"
            f"<ymax>{box[3]}</ymax></bndbox></object>")


@pytest.mark.parametrize("body, expect", [
    ("<annotation><size>", "not a valid XML file"),
    (f"<annotation>{SIZE}{obj((1, 1, 5, 5), name='')}</annotation>", "object 1 has no <name>"),
    (f"<annotation>{SIZE}<object><name>tree</name></object></annotation>", "object 1 has no <name> or no numeric"),
    (f"<annotation>{obj((1, 1, 5, 5))}</annotation>", "no <size>"),
    (f"<annotation>{SIZE}{obj((50, 1, 10, 5))}</annotation>", "1 boxes are inverted or outside"),
    (f"<annotation>{SIZE}{obj((1, 1, 150, 5))}{obj((1, 1, 5, 95))}</annotation>", "2 boxes are inverted or outside"),
])
def test_malformed_annotations_are_one_line_naming_the_file(tmp_path, body, expect):
    folder = annotation(tmp_path, body)
    with pytest.raises(VOCError) as error:
        scan_split(folder, "train")
    message = str(error.value)
    assert expect in message and "000000.xml" in message and "\n" not in message


def test_a_missing_annotation_or_split_file_is_named(tmp_path):
    folder = annotation(tmp_path, f"<annotation>{SIZE}</annotation>")
    os.unlink(os.path.join(folder, "Annotations", "000000.xml"))
    with pytest.raises(VOCError, match="000000.xml: no such annotation file"):
        scan_split(folder, "train")
    with pytest.raises(VOCError, match="test.txt is missing"):
        scan_split(folder, "test")


def test_boxes_on_the_border_are_kept_and_the_rest_named():
    assert box_problem((1, 1, 100, 80), (100, 80)) == ""
    assert box_problem((0, 0, 101, 81), (100, 80)) == ""  # one pixel of slack: files written 0-based
    assert box_problem((5, 5, 4, 10), (100, 80)) == "inverted"
    assert box_problem((-3, 1, 10, 10), (100, 80)) == "outside the 100 x 80 image"
    assert box_problem((1, 1, 10, 90), (100, 80)) == "outside the 100 x 80 image"


def test_a_split_listing_an_image_twice_or_none_is_refused(tmp_path):
    """Detectron2 would train on a repeated image twice and score it twice (a perfect detector below AP 100)."""
    folder = annotation(tmp_path, f"<annotation>{SIZE}{obj((1, 1, 5, 5))}</annotation>")
    split = os.path.join(folder, "ImageSets", "Main", "train.txt")
    with open(split, "a") as f:
        f.write("000000\n")
    with pytest.raises(VOCError, match=r"train.txt: lists 1 image ids more than once, e.g. 000000; list each"):
        scan_split(folder, "train")
    with open(split, "w") as f:
        f.write("\n")
    with pytest.raises(VOCError, match="train.txt: lists no image"):
        scan_split(folder, "train")


def test_a_size_of_zero_is_named_as_the_size_not_as_the_boxes(tmp_path):
    folder = annotation(tmp_path, "<annotation><size><width>0</width><height>80</height></size>"
                                  f"{obj((1, 1, 5, 5))}</annotation>")
    with pytest.raises(VOCError, match=r"000000.xml: <size> says 0 x 80; write the image's width and height"):
        scan_split(folder, "train")
