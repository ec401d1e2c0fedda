"""The paper's Hough matching (pretrain/matchers/hough.py) on hand-made tensors: planted geometry among decoys,
hand-computed
bins, a brute-force reference of the confidence, and numerics on flat feature maps."""
import math

import pytest
import torch
import torch.nn.functional as F

from pretrain.data.geometry import matching_accuracy
from pretrain.matchers import argmax_match, hough


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
    argmax = argmax_match(fq, fk)
    picked = hough.hough_match(fq, fk, hough.HoughOptions(space=space))
    assert accuracy_on(argmax, truth, decoyed, 8) < 0.1
    assert accuracy_on(picked, truth, decoyed, 8) > 0.9
    assert accuracy_on(picked, truth, truth >= 0, 8) > 0.9


def test_result_shape_dtype_and_batch_independence():
    fq1, fk1, _, _ = planted(seed=1)
    fq2, fk2, _, _ = planted(seed=2, mirrored=True)
    fq, fk = torch.cat([fq1, fq2]), torch.cat([fk1, fk2])
    for space in hough.SPACES:
        both = hough.hough_match(fq, fk, hough.HoughOptions(space=space))
        assert both.shape == (2, 64) and both.dtype == torch.long
        assert torch.equal(both[1:], hough.hough_match(fq2, fk2, hough.HoughOptions(space=space)))
    # Non-square grids of different sizes and unnormalised inputs are accepted.
    out = hough.hough_match(torch.randn(3, 16, 5, 7), 10 * torch.randn(3, 16, 6, 4),
                            hough.HoughOptions(space="similarity"))
    assert out.shape == (3, 35) and int(out.max()) < 24


def test_translation_bins_by_hand():
    bins, by, bx = hough.vote_bins((2, 2), (2, 2), hough.slices_for("translation"))
    assert (by, bx) == (3, 3)
    table = bins.view(4, 4)  # [query cell, key cell]
    assert table[0, 0] == 4  # no offset: the centre bin
    assert table[0, 3] == 8  # query (0,0) -> key (1,1): offset (+1,+1)
    assert table[3, 0] == 0  # query (1,1) -> key (0,0): offset (-1,-1)
    assert table[1, 2] == 6  # query (0,1) -> key (1,0): offset (+1,-1) -> bin (row 2, col 0)
    assert hough.vote_bins((2, 2), (2, 2), hough.slices_for("translation"))[0] is bins  # cached


def brute_force_confidence(sim, grid_q, grid_k, slices, sigma, power=3.0, combine="sum"):
    """Probabilistic Hough matching with one-cell bins (``bins cell``) written out with loops over pairs and bins."""
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
    support = torch.full((lq, lk), -math.inf if combine == "max" else 0.0, dtype=torch.float64)
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
                here = space[bin_of(s, f, i, j)]
                support[i, j] = max(support[i, j], here) if combine == "max" else support[i, j] + here
    return a.double() * support


@pytest.mark.parametrize("space,sigma,combine", [("translation", 0.0, "sum"), ("translation", 1.0, "sum"),
                                                 ("flip", 0.0, "sum"), ("similarity", 0.7, "sum"),
                                                 ("similarity", 0.0, "max")])
def test_cell_bins_match_brute_force(space, sigma, combine):
    torch.manual_seed(0)
    grid_q, grid_k = (3, 4), (4, 3)
    sim = torch.rand(1, 12, 12) * 2 - 1
    opts = hough.HoughOptions(space=space, bins="cell", sigma=sigma, combine=combine)
    fast = hough.hough_confidence(sim, grid_q, grid_k, opts)
    slow = brute_force_confidence(sim[0], grid_q, grid_k, hough.slices_for(space), sigma, combine=combine)
    torch.testing.assert_close(fast[0].double(), slow, rtol=1e-5, atol=1e-6)


def test_votes_are_selective_and_validated():
    sim = torch.tensor([[[0.9, 0.5, -0.2]]])
    torch.testing.assert_close(hough.votes(sim, "power", power=2.0), torch.tensor([[[0.81, 0.25, 0.0]]]))
    soft = hough.votes(sim, "softmax", temperature=0.1)
    torch.testing.assert_close(soft.sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="unknown vote"):
        hough.votes(sim, "nope")
    with pytest.raises(ValueError, match="unknown Hough space"):
        hough.slices_for("affine")


def centred_cosine_float64(fq, fk):
    """The reference: centre, normalise and multiply in float64."""
    q = fq.flatten(2).double()
    k = fk.flatten(2).double()
    q = F.normalize(q - q.mean(2, keepdim=True), dim=1)
    k = F.normalize(k - k.mean(2, keepdim=True), dim=1)
    return torch.bmm(q.transpose(1, 2), k)


@pytest.mark.parametrize("variation", [1e-1, 1e-2, 1e-3, 1e-4])
def test_centred_similarity_on_near_uniform_maps(variation):
    # A large common component with little spatial variation (a blank wall, a flat sky): a rank-1 expansion of
    # the raw product loses everything here (|cos| of 1e8 at 1e-3).
    g = torch.Generator().manual_seed(0)
    base = 5 * torch.rand(2, 64, 1, 1, generator=g)
    fq = base + variation * torch.randn(2, 64, 7, 7, generator=g)
    fk = base + variation * torch.randn(2, 64, 6, 6, generator=g)
    sim = hough.similarity(fq, fk, center=True)
    assert sim.abs().max() <= 1.0
    torch.testing.assert_close(sim.double(), centred_cosine_float64(fq, fk), atol=1e-3, rtol=0)
    centred = hough.HoughOptions(center=True)
    picked, confidence = hough.hough_match(fq, fk, centred, return_confidence=True)
    assert torch.isfinite(confidence).all()
    # The positives follow the features, not rounding noise: the float64 reference gives the same choice.
    reference = hough.hough_confidence(centred_cosine_float64(fq, fk).float(), (7, 7), (6, 6), centred)
    assert torch.equal(picked, reference.argmax(2))


def test_a_flat_image_has_finite_similarities_and_well_defined_positives():
    flat = torch.full((1, 32, 7, 7), 0.37)
    textured = torch.randn(1, 32, 7, 7)
    for fq, fk in ((flat, flat), (flat, textured), (textured, flat)):
        sim = hough.similarity(fq, fk, center=True)
        assert torch.isfinite(sim).all() and sim.abs().max() <= 1.0
        # Centred, a flat map has no direction at all: every cosine with it is 0 (not noise).
        if fq is flat or fk is flat:
            assert sim.abs().max() == 0
        for opts in (hough.HoughOptions(), hough.HoughOptions(center=True)):
            picked, confidence = hough.hough_match(fq, fk, opts, return_confidence=True)
            assert torch.isfinite(confidence).all() and picked.min() >= 0 and picked.max() < 49
            assert torch.equal(picked, hough.hough_match(fq.clone(), fk.clone(), opts))
