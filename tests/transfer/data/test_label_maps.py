"""transfer/data/label_maps.py: label maps read as class indices, image/label pairs by file stem, the class scan."""
import numpy as np
import pytest
from PIL import Image

from transfer.data.label_maps import LabelMapError, check_labels, read_label_png, scan_labels, sem_seg_records
from transfer.data.synthetic import write_sem_seg


def test_records_pair_images_with_label_maps_by_stem(tmp_path):
    root = write_sem_seg(str(tmp_path / "set"), classes=3, train=3, test=2)
    records = sem_seg_records(f"{root}/images", f"{root}/labels", f"{root}/train.txt")
    assert [r["image_id"] for r in records] == ["0000", "0001", "0002"]
    assert all(r["file_name"].endswith(".png") and "/labels/" in r["sem_seg_file_name"] for r in records)
    assert len(sem_seg_records(f"{root}/images", f"{root}/labels")) == 5  # no list: every label map
    found = scan_labels(records)
    assert set(found) == {0, 1, 2} and all(path.startswith(f"{root}/labels/") for path in found.values())


def test_what_is_missing_or_does_not_fit_is_named(tmp_path):
    root = write_sem_seg(str(tmp_path / "set"), train=2, test=1)
    (tmp_path / "set" / "images" / "0001.png").unlink()
    with pytest.raises(LabelMapError,
                       match=r"1 of 2 images or label maps are missing, first: \['.*/images/0001\.\*'\]"):
        sem_seg_records(f"{root}/images", f"{root}/labels", f"{root}/train.txt")
    with pytest.raises(LabelMapError, match="nowhere.txt: no such list"):
        sem_seg_records(f"{root}/images", f"{root}/labels", f"{root}/nowhere.txt")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(f"{root}/labels/0000.png")
    with pytest.raises(LabelMapError, match="0000.png: 10x10 label map for a 96x64 image"):
        scan_labels([{"file_name": f"{root}/images/0000.png", "sem_seg_file_name": f"{root}/labels/0000.png"}])


def test_colour_and_unreadable_label_maps_are_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "colour.png")
    with pytest.raises(LabelMapError, match="colour.png: a label map holds one class index per pixel.*RGB"):
        read_label_png(str(tmp_path / "colour.png"))
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(LabelMapError, match="cut.png: not a readable label map"):
        read_label_png(str(tmp_path / "cut.png"))
    palette = Image.fromarray(np.array([[0, 1], [2, 255]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    palette.save(tmp_path / "palette.png")
    assert read_label_png(str(tmp_path / "palette.png")).tolist() == [[0, 1], [2, 255]]


def test_labels_beyond_the_class_list_name_the_file():
    check_labels({0: "a.png", 1: "b.png"}, ["background", "nucleus"], "--sem-seg x")
    with pytest.raises(LabelMapError, match=r"--sem-seg x: label maps hold class indices \[2, 7\] but the run has 2 "
                                            r"classes .* \(index 2 first in c.png\)"):
        check_labels({0: "a.png", 2: "c.png", 7: "d.png"}, ["background", "nucleus"], "--sem-seg x")


def test_two_images_of_one_stem_are_ambiguous(tmp_path):
    root = write_sem_seg(str(tmp_path / "set"), train=2, test=1)
    Image.new("RGB", (96, 64)).save(f"{root}/images/0001.jpg")  # beside 0001.png
    with pytest.raises(LabelMapError, match=r"images 0001.jpg, 0001.png share the stem '0001'.*ambiguous"):
        sem_seg_records(f"{root}/images", f"{root}/labels", f"{root}/train.txt")


def test_sixteen_bit_images_and_labels_beyond_255_are_named(tmp_path):
    """A 16-bit image would be read as an all-255 picture; a label value of 257 is a broken file, not 258
    classes."""
    root = write_sem_seg(str(tmp_path / "set"), train=2, test=1)
    Image.fromarray(np.full((64, 96), 4000, np.uint16)).save(f"{root}/images/0000.png")
    assert Image.open(f"{root}/images/0000.png").mode.startswith("I")
    records = sem_seg_records(f"{root}/images", f"{root}/labels", f"{root}/train.txt")
    with pytest.raises(LabelMapError, match=r"0000.png: a I;?1?6?\S* \(16/32-bit\) image; the models read 8-bit"):
        scan_labels(records)
    root = write_sem_seg(str(tmp_path / "other"), train=1, test=0)
    Image.fromarray(np.full((64, 96), 257, np.uint16)).save(f"{root}/labels/0000.png")
    with pytest.raises(LabelMapError) as error:
        scan_labels(sem_seg_records(f"{root}/images", f"{root}/labels", f"{root}/train.txt"))
    assert "labels/0000.png: holds the value 257" in str(error.value) and len(str(error.value)) < 300


def test_a_16_bit_label_map_of_valid_values_reads_as_8_bit_and_resizes(tmp_path):
    """Detectron2's resize has no 16-bit kernel ("compute_indices_weights_nearest" not implemented for
    'UInt16'): a 16-bit map holding 0/1 is read as the 8-bit indices it holds; 256 or more is refused."""
    import numpy as np
    from PIL import Image
    wide = np.zeros((24, 32), dtype=np.uint16)
    wide[4:12, 8:20] = 1
    wide[0, 0] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode.startswith("I")
    labels = read_label_png(str(tmp_path / "wide.png"))
    assert labels.dtype == np.uint8 and np.array_equal(labels, wide.astype(np.uint8))
    pytest.importorskip("detectron2")
    from detectron2.data import transforms as T
    augmented = T.AugInput(np.zeros((24, 32, 3), dtype=np.uint8), sem_seg=labels)
    T.AugmentationList([T.ResizeShortestEdge(48, 64)])(augmented)
    assert augmented.sem_seg.shape == (48, 64) and set(np.unique(augmented.sem_seg)) == {0, 1, 255}
    wide[0, 1] = 300
    Image.fromarray(wide).save(tmp_path / "too_wide.png")
    with pytest.raises(LabelMapError, match="too_wide.png: holds the value 300"):
        read_label_png(str(tmp_path / "too_wide.png"))
