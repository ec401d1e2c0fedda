"""Weights as users bring them: safetensors, ResNeXt and wide ResNets, heads, Detectron2 files, truthful sidecars."""
import json
import pickle

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

from transfer.data.synthetic import resnet_state

pytest.importorskip("detectron2")

from transfer.finetune.config import CONFIGS, setup_cfg  # noqa: E402
from transfer.weights import WeightsError, check_input_settings  # noqa: E402


def test_output_extension_is_checked_before_any_work(tmp_path, convert):
    torch.save(resnet_state(18), tmp_path / "r18.pth")
    result = convert(tmp_path / "r18.pth", tmp_path / "out.pth")
    assert result.returncode == 1 and "detectron2 output is a .pkl file, not .pth" in result.stderr
    assert "--to torchvision" in result.stderr
    result = convert(tmp_path / "r18.pth", tmp_path / "out.pkl", "--to", "torchvision")
    assert result.returncode == 1 and "not .pkl" in result.stderr
    result = convert(tmp_path / "r18.pth", tmp_path / "out.bin")
    assert result.returncode == 1 and "unknown output extension" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.pth"]


def test_safetensors_in_and_out(tmp_path, convert):
    state = resnet_state(18)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "r18.safetensors")
    result = convert(tmp_path / "r18.safetensors", tmp_path / "back.safetensors", "--to", "torchvision")
    assert result.returncode == 0, result.stderr
    back = load_file(tmp_path / "back.safetensors")
    expected = {k: v for k, v in state.items() if not k.startswith("fc.") and "num_batches_tracked" not in k}
    assert set(back) == set(expected) and all(torch.equal(back[k], v) for k, v in expected.items())
    assert json.loads((tmp_path / "back.safetensors.json").read_text())["format"] == "torchvision"
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "r18.safetensors").read_bytes()[:5000])
    result = convert(tmp_path / "cut.safetensors", tmp_path / "cut.pkl")
    assert result.returncode == 1 and "cut.safetensors: not a readable safetensors file" in result.stderr


@pytest.mark.slow
def test_resnext_safetensors_verifies_into_resnext_c4(tmp_path, convert):
    torch.manual_seed(0)
    model = torchvision.models.resnext50_32x4d()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "x.safetensors")
    result = convert(tmp_path / "x.safetensors", tmp_path / "x.pkl", "--verify")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ResNeXt-50 32x4d" in result.stdout and "C4 model" in result.stdout
    assert "backbone parameters loaded" in result.stdout
    sidecar = json.loads((tmp_path / "x.pkl.json").read_text())
    assert (sidecar["groups"], sidecar["width_per_group"]) == (32, 4)
    assert sidecar["architecture_settings"]["MODEL.RESNETS.NUM_GROUPS"] == 32
    # train_net's check: a config that builds a plain ResNet-50 is refused for these weights.
    cfg = setup_cfg(f"{CONFIGS}/voc_R_50_C4_24k.yaml")
    with pytest.raises(WeightsError, match="MODEL.RESNETS.NUM_GROUPS is 1, the weights need 32"):
        check_input_settings(cfg, str(tmp_path / "x.pkl"))
    cfg = setup_cfg(f"{CONFIGS}/voc_R_50_C4_24k.yaml", ["MODEL.RESNETS.NUM_GROUPS", 32,
                                                        "MODEL.RESNETS.WIDTH_PER_GROUP", 4])
    assert check_input_settings(cfg, str(tmp_path / "x.pkl"))


@pytest.mark.slow
def test_wide_resnet_verifies_into_c4_and_fpn(tmp_path, convert):
    torch.save(torchvision.models.wide_resnet50_2().state_dict(), tmp_path / "wide.pth")
    result = convert(tmp_path / "wide.pth", tmp_path / "wide.pkl", "--verify")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ResNet-50 (width 128)" in result.stdout
    assert "verify: C4 model" in result.stdout and "verify: FPN model" in result.stdout
    sidecar = json.loads((tmp_path / "wide.pkl.json").read_text())
    assert (sidecar["groups"], sidecar["width_per_group"]) == (1, 128)


def test_heads_under_the_ddp_prefix_are_dropped_by_name(tmp_path, convert):
    state = resnet_state(18)
    swav = {f"module.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    swav.update({"module.projection_head.0.weight": torch.randn(8, 512), "module.prototypes.weight": torch.randn(3, 8),
                 "module.extra.weight": torch.randn(2)})
    torch.save({"state_dict": swav}, tmp_path / "swav.pth")
    result = convert(tmp_path / "swav.pth", tmp_path / "swav.pkl")
    assert result.returncode == 1 and "unexpected backbone keys" in result.stderr and "extra.weight" in result.stderr
    result = convert(tmp_path / "swav.pth", tmp_path / "swav.pkl", "--drop", "module.extra.")
    assert result.returncode == 0, result.stderr
    assert "layout ddp" in result.stdout and "heads: projection_head, prototypes" in result.stdout
    assert "module.projection_head (" in result.stdout and "module.prototypes (" in result.stdout  # named, counted
    # BN's step counters are said to be what they are, not listed as a dropped part of the network ("module.layer1")
    counters = sum(k.endswith("num_batches_tracked") for k in state)
    assert f"BN num_batches_tracked counters ({counters})" in result.stdout and "module.layer1 (" not in result.stdout
    with open(tmp_path / "swav.pkl", "rb") as f:
        assert len(pickle.load(f)["model"]) == len([k for k in state if k.startswith(("conv1", "bn1", "layer"))
                                                    and "num_batches_tracked" not in k])
    assert json.loads((tmp_path / "swav.pkl.json").read_text())["drop"] == ["module.extra."]


def test_a_detectron2_file_as_input_is_named_as_such(tmp_path, convert):
    torch.save(resnet_state(18), tmp_path / "r18.pth")
    assert convert(tmp_path / "r18.pth", tmp_path / "r18.pkl").returncode == 0
    result = convert(tmp_path / "r18.pkl", tmp_path / "again.pkl")
    assert result.returncode == 1 and "r18.pkl: is already a Detectron2 file" in result.stderr


def test_sidecar_says_what_was_done(tmp_path, convert):
    q, k = resnet_state(18, seed=1), resnet_state(18, seed=2)
    full = {**{f"encoder_q.0.{n}": v for n, v in q.items()}, **{f"encoder_k.0.{n}": v for n, v in k.items()}}
    torch.save({"model": full}, tmp_path / "odd.pth")
    assert convert(tmp_path / "odd.pth", tmp_path / "k.pkl", "--prefix", "encoder_k.0.").returncode == 0
    sidecar = json.loads((tmp_path / "k.pkl.json").read_text())
    assert sidecar["layout"] == "given" and not sidecar["layout_detected"] and sidecar["encoder"] is None
    assert sidecar["prefix"] == "encoder_k.0." and sidecar["source_dtype"] == "float32"
    pixpro = {**{f"module.encoder.{n}": v.half() for n, v in q.items()},
              **{f"module.encoder_k.{n}": v.half() for n, v in k.items()}}
    torch.save({"model": pixpro}, tmp_path / "pixpro.pth")
    assert convert(tmp_path / "pixpro.pth", tmp_path / "p.pkl", "--encoder", "momentum").returncode == 0
    sidecar = json.loads((tmp_path / "p.pkl.json").read_text())
    assert (sidecar["layout"], sidecar["encoder"], sidecar["source_dtype"]) == ("pixpro", "momentum", "float16")


def test_a_sidecar_of_other_bytes_is_refused(tmp_path, convert):
    # A kill between the two renames of a conversion leaves the new weights beside the old sidecar.
    from transfer.weights import read_sidecar
    state = resnet_state(18)
    torch.save(state, tmp_path / "a.pth")
    torch.save({k: (v + 1 if v.is_floating_point() else v) for k, v in state.items()}, tmp_path / "b.pth")
    for name in ("a", "b"):
        assert convert(tmp_path / f"{name}.pth", tmp_path / f"{name}.pkl").returncode == 0
    assert read_sidecar(str(tmp_path / "a.pkl"))["source"].endswith("a.pth")
    (tmp_path / "a.pkl").write_bytes((tmp_path / "b.pkl").read_bytes())
    with pytest.raises(WeightsError, match="a.pkl.json describes other bytes than .*a.pkl"):
        read_sidecar(str(tmp_path / "a.pkl"))
    cfg = setup_cfg(f"{CONFIGS}/coco_R_50_FPN_1x.yaml", ["MODEL.DEVICE", "cpu"])
    with pytest.raises(WeightsError, match="reconvert"):
        check_input_settings(cfg, str(tmp_path / "a.pkl"))


def test_weights_detectron2_cannot_use_are_one_sentence_before_any_work(tmp_path, convert):
    from transfer.weights import check_weights_file
    torch.save(resnet_state(18), tmp_path / "backbone.pth")
    assert convert(tmp_path / "backbone.pth", tmp_path / "r18.pkl").returncode == 0
    check_weights_file(str(tmp_path / "r18.pkl"))  # what tools/convert.py writes is fine
    data = (tmp_path / "r18.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(data[:len(data) // 3])
    pickle.dump([1, 2, 3], open(tmp_path / "list.pkl", "wb"))
    (tmp_path / "cut.pth").write_bytes((tmp_path / "backbone.pth").read_bytes()[:5000])
    save_file({"conv1.weight": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 8 + b'{"a": 1' + b"\x00" * 20)
    cases = {"cut.pkl": "not a readable pickle, truncated or damaged",
             "list.pkl": "a pickle of list, not a Detectron2 weights file",
             "cut.pth": "truncated or damaged",
             "x.safetensors": "a safetensors file, which Detectron2 does not read; convert it first",
             "bad.safetensors": "bad.safetensors",
             "backbone.pth": "an unconverted checkpoint (names such as conv1.weight, layer1.*); convert it first "
                             f"(tools/convert.py {tmp_path / 'backbone.pth'} {tmp_path / 'backbone'}.pkl)"}
    for name, expect in cases.items():
        with pytest.raises(WeightsError) as error:
            check_weights_file(str(tmp_path / name))
        assert expect in str(error.value) and "\n" not in str(error.value), (name, str(error.value))
