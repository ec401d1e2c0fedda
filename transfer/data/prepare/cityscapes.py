"""Cityscapes fine annotations as Detectron2's ``cityscapes_fine_sem_seg_*`` read them: the two published zips
extracted under ``cityscapes/``, and each ``*_gtFine_labelIds.png`` mapped to ``*_gtFine_labelTrainIds.png`` with
the official id-to-trainId table of cityscapesscripts (``helpers/labels.py``: 19 classes, the rest 255)."""
import glob
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from pretrain.runtime.files import atomic_write
from transfer.data.prepare.archives import count_problem, extract, find_archive, strip

ARCHIVES = ("gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip")
COUNTS = {"train": 2975, "val": 500}
IGNORE = 255


def train_id_table() -> np.ndarray:
    """256 entries: a label id's train id (0..18), or 255 for the ids not evaluated and for unknown values."""
    from cityscapesscripts.helpers.labels import labels
    table = np.full(256, IGNORE, np.uint8)
    for label in labels:
        if 0 <= label.id < 256:
            table[label.id] = label.trainId if 0 <= label.trainId < IGNORE else IGNORE
    return table


def prepare(archives: Sequence[str], root: str) -> None:
    out = os.path.join(root, "cityscapes")
    extract(find_archive(archives, "gtFine_trainvaltest.zip"), out, strip("", ("gtFine/",)))
    extract(find_archive(archives, "leftImg8bit_trainvaltest.zip"), out, strip("", ("leftImg8bit/",)))
    table = train_id_table()
    for path in tqdm(sorted(glob.glob(os.path.join(out, "gtFine", "*", "*", "*_gtFine_labelIds.png"))),
                     desc="labelIds -> labelTrainIds", leave=False):
        target = path.replace("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png")
        if not os.path.isfile(target):
            train_ids = table[np.asarray(Image.open(path))]
            atomic_write(target, lambda f: Image.fromarray(train_ids).save(f, format="PNG"))


def check(root: str, counts: Optional[Dict[str, int]] = None) -> List[str]:
    """Each split has the published number of images, each with its labelTrainIds map."""
    problems = []
    for split, published in (counts or COUNTS).items():
        images = sorted(glob.glob(os.path.join(root, "cityscapes", "leftImg8bit", split, "*", "*_leftImg8bit.png")))
        problems += filter(None, [count_problem(os.path.join(root, "cityscapes", "leftImg8bit", split),
                                                len(images), published)])
        missing = [p for p in images if not os.path.isfile(
            p.replace(f"{os.sep}leftImg8bit{os.sep}", f"{os.sep}gtFine{os.sep}").replace(
                "_leftImg8bit.png", "_gtFine_labelTrainIds.png"))]
        if missing:
            problems.append(f"{len(missing):,} {split} images have no *_gtFine_labelTrainIds.png, e.g. for "
                            f"{missing[0]} (tools/prepare_data.py prepare cityscapes writes them)")
    return problems
