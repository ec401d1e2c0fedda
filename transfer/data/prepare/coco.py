"""COCO 2017 as Detectron2's ``coco_2017_*`` read it: ``coco/train2017``, ``coco/val2017`` and
``coco/annotations/instances_{train,val}2017.json`` from the three published zips."""
import json
import os
from typing import Dict, List, Optional, Sequence

from transfer.data.prepare.archives import count_problem, extract, find_archive, strip

ARCHIVES = ("train2017.zip", "val2017.zip", "annotations_trainval2017.zip")
COUNTS = {"train2017": 118287, "val2017": 5000}


def prepare(archives: Sequence[str], root: str) -> None:
    out = os.path.join(root, "coco")
    for name in ARCHIVES:
        keep = ("annotations/instances_",) if name.startswith("annotations") else (name[:-4] + "/",)
        extract(find_archive(archives, name), out, strip("", keep))


def check(root: str, counts: Optional[Dict[str, int]] = None) -> List[str]:
    """Each instances file lists the published number of images, each one present in its folder."""
    problems = []
    for split, published in (counts or COUNTS).items():
        path = os.path.join(root, "coco", "annotations", f"instances_{split}.json")
        if not os.path.isfile(path):
            problems.append(f"{path} is missing")
            continue
        try:
            with open(path) as f:
                images = json.load(f)["images"]
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"{path}: not a COCO instances file ({e.__class__.__name__}); extract it again")
            continue
        problems += filter(None, [count_problem(path, len(images), published)])
        folder = os.path.join(root, "coco", split)
        missing = [i["file_name"] for i in images if not os.path.isfile(os.path.join(folder, i["file_name"]))]
        if missing:
            problems.append(f"{len(missing):,} images of {path} are missing from {folder}, e.g. {missing[0]}")
    return problems
