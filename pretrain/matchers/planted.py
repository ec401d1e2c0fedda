"""Planted scenes: view pairs whose true correspondence is known exactly and whose appearance is ambiguous.

A scene is a grid of patches, each the copy of one of a few prototype features (clutter: the same look repeats
all over the image) plus a small component of its own; two views are crops of it (same-size shifted crops, or
independent random resized crops with horizontal flips, as DenseCL's augmentation), each view's grid cell is
the average of the scene over the cell (``roi_align``), plus noise. The crop boxes give every query cell's true
partner (``geometry.true_partners``), so matchers are compared on exact-cell accuracy where argmax, by looks
alone, must confuse repeated prototypes and only the geometry of the other matches can decide.

    python -m pretrain.matchers.planted --pairs 200 --seed 0      # the table of docs/method.md section 3b
"""
import argparse
import dataclasses
import math
from typing import Dict, List, Tuple

import torch
from torch import Tensor
from torchvision.ops import roi_align

from pretrain.data.geometry import matching_hits, true_partners
from pretrain.matchers import argmax_match
from pretrain.matchers.hough import HoughOptions, hough_match


@dataclasses.dataclass(frozen=True)
class SceneSetting:
    prototypes: int = 6          # distinct looks the patches repeat
    uniqueness: float = 0.35     # each patch's own component (the prototype's has norm about 1)
    noise: float = 0.25          # per-cell noise of each view (same scale)
    crops: str = "resized"       # "shifted": same-size crops at random offsets | "resized": random resized crops
    flips: bool = True           # each view mirrored with probability 1/2, independently
    scene: int = 224             # scene side, px
    patch: int = 16              # patch side, px
    grid: int = 7                # cells per view side (C5 of a 224 px view)
    channels: int = 64


SETTINGS = {
    "shifted crops": SceneSetting(crops="shifted", flips=False),
    "random resized crops + flips": SceneSetting(),
    "heavy clutter (3 prototypes)": SceneSetting(prototypes=3, uniqueness=0.2),
}


def make_scene(setting: SceneSetting, g: torch.Generator) -> Tensor:
    """``[1, C, S, S]``: every patch a prototype plus its own component."""
    side = setting.scene // setting.patch
    protos = torch.randn(setting.prototypes, setting.channels, generator=g) / setting.channels ** 0.5
    which = torch.randint(setting.prototypes, (side * side,), generator=g)
    own = setting.uniqueness * torch.randn(side * side, setting.channels, generator=g) / setting.channels ** 0.5
    patches = (protos[which] + own).t().reshape(1, setting.channels, side, side)
    return patches.repeat_interleave(setting.patch, 2).repeat_interleave(setting.patch, 3)


def crop_box(setting: SceneSetting, g: torch.Generator) -> Tensor:
    """One view's crop ``[4]`` (x0, y0, x1, y1) in scene px: RandomResizedCrop's draw (area 0.2-1, aspect 3/4-4/3)
    or, for ``shifted``, a crop of 5/7 of the scene at a random place."""
    s = setting.scene
    if setting.crops == "shifted":
        w = h = s * 5 / 7
    else:
        area = s * s * (0.2 + 0.8 * float(torch.rand((), generator=g)))
        log_ratio = torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
        ratio = math.exp(float(log_ratio))
        w, h = min(s, (area * ratio) ** 0.5), min(s, (area / ratio) ** 0.5)
    x0, y0 = float(torch.rand((), generator=g)) * (s - w), float(torch.rand((), generator=g)) * (s - h)
    return torch.tensor([x0, y0, x0 + w, y0 + h])


def view_cells(scene: Tensor, box: Tensor, flip: bool, setting: SceneSetting, g: torch.Generator) -> Tensor:
    """``[C, grid, grid]``: the scene averaged over each cell of the crop (4 x 4 samples a cell), mirrored, noisy."""
    rois = torch.cat([torch.zeros(1), box]).view(1, 5)
    cells = roi_align(scene, rois, (setting.grid, setting.grid), 1.0, sampling_ratio=4, aligned=True)[0]
    if flip:
        cells = cells.flip(-1)
    return cells + setting.noise * torch.randn(cells.shape, generator=g) / setting.channels ** 0.5


def planted_pairs(setting: SceneSetting, pairs: int, seed: int) -> Dict[str, Tensor]:
    """``pairs`` view pairs of fresh scenes: ``fq``, ``fk`` ``[P, C, g, g]``, ``truth [P, g*g]``, ``mirrored [P]``."""
    g = torch.Generator().manual_seed(seed)
    fq, fk, truth, mirrored = [], [], [], []
    grid = (setting.grid, setting.grid)
    for _ in range(pairs):
        scene = make_scene(setting, g)
        boxes = [crop_box(setting, g) for _ in range(2)]
        flips = [setting.flips and bool(torch.rand((), generator=g) < 0.5) for _ in range(2)]
        fq.append(view_cells(scene, boxes[0], flips[0], setting, g))
        fk.append(view_cells(scene, boxes[1], flips[1], setting, g))
        truth.append(true_partners(boxes[0].view(1, 4), torch.tensor([flips[0]]), grid,
                                   boxes[1].view(1, 4), torch.tensor([flips[1]]), grid)[0])
        mirrored.append(flips[0] != flips[1])
    return {"fq": torch.stack(fq), "fk": torch.stack(fk), "truth": torch.stack(truth),
            "mirrored": torch.tensor(mirrored)}


# The matchers compared: argmax, the reference and each toolkit option of `hough` alone (method.md section 3b).
VARIANTS = {
    "argmax (DenseCL)": None,
    "hough, reference (RHM at C5)": HoughOptions(),
    "hough + flip slice": HoughOptions(space="flip"),
    "hough + flip slice, max over slices": HoughOptions(space="flip", combine="max"),
    "hough + scale x flip slices": HoughOptions(space="similarity"),
    "hough + centred features": HoughOptions(center=True),
    "hough, cell bins smoothed (sigma 1 cell)": HoughOptions(bins="cell", sigma=1.0),
    "former default (similarity, centred, sigma 1)": HoughOptions(space="similarity", center=True, bins="cell",
                                                                  sigma=1.0),
}


def exact_accuracy(pred: Tensor, truth: Tensor, grid: int) -> float:
    hits, counted = matching_hits(pred, truth, grid, tolerance=0)
    return float(hits) / max(1, int(counted))


def planted_table(pairs: int, seed: int) -> List[Tuple[str, Dict[str, float]]]:
    """Exact-cell accuracy of every variant in every setting (all pairs; same-orientation and mirrored pairs)."""
    rows = {name: {} for name in VARIANTS}
    for label, setting in SETTINGS.items():
        data = planted_pairs(setting, pairs, seed)
        for name, opts in VARIANTS.items():
            pred = argmax_match(data["fq"], data["fk"]) if opts is None else hough_match(data["fq"], data["fk"], opts)
            rows[name][label] = exact_accuracy(pred, data["truth"], setting.grid)
            if setting.flips:
                for part, mask in (("same", ~data["mirrored"]), ("mirrored", data["mirrored"])):
                    rows[name][f"{label}: {part}"] = exact_accuracy(pred[mask], data["truth"][mask], setting.grid)
    return list(rows.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="exact-cell accuracy of the matchers on planted scenes")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = planted_table(args.pairs, args.seed)
    columns = list(rows[0][1])
    print("| matcher | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, values in rows:
        print(f"| {name} | " + " | ".join(f"{values[c]:.3f}" for c in columns) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
