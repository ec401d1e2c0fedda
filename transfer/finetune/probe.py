"""The frozen-backbone probe: detection heads trained on a backbone that does not change.

Full fine-tuning moves every weight, so its result mixes what pretraining gave with what fine-tuning learned.
The probe keeps the pretrained backbone fixed (its BN too) and
trains FPN and heads only: what it measures is what the features already are. A backbone's BN statistics are
those of its pretraining images (or, at random init, meaningless: frozen as they are, a detector diverges), so
every backbone first gets its BN statistics re-estimated on the training images, the same way for all models,
and is frozen after that (``TRANSFER.PROBE``).
"""
import itertools
import logging

import torch
from detectron2.structures import ImageList
from fvcore.nn.precise_bn import update_bn_stats

logger = logging.getLogger("transfer")


class BackboneOnInputs(torch.nn.Module):
    """The model's own preprocessing and backbone, on Detectron2's batched inputs (for update_bn_stats); the
    model is a detector or a semantic segmentor."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, batched_inputs):
        if hasattr(self.detector, "preprocess_image"):
            return self.detector.backbone(self.detector.preprocess_image(batched_inputs).tensor)
        # SemanticSegmentor normalises and pads inside its forward
        images = [(x["image"].to(self.detector.device) - self.detector.pixel_mean) / self.detector.pixel_std
                  for x in batched_inputs]
        return self.detector.backbone(ImageList.from_tensors(images, self.detector.backbone.size_divisibility).tensor)


def resnet_of(detector):
    """The ResNet inside a Detectron2 detector's backbone (``bottom_up`` of an FPN)."""
    return getattr(detector.backbone, "bottom_up", detector.backbone)


def reestimate_detector_bn(detector, data_loader, iterations: int) -> int:
    """Replace the running statistics of every BN layer of the backbone by their average over ``iterations``
    training batches (fvcore's precise BN: equal weight per batch). Returns the number of BN layers."""
    layers = [m for m in resnet_of(detector).modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not layers:
        raise ValueError("TRANSFER.PROBE needs a backbone with BN layers to re-estimate (MODEL.RESNETS.NORM BN)")
    wrapper = BackboneOnInputs(detector)
    training = detector.training
    wrapper.train()
    with torch.no_grad():
        update_bn_stats(wrapper, itertools.islice(iter(data_loader), iterations), iterations)
    detector.train(training)
    return len(layers)


def freeze_backbone(detector) -> int:
    """Freeze the whole ResNet (stem and res2..res5; BN becomes FrozenBatchNorm2d with its statistics).
    Returns the number of parameters frozen."""
    resnet = resnet_of(detector)
    resnet.freeze(len(resnet.stages) + 1)
    return sum(p.numel() for p in resnet.parameters() if not p.requires_grad)
