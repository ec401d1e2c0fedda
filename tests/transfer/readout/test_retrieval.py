import json
import math
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from transfer.data.synthetic import write_voc
from transfer.readout.retrieval import (
    Memory,
    MemorySpec,
    NeighbourIndex,
    brute_force,
    build_memory,
    dilate_last_stage,
    patch_labels,
    predict,
    sample_patches,
    stride_of,
    transfer_labels,
)
from transfer.readout.retrieval_data import box_label_sets, file_set, paint_boxes, parse_fraction, read_sample
from transfer.readout.retrieval_eval import load_backbone, score

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def blocks_set(folder, count=3, size=64, block=16, classes=3, seed=0):
    """Images of random noise whose labels are vertical stripes ``block`` pixels wide (one class per column of C4
    patches at stride 16: the bilinear upsampling of one-hot patch scores gives the stripes back, where blocks
    would meet at corners that it rounds off): records for the retrieval."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    records = []
    for i in range(count):
        image = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        cells = rng.integers(0, classes, (1, size // block)).repeat(size // block, 0)
        labels = np.kron(cells, np.ones((block, block), dtype=np.int64)).astype(np.uint8)
        paths = [os.path.join(folder, f"{i}.png"), os.path.join(folder, f"{i}_labels.png")]
        Image.fromarray(image).save(paths[0])
        Image.fromarray(labels).save(paths[1])
        records.append({"file_name": paths[0], "sem_seg_file_name": paths[1]})
    return records


def test_faiss_neighbours_equal_a_brute_force_torch_search():
    gen = torch.Generator().manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(500, 32, generator=gen), dim=1)
    keys[100:110] = keys[5]  # exact ties: broken by bank index, in both
    queries = torch.cat([torch.nn.functional.normalize(torch.randn(40, 32, generator=gen), dim=1), keys[[5, 7]]])
    sims, found = NeighbourIndex(keys).search(queries, 12)
    ref_sims, ref_found = brute_force(keys, queries, 12)
    assert torch.equal(found, ref_found)
    assert torch.allclose(sims, ref_sims, atol=1e-12)
    assert found[-2].tolist()[:11] == [5, *range(100, 110)]  # the ties of key 5, in index order


def test_label_transfer_is_the_softmax_weighted_sum_of_the_neighbours_labels():
    gen = torch.Generator().manual_seed(1)
    sims = torch.rand(6, 5, generator=gen, dtype=torch.float64)
    neighbours = torch.randint(0, 20, (6, 5), generator=gen)
    labels = torch.rand(20, 3, generator=gen)
    got = transfer_labels(sims, neighbours, labels, 0.02)
    for q in range(6):
        weights = [math.exp(s / 0.02) for s in sims[q].tolist()]
        for c in range(3):
            expected = sum(w * float(labels[n, c]) for w, n in zip(weights, neighbours[q].tolist())) / sum(weights)
            assert got[q, c].item() == pytest.approx(expected, rel=1e-9)


def test_patch_labels_are_the_class_shares_of_each_patch_and_ignore_counts_for_none():
    labels = torch.tensor([[0, 1, 2, 2], [255, 1, 2, 2], [0, 0, 1, 1], [0, 0, 1, 255]])[None]
    shares = patch_labels(labels, 3, 2)[0]
    assert shares[0, 0].tolist() == [0.25, 0.5, 0.0]   # one pixel ignored: its quarter is in no class
    assert shares[0, 1].tolist() == [0.0, 0.0, 1.0]
    assert shares[1, 0].tolist() == [1.0, 0.0, 0.0]
    assert shares[1, 1].tolist() == [0.0, 0.75, 0.0]
    with pytest.raises(ValueError, match="outside 0..2"):
        patch_labels(torch.tensor([[[3, 0], [0, 0]]]), 3, 2)


def test_bank_sampling_keeps_the_rarest_classes_first():
    shares = torch.zeros(10, 3)
    shares[:8, 0] = 1            # class 0 in eight patches
    shares[8, 1] = 1             # class 1 in one
    shares[9] = 0                # no labelled pixel: last
    kept = sample_patches(shares, 2, torch.Generator().manual_seed(0))
    assert 8 in kept.tolist() and 9 not in kept.tolist()
    assert sorted(sample_patches(shares, 10, torch.Generator().manual_seed(0)).tolist())[-1] == 9


def test_identical_test_and_training_images_score_100_at_k_1(tmp_path):
    records = blocks_set(str(tmp_path))
    model = load_backbone(None, 18, seed=0)
    spec = MemorySpec(size=64, augment=False)
    memory = build_memory(model, [read_sample(r) for r in records], 3, spec)
    assert len(memory.keys) == 3 * 16
    index = NeighbourIndex(memory.keys)
    found = score(records, ["a", "b", "c"], (predict(model, index, memory, read_sample(r)[0], spec, 1, 0.02)
                                             for r in records))
    assert found["mIoU"] == pytest.approx(100.0) and found["pACC"] == pytest.approx(100.0)


def test_a_shuffled_label_bank_scores_chance(tmp_path):
    records = blocks_set(str(tmp_path), count=6, classes=2, seed=3)
    model = load_backbone(None, 18, seed=0)
    spec = MemorySpec(size=64, augment=False)
    memory = build_memory(model, [read_sample(r) for r in records], 2, spec)
    order = torch.randperm(len(memory.labels), generator=torch.Generator().manual_seed(0))
    shuffled = Memory(memory.keys, memory.labels[order])
    index = NeighbourIndex(shuffled.keys)
    preds = [predict(model, index, shuffled, read_sample(r)[0], spec, 1, 0.02).argmax(0) for r in records]
    truth = [read_sample(r)[1] for r in records]
    pred_share = torch.cat([p.flatten() for p in preds]).double().mean().item()       # share predicted 1
    true_share = torch.cat([t.flatten() for t in truth]).double().mean().item()
    chance = 100 * (pred_share * true_share + (1 - pred_share) * (1 - true_share))    # independent labels
    accuracy = 100 * sum((p == t).sum().item() for p, t in zip(preds, truth)) / sum(t.numel() for t in truth)
    assert abs(accuracy - chance) < 12  # 96 patches: a binomial spread of about 5 points
    unshuffled = [predict(model, NeighbourIndex(memory.keys), memory, read_sample(r)[0], spec, 1, 0.02).argmax(0)
                  for r in records]
    assert all(torch.equal(p, t) for p, t in zip(unshuffled, truth))


def test_constant_features_give_every_pixel_the_banks_majority_class(tmp_path):
    # all keys equal: every test patch weights the first k bank patches equally (ties by index), so that every
    # pixel takes their majority class: class m's IoU is its pixel share, the others' 0
    records = blocks_set(str(tmp_path), count=2, classes=3, seed=5)
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]])
    memory = Memory(torch.nn.functional.normalize(torch.ones(5, 8), dim=1), labels)
    sims, neighbours = NeighbourIndex(memory.keys).search(memory.keys[:1].repeat(4, 1), 3)
    assert neighbours.tolist() == [[0, 1, 2]] * 4
    scores = transfer_labels(sims, neighbours, memory.labels, 0.02)
    assert torch.allclose(scores, torch.tensor([[1 / 3, 2 / 3, 0]], dtype=torch.float64).expand(4, 3))
    truth = torch.cat([read_sample(r)[1].flatten() for r in records])
    predictions = [scores[0].float()[:, None, None].expand(3, *read_sample(r)[1].shape) for r in records]
    found = score(records, ["a", "b", "c"], predictions)
    share = 100 * (truth == 1).double().mean().item()
    assert found["IoU-b"] == pytest.approx(share) and found["IoU-a"] == 0 and found["IoU-c"] == 0
    assert found["mIoU"] == pytest.approx(share / 3)


def test_file_sets_are_seeded_and_the_same_in_another_interpreter():
    records = [{"file_name": f"img_{i:03d}.jpg"} for i in range(300)]
    chosen = [r["file_name"] for r in file_set(records, Fraction(1, 64), 42)]
    assert len(chosen) == 4 and chosen != [r["file_name"] for r in file_set(records, Fraction(1, 64), 783)]
    assert file_set(records[::-1], Fraction(1, 64), 42) == file_set(records, Fraction(1, 64), 42)  # order-free
    code = ("from fractions import Fraction; from transfer.readout.retrieval_data import file_set; "
            "print([r['file_name'] for r in file_set([{'file_name': f'img_{i:03d}.jpg'} for i in range(300)], "
            "Fraction(1, 64), 42)])")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == str(chosen)
    assert len(file_set(records, Fraction(1, 1), 0)) == 300
    with pytest.raises(ValueError, match="--fraction 2"):
        parse_fraction("2")


def test_boxes_are_painted_by_pixel_centre():
    labels = paint_boxes([(1, (2.0, 1.0, 5.0, 3.0)), (2, (4.4, 0.0, 6.0, 1.6))], 8, 4)
    expected = np.zeros((4, 8), np.uint8)
    expected[1:3, 2:5] = 1
    expected[0:2, 4:6] = 2  # pixel 4's centre (4.5) is inside 4.4..6.0; the later box wins
    assert (labels == expected).all()


def test_dilated_c5_has_stride_16_and_the_same_weights(tmp_path):
    model = load_backbone(None, 18, seed=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert stride_of(model, "layer4", 64) == 32
    dilate_last_stage(model)
    assert stride_of(model, "layer4", 64) == 16
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_converted_pkl_reads_back_as_its_source(tmp_path):
    import pickle

    from pretrain.backbone import extract_resnet
    from transfer.data.synthetic import resnet_state
    from transfer.weights import to_detectron2
    state = resnet_state(18)
    source = tmp_path / "backbone.pth"
    torch.save(state, source)
    with open(tmp_path / "backbone.pkl", "wb") as f:
        pickle.dump(to_detectron2(extract_resnet(state)), f)
    a, b = load_backbone([str(source)]), load_backbone([str(tmp_path / "backbone.pkl")])
    differ = [k for k, v in a.state_dict().items() if not torch.equal(v, b.state_dict()[k])]
    assert differ == ["fc.weight", "fc.bias"]  # the classifier is no part of a backbone file
    with open(tmp_path / "other.pkl", "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}}, f)
    with pytest.raises(Exception, match="not written by tools/convert.py"):
        load_backbone([str(tmp_path / "other.pkl")])


def run_tool(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "dense_retrieval.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_the_tool_scores_a_voc_set_through_its_boxes_and_writes_paired_results(tmp_path):
    base = write_voc(str(tmp_path), train=3, test=2, size=(64, 64))
    out = tmp_path / "out"
    done = run_tool("--voc", base, "--train", "trainval", "--size", 64, "--seed", 3, "--out", out)
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "seed_3" / "final_results.json").read_text())
    assert set(data["results"]["retrieval"]) >= {"mIoU", "mACC", "pACC"} and data["seed"] == 3
    assert data["evaluation"][0]["classes"] == ["background", "car", "person"]
    assert "memory bank: at most 48 patches x 256 dimensions x 4 bytes" in done.stdout
    _, test, classes = box_label_sets(base, "trainval", "test", str(tmp_path / "labels"))
    assert len(test) == 2 and classes[0] == "background"
    from transfer.results import load_runs
    assert load_runs(str(out))[3]["retrieval"]["mIoU"] == data["results"]["retrieval"]["mIoU"]


@pytest.mark.parametrize("args, message", [
    (["--fraction", "3/2"], "--fraction 3/2"),
    (["--train", "nope", "--test", "nope"], "--train/--test nope: no such set"),
    (["--voc", "missing_dir"], "missing_dir"),
    (["--weights", "missing.pth", "--voc", "x"], "missing"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, args, message):
    done = run_tool(*args, "--out", tmp_path / "out")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in done.stderr


def test_the_tool_reads_a_registered_label_map_set(tmp_path):
    from transfer.data.synthetic import write_sem_seg
    root = write_sem_seg(str(tmp_path / "set"), classes=3, size=(64, 64))
    parts = [os.path.join(root, "images"), os.path.join(root, "labels")]
    done = run_tool("--sem-seg", "s_train", *parts, os.path.join(root, "train.txt"), "--sem-seg", "s_test", *parts,
                    os.path.join(root, "test.txt"), "--classes", "bg", "a", "b", "--train", "s_train", "--test",
                    "s_test", "--size", 64, "--fraction", "1/2", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "out" / "seed_0" / "final_results.json").read_text())
    assert data["evaluation"][0]["classes"] == ["bg", "a", "b"] and "IoU-b" in data["results"]["retrieval"]
    assert len((tmp_path / "out" / "seed_0" / "file_set.txt").read_text().split()) == 2  # half of 4 images


def test_unlabelled_training_maps_and_a_bank_beyond_memory_stop_before_any_forward_pass(tmp_path, monkeypatch):
    from transfer.readout import retrieval_eval
    records = blocks_set(str(tmp_path / "blocks"))
    for record in records:  # every pixel unlabelled
        Image.fromarray(np.full((64, 64), 255, np.uint8)).save(record["sem_seg_file_name"])

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran")
    monkeypatch.setattr(retrieval_eval, "reestimate_bn", no_forward)
    monkeypatch.setattr(retrieval_eval, "build_memory", no_forward)
    spec = MemorySpec(size=64, augment=False)
    with pytest.raises(ValueError, match="hold no labelled pixel .* the memory bank would be empty"):
        retrieval_eval.evaluate(records, records, ["a", "b", "c"], None, spec)
    # a bank asked for 10^12 patches holds at most every patch there is, and is compared with the memory
    logged = []
    monkeypatch.setattr(retrieval_eval, "available_memory", lambda: 10 * 2 ** 20)
    big = blocks_set(str(tmp_path / "big"), count=3)
    with pytest.raises(ValueError, match=r"needs about .* GiB .* give a smaller --bank-size"):
        retrieval_eval.evaluate(big, big, ["a", "b", "c"], None, MemorySpec(size=64, bank_size=10 ** 12,
                                                                            epochs=10 ** 5), log=logged.append)
    assert logged == ["memory bank: at most 4,800,000 patches x 256 dimensions x 4 bytes = 4687.5 MiB (3 images x "
                      "100000 augmentation epochs, 16 cells of layer3 each)"]
    retrieval_eval.check_memory(10 ** 6, 256, 3, available=2 ** 31)  # about 2 GiB needed: fits
    with pytest.raises(ValueError, match="1.9 GiB .* 1.0 GiB are available"):
        retrieval_eval.check_memory(10 ** 6, 256, 3, available=2 ** 30)
