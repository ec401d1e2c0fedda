"""HoughCL's matcher as the paper describes it: probabilistic Hough matching of two dense feature maps.

Every candidate pair (i, j) of a query cell and a key cell casts a vote a(i, j) (its appearance similarity, made
selective) for the transformation that maps query cell i onto key cell j; the votes of all pairs of one pair of
views are summed into a Hough space H and smoothed; a pair's confidence is its own vote times the support H
gives to its transformation, ``conf(i, j) = a(i, j) * sum_slices H(bin(i, j))``, and each query cell's positive
is its key cell of highest confidence (probabilistic Hough matching, Cho et al. 2015; regularised as in
Hyperpixel Flow). A match must therefore look alike AND agree with the geometry of the other matches: the
confidence is per pair, and appearance still picks the key cell (docs/method.md, section 3).

The transformation space is a stack of "slices", one per (scale s, horizontal flip f); in each slice a match
votes for the translation ``t = c_k(j) - (f*s*u_i, s*v_i)`` in key cell units, cell centres measured from the
grid centre. "translation" is the single slice (1, +1); "similarity" adds scales and mirroring, which random
resized crops and flips produce between the two views of an image.

All functions are pure and batched over images (no Python loop over images or matches). Shapes: ``fq`` is
``[N, C, Hq, Wq]``, ``fk`` is ``[N, C, Hk, Wk]``; ``Lq = Hq*Wq`` and ``Lk = Hk*Wk``; a match is
``LongTensor[N, Lq]`` indexing the row-major flattened key grid.
"""
import dataclasses
import functools
import math
from typing import Sequence, Tuple

import torch
from torch import Tensor

SPACES = ("translation", "similarity")
VOTES = ("power", "softmax", "softmax2", "cosine")
DEFAULT_SCALES = tuple(2.0 ** (k / 2) for k in range(-2, 3))


@dataclasses.dataclass(frozen=True)
class HoughOptions:
    """How the paper's Hough matching votes (``MODEL.HOUGH``). The defaults are the measured choices of
    docs/method.md section 3a: centred features, selective power-3 votes, similarity+flip slices, smoothing."""
    space: str = "similarity"        # translation | similarity (scales x horizontal flip)
    center: bool = True              # remove each image's mean feature before the cosine
    vote: str = "power"              # power | softmax | softmax2 | cosine
    power: float = 3.0
    temperature: float = 0.05        # softmax votes
    sigma: float = 1.0               # Gaussian smoothing of the Hough space, in key cells (0: none)
    normalize_bins: bool = False     # divide each bin by how many candidate pairs can fall in it
    scales: Tuple[float, ...] = DEFAULT_SCALES

    CHOICES = {"space": SPACES, "vote": VOTES}


def cell_offsets(grid: Tuple[int, int], device=None, dtype=torch.float32) -> Tuple[Tensor, Tensor]:
    """``(u, v)`` ``[H*W]``: every cell centre's column and row offset from the grid centre, in cells."""
    h, w = grid
    v, u = torch.meshgrid(torch.arange(h, device=device, dtype=dtype) + 0.5 - h / 2,
                          torch.arange(w, device=device, dtype=dtype) + 0.5 - w / 2, indexing="ij")
    return u.reshape(-1), v.reshape(-1)


def similarity(fq: Tensor, fk: Tensor, center: bool = False, eps: float = 1e-12) -> Tensor:
    """Cosine similarity of every query cell with every key cell: ``[N, Lq, Lk]``, always within [-1, 1].

    With ``center``, each image's features first lose their mean over locations: ReLU features share a large
    common component that makes every cosine high. The centred copy is made explicitly (a rank-1 expansion of
    the raw product cancels catastrophically on near-uniform maps); a cell whose centred feature is negligible
    against its raw one (a flat image region) has no direction, and its cosines are 0, not noise.
    """
    q, k = fq.flatten(2).float(), fk.flatten(2).float()               # [N, C, Lq], [N, C, Lk]
    if center:
        q_raw, k_raw = torch.linalg.vector_norm(q, dim=1), torch.linalg.vector_norm(k, dim=1)
        q, k = q - q.mean(2, keepdim=True), k - k.mean(2, keepdim=True)
    q_norm, k_norm = torch.linalg.vector_norm(q, dim=1), torch.linalg.vector_norm(k, dim=1)   # [N, Lq], [N, Lk]
    if center:
        # float32 leaves about 1e-7 of the raw norm as rounding noise in the centred vector; below 1e-5 of it,
        # the direction is noise.
        q_norm = torch.where(q_norm > 1e-5 * q_raw, q_norm, torch.full_like(q_norm, float("inf")))
        k_norm = torch.where(k_norm > 1e-5 * k_raw, k_norm, torch.full_like(k_norm, float("inf")))
    q = q / q_norm.clamp(min=eps).unsqueeze(1)
    k = k / k_norm.clamp(min=eps).unsqueeze(1)
    return torch.bmm(q.transpose(1, 2), k).clamp_(-1.0, 1.0)


def votes(sim: Tensor, vote: str = "power", power: float = 3.0, temperature: float = 0.05) -> Tensor:
    """Turn cosines ``[N, Lq, Lk]`` into selective, non-negative votes of the same shape.

    ``power``: max(cos, 0)^p. ``softmax``: softmax over key cells at a temperature. ``softmax2``: the
    product of the softmaxes over key cells and over query cells (a soft mutual nearest neighbour).
    ``cosine``: max(cos, 0) (unselective; kept as the naive baseline).
    """
    if vote == "power":
        return sim.clamp(min=0).pow_(power)
    if vote == "cosine":
        return sim.clamp(min=0)
    if vote == "softmax":
        return torch.softmax(sim / temperature, dim=2)
    if vote == "softmax2":
        return torch.softmax(sim / temperature, dim=2) * torch.softmax(sim / temperature, dim=1)
    raise ValueError(f"unknown vote {vote!r}; expected one of {VOTES}")


def slices_for(space: str, scales: Sequence[float] = DEFAULT_SCALES) -> Tuple[Tuple[float, int], ...]:
    """The (scale, flip) slices of a transformation space."""
    if space == "translation":
        return ((1.0, 1),)
    if space == "similarity":
        return tuple((float(s), f) for f in (1, -1) for s in scales)
    raise ValueError(f"unknown Hough space {space!r}; expected one of {SPACES}")


@functools.lru_cache(maxsize=64)
def vote_bins(grid_q: Tuple[int, int], grid_k: Tuple[int, int], slices: Tuple[Tuple[float, int], ...],
              device: str = "cpu") -> Tuple[Tensor, int, int]:
    """Hough bin of every candidate pair in every slice, built once per shape and cached.

    Returns ``(bins, bins_y, bins_x)``: ``bins`` is ``[S, Lq*Lk]`` long, indexing a ``bins_y x bins_x``
    translation grid (one bin per key cell of translation) shared by all slices.
    """
    uq, vq = cell_offsets(grid_q, dtype=torch.float64)
    uk, vk = cell_offsets(grid_k, dtype=torch.float64)
    scale = torch.tensor([s for s, _ in slices], dtype=torch.float64).view(-1, 1, 1)
    flip = torch.tensor([f for _, f in slices], dtype=torch.float64).view(-1, 1, 1)
    tx = uk.view(1, 1, -1) - flip * scale * uq.view(1, -1, 1)      # [S, Lq, Lk]
    ty = vk.view(1, 1, -1) - scale * vq.view(1, -1, 1)
    # One bin per key cell of translation; the same origin in all slices so that one grid holds them all.
    bx = torch.floor(tx - tx.min() + 0.5 + 1e-9).long()
    by = torch.floor(ty - ty.min() + 0.5 + 1e-9).long()
    bins_y, bins_x = int(by.max()) + 1, int(bx.max()) + 1
    bins = (by * bins_x + bx).reshape(len(slices), -1)
    return bins.to(device), bins_y, bins_x


@functools.lru_cache(maxsize=32)
def _gaussian_matrix(size: int, sigma: float, device: str) -> Tensor:
    """``[size, size]`` matrix of a 1-D Gaussian filter (truncated at 2.5 sigma, zero padding): filtering a grid
    along an axis is one small matrix product, much faster than a one-channel convolution."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    offsets = torch.arange(size).view(-1, 1) - torch.arange(size).view(1, -1)   # out - in
    inside = offsets.abs() <= radius
    matrix = torch.where(inside, kernel[(offsets + radius).clamp(0, 2 * radius)], torch.zeros(()))
    return matrix.float().to(device)


def smooth(space: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing of ``[B, Y, X]`` Hough grids over their two translation axes."""
    if sigma <= 0:
        return space
    _, y, x = space.shape
    gy = _gaussian_matrix(y, float(sigma), str(space.device))
    gx = _gaussian_matrix(x, float(sigma), str(space.device))
    return torch.matmul(gy, torch.matmul(space, gx.T))


def hough_confidence(sim: Tensor, grid_q: Tuple[int, int], grid_k: Tuple[int, int],
                     opts: HoughOptions = HoughOptions()) -> Tensor:
    """Probabilistic Hough matching confidence ``conf(i, j) = a(i, j) * sum_slices H(bin(i, j))``.

    ``sim`` is ``[N, Lq, Lk]``; returns the same shape. Never materialises ``[N, Lq, Lk, slices]``: votes are
    scattered into all slices in one call from a broadcast view, and read back one slice at a time.
    """
    n, lq, lk = sim.shape
    a = votes(sim, opts.vote, opts.power, opts.temperature).reshape(n, 1, lq * lk)
    bins, by, bx = vote_bins(tuple(grid_q), tuple(grid_k), slices_for(opts.space, opts.scales), str(sim.device))
    s = bins.shape[0]
    index = bins.unsqueeze(0).expand(n, s, lq * lk)
    hough = a.new_zeros(n, s, by * bx).scatter_add_(2, index, a.expand(n, s, lq * lk))
    if opts.normalize_bins:
        # A bin near zero offset collects many more candidate pairs than one at the border; count them.
        count = torch.zeros(s, by * bx, device=sim.device).scatter_add_(1, bins, torch.ones_like(bins, dtype=a.dtype))
        hough = hough / count.clamp(min=1).unsqueeze(0)
    hough = smooth(hough.view(n * s, by, bx), opts.sigma).view(n, s, by * bx)
    # One slice at a time into two reused buffers: fresh [N, Lq*Lk] allocations per slice cost page faults.
    support = hough[:, 0].gather(1, bins[0].expand(n, lq * lk))
    if s > 1:
        buffer = torch.empty_like(support)
        for k in range(1, s):
            support += torch.gather(hough[:, k], 1, bins[k].expand(n, lq * lk), out=buffer)
    return support.mul_(a[:, 0]).view(n, lq, lk)


@torch.no_grad()
def hough_match(fq: Tensor, fk: Tensor, opts: HoughOptions = HoughOptions(), return_confidence: bool = False):
    """HoughCL: each query cell takes the key cell of highest Hough confidence. Returns ``[N, Lq]``, and with
    ``return_confidence`` also that confidence ``[N, Lq]``."""
    sim = similarity(fq, fk, center=opts.center)
    best = hough_confidence(sim, fq.shape[-2:], fk.shape[-2:], opts).max(dim=2)
    return (best.indices, best.values) if return_confidence else best.indices
