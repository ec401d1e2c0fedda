"""The real benchmarks' data, from the archives users download to the layout Detectron2 and our configs read
(under ``$DETECTRON2_DATASETS``), and a check that counts what is there against the published numbers.

One name -> one dataset: ``DATASETS[name]`` holds what it is made from (the archives, by their published file
names), how it is prepared, and what ``check`` counts. ``tools/prepare_data.py`` reads this table, and
``tools/train_net.py`` runs the check of every builtin set a config names before it starts.
"""
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from transfer.data.prepare import cityscapes, coco, voc
from transfer.data.prepare.archives import PrepareError, interrupted, os_problem, remove_interrupted


class Dataset(NamedTuple):
    archives: Sequence[str]                  # the files users download, by their published names
    prepare: Callable[[Sequence[str], str], None]
    check: Callable[..., List[str]]          # (root, counts) -> problems, each one line; [] when complete
    counts: Dict[str, int]                   # the published numbers the check holds the folder to
    description: str
    folders: Sequence[str]                   # what it writes under the root


DATASETS: Dict[str, Dataset] = {
    "voc_detection": Dataset(voc.ARCHIVES, voc.prepare_detection, voc.check_detection, voc.DETECTION_COUNTS,
                             "PASCAL VOC 2007 trainval + test and VOC 2012 trainval (detection)",
                             ("VOC2007", "VOC2012")),
    "voc_sbd": Dataset(voc.SBD_ARCHIVES, voc.prepare_sbd, voc.check_sbd, voc.SBD_COUNTS,
                       "VOC 2012 segmentation with SBD's masks (train_aug 10,582, val 1,449), as mmsegmentation's "
                       "voc_aug converter makes it", ("VOC2012", "SBD")),
    "cityscapes": Dataset(cityscapes.ARCHIVES, cityscapes.prepare, cityscapes.check, cityscapes.COUNTS,
                          "Cityscapes fine annotations with *_labelTrainIds.png (train 2,975, val 500)",
                          ("cityscapes",)),
    "coco": Dataset(coco.ARCHIVES, coco.prepare, coco.check, coco.COUNTS,
                    "COCO 2017 train (118,287) and val (5,000) with their instance annotations", ("coco",)),
}

# The builtin Detectron2 names (and ours) that a prepared dataset provides, with the parts of it each one reads:
# train_net checks those parts before it starts.
PROVIDES = {
    **{f"voc_{year}_{split}": ("voc_detection", (f"VOC{year}/{split}",)) for year in (2007, 2012)
       for split in ("trainval", "train", "val")},
    "voc_2007_test": ("voc_detection", ("VOC2007/test",)),
    "voc_2012_sem_seg_train_aug": ("voc_sbd", ("train", "aug")), "voc_2012_sem_seg_val": ("voc_sbd", ("val",)),
    "cityscapes_fine_sem_seg_train": ("cityscapes", ("train",)),
    "cityscapes_fine_sem_seg_val": ("cityscapes", ("val",)),
    "coco_2017_train": ("coco", ("train2017",)), "coco_2017_val": ("coco", ("val2017",)),
}


def prepare_dataset(name: str, archives: Sequence[str], root: str) -> List[str]:
    """Prepare dataset ``name`` from its archives under ``root``, first removing what an interrupted run left
    (temp files of writes killed before their rename). Returns the paths removed."""
    dataset = DATASETS[name]
    removed = remove_interrupted([os.path.join(root, folder) for folder in dataset.folders])
    dataset.prepare(archives, root)
    return removed


def check_dataset(name: str, root: str, counts: Optional[Dict[str, int]] = None) -> List[str]:
    """What dataset ``name`` lacks under ``root`` (``counts``: the parts checked, default all), one line each,
    beginning with the temp files an interrupted ``prepare`` left (loaders would read them as data)."""
    dataset = DATASETS[name]
    left = interrupted([os.path.join(root, folder) for folder in dataset.folders])
    problems = [f"{len(left)} unfinished temporary files of an interrupted prepare, e.g. {left[0]}: run "
                f"tools/prepare_data.py prepare {name} again, which removes them"] if left else []
    return problems + dataset.check(root, counts)


def check_sets(names: Sequence[str], root: str, exact: bool = True) -> List[str]:
    """What the builtin sets among ``names`` lack under ``root``, one line per prepared dataset: the parts they
    read, each against its published count (any count when not ``exact``, or when none is published)."""
    parts: Dict[str, Dict[str, Optional[int]]] = {}
    for name in names:
        if name in PROVIDES:
            dataset, keys = PROVIDES[name]
            for key in keys:
                parts.setdefault(dataset, {})[key] = DATASETS[dataset].counts.get(key) if exact else None
    problems = []
    for dataset, counts in parts.items():
        found = check_dataset(dataset, root, counts)
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            problems.append(f"{dataset}: {found[0]}{more}; prepare it with tools/prepare_data.py prepare {dataset} "
                            f"ARCHIVES... --root {root}")
    return problems


__all__ = ["DATASETS", "PROVIDES", "PrepareError", "Dataset", "check_dataset", "os_problem", "check_sets",
           "prepare_dataset"]
