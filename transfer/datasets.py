"""Datasets for fine-tuning: Detectron2's builtin VOC/COCO names (under $DETECTRON2_DATASETS, registered by
Detectron2 itself on import) plus any VOC-layout folder or COCO json named on the command line."""
import glob
import logging
import os
from typing import Optional, Sequence
from xml.etree import ElementTree as ET

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_pascal_voc
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

logger = logging.getLogger(__name__)


def voc_class_names(dirname: str, split: str) -> list:
    """The object names used in a VOC-layout split, sorted (for sets that are not the 20 VOC classes)."""
    with open(os.path.join(dirname, "ImageSets", "Main", split + ".txt")) as f:
        ids = [line.strip() for line in f if line.strip()]
    names = set()
    for image_id in ids:
        tree = ET.parse(os.path.join(dirname, "Annotations", image_id + ".xml"))
        names.update(obj.find("name").text for obj in tree.findall("object"))
    return sorted(names)


def register_voc(name: str, dirname: str, split: str, classes: Optional[Sequence[str]] = None,
                 year: int = 2012) -> None:
    """A VOC-layout folder (JPEGImages/, Annotations/, ImageSets/Main/SPLIT.txt). ``year`` 2007 selects the
    11-point VOC07 AP, any other year the area-under-curve AP."""
    if name in DatasetCatalog.list():
        return
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main", split + ".txt")):
        if not os.path.exists(os.path.join(dirname, sub)):
            raise FileNotFoundError(f"{dirname}: not a VOC layout, {sub} is missing")
    classes = list(classes) if classes else voc_class_names(dirname, split)
    register_pascal_voc(name, dirname, split, year, classes)
    MetadataCatalog.get(name).evaluator_type = "pascal_voc"  # Detectron2 sets it only for its builtin names
    logger.info("registered %s: VOC layout %s split %s, classes %s", name, dirname, split, classes)


def register_coco(name: str, json_file: str, image_root: str) -> None:
    if name in DatasetCatalog.list():
        return
    for path in (json_file, image_root):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file or folder (dataset {name})")
    register_coco_instances(name, {}, json_file, image_root)
    logger.info("registered %s: COCO json %s, images %s", name, json_file, image_root)


def register_from_args(voc=(), coco=()) -> None:
    """``voc``: (NAME, DIR, SPLIT) triples; ``coco``: (NAME, JSON, IMAGES) triples."""
    for name, dirname, split in voc:
        register_voc(name, dirname, split)
    for name, json_file, image_root in coco:
        register_coco(name, json_file, image_root)


def build_evaluator(cfg, dataset_name: str, output_folder: str):
    """The evaluator a dataset's metadata asks for: VOC AP for VOC layouts, COCO AP (boxes, and masks when the
    model predicts them) for COCO jsons."""
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if kind == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    if kind == "coco":
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluator(dataset_name, tasks=tasks, distributed=True, output_dir=output_folder)
    raise ValueError(f"dataset {dataset_name}: no evaluator for evaluator_type {kind!r} (expected pascal_voc or coco)")


def builtin_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def missing_builtin(names: Sequence[str]) -> list:
    """Builtin dataset names whose files are absent under $DETECTRON2_DATASETS (checked before training)."""
    missing = []
    for name in names:
        if name.startswith("voc_"):
            year, split = name.split("_")[1], name.split("_", 2)[2]
            path = os.path.join(builtin_root(), f"VOC{year}", "ImageSets", "Main", split + ".txt")
            if not os.path.exists(path):
                missing.append(f"{name} ({path})")
        elif name.startswith("coco_") and not glob.glob(os.path.join(builtin_root(), "coco", "annotations", "*")):
            missing.append(f"{name} ({os.path.join(builtin_root(), 'coco', 'annotations')})")
    return missing
