"""What a fine-tuning's datasets must hold before its first iteration: the builtin sets complete (by the checks of
transfer/prepare), every image present with the size its annotation says, and the classes agreeing; checked before
any process starts, so that a bad set stops a run in one line instead of hours in."""
import os
from collections import Counter
from typing import List, Sequence

from detectron2.data import DatasetCatalog

from transfer.data.datasets import DatasetError, builtin_root, check_classes
from transfer.data.label_maps import WIDE_MODES


def check_datasets(cfg) -> List[str]:
    """Before any process starts: the files of builtin sets exist, every set lists images that exist with the
    size their annotation says (``check_image_files``), and the classes agree (``check_classes``)."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    missing = missing_builtin(names, cfg.DATASETS.PUBLISHED_COUNTS)
    if missing:
        raise DatasetError(f"datasets incomplete under DETECTRON2_DATASETS ({builtin_root()}): {'; '.join(missing)}")
    for name in dict.fromkeys(names):
        check_image_files(name, DatasetCatalog.get(name))
    return check_classes(cfg)


def check_image_files(name: str, records: Sequence[dict]) -> None:
    """Every image of a set exists, is an 8-bit image, and has the width and height its record says (after its
    EXIF rotation, as Detectron2 reads it); a set without images is refused. Only the files' headers are read."""
    if not records:
        raise DatasetError(f"dataset {name}: holds no image; check its split file or annotation file")
    # Builtin loaders (Detectron2's VOC reader) take a split file as it is: an image listed twice would be trained
    # on twice and scored twice, for training and for --eval-only alike.
    twice = sorted(path for path, n in Counter(r["file_name"] for r in records).items() if n > 1)
    if twice:
        raise DatasetError(f"dataset {name}: lists {len(twice)} images more than once, e.g. {'; '.join(twice[:3])}; "
                           "list each image once in its split or annotation file")
    bad = []
    for record in records:
        path = record["file_name"]
        if not os.path.isfile(path):
            bad.append(f"{path} (missing)")
            continue
        if "width" not in record or "height" not in record:
            continue
        size = header_size(path)
        if size != (record["width"], record["height"]):
            bad.append(f"{path} ({size[0]} x {size[1]}, its annotation says {record['width']} x {record['height']})")
    if bad:
        raise DatasetError(f"dataset {name}: {len(bad)} of {len(records)} images are missing or not the size their "
                           f"annotation says, e.g. {'; '.join(bad[:3])}; fix the files or the annotations")


def header_size(path: str):
    """``(width, height)`` as Detectron2's ``read_image`` delivers the image (EXIF rotation applied), from the
    file's header; a 16-bit or float image is refused (``read_image`` would clip it to an all-255 picture)."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            if img.mode in WIDE_MODES:
                raise DatasetError(f"{path}: a {img.mode} image (16/32-bit or float); the models read 8-bit images: "
                                   "convert it (scaled to 0..255) first")
            (width, height), rotated = img.size, img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except OSError as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from None
    return (height, width) if rotated else (width, height)


def missing_builtin(names: Sequence[str], exact: bool = True) -> list:
    """What the builtin datasets among ``names`` lack under $DETECTRON2_DATASETS, by the checks of the preparation
    that provides them (transfer/prepare: every listed file; the published counts when ``exact``)."""
    from transfer.data.prepare import check_sets
    return check_sets(names, builtin_root(), exact)
