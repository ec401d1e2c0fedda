import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from scipy import optimize

from transfer.data.synthetic import write_voc
from transfer.readout.dense_probe import (
    average_precision,
    cell_labels,
    fit_logistic,
    load_tiles,
    reestimate_backbone_bn,
    training_half,
)
from transfer.readout.precise_bn import reestimate_bn


def test_cell_labels_equal_a_loop_over_cells_and_boxes():
    boxes = torch.tensor([[10, 5, 60, 40], [70, 70, 99, 95], [0, 0, 3, 3]], dtype=torch.float32)
    height, width, gh, gw = 100, 120, 7, 9
    expected = torch.zeros(gh, gw, dtype=torch.bool)
    for i in range(gh):
        for j in range(gw):
            y, x = (i + 0.5) * height / gh, (j + 0.5) * width / gw
            expected[i, j] = any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in boxes.tolist())
    assert torch.equal(cell_labels(boxes, height, width, gh, gw), expected)
    assert expected.any() and not expected.all()
    assert not cell_labels(torch.zeros(0, 4), height, width, gh, gw).any()


def test_average_precision_is_the_mean_precision_at_each_positive():
    rng = np.random.default_rng(1)
    scores, labels = rng.random(200), rng.random(200) < 0.3
    ranked = np.argsort(-scores)
    by_hand = np.mean([labels[ranked[:k + 1]].mean() for k in range(200) if labels[ranked[k]]])
    assert average_precision(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(by_hand, abs=1e-12)
    assert average_precision(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([True, True, False])) == 1.0
    assert np.isnan(average_precision(torch.tensor([1.0, 2.0]), torch.tensor([False, False])))


def test_logistic_fit_equals_scipy_minimiser_of_the_same_objective():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5))
    y = (x @ np.array([1.5, -2.0, 0.0, 0.5, 1.0]) + 0.3 + rng.normal(size=300) > 0)
    decay = 1e-2

    def objective(p):
        z = x @ p[:5] + p[5]
        return np.mean(np.logaddexp(0, z) - y * z) + decay * np.sum(p[:5] ** 2)

    reference = optimize.minimize(objective, np.zeros(6), method="BFGS", options={"gtol": 1e-10}).x
    w, b = fit_logistic(torch.tensor(x), torch.tensor(y), weight_decay=decay)
    assert np.allclose(w.numpy(), reference[:5], atol=1e-5) and abs(float(b) - reference[5]) < 1e-5


def test_bn_reestimation_averages_the_batch_statistics_of_the_stem():
    import torchvision

    from pretrain.backbone import normalise
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    images = [torch.rand(3, 32, 32) for _ in range(6)]
    reestimate_backbone_bn(model, images, "layer3", batch=3)
    assert not model.training
    with torch.no_grad():
        stem = [model.conv1(normalise(torch.stack(images[i:i + 3]))) for i in (0, 3)]
    expected = torch.stack([s.mean((0, 2, 3)) for s in stem]).mean(0)
    assert torch.allclose(model.bn1.running_mean, expected, atol=1e-5)


def test_bn_reestimated_through_the_read_stage_gives_the_features_of_a_whole_network_pass():
    """The readouts re-estimate BN only through the stage they read: the features are those of fvcore's precise BN
    over the whole network, to the bit, and the deeper stage keeps its statistics."""
    import copy

    from fvcore.nn.precise_bn import update_bn_stats

    from pretrain.backbone import normalise, resnet_features
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    batches = [normalise(torch.rand(4, 3, 64, 64)) for _ in range(3)]
    whole = copy.deepcopy(model).train()
    with torch.no_grad():
        update_bn_stats(whole, batches, len(batches))
    whole.eval()
    deep_stats = model.layer4[1].bn2.running_mean.clone()
    reestimate_bn(model, batches, "layer3")
    probe = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(resnet_features(model, probe, "layer3"), resnet_features(whole, probe, "layer3"))
    assert torch.equal(model.layer4[1].bn2.running_mean, deep_stats)
    assert not torch.equal(whole.layer4[1].bn2.running_mean, deep_stats)


def test_training_halves_are_seeded_halves_the_same_in_every_process():
    halves = [training_half(10, seed) for seed in range(200)]
    assert all(len(h) == 5 and h == sorted(set(h)) and set(h) <= set(range(10)) for h in halves)
    assert len({tuple(h) for h in halves}) > 100  # seeds draw different halves (252 exist)
    counts = [sum(i in h for h in halves) for i in range(10)]
    assert min(counts) > 70 and max(counts) < 130  # every tile in about half of them
    assert training_half(1, 0) == [0]
    # Another interpreter (another hash seed) draws the same halves: every backbone is fitted on the same tiles.
    code = "from transfer.readout.dense_probe import training_half; print([training_half(10, s) for s in range(5)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == str(halves[:5])


def test_tool_writes_seeds_that_rerun_identically_and_collect(tmp_path, run_tool):
    voc = write_voc(str(tmp_path), classes=("box",), train=8, test=4, size=(128, 128))
    runs = []
    for out in ("a", "b"):
        result = run_tool("dense_probe", voc, "--train", "trainval", "--seeds", 2, "--out", tmp_path / out)
        assert result.returncode == 0, result.stderr
        runs.append([json.load(open(tmp_path / out / f"seed_{k}" / "final_results.json")) for k in range(2)])
    assert [r["results"] for r in runs[0]] == [r["results"] for r in runs[1]]
    first = runs[0][0]["results"]["dense"]
    # Flat rectangles on a textured background: even random features separate them from it.
    assert first["AP"] > 100 * first["positives"] + 5
    collected = run_tool("collect_results", tmp_path / "a", tmp_path / "b", "--baseline", "a")
    assert collected.returncode == 0 and "dense/AP" in collected.stdout and "+0.00" in collected.stdout


def test_tool_names_a_missing_split(tmp_path, run_tool):
    voc = write_voc(str(tmp_path), classes=("box",), train=2, test=1)
    result = run_tool("dense_probe", voc, "--seeds", 1, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "train.txt" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "out")


def test_as_seed_records_the_mean_over_halves_and_draws_the_random_init(tmp_path, run_tool):
    voc = write_voc(str(tmp_path), classes=("box",), train=6, test=3, size=(96, 96))
    halves = run_tool("dense_probe", voc, "--train", "trainval", "--seeds", 2, "--out", tmp_path / "halves")
    assert halves.returncode == 0, halves.stderr
    aps = [json.load(open(tmp_path / "halves" / f"seed_{k}" / "final_results.json"))["results"]["dense"]["AP"]
           for k in range(2)]
    for seed in (0, 3):
        assert run_tool("dense_probe", voc, "--train", "trainval", "--seeds", 2, "--as-seed", seed,
                        "--out", tmp_path / "pooled").returncode == 0
    pooled = {k: json.load(open(tmp_path / "pooled" / f"seed_{k}" / "final_results.json")) for k in (0, 3)}
    assert pooled[0]["seed"] == 0 and pooled[0]["results"]["dense"]["AP"] == pytest.approx(sum(aps) / 2)
    assert pooled[3]["results"]["dense"]["AP"] != pooled[0]["results"]["dense"]["AP"]  # another random init
    assert sorted(os.listdir(tmp_path / "pooled")) == ["seed_0", "seed_3"]


def test_several_checkpoints_are_probed_as_their_averaged_weights(tmp_path, run_tool):
    voc = write_voc(str(tmp_path), classes=("box",), train=6, test=3, size=(96, 96))
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append({k: v for k, v in torchvision.models.resnet18().state_dict().items()
                       if not k.startswith("fc.") and not k.endswith("num_batches_tracked")})
        torch.save({"model": {f"encoder_q.backbone.{k}": v for k, v in states[-1].items()}},
                   tmp_path / f"model_{seed}.pth")
    torch.save({k: (states[0][k] + states[1][k]) / 2 for k in states[0]}, tmp_path / "mean.pth")
    args = [voc, "--train", "trainval", "--seeds", 2, "--as-seed", 0]
    averaged = run_tool("dense_probe", *args, "--weights", tmp_path / "model_1.pth", tmp_path / "model_2.pth",
                        "--out", tmp_path / "averaged")
    by_hand = run_tool("dense_probe", *args, "--weights", tmp_path / "mean.pth", "--out", tmp_path / "by_hand")
    first = run_tool("dense_probe", *args, "--weights", tmp_path / "model_1.pth", "--out", tmp_path / "first")
    assert averaged.returncode == by_hand.returncode == first.returncode == 0, averaged.stderr
    read = {name: json.load(open(tmp_path / name / "seed_0" / "final_results.json"))
            for name in ("averaged", "by_hand", "first")}
    assert read["averaged"]["results"]["dense"]["AP"] == pytest.approx(read["by_hand"]["results"]["dense"]["AP"],
                                                                       abs=1e-6)
    assert read["averaged"]["results"]["dense"]["AP"] != read["first"]["results"]["dense"]["AP"]
    assert read["averaged"]["weights"] == f"{tmp_path / 'model_1.pth'} + {tmp_path / 'model_2.pth'}"
    # A backbone.pth holds no momentum encoder: one line that names the file, nothing written.
    missing = run_tool("dense_probe", *args, "--weights", tmp_path / "mean.pth", "--encoder", "key",
                       "--out", tmp_path / "key")
    assert missing.returncode == 1 and "mean.pth: layout torchvision holds no key encoder" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "key")


def test_a_class_only_in_the_test_split_counts_and_is_named(tmp_path, run_tool):
    """The probe is class-agnostic (a cell inside any box): a class the training split lacks used to be dropped
    from the score without a word, turning its boxes into background."""
    voc = write_voc(str(tmp_path), classes=("box",), train=4, test=2, size=(96, 96))
    annotation = tmp_path / "VOC2007" / "Annotations" / "000005.xml"  # a test image
    annotation.write_text(annotation.read_text().replace("<name>box</name>", "<name>crate</name>"))
    result = run_tool("dense_probe", voc, "--train", "trainval", "--seeds", 1, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "note: classes only in the test split, counted as objects like the others: crate" in result.stdout

    def share(classes):  # of test cells inside a box, on the probe's 6 x 6 grid of layer3 at 96 px
        cells = [cell_labels(t["boxes"], *t["image"].shape[1:], 6, 6) for t in load_tiles(voc, "test", classes)]
        return float(torch.cat([c.flatten() for c in cells]).float().mean())
    recorded = json.load(open(tmp_path / "out" / "seed_0" / "final_results.json"))["results"]["dense"]["positives"]
    assert recorded == pytest.approx(share(["box", "crate"])) and recorded > share(["box"])
