"""``tools/convert.py --verify``: the converted file computes what the source weights compute, and a C4 and
an FPN model built from configs/transfer/ take every backbone parameter from it."""
import json
import os
import pickle

import torch
import torchvision
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.backbone import build_resnet_backbone

from .checks import load_and_check_coverage
from .config import setup_cfg

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "transfer")
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VerificationError(RuntimeError):
    pass


def depth_opts(depth):
    # Detectron2 builds ResNet-18/34 from basic blocks only with 64 channels out of res2.
    return ["MODEL.RESNETS.DEPTH", depth] + (["MODEL.RESNETS.RES2_OUT_CHANNELS", 64] if depth < 50 else [])


def compare_res5(pkl_path, source_tensors, depth, settings, size=160):
    """Max relative difference between Detectron2's res5 and torchvision's layer4 on one random image."""
    cfg = setup_cfg(os.path.join(CONFIGS, "Base-SSL.yaml"),
                    depth_opts(depth) + ["MODEL.RESNETS.NORM", "BN", "MODEL.RESNETS.OUT_FEATURES", ["res5"],
                                         "MODEL.RESNETS.STRIDE_IN_1X1",
                                         settings["MODEL.RESNETS.STRIDE_IN_1X1"]])
    d2 = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    with open(pkl_path, "rb") as f:
        weights = pickle.load(f)["model"]
    d2.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()}, strict=True)
    tv = torchvision.models.__dict__[f"resnet{depth}"]().eval()
    missing, unexpected = tv.load_state_dict(source_tensors, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected, (missing, unexpected)

    torch.manual_seed(0)
    image = torch.rand(1, 3, size, size) * 255  # RGB in [0, 255], as Detectron2 reads it
    mean, std = torch.tensor(settings["MODEL.PIXEL_MEAN"]), torch.tensor(settings["MODEL.PIXEL_STD"])
    d2_input = (image - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    tv_input = (image / 255 - torch.tensor(TORCHVISION_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        TORCHVISION_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        b = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(tv_input))))))))
        a = d2(d2_input)["res5"]
    return ((a - b).abs().max() / b.abs().max()).item()


def verify(pkl_path, source_tensors, depth, tolerance=1e-4):
    with open(pkl_path + ".json") as f:
        settings = json.load(f)["input_settings"]
    error = compare_res5(pkl_path, source_tensors, depth, settings)
    print(f"verify: Detectron2 res5 vs torchvision layer4 on a random image: max relative error {error:.2e} "
          f"(limit {tolerance:.0e})")
    if not error < tolerance:
        raise VerificationError(f"{pkl_path}: converted weights do not reproduce the source network "
                                f"(relative error {error:.2e})")
    models = [("FPN", "coco_R_50_FPN_1x.yaml")]
    if depth >= 50:
        models.insert(0, ("C4", "voc_R_50_C4_24k.yaml"))
    else:
        print("verify: C4 skipped: Detectron2's Res5 ROI head is built from bottleneck blocks (ResNet-50+)")
    for name, config in models:
        cfg = setup_cfg(os.path.join(CONFIGS, config), depth_opts(depth) + ["MODEL.DEVICE", "cpu"])
        loaded = load_and_check_coverage(build_model(cfg), pkl_path)
        print(f"verify: {name} model from configs/transfer/{config}: all {len(loaded)} backbone parameters "
              f"loaded from the file")
