"""The correspondence readout: what the dense loss teaches, read directly on the backbone it trained.

The dense loss asks a backbone to give a cell and its partner in another view of the same image similar features.
This readout asks the trained backbone exactly that, on view pairs it never saw (the matching evaluation's seeded
pairs of the photos, ``pretrain/evaluation/accuracy.py``): each query cell's most similar key cell (plain argmax
on the backbone's own features, no matcher options) against the true partner from the crop boxes and flips, at C4
and at C5, exact and within one cell. One number per backbone and layer, paired by pretraining seed as the
transfer readouts are (``tools/collect_results.py``).

Where backbones trained with random, argmax and oracle positives read alike here, the choice of positives did not
reach the backbone; where they differ here and not on the transfer readouts, it reached the backbone and did not
transfer. Known outcomes the tests hold: identical views read 100 (every cell is its own partner); the pretraining
matchers' own positives read through ``matching_study`` (the oracle exact, random positives at chance).
"""
from typing import Dict, Iterable, Optional, Tuple

import torch

from pretrain.backbone import build_resnet, resnet_stages
from pretrain.data.geometry import matching_hits, true_partners
from pretrain.data.images import list_images, readable_images
from pretrain.evaluation.accuracy import view_pairs
from pretrain.matchers import argmax_match

LAYERS = {"C4": "layer3", "C5": "layer4"}
TOLERANCES = {"exact": 0, "within_one": 1}


@torch.no_grad()
def count_hits(model: torch.nn.Module, batches: Iterable[Dict], layers: Dict[str, str] = LAYERS) -> Dict:
    """``{"C4_exact": [hits, counted], ...}`` of argmax on ``model``'s features over ``batches`` of view pairs
    (``view_q/view_k [N, 3, S, S]``, ``box_q/box_k [N, 4]``, ``flip_q/flip_k [N]``). Only query cells with a
    true partner in the key view count."""
    counts = {f"{name}_{kind}": [0, 0] for name in layers for kind in TOLERANCES}
    for batch in batches:
        fq, fk = (resnet_stages(model, batch[f"view_{v}"], tuple(layers.values())) for v in ("q", "k"))
        for name, layer in layers.items():
            q, k = fq[layer], fk[layer]
            truth = true_partners(batch["box_q"], batch["flip_q"], tuple(q.shape[-2:]), batch["box_k"],
                                  batch["flip_k"], tuple(k.shape[-2:]))
            chosen = argmax_match(q, k)
            for kind, tolerance in TOLERANCES.items():
                hits, counted = matching_hits(chosen, truth, k.shape[-1], tolerance)
                counts[f"{name}_{kind}"][0] += int(hits)
                counts[f"{name}_{kind}"][1] += int(counted)
    return counts


def correspondence(images: str, weights: Optional[str] = None, depth: Optional[int] = None, pairs: int = 64,
                   seed: int = 0, size: int = 224, init_seed: int = 0, encoder: str = "query"
                   ) -> Tuple[Dict[str, float], Dict]:
    """The readout of one backbone (``weights``, its ``encoder``; random init drawn with ``init_seed`` when None)
    on ``pairs`` view pairs of the images under ``images`` drawn with ``seed``: ``({"C4_exact": %, ...}, counts)``.
    """
    paths = readable_images(list_images(images))
    if not paths:
        raise ValueError(f"{images}: no readable image")
    model = build_resnet(depth, weights, seed=init_seed, encoder=encoder)
    counts = count_hits(model, view_pairs(paths, pairs, seed, size))
    if any(counted == 0 for _, counted in counts.values()):
        raise ValueError(f"--pairs {pairs} at --size {size}: no query cell has a partner; give more pairs")
    return {key: 100.0 * hits / counted for key, (hits, counted) in counts.items()}, {
        "pairs": pairs, "images": len(paths), "cells_with_partner": {k: c for k, (_, c) in counts.items()}}
