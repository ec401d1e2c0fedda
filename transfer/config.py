"""Transfer config: Detectron2's defaults + this add-on's keys, then the file, then command-line overrides."""
import os

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "transfer")


def add_transfer_config(cfg: CN) -> None:
    cfg.TRANSFER = CN()
    # Refuse to train when MODEL.WEIGHTS leaves any backbone parameter at its random initialisation.
    cfg.TRANSFER.ALLOW_PARTIAL_WEIGHTS = False


def setup_cfg(config_file: str, opts=(), freeze: bool = True) -> CN:
    cfg = get_cfg()
    add_transfer_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if freeze:
        cfg.freeze()
    return cfg
