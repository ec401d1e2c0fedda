"""Matchers and geometry on hand-made tensors, against hand-computed values and a brute-force reference."""
import math

import pytest
import torch
import torch.nn.functional as F

from pretrain import matching
from pretrain.geometry import cell_centres, matching_accuracy, threshold_positives, true_partners


def planted(grid=8, channels=64, shift=(1, 2), mirrored=False, decoy_fraction=0.3, seed=0):
    """Key features at random; each query cell is a noisy copy of its true key partner (a shifted, optionally
    mirrored grid). For a fraction of query cells an exact copy (a decoy) is planted at a wrong key cell, so
    argmax prefers the decoy. Returns fq, fk, truth [1, L], decoyed [1, L] bool."""
    g = torch.Generator().manual_seed(seed)
    h = w = grid
    fk = F.normalize(torch.randn(channels, h * w, generator=g), dim=0)
    truth = torch.full((h * w,), -1, dtype=torch.long)
    fq = F.normalize(torch.randn(channels, h * w, generator=g), dim=0)  # outliers: no partner
    for r in range(h):
        for c in range(w):
            kr, kc = r + shift[0], (w - 1 - c if mirrored else c) + shift[1]
            if 0 <= kr < h and 0 <= kc < w:
                truth[r * w + c] = kr * w + kc
                fq[:, r * w + c] = F.normalize(fk[:, kr * w + kc] + 0.35 * torch.randn(channels, generator=g)
                                               / math.sqrt(channels), dim=0)
    candidates = torch.nonzero(truth >= 0).flatten()
    chosen = candidates[torch.randperm(len(candidates), generator=g)[: int(decoy_fraction * len(candidates))]]
    # Decoys go to key cells that are nobody's partner, so every true correspondence stays intact.
    free = sorted(set(range(h * w)) - set(truth.tolist()))
    decoyed = torch.zeros(h * w, dtype=torch.bool)
    for i, d in zip(chosen.tolist(), free):
        fk[:, d] = fq[:, i]  # an exact copy: more similar than the (noisy) true partner
        decoyed[i] = True
    return fq.view(1, channels, h, w), fk.view(1, channels, h, w), truth.view(1, -1), decoyed.view(1, -1)


def accuracy_on(pred, truth, mask, width):
    return matching_accuracy(pred[mask].view(1, -1), truth[mask].view(1, -1), width, tolerance=0).item()


@pytest.mark.parametrize("space,shift,mirrored", [
    ("translation", (1, 2), False), ("similarity", (1, 2), False), ("similarity", (1, -1), True)])
def test_hough_recovers_planted_geometry_where_argmax_takes_decoys(space, shift, mirrored):
    fq, fk, truth, decoyed = planted(shift=shift, mirrored=mirrored)
    argmax = matching.argmax_match(fq, fk)
    hough = matching.hough_match(fq, fk, matching.HoughOptions(space=space))
    assert accuracy_on(argmax, truth, decoyed, 8) < 0.1
    assert accuracy_on(hough, truth, decoyed, 8) > 0.9
    assert accuracy_on(hough, truth, truth >= 0, 8) > 0.9


def test_result_shape_dtype_and_batch_independence():
    fq1, fk1, _, _ = planted(seed=1)
    fq2, fk2, _, _ = planted(seed=2, mirrored=True)
    fq, fk = torch.cat([fq1, fq2]), torch.cat([fk1, fk2])
    for space in matching.SPACES:
        both = matching.hough_match(fq, fk, matching.HoughOptions(space=space))
        assert both.shape == (2, 64) and both.dtype == torch.long
        assert torch.equal(both[1:], matching.hough_match(fq2, fk2, matching.HoughOptions(space=space)))
    # Non-square grids of different sizes and unnormalised inputs are accepted.
    out = matching.hough_match(torch.randn(3, 16, 5, 7), 10 * torch.randn(3, 16, 6, 4),
                               matching.HoughOptions(space="similarity"))
    assert out.shape == (3, 35) and int(out.max()) < 24


def test_translation_bins_by_hand():
    bins, by, bx = matching.vote_bins((2, 2), (2, 2), matching.slices_for("translation"))
    assert (by, bx) == (3, 3)
    table = bins.view(4, 4)  # [query cell, key cell]
    assert table[0, 0] == 4  # no offset: the centre bin
    assert table[0, 3] == 8  # query (0,0) -> key (1,1): offset (+1,+1)
    assert table[3, 0] == 0  # query (1,1) -> key (0,0): offset (-1,-1)
    assert table[1, 2] == 6  # query (0,1) -> key (1,0): offset (+1,-1) -> bin (row 2, col 0)
    assert matching.vote_bins((2, 2), (2, 2), matching.slices_for("translation"))[0] is bins  # cached


def brute_force_confidence(sim, grid_q, grid_k, slices, sigma, power=3.0):
    """Probabilistic Hough matching written out with loops over pairs and bins."""
    (hq, wq), (hk, wk) = grid_q, grid_k
    lq, lk = hq * wq, hk * wk
    a = sim.clamp(min=0) ** power

    def translation(s, f, i, j):
        uq, vq = i % wq + 0.5 - wq / 2, i // wq + 0.5 - hq / 2
        uk, vk = j % wk + 0.5 - wk / 2, j // wk + 0.5 - hk / 2
        return uk - f * s * uq, vk - s * vq

    ts = [translation(s, f, i, j) for s, f in slices for i in range(lq) for j in range(lk)]
    tx0, ty0 = min(t[0] for t in ts), min(t[1] for t in ts)

    def bin_of(s, f, i, j):
        tx, ty = translation(s, f, i, j)
        return math.floor(ty - ty0 + 0.5 + 1e-9), math.floor(tx - tx0 + 0.5 + 1e-9)

    size_y = max(bin_of(s, f, i, j)[0] for s, f in slices for i in range(lq) for j in range(lk)) + 1
    size_x = max(bin_of(s, f, i, j)[1] for s, f in slices for i in range(lq) for j in range(lk)) + 1
    conf = torch.zeros(lq, lk, dtype=torch.float64)
    support = torch.zeros(lq, lk, dtype=torch.float64)
    for s, f in slices:
        space = torch.zeros(size_y, size_x, dtype=torch.float64)
        for i in range(lq):
            for j in range(lk):
                y, x = bin_of(s, f, i, j)
                space[y, x] += a[i, j]
        if sigma > 0:
            radius = max(1, math.ceil(2.5 * sigma))
            weights = [math.exp(-0.5 * (d / sigma) ** 2) for d in range(-radius, radius + 1)]
            total = sum(weights)
            smoothed = torch.zeros_like(space)
            for y in range(size_y):
                for x in range(size_x):
                    for dy in range(-radius, radius + 1):
                        for dx in range(-radius, radius + 1):
                            if 0 <= y + dy < size_y and 0 <= x + dx < size_x:
                                w = weights[dy + radius] * weights[dx + radius] / total ** 2
                                smoothed[y, x] += w * space[y + dy, x + dx]
            space = smoothed
        for i in range(lq):
            for j in range(lk):
                support[i, j] += space[bin_of(s, f, i, j)]
    conf = a.double() * support
    return conf


@pytest.mark.parametrize("space,sigma", [("translation", 0.0), ("translation", 1.0), ("similarity", 0.7)])
def test_confidence_matches_brute_force(space, sigma):
    torch.manual_seed(0)
    grid_q, grid_k = (3, 4), (4, 3)
    sim = torch.rand(1, 12, 12) * 2 - 1
    fast = matching.hough_confidence(sim, grid_q, grid_k, matching.HoughOptions(space=space, vote="power", sigma=sigma))
    slow = brute_force_confidence(sim[0], grid_q, grid_k, matching.slices_for(space), sigma)
    torch.testing.assert_close(fast[0].double(), slow, rtol=1e-5, atol=1e-6)


def test_votes_are_selective_and_validated():
    sim = torch.tensor([[[0.9, 0.5, -0.2]]])
    torch.testing.assert_close(matching.votes(sim, "power", power=2.0), torch.tensor([[[0.81, 0.25, 0.0]]]))
    soft = matching.votes(sim, "softmax", temperature=0.1)
    torch.testing.assert_close(soft.sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="unknown vote"):
        matching.votes(sim, "nope")
    with pytest.raises(ValueError, match="unknown Hough space"):
        matching.slices_for("affine")


def test_geometry_under_crop_and_flip_by_hand():
    q_box = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    k_box = torch.tensor([[50.0, 0.0, 150.0, 100.0]])
    no, yes = torch.tensor([False]), torch.tensor([True])
    torch.testing.assert_close(cell_centres(q_box, no, (2, 2))[0],
                               torch.tensor([[25.0, 25.0], [75.0, 25.0], [25.0, 75.0], [75.0, 75.0]]))
    torch.testing.assert_close(cell_centres(q_box, yes, (2, 2))[0, :2], torch.tensor([[75.0, 25.0], [25.0, 25.0]]))
    # Query cells at x=25 fall outside the key crop; those at x=75 land in the key's first column.
    assert true_partners(q_box, no, (2, 2), k_box, no, (2, 2)).tolist() == [[-1, 0, -1, 2]]
    # Mirroring the key moves that column to the right.
    assert true_partners(q_box, no, (2, 2), k_box, yes, (2, 2)).tolist() == [[-1, 1, -1, 3]]
    # Mirroring the query swaps which query cells see the key.
    assert true_partners(q_box, yes, (2, 2), k_box, no, (2, 2)).tolist() == [[0, -1, 2, -1]]
    # A key view at twice the scale: 2x2 key grid over the query's 4x4 grid.
    big = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    partners = true_partners(q_box, no, (4, 4), big, no, (2, 2)).view(4, 4)
    assert partners.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_oracle_is_perfect_and_accuracy_counts_tolerance():
    boxes_q = torch.tensor([[10.0, 20.0, 110.0, 90.0], [0.0, 0.0, 64.0, 64.0]])
    boxes_k = torch.tensor([[40.0, 30.0, 140.0, 120.0], [16.0, 0.0, 48.0, 32.0]])
    flips_q, flips_k = torch.tensor([False, True]), torch.tensor([True, False])
    truth = true_partners(boxes_q, flips_q, (7, 7), boxes_k, flips_k, (7, 7))
    assert (truth >= 0).any()
    assert matching_accuracy(truth, truth, 7).item() == 1.0
    views = {"box_q": boxes_q, "flip_q": flips_q, "box_k": boxes_k, "flip_k": flips_k}
    grid = torch.zeros(2, 1, 7, 7)
    oracle = matching.MATCHERS["geometric"](grid, grid, views, matching.MatchOptions())
    assert oracle.mask is None and torch.equal(oracle.index, truth)
    pred = torch.tensor([[0, 8, 3]])
    labels = torch.tensor([[1, 16, -1]])  # cell 0 vs 1: one column off; 8 vs 16: one row off; third: no partner
    assert matching_accuracy(pred, labels, 8, tolerance=1).item() == 1.0
    assert matching_accuracy(pred, labels, 8, tolerance=0).item() == 0.0
    assert math.isnan(matching_accuracy(pred, torch.full((1, 3), -1), 8).item())


def test_threshold_positives():
    box, no = torch.tensor([[0.0, 0.0, 70.0, 70.0]]), torch.tensor([False])
    same = threshold_positives(box, no, (7, 7), box, no, (7, 7))
    assert torch.equal(same[0], torch.eye(49, dtype=torch.bool))  # neighbours are 1 cell > 0.7 diagonal away
    shifted = threshold_positives(box, no, (7, 7), box + torch.tensor([[5.0, 0.0, 5.0, 0.0]]), no, (7, 7))
    assert shifted[0].sum(dim=1).max() <= 2 and shifted.any()
