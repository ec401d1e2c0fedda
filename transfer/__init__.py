"""Detectron2 add-on for fine-tuning self-supervised backbones: importing it registers the extra-norm Res5 ROI
head; the rest is configs (configs/transfer/) and a thin tools/train_net.py."""
from . import roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from .config import add_transfer_config, setup_cfg  # noqa: F401
