"""Semantic segmentation in Detectron2 with mmsegmentation's FCN-D8 protocol (DenseCL's segmentation table), and
the frozen linear segmentation probe: the backbone, the heads and the schedule. Registered on import: the dilated
ResNet backbone, the FCN head, the linear head, and the model (transfer/segmentation/segmentor.py);
``build_lr_scheduler``
(PolyLR) is what ``TransferTrainer`` uses for these configs, with the data side of transfer/segmentation/mapper.py
(``SemSegMapper``).

Shapes: images ``(N, 3, H, W)`` padded to the crop size (transfer/segmentation/segmentor.py); features ``(N, C, H/s,
W/s)``;
logits ``(N, K, H, W)``; targets ``(N, H, W)`` of class indices with ``IGNORE_VALUE`` (255) where unlabelled.
"""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.backbone import ResNet, build_resnet_backbone
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import ParamScheduler
from fvcore.nn import weight_init
from torch import nn

from transfer.segmentation.segmentor import (  # noqa: F401  (registers the model the segmentation configs name)
    AlignedSegmentor,
)

# (res4, res5) dilations with a meaning: output stride 32 (none), 16 (res5 dilated) and 8 (both; FCN-D8)
DILATIONS = ((1, 1), (1, 2), (2, 4))


class DilatedResNet(ResNet):
    """Detectron2's ResNet whose strided stages became dilated ones. Images are padded to a multiple of its
    output stride, so that logits upsampled by it cover the padded image exactly."""

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())


def dilate_stage(blocks, dilation: int, first_dilation: int) -> None:
    """Turn one stage's stride 2 into dilation, in place: every stride becomes 1, and the first 3x3 convolution
    of each block (a bottleneck's only one, a basic block's conv1, as in mmsegmentation's blocks) is dilated,
    by ``first_dilation`` in the first block and by ``dilation`` in the others (torchvision's
    ``replace_stride_with_dilation``, mmsegmentation's ``contract_dilation=True``). Parameters are unchanged,
    so pretrained weights load as they are."""
    for index, block in enumerate(blocks):
        d = first_dilation if index == 0 else dilation
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        for conv in convs:
            conv.stride = (1, 1)
        first_3x3 = next(conv for conv in convs if conv.kernel_size == (3, 3))
        first_3x3.dilation, first_3x3.padding = (d, d), (d, d)
        block.stride = 1


@BACKBONE_REGISTRY.register()
def build_resnet_dilated_backbone(cfg, input_shape: ShapeSpec) -> DilatedResNet:
    """Detectron2's ResNet (any depth, BasicBlock or Bottleneck) with res4/res5 dilated by
    MODEL.RESNETS.RES4_DILATION / RES5_DILATION: (2, 4) is the output-stride-8 network of FCN-D8."""
    dilations = (cfg.MODEL.RESNETS.RES4_DILATION, cfg.MODEL.RESNETS.RES5_DILATION)
    if dilations not in DILATIONS:
        raise ValueError(f"MODEL.RESNETS.RES4_DILATION, RES5_DILATION = {dilations}: expected one of {DILATIONS} "
                         "(each dilated stage doubles the dilation of the one before)")
    plain_cfg = cfg.clone()
    plain_cfg.defrost()
    plain_cfg.MODEL.RESNETS.RES5_DILATION = 1
    plain_cfg.MODEL.BACKBONE.FREEZE_AT = 0  # frozen once, below, after the stages are final
    plain = build_resnet_backbone(plain_cfg, input_shape)
    stages = [list(stage) for stage in plain.stages]
    for stage, dilation in zip(stages[2:], dilations):
        if dilation > 1:
            dilate_stage(stage, dilation, first_dilation=dilation // 2)
    if cfg.MODEL.RESNETS.ZERO_INIT_RESIDUAL:
        zero_init_residual(stages)
    return DilatedResNet(plain.stem, stages, out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
                         freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


def zero_init_residual(stages) -> None:
    """The last norm of every residual block at gamma 0 (each block starts as the identity), as mmsegmentation
    0.11 initialises a ResNet built without weights: its ``zero_init_residual`` is True by default."""
    for block in (b for stage in stages for b in stage):
        last = block.conv3 if hasattr(block, "conv3") else block.conv2
        nn.init.zeros_(last.norm.weight)


def segmentation_loss(logits, targets, ignore_value: int, average: str):
    """Cross-entropy of ``logits (N, K, H, W)`` against ``targets (N, H, W)``: summed over labelled pixels and
    divided by every pixel (``all_pixels``, mmsegmentation) or by the labelled ones (``labelled_pixels``)."""
    if average not in ("all_pixels", "labelled_pixels"):
        raise ValueError(f"MODEL.SEM_SEG_HEAD.LOSS_AVERAGE {average!r}: expected all_pixels or labelled_pixels")
    summed = F.cross_entropy(logits, targets, reduction="sum", ignore_index=ignore_value)
    count = targets.numel() if average == "all_pixels" else (targets != ignore_value).sum().clamp(min=1)
    return summed / count


class FCNBranch(nn.Module):
    """mmsegmentation's FCNHead on one feature: NUM_CONVS 3x3 conv-norm-ReLU, optionally the input concatenated
    and one more 3x3 conv, Dropout2d, a 1x1 classifier. ``(N, C, h, w) -> (N, K, h, w)``."""

    def __init__(self, in_channels, channels, num_convs, concat_input, num_classes, norm, dropout):
        super().__init__()
        layers, width = [], in_channels
        for _ in range(num_convs):
            layers.append(Conv2d(width, channels, 3, padding=1, bias=not norm, norm=get_norm(norm, channels),
                                 activation=F.relu))
            width = channels
        self.convs = nn.Sequential(*layers)
        self.conv_cat = Conv2d(in_channels + channels, channels, 3, padding=1, bias=not norm,
                               norm=get_norm(norm, channels), activation=F.relu) if concat_input else None
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.predictor = nn.Conv2d(width if num_convs else in_channels, num_classes, 1)
        for layer in [*layers, *([self.conv_cat] if self.conv_cat is not None else [])]:
            weight_init.c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.01)  # mmsegmentation's conv_seg initialisation
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x):
        y = self.convs(x)
        if self.conv_cat is not None:
            y = self.conv_cat(torch.cat([x, y], dim=1))
        return self.predictor(self.dropout(y))


class UpsampledLogits(nn.Module):
    """What the FCN and the linear head share: in training, the logits resized to the targets (the padded input)
    with ALIGN_CORNERS and the loss against them, as mmsegmentation's decode heads; at inference the logits at the
    feature resolution, which the model (transfer/segmentation/segmentor.py) resizes to each image."""

    def __init__(self, cfg, stride: int):
        super().__init__()
        head = cfg.MODEL.SEM_SEG_HEAD
        self.stride, self.align_corners = stride, head.ALIGN_CORNERS
        self.ignore_value, self.loss_weight, self.loss_average = head.IGNORE_VALUE, head.LOSS_WEIGHT, head.LOSS_AVERAGE

    def resized(self, logits, size):
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=self.align_corners)

    def loss(self, logits, targets):
        return segmentation_loss(self.resized(logits, targets.shape[-2:]), targets, self.ignore_value,
                                 self.loss_average)


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(UpsampledLogits):
    """FCN-D8's decode head on IN_FEATURES[0] (res5) and, in training, the auxiliary FCN branch on
    AUX_IN_FEATURE (res4) with loss weight AUX_LOSS_WEIGHT."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        if len(head.IN_FEATURES) != 1 or head.IN_FEATURES[0] not in input_shape:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES {list(head.IN_FEATURES)}: FCNHead takes one feature "
                             f"of the backbone ({sorted(input_shape)})")
        name = head.IN_FEATURES[0]
        super().__init__(cfg, input_shape[name].stride)
        self.in_feature, self.aux_in_feature, self.aux_weight = name, head.AUX_IN_FEATURE, head.AUX_LOSS_WEIGHT
        self.decode = FCNBranch(input_shape[name].channels, head.CONVS_DIM, head.NUM_CONVS, head.CONCAT_INPUT,
                                head.NUM_CLASSES, head.NORM, head.DROPOUT)
        self.aux = None
        if self.aux_in_feature:
            if self.aux_in_feature not in input_shape or input_shape[self.aux_in_feature].stride != self.stride:
                raise ValueError(f"MODEL.SEM_SEG_HEAD.AUX_IN_FEATURE {self.aux_in_feature!r}: needs a backbone "
                                 f"feature of the same stride as {name} (features: {sorted(input_shape)})")
            self.aux = FCNBranch(input_shape[self.aux_in_feature].channels, head.AUX_CONVS_DIM, 1, False,
                                 head.NUM_CLASSES, head.NORM, head.DROPOUT)

    def forward(self, features, targets=None):
        logits = self.decode(features[self.in_feature])
        if not self.training:
            return logits, {}
        losses = {"loss_sem_seg": self.loss_weight * self.loss(logits, targets)}
        if self.aux is not None:
            losses["loss_sem_seg_aux"] = self.aux_weight * self.loss(self.aux(features[self.aux_in_feature]), targets)
        return None, losses


@SEM_SEG_HEADS_REGISTRY.register()
class LinearSegHead(UpsampledLogits):
    """The linear probe: the IN_FEATURES (e.g. res5, or res4 and res5) upsampled to the finest of them and
    concatenated, BatchNorm, one 1x1 convolution. With TRANSFER.PROBE the backbone is frozen after its BN
    statistics are re-estimated, so this is all that trains."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        names = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
        unknown = [n for n in names if n not in input_shape]
        if not names or unknown:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES {names}: not features of the backbone "
                             f"({sorted(input_shape)})")
        super().__init__(cfg, min(input_shape[n].stride for n in names))
        self.in_features = names
        channels = sum(input_shape[n].channels for n in names)
        self.norm = nn.BatchNorm2d(channels)
        self.predictor = nn.Conv2d(channels, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features, targets=None):
        size = max((features[n].shape[-2:] for n in self.in_features), key=lambda s: s[0] * s[1])
        x = torch.cat([features[n] if features[n].shape[-2:] == size else
                       F.interpolate(features[n], size=size, mode="bilinear", align_corners=False)
                       for n in self.in_features], dim=1)
        logits = self.predictor(self.norm(x))
        if not self.training:
            return logits, {}
        return None, {"loss_sem_seg": self.loss_weight * self.loss(logits, targets)}


class PolyLR(ParamScheduler):
    """The learning-rate multiplier of mmsegmentation's poly schedule, ``where`` in [0, 1] being iter / MAX_ITER:
    ``floor + (1 - floor) * (1 - where) ** power`` with ``floor = POLY_LR_MIN / BASE_LR``."""

    def __init__(self, power: float, floor: float):
        self.power, self.floor = power, floor

    def __call__(self, where: float) -> float:
        return self.floor + (1.0 - self.floor) * max(0.0, 1.0 - where) ** self.power


def build_lr_scheduler(cfg, optimizer) -> Optional[LRMultiplier]:
    """PolyLR for SOLVER.LR_SCHEDULER_NAME "PolyLR" (with Detectron2's warmup when WARMUP_ITERS > 0); None for
    Detectron2's own schedulers."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "PolyLR":
        return None
    schedule = PolyLR(cfg.SOLVER.POLY_LR_POWER, cfg.SOLVER.POLY_LR_MIN / cfg.SOLVER.BASE_LR)
    if cfg.SOLVER.WARMUP_ITERS > 0:
        schedule = WarmupParamScheduler(schedule, cfg.SOLVER.WARMUP_FACTOR,
                                        min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
                                        cfg.SOLVER.WARMUP_METHOD)
    return LRMultiplier(optimizer, multiplier=schedule, max_iter=cfg.SOLVER.MAX_ITER)
