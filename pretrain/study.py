"""Matching accuracy of every matcher on the SAME backbone features of real view pairs (method.md, section 5).

Used by tools/eval_matching.py, tools/visualize_matches.py and the demo. A "pair" is two MoCo-v2 views of one
image, drawn with a seeded generator; the geometry of the views gives the true partner of every query cell.
"""
import random
from typing import Dict, Iterator, List, Optional

import torch
import torchvision

from . import matching
from .checkpoint import load_file
from .data import list_images, readable_images
from .geometry import matching_hits, true_partners
from .transforms import TwoViewTransform

MATCHERS = ("argmax", "hough_translation", "hough_similarity", "geometric")


def backbone_state(weights: str) -> Dict[str, torch.Tensor]:
    """A torchvision ResNet state_dict from ``backbone.pth`` or a full pretraining checkpoint."""
    state = load_file(weights)
    if "model" in state and isinstance(state["model"], dict):
        prefix = "encoder_q.backbone."
        state = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    return state


def build_backbone(depth: int = 18, weights: Optional[str] = None) -> torch.nn.Module:
    torch.manual_seed(0)  # random init is reproducible too
    model = torchvision.models.__dict__[f"resnet{depth}"]()
    if weights:
        state = backbone_state(weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if set(missing) - {"fc.weight", "fc.bias"} or unexpected:
            raise ValueError(f"{weights}: not a ResNet-{depth} backbone (missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]})")
    return model.eval()


def features(model: torch.nn.Module, images: torch.Tensor, layer: str = "layer4") -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    for name in ("layer1", "layer2", "layer3", "layer4"):
        x = getattr(model, name)(x)
        if name == layer:
            return x
    raise ValueError(f"unknown layer {layer!r}")


def view_pairs(paths: List[str], pairs: int, seed: int, size: int, batch: int = 16) -> Iterator[Dict]:
    """Batches of seeded view pairs of randomly chosen images (the pretraining augmentation)."""
    from PIL import Image
    transform = TwoViewTransform(size)
    chooser = random.Random(seed)
    for start in range(0, pairs, batch):
        samples = []
        for k in range(start, min(pairs, start + batch)):
            path = chooser.choice(paths)
            with Image.open(path) as img:
                samples.append(transform(img.convert("RGB"), random.Random(f"pairs/{seed}/{k}")))
        yield {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def pick_all(fq: torch.Tensor, fk: torch.Tensor, batch: Dict, hough_options: Optional[Dict] = None) -> Dict:
    """Every matcher's choice ``[N, Lq]`` for one batch of features, and the truth."""
    options = dict(hough_options or {})
    options.pop("space", None)
    grid_q, grid_k = tuple(fq.shape[-2:]), tuple(fk.shape[-2:])
    truth = true_partners(batch["box_q"], batch["flip_q"], grid_q, batch["box_k"], batch["flip_k"], grid_k)
    return {
        "argmax": matching.argmax_match(fq, fk),
        "hough_translation": matching.hough_match(fq, fk, space="translation", **options),
        "hough_similarity": matching.hough_match(fq, fk, space="similarity", **options),
        "geometric": truth,
    }, truth


@torch.no_grad()
def matching_study(images: str, weights: Optional[str] = None, depth: int = 18, pairs: int = 64, seed: int = 0,
                   size: int = 224, layer: str = "layer4", hough_options: Optional[Dict] = None) -> Dict:
    """Accuracy (selected key cell within one cell of the true partner) per matcher, overall and split by
    whether the two views have the same orientation or are mirrored."""
    paths = readable_images(list_images(images))
    if not paths:
        raise ValueError(f"{images}: no readable image")
    model = build_backbone(depth, weights)
    counts = {m: {"all": [0, 0], "same_orientation": [0, 0], "mirrored": [0, 0]} for m in MATCHERS}
    grid = None
    for batch in view_pairs(paths, pairs, seed, size):
        fq, fk = features(model, batch["view_q"], layer), features(model, batch["view_k"], layer)
        grid = tuple(fq.shape[-2:])
        picks, truth = pick_all(fq, fk, batch, hough_options)
        mirrored = batch["flip_q"] != batch["flip_k"]
        for name, pick in picks.items():
            for part, mask in (("all", torch.ones_like(mirrored)), ("same_orientation", ~mirrored),
                               ("mirrored", mirrored)):
                if mask.any():
                    hits, counted = matching_hits(pick[mask], truth[mask], fk.shape[-1])
                    counts[name][part][0] += int(hits)
                    counts[name][part][1] += int(counted)
    result = {name: counts[name]["all"][0] / max(1, counts[name]["all"][1]) for name in MATCHERS}
    result["by_orientation"] = {name: {part: (h / c if c else None) for part, (h, c) in counts[name].items()
                                       if part != "all"} for name in MATCHERS}
    result["counts"] = {"pairs": pairs, "images": len(paths), "query_cells_with_partner": counts["geometric"]["all"][1],
                        "grid": list(grid) if grid else None}
    result["settings"] = {"weights": weights, "depth": depth, "seed": seed, "size": size, "layer": layer,
                          "hough": hough_options or {}}
    return result
