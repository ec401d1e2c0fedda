"""The segmentation model as mmsegmentation's ``EncoderDecoder`` runs it, in Detectron2's ``SemanticSegmentor``:

- training: every image padded to the crop size (mmsegmentation's ``Pad(size=crop_size)``, labels 255), and the
  logits resized to that size with the head's ``align_corners``: a 769 px Cityscapes crop has a 97-cell feature
  map, and with ``align_corners=True`` pixel p lies on feature p / 8 exactly (Detectron2 would pad to 776 and
  upsample 97 cells to 776 px, half a cell off in the middle of the crop);
- inference: ``whole`` (the image as it is, logits resized to it) or ``slide`` (TEST.SLIDE: crops of CROP_SIZE
  every STRIDE pixels, the last one flush with the border, their logits summed and divided by the number of
  windows that cover each pixel); then the logits resized to the original image with ``align_corners`` too.

Shapes: image ``(3, H, W)``; logits ``(K, H, W)``.
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor


def window_starts(size: int, crop: int, stride: int) -> List[int]:
    """mmsegmentation's slide_inference grid along one side: ``max(size - crop + stride - 1, 0) // stride + 1``
    windows every ``stride`` pixels, each moved back to end at the border if it would pass it."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(count)]


def pad_to(tensor: torch.Tensor, size: Tuple[int, int], value: float) -> torch.Tensor:
    """``(..., h, w)`` padded at the bottom and right to ``size`` (each side at least its own)."""
    h, w = tensor.shape[-2:]
    return F.pad(tensor, (0, max(size[1] - w, 0), 0, max(size[0] - h, 0)), value=value)


@META_ARCH_REGISTRY.register()
class AlignedSegmentor(SemanticSegmentor):
    """Detectron2's SemanticSegmentor with mmsegmentation's padding, logit resizing and sliding-window inference.
    Its head returns logits at the feature resolution (inference) and resizes them to the targets (training)."""

    @configurable
    def __init__(self, *, crop_size, align_corners, slide, **kwargs):
        super().__init__(**kwargs)
        self.crop_size, self.align_corners, self.slide = crop_size, align_corners, slide

    @classmethod
    def from_config(cls, cfg):
        crop = cfg.INPUT.CROP
        return {**super().from_config(cfg),
                "crop_size": tuple(crop.SIZE) if crop.ENABLED and crop.TYPE == "absolute" else None,
                "align_corners": cfg.MODEL.SEM_SEG_HEAD.ALIGN_CORNERS,
                "slide": (tuple(cfg.TEST.SLIDE.CROP_SIZE), tuple(cfg.TEST.SLIDE.STRIDE)) if cfg.TEST.SLIDE.ENABLED
                else None}

    def normalised(self, x) -> torch.Tensor:
        return (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs):
        if not self.training:
            return [{"sem_seg": self.inference(self.normalised(x), x.get("height"), x.get("width"))}
                    for x in batched_inputs]
        images = [self.normalised(x) for x in batched_inputs]
        targets = [x["sem_seg"].to(self.device) for x in batched_inputs]
        sizes = [tuple(i.shape[-2:]) for i in images] + ([self.crop_size] if self.crop_size else [])
        size = (max(s[0] for s in sizes), max(s[1] for s in sizes))
        features = self.backbone(torch.stack([pad_to(i, size, 0.0) for i in images]))
        _, losses = self.sem_seg_head(features, torch.stack([pad_to(t, size, self.sem_seg_head.ignore_value)
                                                             for t in targets]))
        return losses

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """``(K, h, w)`` of one image as it is (no padding), resized to it with ``align_corners``."""
        raw, _ = self.sem_seg_head(self.backbone(image[None]), None)
        return F.interpolate(raw, size=image.shape[-2:], mode="bilinear", align_corners=self.align_corners)[0]

    def inference(self, image: torch.Tensor, height=None, width=None) -> torch.Tensor:
        if self.slide is None:
            logits = self.logits(image)
        else:
            (crop_h, crop_w), (stride_h, stride_w) = self.slide
            h, w = image.shape[-2:]
            logits, count = None, torch.zeros((1, h, w), device=image.device)
            for y in window_starts(h, crop_h, stride_h):
                for x in window_starts(w, crop_w, stride_w):
                    window = self.logits(image[:, y:y + crop_h, x:x + crop_w])
                    if logits is None:
                        logits = torch.zeros((window.shape[0], h, w), device=image.device)
                    logits[:, y:y + window.shape[1], x:x + window.shape[2]] += window
                    count[:, y:y + window.shape[1], x:x + window.shape[2]] += 1
            logits = logits / count
        size = (height or image.shape[-2], width or image.shape[-1])
        if tuple(logits.shape[-2:]) == size:
            return logits
        return F.interpolate(logits[None], size=size, mode="bilinear", align_corners=self.align_corners)[0]
