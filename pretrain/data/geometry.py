"""Where the cells of a view's feature grid lie in the original image.

Every view records how it was cut from its image: a crop box ``(x0, y0, x1, y1)`` in original-image pixels
and a horizontal flip flag (the crop is resized to the view, then mirrored when the flag is set). From that
alone, without labels, we know which key cell truly corresponds to each query cell. This module turns that
into tensors: the oracle matcher, PixPro's distance-threshold positives and the matching accuracy of any
matcher are built on it.

Shapes: ``boxes`` is ``[N, 4]`` float, ``flips`` is ``[N]`` bool, a grid is ``(H, W)``; cells are numbered
row-major, ``index = row * W + col``.
"""
from typing import Tuple

import torch
from torch import Tensor

Grid = Tuple[int, int]


def cell_centres(boxes: Tensor, flips: Tensor, grid: Grid) -> Tensor:
    """Original-image ``(x, y)`` of every cell centre of an ``H x W`` grid laid over each view.

    Returns ``[N, H*W, 2]``.
    """
    h, w = grid
    boxes = boxes.float()
    # Cell centres in normalised view coordinates, in [0, 1].
    ys = (torch.arange(h, device=boxes.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=boxes.device, dtype=torch.float32) + 0.5) / w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    gx, gy = gx.reshape(1, -1), gy.reshape(1, -1)
    # A mirrored view shows column a of the crop at view column 1 - a.
    gx = torch.where(flips.bool().view(-1, 1), 1.0 - gx, gx)
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    x = x0[:, None] + gx * (x1 - x0)[:, None]
    y = y0[:, None] + gy * (y1 - y0)[:, None]
    return torch.stack([x, y], dim=-1)


def points_to_cells(points: Tensor, boxes: Tensor, flips: Tensor, grid: Grid) -> Tensor:
    """Index of the cell of an ``H x W`` grid over each view that contains each original-image point.

    ``points`` is ``[N, P, 2]``; returns ``[N, P]`` long, -1 where the point lies outside the view.
    """
    h, w = grid
    x, y = points_in_grid(points, boxes, flips, grid).unbind(dim=-1)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    col = x.floor().clamp(0, w - 1).long()
    row = y.floor().clamp(0, h - 1).long()
    return torch.where(inside, row * w + col, torch.full_like(col, -1))


def points_in_grid(points: Tensor, boxes: Tensor, flips: Tensor, grid: Grid) -> Tensor:
    """Original-image points ``[N, P, 2]`` in the continuous ``(column, row)`` coordinates of an ``H x W`` grid
    over each view (cell ``(c, r)`` spans ``[c, c+1) x [r, r+1)``): ``[N, P, 2]``."""
    h, w = grid
    boxes = boxes.float()
    x0, y0, x1, y1 = (b[:, None] for b in boxes.unbind(dim=1))
    a = (points[..., 0] - x0) / (x1 - x0)
    b = (points[..., 1] - y0) / (y1 - y0)
    a = torch.where(flips.bool().view(-1, 1), 1.0 - a, a)
    return torch.stack([a * w, b * h], dim=-1)


def partner_error(pred: Tensor, boxes_q: Tensor, flips_q: Tensor, grid_q: Grid,
                  boxes_k: Tensor, flips_k: Tensor, grid_k: Grid) -> Tensor:
    """Distance, in key cells, from the centre of each selected key cell ``pred [N, Lq]`` (or ``[N, Lq, P]``,
    several per query cell) to the exact point where the query cell's centre lies in the key view: the shape of
    ``pred`` (NaN where ``pred`` is -1)."""
    points = points_in_grid(cell_centres(boxes_q, flips_q, grid_q), boxes_k, flips_k, grid_k)   # [N, Lq, 2]
    points = points.view(*points.shape[:2], *([1] * (pred.dim() - 2)), 2)
    w = grid_k[1]
    p = pred.clamp(min=0)
    centre = torch.stack([(p % w).float() + 0.5, torch.div(p, w, rounding_mode="floor").float() + 0.5], dim=-1)
    error = torch.linalg.vector_norm(centre - points, dim=-1)
    return torch.where(pred >= 0, error, torch.full_like(error, float("nan")))


def true_partners(boxes_q: Tensor, flips_q: Tensor, grid_q: Grid,
                  boxes_k: Tensor, flips_k: Tensor, grid_k: Grid) -> Tensor:
    """The key cell containing each query cell's centre: ``[N, Hq*Wq]`` long, -1 where there is none.

    This is the oracle ("geometric") matcher and the ground truth of matching accuracy.
    """
    centres = cell_centres(boxes_q, flips_q, grid_q)
    return points_to_cells(centres, boxes_k, flips_k, grid_k)


def cell_diagonals(boxes: Tensor, grid: Grid) -> Tensor:
    """Length in original pixels of the diagonal of one cell of each view: ``[N]``."""
    h, w = grid
    boxes = boxes.float()
    return torch.hypot((boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h)


def threshold_positives(boxes_q: Tensor, flips_q: Tensor, grid_q: Grid,
                        boxes_k: Tensor, flips_k: Tensor, grid_k: Grid,
                        ratio: float = 0.7) -> Tensor:
    """PixPro's positives: ``[N, Lq, Lk]`` bool, true where the two cell centres, mapped into the original
    image, lie closer than ``ratio`` times the larger of the two views' cell diagonals."""
    cq = cell_centres(boxes_q, flips_q, grid_q)
    ck = cell_centres(boxes_k, flips_k, grid_k)
    dist = torch.cdist(cq, ck)
    limit = ratio * torch.maximum(cell_diagonals(boxes_q, grid_q), cell_diagonals(boxes_k, grid_k))
    return dist < limit.view(-1, 1, 1)


def matching_hits(pred: Tensor, truth: Tensor, key_width: int, tolerance: int = 1) -> Tuple[Tensor, Tensor]:
    """How many query cells with a true partner got a key cell within ``tolerance`` cells (Chebyshev) of it.

    ``pred`` and ``truth`` are ``[N, Lq]`` indices into the row-major key grid of width ``key_width``
    (``truth`` -1 where there is no partner). Returns ``(hits, counted)`` as 0-d tensors (no host sync), so
    that counts from many batches can be summed before dividing.
    """
    valid = truth >= 0
    close = chebyshev(pred, truth.clamp(min=0), key_width) <= tolerance
    return (close & valid & (pred >= 0)).sum(), valid.sum()


def matching_accuracy(pred: Tensor, truth: Tensor, key_width: int, tolerance: int = 1) -> Tensor:
    """Fraction of query cells with a true partner whose selected key cell lies within ``tolerance`` cells of
    it; NaN when no query cell has a partner."""
    hits, counted = matching_hits(pred, truth, key_width, tolerance)
    return hits.float() / counted.float() if counted.item() > 0 else torch.tensor(float("nan"))


def chebyshev(a: Tensor, b: Tensor, key_width: int) -> Tensor:
    """Chebyshev distance in cells between key cells ``a`` and ``b`` (broadcast indices, row-major)."""
    return torch.maximum((a // key_width - b // key_width).abs(), (a % key_width - b % key_width).abs())


def positive_hits(positives, truth: Tensor, key_width: int, tolerance: int = 1) -> Tuple[Tensor, Tensor]:
    """``matching_hits`` for a matcher's positives (``.index [N, Lq]`` or ``.mask [N, Lq, Lk]``). With several
    positives per query cell every positive pair counts once; a query cell with a true partner and no positive
    counts as one miss."""
    if positives.index is not None:
        return matching_hits(positives.index, truth, key_width, tolerance)
    mask, valid = positives.mask, (truth >= 0).unsqueeze(-1)
    keys = torch.arange(mask.shape[-1], device=mask.device)
    close = chebyshev(keys.view(1, 1, -1), truth.clamp(min=0).unsqueeze(-1), key_width) <= tolerance
    empty = (~mask.any(-1) & (truth >= 0)).sum()
    return (mask & valid & close).sum(), (mask & valid).sum() + empty


def positives_accuracy(positives, truth: Tensor, key_width: int, tolerance: int = 1) -> Tensor:
    """Fraction of ``positive_hits``; 0 when nothing is counted (a 0-d tensor, no host sync)."""
    hits, counted = positive_hits(positives, truth, key_width, tolerance)
    return hits.float() / counted.clamp(min=1).float()
