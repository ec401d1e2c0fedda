"""Where cells lie in the original image (pretrain/data/geometry.py): true partners under crops and flips by hand, the
oracle, PixPro's positives and the accuracy counts."""
import math

import torch

from pretrain.data.geometry import (
    cell_centres,
    matching_accuracy,
    matching_hits,
    partner_error,
    positive_hits,
    threshold_positives,
    true_partners,
)
from pretrain.matchers import MATCHERS, Positives


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
    oracle = MATCHERS["geometric"](grid, grid, views)
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


def test_positive_hits_of_a_mask_count_every_pair_against_a_loop():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 6, 9, generator=g) < 0.3
    mask[0, 2] = False  # a query cell with a partner and no positive: one miss
    truth = torch.randint(-1, 9, (2, 6), generator=g)
    truth[0, 2] = 4
    for tolerance in (0, 1):
        hits = counted = 0
        for n in range(2):
            for i in range(6):
                if truth[n, i] < 0:
                    continue
                keys = [j for j in range(9) if mask[n, i, j]]
                counted += max(1, len(keys))
                t = int(truth[n, i])
                hits += sum(max(abs(j // 3 - t // 3), abs(j % 3 - t % 3)) <= tolerance for j in keys)
        got = positive_hits(Positives(mask=mask), truth, 3, tolerance)
        assert (int(got[0]), int(got[1])) == (hits, counted)
    # An index is counted as matching_hits counts it.
    index = torch.randint(0, 9, (2, 6), generator=g)
    assert [int(x) for x in positive_hits(Positives(index=index), truth, 3)] == \
        [int(x) for x in matching_hits(index, truth, 3)]


def test_partner_error_of_several_positives_per_cell_equals_one_at_a_time():
    box_q, box_k = torch.tensor([[0.0, 0.0, 90.0, 90.0]]), torch.tensor([[20.0, 10.0, 110.0, 80.0]])
    no = torch.tensor([False])
    geometry = (box_q, no, (3, 3), box_k, torch.tensor([True]), (4, 4))
    picks = torch.tensor([[[0, 5, -1]] * 9])                       # [1, 9, 3]
    several = partner_error(picks, *geometry)
    for p in range(3):
        torch.testing.assert_close(several[..., p], partner_error(picks[..., p], *geometry), equal_nan=True)
    assert several[..., 2].isnan().all()
