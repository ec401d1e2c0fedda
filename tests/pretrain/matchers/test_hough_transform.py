"""The estimated-geometry extension (pretrain/matchers/hough_transform.py): a brute-force reference of the votes, least
squares against NumPy, planted transformations with sub-cell shifts, anisotropic scales and mirrored views among
decoys (the transformation finds the planted partners, argmax takes the decoys), and pooled voters on odd grids."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrain.data.geometry import matching_accuracy
from pretrain.matchers import MATCHERS, argmax_match
from pretrain.matchers.hough import DEFAULT_SCALES as SCALES
from pretrain.matchers.hough import cell_offsets, similarity, smooth
from pretrain.matchers.hough_transform import (
    TransformOptions,
    ViewTransform,
    input_problem,
    transform_positives,
    vote_transform,
    weighted_line,
)


def planted_transform(scale_x=-1.3, shift_x=0.35, scale_y=0.85, shift_y=-0.4, grid_q=12, grid_k=14,
                      channels=64, decoy_fraction=0.3, seed=0):
    """Key features at random; query cell i is a noisy copy of the key cell containing its image under the planted
    transformation. Decoys: exact copies of some query cells planted at key cells that are nobody's partner."""
    g = torch.Generator().manual_seed(seed)
    fk = F.normalize(torch.randn(channels, grid_k * grid_k, generator=g), dim=0)
    fq = F.normalize(torch.randn(channels, grid_q * grid_q, generator=g), dim=0)
    u, v = cell_offsets((grid_q, grid_q))
    col = torch.floor(scale_x * u + shift_x + grid_k / 2).long()
    row = torch.floor(scale_y * v + shift_y + grid_k / 2).long()
    inside = (col >= 0) & (col < grid_k) & (row >= 0) & (row < grid_k)
    truth = torch.where(inside, row * grid_k + col, torch.full_like(col, -1))
    for i in torch.nonzero(inside).flatten().tolist():
        fq[:, i] = F.normalize(fk[:, truth[i]] + 0.35 * torch.randn(channels, generator=g) / math.sqrt(channels), dim=0)
    candidates = torch.nonzero(inside).flatten()
    chosen = candidates[torch.randperm(len(candidates), generator=g)[: int(decoy_fraction * len(candidates))]]
    free = sorted(set(range(grid_k * grid_k)) - set(truth.tolist()))
    decoyed = torch.zeros(grid_q * grid_q, dtype=torch.bool)
    for i, d in zip(chosen.tolist(), free):
        fk[:, d] = fq[:, i]
        decoyed[i] = True
    return (fq.view(1, channels, grid_q, grid_q), fk.view(1, channels, grid_k, grid_k), truth.view(1, -1),
            decoyed.view(1, -1))


def brute_force_peak(sim, grid_q, grid_k, scales, candidates, power, sigma):
    """The strongest (slice, translation) bin, with loops over query cells, candidates and slices."""
    uq, vq = cell_offsets(grid_q)
    uk, vk = cell_offsets(grid_k)
    slices = [(s, f) for f in (1, -1) for s in scales]
    lim_x = math.ceil(grid_k[1] / 2 + max(scales) * grid_q[1] / 2)
    lim_y = math.ceil(grid_k[0] / 2 + max(scales) * grid_q[0] / 2)
    hough = torch.zeros(len(slices), 2 * lim_y + 1, 2 * lim_x + 1)
    value, index = sim[0].topk(candidates, dim=1)
    for i in range(sim.shape[1]):
        for c in range(candidates):
            j, vote = int(index[i, c]), max(float(value[i, c]), 0.0) ** power
            for k, (s, f) in enumerate(slices):
                tx, ty = float(uk[j] - f * s * uq[i]), float(vk[j] - s * vq[i])
                bx = min(max(round(tx + lim_x), 0), 2 * lim_x)
                by = min(max(round(ty + lim_y), 0), 2 * lim_y)
                hough[k, by, bx] += vote
    hough = smooth(hough, sigma)
    k, by, bx = np.unravel_index(int(hough.argmax()), hough.shape)
    s, f = slices[k]
    return f * s, bx - lim_x, s, by - lim_y


def test_votes_against_brute_force():
    fq, fk, _, _ = planted_transform(scale_x=-1.0, shift_x=1.0, scale_y=1.0, shift_y=-1.0, grid_q=6, grid_k=7,
                                     decoy_fraction=0.2)
    sim = similarity(fq, fk, center=True)
    t = vote_transform(sim, (6, 6), (7, 7), SCALES, candidates=5, power=3.0, sigma=1.0, refine=())
    expected = brute_force_peak(sim, (6, 6), (7, 7), SCALES, 5, 3.0, 1.0)
    assert [float(x) for x in t] == pytest.approx([float(x) for x in expected], abs=1e-5)
    # The unrefined peak is the planted transformation to within a bin (votes land between the bin centres).
    assert (float(t.scale_x), float(t.scale_y)) == (-1.0, 1.0)
    assert abs(float(t.shift_x) - 1.0) <= 1 and abs(float(t.shift_y) + 1.0) <= 1


def test_weighted_line_against_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, generator=g)
    y = 0.7 * x - 0.2 + 0.05 * torch.randn(2, 5, 3, generator=g)
    w = torch.rand(2, 5, 3, generator=g)
    w[1] = 0  # no weight at all: the fallback stays
    slope, intercept = weighted_line(x, y, w, (torch.tensor([9.0, 9.0]), torch.tensor([8.0, 8.0])))
    ref = np.polyfit(x[0].flatten().numpy(), y[0].flatten().numpy(), 1, w=np.sqrt(w[0].flatten().numpy()))
    assert (float(slope[0]), float(intercept[0])) == pytest.approx(tuple(ref), abs=1e-5)
    assert (float(slope[1]), float(intercept[1])) == (9.0, 8.0)


@pytest.mark.parametrize("planted", [
    dict(scale_x=-1.3, shift_x=0.35, scale_y=0.85, shift_y=-0.4),   # mirrored, anisotropic, sub-cell shifts
    dict(scale_x=1.15, shift_x=-0.6, scale_y=1.45, shift_y=0.25),   # anisotropic, between the scale slices
    dict(scale_x=0.62, shift_x=0.2, scale_y=0.62, shift_y=0.45, grid_q=14, grid_k=12)])
def test_transform_selection_finds_the_planted_transform_among_decoys(planted):
    fq, fk, truth, decoyed = planted_transform(**planted)
    sim = similarity(fq, fk, center=True)
    t = vote_transform(sim, tuple(fq.shape[-2:]), tuple(fk.shape[-2:]), SCALES)
    assert float(t.scale_x) == pytest.approx(planted["scale_x"], abs=0.06)
    assert float(t.scale_y) == pytest.approx(planted["scale_y"], abs=0.06)
    assert float(t.shift_x) == pytest.approx(planted["shift_x"], abs=0.25)
    assert float(t.shift_y) == pytest.approx(planted["shift_y"], abs=0.25)
    picked = MATCHERS["hough_transform"](fq, fk, {}, TransformOptions(layer="layer4", query_pool=1)).index
    argmax = argmax_match(fq, fk)
    width = fk.shape[-1]
    partnered = truth >= 0
    assert matching_accuracy(picked[partnered].view(1, -1), truth[partnered].view(1, -1), width, 0) > 0.9
    assert matching_accuracy(picked[decoyed].view(1, -1), truth[decoyed].view(1, -1), width, 0) > 0.9
    assert matching_accuracy(argmax[decoyed].view(1, -1), truth[decoyed].view(1, -1), width, 0) < 0.1


def test_transform_found_on_a_finer_grid_is_applied_to_the_coarse_cells():
    # The voting grid is 4x finer than the matched grid (C3 against C5): the same transformation, other units.
    t = ViewTransform(torch.tensor([-1.2]), torch.tensor([2.0]), torch.tensor([0.9]), torch.tensor([-3.0]))
    index, inside = transform_positives(t, (28, 28), (28, 28), (7, 7), (7, 7))
    u, v = cell_offsets((7, 7))
    col = torch.floor(-1.2 * u + 2.0 / 4 + 3.5).long()
    row = torch.floor(0.9 * v - 3.0 / 4 + 3.5).long()
    ok = (col >= 0) & (col < 7) & (row >= 0) & (row < 7)
    assert torch.equal(inside[0], ok) and torch.equal(index[0][ok], (row * 7 + col)[ok])


def test_the_extension_needs_the_voting_features():
    fq, fk = torch.randn(1, 8, 7, 7), torch.randn(1, 8, 7, 7)
    with pytest.raises(ValueError, match="MODEL.HOUGH_TRANSFORM.LAYER layer2"):
        MATCHERS["hough_transform"](fq, fk, {})
    views = {"stages_q": {"layer2": torch.randn(1, 4, 28, 28)}, "stages_k": {"layer2": torch.randn(1, 4, 28, 28)}}
    assert MATCHERS["hough_transform"](fq, fk, views).index.shape == (1, 49)


@pytest.mark.parametrize("grid", [14, 15, 24, 25, 28, 29])
@pytest.mark.parametrize("layer", ["layer4", "layer2"])
def test_pooled_voters_on_identical_views_give_the_oracle_at_odd_and_even_grids(grid, layer):
    # Floor pooling of an odd grid drops its last row and column: the pooled voters' centres are not twice a
    # centred offset. On identical views every cell must still land on itself (before: 0.22 at grid 7).
    g = torch.Generator().manual_seed(grid)
    features = torch.randn(4, 32, grid, grid, generator=g)
    c5 = features if layer == "layer4" else torch.randn(4, 16, 7, 7, generator=g)
    views = {"stages_q": {"layer2": features}, "stages_k": {"layer2": features}}
    positives = MATCHERS["hough_transform"](c5, c5, views, TransformOptions(layer=layer, query_pool=2))
    cells = c5.shape[-1] * c5.shape[-2]
    assert float((positives.index == torch.arange(cells)).float().mean()) >= 0.95
    assert float(positives.stats["outside_share"]) <= 0.05


def test_grids_with_too_few_pooled_voters_are_refused():
    f = torch.randn(1, 8, 7, 7)
    with pytest.raises(ValueError, match="3 voters per side"):
        MATCHERS["hough_transform"](f, f, {}, TransformOptions(layer="layer4", query_pool=2))
    assert "INPUT.SIZE 224" in input_problem(224, TransformOptions(layer="layer4", query_pool=2))
    assert input_problem(224, TransformOptions()) is None            # layer2: 28 x 28, 14 voters per side
    assert input_problem(112, TransformOptions()) is None            # the demo: 14 x 14, 7 voters per side
