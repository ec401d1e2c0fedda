"""Transfer config: Detectron2's defaults + this add-on's keys, then the file, then command-line overrides."""
import os

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from pretrain.config import merge_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "transfer")


def add_transfer_config(cfg: CN) -> None:
    cfg.TRANSFER = CN()
    # Refuse to train when MODEL.WEIGHTS leaves any backbone parameter at its random initialisation.
    cfg.TRANSFER.ALLOW_PARTIAL_WEIGHTS = False
    # The frozen-backbone probe (transfer/probe.py): BN statistics re-estimated on BN_ITERS training batches,
    # then the whole ResNet frozen; FPN and heads train. Build the backbone with MODEL.BACKBONE.FREEZE_AT 0.
    cfg.TRANSFER.PROBE = CN()
    cfg.TRANSFER.PROBE.ENABLED = False
    cfg.TRANSFER.PROBE.BN_ITERS = 50


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
