"""Matching accuracy at C5 of the `hough` options on trained backbones, over several pretraining seeds and several
disjoint sets of view pairs, each option paired with the reference (docs/method.md section 3b).

A recipe departs from the reference only where this says an option is better: for every option, the exact-cell
accuracy minus the reference's on the same features of the same pairs, averaged over the pair sets of one
backbone, is one paired difference per pretraining seed; its 95% Student-t interval is over pretraining seeds
(``transfer.results.paired``). Same-orientation and mirrored pairs are reported apart.
"""
from typing import Dict, List, Optional, Sequence

from pretrain.evaluation.accuracy import ABLATION, matching_study
from pretrain.evaluation.report import ablation_variants
from transfer.results import paired

REFERENCE = "hough, reference (RHM at C5; default)"
PARTS = ("all", "same_orientation", "mirrored")


def hough_variants(config_file: str = "", opts: Sequence[str] = ()):
    """The `hough` rows of the ablation and argmax, on one config."""
    variants, _ = ablation_variants(config_file, opts)
    keep = [name for name, (matcher, _) in ABLATION.items() if matcher == "hough"] + ["argmax"]
    return {name: variants[name] for name in keep}


def mean(values: Sequence) -> Optional[float]:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def seeds_study(weights: Dict[int, str], images: str, pair_sets: Sequence[int], pairs: int = 64, size: int = 224,
                config_file: str = "", opts: Sequence[str] = ()) -> Dict:
    """``weights``: pretraining seed -> backbone. Returns per variant and part the exact-cell accuracy of every
    (pretraining seed, pair set), and the paired comparison with the reference over pretraining seeds."""
    variants = hough_variants(config_file, opts)
    cells: Dict[str, Dict[str, Dict[int, List[float]]]] = {v: {p: {} for p in PARTS} for v in variants}
    for seed, path in weights.items():
        for pair_seed in pair_sets:
            result = matching_study(images, path, None, pairs, pair_seed, size, "layer4", variants)
            for name in variants:
                for part in PARTS:
                    cells[name][part].setdefault(seed, []).append(result["exact"][name][part])
    # A pair set without a mirrored pair has no mirrored accuracy (None): the mean is over the sets that have one.
    per_seed = {name: {part: {seed: {"matching": {"exact": mean(v)}} for seed, v in parts[part].items()
                              if mean(v) is not None} for part in PARTS} for name, parts in cells.items()}
    comparisons = {name: {part: paired(per_seed[name][part], per_seed[REFERENCE][part], "matching/exact")
                          for part in PARTS} for name in variants if name != REFERENCE}
    return {"cells": cells, "per_seed": per_seed, "against_reference": comparisons,
            "settings": {"weights": weights, "pair_sets": list(pair_sets), "pairs": pairs, "size": size}}


def seeds_markdown(study: Dict) -> str:
    """One row per variant: mean exact-cell accuracy per part, and its paired difference with the reference."""
    def average(name, part):
        found = mean([v["matching"]["exact"] for v in study["per_seed"][name][part].values()])
        return "-" if found is None else f"{found:.3f}"

    def diff(c):
        if c is None or c["ci95"] is None:
            return "-"
        return f"{c['mean']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
    lines = ["| matcher and options | exact, all | same orientation | mirrored | - reference, all | "
             "- reference, same orientation | - reference, mirrored |", "|---|---|---|---|---|---|---|"]
    for name in study["per_seed"]:
        c = study["against_reference"].get(name, {p: None for p in PARTS})
        lines.append(f"| {name} | " + " | ".join(average(name, p) for p in PARTS) + " | "
                     + " | ".join(diff(c[p]) for p in PARTS) + " |")
    return "\n".join(lines) + "\n"
