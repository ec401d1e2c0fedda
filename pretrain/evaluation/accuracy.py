"""Matching accuracy of every matcher on the SAME backbone features of real view pairs (method.md, section 5).

Used by tools/eval_matching.py, tools/visualize_matches.py and the demo. A "pair" is two MoCo-v2 views of one
image, drawn with a seeded generator; the geometry of the views gives the true partner of every query cell.
"""
import dataclasses
import random
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from pretrain.backbone import build_resnet, infer_depth, resnet_stages
from pretrain.data.geometry import partner_error, positive_hits, true_partners
from pretrain.data.images import list_images, readable_images, to_rgb
from pretrain.data.transforms import TwoViewTransform
from pretrain.matchers import MATCHERS, Positives, list_matchers, options_from_cfg


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


Variant = Tuple[str, Any]  # (registered matcher, its options)


def registered_variants(model_node=None) -> Dict[str, Variant]:
    """Every registered matcher with its options from a config's ``MODEL`` node (default: the defaults)."""
    return {name: (name, options_from_cfg(model_node, name) if model_node is not None
                   else MATCHERS[name].default_options()) for name in list_matchers()}


def pick_all(fq: torch.Tensor, fk: torch.Tensor, batch: Dict, variants: Dict[str, Variant]) -> Dict:
    """Every variant's positives for one batch of features. ``batch`` holds the views' geometry and the finer
    stages the variants read (``stages_q``, ``stages_k``)."""
    return {name: MATCHERS[matcher](fq, fk, batch, options) for name, (matcher, options) in variants.items()}


def pair_errors(positives, geometry) -> torch.Tensor:
    """``[N, Lq, P]`` sub-cell errors of the chosen key cells (NaN where there is none): one column for an
    index matcher, every key cell (NaN off the mask) for a mask matcher."""
    if positives.index is not None:
        return partner_error(positives.index.unsqueeze(-1), *geometry)
    n, lq, lk = positives.mask.shape
    keys = torch.arange(lk, device=positives.mask.device).expand(n, lq, lk)
    return partner_error(torch.where(positives.mask, keys, torch.full_like(keys, -1)), *geometry)


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
                   seed: int = 0, size: int = 224, layer: str = "layer4",
                   variants: Optional[Dict[str, Variant]] = None) -> Dict:
    """Per variant (default: every registered matcher with its default options): exact-cell accuracy, accuracy
    within one cell (Chebyshev) of the true partner, and the sub-cell error (key cells from the selected cell's
    centre to the exact partner point), overall and split by orientation (same / mirrored) and by the scale ratio
    of the two crops. A mask matcher (several positives per cell) counts every positive pair. Every variant sees
    the same features of the same pairs. Each name at the top level and ``by_orientation`` keep within-one."""
    variants = variants or registered_variants()
    paths = readable_images(list_images(images))
    if not paths:
        raise ValueError(f"{images}: no readable image")
    model = build_resnet(depth, weights)
    finer = [s for matcher, options in variants.values() for s in MATCHERS[matcher].stages(options)]
    stages = tuple(dict.fromkeys([layer, *finer]))
    stats = {m: {p: {"exact": [0, 0], "within_one": [0, 0], "error": []} for p in PARTS} for m in variants}
    grid, with_partner, reported = None, 0, {m: {} for m in variants}
    for batch in view_pairs(paths, pairs, seed, size):
        fq, fk = (resnet_stages(model, batch[f"view_{v}"], stages) for v in ("q", "k"))
        batch = {**batch, "stages_q": fq, "stages_k": fk}
        fq, fk = fq[layer], fk[layer]
        grid = tuple(fq.shape[-2:])
        geometry = (batch["box_q"], batch["flip_q"], grid, batch["box_k"], batch["flip_k"], tuple(fk.shape[-2:]))
        truth = true_partners(*geometry)
        with_partner += int((truth >= 0).sum())
        mirrored = (batch["flip_q"] != batch["flip_k"]).tolist()
        scale_parts = scale_ratio_part(batch)
        for name, positives in pick_all(fq, fk, batch, variants).items():
            for key, value in positives.stats.items():  # weighted by the batch's pairs: a mean over pairs
                reported[name][key] = reported[name].get(key, 0.0) + float(value) * truth.shape[0] / pairs
            error = pair_errors(positives, geometry)
            for i in range(truth.shape[0]):
                parts = ("all", "mirrored" if mirrored[i] else "same_orientation", scale_parts[i])
                one = positives_of(positives, i)
                for key, tolerance in (("exact", 0), ("within_one", 1)):
                    hits, counted = positive_hits(one, truth[i:i + 1], fk.shape[-1], tolerance)
                    for part in parts:
                        stats[name][part][key][0] += int(hits)
                        stats[name][part][key][1] += int(counted)
                chosen = error[i][(truth[i] >= 0).unsqueeze(-1) & ~error[i].isnan()].tolist()
                for part in parts:
                    stats[name][part]["error"] += chosen
    result = summarise_counts(stats)
    for name in variants:
        result[name] = result["within_one"][name]["all"]
    result["by_orientation"] = {name: {p: result["within_one"][name][p] for p in ("same_orientation", "mirrored")}
                                for name in variants}
    result["matcher_stats"] = reported
    result["counts"] = {"pairs": pairs, "images": len(paths), "query_cells_with_partner": with_partner,
                        "grid": list(grid) if grid else None}
    result["settings"] = {
        "weights": weights, "depth": infer_depth(model.state_dict(), "model"), "seed": seed, "size": size,
        "layer": layer, "variants": {name: {"matcher": matcher, "label": MATCHERS[matcher].label,
                                            "options": dataclasses.asdict(options) if options else None}
                                     for name, (matcher, options) in variants.items()}}
    return result


def positives_of(positives: Positives, i: int) -> Positives:
    """The positives of image ``i`` alone, batch dimension kept."""
    return Positives(index=None if positives.index is None else positives.index[i:i + 1],
                     mask=None if positives.mask is None else positives.mask[i:i + 1])


# Options of the two Hough matchers at C5, one change at a time from each one's default: (matcher, overrides).
# The `hough` rows: the reference (RHM at C5, the default) and each toolkit option alone, not in the reference.
ABLATION = {
    "hough, reference (RHM at C5; default)": ("hough", []),
    "hough + flip slice (toolkit)": ("hough", ["MODEL.HOUGH.SPACE", "flip"]),
    "hough + flip slice, max over slices (toolkit)": (
        "hough", ["MODEL.HOUGH.SPACE", "flip", "MODEL.HOUGH.COMBINE", "max"]),
    "hough + scale x flip slices (toolkit)": ("hough", ["MODEL.HOUGH.SPACE", "similarity"]),
    "hough + centred features (toolkit)": ("hough", ["MODEL.HOUGH.CENTER", "True"]),
    "hough + softmax votes (toolkit)": ("hough", ["MODEL.HOUGH.VOTE", "softmax"]),
    "hough + cell bins smoothed by 1 cell (toolkit)": (
        "hough", ["MODEL.HOUGH.BINS", "cell", "MODEL.HOUGH.SIGMA", "1.0"]),
    "hough + bins normalised (toolkit)": ("hough", ["MODEL.HOUGH.NORMALIZE_BINS", "True"]),
    "hough_transform (extension, default options)": ("hough_transform", []),
    "hough_transform, outside cells without positive": ("hough_transform", ["MODEL.HOUGH_TRANSFORM.OUTSIDE", "none"]),
    "hough_transform, voted on C5 itself": ("hough_transform", ["MODEL.HOUGH_TRANSFORM.LAYER", "layer4",
                                                                "MODEL.HOUGH_TRANSFORM.QUERY_POOL", "1"]),
    "hough_transform, voted on layer3": ("hough_transform", ["MODEL.HOUGH_TRANSFORM.LAYER", "layer3",
                                                             "MODEL.HOUGH_TRANSFORM.QUERY_POOL", "1"]),
    "hough_transform, query not pooled, 16 candidates": ("hough_transform", [
        "MODEL.HOUGH_TRANSFORM.QUERY_POOL", "1", "MODEL.HOUGH_TRANSFORM.CANDIDATES", "16"]),
    "hough_transform, no least-squares refinement": ("hough_transform", ["MODEL.HOUGH_TRANSFORM.REFINE", "()"]),
    "hough_transform, translation only": ("hough_transform", ["MODEL.HOUGH_TRANSFORM.SPACE", "translation"]),
}
