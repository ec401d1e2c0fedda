"""transfer/finetune/trainer.py: norms per world size and device, the parts that are logged, the resume check."""
import os

import pytest

pytest.importorskip("detectron2")

from transfer.finetune.checkpointing import ResumeError  # noqa: E402
from transfer.finetune.config import CONFIGS, setup_cfg  # noqa: E402
from transfer.finetune.run_checks import check_resume  # noqa: E402
from transfer.finetune.trainer import resolve_norms, used_norm_keys  # noqa: E402


def test_syncbn_becomes_bn_alone_and_naive_syncbn_on_cpu_processes():
    sync = ["MODEL.RESNETS.NORM", "SyncBN", "MODEL.FPN.NORM", "SyncBN"]
    cfg = setup_cfg(os.path.join(CONFIGS, "coco_R_50_FPN_1x.yaml"), sync, freeze=False)
    notes = resolve_norms(cfg, 1)
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM) == ("BN", "BN") and len(notes) == 2
    assert all("world size 1" in n for n in notes)
    cfg = setup_cfg(os.path.join(CONFIGS, "coco_R_50_FPN_1x.yaml"), sync + ["MODEL.DEVICE", "cpu"], freeze=False)
    resolve_norms(cfg, 2)
    assert cfg.MODEL.RESNETS.NORM == "naiveSyncBN"
    cfg = setup_cfg(os.path.join(CONFIGS, "coco_R_50_FPN_1x.yaml"), sync + ["MODEL.DEVICE", "cuda"], freeze=False)
    assert resolve_norms(cfg, 8) == [] and cfg.MODEL.RESNETS.NORM == "SyncBN"  # GPUs: as published


def test_only_the_parts_the_model_builds_are_named():
    c4 = setup_cfg(os.path.join(CONFIGS, "voc_R_50_C4_24k.yaml"))
    fpn = setup_cfg(os.path.join(CONFIGS, "coco_R_50_FPN_1x.yaml"))
    no_mask = setup_cfg(os.path.join(CONFIGS, "tiny", "trees_R_18_FPN_cpu.yaml"))
    assert used_norm_keys(c4) == ["RESNETS"]
    assert used_norm_keys(fpn) == ["RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD"]
    assert not no_mask.MODEL.MASK_ON and "ROI_MASK_HEAD" not in used_norm_keys(no_mask)


def test_resume_names_every_changed_key(tmp_path):
    cfg = setup_cfg(os.path.join(CONFIGS, "tiny", "trees_R_18_FPN_cpu.yaml"), ["OUTPUT_DIR", str(tmp_path)])
    (tmp_path / "config.yaml").write_text(cfg.dump())
    check_resume(cfg, str(tmp_path))  # the same config: fine
    changed = setup_cfg(os.path.join(CONFIGS, "tiny", "trees_R_18_FPN_cpu.yaml"),
                        ["OUTPUT_DIR", str(tmp_path), "MODEL.WEIGHTS", "other.pkl", "SEED", "5"])
    with pytest.raises(ResumeError, match=r"MODEL.WEIGHTS: '.*' -> 'other.pkl'; SEED: .* -> 5"):
        check_resume(changed, str(tmp_path))
