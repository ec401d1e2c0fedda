"""Matching accuracy of every matcher on the SAME backbone features of real view pairs (method.md, section 5).

Used by tools/eval_matching.py, tools/visualize_matches.py and the demo. A "pair" is two MoCo-v2 views of one
image, drawn with a seeded generator; the geometry of the views gives the true partner of every query cell.
"""
import dataclasses
import random
from typing import Dict, Iterator, List, Optional

import torch

from .backbone import build_resnet, infer_depth, resnet_features
from .data import list_images, readable_images, to_rgb
from .geometry import matching_hits
from .matching import MATCHERS, HoughOptions, MatchOptions
from .transforms import TwoViewTransform

# What is compared: (registered matcher, Hough space or None). Hough in both spaces, on the same features.
COMPARED = {"argmax": ("argmax", None), "hough_translation": ("hough", "translation"),
            "hough_similarity": ("hough", "similarity"), "geometric": ("geometric", None)}


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
                samples.append(transform(to_rgb(img), random.Random(f"pairs/{seed}/{k}")))
        yield {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def pick_all(fq: torch.Tensor, fk: torch.Tensor, batch: Dict, hough: Optional[HoughOptions] = None) -> Dict:
    """Every compared matcher's choice ``[N, Lq]`` for one batch of features, and the truth."""
    hough = hough or HoughOptions()
    picks = {}
    for name, (matcher, space) in COMPARED.items():
        opts = MatchOptions(dataclasses.replace(hough, space=space) if space else hough)
        picks[name] = MATCHERS[matcher](fq, fk, batch, opts).index
    return picks, picks["geometric"]


@torch.no_grad()
def matching_study(images: str, weights: Optional[str] = None, depth: Optional[int] = None, pairs: int = 64,
                   seed: int = 0, size: int = 224, layer: str = "layer4", hough: Optional[HoughOptions] = None) -> Dict:
    """Accuracy (selected key cell within one cell of the true partner) per matcher, overall and split by
    whether the two views have the same orientation or are mirrored."""
    paths = readable_images(list_images(images))
    if not paths:
        raise ValueError(f"{images}: no readable image")
    model = build_resnet(depth, weights)
    counts = {m: {"all": [0, 0], "same_orientation": [0, 0], "mirrored": [0, 0]} for m in COMPARED}
    grid = None
    for batch in view_pairs(paths, pairs, seed, size):
        fq, fk = resnet_features(model, batch["view_q"], layer), resnet_features(model, batch["view_k"], layer)
        grid = tuple(fq.shape[-2:])
        picks, truth = pick_all(fq, fk, batch, hough)
        mirrored = batch["flip_q"] != batch["flip_k"]
        for name, pick in picks.items():
            for part, mask in (("all", torch.ones_like(mirrored)), ("same_orientation", ~mirrored),
                               ("mirrored", mirrored)):
                if mask.any():
                    hits, counted = matching_hits(pick[mask], truth[mask], fk.shape[-1])
                    counts[name][part][0] += int(hits)
                    counts[name][part][1] += int(counted)
    result = {name: counts[name]["all"][0] / max(1, counts[name]["all"][1]) for name in COMPARED}
    result["by_orientation"] = {name: {part: (h / c if c else None) for part, (h, c) in counts[name].items()
                                       if part != "all"} for name in COMPARED}
    result["counts"] = {"pairs": pairs, "images": len(paths),
                        "query_cells_with_partner": counts["geometric"]["all"][1], "grid": list(grid) if grid else None}
    result["settings"] = {"weights": weights, "depth": infer_depth(model.state_dict(), "model"), "seed": seed,
                          "size": size, "layer": layer, "hough": dataclasses.asdict(hough or HoughOptions())}
    return result
