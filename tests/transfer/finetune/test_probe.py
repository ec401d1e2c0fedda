"""The frozen-backbone probe: BN statistics re-estimated on training batches (against a direct computation),
then the ResNet frozen; end to end, training leaves the backbone exactly as loaded, and an evaluation of the
trained probe reprints its final results."""
import json
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from transfer.data.synthetic import resnet_state, write_voc

pytest.importorskip("detectron2")

from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from transfer.finetune.config import CONFIGS, setup_cfg  # noqa: E402
from transfer.finetune.probe import freeze_backbone, reestimate_detector_bn, resnet_of  # noqa: E402

PROBE = os.path.join(CONFIGS, "tiny", "trees_R_18_FPN_probe_cpu.yaml")


def batches(count=3, size=(96, 128), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[{"image": (torch.rand(3, *size, generator=g) * 255).float(), "height": size[0], "width": size[1]}
             for _ in range(2)] for _ in range(count)]


def test_bn_statistics_are_the_average_over_training_batches_then_frozen():
    cfg = setup_cfg(PROBE, ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    data = batches()
    assert reestimate_detector_bn(model, data, len(data)) == 20
    stem = resnet_of(model).stem
    means, variances = [], []
    with torch.no_grad():
        for batch in data:
            x = model.preprocess_image(batch).tensor
            y = F.conv2d(x, stem.conv1.weight, stride=2, padding=3)
            means.append(y.mean(dim=(0, 2, 3)))
            variances.append(y.var(dim=(0, 2, 3), unbiased=True))
    torch.testing.assert_close(stem.conv1.norm.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stem.conv1.norm.running_var, torch.stack(variances).mean(0), rtol=1e-3, atol=1e-3)
    frozen = freeze_backbone(model)
    resnet = resnet_of(model)
    assert frozen == sum(p.numel() for p in resnet.parameters()) and frozen > 10 ** 7
    assert all(isinstance(m.norm, FrozenBatchNorm2d) for m in resnet.modules() if hasattr(m, "norm") and m.norm)
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone.bottom_up."))


@pytest.mark.slow
def test_probe_trains_heads_and_leaves_the_backbone_as_loaded(tmp_path, convert, run_script):
    write_voc(str(tmp_path / "data"), classes=("tree",), train=4, test=2)
    voc = tmp_path / "data" / "VOC2007"
    torch.save(resnet_state(18), tmp_path / "r18.pth")
    assert convert(tmp_path / "r18.pth", tmp_path / "r18.pkl").returncode == 0
    result = run_script("train_net.py", "--config-file", PROBE, "--voc", "trees_train", voc, "trainval", "--voc",
                        "trees_test", voc, "test", "MODEL.WEIGHTS", tmp_path / "r18.pkl", "SOLVER.MAX_ITER", 3,
                        "SOLVER.WARMUP_ITERS", 0, "TRANSFER.PROBE.BN_ITERS", 2, "SEED", 0,
                        "OUTPUT_DIR", tmp_path / "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "probe: BN statistics of 20 layers re-estimated on 2 training batches" in log
    final = torch.load(tmp_path / "run" / "model_final.pth", weights_only=False)["model"]
    with open(tmp_path / "r18.pkl", "rb") as f:
        loaded = pickle.load(f)["model"]
    conv = final["backbone.bottom_up.res4.1.conv2.weight"]
    assert torch.equal(conv, torch.as_tensor(loaded["res4.1.conv2.weight"]))  # frozen: not one step moved it
    assert not torch.equal(final["backbone.bottom_up.res4.1.conv2.norm.running_mean"],
                           torch.as_tensor(loaded["res4.1.conv2.norm.running_mean"]))  # re-estimated

    # --eval-only evaluates the saved model as it is (no second BN re-estimation, which drew other statistics on
    # every call): twice, the numbers the training's own final evaluation wrote.
    trained = json.loads((tmp_path / "run" / "final_results.json").read_text())["results"]
    for again in ("again_1", "again_2"):
        result = run_script("train_net.py", "--config-file", PROBE, "--voc", "trees_train", voc, "trainval",
                            "--voc", "trees_test", voc, "test", "--eval-only", "MODEL.WEIGHTS",
                            tmp_path / "run" / "model_final.pth", "OUTPUT_DIR", tmp_path / again)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "probe: BN statistics" not in (tmp_path / again / "log.txt").read_text()
        assert json.loads((tmp_path / again / "final_results.json").read_text())["results"] == trained
