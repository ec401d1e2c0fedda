"""Matching accuracy of every matcher on the SAME backbone features of real view pairs (method.md, section 5).

Used by tools/eval_matching.py, tools/visualize_matches.py and the demo. A "pair" is two MoCo-v2 views of one
image, drawn with a seeded generator; the geometry of the views gives the true partner of every query cell.
"""
import dataclasses
import random
from typing import Dict, Iterator, List, Optional

import torch

from .backbone import build_resnet, infer_depth, resnet_stages
from .data import list_images, readable_images, to_rgb
from .geometry import matching_hits, partner_error
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
    """Every compared matcher's choice ``[N, Lq]`` for one batch of features, and the truth. ``batch`` holds the
    views' geometry and, for voting on a finer stage, its features (``vote_q``, ``vote_k``)."""
    hough = hough or HoughOptions()
    picks = {}
    for name, (matcher, space) in COMPARED.items():
        opts = MatchOptions(dataclasses.replace(hough, space=space) if space else hough)
        picks[name] = MATCHERS[matcher](fq, fk, batch, opts).index
    return picks, picks["geometric"]


def scale_ratio_part(batch: Dict) -> List[str]:
    """Each pair's bucket of the scale ratio between its two crops (sqrt of the area ratio, >= 1)."""
    def area(b):
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    ratio = (area(batch["box_q"]) / area(batch["box_k"])).sqrt()
    ratio = torch.maximum(ratio, 1 / ratio)
    return ["scale_ratio_below_1.25" if r < 1.25 else "scale_ratio_1.25_to_2" if r < 2 else "scale_ratio_2_or_more"
            for r in ratio.tolist()]


PARTS = ("all", "same_orientation", "mirrored", "scale_ratio_below_1.25", "scale_ratio_1.25_to_2",
         "scale_ratio_2_or_more")


def summarise_counts(stats: Dict) -> Dict:
    def rate(hc):
        return hc[0] / hc[1] if hc[1] else None

    def errors(values):
        if not values:
            return None
        t = torch.tensor(values)
        return {"median": float(t.median()), "mean": float(t.mean())}
    return {
        "exact": {m: {p: rate(v[p]["exact"]) for p in PARTS} for m, v in stats.items()},
        "within_one": {m: {p: rate(v[p]["within_one"]) for p in PARTS} for m, v in stats.items()},
        "error": {m: {p: errors(v[p]["error"]) for p in PARTS} for m, v in stats.items()},
    }


@torch.no_grad()
def matching_study(images: str, weights: Optional[str] = None, depth: Optional[int] = None, pairs: int = 64,
                   seed: int = 0, size: int = 224, layer: str = "layer4", hough: Optional[HoughOptions] = None) -> Dict:
    """Per matcher: exact-cell accuracy, accuracy within one cell (Chebyshev) of the true partner, and the sub-cell
    error (key cells from the selected cell's centre to the exact partner point), overall and split by
    orientation (same / mirrored) and by the scale ratio of the two crops. Keys ``argmax``, ``hough_*`` at the
    top level and ``by_orientation`` keep within-one accuracy."""
    hough = hough or HoughOptions()
    paths = readable_images(list_images(images))
    if not paths:
        raise ValueError(f"{images}: no readable image")
    model = build_resnet(depth, weights)
    stages = tuple(dict.fromkeys([layer] + ([hough.layer] if hough.select == "transform" else [])))
    stats = {m: {p: {"exact": [0, 0], "within_one": [0, 0], "error": []} for p in PARTS} for m in COMPARED}
    grid = None
    for batch in view_pairs(paths, pairs, seed, size):
        fq, fk = (resnet_stages(model, batch[f"view_{v}"], stages) for v in ("q", "k"))
        if hough.select == "transform" and hough.layer != "layer4":
            batch = {**batch, "vote_q": fq[hough.layer], "vote_k": fk[hough.layer]}
        fq, fk = fq[layer], fk[layer]
        grid = tuple(fq.shape[-2:])
        picks, truth = pick_all(fq, fk, batch, hough)
        geometry = (batch["box_q"], batch["flip_q"], grid, batch["box_k"], batch["flip_k"], tuple(fk.shape[-2:]))
        mirrored = (batch["flip_q"] != batch["flip_k"]).tolist()
        scale_parts = scale_ratio_part(batch)
        for name, pick in picks.items():
            error = partner_error(pick, *geometry)
            for i in range(pick.shape[0]):
                parts = ("all", "mirrored" if mirrored[i] else "same_orientation", scale_parts[i])
                for key, tolerance in (("exact", 0), ("within_one", 1)):
                    hits, counted = matching_hits(pick[i:i + 1], truth[i:i + 1], fk.shape[-1], tolerance)
                    for part in parts:
                        stats[name][part][key][0] += int(hits)
                        stats[name][part][key][1] += int(counted)
                valid = (truth[i] >= 0) & (pick[i] >= 0)
                for part in parts:
                    stats[name][part]["error"] += error[i][valid].tolist()
    result = summarise_counts(stats)
    for name in COMPARED:
        result[name] = result["within_one"][name]["all"]
    result["by_orientation"] = {name: {p: result["within_one"][name][p] for p in ("same_orientation", "mirrored")}
                                for name in COMPARED}
    result["counts"] = {"pairs": pairs, "images": len(paths),
                        "query_cells_with_partner": stats["geometric"]["all"]["exact"][1],
                        "grid": list(grid) if grid else None}
    result["settings"] = {"weights": weights, "depth": infer_depth(model.state_dict(), "model"), "seed": seed,
                          "size": size, "layer": layer, "hough": dataclasses.asdict(hough)}
    return result


# The options of Hough matching at C5, one change at a time from the default (MODEL.HOUGH overrides).
ABLATION = {
    "default (transform voted on layer2, query pooled 2x, 32 candidates, refined)": [],
    "confidence per cell on C5 (the previous default)": ["MODEL.HOUGH.SELECT", "confidence"],
    "confidence per cell on C5, translation only": ["MODEL.HOUGH.SELECT", "confidence", "MODEL.HOUGH.SPACE",
                                                    "translation"],
    "confidence per cell on C5, bins normalised": ["MODEL.HOUGH.SELECT", "confidence", "MODEL.HOUGH.NORMALIZE_BINS",
                                                   "True"],
    "transform voted on C5 itself": ["MODEL.HOUGH.LAYER", "layer4", "MODEL.HOUGH.QUERY_POOL", "1"],
    "transform voted on layer3": ["MODEL.HOUGH.LAYER", "layer3", "MODEL.HOUGH.QUERY_POOL", "1"],
    "query not pooled, 16 candidates": ["MODEL.HOUGH.QUERY_POOL", "1", "MODEL.HOUGH.CANDIDATES", "16"],
    "query pooled 4x, 64 candidates": ["MODEL.HOUGH.QUERY_POOL", "4", "MODEL.HOUGH.CANDIDATES", "64"],
    "8 candidates": ["MODEL.HOUGH.CANDIDATES", "8"],
    "no least-squares refinement": ["MODEL.HOUGH.REFINE", "()"],
    "scales up to 2.8 (7 per mirror)": ["MODEL.HOUGH.SCALES", "(0.354, 0.5, 0.707, 1.0, 1.414, 2.0, 2.828)"],
    "translation only (no scales, no mirror)": ["MODEL.HOUGH.SPACE", "translation"],
    "confidence per cell on C5, softmax votes": ["MODEL.HOUGH.VOTE", "softmax", "MODEL.HOUGH.SELECT", "confidence"],
}
