"""MoCo-v2 "aug+" two-view augmentation that also returns where each view came from.

Each view records its crop box ``(x0, y0, x1, y1)`` in original-image pixels and whether it was mirrored;
that is all the geometry needs (pretrain/geometry.py). Randomness comes from an explicit ``random.Random``
so that a sample's views depend only on (seed, epoch, index): the same in any worker, after any resume.
"""
import math
import random
from typing import Dict, Sequence, Tuple

import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

from .backbone import IMAGENET_MEAN, IMAGENET_STD

CropBox = Tuple[int, int, int, int]


def random_resized_crop_box(width: int, height: int, rng: random.Random, scale=(0.2, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> CropBox:
    """torchvision's RandomResizedCrop sampling, drawn from ``rng``; returns ``(x0, y0, x1, y1)``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            x0 = rng.randint(0, width - w)
            y0 = rng.randint(0, height - h)
            return x0, y0, x0 + w, y0 + h
    # Fallback, as torchvision: a central crop at the nearest allowed aspect ratio.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    x0, y0 = (width - w) // 2, (height - h) // 2
    return x0, y0, x0 + w, y0 + h


def color_jitter(img: Image.Image, rng: random.Random, strength=(0.4, 0.4, 0.4, 0.1)) -> Image.Image:
    """ColorJitter(0.4, 0.4, 0.4, 0.1) with its four adjustments in random order, as torchvision does."""
    b, c, s, h = strength
    adjustments = [
        lambda im: TF.adjust_brightness(im, rng.uniform(max(0.0, 1 - b), 1 + b)),
        lambda im: TF.adjust_contrast(im, rng.uniform(max(0.0, 1 - c), 1 + c)),
        lambda im: TF.adjust_saturation(im, rng.uniform(max(0.0, 1 - s), 1 + s)),
        lambda im: TF.adjust_hue(im, rng.uniform(-h, h)),
    ]
    rng.shuffle(adjustments)
    for adjust in adjustments:
        img = adjust(img)
    return img


class TwoViewTransform:
    """Two independent MoCo-v2 views of one image, each with its geometry."""

    def __init__(self, size: int = 224, scale=(0.2, 1.0), mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        self.size = int(size)
        self.scale = tuple(scale)
        self.mean, self.std = list(mean), list(std)

    def view(self, img: Image.Image, rng: random.Random) -> Tuple[torch.Tensor, CropBox, bool]:
        box = random_resized_crop_box(img.width, img.height, rng, self.scale)
        out = img.resize((self.size, self.size), Image.BILINEAR, box=box, reducing_gap=None)
        if rng.random() < 0.8:
            out = color_jitter(out, rng)
        if rng.random() < 0.2:
            out = out.convert("L").convert("RGB")
        if rng.random() < 0.5:
            out = out.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
        flip = rng.random() < 0.5
        if flip:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        tensor = TF.normalize(TF.to_tensor(out), self.mean, self.std)
        return tensor, box, flip

    def __call__(self, img: Image.Image, rng: random.Random) -> Dict[str, torch.Tensor]:
        view_q, box_q, flip_q = self.view(img, rng)
        view_k, box_k, flip_k = self.view(img, rng)
        return {
            "view_q": view_q, "view_k": view_k,
            "box_q": torch.tensor(box_q, dtype=torch.float32), "flip_q": torch.tensor(flip_q),
            "box_k": torch.tensor(box_k, dtype=torch.float32), "flip_k": torch.tensor(flip_k),
            "image_size": torch.tensor([img.width, img.height]),
        }
