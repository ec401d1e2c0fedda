"""Choosing a positive key cell for every query cell: DenseCL's argmax and HoughCL's Hough voting.

All functions are pure and batched over images (no Python loop over images or matches) and build no
autograd graph: positives are picked, not learned.

Shapes: ``fq`` is ``[N, C, Hq, Wq]``, ``fk`` is ``[N, C, Hk, Wk]``; ``Lq = Hq*Wq`` and ``Lk = Hk*Wk``.
A match result is ``LongTensor[N, Lq]`` indexing the row-major flattened key grid.

Hough matching (probabilistic Hough matching, Cho et al. 2015; regularised as in Hyperpixel Flow):
every candidate pair (i, j) casts a vote a(i, j) for the transformation that maps query cell i onto key
cell j; votes are summed per image pair into a Hough space H, smoothed, and a pair's confidence is its own
vote times the support H gives to its transformation. A match must therefore look alike AND agree with the
geometry of the other matches of the same pair of views.

The transformation space is a stack of "slices", one per (scale s, horizontal flip f); in each slice a
match votes for the translation ``t = c_k(j) - (f*s*u_i, s*v_i)`` in key cell units, cell centres measured
from the grid centre. "translation" is the single slice (1, +1); "similarity" adds scales and mirroring,
which random resized crops and flips produce between the two views of an image.
"""
import dataclasses
import functools
import math
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .geometry import threshold_positives, true_partners

SPACES = ("translation", "similarity")
VOTES = ("power", "softmax", "softmax2", "cosine")
SELECTS = ("confidence", "transform")
VOTE_LAYERS = ("layer2", "layer3", "layer4")
DEFAULT_SCALES = tuple(2.0 ** (k / 2) for k in range(-2, 3))


@dataclasses.dataclass(frozen=True)
class HoughOptions:
    """How Hough matching votes (``MODEL.HOUGH`` of the pretraining config)."""
    space: str = "similarity"
    center: bool = True
    vote: str = "power"
    power: float = 3.0
    temperature: float = 0.05
    sigma: float = 1.0
    normalize_bins: bool = False
    scales: Tuple[float, ...] = DEFAULT_SCALES
    # "confidence": each query cell takes its key cell of highest Hough confidence (on the matched grid);
    # "transform": the pair of views takes the transformation with most votes (on the features of ``layer``),
    # refined, and each query cell the key cell that contains its image under it (pretrain/voting.py).
    select: str = "transform"
    layer: str = "layer2"
    candidates: int = 32
    refine: Tuple[float, ...] = (1.5, 1.0, 0.75)
    query_pool: int = 2

    @classmethod
    def from_cfg(cls, node) -> "HoughOptions":
        return cls(space=node.SPACE, center=node.CENTER, vote=node.VOTE, power=node.POWER,
                   temperature=node.TEMPERATURE, sigma=node.SIGMA, normalize_bins=node.NORMALIZE_BINS,
                   scales=tuple(node.SCALES), select=node.SELECT, layer=node.LAYER, candidates=node.CANDIDATES,
                   refine=tuple(node.REFINE), query_pool=node.QUERY_POOL)


def similarity(fq: Tensor, fk: Tensor, center: bool = False, eps: float = 1e-12) -> Tensor:
    """Cosine similarity of every query cell with every key cell: ``[N, Lq, Lk]``.

    With ``center``, each image's features first lose their mean over locations: ReLU features share a large
    common component that makes every cosine high. Computed from ONE product of the raw features plus rank-1
    corrections, so that no normalised or centred copy of the ``[N, C, L]`` feature maps is ever made:
    (q - mq).(k - mk) = q.k - q.mk - mq.k + mq.mk, and |q - mq|^2 = |q|^2 - 2 q.mq + |mq|^2.
    """
    q, k = fq.flatten(2).float(), fk.flatten(2).float()               # [N, C, Lq], [N, C, Lk] (views if float)
    dot = torch.bmm(q.transpose(1, 2), k)                              # [N, Lq, Lk]
    q_sq = torch.linalg.vector_norm(q, dim=1).square()                # [N, Lq], a reduction: no [N, C, L] temp
    k_sq = torch.linalg.vector_norm(k, dim=1).square()
    if center:
        mq, mk = q.mean(2), k.mean(2)                                  # [N, C]
        means = torch.stack([mq, mk], dim=1)                           # [N, 2, C]
        q_m, k_m = torch.bmm(means, q), torch.bmm(means, k)            # [N, 2, Lq]: q.mq, q.mk; [N, 2, Lk]
        mq_mk = (mq * mk).sum(1).view(-1, 1, 1)
        dot = dot.sub_(q_m[:, 1].unsqueeze(2)).sub_(k_m[:, 0].unsqueeze(1)).add_(mq_mk)
        q_sq = q_sq - 2 * q_m[:, 0] + (mq * mq).sum(1, keepdim=True)
        k_sq = k_sq - 2 * k_m[:, 1] + (mk * mk).sum(1, keepdim=True)
    inv_q = q_sq.clamp(min=eps).rsqrt()
    inv_k = k_sq.clamp(min=eps).rsqrt()
    return dot.mul_(inv_q.unsqueeze(2)).mul_(inv_k.unsqueeze(1))


@torch.no_grad()
def argmax_match(fq: Tensor, fk: Tensor) -> Tensor:
    """DenseCL: each query cell takes the most similar key cell. Returns ``[N, Lq]``."""
    return similarity(fq, fk).argmax(dim=2)


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
    (hq, wq), (hk, wk) = grid_q, grid_k
    vq, uq = torch.meshgrid(torch.arange(hq) + 0.5 - hq / 2, torch.arange(wq) + 0.5 - wq / 2, indexing="ij")
    vk, uk = torch.meshgrid(torch.arange(hk) + 0.5 - hk / 2, torch.arange(wk) + 0.5 - wk / 2, indexing="ij")
    uq, vq, uk, vk = (t.reshape(-1).double() for t in (uq, vq, uk, vk))
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
    ``return_confidence`` also that confidence ``[N, Lq]``.

    Defaults (centred features, selective power-3 votes, similarity+flip space) follow the matching-accuracy
    measurements in docs/results.md: naive voting on raw ReLU cosines is worse than argmax.
    """
    sim = similarity(fq, fk, center=opts.center)
    best = hough_confidence(sim, fq.shape[-2:], fk.shape[-2:], opts).max(dim=2)
    return (best.indices, best.values) if return_confidence else best.indices


@torch.no_grad()
def transform_match(fq: Tensor, fk: Tensor, vote_q: Tensor, vote_k: Tensor, opts: HoughOptions = HoughOptions(),
                    details: bool = False):
    """HoughCL with ``select="transform"``: the views' transformation voted for on ``vote_q``/``vote_k`` (the
    features of ``opts.layer``; ``fq``/``fk`` themselves for layer4), applied to the cells of ``fq``/``fk``.
    A query cell whose image falls outside the key view keeps the most similar key cell. Returns ``[N, Lq]``
    (with ``details`` also the ``[N, Lq]`` mask of the cells placed by the transformation and the Hough grid of
    the winning slice ``[N, bins_y, bins_x]``)."""
    from .voting import transform_positives, vote_transform
    scales = opts.scales if opts.space == "similarity" else (1.0,)
    sim = similarity(fq, fk, center=opts.center)
    if opts.query_pool > 1:
        # Fewer voters, same geometry: a pooled query cell is query_pool key cells wide.
        vote_q = torch.nn.functional.avg_pool2d(vote_q, opts.query_pool)
        scales = tuple(s * opts.query_pool for s in scales)
    voting_sim = sim if vote_q is fq and vote_k is fk else similarity(vote_q, vote_k, center=opts.center)
    grids = tuple(vote_q.shape[-2:]), tuple(vote_k.shape[-2:])
    t, votes = vote_transform(voting_sim, *grids, scales, mirrored=opts.space == "similarity",
                              candidates=opts.candidates, power=opts.power, sigma=opts.sigma, refine=opts.refine,
                              return_votes=True)
    index, inside = transform_positives(t, *grids, tuple(fq.shape[-2:]), tuple(fk.shape[-2:]))
    index = torch.where(inside, index, sim.argmax(dim=2))
    return (index, inside, votes) if details else index


class Positives(NamedTuple):
    """A matcher's choice of positive key cells: ``index [N, Lq]`` (-1 for none), or ``mask [N, Lq, Lk]`` for
    matchers that give several positives per query cell; the other field is None."""
    index: Optional[Tensor] = None
    mask: Optional[Tensor] = None

    def valid(self) -> Tensor:
        """``[N, Lq]`` bool: the query cells that have a positive."""
        return self.index >= 0 if self.index is not None else self.mask.any(-1)


@dataclasses.dataclass(frozen=True)
class MatchOptions:
    """Everything the matchers read: the Hough options and PixPro's distance threshold (``MODEL.THRESHOLD``)."""
    hough: HoughOptions = HoughOptions()
    threshold: float = 0.7

    @classmethod
    def from_cfg(cls, model_node) -> "MatchOptions":
        return cls(HoughOptions.from_cfg(model_node.HOUGH), float(model_node.THRESHOLD))


# name -> (fq, fk, views, opts) -> Positives. ``views`` holds each view's crop box and flip (box_q, flip_q,
# box_k, flip_k), which only the geometric matchers read. Config choices, the model, the docs and the tools
# all read this table, so that a matcher added here is available everywhere.
Matcher = Callable[[Tensor, Tensor, Dict[str, Tensor], MatchOptions], Positives]
MATCHERS: Dict[str, Matcher] = {}
METHODS: Dict[str, str] = {}  # matcher name -> the method it makes of the dense loss


def register(name: str, method: str):
    def add(fn: Matcher) -> Matcher:
        MATCHERS[name], METHODS[name] = fn, method
        return fn
    return add


def _geometry(fq: Tensor, fk: Tensor, views: Dict[str, Tensor]):
    return (views["box_q"], views["flip_q"], tuple(fq.shape[-2:]), views["box_k"], views["flip_k"],
            tuple(fk.shape[-2:]))


@register("argmax", "DenseCL")
def _argmax(fq, fk, views, opts):
    return Positives(index=argmax_match(fq, fk))


def vote_features(fq: Tensor, fk: Tensor, views: Dict[str, Tensor], layer: str) -> Tuple[Tensor, Tensor]:
    """The features Hough voting runs on: ``views["vote_q"/"vote_k"]`` (the encoders put the stage ``layer``
    there), or ``fq``/``fk`` themselves when voting on the matched features (layer4)."""
    if layer == "layer4":
        return fq, fk
    if "vote_q" not in views:
        raise ValueError(f"MODEL.HOUGH.LAYER {layer}: the {layer} features of both views must be given as "
                         "views['vote_q'] and views['vote_k']")
    return views["vote_q"], views["vote_k"]


@register("hough", "HoughCL")
def _hough(fq, fk, views, opts):
    h = opts.hough
    if h.select == "transform":
        return Positives(index=transform_match(fq, fk, *vote_features(fq, fk, views, h.layer), h))
    return Positives(index=hough_match(fq, fk, h))


@register("threshold", "PixPro-style")
def _threshold(fq, fk, views, opts):
    return Positives(mask=threshold_positives(*_geometry(fq, fk, views), ratio=opts.threshold))


@register("geometric", "geometric oracle")
def _geometric(fq, fk, views, opts):
    return Positives(index=true_partners(*_geometry(fq, fk, views)))
