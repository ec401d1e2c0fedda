"""The negative control: random positives, uniform over the key cells, a function of the sample alone."""
import torch
from scipy import stats

from pretrain.matchers import MATCHERS, random_positives, sample_seeds


def views_of(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=g) * 50
    box = torch.cat([corner, corner + 40 + torch.rand(n, 2, generator=g) * 50], dim=1)
    return {"box_q": box, "box_k": box.flip(0), "flip_q": torch.randint(2, (n,), generator=g),
            "flip_k": torch.randint(2, (n,), generator=g), "index": torch.arange(n) + 100 * seed}


def test_a_sample_draws_the_same_positives_alone_or_in_any_batch():
    views = views_of(6)
    fq, fk = torch.randn(6, 8, 4, 4), torch.randn(6, 8, 5, 5)
    whole = MATCHERS["random"](fq, fk, views).index
    assert whole.shape == (6, 16) and int(whole.min()) >= 0 and int(whole.max()) < 25
    assert torch.equal(whole, MATCHERS["random"](fq, fk, views).index)          # repeatable
    order = torch.tensor([3, 0, 5])
    part = MATCHERS["random"](fq[order], fk[order], {k: v[order] for k, v in views.items()}).index
    assert torch.equal(part, whole[order])                                      # batch composition is irrelevant
    assert not torch.equal(whole[0], whole[1])                                  # samples draw apart
    assert torch.equal(MATCHERS["random"](fq * 3 + 1, -fk, views).index, whole)  # features play no part


def test_new_views_of_a_sample_draw_anew():
    a, b = views_of(4, seed=0), views_of(4, seed=0)
    b["box_q"] = b["box_q"] + 1.0  # the same index, another epoch's crop
    assert sample_seeds(a) != sample_seeds(b)
    no_index = {k: v for k, v in a.items() if k != "index"}  # the matching evaluation's pairs carry no index
    assert len(set(sample_seeds(no_index))) == 4


def test_draws_are_uniform_over_the_key_cells():
    lk = 16
    drawn = random_positives(list(range(2000)), 16, lk)
    counts = torch.bincount(drawn.flatten(), minlength=lk).tolist()
    assert sum(counts) == 32000
    assert stats.chisquare(counts).pvalue > 1e-3
    # a query cell's draw does not follow its position: the per-position counts are uniform too
    same = (drawn[:, :-1] == drawn[:, 1:]).float().mean().item()
    assert abs(same - 1 / lk) < 4 * (1 / lk * (1 - 1 / lk) / drawn[:, 1:].numel()) ** 0.5


def test_random_positives_are_exact_at_chance_in_the_matching_evaluation(image_folder):
    from pretrain.evaluation.accuracy import matching_study
    found = matching_study(image_folder, depth=18, pairs=48, size=112, seed=1,
                           variants={"random": ("random", None), "geometric": ("geometric", None)})
    cells = found["counts"]["query_cells_with_partner"]
    lk = found["counts"]["grid"][0] * found["counts"]["grid"][1]
    chance, sd = 1 / lk, (1 / lk * (1 - 1 / lk) / cells) ** 0.5
    assert found["exact"]["geometric"]["all"] == 1.0
    assert abs(found["exact"]["random"]["all"] - chance) < 4 * sd
