"""transfer/finetune/coverage.py: what a converted backbone gives a detector, key by key."""
import pickle

import pytest
import torch

from transfer.data.synthetic import resnet_state

pytest.importorskip("detectron2")

from transfer.finetune.config import CONFIGS, setup_cfg  # noqa: E402


def test_coverage_report_names_new_heads_and_unused_keys(tmp_path, convert):
    from detectron2.modeling import build_model

    from transfer.finetune.coverage import load_with_report
    torch.save(resnet_state(18), tmp_path / "r18.pth")
    assert convert(tmp_path / "r18.pth", tmp_path / "r18.pkl").returncode == 0
    with open(tmp_path / "r18.pkl", "rb") as f:
        data = pickle.load(f)
    data["model"]["stray.weight"] = data["model"]["stem.conv1.weight"]
    with open(tmp_path / "stray.pkl", "wb") as f:
        pickle.dump(data, f)
    cfg = setup_cfg(f"{CONFIGS}/coco_R_50_FPN_1x.yaml", ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS",
                                                         64, "MODEL.DEVICE", "cpu"])
    report = load_with_report(build_model(cfg), str(tmp_path / "stray.pkl"), quiet=True)
    assert report.unused == ["stray.weight"]
    assert "backbone.fpn_lateral2" in report.new_modules and "roi_heads.mask_head" in report.new_modules
    assert not any(m.startswith("backbone.bottom_up") for m in report.new_modules)
