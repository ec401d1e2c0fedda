"""HoughCL's matcher: probabilistic Hough matching of two dense feature maps.

The default options ARE the published computation HoughCL builds on: regularised Hough matching (RHM) of
Hyperpixel Flow (Min et al., ICCV 2019; its public code, ``model/rhm.py``), placed on DenseCL's C5 grid. Every
candidate pair (i, j) of a query cell and a key cell casts a vote ``a(i, j) = max(cos(i, j), 0)^3`` for the
translation that maps query cell i onto key cell j, binned in a Hough space of pixel offsets whose bin size
RHM derives from the two images' sizes (``ncells`` = 8192 bins); the space is smoothed by RHM's fixed 7 x 7
Gaussian kernel; a pair's confidence is its own vote times the support of its bin, ``conf(i, j) = a(i, j) *
H(bin(i, j))``, and each query cell's positive is its key cell of highest confidence. A match must therefore
look alike AND agree with the geometry of the other matches (docs/method.md, section 3).

Everything else is a TOOLKIT OPTION, NOT IN THE REFERENCE, off by default: features centred per image
(``center``); more transformation "slices" than the single translation slice, a mirrored one (``space flip``)
or scales x mirroring (``space similarity``), in each of which a match votes for the translation
``t = c_k(j) - (f*s*u_i, s*v_i)``, summed or max-pooled over slices (``combine``); other vote functions
(``vote``); one bin per key cell of offset instead of RHM's pixel bins, with a Gaussian smoothing of ``sigma``
key cells (``bins cell``); bins divided by how many pairs can fall in them (``normalize_bins``).

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

SPACES = ("translation", "flip", "similarity")
VOTES = ("power", "softmax", "softmax2", "cosine")
BINS = ("rhm", "cell")
COMBINES = ("sum", "max")
DEFAULT_SCALES = tuple(2.0 ** (k / 2) for k in range(-2, 3))
# RHM's Hough space (hpf ``rhm.rhm``): 8192 bins over the two images' summed extents, a 7 x 7 Gaussian kernel.
RHM_NCELLS = 8192
RHM_KERNEL_SIDE = 7


@dataclasses.dataclass(frozen=True)
class HoughOptions:
    """How HoughCL's matcher votes (``MODEL.HOUGH``). The defaults are the reference computation (RHM at C5);
    every other value is a toolkit option, not in the reference (docs/method.md section 3b)."""
    space: str = "translation"       # reference: translation | toolkit options: flip (+ a mirrored slice),
    #                                  similarity (5 scales x mirroring)
    center: bool = False             # toolkit option: remove each image's mean feature before the cosine
    vote: str = "power"              # reference: power | toolkit options: softmax, softmax2, cosine
    power: float = 3.0               # reference: 3 (RHM's exponentiated cosine)
    temperature: float = 0.05        # softmax votes (toolkit option)
    bins: str = "rhm"                # reference: rhm (pixel bins, 7 x 7 kernel) | toolkit option: cell
    stride: int = 32                 # pixels between the matched cells (C5 of a ResNet: 32); rhm bins
    sigma: float = 0.0               # toolkit option, bins cell only: Gaussian smoothing in key cells (0: none)
    normalize_bins: bool = False     # toolkit option: divide each bin by how many candidate pairs can fall in it
    combine: str = "sum"             # toolkit option with several slices: sum | max of the slices' support
    scales: Tuple[float, ...] = DEFAULT_SCALES   # the similarity space's scale ratios (toolkit option)

    CHOICES = {"space": SPACES, "vote": VOTES, "bins": BINS, "combine": COMBINES}

    def __post_init__(self):
        if self.bins == "rhm" and self.sigma > 0:
            raise ValueError(f"MODEL.HOUGH.SIGMA = {self.sigma} smooths one-cell bins only: RHM bins have their own "
                             "7 x 7 kernel; set MODEL.HOUGH.BINS cell to smooth in key cells, or SIGMA 0.0")
        if self.stride <= 0:
            raise ValueError(f"MODEL.HOUGH.STRIDE = {self.stride} must be positive (pixels between cells; C5: 32)")

    def departures(self) -> Tuple[str, ...]:
        """The fields that differ from the reference (RHM at C5), as ``KEY value``: what a run adds of its own."""
        reference = HoughOptions()
        return tuple(f"{f.name.upper()} {getattr(self, f.name)}" for f in dataclasses.fields(self)
                     if getattr(self, f.name) != getattr(reference, f.name)
                     and not (f.name == "scales" and self.space != "similarity")
                     and not (f.name == "temperature" and not self.vote.startswith("softmax")))


def describe_options(opts: HoughOptions) -> str:
    """``reference (RHM at C5)``, or the toolkit options a run sets, named as such."""
    extra = opts.departures()
    return "reference (RHM at C5)" if not extra else "toolkit options, not in the reference: " + ", ".join(extra)


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
    """The (scale, flip) slices of a transformation space: the reference's single translation slice, or the
    toolkit's mirrored slice (``flip``) or scales x mirroring (``similarity``)."""
    if space == "translation":
        return ((1.0, 1),)
    if space == "flip":
        return ((1.0, 1), (1.0, -1))
    if space == "similarity":
        return tuple((float(s), f) for f in (1, -1) for s in scales)
    raise ValueError(f"unknown Hough space {space!r}; expected one of {SPACES}")


@functools.lru_cache(maxsize=64)
def vote_bins(grid_q: Tuple[int, int], grid_k: Tuple[int, int], slices: Tuple[Tuple[float, int], ...],
              device: str = "cpu") -> Tuple[Tensor, int, int]:
    """Toolkit option ``bins cell``: the Hough bin of every candidate pair in every slice, one bin per key cell
    of translation, built once per shape and cached.

    Returns ``(bins, bins_y, bins_x)``: ``bins`` is ``[S, Lq*Lk]`` long, indexing a ``bins_y x bins_x``
    translation grid shared by all slices.
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


def _rhm_axis(cells_q: int, cells_k: int, stride: int, scale: Tensor, flip: Tensor, cell_size: float) -> Tensor:
    """RHM's bin coordinate along one axis for every slice and pair: ``[S, Lq_axis, Lk_axis]`` float64.

    RHM places a cell at ``index * stride`` px (the centre of its receptive-field box) and votes for
    ``(image extent of the query - query point) + key point``, cut into bins of ``cell_size`` px. A toolkit slice
    first scales (and mirrors) the query point about its image's centre; the reference slice (1, +1) leaves it.
    """
    extent = cells_q * stride
    point_q = torch.arange(cells_q, dtype=torch.float64) * stride
    point_k = torch.arange(cells_k, dtype=torch.float64) * stride
    moved = extent / 2 + flip * scale * (point_q.view(1, -1, 1) - extent / 2)
    return torch.floor(((extent - moved) + point_k.view(1, 1, -1)) / cell_size)


@functools.lru_cache(maxsize=64)
def rhm_bins(grid_q: Tuple[int, int], grid_k: Tuple[int, int], slices: Tuple[Tuple[float, int], ...],
             stride: int = 32, device: str = "cpu") -> Tuple[Tensor, int, int]:
    """The reference's Hough bins (hpf ``rhm.build_hspace`` and ``rhm.hspace_bin_ids``) for grids whose cells are
    ``stride`` px apart, the images taken as the grids' extents (``cells * stride`` px). Same return as
    ``vote_bins``. The space spans the two extents summed, in square bins of ``sqrt(area / 8192)`` px (about 5 px
    for two 224 px views); at C5 (cells 32 px apart) two different offsets never share a bin, nor does the 7 x 7
    kernel mix them. Slices other than the reference's may vote below zero: their bins are shifted to fit.
    """
    (hq, wq), (hk, wk) = grid_q, grid_k
    width, height = (wq + wk) * stride, (hq + hk) * stride
    cell_size = math.sqrt(width * height / RHM_NCELLS)
    scale = torch.tensor([s for s, _ in slices], dtype=torch.float64).view(-1, 1, 1)
    flip = torch.tensor([f for _, f in slices], dtype=torch.float64).view(-1, 1, 1)
    bx = _rhm_axis(wq, wk, stride, scale, flip, cell_size)                  # [S, wq, wk]
    by = _rhm_axis(hq, hk, stride, scale, torch.ones_like(flip), cell_size)  # [S, hq, hk]
    bx, by = (b.long() - min(0, int(b.min())) for b in (bx, by))
    bins_x = max(int(width / cell_size) + 1, int(bx.max()) + 1)
    bins_y = max(int(height / cell_size) + 1, int(by.max()) + 1)
    s = len(slices)
    # Row-major cells: query cell i = (iy, ix), key cell j = (jy, jx); the pair's bin is by[iy, jy] * X + bx[ix, jx].
    bins = (by.view(s, hq, 1, hk, 1) * bins_x + bx.view(s, 1, wq, 1, wk)).reshape(s, -1)
    return bins.to(device), bins_y, bins_x


def gaussian_taps(sigma: float) -> Tuple[float, ...]:
    """A normalised 1-D Gaussian in bins, truncated at 2.5 sigma (toolkit smoothing, ``bins cell``)."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    weights = [math.exp(-0.5 * (x / sigma) ** 2) for x in range(-radius, radius + 1)]
    return tuple(w / sum(weights) for w in weights)


def rhm_taps(side: int = RHM_KERNEL_SIDE) -> Tuple[float, ...]:
    """One axis of RHM's kernel (hpf ``geometry.gaussian2d``: sigma = side / 2 / 2.354 bins); the 2-D kernel,
    normalised over its ``side x side`` taps, is the outer product of two of these."""
    variance = (side / 2 / 2.354) ** 2
    half = (side - 1) // 2
    weights = [math.exp(-x * x / 2 / variance) for x in range(-half, half + 1)]
    return tuple(w / sum(weights) for w in weights)


@functools.lru_cache(maxsize=32)
def _filter_matrix(size: int, taps: Tuple[float, ...], device: str) -> Tensor:
    """``[size, size]`` matrix of a symmetric 1-D filter with zero padding: filtering a grid along an axis is one
    small matrix product, much faster than a one-channel convolution."""
    radius = len(taps) // 2
    kernel = torch.tensor(taps, dtype=torch.float64)
    offsets = torch.arange(size).view(-1, 1) - torch.arange(size).view(1, -1)   # out - in
    inside = offsets.abs() <= radius
    matrix = torch.where(inside, kernel[(offsets + radius).clamp(0, 2 * radius)], torch.zeros((), dtype=torch.float64))
    return matrix.float().to(device)


def filter_grids(space: Tensor, taps: Tuple[float, ...]) -> Tensor:
    """Separable filtering of ``[B, Y, X]`` Hough grids over their two translation axes with ``taps``."""
    _, y, x = space.shape
    gy, gx = _filter_matrix(y, taps, str(space.device)), _filter_matrix(x, taps, str(space.device))
    return torch.matmul(gy, torch.matmul(space, gx.T))


def smooth(space: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing of ``[B, Y, X]`` Hough grids, ``sigma`` in bins (0: none)."""
    return space if sigma <= 0 else filter_grids(space, gaussian_taps(float(sigma)))


def hough_confidence(sim: Tensor, grid_q: Tuple[int, int], grid_k: Tuple[int, int],
                     opts: HoughOptions = HoughOptions()) -> Tensor:
    """Probabilistic Hough matching confidence ``conf(i, j) = a(i, j) * H(bin(i, j))`` (with several slices, the
    sum or max of the slices' support). ``sim`` is ``[N, Lq, Lk]``; returns the same shape. Never materialises
    ``[N, Lq, Lk, slices]``: votes are scattered into all slices in one call from a broadcast view, and read back
    one slice at a time.
    """
    n, lq, lk = sim.shape
    a = votes(sim, opts.vote, opts.power, opts.temperature).reshape(n, 1, lq * lk)
    slices = slices_for(opts.space, opts.scales)
    if opts.bins == "rhm":
        bins, by, bx = rhm_bins(tuple(grid_q), tuple(grid_k), slices, int(opts.stride), str(sim.device))
        taps = rhm_taps()
    else:
        bins, by, bx = vote_bins(tuple(grid_q), tuple(grid_k), slices, str(sim.device))
        taps = gaussian_taps(float(opts.sigma)) if opts.sigma > 0 else None
    s = bins.shape[0]
    index = bins.unsqueeze(0).expand(n, s, lq * lk)
    hough = a.new_zeros(n, s, by * bx).scatter_add_(2, index, a.expand(n, s, lq * lk))
    if opts.normalize_bins:
        # A bin near zero offset collects many more candidate pairs than one at the border; count them.
        count = torch.zeros(s, by * bx, device=sim.device).scatter_add_(1, bins, torch.ones_like(bins, dtype=a.dtype))
        hough = hough / count.clamp(min=1).unsqueeze(0)
    if taps is not None:
        hough = filter_grids(hough.view(n * s, by, bx), taps).view(n, s, by * bx)
    # One slice at a time into two reused buffers: fresh [N, Lq*Lk] allocations per slice cost page faults.
    support = hough[:, 0].gather(1, bins[0].expand(n, lq * lk))
    if s > 1:
        buffer = torch.empty_like(support)
        for k in range(1, s):
            other = torch.gather(hough[:, k], 1, bins[k].expand(n, lq * lk), out=buffer)
            support = support.add_(other) if opts.combine == "sum" else torch.maximum(support, other, out=support)
    return support.mul_(a[:, 0]).view(n, lq, lk)


@torch.no_grad()
def hough_match(fq: Tensor, fk: Tensor, opts: HoughOptions = HoughOptions(), return_confidence: bool = False):
    """HoughCL: each query cell takes the key cell of highest Hough confidence. Returns ``[N, Lq]``, and with
    ``return_confidence`` also that confidence ``[N, Lq]``."""
    sim = similarity(fq, fk, center=opts.center)
    best = hough_confidence(sim, fq.shape[-2:], fk.shape[-2:], opts).max(dim=2)
    return (best.indices, best.values) if return_confidence else best.indices
