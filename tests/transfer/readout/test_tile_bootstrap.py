import itertools
import json
import math

import pytest
import torch

from transfer.data.synthetic import write_voc
from transfer.readout.dense_probe import average_precision
from transfer.readout.tile_bootstrap import (
    decompose,
    load_scores,
    mean_ap,
    resample_tiles,
    save_scores,
    tile_bootstrap,
    weighted_ap,
)
from transfer.results import ResultsError, paired


def scored(scores, labels, tile, path):
    return {"scores": torch.tensor(scores, dtype=torch.float64), "labels": torch.tensor(labels),
            "tile": torch.tensor(tile), "files": [f"t{i}" for i in sorted(set(tile))], "path": path}


def test_resamples_take_whole_tiles_as_many_as_there_are_and_repeat_with_the_seed():
    tile = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    copies = resample_tiles(tile, draws=50, seed=3)
    assert copies.shape == (50, 8)
    for row in copies:
        per_tile = [row[tile == t] for t in range(4)]
        assert all(len(set(c.tolist())) == 1 for c in per_tile)  # a tile comes with all of its cells
        assert sum(int(c[0]) for c in per_tile) == 4             # as many tiles as there are
    assert torch.equal(copies, resample_tiles(tile, draws=50, seed=3))
    assert not torch.equal(copies, resample_tiles(tile, draws=50, seed=4))


def test_weighted_ap_equals_the_ap_of_the_repeated_cells():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(40, generator=generator, dtype=torch.float64)
    labels = torch.rand(40, generator=generator) < 0.4
    copies = torch.randint(0, 4, (30, 40), generator=generator)
    copies[:, labels.nonzero()[0]] += 1  # every sample holds a positive
    fast = weighted_ap(scores, labels, copies)
    for row, value in zip(copies, fast):
        cells = torch.repeat_interleave(torch.arange(40), row)
        assert float(value) == pytest.approx(100 * average_precision(scores[cells], labels[cells]), abs=1e-9)


def test_bootstrap_sd_approaches_the_exact_sd_over_every_resample():
    # 3 tiles: the 27 ordered draws with replacement are equally likely; their exact sd is what the bootstrap
    # estimates.
    tile = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    labels = [True, False, True, False, True, False, True, True, False]
    model = scored([[0.9, 0.1, 0.8, 0.3, 0.7, 0.2, 0.6, 0.5, 0.4]], labels, tile, "model.pt")
    baseline = scored([[0.2, 0.6, 0.9, 0.8, 0.3, 0.1, 0.7, 0.4, 0.5]], labels, tile, "baseline.pt")
    cells_of = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]

    def ap(scores, cells):
        return 100 * average_precision(scores["scores"][0][cells], scores["labels"][cells])

    exact = []
    for draw in itertools.product(range(3), repeat=3):
        cells = torch.tensor([c for t in draw for c in cells_of[t]])
        exact.append(ap(model, cells) - ap(baseline, cells))
    mean = sum(exact) / 27
    exact_sd = math.sqrt(sum((d - mean) ** 2 for d in exact) / 27)
    result = tile_bootstrap(model, baseline, draws=3000, seed=0)
    assert result["tile_sd"] == pytest.approx(exact_sd, rel=0.05) and exact_sd > 1
    every = torch.arange(9)
    assert result["difference"] == pytest.approx(ap(model, every) - ap(baseline, every))


def test_a_model_against_itself_has_no_tile_spread_and_other_test_cells_are_refused():
    a = scored([[0.9, 0.1, 0.8, 0.3], [0.5, 0.4, 0.6, 0.1]], [True, False, True, False], [0, 0, 1, 1], "a.pt")
    itself = tile_bootstrap(a, a, draws=20)
    assert itself["difference"] == itself["tile_sd"] == 0 and not itself["resampled"].any()
    assert mean_ap(a["scores"], a["labels"], torch.arange(4)) == pytest.approx(
        (100 * average_precision(a["scores"][0], a["labels"]) + 100 * average_precision(a["scores"][1], a["labels"]))
        / 2)
    other = scored([[0.9, 0.1, 0.8, 0.3]], [True, True, True, False], [0, 0, 1, 1], "b.pt")
    with pytest.raises(ResultsError, match="a.pt and b.pt: not scored on the same test cells"):
        tile_bootstrap(a, other)


def test_decomposition_of_probed_runs_matches_their_paired_table(tmp_path):
    torch.manual_seed(0)
    labels = torch.rand(60) < 0.4
    tile = torch.arange(60) // 6
    files = [f"tile{i}.jpg" for i in range(10)]
    runs = {}
    for name, signal in (("model", 1.5), ("baseline", 1.0)):
        for seed in range(4):
            scores = signal * labels.double() + torch.randn(2, 60, dtype=torch.float64)
            save_scores(str(tmp_path / name), seed, {"scores": scores, "labels": labels, "tile": tile}, files)
            runs.setdefault(name, {})[seed] = {"dense": {"AP": mean_ap(scores, labels, torch.arange(60))}}
    result = decompose(str(tmp_path / "model"), str(tmp_path / "baseline"), range(4), draws=200)
    table = paired(runs["model"], runs["baseline"], "dense/AP")
    assert [result["per_seed"][s]["difference"] for s in range(4)] == pytest.approx(table["differences"])
    assert result["half_width"] == pytest.approx(table["ci95"][1] - table["mean"])
    assert result["tile_share"] == pytest.approx(result["tile_sd"] ** 2 / result["sd"] ** 2)
    assert result["half_width_without_tiles"] == pytest.approx(
        result["half_width"] * math.sqrt(max(1 - result["tile_share"], 0)))
    # every seed resampled with the same draws: the mean difference's spread over test sets
    by_seed = [tile_bootstrap(load_scores(str(tmp_path / "model"), s), load_scores(str(tmp_path / "baseline"), s),
                              draws=200, seed=0) for s in range(4)]
    assert result["tile_sd"] == pytest.approx(math.sqrt(sum(r["tile_sd"] ** 2 for r in by_seed) / 4))
    assert result["mean_tile_sd"] == pytest.approx(float(sum(r["resampled"] for r in by_seed).div(4).std()))
    assert 0 < result["mean_tile_sd"] < result["tile_sd"]
    json.dumps(result)  # what collect_results writes
    with pytest.raises(ResultsError, match="seed_7.*--as-seed 7"):
        load_scores(str(tmp_path / "model"), 7)


def test_probe_tool_writes_the_scores_and_collect_splits_the_spread(tmp_path, run_tool):
    voc = write_voc(str(tmp_path), classes=("box",), train=6, test=3, size=(96, 96))
    for seed in (0, 1):
        for name, weights in (("random_init", []), ("other", ["--depth", 34])):
            result = run_tool("dense_probe", voc, "--train", "trainval", "--seeds", 2, "--as-seed", seed,
                              *weights, "--out", tmp_path / name)
            assert result.returncode == 0, result.stderr
    written = load_scores(str(tmp_path / "other"), 1)
    ap = json.load(open(tmp_path / "other" / "seed_1" / "final_results.json"))["results"]["dense"]["AP"]
    assert written["scores"].shape[0] == 2 and len(written["files"]) == 3
    assert mean_ap(written["scores"], written["labels"], torch.arange(len(written["labels"]))) == pytest.approx(ap)
    collected = run_tool("collect_results", tmp_path / "random_init", tmp_path / "other", "--baseline",
                         "random_init", "--tile-bootstrap", 50, "--out", tmp_path / "table")
    assert collected.returncode == 0, collected.stderr
    saved = json.load(open(tmp_path / "table.json"))["tile_bootstrap"]
    assert [(r["model"], r["baseline"], r["seeds"]) for r in saved] == [("other", "random_init", [0, 1])]
    assert "its share of the variance, at most" in collected.stdout
    row = next(line for line in collected.stdout.splitlines() if line.startswith("| other | random_init | 2 |"))
    assert len(row.split("|")) == 11
