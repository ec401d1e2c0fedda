"""PASCAL VOC: the detection sets (VOC2007 trainval and test, VOC2012 trainval) as Detectron2 reads them, and
VOC 2012 segmentation with SBD's masks as mmsegmentation's ``tools/convert_datasets/voc_aug.py`` prepares it:
SBD's ``benchmark_RELEASE/dataset/cls/*.mat`` (field ``GTcls.Segmentation``) as index PNGs in
``VOC2012/SegmentationClassAug``, ``aug.txt`` = SBD train + SBD val minus VOC 2012 train and val (9,118) and
``trainaug.txt`` = SBD train + SBD val + VOC 2012 train minus VOC 2012 val (10,582)."""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from pretrain.runtime.files import atomic_write
from transfer.data.prepare.archives import (
    PrepareError,
    archive_list,
    count_problem,
    extract,
    find_archive,
    read_list,
    strip,
    write_list,
)

ARCHIVES = ("VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar", "VOCtrainval_11-May-2012.tar")
SBD_ARCHIVES = ("VOCtrainval_11-May-2012.tar", "benchmark.tgz")
DETECTION_COUNTS = {"VOC2007/trainval": 5011, "VOC2007/test": 4952, "VOC2012/trainval": 11540}
SBD_COUNTS = {"train": 1464, "val": 1449, "aug": 9118, "trainaug": 10582}


def prepare_detection(archives: Sequence[str], root: str) -> None:
    for name in ARCHIVES:
        extract(find_archive(archives, name), root, strip("VOCdevkit/", ("VOC2007/", "VOC2012/")))


def check_detection(root: str, counts: Optional[Dict[str, int]] = None) -> List[str]:
    """Each split lists the published number of images, and each listed image has its JPEG and annotation."""
    problems = []
    for key, published in (counts or DETECTION_COUNTS).items():
        year, split = key.split("/")
        listed = os.path.join(root, year, "ImageSets", "Main", split + ".txt")
        if not os.path.isfile(listed):
            problems.append(f"{listed} is missing")
            continue
        ids = read_list(listed)
        problems += filter(None, [count_problem(listed, len(ids), published)])
        problems += missing_files(root, year, ids, [("JPEGImages", ".jpg"), ("Annotations", ".xml")])
    return problems


def missing_files(root: str, year: str, ids: Sequence[str], parts) -> List[str]:
    missing = [os.path.join(root, year, folder, i + suffix) for i in ids for folder, suffix in parts
               if not os.path.isfile(os.path.join(root, year, folder, i + suffix))]
    return [f"{len(missing):,} listed files are missing under {os.path.join(root, year)}, e.g. {missing[0]}"] \
        if missing else []


def sbd_mask(path: str) -> np.ndarray:
    """SBD's class mask of one image: ``GTcls.Segmentation`` of its .mat file, as uint8 class indices."""
    from scipy.io import loadmat
    try:
        return loadmat(path)["GTcls"][0]["Segmentation"][0].astype(np.uint8)
    except (KeyError, IndexError, ValueError, OSError, TypeError) as e:
        raise PrepareError(f"{path}: not an SBD class annotation (no GTcls.Segmentation: {e})") from None


def prepare_sbd(archives: Sequence[str], root: str) -> None:
    extract(find_archive(archives, "VOCtrainval_11-May-2012.tar"), root, strip("VOCdevkit/", ("VOC2012/",)))
    sbd = os.path.join(root, "SBD")
    keep = ("cls/", "train.txt", "val.txt")
    extract(find_archive(archives, "benchmark.tgz"), sbd, strip("benchmark_RELEASE/dataset/", keep))
    out = os.path.join(root, "VOC2012", "SegmentationClassAug")
    os.makedirs(out, exist_ok=True)
    if not os.path.isdir(os.path.join(sbd, "cls")):
        raise PrepareError(f"{find_archive(archives, 'benchmark.tgz')}: has no benchmark_RELEASE/dataset/cls/; it is "
                           "not the published archive, download it again")
    masks = sorted(n for n in os.listdir(os.path.join(sbd, "cls")) if n.endswith(".mat"))
    for name in tqdm(masks, desc="SBD masks -> PNG", leave=False):
        target = os.path.join(out, name[:-4] + ".png")
        if not os.path.isfile(target):
            mask = sbd_mask(os.path.join(sbd, "cls", name))
            atomic_write(target, lambda f: Image.fromarray(mask).save(f, format="PNG"))
    tgz, voc = (find_archive(archives, name) for name in ("benchmark.tgz", "VOCtrainval_11-May-2012.tar"))
    sbd_ids = [i for s in ("train", "val")
               for i in archive_list(os.path.join(sbd, f"{s}.txt"), tgz, f"benchmark_RELEASE/dataset/{s}.txt")]
    lists = os.path.join(root, "VOC2012", "ImageSets", "Segmentation")
    train, val = (set(archive_list(os.path.join(lists, f"{s}.txt"), voc,
                                   f"VOCdevkit/VOC2012/ImageSets/Segmentation/{s}.txt")) for s in ("train", "val"))
    write_list(os.path.join(lists, "aug.txt"), sorted(set(sbd_ids) - train - val))
    write_list(os.path.join(lists, "trainaug.txt"), sorted((set(sbd_ids) | train) - val))


def check_sbd(root: str, counts: Optional[Dict[str, int]] = None) -> List[str]:
    """The segmentation lists hold the published numbers; every listed image has its JPEG and its label PNG
    (VOC's own masks for train and val, SBD's for aug)."""
    problems = []
    for split, published in (counts or SBD_COUNTS).items():
        listed = os.path.join(root, "VOC2012", "ImageSets", "Segmentation", split + ".txt")
        if not os.path.isfile(listed):
            problems.append(f"{listed} is missing" + (" (tools/prepare_data.py prepare voc_sbd writes it)"
                                                      if split in ("aug", "trainaug") else ""))
            continue
        ids = read_list(listed)
        problems += filter(None, [count_problem(listed, len(ids), published)])
        problems += missing_files(root, "VOC2012", ids, [("JPEGImages", ".jpg")])
        if split != "trainaug":  # trainaug: VOC's masks for its train images, SBD's for the rest
            labels = "SegmentationClass" if split in ("train", "val") else "SegmentationClassAug"
            problems += missing_files(root, "VOC2012", ids, [(labels, ".png")])
    return problems
