"""Semantic segmentation through tools/train_net.py on the real stardist nuclei tiles: FCN-D8 fine-tuning with
seeds and the frozen linear probe from a converted backbone, random init, the paired table of
tools/collect_results.py; the protocol configs against mmsegmentation's published values."""
import json
import os

import pytest
import torch

from transfer.data import fetch as fetch_data
from transfer.data.synthetic import resnet_state

pytest.importorskip("detectron2")

from pretrain.config import flat_keys  # noqa: E402
from transfer.finetune.config import CONFIGS, setup_cfg  # noqa: E402

TINY = os.path.join(CONFIGS, "tiny", "nuclei_FCN_R18_D8_cpu.yaml")
PROBE = os.path.join(CONFIGS, "tiny", "nuclei_linear_probe_R18_cpu.yaml")
STARDIST = next(s for s in fetch_data.SOURCES if s["dest"] == fetch_data.NUCLEI_RAW)

# mmsegmentation's fcn_r50-d8 model, schedule_20k / schedule_40k, pascal_voc12_aug / cityscapes_769x769 data,
# as the Detectron2 keys that carry them (docs/segmentation.md gives each key's mmsegmentation name)
PUBLISHED_FCN = {
    "MODEL.META_ARCHITECTURE": "AlignedSegmentor", "MODEL.BACKBONE.NAME": "build_resnet_dilated_backbone",
    "MODEL.RESNETS.DEPTH": 50, "MODEL.RESNETS.NORM": "SyncBN", "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.RESNETS.RES4_DILATION": 2, "MODEL.RESNETS.RES5_DILATION": 4, "MODEL.BACKBONE.FREEZE_AT": 0,
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53], "MODEL.PIXEL_STD": [58.395, 57.12, 57.375], "INPUT.FORMAT": "RGB",
    "MODEL.SEM_SEG_HEAD.NAME": "FCNHead", "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res5"],
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 512, "MODEL.SEM_SEG_HEAD.NUM_CONVS": 2, "MODEL.SEM_SEG_HEAD.CONCAT_INPUT": True,
    "MODEL.SEM_SEG_HEAD.DROPOUT": 0.1, "MODEL.SEM_SEG_HEAD.NORM": "SyncBN", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 255,
    "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT": 1.0, "MODEL.SEM_SEG_HEAD.LOSS_AVERAGE": "all_pixels",
    "MODEL.SEM_SEG_HEAD.AUX_IN_FEATURE": "res4", "MODEL.SEM_SEG_HEAD.AUX_CONVS_DIM": 256,
    "MODEL.SEM_SEG_HEAD.AUX_LOSS_WEIGHT": 0.4, "SOLVER.LR_SCHEDULER_NAME": "PolyLR", "SOLVER.POLY_LR_POWER": 0.9,
    "SOLVER.POLY_LR_MIN": 1e-4, "SOLVER.BASE_LR": 0.01, "SOLVER.MOMENTUM": 0.9, "SOLVER.WEIGHT_DECAY": 5e-4,
    "SOLVER.WEIGHT_DECAY_NORM": 5e-4, "SOLVER.WARMUP_ITERS": 0, "INPUT.CROP.ENABLED": True,
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 0.75, "INPUT.RANDOM_FLIP": "horizontal",
    "INPUT.PHOTOMETRIC_DISTORTION": True, "INPUT.MIN_SIZE_TRAIN_SAMPLING": "range", "INPUT.CROP.TYPE": "absolute",
    "SOLVER.WEIGHT_DECAY_BIAS": None, "SOLVER.BIAS_LR_FACTOR": 1.0, "SOLVER.NESTEROV": False,
    "TEST.EVAL_PERIOD": 0, "DATALOADER.ASPECT_RATIO_GROUPING": False}
PUBLISHED_VOC = {**PUBLISHED_FCN, "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 21, "MODEL.SEM_SEG_HEAD.ALIGN_CORNERS": False,
                 "INPUT.MIN_SIZE_TRAIN": [256, 1024], "INPUT.CROP.SIZE": [512, 512], "INPUT.MIN_SIZE_TEST": 512,
                 "INPUT.MAX_SIZE_TRAIN": 4096, "INPUT.MAX_SIZE_TEST": 2048, "SOLVER.IMS_PER_BATCH": 16,
                 "SOLVER.MAX_ITER": 20000, "SOLVER.CHECKPOINT_PERIOD": 2000,
                 "DATASETS.TRAIN": ["voc_2012_sem_seg_train_aug"], "DATASETS.TEST": ["voc_2012_sem_seg_val"]}
PUBLISHED_CITYSCAPES = {**PUBLISHED_FCN, "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 19,
                        "MODEL.SEM_SEG_HEAD.ALIGN_CORNERS": True, "INPUT.MIN_SIZE_TRAIN": [512, 2050],
                        "INPUT.CROP.SIZE": [769, 769], "INPUT.MIN_SIZE_TEST": 1025, "INPUT.MAX_SIZE_TEST": 2049,
                        "INPUT.MAX_SIZE_TRAIN": 4098, "SOLVER.IMS_PER_BATCH": 8, "SOLVER.MAX_ITER": 40000,
                        "SOLVER.CHECKPOINT_PERIOD": 4000, "TEST.SLIDE.ENABLED": True,
                        "TEST.SLIDE.CROP_SIZE": [769, 769], "TEST.SLIDE.STRIDE": [513, 513],
                        "DATASETS.TRAIN": ["cityscapes_fine_sem_seg_train"],
                        "DATASETS.TEST": ["cityscapes_fine_sem_seg_val"]}


@pytest.mark.parametrize("config,published", [
    ("voc12aug_FCN_R50_D8_20k.yaml", PUBLISHED_VOC),
    ("voc12aug_FCN_R50_D8_20k_random_init.yaml", {**PUBLISHED_VOC, "MODEL.RESNETS.ZERO_INIT_RESIDUAL": True}),
    ("cityscapes_FCN_R50_D8_40k.yaml", PUBLISHED_CITYSCAPES),
    ("cityscapes_FCN_R50_D8_40k_random_init.yaml", {**PUBLISHED_CITYSCAPES, "MODEL.RESNETS.ZERO_INIT_RESIDUAL": True})])
def test_segmentation_configs_carry_mmsegmentations_values(config, published):
    ours = flat_keys(setup_cfg(os.path.join(CONFIGS, config)))
    differ = {k: (ours.get(k), v) for k, v in published.items()
              if (list(ours.get(k)) if isinstance(ours.get(k), (list, tuple)) else ours.get(k)) != v}
    assert differ == {}
    assert ours["MODEL.WEIGHTS"] == "" if "random_init" in config else True


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    """The real nuclei tiles: the project's datasets/ when fetched, else fetched from the package index."""
    here = os.path.join(os.path.dirname(CONFIGS), "..", "datasets")
    if os.path.exists(os.path.join(here, "nuclei", "test.txt")):
        return os.path.abspath(os.path.join(here, "nuclei"))
    root = str(tmp_path_factory.mktemp("data"))
    fetch_data.fetch(root, [STARDIST])
    return os.path.join(root, "nuclei")


def registration(nuclei):
    return ["--sem-seg", "nuclei_train", f"{nuclei}/images", f"{nuclei}/labels", f"{nuclei}/train.txt",
            "--sem-seg", "nuclei_test", f"{nuclei}/images", f"{nuclei}/labels", f"{nuclei}/test.txt",
            "--classes", "background", "nucleus"]


@pytest.mark.slow
def test_fcn_and_linear_probe_from_a_converted_backbone_on_real_nuclei(nuclei, tmp_path, convert, run_script):
    torch.save(resnet_state(18), tmp_path / "r18.pth")
    assert convert(tmp_path / "r18.pth", tmp_path / "r18.pkl").returncode == 0
    short = ["SOLVER.MAX_ITER", 6, "SOLVER.IMS_PER_BATCH", 2]
    for name, weights in (("converted", tmp_path / "r18.pkl"), ("random_init", "")):
        result = run_script("train_net.py", "--config-file", TINY, *registration(nuclei), "--seeds", 2,
                            "MODEL.WEIGHTS", weights, *short, "OUTPUT_DIR", tmp_path / name)
        assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "converted" / "seed_0" / "log.txt").read_text()
    assert "all 100 backbone parameters loaded" in log and "input settings agree" in log
    assert "norm layers actually used: RESNETS BN, SEM_SEG_HEAD BN" in log
    for seed in (0, 1):
        data = json.loads((tmp_path / "converted" / f"seed_{seed}" / "final_results.json").read_text())
        scores = data["results"]["sem_seg"]
        assert data["seed"] == seed and 0 <= scores["mIoU"] <= 100 and {"IoU-background", "IoU-nucleus"} <= set(scores)
        assert data["evaluation"][0]["metric"].startswith("mIoU over 2 classes")
    # finished seeds are skipped on --resume; the table pairs them by seed
    again = run_script("train_net.py", "--config-file", TINY, *registration(nuclei), "--seeds", 2, "--resume",
                       "MODEL.WEIGHTS", tmp_path / "r18.pkl", *short, "OUTPUT_DIR", tmp_path / "converted")
    assert again.returncode == 0 and again.stdout.count("already finished") == 2, again.stderr[-2000:]
    table = run_script("collect_results.py", tmp_path / "random_init", tmp_path / "converted", "--baseline",
                       "random_init", "--out", tmp_path / "table")
    assert table.returncode == 0, table.stderr
    markdown = (tmp_path / "table.md").read_text()
    assert "sem_seg/mIoU" in markdown and "| converted | random_init | sem_seg/mIoU | 2 |" in markdown

    probe = run_script("train_net.py", "--config-file", PROBE, *registration(nuclei), "MODEL.WEIGHTS",
                       tmp_path / "r18.pkl", *short, "TRANSFER.PROBE.BN_ITERS", 2, "SEED", 0,
                       "OUTPUT_DIR", tmp_path / "probe")
    assert probe.returncode == 0, probe.stderr[-3000:]
    log = (tmp_path / "probe" / "log.txt").read_text()
    assert "BN statistics of 20 layers re-estimated on 2 training batches; backbone frozen" in log
    final = torch.load(tmp_path / "probe" / "model_final.pth", weights_only=False)["model"]
    with open(tmp_path / "r18.pkl", "rb") as f:
        import pickle
        loaded = pickle.load(f)["model"]
    # the convolutions are exactly the converted ones: only the head trained
    assert all(torch.equal(final[f"backbone.{k}"], torch.as_tensor(v)) for k, v in loaded.items()
               if k.endswith("conv1.weight"))
    assert "sem_seg" in json.loads((tmp_path / "probe" / "final_results.json").read_text())["results"]


def test_a_label_beyond_num_classes_stops_before_training(tmp_path, run_script):
    from transfer.data.synthetic import write_sem_seg
    root = write_sem_seg(str(tmp_path / "set"), classes=3, train=2, test=1)
    result = run_script("train_net.py", "--config-file", TINY, "--sem-seg", "a", f"{root}/images", f"{root}/labels",
                        f"{root}/train.txt", "--sem-seg", "b", f"{root}/images", f"{root}/labels", f"{root}/test.txt",
                        "DATASETS.TRAIN", "('a',)", "DATASETS.TEST", "('b',)", "OUTPUT_DIR", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES is 2, the datasets have 3 classes" in result.stderr
