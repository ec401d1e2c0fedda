"""tools/convert.py: exact renaming, every foreign layout, every failure case (non-zero exit, no file)."""
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torchvision

from transfer.data.synthetic import resnet_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
PYTHON = sys.executable


def moco_reference_name(k):
    """The renaming of MoCo's convert-pretrain-to-detectron2.py, written independently of tools/convert.py."""
    if "layer" not in k:
        k = "stem." + k
    for t in [1, 2, 3, 4]:
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in [1, 2, 3]:
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    k = k.replace("downsample.0", "shortcut")
    k = k.replace("downsample.1", "shortcut.norm")
    return k


def test_command_line(tmp_path):
    torch.save(resnet_state(18), tmp_path / "tv.pth")
    result = subprocess.run([PYTHON, os.path.join(TOOLS, "convert.py"), str(tmp_path / "tv.pth"),
                             str(tmp_path / "out.pkl")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "ResNet-18" in result.stdout, result.stderr
    result = subprocess.run([PYTHON, os.path.join(TOOLS, "convert.py"), str(tmp_path / "nope.pth"),
                             str(tmp_path / "x.pkl")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1 and "nope.pth: no such file" in result.stderr
    assert not (tmp_path / "x.pkl").exists()


def expected_detectron2(state):
    return {moco_reference_name(k): v for k, v in state.items()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}


def assert_exact(pkl, state):
    with open(pkl, "rb") as f:
        data = pickle.load(f)
    assert data["matching_heuristics"] is True and "__author__" in data
    expected = expected_detectron2(state)
    assert set(data["model"]) == set(expected)
    for k, v in expected.items():
        assert torch.equal(torch.from_numpy(data["model"][k]), v.float()), k


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_round_trip(tmp_path, depth, convert):
    state = resnet_state(depth)
    src = tmp_path / "tv.pth"
    torch.save(state, src)
    result = convert(src, tmp_path / "out.pkl")
    assert result.returncode == 0, result.stderr
    assert_exact(tmp_path / "out.pkl", state)
    sidecar = json.loads((tmp_path / "out.pkl.json").read_text())
    assert sidecar["depth"] == depth and sidecar["layout"] == "torchvision" and sidecar["encoder"] == "query"
    assert sidecar["input_settings"]["INPUT.FORMAT"] == "RGB"
    assert sidecar["input_settings"]["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    # And back to torchvision: the same tensors, no fc.
    result = convert(src, tmp_path / "clean.pth", "--to", "torchvision")
    assert result.returncode == 0, result.stderr
    clean = torch.load(tmp_path / "clean.pth", weights_only=True)
    assert set(clean) == {k for k in state if not k.startswith("fc.") and "num_batches_tracked" not in k}
    assert all(torch.equal(clean[k], state[k]) for k in clean)


def foreign_checkpoints(q, k):
    """How other projects store a ResNet-18 query encoder ``q`` and momentum encoder ``k``."""
    def pre(prefix, state):
        return {prefix + name: v for name, v in state.items()}
    head = {"fc.0.weight": torch.randn(512, 512), "fc.0.bias": torch.randn(512), "fc.2.weight": torch.randn(128, 512)}
    q_noc = {n: v for n, v in q.items() if not n.startswith("fc.")}
    k_noc = {n: v for n, v in k.items() if not n.startswith("fc.")}
    return {
        "moco_v2": ({"state_dict": {**pre("module.encoder_q.", {**q_noc, **head}),
                                    **pre("module.encoder_k.", {**k_noc, **head}),
                                    "module.queue": torch.randn(128, 16)}, "epoch": 200, "arch": "resnet18"}, "moco"),
        "moco_v3": ({"state_dict": {**pre("module.base_encoder.", {**q_noc, **head}),
                                    **pre("module.momentum_encoder.", {**k_noc, **head}),
                                    "module.predictor.0.weight": torch.randn(4, 4)}}, "mocov3"),
        "densecl_full": ({"state_dict": {**pre("backbone.", q_noc), "neck.mlp.0.weight": torch.randn(4, 4)},
                          "meta": {"epoch": 200}}, "solo-learn"),
        "densecl_stripped": ({"state_dict": q_noc}, "torchvision"),
        "pixpro": ({"model": {**pre("module.encoder.", q_noc), **pre("module.encoder_k.", k_noc),
                              "module.projector.linear1.weight": torch.randn(4, 4),
                              "module.queue": torch.randn(4, 4)}, "epoch": 100}, "pixpro"),
        "solo_learn": ({"state_dict": {**pre("backbone.", q_noc), **pre("momentum_backbone.", k_noc),
                                       "projector.0.weight": torch.randn(4, 4)}}, "solo-learn"),
        "houghcl_full": ({"model": {**pre("encoder_q.backbone.", q_noc), **pre("encoder_k.backbone.", k_noc),
                                    "encoder_q.global_head.0.weight": torch.randn(4, 4),
                                    "queue": torch.randn(4, 4), "queue_ptr": torch.zeros(1, dtype=torch.long)},
                          "iteration": 10}, "houghcl"),
    }


@pytest.mark.slow
def test_foreign_layouts(tmp_path, convert):
    q, k = resnet_state(18, seed=1), resnet_state(18, seed=2)
    for name, (ckpt, layout) in foreign_checkpoints(q, k).items():
        src = tmp_path / f"{name}.pth"
        torch.save(ckpt, src)
        result = convert(src, tmp_path / f"{name}.pkl")
        assert result.returncode == 0, (name, result.stderr)
        assert_exact(tmp_path / f"{name}.pkl", q)
        assert json.loads((tmp_path / f"{name}.pkl.json").read_text())["layout"] == layout, name
        if name in ("moco_v2", "pixpro", "houghcl_full"):
            result = convert(src, tmp_path / f"{name}_k.pkl", "--encoder", "momentum")
            assert result.returncode == 0, (name, result.stderr)
            assert_exact(tmp_path / f"{name}_k.pkl", k)
    # --prefix forces a layout nobody detects.
    torch.save({f"net.trunk.{n}": v for n, v in q.items()}, tmp_path / "odd.pth")
    assert convert(tmp_path / "odd.pth", tmp_path / "odd.pkl").returncode == 1
    result = convert(tmp_path / "odd.pth", tmp_path / "odd.pkl", "--prefix", "net.trunk.")
    assert result.returncode == 0, result.stderr
    assert_exact(tmp_path / "odd.pkl", q)


def failure_inputs(folder):
    """(name, path, text the error must contain) for every input that must be refused."""
    state = resnet_state(18)
    cases = []

    def save(name, obj, expect):
        path = os.path.join(folder, name)
        torch.save(obj, path)
        cases.append((name, path, expect))

    cases.append(("missing", os.path.join(folder, "nope.pth"), "no such file"))
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not a checkpoint\n")
    cases.append(("text", os.path.join(folder, "notes.txt"), "not a readable PyTorch checkpoint"))
    torch.save(state, os.path.join(folder, "full.pth"))
    with open(os.path.join(folder, "full.pth"), "rb") as f, open(os.path.join(folder, "cut.pth"), "wb") as g:
        g.write(f.read()[:100000])
    cases.append(("truncated", os.path.join(folder, "cut.pth"), "truncated"))
    save("unknown.pth", {"state_dict": {"trunk.a.weight": torch.zeros(2)}}, "unknown layout")
    save("missing_keys.pth", {k: v for k, v in state.items() if not k.startswith("layer3.1.bn2.")}, "keys missing")
    extra = dict(state, **{"layer2.0.extra.weight": torch.zeros(3)})
    save("extra.pth", extra, "unexpected backbone keys")
    wrong = dict(state, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    save("shapes.pth", wrong, "wrong shapes")
    save("vgg.pth", torchvision.models.vgg11().state_dict(), "unknown layout")
    broken_resnet = {k: v for k, v in state.items() if not k.startswith("layer4")}
    save("three_stages.pth", broken_resnet, "not a ResNet")
    save("objects.pth", {"state_dict": state, "args": argparse_like()}, "--unsafe-load")
    return cases


class Namespace:
    """Stands for the argparse.Namespace that many training scripts pickle into their checkpoints."""

    def __init__(self):
        self.lr = 0.03


def argparse_like():
    return Namespace()


@pytest.mark.slow
def test_failures_exit_non_zero_and_write_nothing(tmp_path, convert):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    for name, path, expect in failure_inputs(str(inputs)):
        result = convert(path, out / f"{name}.pkl")
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert expect in result.stderr, (name, result.stderr)
        assert os.path.basename(path) in result.stderr, (name, result.stderr)
        assert os.listdir(out) == [], (name, os.listdir(out))  # no output, no temp file


@pytest.mark.slow
@pytest.mark.parametrize("depth", [18, 50])
def test_verify(tmp_path, depth, convert):
    pytest.importorskip("detectron2")
    src = tmp_path / "tv.pth"
    torch.save(resnet_state(depth), src)
    result = convert(src, tmp_path / "out.pkl", "--verify")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "max relative error" in result.stdout
    assert "FPN model" in result.stdout and "backbone parameters loaded" in result.stdout
    # Detectron2's per-key warnings about the heads are summarised in one line per model, not printed.
    assert "not found in the checkpoint" not in result.stderr, result.stderr[-3000:]
    assert "start new as expected for a backbone (backbone.fpn_lateral2, " in result.stdout
    if depth == 50:
        assert "C4 model" in result.stdout and "roi_heads.res5.norm)" in result.stdout
    # The sidecar says whether verification finished: a conversion without it (or killed during it) says False.
    assert json.loads((tmp_path / "out.pkl.json").read_text())["verified"] is True
    assert convert(src, tmp_path / "plain.pkl").returncode == 0
    assert json.loads((tmp_path / "plain.pkl.json").read_text())["verified"] is False
