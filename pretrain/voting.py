"""The transformation between two views, voted for in Hough space and refined: positives from geometry.

Two views of one image are related by ONE transformation: each is an axis-aligned crop, resized and maybe
mirrored, so a point at ``(u, v)`` cells from the centre of the query grid lies at
``(scale_x * u + shift_x, scale_y * v + shift_y)`` in the key grid, with ``scale_x < 0`` when exactly one view
is mirrored and ``scale_x != scale_y`` when the crops have different aspect ratios. Matching cell by cell
throws that away. Here every candidate pair votes for the transformations that would explain it, the pair of
views takes the transformation with most support, a few weighted least-squares steps over the pairs that agree
with it make it continuous (sub-cell shifts, anisotropic scales), and each query cell's positive is the key cell
that contains its image under that transformation.

The voting runs on any backbone stage: a finer stage (C3, 28 x 28 at 224 px) locates the transformation to a
quarter of a C5 cell, and the result is applied to the C5 cells that training uses.

Shapes: ``fq`` ``[N, C, Hq, Wq]``, ``fk`` ``[N, C, Hk, Wk]``; ``Lq = Hq*Wq``; ``K`` candidates per query cell.
"""
import math
from typing import NamedTuple, Sequence, Tuple

import torch
from torch import Tensor


class ViewTransform(NamedTuple):
    """Per pair of views ``[N]``: key position = scale * query position + shift, in cells of the voting grid
    measured from the grid centre (x: columns, y: rows)."""
    scale_x: Tensor
    shift_x: Tensor
    scale_y: Tensor
    shift_y: Tensor


def cell_offsets(grid: Tuple[int, int], device=None) -> Tuple[Tensor, Tensor]:
    """``(u, v)`` ``[H*W]``: every cell centre's column and row offset from the grid centre, in cells."""
    h, w = grid
    v, u = torch.meshgrid(torch.arange(h, device=device) + 0.5 - h / 2, torch.arange(w, device=device) + 0.5 - w / 2,
                          indexing="ij")
    return u.reshape(-1).float(), v.reshape(-1).float()


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
                   refine: Sequence[float] = (1.5, 1.0, 0.75), return_votes: bool = False):
    """The transformation of each pair of views from the cosine similarities ``sim`` ``[N, Lq, Lk]``.

    Each query cell's ``candidates`` most similar key cells vote with weight max(cos, 0)^power for the
    translation that maps it there, in one slice per (scale, mirror); Hough grids have one bin per key cell,
    smoothed by a Gaussian of ``sigma`` cells; the strongest bin gives the initial transformation. Each radius
    of ``refine`` (in key cells) then refits x and y separately by weighted least squares over the candidate
    pairs lying within that radius of where the current transformation maps their query cell. With
    ``return_votes``, also the smoothed Hough grid of each pair's winning slice ``[N, bins_y, bins_x]``.
    """
    from .matching import smooth  # the Hough grids' smoothing (one place for it)
    n, lq, lk = sim.shape
    device = sim.device
    k = lk if candidates <= 0 else min(candidates, lk)
    value, index = sim.topk(k, dim=2)                                         # [N, Lq, K]
    weight = value.clamp(min=0).pow(power)
    uq, vq = cell_offsets(grid_q, device)
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
