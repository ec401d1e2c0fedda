"""The device view pipeline (``DATALOADER.VIEWS device``): data workers only read and decode, and draw each
view's parameters; the crop-resize, colour jitter, grayscale, blur, flip and normalisation of a whole batch run as
tensor operations on the training device.

The parameters come from ``pretrain.data.transforms.draw_view_params`` with the same generator as the Pillow pipeline
(seeded by (seed, epoch, index)), so a sample's crop boxes and flips are the same in both pipelines, in any worker
and after any resume; nothing random happens on the device. Pixels differ from Pillow's by interpolation and
rounding only (Pillow rounds to 8 bits after every step; tests/pretrain/data/test_device_views.py states the
tolerances).

Shapes: a worker sample holds ``image (3, h, w)`` uint8 and ``params_q``/``params_k (PARAMS,)``; a batch pads the
images to ``(N, 3, H, W)`` by repeating their last row and column (so that bilinear samples at an image's edge
see its own border, as Pillow's do); the device returns ``view_q``/``view_k (N, 3, S, S)`` normalised.
"""
import random
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate
from torchvision.ops import roi_align
from torchvision.transforms._functional_tensor import _hsv2rgb, _rgb2hsv

from pretrain.data.images import TwoViewDataset
from pretrain.data.transforms import ViewParams, draw_view_params

# one view's parameters as a vector: jitter on, the 4 adjustments' order, their factors (brightness, contrast,
# saturation, hue), grayscale, blur on, blur radius, flip
PARAMS = 13
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, Pillow's convert("L")
MAX_BLUR = 2.0


def pack(p: ViewParams) -> torch.Tensor:
    order, factors = [0, 1, 2, 3], [1.0, 1.0, 1.0, 0.0]
    if p.jitter is not None:
        order = [k for k, _ in p.jitter]
        for k, factor in p.jitter:
            factors[k] = factor
    return torch.tensor([float(p.jitter is not None), *order, *factors, float(p.grayscale),
                         float(p.blur is not None), p.blur or 0.0, float(p.flip)], dtype=torch.float64)


class DecodedDataset(TwoViewDataset):
    """The worker side: the decoded image and both views' parameters and geometry, no pixel work."""

    def __getitem__(self, key):
        index, epoch = key
        rng = random.Random(f"{self.seed}/{epoch}/{index}")
        img = self.load(index)
        q, k = (draw_view_params(img.width, img.height, rng, self.transform.scale) for _ in range(2))
        pixels = torch.from_numpy(np.array(img)).permute(2, 0, 1)
        return {"image": pixels, "params_q": pack(q), "params_k": pack(k),
                "box_q": torch.tensor(q.box, dtype=torch.float32), "flip_q": torch.tensor(q.flip),
                "box_k": torch.tensor(k.box, dtype=torch.float32), "flip_k": torch.tensor(k.flip),
                "image_size": torch.tensor([img.width, img.height]), "index": index}

    @staticmethod
    def collate(samples: List[Dict]) -> Dict:
        """Images padded to the batch's largest by edge replication (in the worker: uint8, numpy)."""
        height = max(s["image"].shape[1] for s in samples)
        width = max(s["image"].shape[2] for s in samples)
        images = np.stack([np.pad(s["image"].numpy(), ((0, 0), (0, height - s["image"].shape[1]),
                                                       (0, width - s["image"].shape[2])), mode="edge")
                           for s in samples])
        batch = default_collate([{k: v for k, v in s.items() if k != "image"} for s in samples])
        batch["image"] = torch.from_numpy(images)
        return batch


def grey(x: torch.Tensor) -> torch.Tensor:
    """``(M, 3, S, S) -> (M, 1, S, S)`` luma."""
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def adjust(x: torch.Tensor, kind: int, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter adjustment ``kind`` (JITTER_NAMES order) with one factor per image."""
    f = factor.view(-1, 1, 1, 1).to(x.dtype)
    if kind == 0:
        return (x * f).clamp(0, 1)
    if kind == 1:
        mean = grey(x).mean(dim=(1, 2, 3), keepdim=True)
        return (f * x + (1 - f) * mean).clamp(0, 1)
    if kind == 2:
        return (f * x + (1 - f) * grey(x)).clamp(0, 1)
    hsv = _rgb2hsv(x)
    hue = (hsv[:, :1] + f) % 1.0
    return _hsv2rgb(torch.cat([hue, hsv[:, 1:]], dim=1))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one standard deviation per image (Pillow's radius), edges repeated."""
    reach = int(np.ceil(3 * MAX_BLUR))
    offsets = torch.arange(-reach, reach + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.to(x.dtype)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, 0)  # (M * 3, taps)
    m, c, h, w = x.shape
    y = F.pad(x.reshape(1, m * c, h, w), (reach, reach, reach, reach), mode="replicate")
    y = F.conv2d(y, kernel[:, None, :, None], groups=m * c)
    y = F.conv2d(y, kernel[:, None, None, :], groups=m * c)
    return y.reshape(m, c, h, w)


class DeviceViews:
    """The device side: ``batch`` (on the training device, from DecodedDataset.collate) -> the model's batch."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        self.size = int(size)
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    @classmethod
    def from_cfg(cls, cfg) -> "DeviceViews":
        return cls(cfg.INPUT.SIZE, cfg.INPUT.MEAN, cfg.INPUT.STD)

    def render(self, images: torch.Tensor, boxes: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``images (N, 3, H, W)`` uint8, ``boxes (N, 4)`` image pixels, ``params (N, PARAMS)`` -> views."""
        n = images.shape[0]
        rois = torch.cat([torch.arange(n, device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
        # Pillow's resize(box=...) and roi_align(aligned=True) place pixel centres alike; the adaptive sampling
        # ratio averages ceil(crop / size)^2 samples per output pixel, an antialiasing filter when it shrinks.
        x = roi_align(images.float(), rois.float(), (self.size, self.size), 1.0, -1, True) / 255.0
        params = params.to(x.device)
        jitter = params[:, 0] > 0
        order, factors = params[:, 1:5].long(), params[:, 5:9]
        for step in range(4):
            for kind in range(4):
                chosen = jitter & (order[:, step] == kind)
                if chosen.any():
                    x[chosen] = adjust(x[chosen], kind, factors[chosen, kind])
        gray = params[:, 9] > 0
        if gray.any():
            x[gray] = grey(x[gray]).expand(-1, 3, -1, -1)
        blurred = params[:, 10] > 0
        if blurred.any():
            x[blurred] = gaussian_blur(x[blurred], params[blurred, 11])
        flip = (params[:, 12] > 0).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, batch: Dict) -> Dict:
        out = {k: v for k, v in batch.items() if k not in ("image", "params_q", "params_k")}
        out["view_q"] = self.render(batch["image"], batch["box_q"], batch["params_q"])
        out["view_k"] = self.render(batch["image"], batch["box_k"], batch["params_k"])
        return out
