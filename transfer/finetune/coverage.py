"""The Detectron2 checks of converted weights: the coverage check that stops a fine-tuning from quietly starting
on partly random weights, and ``verify`` (what ``tools/convert.py --verify`` runs).

Detectron2 only WARNS about keys missing from MODEL.WEIGHTS: a broken conversion trains from random weights
without an error. Here every ResNet parameter of the model must come from the file.
"""
import logging
import os
import pickle
import re
from typing import Dict, List, NamedTuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.backbone import ResNet, build_resnet_backbone

from pretrain.backbone import ResNetWeights, normalise, resnet_features, torchvision_resnet
from transfer.finetune import roi_heads  # noqa: F401  (registers the extra-norm Res5 ROI head verify builds)
from transfer.finetune.config import CONFIGS, setup_cfg

# verify's C4 head and FCN-D8 model are registered on import
from transfer.segmentation import model as segmentation  # noqa: F401
from transfer.weights import WeightsError, architecture_opts, read_sidecar

logger = logging.getLogger(__name__)


def resnet_prefixes(model) -> List[str]:
    """Where the pretrained ResNet lives in a Detectron2 model: the backbone (C4), its ``bottom_up`` (FPN),
    and the res5 blocks that the C4 ROI head runs (not the extra norm after them)."""
    prefixes = []
    for name, module in model.named_modules():
        if isinstance(module, ResNet):
            prefixes.append(f"{name}.")
    if hasattr(getattr(model, "roi_heads", None), "res5"):
        prefixes.append("roi_heads.res5.")
    return prefixes


def resnet_parameter_names(model) -> List[str]:
    prefixes = resnet_prefixes(model)
    names = []
    for name in model.state_dict():
        if name.endswith("num_batches_tracked") or not name.startswith(tuple(prefixes)):
            continue
        if name.startswith("roi_heads.res5.") and not re.match(r"roi_heads\.res5\.\d+\.", name):
            continue  # the extra norm after res5 is new, not pretrained
        names.append(name)
    return names


class CoverageCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that remembers which model keys the file did not provide and which of its keys the
    model did not use. ``quiet``: no per-key warnings (the caller summarises them)."""

    def __init__(self, model, quiet: bool = False):
        super().__init__(model)
        self.quiet = quiet

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        self.missing = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
        self.unexpected = sorted(incompatible.unexpected_keys)
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        if not self.quiet:
            super()._log_incompatible_keys(incompatible)


def load_and_check_coverage(model, weights: str, allow_partial: bool = False, quiet: bool = False) -> List[str]:
    """Load ``weights`` into ``model``; raise WeightsError listing every ResNet parameter the file did not
    provide (unless ``allow_partial``). Returns the names of the ResNet parameters that were loaded."""
    return load_with_report(model, weights, allow_partial, quiet).loaded


class CoverageReport(NamedTuple):
    loaded: List[str]       # ResNet parameters taken from the file
    new_modules: List[str]  # modules of the detector that a backbone file does not provide (heads, FPN, ...)
    new_tensors: int        # how many tensors those modules hold
    unused: List[str]       # keys of the file that the model did not take


def new_module_names(names, resnet_prefixes: List[str]) -> List[str]:
    """``roi_heads.box_predictor.cls_score.weight`` -> ``roi_heads.box_predictor``: the head a key belongs to
    (one level deeper inside a ResNet: ``roi_heads.res5.norm``, the extra norm of the C4 head)."""
    return sorted({".".join(n.split(".")[:3 if n.startswith(tuple(resnet_prefixes)) else 2]) for n in names})


def load_with_report(model, weights: str, allow_partial: bool = False, quiet: bool = False) -> CoverageReport:
    """``load_and_check_coverage`` that also says what else happened: the detector's modules that start new
    (expected for a backbone file) and any key of the file that the model did not use (never expected)."""
    checkpointer = CoverageCheckpointer(model, quiet=quiet)  # unwraps DistributedDataParallel
    checkpointer.load(weights)
    wanted = resnet_parameter_names(checkpointer.model)
    missing = [n for n in wanted if n in checkpointer.missing]
    if missing:
        message = (f"{weights}: {len(missing)} of {len(wanted)} backbone parameters were not loaded and would "
                   f"train from random initialisation: {missing[:30]}{' ...' if len(missing) > 30 else ''}")
        if not allow_partial:
            raise WeightsError(message + " (pass --allow-partial to train anyway)")
        logger.warning(message)
    else:
        logger.info("%s: all %d backbone parameters loaded", weights, len(wanted))
    new = [n for n in checkpointer.missing if n not in set(wanted) and not n.endswith("num_batches_tracked")]
    return CoverageReport([n for n in wanted if n not in missing],
                          new_module_names(new, resnet_prefixes(checkpointer.model)), len(new),
                          checkpointer.unexpected)


def res5_error(pkl_path: str, weights: ResNetWeights, settings: Dict, size: int = 160) -> float:
    """Max relative difference between Detectron2's res5 and torchvision's layer4 on one random image."""
    opts = ["MODEL.RESNETS.NORM", "BN", "MODEL.RESNETS.OUT_FEATURES", ["res5"], "MODEL.RESNETS.STRIDE_IN_1X1",
            settings["MODEL.RESNETS.STRIDE_IN_1X1"]]
    cfg = setup_cfg(os.path.join(CONFIGS, "Base-SSL.yaml"), architecture_opts(weights) + opts)
    d2 = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    with open(pkl_path, "rb") as f:
        d2.load_state_dict({k: torch.as_tensor(v) for k, v in pickle.load(f)["model"].items()}, strict=True)
    tv = torchvision_resnet(weights.depth, weights.groups, weights.width_per_group).eval()
    tv.load_state_dict(weights.tensors, strict=False)
    torch.manual_seed(0)
    image = torch.rand(1, 3, size, size) * 255  # RGB in [0, 255], as Detectron2 reads it
    mean, std = torch.tensor(settings["MODEL.PIXEL_MEAN"]), torch.tensor(settings["MODEL.PIXEL_STD"])
    tv_input = normalise(image / 255)
    with torch.no_grad():
        a = d2((image - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))["res5"]
        b = resnet_features(tv, tv_input, "layer4")
    return ((a - b).abs().max() / b.abs().max()).item()


def verify(pkl_path: str, weights: ResNetWeights, tolerance: float = 1e-4) -> None:
    """The converted file computes what the source computes, and a C4 and an FPN model built from
    configs/transfer/ take every backbone parameter from it. Prints what it checked; raises WeightsError."""
    settings = read_sidecar(pkl_path)["input_settings"]
    error = res5_error(pkl_path, weights, settings)
    print(f"verify: Detectron2 res5 vs torchvision layer4 on a random image: max relative error {error:.2e} "
          f"(limit {tolerance:.0e})")
    if not error < tolerance:
        raise WeightsError(f"{pkl_path}: converted weights do not reproduce the source network "
                           f"(relative error {error:.2e})")
    models = [("FPN", "coco_R_50_FPN_1x.yaml"), ("FCN-D8", "voc12aug_FCN_R50_D8_20k.yaml")]
    if weights.depth >= 50:
        models.insert(0, ("C4", "voc_R_50_C4_24k.yaml"))
    else:
        print("verify: C4 skipped: Detectron2's Res5 ROI head is built from bottleneck blocks (ResNet-50+)")
    for name, config in models:
        cfg = setup_cfg(os.path.join(CONFIGS, config), architecture_opts(weights) + ["MODEL.DEVICE", "cpu"])
        report = load_with_report(build_model(cfg), pkl_path, quiet=True)
        print(f"verify: {name} model from configs/transfer/{config}: all {len(report.loaded)} backbone parameters "
              f"loaded from the file; {report.new_tensors} tensors start new as expected for a backbone "
              f"({', '.join(report.new_modules)})")
        if report.unused:
            raise WeightsError(f"{pkl_path}: {len(report.unused)} keys of the file are not used by the {name} "
                               f"model: {report.unused}")
