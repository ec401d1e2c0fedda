"""Transfer config: Detectron2's defaults + this add-on's keys, then the file, then command-line overrides."""
import os

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from pretrain.config import merge_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs", "transfer")


def add_transfer_config(cfg: CN) -> None:
    cfg.TRANSFER = CN()
    # Refuse to train when MODEL.WEIGHTS leaves any backbone parameter at its random initialisation.
    cfg.TRANSFER.ALLOW_PARTIAL_WEIGHTS = False
    # The frozen-backbone probe (transfer/finetune/probe.py): BN statistics re-estimated on BN_ITERS training batches,
    # then the whole ResNet frozen; FPN and heads train. Build the backbone with MODEL.BACKBONE.FREEZE_AT 0.
    cfg.TRANSFER.PROBE = CN()
    cfg.TRANSFER.PROBE.ENABLED = False
    cfg.TRANSFER.PROBE.BN_ITERS = 50
    # Before training, the builtin sets a config names are checked under $DETECTRON2_DATASETS: every listed file,
    # and, when True, the published number of images (tools/prepare_data.py check). False: a small set in the
    # real layout under a builtin name (the tiny test configs).
    cfg.DATASETS.PUBLISHED_COUNTS = True
    add_segmentation_config(cfg)


def add_segmentation_config(cfg: CN) -> None:
    """Keys of semantic segmentation (transfer/segmentation/model) that Detectron2 v0.6 lacks; their defaults build
    nothing new. mmsegmentation's names for the same settings are given in docs/segmentation.md."""
    # build_resnet_dilated_backbone: the stride-2 of res4 (res5) becomes a dilation (output stride 8 with 2, 4).
    cfg.MODEL.RESNETS.RES4_DILATION = 1
    head = cfg.MODEL.SEM_SEG_HEAD
    head.NUM_CONVS = 2          # FCNHead: 3x3 convolutions of CONVS_DIM channels
    head.CONCAT_INPUT = True    # FCNHead: the input concatenated to their output, then one more 3x3 convolution
    head.DROPOUT = 0.1          # Dropout2d before the 1x1 classifier
    head.ALIGN_CORNERS = False  # bilinear upsampling of the logits to the image
    # "all_pixels": the loss summed over labelled pixels and divided by all pixels (mmsegmentation's default,
    # avg_non_ignore=False); "labelled_pixels": divided by the labelled ones (Detectron2's heads).
    head.LOSS_AVERAGE = "all_pixels"
    head.AUX_IN_FEATURE = ""    # an auxiliary FCN branch on this feature (res4 in FCN-D8), training only
    head.AUX_CONVS_DIM = 256
    head.AUX_LOSS_WEIGHT = 0.4
    # SOLVER.LR_SCHEDULER_NAME "PolyLR": lr = POLY_LR_MIN + (BASE_LR - POLY_LR_MIN) * (1 - iter / MAX_ITER) ** POWER
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_MIN = 1e-4
    # RandomCrop_CategoryAreaConstraint: a crop may be redrawn (up to 10 times) while one class covers more than
    # this fraction of its labelled pixels (mmsegmentation's cat_max_ratio); 1.0 = a plain random crop.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # mmsegmentation's PhotoMetricDistortion (brightness, contrast, saturation, hue) after the flip.
    cfg.INPUT.PHOTOMETRIC_DISTORTION = False
    # AlignedSegmentor's inference (transfer/segmentation/segmentor.py): "whole" image, or sliding windows of
    # CROP_SIZE every
    # STRIDE pixels (mmsegmentation's test_cfg mode="slide", crop_size, stride; its Cityscapes runs: 769, 513).
    cfg.TEST.SLIDE = CN()
    cfg.TEST.SLIDE.ENABLED = False
    cfg.TEST.SLIDE.CROP_SIZE = (769, 769)
    cfg.TEST.SLIDE.STRIDE = (513, 513)
    # mmsegmentation 0.11 initialises a ResNet built without weights with the last BN of every residual block at
    # gamma 0 (zero_init_residual); Detectron2 leaves gamma at 1. True: mmsegmentation's (the random-init configs).
    cfg.MODEL.RESNETS.ZERO_INIT_RESIDUAL = False


class TransferConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file or the key."""


def setup_cfg(config_file: str, opts=(), freeze: bool = True) -> CN:
    """Defaults <- file (with ``_BASE_``) <- ``KEY VALUE`` overrides; errors name the file or the key."""
    cfg = get_cfg()
    add_transfer_config(cfg)
    if not os.path.isfile(config_file):
        raise TransferConfigError(f"--config-file {config_file}: no such file")
    merge_config(cfg, config_file, opts, error=TransferConfigError)
    if not cfg.SOLVER.BASE_LR > 0:
        raise TransferConfigError(f"SOLVER.BASE_LR = {cfg.SOLVER.BASE_LR} must be positive")
    if freeze:
        cfg.freeze()
    return cfg
