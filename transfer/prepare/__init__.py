"""The real benchmarks' data, from the archives users download to the layout Detectron2 and our configs read
(under ``$DETECTRON2_DATASETS``), and a check that counts what is there against the published numbers.

One name -> one dataset: ``DATASETS[name]`` holds what it is made from (the archives, by their published file
names), how it is prepared, and what ``check`` counts. ``tools/prepare_data.py`` reads this table, and
``tools/train_net.py`` runs the check of every builtin set a config names before it starts.
"""
from typing import Callable, Dict, List, NamedTuple, Sequence

from . import cityscapes, coco, voc
from .archives import PrepareError


class Dataset(NamedTuple):
    archives: Sequence[str]                  # the files users download, by their published names
    prepare: Callable[[Sequence[str], str], None]
    check: Callable[..., List[str]]          # (root, counts) -> problems, each one line; [] when complete
    counts: Dict[str, int]                   # the published numbers the check holds the folder to
    description: str


DATASETS: Dict[str, Dataset] = {
    "voc_detection": Dataset(voc.ARCHIVES, voc.prepare_detection, voc.check_detection, voc.DETECTION_COUNTS,
                             "PASCAL VOC 2007 trainval + test and VOC 2012 trainval (detection)"),
    "voc_sbd": Dataset(voc.SBD_ARCHIVES, voc.prepare_sbd, voc.check_sbd, voc.SBD_COUNTS,
                       "VOC 2012 segmentation with SBD's masks (train_aug 10,582, val 1,449), as mmsegmentation's "
                       "voc_aug converter makes it"),
    "cityscapes": Dataset(cityscapes.ARCHIVES, cityscapes.prepare, cityscapes.check, cityscapes.COUNTS,
                          "Cityscapes fine annotations with *_labelTrainIds.png (train 2,975, val 500)"),
    "coco": Dataset(coco.ARCHIVES, coco.prepare, coco.check, coco.COUNTS,
                    "COCO 2017 train (118,287) and val (5,000) with their instance annotations"),
}

# The builtin Detectron2 names (and ours) that each prepared dataset provides: train_net checks them before it starts.
PROVIDES = {**{f"voc_{year}_{split}": "voc_detection" for year in (2007, 2012)
               for split in ("trainval", "train", "val")},
            "voc_2007_test": "voc_detection", "voc_2012_sem_seg_train_aug": "voc_sbd",
            "voc_2012_sem_seg_val": "voc_sbd", "cityscapes_fine_sem_seg_train": "cityscapes",
            "cityscapes_fine_sem_seg_val": "cityscapes", "coco_2017_train": "coco", "coco_2017_val": "coco"}

__all__ = ["DATASETS", "PROVIDES", "PrepareError", "Dataset"]
