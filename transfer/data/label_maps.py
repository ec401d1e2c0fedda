"""Semantic segmentation data without Detectron2: label maps (PNG files of class indices, 255 = unlabelled),
image/label pairs found by file stem, and the scan that says which classes a set's label maps hold."""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
INDEX_MODES = ("L", "P", "I", "I;16")  # grey or palette: one class index per pixel
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16-bit, 32-bit integer or float pixels


class LabelMapError(ValueError):
    """A label map or image/label pairing that cannot be used; the message names the file."""


def read_label_png(path: str) -> np.ndarray:
    """``(H, W)`` uint8 class indices as stored: a palette PNG (VOC's SegmentationClass) gives its indices, not
    its colours; a 16-bit grey map whose values are all below 256 gives them as 8-bit (Detectron2's resizing
    has no 16-bit kernel); a colour PNG, or a value of 256 or more, is refused."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            if img.mode not in INDEX_MODES:
                raise LabelMapError(f"{path}: a label map holds one class index per pixel (a grey or palette PNG); "
                                    f"this one is {img.mode} colour: convert the colours to indices first")
            labels = np.asarray(img)
    except OSError as e:
        raise LabelMapError(f"{path}: not a readable label map ({e})") from None
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            value = int(labels.max()) if labels.max() > 255 else int(labels.min())
            raise LabelMapError(f"{path}: holds the value {value}; a label map holds class indices 0..254 and 255 "
                                "(unlabelled): fix that file")
        labels = labels.astype(np.uint8)
    return labels


def image_size(path: str):
    """``(width, height)`` from the header of an 8-bit image; a 16-bit or float image is refused (Detectron2's
    ``read_image`` would clip it to an all-255 picture and train on that)."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            if img.mode in WIDE_MODES:
                raise LabelMapError(f"{path}: a {img.mode} ({'float' if img.mode == 'F' else '16/32-bit'}) image; "
                                    "the models read 8-bit images: convert it (scaled to 0..255) first")
            return img.size
    except OSError as e:
        raise LabelMapError(f"{path}: not a readable image ({e})") from None


def find_image(image_dir: str, stem: str) -> Optional[str]:
    """The image named ``stem`` with one of IMAGE_SUFFIXES; two of them (0001.jpg and 0001.png) are ambiguous."""
    found = [path for suffix in IMAGE_SUFFIXES for path in [os.path.join(image_dir, stem + suffix)]
             if os.path.exists(path)]
    if len(found) > 1:
        raise LabelMapError(f"{image_dir}: images {', '.join(os.path.basename(p) for p in found)} share the stem "
                            f"{stem!r}, so which one the label map {stem}.png belongs to is ambiguous; rename or "
                            "move all but one")
    return found[0] if found else None


def read_stems(list_file: str) -> List[str]:
    if not os.path.isfile(list_file):
        raise LabelMapError(f"{list_file}: no such list of image names")
    with open(list_file) as f:
        stems = [line.split()[0] for line in f if line.strip()]
    if not stems:
        raise LabelMapError(f"{list_file}: lists no image")
    return stems


def sem_seg_records(image_dir: str, label_dir: str, list_file: Optional[str] = None) -> List[Dict]:
    """One record per image of ``list_file`` (file stems, one per line), or per ``LABEL_DIR/*.png`` without it:
    ``file_name`` (the image with that stem in ``image_dir``) and ``sem_seg_file_name`` (``LABEL_DIR/STEM.png``).
    Every image and every label map must exist."""
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise LabelMapError(f"{folder}: no such folder")
    stems = read_stems(list_file) if list_file else sorted(
        os.path.splitext(n)[0] for n in os.listdir(label_dir) if n.lower().endswith(".png"))
    if not stems:
        raise LabelMapError(f"{label_dir}: holds no label PNG")
    records, missing = [], []
    for stem in stems:
        image, labels = find_image(image_dir, stem), os.path.join(label_dir, stem + ".png")
        if image is None or not os.path.exists(labels):
            missing.append(os.path.join(image_dir, stem + ".*") if image is None else labels)
            continue
        records.append({"file_name": image, "sem_seg_file_name": labels, "image_id": stem})
    if missing:
        raise LabelMapError(f"{len(missing)} of {len(stems)} images or label maps are missing, first: "
                            f"{missing[:3]}")
    return records


def scan_labels(records: Sequence[Dict], ignore_value: int = 255) -> Dict[int, str]:
    """``{class index: the first label map holding it}`` over the records (``ignore_value`` aside); every label
    map must have its image's size."""
    found: Dict[int, str] = {}
    for record in records:
        labels = read_label_png(record["sem_seg_file_name"])
        width, height = image_size(record["file_name"])
        if labels.shape != (height, width):
            raise LabelMapError(f"{record['sem_seg_file_name']}: {labels.shape[1]}x{labels.shape[0]} label map for "
                                f"a {width}x{height} image ({record['file_name']})")
        for value in np.unique(labels).tolist():
            if value != ignore_value:
                if not 0 <= value <= 255:  # the label maps of the protocols are 8-bit
                    raise LabelMapError(f"{record['sem_seg_file_name']}: holds the value {value}; a label map "
                                        f"holds class indices 0..254 and {ignore_value} (unlabelled): fix that file")
                found.setdefault(int(value), record["sem_seg_file_name"])
    return dict(sorted(found.items()))


def check_labels(found: Dict[int, str], classes: Sequence[str], where: str) -> None:
    """Every class index in the label maps names one of ``classes``."""
    outside = {k: v for k, v in found.items() if not 0 <= k < len(classes)}
    if outside:
        first = next(iter(outside.items()))
        raise LabelMapError(f"{where}: label maps hold class indices {sorted(outside)} but the run has "
                            f"{len(classes)} classes {list(classes)} (index {first[0]} first in {first[1]}); "
                            "name the classes with --classes, or set the label to 255 (ignored)")
