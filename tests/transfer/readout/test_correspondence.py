"""The correspondence readout: known outcomes, the tool's results file, and bad input."""
import json

import pytest
import torch

from pretrain.backbone import build_resnet
from transfer.readout.correspondence import count_hits


def identical_pairs(n: int = 3, size: int = 112, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    views = torch.randn(n, 3, size, size, generator=g)
    box = torch.tensor([[10.0, 20.0, 10.0 + size, 20.0 + size]]).repeat(n, 1)
    flip = torch.tensor([0, 1, 0][:n])
    return {"view_q": views, "view_k": views.clone(), "box_q": box, "box_k": box.clone(), "flip_q": flip,
            "flip_k": flip.clone()}


def test_a_readout_of_identical_views_reads_every_cell_exact():
    counts = count_hits(build_resnet(18, seed=0), [identical_pairs()])
    assert set(counts) == {"C4_exact", "C4_within_one", "C5_exact", "C5_within_one"}
    assert counts["C4_exact"] == [3 * 7 * 7] * 2 and counts["C5_exact"] == [3 * 4 * 4] * 2
    assert all(hits == counted for hits, counted in counts.values())


def test_unrelated_content_under_a_shifted_crop_reads_near_chance():
    # At random init a ResNet's cells carry their position (padding) more than their content: an unrelated key
    # view at the SAME box reads far above chance. Under a crop shifted by 64 px the true partner is 4 C4 cells
    # away, so the readout must score what the geometry says, not the grid position.
    pairs = identical_pairs(seed=1)
    pairs["view_k"] = torch.randn(pairs["view_k"].shape, generator=torch.Generator().manual_seed(9))
    model = build_resnet(18, seed=0)
    same_box = count_hits(model, [pairs])["C4_exact"]
    assert same_box[0] > 0.5 * same_box[1]
    pairs["box_k"] = pairs["box_k"] + torch.tensor([64.0, 0.0, 64.0, 0.0])
    pairs["flip_q"] = pairs["flip_k"] = torch.zeros(3, dtype=torch.long)
    hits, counted = count_hits(model, [pairs])["C4_exact"]
    assert counted == 3 * 7 * 3 and hits < 0.2 * counted  # 3 of 7 columns overlap; chance is 1/49 a cell


@pytest.mark.slow
def test_the_tool_writes_a_row_that_pairs_by_seed(image_folder, tmp_path, capsys):
    from tests.conftest import load_tool
    main = load_tool("correspondence").main
    from transfer.results import load_runs
    for seed in (0, 1):
        assert main(["--images", image_folder, "--pairs", "8", "--size", "96", "--seed", str(seed),
                     "--out", str(tmp_path / "random_init")]) == 0
    runs = load_runs(str(tmp_path / "random_init"))
    assert sorted(runs) == [0, 1]
    for result in runs.values():
        values = result["correspondence"]
        assert set(values) == {"C4_exact", "C4_within_one", "C5_exact", "C5_within_one"}
        assert all(0.0 <= v <= 100.0 for v in values.values())
        assert values["C4_within_one"] >= values["C4_exact"]
    data = json.loads((tmp_path / "random_init" / "seed_1" / "final_results.json").read_text())
    assert data["seed"] == 1 and data["evaluation"][0]["pairs"] == 8


def test_a_folder_without_images_is_one_line(tmp_path, capsys):
    from tests.conftest import load_tool
    main = load_tool("correspondence").main
    (tmp_path / "empty").mkdir()
    assert main(["--images", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no readable image" in err[0]


def test_collect_results_pairs_the_readout_by_pretraining_seed(tmp_path):
    from tests.conftest import load_tool, run_main
    from transfer.results import write_final_results
    for name, offset in (("densecl", 0.0), ("geometric_oracle", 1.5)):
        for seed in range(3):
            values = {"C4_exact": 20.0 + seed + offset, "C4_within_one": 60.0 + seed, "C5_exact": 10.0 + seed,
                      "C5_within_one": 40.0 + seed}
            write_final_results(str(tmp_path / name / f"seed_{seed}"), {"correspondence": values}, seed, "w.pth",
                                "{}", probe="correspondence")
    done = run_main(load_tool("collect_results"), tmp_path / "densecl", tmp_path / "geometric_oracle",
                    "--baseline", "densecl", "--out", tmp_path / "table")
    assert done.returncode == 0, done.stderr
    assert "| correspondence/C4_exact | correspondence/C4_within_one | correspondence/C5_exact |" in done.stdout
    assert "| geometric_oracle | densecl | correspondence/C4_exact | 3 | +1.50 |" in done.stdout
