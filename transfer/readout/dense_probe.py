"""The dense linear probe: how linearly a frozen backbone's feature map separates the objects from the rest.

Cheaper than the detection probe by two orders of magnitude (one forward of each tile, one convex fit) and free
of the heads' training noise. For every cell of the feature map of a stage (C4 by default: stride 16), the label
is whether the cell's centre lies inside an annotated box; a logistic regression on the standardised features
of the training tiles (L-BFGS, L2, float64: a convex problem with one answer) scores every cell of the test
tiles, and the metric is the average precision of those scores (x 100), over all test cells.

As in the detection probe, every backbone's BN statistics are first re-estimated on the training tiles (fvcore's
precise BN), the same way for all. Seed ``s`` fits on a seeded half of the training tiles, the same half for
every backbone: the comparison is paired, and its spread is that of the probe's training data.
"""
import glob
import os
import random
from typing import Dict, List, Sequence, Union

import numpy as np
import torch
from PIL import Image

from pretrain.backbone import build_resnet, normalise, resnet_stages
from pretrain.checkpoint import checkpoint_iteration
from transfer.data.voc_layout import voc_records
from transfer.readout.precise_bn import reestimate_bn
from transfer.results import mean_std, paired


def load_tiles(dirname: str, split: str, classes: Sequence[str]) -> List[Dict]:
    """``[{"file_name", "image" [3, H, W] float in [0, 1], "boxes" [N, 4] XYXY}]`` of a VOC-layout split: the
    boxes of ``classes`` in pixel edges, as Detectron2 reads them (``xmin - 1, ymin - 1, xmax, ymax``)."""
    tiles = []
    for record in voc_records(dirname, split, classes):
        with Image.open(record["file_name"]) as im:
            image = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
        boxes = torch.tensor([a["bbox"] for a in record["annotations"]], dtype=torch.float32).reshape(-1, 4)
        tiles.append({"file_name": record["file_name"], "image": image, "boxes": boxes})
    if not tiles:
        raise ValueError(f"{dirname}: split {split!r} has no images")
    return tiles


def cell_labels(boxes: torch.Tensor, height: int, width: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """``[grid_h, grid_w]`` bool: does the centre of each cell (in image pixels) lie inside one of ``boxes``."""
    ys = (torch.arange(grid_h, dtype=torch.float32) + 0.5) * height / grid_h
    xs = (torch.arange(grid_w, dtype=torch.float32) + 0.5) * width / grid_w
    if len(boxes) == 0:
        return torch.zeros(grid_h, grid_w, dtype=torch.bool)
    inside_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] <= boxes[:, 3:4])  # [N, grid_h]
    inside_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] <= boxes[:, 2:3])  # [N, grid_w]
    return (inside_y[:, :, None] & inside_x[:, None, :]).any(0)


def reestimate_backbone_bn(model: torch.nn.Module, images: Sequence[torch.Tensor], layer: str, batch: int = 16) -> None:
    """BN statistics re-estimated over the batches of ``images`` (same-size images batched together), through
    stage ``layer`` (transfer/readout/precise_bn.py); the model is left in eval mode."""
    by_size: Dict[tuple, List[torch.Tensor]] = {}
    for image in images:
        by_size.setdefault(tuple(image.shape), []).append(image)
    reestimate_bn(model, [normalise(torch.stack(group[i:i + batch])) for group in by_size.values()
                          for i in range(0, len(group), batch)], layer)


@torch.no_grad()
def cell_features(model: torch.nn.Module, tiles: Sequence[Dict], layer: str, batch: int = 16):
    """``(features [M, C] float64, labels [M] bool, tile [M] long)`` over every cell of every tile at stage
    ``layer``; tiles of one size are batched together."""
    feats, labels, owner = [], [], []
    by_size: Dict[tuple, List[int]] = {}
    for i, t in enumerate(tiles):
        by_size.setdefault(tuple(t["image"].shape), []).append(i)
    for indices in by_size.values():
        for start in range(0, len(indices), batch):
            chunk = indices[start:start + batch]
            images = torch.stack([tiles[i]["image"] for i in chunk])
            fmap = resnet_stages(model, normalise(images), (layer,))[layer]
            _, c, gh, gw = fmap.shape
            feats.append(fmap.permute(0, 2, 3, 1).reshape(-1, c).double())
            for i in chunk:
                labels.append(cell_labels(tiles[i]["boxes"], images.shape[2], images.shape[3], gh, gw).reshape(-1))
                owner.append(torch.full((gh * gw,), i, dtype=torch.long))
    return torch.cat(feats), torch.cat(labels), torch.cat(owner)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, weight_decay: float = 1e-3, steps: int = 200):
    """L2-regularised logistic regression by L-BFGS: ``(w [C], b)``. Convex: the answer does not depend on the
    start (zeros) beyond the solver's tolerance."""
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    target = y.to(x.dtype)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, target) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The area under the precision-recall curve as the mean precision at each positive (ties broken by order
    after a stable sort; NaN when there is no positive)."""
    order = torch.argsort(scores, descending=True, stable=True)
    hits = labels[order].double()
    if hits.sum() == 0:
        return float("nan")
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return float((precision * hits).sum() / hits.sum())


def training_half(count: int, seed: int) -> List[int]:
    """The indices of the training tiles that seed ``seed`` fits on: a seeded half, the same for every backbone."""
    indices = list(range(count))
    random.Random(seed).shuffle(indices)
    return sorted(indices[:max(1, count // 2)])


def probe_scores(train: Sequence[Dict], test: Sequence[Dict], weights: Union[str, Sequence[str], None],
                 seeds: Sequence[int], layer: str = "layer3", depth: int = 18, weight_decay: float = 1e-3,
                 init_seed: int = 0, encoder: str = "query") -> Dict[str, torch.Tensor]:
    """The probe's scores of every test cell, one row per seed (training half), for the ``encoder`` backbone of
    ``weights`` (several files: their mean; a random init drawn with ``init_seed`` when None):
    ``{"scores" [K, M] float64, "labels" [M] bool, "tile" [M] long (index into ``test``)}``."""
    model = build_resnet(depth=None if weights else depth, weights=weights, seed=init_seed, encoder=encoder)
    reestimate_backbone_bn(model, [t["image"] for t in train], layer)
    x_train, y_train, tile = cell_features(model, train, layer)
    x_test, y_test, test_tile = cell_features(model, test, layer)
    scores = []
    for seed in seeds:
        rows = torch.isin(tile, torch.tensor(training_half(len(train), seed)))
        mean, std = x_train[rows].mean(0), x_train[rows].std(0).clamp_min(1e-6)
        w, b = fit_logistic((x_train[rows] - mean) / std, y_train[rows], weight_decay)
        scores.append(((x_test - mean) / std) @ w + b)
    return {"scores": torch.stack(scores), "labels": y_test, "tile": test_tile}


def probe_results(scores: Dict[str, torch.Tensor], seeds: Sequence[int]) -> Dict[int, Dict]:
    """``{seed: {"dense": {"AP": ap x 100, "positives": fraction of test cells inside a box}}}`` of the
    ``probe_scores`` rows of ``seeds``."""
    labels = scores["labels"]
    return {seed: {"dense": {"AP": 100 * average_precision(row, labels), "positives": float(labels.double().mean())}}
            for seed, row in zip(seeds, scores["scores"])}


def dense_probe(train: Sequence[Dict], test: Sequence[Dict], weights: Union[str, Sequence[str], None],
                seeds: Sequence[int], layer: str = "layer3", depth: int = 18, weight_decay: float = 1e-3,
                init_seed: int = 0, encoder: str = "query") -> Dict[int, Dict]:
    """The probe's results of ``probe_scores``, by seed."""
    return probe_results(probe_scores(train, test, weights, seeds, layer, depth, weight_decay, init_seed, encoder),
                         seeds)


def checkpoints_of(run_dir: str) -> List[tuple]:
    """``[(iteration, path)]`` of a pretraining run's ``model_*.pth``, in order."""
    paths = glob.glob(os.path.join(run_dir, "model_*.pth"))
    if not paths:
        raise ValueError(f"{run_dir}: no model_*.pth checkpoints (set SOLVER.CHECKPOINT_PERIOD below MAX_ITER)")
    return sorted((checkpoint_iteration(p), p) for p in paths)


def budget_curve(train: Sequence[Dict], test: Sequence[Dict], runs: Dict[str, str], seeds: Sequence[int],
                 layer: str = "layer3", depth: int = 18) -> List[Dict]:
    """The dense probe of every checkpoint of every pretraining run, each paired by seed (training half) with
    the random init of a ResNet-``depth``: ``[{"model", "iteration", "AP", "std", "difference": paired(...)}]``,
    random init first (iteration 0)."""

    def row(model, iteration, results):
        aps = [r["dense"]["AP"] for r in results.values()]
        return {"model": model, "iteration": iteration, "AP": mean_std(aps)[0], "std": mean_std(aps)[1],
                "results": results}

    baseline = row("random_init", 0, dense_probe(train, test, None, seeds, layer, depth))
    rows = [baseline]
    for name, run_dir in runs.items():
        for iteration, path in checkpoints_of(run_dir):
            rows.append(row(name, iteration, dense_probe(train, test, path, seeds, layer)))
    for r in rows[1:]:
        r["difference"] = paired(r["results"], baseline["results"], "dense/AP")
    return rows
