"""Datasets of a fine-tuning run: one class list, checked against NUM_CLASSES; the VOC year; COCO jsons."""
import json
import os
import uuid

import pytest

from transfer.data.synthetic import write_coco, write_voc

pytest.importorskip("detectron2")

from detectron2.data import MetadataCatalog  # noqa: E402

from transfer.data.datasets import (  # noqa: E402
    DatasetError,
    check_classes,
    evaluation_metric,
    register_coco,
    register_from_args,
    voc_year,
)
from transfer.finetune.config import CONFIGS, setup_cfg  # noqa: E402


def unique(name):
    return f"{name}_{uuid.uuid4().hex[:8]}"  # the catalogs are process-wide


def tiny_cfg(train, test, num_classes):
    return setup_cfg(os.path.join(CONFIGS, "tiny/trees_R_18_FPN_cpu.yaml"),
                     ["DATASETS.TRAIN", str((train,)), "DATASETS.TEST", str((test,)),
                      "MODEL.ROI_HEADS.NUM_CLASSES", num_classes])


def test_a_class_only_in_training_gets_one_index_for_both_splits(tmp_path):
    # trainval images carry person and car; the test split carries person only. Read per split, "person" would
    # be class 1 in training and class 0 in test: every test AP would be scored against the wrong class.
    root = tmp_path / "set"
    write_voc(str(root), year=2012, classes=("person", "car"), train=3, test=2)
    base = root / "VOC2012"
    for name in open(base / "ImageSets/Main/test.txt").read().split():
        xml = base / "Annotations" / f"{name}.xml"
        xml.write_text(xml.read_text().replace("<name>car</name>", "<name>person</name>"))
    train, test = unique("train"), unique("test")
    register_from_args(voc=[(train, str(base), "trainval"), (test, str(base), "test")])
    assert MetadataCatalog.get(train).thing_classes == MetadataCatalog.get(test).thing_classes == ["car", "person"]
    assert check_classes(tiny_cfg(train, test, 2)) == ["car", "person"]
    with pytest.raises(DatasetError, match="MODEL.ROI_HEADS.NUM_CLASSES is 3, the datasets have 2 classes"):
        check_classes(tiny_cfg(train, test, 3))
    with pytest.raises(DatasetError, match=r"classes \['car'\] are not in --classes \['person'\]"):
        register_from_args(voc=[(unique("x"), str(base), "trainval")], classes=["person"])
    given = unique("given")
    register_from_args(voc=[(given, str(base), "test")], classes=["person", "car", "dog"])
    assert MetadataCatalog.get(given).thing_classes == ["person", "car", "dog"]
    with pytest.raises(DatasetError, match="different class lists"):
        check_classes(tiny_cfg(train, given, 2))


def test_voc_year_decides_the_metric(tmp_path):
    assert voc_year("/data/VOCdevkit/VOC2007") == 2007 and voc_year("datasets/trees") == 2012
    write_voc(str(tmp_path), year=2007)
    name = unique("voc07")
    register_from_args(voc=[(name, str(tmp_path / "VOC2007"), "test")])
    assert MetadataCatalog.get(name).year == 2007
    assert evaluation_metric(name).startswith("VOC2007 11-point")
    other = unique("trees")
    os.rename(tmp_path / "VOC2007", tmp_path / "trees")
    register_from_args(voc=[(other, str(tmp_path / "trees"), "test")])
    assert evaluation_metric(other).startswith("VOC area-under-curve")


def test_malformed_coco_json_is_named(tmp_path):
    json_file, images = write_coco(str(tmp_path / "coco"))
    (tmp_path / "torn.json").write_text(open(json_file).read()[:200])
    with pytest.raises(DatasetError, match="torn.json: not a valid JSON file"):
        register_coco(unique("torn"), str(tmp_path / "torn.json"), images)
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(DatasetError, match="list.json: not a COCO instances file"):
        register_coco(unique("list"), str(tmp_path / "list.json"), images)
    name = unique("coco")
    register_coco(name, json_file, images)
    assert MetadataCatalog.get(name).thing_classes == ["box", "blob"]


def test_annotations_of_an_unknown_category_are_named(tmp_path):
    json_file, images = write_coco(str(tmp_path / "coco"))
    data = json.load(open(json_file))
    data["annotations"][0]["category_id"] = 7
    (tmp_path / "unknown.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"unknown.json: annotations use category_id \[7\]"):
        register_coco(unique("unknown"), str(tmp_path / "unknown.json"), images)


def test_voc_boxes_outside_the_image_stop_the_command_in_one_line(tmp_path):
    voc = write_voc(str(tmp_path), classes=("box",), train=2, test=1)
    path = os.path.join(voc, "Annotations", "000001.xml")
    text = open(path).read()
    start = text.index("<xmax>") + len("<xmax>")
    open(path, "w").write(text[:start] + "400" + text[text.index("</xmax>"):])
    with pytest.raises(ValueError, match=r"000001.xml \(box .*outside the 128 x 96 image"):
        register_from_args([(unique("outside"), voc, "trainval")])


def predictions_of(records, shift):
    """Every ground-truth box as a prediction (score 1), moved right by ``shift`` x its width: IoU (1 - s) / (1 + s),
    0.6 at s = 0.25 (a hit at IoU 0.5, a miss at 0.75)."""
    import torch
    from detectron2.structures import Boxes, BoxMode, Instances
    inputs, outputs = [], []
    for record in records:
        boxes = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                              for a in record["annotations"]], dtype=torch.float32)
        boxes[:, [0, 2]] += shift * (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
        found = Instances((record["height"], record["width"]), pred_boxes=Boxes(boxes),
                          scores=torch.ones(len(boxes)),
                          pred_classes=torch.tensor([a["category_id"] for a in record["annotations"]]))
        inputs.append({"image_id": record["image_id"], "height": record["height"], "width": record["width"]})
        outputs.append({"instances": found})
    return inputs, outputs


@pytest.mark.parametrize("kind", ["voc", "coco"])
def test_the_evaluator_of_a_registered_set_scores_known_predictions(tmp_path, kind):
    from detectron2.data import DatasetCatalog

    from transfer.data.datasets import build_evaluator
    name = unique(kind)
    if kind == "voc":
        register_from_args([(name, write_voc(str(tmp_path), year=2012, train=0, test=4), "test")])
    else:
        register_coco(name, *write_coco(str(tmp_path / "coco"), count=4))
    cfg = tiny_cfg(name, name, 2)
    records = DatasetCatalog.get(name)
    for shift, expected in ((0.0, {"AP50": 100.0, "AP75": 100.0}), (0.25, {"AP50": 100.0, "AP75": 0.0})):
        evaluator = build_evaluator(cfg, name, str(tmp_path / f"eval_{shift}"))
        evaluator.reset()
        evaluator.process(*predictions_of(records, shift))
        results = evaluator.evaluate()["bbox"]
        assert {k: round(results[k], 6) for k in expected} == expected, (kind, shift, results)


SEM_SEG = os.path.join(CONFIGS, "tiny/nuclei_FCN_R18_D8_cpu.yaml")


def sem_seg_cfg(train, test, num_classes):
    return setup_cfg(SEM_SEG, ["DATASETS.TRAIN", str((train,)), "DATASETS.TEST", str((test,)),
                               "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes])


def test_label_map_sets_share_one_class_list_checked_against_num_classes(tmp_path):
    from transfer.data.synthetic import write_sem_seg
    root = write_sem_seg(str(tmp_path / "set"), classes=3, train=3, test=1)
    train, test = unique("seg_train"), unique("seg_test")
    # the test set happens to hold fewer classes than training: both get the run's list
    register_from_args(sem_seg=[[train, f"{root}/images", f"{root}/labels", f"{root}/train.txt"],
                                [test, f"{root}/images", f"{root}/labels", f"{root}/test.txt"]])
    assert MetadataCatalog.get(test).stuff_classes == ["class_0", "class_1", "class_2"]
    assert MetadataCatalog.get(train).ignore_label == 255
    assert check_classes(sem_seg_cfg(train, test, 3)) == ["class_0", "class_1", "class_2"]
    with pytest.raises(DatasetError, match="MODEL.SEM_SEG_HEAD.NUM_CLASSES is 2, the datasets have 3 classes"):
        check_classes(sem_seg_cfg(train, test, 2))
    with pytest.raises(ValueError, match=r"--sem-seg .*: label maps hold class indices \[2\] but the run has 2"):
        register_from_args(sem_seg=[[unique("seg"), f"{root}/images", f"{root}/labels"]], classes=["bg", "thing"])
    with pytest.raises(DatasetError, match="expected NAME IMAGES LABELS \\[LIST\\]"):
        register_from_args(sem_seg=[["only", "two"]])
    assert "mIoU over 3 classes" in evaluation_metric(test)


def test_the_semantic_evaluator_scores_known_predictions(tmp_path):
    """Perfect logits score 100; predicting background everywhere scores the background's share of the labelled
    pixels as its IoU and pixel accuracy, and 0 for every other class."""
    import numpy as np
    import torch
    from detectron2.data import DatasetCatalog

    from transfer.data.datasets import build_evaluator
    from transfer.data.label_maps import read_label_png
    from transfer.data.synthetic import write_sem_seg
    root = write_sem_seg(str(tmp_path / "set"), classes=3, train=0, test=3)
    name = unique("seg")
    register_from_args(sem_seg=[[name, f"{root}/images", f"{root}/labels", f"{root}/test.txt"]])
    records = DatasetCatalog.get(name)
    labels = [read_label_png(r["sem_seg_file_name"]).astype(int) for r in records]
    for guess in ("truth", "background"):
        evaluator = build_evaluator(sem_seg_cfg(name, name, 3), name, str(tmp_path / guess))
        evaluator.reset()
        for record, label in zip(records, labels):
            classes = np.where(label == 255, 0, label) if guess == "truth" else np.zeros_like(label)
            logits = torch.nn.functional.one_hot(torch.as_tensor(classes), 3).permute(2, 0, 1).float()
            evaluator.process([{"file_name": record["file_name"]}], [{"sem_seg": logits}])
        results = evaluator.evaluate()["sem_seg"]
        labelled = np.concatenate([lab[lab != 255] for lab in labels])
        share = 100 * (labelled == 0).mean()
        expected = {"mIoU": 100.0, "pACC": 100.0} if guess == "truth" else {
            "IoU-class_0": share, "IoU-class_1": 0.0, "IoU-class_2": 0.0, "mIoU": share / 3, "pACC": share}
        assert {k: round(results[k], 6) for k in expected} == {k: round(v, 6) for k, v in expected.items()}


def test_missing_segmentation_sets_are_named_before_training(tmp_path, monkeypatch):
    from transfer.data import checks as dataset_checks
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    missing = dataset_checks.missing_builtin(["voc_2012_sem_seg_train_aug", "cityscapes_fine_sem_seg_val",
                                              "voc_2012_sem_seg_val", "my_own_set"])
    lists = f"{tmp_path}/VOC2012/ImageSets/Segmentation"
    assert missing == [
        f"voc_sbd: {lists}/train.txt is missing (and 2 more); prepare it with tools/prepare_data.py prepare "
        f"voc_sbd ARCHIVES... --root {tmp_path}",
        f"cityscapes: {tmp_path}/cityscapes/leftImg8bit/val: 0 images, the published set has 500; "
        f"prepare it with tools/prepare_data.py prepare cityscapes ARCHIVES... --root {tmp_path}"]
    # A small set in the real layout under a builtin name (the tiny configs): every file, any count.
    write_voc(str(tmp_path), classes=("person",), train=2, test=1)
    assert dataset_checks.missing_builtin(["voc_2007_trainval", "voc_2007_test"], exact=False) == []
    assert "2 images, the published set has 5,011" in dataset_checks.missing_builtin(["voc_2007_trainval"])[0]


def test_coco_duplicate_image_ids_and_short_polygons_are_refused(tmp_path):
    json_file, images = write_coco(str(tmp_path / "coco"), count=3)
    data = json.loads(open(json_file).read())
    data["images"][2]["id"] = data["images"][1]["id"]
    with open(json_file, "w") as f:
        json.dump(data, f)
    with pytest.raises(DatasetError, match=r"1 image ids are used by more than one image, e.g. \[2\]"):
        register_coco(unique("dup"), json_file, images)
    data["images"][2]["id"] = 3
    data["annotations"][1]["segmentation"] = [[1, 1, 5, 5]]
    with open(json_file, "w") as f:
        json.dump(data, f)
    with pytest.raises(DatasetError, match=r"1 annotations have a polygon of fewer than 3 points.*ids \[2\]"):
        register_coco(unique("short"), json_file, images)


def test_missing_or_resized_images_and_empty_sets_stop_before_training(tmp_path):
    """Found before the first iteration, not when the first batch holding the image is drawn."""
    from detectron2.data import DatasetCatalog

    from transfer.data.checks import check_datasets
    write_voc(str(tmp_path), classes=("person", "car"), train=3, test=2)
    voc = str(tmp_path / "VOC2007")
    train, test = unique("files_train"), unique("files_test")
    register_from_args(voc=[(train, voc, "trainval"), (test, voc, "test")])
    cfg = tiny_cfg(train, test, 2)
    assert check_datasets(cfg) == ["car", "person"]
    from PIL import Image
    Image.new("RGB", (64, 64)).save(os.path.join(voc, "JPEGImages", "000001.jpg"))
    with pytest.raises(DatasetError, match=r"1 of 3 images are missing or not the size.*000001.jpg \(64 x 64, its "
                                           r"annotation says 128 x 96\)"):
        check_datasets(cfg)
    os.unlink(os.path.join(voc, "JPEGImages", "000001.jpg"))
    with pytest.raises(DatasetError, match=r"000001.jpg \(missing\)"):
        check_datasets(cfg)
    empty = unique("empty")
    DatasetCatalog.register(empty, lambda: [])
    MetadataCatalog.get(empty).set(thing_classes=["car", "person"])
    with pytest.raises(DatasetError, match=f"dataset {empty}: holds no image"):
        check_datasets(tiny_cfg(test, empty, 2))


def test_long_class_lists_are_shortened_in_one_line_messages():
    from transfer.data.datasets import named
    assert named(["a", "b"]) == "['a', 'b']"
    long = named([f"class_{k}" for k in range(258)])
    assert long == "['class_0', 'class_1', 'class_2', 'class_3', 'class_4', 'class_5', ... (258 in all)]"
