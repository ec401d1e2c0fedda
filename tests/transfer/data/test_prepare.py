"""transfer/prepare + tools/prepare_data.py on small archives written in the real formats: VOC tars, SBD's .mat in
its struct layout, Cityscapes-named zips, COCO zips; truncated archives, missing lists and counts that do not match."""
import io
import json
import os
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from transfer.data.prepare import DATASETS, PrepareError, cityscapes, coco, voc
from transfer.data.voc_layout import write_annotation


def png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(size=(32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def xml(tmp_path, name) -> bytes:
    path = tmp_path / f"{name}.xml"
    write_annotation(str(path), name + ".jpg", (32, 24), [("person", (2, 2, 20, 20))])
    return path.read_bytes()


def write_tar(path, files, mode="w"):
    with tarfile.open(path, mode) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return str(path)


def write_zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return str(path)


def voc_tar(tmp_path, name, year, splits, segmentation=None):
    files = {}
    for split, ids in splits.items():
        files[f"VOCdevkit/VOC{year}/ImageSets/Main/{split}.txt"] = "".join(i + "\n" for i in ids).encode()
        for i in ids:
            files[f"VOCdevkit/VOC{year}/JPEGImages/{i}.jpg"] = jpeg()
            files[f"VOCdevkit/VOC{year}/Annotations/{i}.xml"] = xml(tmp_path, i)
    for split, ids in (segmentation or {}).items():
        files[f"VOCdevkit/VOC{year}/ImageSets/Segmentation/{split}.txt"] = "".join(i + "\n" for i in ids).encode()
        for i in ids:
            files[f"VOCdevkit/VOC{year}/JPEGImages/{i}.jpg"] = jpeg()
            files[f"VOCdevkit/VOC{year}/SegmentationClass/{i}.png"] = png(np.full((24, 32), 1))
    return write_tar(tmp_path / name, files)


def sbd_mat(mask) -> bytes:
    """One SBD class annotation: a struct GTcls with Segmentation, Boundaries and CategoriesPresent, as SBD's."""
    buffer = io.BytesIO()
    savemat(buffer, {"GTcls": {"Segmentation": np.asarray(mask, np.uint8), "Boundaries": np.zeros((1, 1)),
                               "CategoriesPresent": np.unique(mask).astype(np.uint8)}})
    return buffer.getvalue()


def test_voc_detection_is_extracted_checked_and_a_rerun_keeps_what_is_there(tmp_path):
    archives = [voc_tar(tmp_path, "VOCtrainval_06-Nov-2007.tar", 2007, {"trainval": ["000005", "000007"]}),
                voc_tar(tmp_path, "VOCtest_06-Nov-2007.tar", 2007, {"test": ["000001"]}),
                voc_tar(tmp_path, "VOCtrainval_11-May-2012.tar", 2012, {"trainval": ["2008_000002"]})]
    root = str(tmp_path / "data")
    voc.prepare_detection(archives, root)
    counts = {"VOC2007/trainval": 2, "VOC2007/test": 1, "VOC2012/trainval": 1}
    assert voc.check_detection(root, counts) == []
    assert os.path.isfile(f"{root}/VOC2007/JPEGImages/000005.jpg") and not os.path.exists(f"{root}/VOCdevkit")
    # Against the published numbers: one line per split, naming the list and both counts.
    problems = voc.check_detection(root)
    assert problems[0] == f"{root}/VOC2007/ImageSets/Main/trainval.txt: 2 images, the published set has 5,011"
    stamp = os.path.getmtime(f"{root}/VOC2007/JPEGImages/000005.jpg")
    voc.prepare_detection(archives, root)  # idempotent: nothing written again
    assert os.path.getmtime(f"{root}/VOC2007/JPEGImages/000005.jpg") == stamp
    os.unlink(f"{root}/VOC2007/Annotations/000007.xml")
    assert voc.check_detection(root, counts) == [
        f"1 listed files are missing under {root}/VOC2007, e.g. {root}/VOC2007/Annotations/000007.xml"]


def test_a_truncated_archive_is_one_line_and_the_full_one_then_finishes(tmp_path):
    whole = voc_tar(tmp_path, "VOCtest_06-Nov-2007.tar", 2007, {"test": [f"{i:06d}" for i in range(6)]})
    data = open(whole, "rb").read()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "VOCtest_06-Nov-2007.tar").write_bytes(data[:len(data) // 2])
    root = str(tmp_path / "data")
    with pytest.raises(PrepareError, match=r"VOCtest_06-Nov-2007.tar: a truncated or damaged tar archive .*"
                                           r"download it again"):
        voc.extract(str(cut / "VOCtest_06-Nov-2007.tar"), root, voc.strip("VOCdevkit/", ("VOC2007/",)))
    written = sorted(os.listdir(f"{root}/VOC2007/JPEGImages")) if os.path.isdir(f"{root}/VOC2007/JPEGImages") else []
    assert all(os.path.getsize(f"{root}/VOC2007/JPEGImages/{n}") > 0 for n in written)  # complete files only
    assert not [n for _, _, names in os.walk(root) for n in names if n.endswith(".tmp")]
    voc.extract(whole, root, voc.strip("VOCdevkit/", ("VOC2007/",)))
    assert len(os.listdir(f"{root}/VOC2007/JPEGImages")) == 6


def test_sbd_masks_become_index_pngs_and_the_lists_are_mmsegmentations(tmp_path):
    """aug = SBD train + val minus VOC train and val; trainaug = SBD train + val + VOC train minus VOC val."""
    voc_tar(tmp_path, "VOCtrainval_11-May-2012.tar", 2012, {},
            segmentation={"train": ["a", "b"], "val": ["c"]})
    mask = np.zeros((24, 32), np.uint8)
    mask[4:10, 5:20] = 15
    sbd = {f"benchmark_RELEASE/dataset/cls/{i}.mat": sbd_mat(mask) for i in ("a", "c", "d", "e")}
    sbd["benchmark_RELEASE/dataset/train.txt"] = b"a\nd\n"
    sbd["benchmark_RELEASE/dataset/val.txt"] = b"c\ne\n"
    files = {f"VOCdevkit/VOC2012/JPEGImages/{i}.jpg": jpeg() for i in ("d", "e")}
    extra = write_tar(tmp_path / "extra.tar", files)
    archives = [str(tmp_path / "VOCtrainval_11-May-2012.tar"), write_tar(tmp_path / "benchmark.tgz", sbd, "w:gz")]
    root = str(tmp_path / "data")
    voc.extract(extra, root, voc.strip("VOCdevkit/"))
    voc.prepare_sbd(archives, root)
    lists = f"{root}/VOC2012/ImageSets/Segmentation"
    assert open(f"{lists}/aug.txt").read().split() == ["d", "e"]
    assert open(f"{lists}/trainaug.txt").read().split() == ["a", "b", "d", "e"]
    assert np.array_equal(np.asarray(Image.open(f"{root}/VOC2012/SegmentationClassAug/d.png")), mask)
    assert voc.check_sbd(root, {"train": 2, "val": 1, "aug": 2, "trainaug": 4}) == []
    os.unlink(f"{lists}/aug.txt")
    problems = voc.check_sbd(root, {"train": 2, "val": 1, "aug": 2, "trainaug": 4})
    assert problems == [f"{lists}/aug.txt is missing (tools/prepare_data.py prepare voc_sbd writes it)"]
    (tmp_path / "bad.mat").write_bytes(sbd_mat(mask).replace(b"GTcls", b"GTins"))
    with pytest.raises(PrepareError, match="bad.mat: not an SBD class annotation"):
        voc.sbd_mask(str(tmp_path / "bad.mat"))


def test_cityscapes_label_ids_become_train_ids_by_the_official_table(tmp_path):
    from cityscapesscripts.helpers.labels import id2label
    label_ids = np.array([[7, 8, 26], [0, 33, 255]], np.uint8)  # road, sidewalk, car; unlabeled, bicycle, junk
    city = "aachen/aachen_000000_000019"
    gt = {f"gtFine/{s}/{city}_gtFine_labelIds.png": png(label_ids) for s in ("train", "val")}
    images = {f"leftImg8bit/{s}/{city}_leftImg8bit.png": png(np.zeros((2, 3, 3))) for s in ("train", "val")}
    archives = [write_zip(tmp_path / "gtFine_trainvaltest.zip", gt),
                write_zip(tmp_path / "leftImg8bit_trainvaltest.zip", images)]
    root = str(tmp_path / "data")
    cityscapes.prepare(archives, root)
    train_ids = np.asarray(Image.open(f"{root}/cityscapes/gtFine/train/{city}_gtFine_labelTrainIds.png"))
    assert train_ids.tolist() == [[0, 1, 13], [255, 18, 255]]
    assert [id2label[i].trainId for i in (7, 8, 26, 33)] == [0, 1, 13, 18]
    assert cityscapes.check(root, {"train": 1, "val": 1}) == []
    assert cityscapes.check(root)[0].endswith("train: 1 images, the published set has 2,975")


def test_coco_zips_and_a_missing_image(tmp_path):
    annotations = {f"annotations/instances_{s}.json": json.dumps(
        {"images": [{"id": 1, "file_name": "000000000001.jpg"}], "annotations": [], "categories": []}).encode()
        for s in ("train2017", "val2017")}
    annotations["annotations/captions_train2017.json"] = b"{}"
    archives = [write_zip(tmp_path / "annotations_trainval2017.zip", annotations)]
    archives += [write_zip(tmp_path / f"{s}.zip", {f"{s}/000000000001.jpg": jpeg()}) for s in ("train2017", "val2017")]
    root = str(tmp_path / "data")
    coco.prepare(archives, root)
    assert sorted(os.listdir(f"{root}/coco/annotations")) == ["instances_train2017.json", "instances_val2017.json"]
    assert coco.check(root, {"train2017": 1, "val2017": 1}) == []
    os.unlink(f"{root}/coco/val2017/000000000001.jpg")
    assert coco.check(root, {"val2017": 1})[0].startswith("1 images of ")


def test_the_tool_names_what_is_missing_in_one_line(tmp_path, run_tool):
    root = tmp_path / "data"
    result = run_tool("prepare_data", "check", "voc_detection", "--root", root)
    assert result.returncode == 1 and "\n" not in result.stderr.strip()
    assert (f"error: voc_detection under {root} is incomplete: {root}/VOC2007/ImageSets/Main/trainval.txt is "
            "missing (and 2 more)") in result.stderr
    result = run_tool("prepare_data", "prepare", "coco", str(tmp_path / "train2017.zip"), "--root", root)
    assert result.returncode == 1 and "train2017.zip: no such file" in result.stderr
    result = run_tool("prepare_data", "prepare", "cityscapes", "--root", root)
    assert result.returncode == 1 and "gtFine_trainvaltest.zip is needed" in result.stderr
    listed = run_tool("prepare_data", "list")
    assert listed.returncode == 0 and all(name in listed.stdout for name in DATASETS)


def errors(result):
    """The lines a tool said as errors (the progress bars share stderr, redrawn with carriage returns)."""
    return [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("error")]


def detection_tars(tmp_path):
    return [voc_tar(tmp_path, "VOCtrainval_06-Nov-2007.tar", 2007, {"trainval": ["000001"]}),
            voc_tar(tmp_path, "VOCtest_06-Nov-2007.tar", 2007, {"test": ["000002", "000003"]}),
            voc_tar(tmp_path, "VOCtrainval_11-May-2012.tar", 2012, {"trainval": ["2008_000001"]})]


def test_archives_that_lack_what_they_should_hold_are_one_line_naming_them(tmp_path, run_tool):
    root = tmp_path / "data"
    ids = {"train": ["2007_000001"], "val": ["2007_000002"]}
    voc12 = voc_tar(tmp_path, "VOCtrainval_11-May-2012.tar", 2012, {"trainval": ["2007_000001", "2007_000002"]},
                    segmentation={"train": ids["train"]})  # no ImageSets/Segmentation/val.txt
    sbd = {f"benchmark_RELEASE/dataset/cls/{i}.mat": sbd_mat(np.ones((24, 32))) for i in ("2007_000001",)}
    sbd["benchmark_RELEASE/dataset/train.txt"] = b"2007_000001\n"  # no val.txt
    tgz = write_tar(tmp_path / "benchmark.tgz", sbd, mode="w:gz")
    result = run_tool("prepare_data", "prepare", "voc_sbd", voc12, tgz, "--root", root)
    assert result.returncode == 1 and len(errors(result)) == 1, result.stderr
    assert "benchmark.tgz: has no benchmark_RELEASE/dataset/val.txt" in result.stderr
    sbd["benchmark_RELEASE/dataset/val.txt"] = b"2007_000002\n"
    tgz = write_tar(tmp_path / "benchmark.tgz", sbd, mode="w:gz")
    result = run_tool("prepare_data", "prepare", "voc_sbd", voc12, tgz, "--root", root)
    assert result.returncode == 1 and "VOCtrainval_11-May-2012.tar: has no VOCdevkit/VOC2012/ImageSets/" \
                                      "Segmentation/val.txt" in result.stderr
    other = tmp_path / "other"
    other.mkdir()
    no_dataset = write_tar(other / "benchmark.tgz", {"benchmark_RELEASE/README": b"x"}, mode="w:gz")
    result = run_tool("prepare_data", "prepare", "voc_sbd", voc12, no_dataset, "--root", tmp_path / "data2")
    assert result.returncode == 1 and "benchmark.tgz: none of its files is one of benchmark.tgz's" in result.stderr
    # a zip under the VOC2012 archive name, a COCO zip under the Cityscapes name: not those downloads
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    fake = write_zip(wrong / "VOCtrainval_11-May-2012.tar", {"readme.txt": b"x"})
    result = run_tool("prepare_data", "prepare", "voc_sbd", fake, tgz, "--root", tmp_path / "data3")
    assert result.returncode == 1 and "none of its files is one of VOCtrainval_11-May-2012.tar's" in result.stderr
    coco_zip = write_zip(wrong / "gtFine_trainvaltest.zip", {"val2017/000000000139.jpg": jpeg()})
    images = write_zip(wrong / "leftImg8bit_trainvaltest.zip", {"leftImg8bit/val/a/a_leftImg8bit.png": png([[0]])})
    result = run_tool("prepare_data", "prepare", "cityscapes", coco_zip, images, "--root", tmp_path / "data4")
    assert result.returncode == 1 and "gtFine_trainvaltest.zip: none of its files" in result.stderr
    assert "prepare cityscapes writes them" not in result.stderr


def test_a_truncated_zip_is_named_a_zip_in_one_line(tmp_path, run_tool):
    whole = write_zip(tmp_path / "val2017.zip", {f"val2017/{i:012d}.jpg": jpeg() for i in range(4)})
    cut = tmp_path / "cut"
    cut.mkdir()
    data = open(whole, "rb").read()
    (cut / "val2017.zip").write_bytes(data[:len(data) // 2])
    with pytest.raises(PrepareError, match=r"val2017.zip: a truncated or damaged zip archive"):
        list(coco.extract(str(cut / "val2017.zip"), str(tmp_path / "data"), coco.strip("", ("val2017/",))))


def test_unwritable_roots_and_a_full_disk_are_one_line(tmp_path, run_tool, monkeypatch):
    import errno

    from transfer.data.prepare import os_problem
    tars = detection_tars(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = run_tool("prepare_data", "prepare", "voc_detection", *tars, "--root", blocker / "below")
    assert result.returncode == 1 and len(errors(result)) == 1, result.stderr
    assert "Traceback" not in result.stderr and f"--root {blocker / 'below'}" in result.stderr
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        if os.access(readonly, os.W_OK):  # root ignores the mode bits: the message is what is checked here
            error = PermissionError(errno.EACCES, "Permission denied", str(readonly / "VOC2007"))
            assert "cannot write there (Permission denied" in os_problem(error, str(readonly))
        else:
            result = run_tool("prepare_data", "prepare", "voc_detection", *tars, "--root", readonly)
            assert result.returncode == 1 and "cannot write there" in result.stderr
    finally:
        readonly.chmod(0o755)
    full = os_problem(OSError(errno.ENOSPC, "No space left on device", "/data/VOC2007/x.jpg"), "/data")
    assert full.startswith("the disk of --root /data is full (writing /data/VOC2007/x.jpg)") and "\n" not in full


def test_an_interrupted_prepare_is_seen_by_check_and_cleared_by_a_rerun(tmp_path, run_tool):
    tars = detection_tars(tmp_path)
    root = tmp_path / "data"
    assert run_tool("prepare_data", "prepare", "voc_detection", *tars, "--root", root).returncode == 1  # counts
    left = root / "VOC2007" / "JPEGImages" / ".000003.jpg.k2j4h1x0.tmp"  # a write killed before its rename
    left.write_bytes(b"half")
    from transfer.data.prepare import check_sets
    problems = check_sets(["voc_2007_test"], str(root), exact=False)
    assert len(problems) == 1 and "1 unfinished temporary files of an interrupted prepare" in problems[0]
    result = run_tool("prepare_data", "prepare", "voc_detection", *tars, "--root", root)
    assert "removed 1 unfinished temporary files" in result.stdout and not left.exists()
    assert check_sets(["voc_2007_test"], str(root), exact=False) == []
