"""MoCo-v2 "aug+" two-view augmentation that also returns where each view came from.

Each view records its crop box ``(x0, y0, x1, y1)`` in original-image pixels and whether it was mirrored;
that is all the geometry needs (pretrain/data/geometry.py). Randomness comes from an explicit ``random.Random``
so that a sample's views depend only on (seed, epoch, index): the same in any worker, after any resume.
"""
import dataclasses
import math
import random
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

from pretrain.backbone import IMAGENET_MEAN, IMAGENET_STD

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


JITTER_RANGES = ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))  # ColorJitter(0.4, 0.4, 0.4, 0.1)
JITTER_NAMES = ("brightness", "contrast", "saturation", "hue")


@dataclasses.dataclass
class ViewParams:
    """Everything random about one MoCo-v2 view: its crop box in image pixels, the colour jitter (factors in the
    order applied, as (adjustment index into JITTER_NAMES, factor)), grayscale, the blur radius, the flip."""
    box: CropBox
    jitter: Optional[List[Tuple[int, float]]]
    grayscale: bool
    blur: Optional[float]
    flip: bool


def draw_view_params(width: int, height: int, rng: random.Random, scale=(0.2, 1.0)) -> ViewParams:
    """The draws of one view, in the order the Pillow pipeline has always made them: crop box; jitter with
    probability 0.8 (its four adjustments in a random order, as torchvision's ColorJitter, each factor drawn
    when it is applied); grayscale 0.2; blur 0.5 with radius in [0.1, 2]; flip 0.5. Both view pipelines use
    it, so the same (seed, epoch, index) gives the same views' parameters in either."""
    box = random_resized_crop_box(width, height, rng, scale)
    jitter = None
    if rng.random() < 0.8:
        order = [0, 1, 2, 3]
        rng.shuffle(order)
        jitter = [(k, rng.uniform(*JITTER_RANGES[k])) for k in order]
    grayscale = rng.random() < 0.2
    blur = rng.uniform(0.1, 2.0) if rng.random() < 0.5 else None
    flip = rng.random() < 0.5
    return ViewParams(box, jitter, grayscale, blur, flip)


def color_jitter(img: Image.Image, jitter: Sequence[Tuple[int, float]]) -> Image.Image:
    """The drawn ColorJitter adjustments applied in their order."""
    functions = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for k, factor in jitter:
        img = functions[k](img, factor)
    return img


class TwoViewTransform:
    """Two independent MoCo-v2 views of one image, each with its geometry (Pillow, in the data workers)."""

    def __init__(self, size: int = 224, scale=(0.2, 1.0), mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        self.size = int(size)
        self.scale = tuple(scale)
        self.mean, self.std = list(mean), list(std)

    def render(self, img: Image.Image, p: ViewParams) -> torch.Tensor:
        out = img.resize((self.size, self.size), Image.BILINEAR, box=p.box, reducing_gap=None)
        if p.jitter is not None:
            out = color_jitter(out, p.jitter)
        if p.grayscale:
            out = out.convert("L").convert("RGB")
        if p.blur is not None:
            out = out.filter(ImageFilter.GaussianBlur(radius=p.blur))
        if p.flip:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return TF.normalize(TF.to_tensor(out), self.mean, self.std)

    def view(self, img: Image.Image, rng: random.Random) -> Tuple[torch.Tensor, CropBox, bool]:
        p = draw_view_params(img.width, img.height, rng, self.scale)
        return self.render(img, p), p.box, p.flip

    def __call__(self, img: Image.Image, rng: random.Random) -> Dict[str, torch.Tensor]:
        view_q, box_q, flip_q = self.view(img, rng)
        view_k, box_k, flip_k = self.view(img, rng)
        return {
            "view_q": view_q, "view_k": view_k,
            "box_q": torch.tensor(box_q, dtype=torch.float32), "flip_q": torch.tensor(flip_q),
            "box_k": torch.tensor(box_k, dtype=torch.float32), "flip_k": torch.tensor(flip_k),
            "image_size": torch.tensor([img.width, img.height]),
        }
