"""How much of a paired dense-probe difference is the test set: the bootstrap over test tiles.

A dense-probe number is measured on one finite set of test tiles. Two backbones of one pretraining seed are scored
on the same tiles, so resampling the tiles (with replacement, the same draw for both) gives the spread their
difference would have over other test sets of the same size and kind. Over the pretraining seeds of a paired
comparison, the differences vary by the pretraining draw and by how each seed's pair of backbones happens to suit
these tiles. The bootstrap variance of one seed's difference bounds the second part from above (it also holds
what the tiles do alike to every seed, which moves all differences together and is not in their spread):

    var(per-seed differences) = var(draw) + var(tiles, seed-specific),  var(tiles, seed-specific) <= mean bootstrap var

so the interval a perfectly repeatable pretraining run would leave on these tiles is at least
``half_width_without_tiles``: reading the same runs otherwise (another checkpoint, the momentum encoder) cannot
narrow the interval below it, only more seeds can. The same resamples applied to every seed also give the spread
of the MEAN difference over test sets of this size, which the interval over pretraining seeds does not contain.

The probe writes what this needs beside each result (``tools/dense_probe.py --as-seed S``):
``OUT/seed_S/test_scores.pt``, the scores of every test cell for every training half, the cells' labels and
their tile.
"""
import math
import os
from typing import Dict, List, Optional, Sequence

import torch

from pretrain.runtime.files import atomic_torch_save
from transfer.readout.dense_probe import average_precision
from transfer.results import ResultsError, seed_dir

SCORES_FILE = "test_scores.pt"


def save_scores(run_dir: str, seed: int, scores: Dict[str, torch.Tensor], test_files: Sequence[str]) -> str:
    """``run_dir/seed_S/test_scores.pt`` (atomic): the probe's scores [K, M], labels [M], tile [M] and the test
    tiles' file names, which pairing checks."""
    path = os.path.join(seed_dir(run_dir, seed), SCORES_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_torch_save({**{k: v.cpu() for k, v in scores.items()}, "files": list(test_files)}, path)
    return path


def load_scores(run_dir: str, seed: int) -> Dict:
    path = os.path.join(seed_dir(run_dir, seed), SCORES_FILE)
    if not os.path.exists(path):
        raise ResultsError(f"{path}: no test scores (rerun tools/dense_probe.py with --as-seed {seed})")
    return torch.load(path, map_location="cpu", weights_only=True) | {"path": path}


def mean_ap(scores: torch.Tensor, labels: torch.Tensor, cells: torch.Tensor) -> float:
    """The AP (x 100) over ``cells`` (indices, repeats allowed), averaged over the rows (training halves)."""
    return sum(100 * average_precision(row[cells], labels[cells]) for row in scores) / len(scores)


def resample_tiles(tile: torch.Tensor, draws: int, seed: int = 0) -> torch.Tensor:
    """``[draws, M]`` long: how many times each cell is in each bootstrap sample, which draws as many tiles as
    there are, with replacement, and takes every cell of each drawn tile (a tile drawn twice counts twice)."""
    tiles, index = torch.unique(tile, return_inverse=True)
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randint(len(tiles), (draws, len(tiles)), generator=generator)
    per_tile = torch.zeros(draws, len(tiles), dtype=torch.long).scatter_add_(1, picked, torch.ones_like(picked))
    return per_tile[:, index]


def weighted_ap(scores: torch.Tensor, labels: torch.Tensor, copies: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """``[D]``: the AP (x 100) of each sample of ``copies`` [D, M] (how many times each cell is in it), equal to
    ``average_precision`` of the cells repeated that many times. The order by score is the same in every sample,
    so it is sorted once. The w copies of a positive cell after R cells of which H positives have precisions
    (H + k) / (R + k), k = 1..w, whose sum is w - (R - H) (digamma(R + w + 1) - digamma(R + 1)). ``chunk``
    samples at a time keep the temporaries small."""
    order = torch.argsort(scores, descending=True, stable=True)
    y = labels[order].double()
    out = []
    for start in range(0, len(copies), chunk):
        w = copies[start:start + chunk, order].double()
        ranks_before = w.cumsum(1) - w
        misses_before = ranks_before - ((w * y).cumsum(1) - w * y)
        precisions = w - misses_before * (torch.digamma(ranks_before + w + 1) - torch.digamma(ranks_before + 1))
        out.append(100 * (y * precisions).sum(1) / (w * y).sum(1))
    return torch.cat(out)


def tile_bootstrap(model: Dict, baseline: Dict, draws: int = 500, seed: int = 0,
                   cache: Optional[Dict] = None) -> Dict:
    """The difference model - baseline on the test tiles as they are (``difference``), and over ``draws`` resamples
    of the tiles drawn with ``seed``, the same for both (``resampled`` [draws], ``tile_sd`` their std). Both must
    score the same cells of the same tiles. ``cache``: the resampled APs of each file, kept for the next comparison
    it is in."""
    for key in ("labels", "tile"):
        if not torch.equal(model[key], baseline[key]):
            raise ResultsError(f"{model['path']} and {baseline['path']}: not scored on the same test cells "
                               f"({key} differ): they cannot be paired")
    if model["files"] != baseline["files"]:
        raise ResultsError(f"{model['path']} and {baseline['path']}: different test tiles")
    cache = {} if cache is None else cache
    labels = model["labels"]

    def resampled(scored):
        key = (scored["path"], draws, seed)
        if key not in cache:
            copies = resample_tiles(scored["tile"], draws, seed)
            cache[key] = sum(weighted_ap(row, labels, copies) for row in scored["scores"]) / len(scored["scores"])
        return cache[key]

    every = torch.arange(len(labels))
    differences = resampled(model) - resampled(baseline)
    return {"difference": mean_ap(model["scores"], labels, every) - mean_ap(baseline["scores"], labels, every),
            "resampled": differences, "tile_sd": float(differences.std())}


def decompose(model_dir: str, baseline_dir: str, seeds: Sequence[int], draws: int = 500,
              cache: Optional[Dict] = None) -> Dict:
    """The per-seed differences of two probed models and their spread (``sd``, ``half_width`` of the 95%
    interval); the test tiles' sd of one seed's difference (``tile_sd``, root mean square over seeds), the share
    of the spread's variance it may explain at most (``tile_share``) and the half-width that would remain at least
    without it (``half_width_without_tiles``); the tiles' sd of the mean difference (``mean_tile_sd``). Every
    seed is resampled with the same draws (``ResultsError`` when the test sets differ)."""
    from scipy import stats
    if len(seeds) < 2:
        raise ResultsError("the spread of the differences needs at least 2 seeds")
    per_seed = {s: tile_bootstrap(load_scores(model_dir, s), load_scores(baseline_dir, s), draws, 0, cache)
                for s in seeds}
    differences = [r["difference"] for r in per_seed.values()]
    n = len(differences)
    mean = sum(differences) / n
    total = sum((d - mean) ** 2 for d in differences) / (n - 1)
    tiles = sum(r["tile_sd"] ** 2 for r in per_seed.values()) / n
    t = stats.t.ppf(0.975, n - 1) / math.sqrt(n)
    mean_tile_sd = float(torch.stack([r["resampled"] for r in per_seed.values()]).mean(0).std())
    return {"seeds": list(seeds), "per_seed": {s: {k: v for k, v in r.items() if k != "resampled"}
                                               for s, r in per_seed.items()},
            "sd": math.sqrt(total), "tile_sd": math.sqrt(tiles),
            "tile_share": tiles / total if total > 0 else float("nan"),
            "half_width": t * math.sqrt(total), "half_width_without_tiles": t * math.sqrt(max(total - tiles, 0.0)),
            "mean_tile_sd": mean_tile_sd}


def decompositions(comparisons: Sequence[Dict], run_dirs: Dict[str, str], draws: int) -> List[Dict]:
    """``decompose`` of every dense-probe comparison (``collect_results``' rows: model, baseline, metric, seeds)
    with at least two seeds; ``run_dirs``: model name -> its folder."""
    cache: Dict = {}
    return [{"model": c["model"], "baseline": c["baseline"],
             **decompose(run_dirs[c["model"]], run_dirs[c["baseline"]], c["seeds"], draws, cache)}
            for c in comparisons if c["metric"] == "dense/AP" and c["n"] > 1]


def to_markdown(rows: Sequence[Dict], draws: int) -> str:
    lines = [f"| model | baseline | n | sd of the per-seed differences | test tiles' sd of one seed's difference "
             f"({draws} resamples) | its share of the variance, at most | 95% half-width | half-width with a "
             "repeatable pretraining, at least | test tiles' sd of the mean difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['baseline']} | {len(r['seeds'])} | {r['sd']:.2f} | {r['tile_sd']:.2f} | "
                     f"{min(100 * r['tile_share'], 100):.0f}% | {r['half_width']:.2f} | "
                     f"{r['half_width_without_tiles']:.2f} | {r['mean_tile_sd']:.2f} |")
    return "\n".join(lines) + "\n"
