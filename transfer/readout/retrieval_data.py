"""The images and pixel labels of the dense retrieval evaluation (transfer/readout/retrieval.py), and its draws.

Every set becomes a list of records ``{"file_name", "sem_seg_file_name"}`` with a class list and an ignore value,
as Detectron2's semantic segmentation sets are: a registered set (VOC 2012 + SBD, Cityscapes, ``--sem-seg``
folders, the nuclei tiles) as it is, and a VOC-layout detection set (the tree tiles) through its boxes, painted
into label PNGs (0 background, k the k-th class; a pixel in two boxes takes the later one). Label fractions are
seeded file lists, as open-hummingbird-eval's ``file_sets``: the same list for every backbone, written beside
the results.
"""
import fractions
import os
import random
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from pretrain.runtime.files import atomic_write, atomic_write_text
from transfer.data.label_maps import read_label_png
from transfer.data.voc_layout import scan_split, voc_records

FRACTIONS = ("1/128", "1/64", "1/8", "1/1")  # open-hummingbird-eval's file sets
IGNORE = 255


def parse_fraction(text: str) -> fractions.Fraction:
    try:
        value = fractions.Fraction(text)
    except (ValueError, ZeroDivisionError):
        value = None
    if value is None or not 0 < value <= 1:
        raise ValueError(f"--fraction {text}: expected a fraction in (0, 1], such as {', '.join(FRACTIONS)}")
    return value


def file_set(records: Sequence[Dict], fraction: fractions.Fraction, seed: int) -> List[Dict]:
    """The seeded ``fraction`` of ``records`` (at least one): a shuffle of the records sorted by file name with
    ``random.Random(seed)``, the same in every interpreter; the whole set at 1/1, in its order."""
    if fraction == 1:
        return list(records)
    ordered = sorted(records, key=lambda r: r["file_name"])
    random.Random(seed).shuffle(ordered)
    return ordered[:max(1, int(len(ordered) * fraction))]


def write_file_set(path: str, records: Sequence[Dict]) -> None:
    stems = "".join(os.path.splitext(os.path.basename(r["file_name"]))[0] + "\n" for r in records)
    atomic_write_text(path, stems)


def paint_boxes(boxes: Sequence[Tuple[int, Sequence[float]]], width: int, height: int) -> np.ndarray:
    """``[H, W]`` uint8 label map: 0 outside every box, ``k`` inside a box of class index ``k`` (1-based); boxes in
    Detectron2's pixel edges (``xmin - 1, ymin - 1, xmax, ymax``): a pixel is inside when its centre is."""
    labels = np.zeros((height, width), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in boxes:
        cols = slice(max(0, int(np.ceil(x0 - 0.5))), max(0, int(np.ceil(x1 - 0.5))))
        rows = slice(max(0, int(np.ceil(y0 - 0.5))), max(0, int(np.ceil(y1 - 0.5))))
        labels[rows, cols] = k
    return labels


def box_label_records(voc_dir: str, split: str, classes: Sequence[str], label_dir: str) -> List[Dict]:
    """The records of a VOC-layout split, each with a label PNG of its boxes written into ``label_dir``."""
    records = []
    for record in voc_records(voc_dir, split, classes):
        boxes = [(a["category_id"] + 1, a["bbox"]) for a in record["annotations"]]
        labels = paint_boxes(boxes, record["width"], record["height"])
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        path = os.path.join(label_dir, split, stem + ".png")
        atomic_write(path, lambda f: Image.fromarray(labels).save(f, format="PNG"))
        records.append({"file_name": record["file_name"], "sem_seg_file_name": path})
    if not records:
        raise ValueError(f"{voc_dir}: split {split!r} has no images")
    return records


def box_label_sets(voc_dir: str, train: str, test: str, label_dir: str):
    """``(train records, test records, classes)`` of a VOC-layout detection set: background, then its classes."""
    classes = scan_split(voc_dir, train)
    return (box_label_records(voc_dir, train, classes, label_dir),
            box_label_records(voc_dir, test, classes, label_dir), ["background", *classes])


Sample = Tuple[torch.Tensor, torch.Tensor]  # (image [3, H, W] float in [0, 1], labels [H, W] long)


def retrieval_sets(voc_dir, train: str, test: str, label_dir: str, classes=None, sem_seg=()):
    """``(train records, test records, classes)``: the splits of a VOC-layout detection set ``voc_dir`` with its
    boxes painted under ``label_dir``, or else two Detectron2 sets (``sem_seg`` folders registered first)."""
    if voc_dir:
        return box_label_sets(voc_dir, train, test, label_dir)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from transfer.data.datasets import register_from_args
    register_from_args(classes=classes, sem_seg=sem_seg or ())
    for name in (train, test):
        if name not in DatasetCatalog.list():
            raise ValueError(f"--train/--test {name}: no such set; register it with --sem-seg NAME IMAGES LABELS "
                             "[LIST], or give a VOC-layout detection set with --voc DIR")
    meta = MetadataCatalog.get(test)
    if MetadataCatalog.get(train).get("stuff_classes") != meta.get("stuff_classes"):
        raise ValueError(f"--train {train} and --test {test} name other classes")
    if meta.get("ignore_label", IGNORE) != IGNORE:
        raise ValueError(f"--test {test}: ignore label {meta.ignore_label}; the retrieval expects {IGNORE}")
    return DatasetCatalog.get(train), DatasetCatalog.get(test), list(meta.stuff_classes)


def read_sample(record: Dict) -> Sample:
    """``(image [3, H, W] float in [0, 1], labels [H, W] long)`` of a record; a label map of another size than
    its image is an error naming both."""
    with Image.open(record["file_name"]) as im:
        image = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    labels = torch.from_numpy(read_label_png(record["sem_seg_file_name"]).astype(np.int64))
    if tuple(labels.shape) != tuple(image.shape[1:]):
        raise ValueError(f"{record['sem_seg_file_name']}: {labels.shape[1]}x{labels.shape[0]} label map for a "
                         f"{image.shape[2]}x{image.shape[1]} image ({record['file_name']})")
    return image.contiguous(), labels


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def crop_box(height: int, width: int, generator: torch.Generator, scale=(0.5, 2.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params drawn from ``generator``: ``(top, left, h, w)``. open-hummingbird-
    eval asks for scale (0.5, 2.0); areas above the image are redrawn, ten times, then the centre crop."""
    area = height * width
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target = area * uniform(generator, *scale)
        aspect = float(np.exp(uniform(generator, *log_ratio)))
        w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    w, h = (width, int(round(width / ratio[0]))) if in_ratio < ratio[0] else (
        (int(round(height * ratio[1])), height) if in_ratio > ratio[1] else (width, height))
    return (height - h) // 2, (width - w) // 2, h, w


def jitter(image: torch.Tensor, generator: torch.Generator, strength: float = 0.1, p: float = 0.5) -> torch.Tensor:
    """open-hummingbird-eval's photometric steps: brightness, contrast, saturation and hue jitter of ``strength``,
    each applied with probability ``p``, in that order."""
    steps = ((TF.adjust_brightness, 1 - strength, 1 + strength), (TF.adjust_contrast, 1 - strength, 1 + strength),
             (TF.adjust_saturation, 1 - strength, 1 + strength), (TF.adjust_hue, -strength, strength))
    for op, low, high in steps:
        if float(torch.rand((), generator=generator)) < p:
            image = op(image, uniform(generator, low, high))
    return image


def augmented_view(image: torch.Tensor, labels: torch.Tensor, size: int, generator: torch.Generator):
    """One training view of the memory bank: a random resized crop of image and labels (bilinear with
    antialiasing, nearest) to ``size`` x ``size``, then the photometric jitter of the image."""
    top, left, h, w = crop_box(image.shape[1], image.shape[2], generator)
    view = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True).clamp(0, 1)
    target = TF.resized_crop(labels[None], top, left, h, w, [size, size],
                             interpolation=TF.InterpolationMode.NEAREST)[0]
    return jitter(view, generator), target


def resized_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """The un-augmented view of an image: the whole of it resized to ``size`` x ``size``."""
    return TF.resize(image, [size, size], antialias=True).clamp(0, 1)


def resized(image: torch.Tensor, labels: torch.Tensor, size: int):
    """The un-augmented view with its labels: both resized to ``size`` x ``size`` (labels by nearest)."""
    view = resized_image(image, size)
    return view, TF.resize(labels[None], [size, size], interpolation=TF.InterpolationMode.NEAREST)[0]
