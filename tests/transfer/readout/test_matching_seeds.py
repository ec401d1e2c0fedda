"""transfer/readout/matching_seeds.py: every `hough` option paired with the reference by pretraining seed, averaged over
disjoint pair sets; tools/eval_matching.py --backbones writes it."""
import json

import pytest
import torch

from pretrain.backbone import torchvision_resnet
from transfer.readout.matching_seeds import REFERENCE, seeds_markdown, seeds_study


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backbones")
    paths = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths[seed] = str(folder / f"backbone{seed}.pth")
        torch.save(torchvision_resnet(18).state_dict(), paths[seed])
    return paths


def test_differences_are_per_seed_means_over_pair_sets(backbones, image_folder):
    study = seeds_study(backbones, image_folder, [0, 1], pairs=4, size=64)
    assert REFERENCE not in study["against_reference"] and "argmax" in study["against_reference"]
    for name, parts in study["against_reference"].items():
        c = parts["all"]
        assert c["seeds"] == [0, 1]
        for seed, diff in zip(c["seeds"], c["differences"]):
            mine, ref = study["cells"][name]["all"][seed], study["cells"][REFERENCE]["all"][seed]
            assert len(mine) == 2
            assert diff == pytest.approx(sum(mine) / 2 - sum(ref) / 2)
    table = seeds_markdown(study).splitlines()
    assert table[2].startswith(f"| {REFERENCE} |") and table[2].endswith("| - | - | - |")


def test_the_tool_writes_json_and_markdown_and_refuses_a_bad_item(run_tool, backbones, image_folder, tmp_path):
    out = tmp_path / "c5.json"
    done = run_tool("eval_matching", "--images", image_folder, "--backbones", f"0={backbones[0]}",
                    f"1={backbones[1]}", "--pair-sets", "0", "1", "--pairs", 2, "--size", 64, "--out", out)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(out.read_text())["per_seed"]) >= {REFERENCE, "argmax"}
    assert (tmp_path / "c5.json.md").read_text().startswith("| matcher and options |")
    bad = run_tool("eval_matching", "--images", image_folder, "--backbones", backbones[0], "--out", tmp_path / "b")
    assert bad.returncode == 2 and "SEED=PATH" in bad.stderr and not (tmp_path / "b").exists()
