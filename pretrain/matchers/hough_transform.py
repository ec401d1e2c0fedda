"""``hough_transform``: estimated-geometry positives, an extension of this toolkit (not in the HoughCL paper).

Two views of one image are related by ONE transformation: each is an axis-aligned crop, resized and maybe
mirrored, so a point at ``(u, v)`` cells from the centre of the query grid lies at
``(scale_x * u + shift_x, scale_y * v + shift_y)`` in the key grid, with ``scale_x < 0`` when exactly one view
is mirrored and ``scale_x != scale_y`` when the crops have different aspect ratios. Here every candidate pair
votes for the transformations that would explain it, the pair of views takes the transformation with most
support, a few weighted least-squares steps over the pairs that agree with it make it continuous (sub-cell
shifts, anisotropic scales), and each query cell's positive is the key cell that contains its image under that
transformation. Appearance decides only the transformation, not any placed cell: this is an estimate of the
``geometric`` oracle (PixPro-like positives without the crop boxes), a different method from the paper's
per-pair Hough confidence (``pretrain/matchers/hough.py``).

The voting runs on any backbone stage: a finer stage (C3, 28 x 28 at 224 px) locates the transformation to a
quarter of a C5 cell, and the result is applied to the C5 cells that training uses.

Shapes: ``fq`` ``[N, C, Hq, Wq]``, ``fk`` ``[N, C, Hk, Wk]``; ``Lq = Hq*Wq``; ``K`` candidates per query cell.
"""
import dataclasses
import math
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.matchers.hough import DEFAULT_SCALES, cell_offsets, similarity, smooth

VOTE_LAYERS = ("layer2", "layer3", "layer4")
STRIDES = {"layer2": 8, "layer3": 16, "layer4": 32}  # of a torchvision ResNet: a view of S px gives ceil(S / stride)
OUTSIDE = ("argmax", "none")
# Fewer (pooled) voters per side than this leave the transformation ambiguous: on identical views of random
# features, 5 pooled voters per side place 62-79% of the cells right, 6 or more 93-100% (tests/pretrain).
MIN_VOTERS = 6


@dataclasses.dataclass(frozen=True)
class TransformOptions:
    """How the views' transformation is voted for and applied (``MODEL.HOUGH_TRANSFORM``). Defaults chosen on
    datasets/photos by ``tools/eval_matching.py --ablation`` (docs/results.md, "Matching at C5")."""
    space: str = "similarity"        # translation | similarity (scales x horizontal flip)
    center: bool = True              # remove each image's mean feature before the cosine
    power: float = 3.0               # votes: max(cos, 0)^power
    sigma: float = 1.0               # Gaussian smoothing of the Hough grids, in cells of the voting grid
    scales: Tuple[float, ...] = DEFAULT_SCALES
    layer: str = "layer2"            # the backbone stage whose features vote (layer4: C5 itself)
    candidates: int = 32             # the most similar key cells per query cell that vote (0: all)
    refine: Tuple[float, ...] = (1.5, 1.0, 0.75)  # least-squares radii, in cells of the voting grid
    query_pool: int = 2              # average-pool the query's voting features: fewer, cheaper voters
    # A query cell whose image falls outside the key view has no place under the transformation: "argmax"
    # gives it its most similar key cell, "none" leaves it without a positive (out of the dense loss).
    outside: str = "argmax"

    CHOICES = {"space": ("translation", "similarity"), "layer": VOTE_LAYERS, "outside": OUTSIDE}


class ViewTransform(NamedTuple):
    """Per pair of views ``[N]``: key position = scale * query position + shift, in cells of the voting grid
    measured from the grid centre (x: columns, y: rows)."""
    scale_x: Tensor
    shift_x: Tensor
    scale_y: Tensor
    shift_y: Tensor


def pooled_offsets(grid: Tuple[int, int], pool: int, device=None) -> Tuple[Tensor, Tensor]:
    """Cell offsets ``(u, v)`` ``[h*w]`` of the grid that ``avg_pool2d(x, pool)`` makes of an ``H x W`` grid,
    in cells of the UNPOOLED grid from its centre. Floor pooling drops the last rows/columns of an odd grid, so
    pooled cell k covers cells ``[pool*k, pool*k + pool)``: its centre is not ``pool`` times a centred offset."""
    h, w = grid
    v, u = torch.meshgrid(pool * (torch.arange(h // pool, device=device, dtype=torch.float32) + 0.5) - h / 2,
                          pool * (torch.arange(w // pool, device=device, dtype=torch.float32) + 0.5) - w / 2,
                          indexing="ij")
    return u.reshape(-1), v.reshape(-1)


def weighted_line(x: Tensor, y: Tensor, w: Tensor, fallback: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
    """Per image, the weighted least-squares line ``y = slope * x + intercept`` over all its pairs; ``x``, ``y``
    and ``w`` broadcast to ``[N, Lq, K]``. Images without weight (or a degenerate spread) keep ``fallback``."""
    total = w.sum((1, 2))
    safe = total.clamp(min=1e-12)
    mx, my = (w * x).sum((1, 2)) / safe, (w * y).sum((1, 2)) / safe
    dx, dy = x - mx.view(-1, 1, 1), y - my.view(-1, 1, 1)
    var = (w * dx * dx).sum((1, 2))
    slope = (w * dx * dy).sum((1, 2)) / var.clamp(min=1e-12)
    ok = (total > 1e-9) & (var > 1e-6 * total.clamp(min=1e-12))
    return torch.where(ok, slope, fallback[0]), torch.where(ok, my - slope * mx, fallback[1])


@torch.no_grad()
def vote_transform(sim: Tensor, grid_q: Tuple[int, int], grid_k: Tuple[int, int], scales: Sequence[float],
                   mirrored: bool = True, candidates: int = 16, power: float = 3.0, sigma: float = 1.0,
                   refine: Sequence[float] = (1.5, 1.0, 0.75), offsets_q: Optional[Tuple[Tensor, Tensor]] = None,
                   return_votes: bool = False):
    """The transformation of each pair of views from the cosine similarities ``sim`` ``[N, Lq, Lk]``.

    The query's voting cells lie at ``offsets_q`` (default: the cell centres of ``grid_q``), in cells of
    ``grid_q`` from its centre; pooled voters pass their own centres (``pooled_offsets``). Each query cell's
    ``candidates`` most similar key cells vote with weight max(cos, 0)^power for the translation that maps it
    there, in one slice per (scale, mirror); Hough grids have one bin per key cell, smoothed by a Gaussian of
    ``sigma`` cells; the strongest bin gives the initial transformation. Each radius of ``refine`` (in key cells)
    then refits x and y separately by weighted least squares over the candidate pairs lying within that radius
    of where the current transformation maps their query cell. With ``return_votes``, also the smoothed Hough
    grid of each pair's winning slice ``[N, bins_y, bins_x]``.
    """
    n, lq, lk = sim.shape
    device = sim.device
    k = lk if candidates <= 0 else min(candidates, lk)
    value, index = sim.topk(k, dim=2)                                         # [N, Lq, K]
    weight = value.clamp(min=0).pow(power)
    uq, vq = offsets_q if offsets_q is not None else cell_offsets(grid_q, device)
    uk, vk = cell_offsets(grid_k, device)
    xk, yk = uk[index], vk[index]                                             # [N, Lq, K]
    slices = [(s, f) for f in ((1, -1) if mirrored else (1,)) for s in scales]
    s = len(slices)
    sx = torch.tensor([a * f for a, f in slices], device=device).view(1, s, 1, 1)
    sy = torch.tensor([a for a, _ in slices], device=device).view(1, s, 1, 1)
    tx = xk.unsqueeze(1) - sx * uq.view(1, 1, -1, 1)                          # [N, S, Lq, K]
    ty = yk.unsqueeze(1) - sy * vq.view(1, 1, -1, 1)
    # Translations that leave any overlap lie within these limits; one bin per key cell, centred on zero.
    top = max(scales)
    lim_x, lim_y = math.ceil(grid_k[1] / 2 + top * grid_q[1] / 2), math.ceil(grid_k[0] / 2 + top * grid_q[0] / 2)
    bins_x, bins_y = 2 * lim_x + 1, 2 * lim_y + 1
    bx = (tx + lim_x).round().long().clamp(0, bins_x - 1)
    by = (ty + lim_y).round().long().clamp(0, bins_y - 1)
    flat = ((torch.arange(s, device=device).view(1, s, 1, 1) * bins_y + by) * bins_x + bx).reshape(n, -1)
    hough = weight.new_zeros(n, s * bins_y * bins_x)
    hough.scatter_add_(1, flat, weight.unsqueeze(1).expand(n, s, lq, k).reshape(n, -1))
    hough = smooth(hough.view(n * s, bins_y, bins_x), sigma).view(n, -1)
    peak = hough.argmax(1)
    slice_index, rest = peak // (bins_y * bins_x), peak % (bins_y * bins_x)
    scale_x, scale_y = sx.view(-1)[slice_index], sy.view(-1)[slice_index]
    shift_x = (rest % bins_x).float() - lim_x
    shift_y = torch.div(rest, bins_x, rounding_mode="floor").float() - lim_y
    for radius in refine:
        px = scale_x.view(-1, 1, 1) * uq.view(1, -1, 1) + shift_x.view(-1, 1, 1)
        py = scale_y.view(-1, 1, 1) * vq.view(1, -1, 1) + shift_y.view(-1, 1, 1)
        agree = weight * ((xk - px).square() + (yk - py).square() < radius * radius)
        scale_x, shift_x = weighted_line(uq.view(1, -1, 1), xk, agree, (scale_x, shift_x))
        scale_y, shift_y = weighted_line(vq.view(1, -1, 1), yk, agree, (scale_y, shift_y))
    t = ViewTransform(scale_x, shift_x, scale_y, shift_y)
    if return_votes:
        grids = hough.view(n, s, bins_y, bins_x)
        return t, grids[torch.arange(n, device=device), slice_index]
    return t


def transform_positives(t: ViewTransform, vote_grid_q: Tuple[int, int], vote_grid_k: Tuple[int, int],
                        grid_q: Tuple[int, int], grid_k: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """The key cell of ``grid_k`` containing each ``grid_q`` cell's image under ``t`` (found on the voting
    grids): ``index [N, Lq]``, and ``inside [N, Lq]`` (False where the image falls outside the key view)."""
    # Offsets scale with the grid: one voting cell of the query is grid_q / vote_grid_q cells of grid_q.
    rq_x, rq_y = grid_q[1] / vote_grid_q[1], grid_q[0] / vote_grid_q[0]
    rk_x, rk_y = grid_k[1] / vote_grid_k[1], grid_k[0] / vote_grid_k[0]
    u, v = cell_offsets(grid_q, t.scale_x.device)
    x = rk_x * (t.scale_x.view(-1, 1) * u.view(1, -1) / rq_x + t.shift_x.view(-1, 1))
    y = rk_y * (t.scale_y.view(-1, 1) * v.view(1, -1) / rq_y + t.shift_y.view(-1, 1))
    h, w = grid_k
    col, row = torch.floor(x + w / 2), torch.floor(y + h / 2)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    index = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).long()
    return index, inside


def grid_problem(grid: Tuple[int, int], opts: TransformOptions) -> Optional[str]:
    """Why a voting grid is too small for these options, or None."""
    voters = min(grid) // max(1, opts.query_pool)
    if voters >= MIN_VOTERS:
        return None
    return (f"MODEL.HOUGH_TRANSFORM: the {grid[0]} x {grid[1]} grid of {opts.layer}, pooled by QUERY_POOL "
            f"{opts.query_pool}, leaves {voters} voters per side (at least {MIN_VOTERS} needed to place the cells "
            f"reliably); use larger views (INPUT.SIZE), a finer LAYER or a smaller QUERY_POOL")


def input_problem(size: int, opts: TransformOptions) -> Optional[str]:
    """``grid_problem`` for the views of ``size`` px that INPUT.SIZE gives, before any image is read."""
    cells = -(-size // STRIDES[opts.layer])
    problem = grid_problem((cells, cells), opts)
    return problem and f"INPUT.SIZE {size}: {problem}"


def voting_features(fq: Tensor, fk: Tensor, views: Dict, layer: str) -> Tuple[Tensor, Tensor]:
    """The features the voting runs on: ``fq``/``fk`` themselves for layer4 (C5), otherwise the stage ``layer``
    of both views, which the encoders put in ``views["stages_q"]`` and ``views["stages_k"]``."""
    if layer == "layer4":
        return fq, fk
    try:
        return views["stages_q"][layer], views["stages_k"][layer]
    except KeyError:
        raise ValueError(f"MODEL.HOUGH_TRANSFORM.LAYER {layer}: the {layer} features of both views must be given "
                         "as views['stages_q'][layer] and views['stages_k'][layer]") from None


@torch.no_grad()
def transform_match(fq: Tensor, fk: Tensor, vote_q: Tensor, vote_k: Tensor,
                    opts: TransformOptions = TransformOptions(), details: bool = False):
    """The views' transformation voted for on ``vote_q``/``vote_k`` (``fq``/``fk`` themselves for layer4),
    applied to the cells of ``fq``/``fk``. Returns ``index [N, Lq]`` and ``inside [N, Lq]`` (the cells placed by
    the transformation; the others follow ``opts.outside``: their most similar key cell, or -1), with
    ``details`` also the Hough grid of the winning slice ``[N, bins_y, bins_x]``."""
    scales = opts.scales if opts.space == "similarity" else (1.0,)
    grid_vq, grid_vk = tuple(vote_q.shape[-2:]), tuple(vote_k.shape[-2:])
    offsets = None
    problem = grid_problem(grid_vq, opts)
    if problem:
        raise ValueError(problem)
    if opts.query_pool > 1:
        # Fewer voters, same geometry: offsets stay in cells of the unpooled voting grid.
        vote_q, offsets = F.avg_pool2d(vote_q, opts.query_pool), pooled_offsets(grid_vq, opts.query_pool, fq.device)
    voting_sim = similarity(vote_q, vote_k, center=opts.center)
    t, votes = vote_transform(voting_sim, grid_vq, grid_vk, scales, mirrored=opts.space == "similarity",
                              candidates=opts.candidates, power=opts.power, sigma=opts.sigma, refine=opts.refine,
                              offsets_q=offsets, return_votes=True)
    index, inside = transform_positives(t, grid_vq, grid_vk, tuple(fq.shape[-2:]), tuple(fk.shape[-2:]))
    fallback = (similarity(fq, fk, center=opts.center).argmax(dim=2) if opts.outside == "argmax"
                else torch.full_like(index, -1))
    index = torch.where(inside, index, fallback)
    return (index, inside, votes) if details else (index, inside)
