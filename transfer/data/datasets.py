"""Datasets for fine-tuning: Detectron2's builtin VOC/COCO/Cityscapes names (under $DETECTRON2_DATASETS,
registered by Detectron2 itself on import), VOC2012's semantic segmentation sets (registered here on import), and
any VOC-layout folder, COCO json or folder of label maps named on the command line."""
import json
import logging
import os
import re
from collections import Counter
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator, SemSegEvaluator
from detectron2.structures import BoxMode

from transfer.data.label_maps import check_labels, scan_labels, sem_seg_records
from transfer.data.voc_layout import scan_split, voc_records

logger = logging.getLogger(__name__)
SEMANTIC = ("sem_seg", "cityscapes_sem_seg")  # evaluator types scored by SemSegEvaluator
VOC_SEM_SEG_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
                       "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
                       "train", "tvmonitor"]
# VOC2012 with SBD's masks as mmsegmentation prepares them (tools/convert_datasets/voc_aug.py): train.txt with
# SegmentationClass + aug.txt with SegmentationClassAug = 10,582 training images; val.txt = 1,449 test images.
VOC_SEM_SEG = {"voc_2012_sem_seg_train_aug": (("SegmentationClass", "train.txt"), ("SegmentationClassAug", "aug.txt")),
               "voc_2012_sem_seg_val": (("SegmentationClass", "val.txt"),)}


class DatasetError(ValueError):
    """A dataset that cannot be used as given; the message names the file or the key."""


def is_semantic(cfg) -> bool:
    """Whether a config trains semantic segmentation (its classes are ``stuff_classes``, its evaluator SemSeg)."""
    return cfg.MODEL.META_ARCHITECTURE in ("SemanticSegmentor", "AlignedSegmentor")


def voc_year(dirname: str) -> int:
    """2007 for a ``VOC2007`` folder (its test set is scored with the 11-point metric of the VOC07 protocol);
    the year of any other ``VOCyyyy`` folder; 2012 (area under the curve) for folders named otherwise. Only the
    folder's own name counts: a set kept somewhere under a ``VOC2007`` folder is not VOC2007."""
    found = re.fullmatch(r"VOC(\d{4})", os.path.basename(os.path.normpath(os.path.abspath(dirname))))
    return int(found.group(1)) if found else 2012


def check_voc_layout(dirname: str, split: str) -> None:
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main", split + ".txt")):
        if not os.path.exists(os.path.join(dirname, sub)):
            raise DatasetError(f"{dirname}: not a VOC layout for split {split!r}, {os.path.join(dirname, sub)} is "
                               "missing")


def register_voc(name: str, dirname: str, split: str, classes: Sequence[str], year: Optional[int] = None) -> None:
    """A VOC-layout folder (JPEGImages/, Annotations/, ImageSets/Main/SPLIT.txt) with the run's class list.
    ``year`` (default: from the folder name) 2007 selects the 11-point VOC07 AP, others the area AP."""
    if name in DatasetCatalog.list():
        return
    check_voc_layout(dirname, split)
    year = voc_year(dirname) if year is None else year
    classes = list(classes)
    # Detectron2's register_pascal_voc, with the strict reader of voc_layout (same records).
    DatasetCatalog.register(name, lambda: voc_records(dirname, split, classes, BoxMode.XYXY_ABS))
    MetadataCatalog.get(name).set(thing_classes=classes, dirname=dirname, year=year, split=split,
                                  evaluator_type="pascal_voc")
    logger.info("registered %s: VOC layout %s split %s (year %d), classes %s", name, dirname, split, year, classes)


def coco_classes(json_file: str) -> List[str]:
    """The category names of a COCO json in category-id order (Detectron2's order), with a clear error for a
    file that is not a COCO instances json."""
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{json_file}: not a valid JSON file ({e})") from None
    problems = [k for k in ("images", "annotations", "categories")
                if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if problems:
        raise DatasetError(f"{json_file}: not a COCO instances file (no list under {problems or 'the top level'})")
    try:
        categories = sorted(data["categories"], key=lambda c: c["id"])
        names = [c["name"] for c in categories]
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{json_file}: a category without 'id' or 'name' ({e})") from None
    ids = Counter(image.get("id") for image in data["images"] if isinstance(image, dict))
    twice = sorted((i for i, n in ids.items() if n > 1), key=str)
    if twice:  # Detectron2 would drop images with a warning buried in its log
        raise DatasetError(f"{json_file}: {len(twice)} image ids are used by more than one image, e.g. {twice[:5]}; "
                           "give every image its own id")
    short = [a.get("id") for a in data["annotations"] if isinstance(a, dict) and isinstance(a.get("segmentation"), list)
             and any(len(polygon) < 6 or len(polygon) % 2 for polygon in a["segmentation"])]
    if short:  # pycocotools fails on them at the mask evaluation, after the whole training
        raise DatasetError(f"{json_file}: {len(short)} annotations have a polygon of fewer than 3 points (or an odd "
                           f"number of coordinates), e.g. annotation ids {short[:5]}; fix or remove those polygons")
    known = {c["id"] for c in categories}
    unknown = sorted({a.get("category_id") for a in data["annotations"] if isinstance(a, dict)} - known, key=str)
    if unknown:
        raise DatasetError(f"{json_file}: annotations use category_id {unknown[:10]} that no category has "
                           f"(categories: {sorted(known)}); add them to 'categories' or drop those annotations")
    return names


def register_coco(name: str, json_file: str, image_root: str) -> None:
    if name in DatasetCatalog.list():
        return
    for path in (json_file, image_root):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file or folder (dataset {name})")
    classes = coco_classes(json_file)
    register_coco_instances(name, {}, json_file, image_root)
    MetadataCatalog.get(name).thing_classes = classes  # Detectron2 sets the same list when it loads the json
    logger.info("registered %s: COCO json %s, images %s, %d classes", name, json_file, image_root, len(classes))


def register_sem_seg(name: str, parts, classes: Sequence[str], ignore_value: int = 255) -> None:
    """Images with label maps (PNG of class indices, ``ignore_value`` unlabelled): ``parts`` are
    (IMAGES, LABELS, LIST or None) folders whose records are concatenated (VOC2012 + SBD: two label folders)."""
    if name in DatasetCatalog.list():
        return
    DatasetCatalog.register(name, lambda: [r for part in parts for r in sem_seg_records(*part)])
    MetadataCatalog.get(name).set(stuff_classes=list(classes), ignore_label=ignore_value, evaluator_type="sem_seg",
                                  image_root=parts[0][0], sem_seg_root=parts[0][1],
                                  split=",".join(os.path.basename(p[2]) for p in parts if p[2]) or None)
    logger.info("registered %s: images %s, label maps %s, %d classes", name, parts[0][0], parts[0][1], len(classes))


def sem_seg_parts(values: Sequence[str]):
    """``--sem-seg NAME IMAGES LABELS [LIST]`` -> (NAME, [(IMAGES, LABELS, LIST or None)])."""
    if len(values) not in (3, 4):
        raise DatasetError(f"--sem-seg {' '.join(values)}: expected NAME IMAGES LABELS [LIST]")
    return values[0], [(values[1], values[2], values[3] if len(values) == 4 else None)]


def register_from_args(voc=(), coco=(), classes: Optional[Sequence[str]] = None, sem_seg=()) -> None:
    """``voc``: (NAME, DIR, SPLIT) triples, all registered with ONE class list: ``classes`` if given (every
    split's names must be in it), else the sorted union of the names in all splits (a class seen in one split
    only would otherwise shift every class index of the other). ``coco``: (NAME, JSON, IMAGES) triples.
    ``sem_seg``: (NAME, IMAGES, LABELS[, LIST]), with ``classes`` as names of the indices 0..K-1, or else
    ``class_0``.. up to the largest index found in any of them."""
    per_split: Dict[str, List[str]] = {}
    for name, dirname, split in voc:
        check_voc_layout(dirname, split)
        per_split[name] = scan_split(dirname, split)
    if classes:
        for (name, dirname, split), found in zip(voc, per_split.values()):
            extra = sorted(set(found) - set(classes))
            if extra:
                raise DatasetError(f"--voc {name} {dirname} {split}: classes {extra} are not in --classes "
                                   f"{list(classes)}")
    run_classes = list(classes) if classes else sorted(set().union(*per_split.values())) if per_split else []
    for name, dirname, split in voc:
        register_voc(name, dirname, split, run_classes)
    for name, json_file, image_root in coco:
        register_coco(name, json_file, image_root)
    sets = [sem_seg_parts(values) for values in sem_seg]
    found = {name: scan_labels([r for part in parts for r in sem_seg_records(*part)]) for name, parts in sets}
    if sets:
        largest = max((k for labels in found.values() for k in labels), default=0)
        label_names = list(classes) if classes else [f"class_{k}" for k in range(largest + 1)]
        for name, parts in sets:
            check_labels(found[name], label_names, f"--sem-seg {name}")
            register_sem_seg(name, parts, label_names)


def check_classes(cfg) -> List[str]:
    """Every training and test set of the run has the same classes, as many as the model predicts
    (MODEL.ROI_HEADS.NUM_CLASSES, or MODEL.SEM_SEG_HEAD.NUM_CLASSES for semantic segmentation)."""
    kind, key = ("stuff_classes", "SEM_SEG_HEAD") if is_semantic(cfg) else ("thing_classes", "ROI_HEADS")
    lists = {}
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        found = MetadataCatalog.get(name).get(kind, None)
        if found is None:
            DatasetCatalog.get(name)  # a COCO json registered by Detectron2 sets its classes when loaded
            found = MetadataCatalog.get(name).get(kind, None)
        lists[name] = list(found or [])
    distinct = {tuple(v) for v in lists.values()}
    if len(distinct) > 1:
        listed = "; ".join(f"{name}: {named(found)}" for name, found in lists.items())
        raise DatasetError(f"the datasets of this run have different class lists ({listed}): class indices would not "
                           "agree between training and test; register them with one list (--classes)")
    classes = list(next(iter(distinct))) if distinct else []
    predicted = cfg.MODEL[key].NUM_CLASSES
    if classes and predicted != len(classes):
        raise DatasetError(f"MODEL.{key}.NUM_CLASSES is {predicted}, the datasets have {len(classes)} classes "
                           f"{named(classes)}: set MODEL.{key}.NUM_CLASSES {len(classes)}")
    return classes


def named(classes: Sequence[str], shown: int = 8) -> str:
    """A class list for a one-line message: all of it when short, else its first names and its length."""
    classes = list(classes)
    if len(classes) <= shown:
        return str(classes)
    return f"[{', '.join(map(repr, classes[:shown - 2]))}, ... ({len(classes)} in all)]"


def evaluation_metric(dataset_name: str) -> str:
    """How a test set is scored, in words, for final_results.json."""
    meta = MetadataCatalog.get(dataset_name)
    kind = meta.get("evaluator_type", None)
    if kind == "pascal_voc":
        if meta.get("year", None) == 2007:
            return "VOC2007 11-point interpolated AP (AP50; AP and AP75 average over IoU 0.50:0.95)"
        return "VOC area-under-curve AP (AP50; AP and AP75 average over IoU 0.50:0.95)"
    if kind == "coco":
        return "COCO AP (pycocotools)"
    if kind in SEMANTIC:
        return (f"mIoU over {len(meta.stuff_classes)} classes, mean and pixel accuracy (Detectron2 SemSegEvaluator, "
                f"label {meta.ignore_label} ignored)")
    return str(kind)


def evaluation_identity(dataset_name: str) -> dict:
    """What a test number measures: the metric, the files scored and the split, for final_results.json. Tables
    pair two runs only when these agree."""
    meta = MetadataCatalog.get(dataset_name)
    source = meta.get("dirname", None) or meta.get("json_file", None) or meta.get("sem_seg_root", None) or \
        meta.get("gt_dir", None)
    return {"dataset": dataset_name, "metric": evaluation_metric(dataset_name),
            "source": os.path.abspath(source) if source else None, "split": meta.get("split", None)}


def build_evaluator(cfg, dataset_name: str, output_folder: str):
    """The evaluator a dataset's metadata asks for: VOC AP for VOC layouts, COCO AP (boxes, and masks when the
    model predicts them) for COCO jsons."""
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if kind == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    if kind == "coco":
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluator(dataset_name, tasks=tasks, distributed=True, output_dir=output_folder)
    if kind in SEMANTIC:  # Cityscapes too: the same mIoU, without cityscapesscripts
        return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)
    raise ValueError(f"dataset {dataset_name}: no evaluator for evaluator_type {kind!r} (expected pascal_voc, coco "
                     f"or {' or '.join(SEMANTIC)})")


def builtin_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def voc_sem_seg_parts(name: str):
    root = os.path.join(builtin_root(), "VOC2012")
    return [(os.path.join(root, "JPEGImages"), os.path.join(root, labels),
             os.path.join(root, "ImageSets", "Segmentation", split)) for labels, split in VOC_SEM_SEG[name]]


def register_builtin_sem_seg() -> None:
    """VOC2012's semantic segmentation sets under $DETECTRON2_DATASETS/VOC2012, read when first used."""
    for name in VOC_SEM_SEG:
        register_sem_seg(name, voc_sem_seg_parts(name), VOC_SEM_SEG_CLASSES)


register_builtin_sem_seg()
