"""transfer/ + tools/train_net.py + tools/collect_results.py + tools/submit.py on CPU."""
import hashlib
import json
import os
import pickle
import shutil
import signal
import statistics
import subprocess
import sys

import pytest
import torch
import torchvision

from transfer.data.synthetic import write_coco, write_voc

pytest.importorskip("detectron2")

from detectron2.modeling import build_model  # noqa: E402

from pretrain.config import flat_keys  # noqa: E402
from transfer.finetune.config import setup_cfg  # noqa: E402
from transfer.finetune.coverage import resnet_parameter_names  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
PYTHON = sys.executable

CONFIGS = os.path.join(ROOT, "configs", "transfer")


def tool(name, *args, env=None, timeout=900):
    return subprocess.run([PYTHON, os.path.join(TOOLS, name), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A torchvision ResNet-50 converted by tools/convert.py (with its sidecar), and a copy missing res4."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), folder / "r50.pth")
    result = tool("convert.py", folder / "r50.pth", folder / "r50.pkl")
    assert result.returncode == 0, result.stderr
    with open(folder / "r50.pkl", "rb") as f:
        data = pickle.load(f)
    data["model"] = {k: v for k, v in data["model"].items() if not k.startswith("res4.")}
    with open(folder / "no_res4.pkl", "wb") as f:
        pickle.dump(data, f)
    yield folder
    shutil.rmtree(folder)  # passed tests' folders go as they finish; a module's fixture goes with its module


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2datasets")
    write_voc(str(root), classes=("person", "car", "dog"), train=4, test=3)
    return root


@pytest.mark.parametrize("config,head", [("voc_R_50_C4_24k.yaml", "Res5ROIHeadsExtraNorm"),
                                         ("coco_R_50_FPN_1x.yaml", "StandardROIHeads")])
def test_protocol_configs_build_on_cpu(config, head):
    cfg = setup_cfg(os.path.join(CONFIGS, config), ["MODEL.DEVICE", "cpu"])
    assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert not cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.MODEL.RESNETS.NORM == "naiveSyncBN"
    assert list(cfg.MODEL.PIXEL_STD) == [58.395, 57.120, 57.375] and cfg.TEST.PRECISE_BN.ENABLED
    model = build_model(cfg)
    assert type(model.roi_heads).__name__ == head
    names = resnet_parameter_names(model)
    assert len(names) == 265  # the whole torchvision ResNet-50 minus fc, BN buffers included
    if head == "Res5ROIHeadsExtraNorm":
        assert hasattr(model.roi_heads.res5, "norm") and not any(".res5.norm." in n for n in names)
    else:
        assert cfg.MODEL.ROI_BOX_HEAD.NUM_CONV == 4 and cfg.MODEL.ROI_BOX_HEAD.NUM_FC == 1 and cfg.MODEL.MASK_ON


# The published protocols, key by key. VOC: MoCo's detection/configs Base-RCNN-C4-BN.yaml, pascal_voc_R_50_C4_24k.yaml
# and pascal_voc_R_50_C4_24k_moco.yaml (DenseCL's benchmarks/detection and PixPro's transfer/detection use the same
# values). COCO: Detectron2's Base-RCNN-FPN.yaml with PixPro's COCO_R_50_FPN_1x(_PixPro).yaml: Mask R-CNN 1x,
# synchronised BN in backbone, FPN and 4conv1fc head, torchvision input settings. "SyncBN" in those files ran
# Detectron2's naive SyncBN at the time (MoCo's names it: naiveSyncBN).
SSL_INPUT = {"MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530], "MODEL.PIXEL_STD": [58.395, 57.120, 57.375],
             "MODEL.RESNETS.STRIDE_IN_1X1": False, "INPUT.FORMAT": "RGB"}
PUBLISHED_VOC = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN", "MODEL.RPN.PRE_NMS_TOPK_TEST": 6000,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000, "MODEL.ROI_HEADS.NAME": "Res5ROIHeadsExtraNorm",
    "MODEL.BACKBONE.FREEZE_AT": 0, "MODEL.RESNETS.NORM": "naiveSyncBN", "TEST.PRECISE_BN.ENABLED": True,
    "SOLVER.IMS_PER_BATCH": 16, "SOLVER.BASE_LR": 0.02, "MODEL.MASK_ON": False, "MODEL.ROI_HEADS.NUM_CLASSES": 20,
    "INPUT.MIN_SIZE_TRAIN": [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800], "INPUT.MIN_SIZE_TEST": 800,
    "DATASETS.TRAIN": ["voc_2007_trainval", "voc_2012_trainval"], "DATASETS.TEST": ["voc_2007_test"],
    "SOLVER.STEPS": [18000, 22000], "SOLVER.MAX_ITER": 24000, "SOLVER.WARMUP_ITERS": 100, **SSL_INPUT}
PUBLISHED_COCO = {
    "MODEL.MASK_ON": True, "MODEL.BACKBONE.FREEZE_AT": 0, "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.NORM": "naiveSyncBN", "MODEL.FPN.NORM": "naiveSyncBN", "TEST.PRECISE_BN.ENABLED": True,
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead", "MODEL.ROI_BOX_HEAD.NUM_CONV": 4,
    "MODEL.ROI_BOX_HEAD.NUM_FC": 1, "MODEL.ROI_BOX_HEAD.NORM": "naiveSyncBN", "MODEL.ROI_MASK_HEAD.NORM": "naiveSyncBN",
    "INPUT.MIN_SIZE_TRAIN": [640, 672, 704, 736, 768, 800], "INPUT.MIN_SIZE_TEST": 800,
    "DATASETS.TRAIN": ["coco_2017_train"], "DATASETS.TEST": ["coco_2017_val"], "SOLVER.STEPS": [60000, 80000],
    "SOLVER.MAX_ITER": 90000, **SSL_INPUT}
# DenseCL's random-init COCO baseline keeps Detectron2's own input convention.
PUBLISHED_COCO_RANDOM = {**PUBLISHED_COCO, "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675],
                         "MODEL.PIXEL_STD": [1.0, 1.0, 1.0], "MODEL.RESNETS.STRIDE_IN_1X1": True, "INPUT.FORMAT": "BGR"}


def published(values, base_file=None):
    """Detectron2's defaults with this toolkit's keys at their defaults (a detection config leaves them there), the
    published base file if any, then the published values."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    from transfer.finetune.config import add_transfer_config
    cfg = get_cfg()
    add_transfer_config(cfg)
    if base_file:
        cfg.merge_from_file(model_zoo.get_config_file(base_file))
    for key, value in values.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return flat_keys(cfg)


@pytest.mark.parametrize("config,values,base", [
    ("voc_R_50_C4_24k.yaml", PUBLISHED_VOC, None), ("voc_R_50_C4_24k_random_init.yaml", PUBLISHED_VOC, None),
    ("coco_R_50_FPN_1x.yaml", PUBLISHED_COCO, "Base-RCNN-FPN.yaml"),
    ("coco_R_50_FPN_1x_random_init.yaml", PUBLISHED_COCO_RANDOM, "Base-RCNN-FPN.yaml")])
def test_merged_protocol_configs_equal_the_published_ones(config, values, base):
    ours = flat_keys(setup_cfg(os.path.join(CONFIGS, config)))
    theirs = published(values, base)
    ignored = {"OUTPUT_DIR", "MODEL.WEIGHTS"}
    differ = {k: (ours.get(k), theirs.get(k)) for k in set(ours) | set(theirs)
              if k not in ignored and ours.get(k) != theirs.get(k)}
    assert differ == {}


@pytest.mark.slow
def test_voc_two_seeds_then_collect(converted, voc_root, tmp_path):
    out = tmp_path / "houghcl"
    (tmp_path / "weights").mkdir()
    for name in ("r50.pkl", "r50.pkl.json"):  # our own copy: it is replaced below
        shutil.copy(converted / name, tmp_path / "weights" / name)
    weights = tmp_path / "weights" / "r50.pkl"
    result = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"),
                  "--num-gpus", 1, "--seeds", 2, "MODEL.WEIGHTS", weights, "SOLVER.MAX_ITER", 2,
                  "OUTPUT_DIR", out, env={"DETECTRON2_DATASETS": str(voc_root)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (out / "seed_0" / "log.txt").read_text()
    assert "all 265 backbone parameters loaded" in log and "input settings agree" in log
    assert "norm layers actually used: RESNETS naiveSyncBN" in log
    aps = []
    for k in range(2):
        data = json.loads((out / f"seed_{k}" / "final_results.json").read_text())
        assert data["seed"] == k and data["numerics_modes"] == ["fast"]
        assert data["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        bbox = data["results"]["bbox"]
        assert {"AP", "AP50", "AP75"} <= set(bbox)
        aps.append(bbox["AP50"])
    result = tool("collect_results.py", out, "--out", tmp_path / "table")
    assert result.returncode == 0, result.stderr
    csv_text = (tmp_path / "table.csv").read_text().splitlines()
    assert csv_text[0].startswith("model,n,seeds,bbox/AP mean,bbox/AP std")
    row = csv_text[1].split(",")
    assert row[:3] == ["houghcl", "2", "0 1"]
    header = csv_text[0].split(",")
    assert float(row[header.index("bbox/AP50 mean")]) == pytest.approx(statistics.mean(aps), abs=1e-4)
    assert float(row[header.index("bbox/AP50 std")]) == pytest.approx(statistics.stdev(aps), abs=1e-4)
    # Finished seeds count for the weights they were fine-tuned from only.
    result = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"),
                  "--num-gpus", 1, "--seeds", 2, "--resume", "MODEL.WEIGHTS", "", "SOLVER.MAX_ITER", 2,
                  "OUTPUT_DIR", out, env={"DETECTRON2_DATASETS": str(voc_root)})
    assert result.returncode == 1 and "already finished" not in result.stdout
    assert f"was fine-tuned from MODEL.WEIGHTS '{weights}', not ''" in result.stderr
    # ... in the numerics mode they ran in, and from the bytes they started from, not a file replaced since.
    common = ["--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"), "--num-gpus", 1, "--seeds", 2,
              "--resume", "MODEL.WEIGHTS", weights, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out]
    result = tool("train_net.py", *common, "--numerics", "portable", env={"DETECTRON2_DATASETS": str(voc_root)})
    assert result.returncode == 1 and "already finished" not in result.stdout
    assert "--numerics portable: the run in" in result.stderr and "continue it with --numerics fast" in result.stderr
    weights.write_bytes(weights.read_bytes() + b"another file at the same path")
    result = tool("train_net.py", *common, env={"DETECTRON2_DATASETS": str(voc_root)})
    assert result.returncode == 1 and "already finished" not in result.stdout
    assert "the file was replaced" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # a row whose seeds started from different bytes is refused by collect_results.py
    data = json.loads((out / "seed_1" / "final_results.json").read_text())
    (out / "seed_1" / "final_results.json").write_text(json.dumps({**data, "weights_sha256": "0" * 64}))
    result = tool("collect_results.py", out, "--out", tmp_path / "table2")
    assert result.returncode == 1 and "started from different weights (sha256)" in result.stderr


@pytest.mark.slow
def test_missing_stage_stops_before_training(converted, voc_root, tmp_path):
    result = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"),
                  "--num-gpus", 1, "MODEL.WEIGHTS", converted / "no_res4.pkl", "SOLVER.MAX_ITER", 2,
                  "MODEL.RESNETS.NORM", "SyncBN", "OUTPUT_DIR", tmp_path / "run",
                  env={"DETECTRON2_DATASETS": str(voc_root)})
    assert result.returncode == 1
    assert "MODEL.RESNETS.NORM SyncBN -> BN (world size 1" in result.stdout + result.stderr
    assert "95 of 265 backbone parameters were not loaded" in result.stderr
    assert "backbone.res4.0.conv1.weight" in result.stderr and "--allow-partial" in result.stderr
    assert not (tmp_path / "run" / "model_final.pth").exists()
    metrics = tmp_path / "run" / "metrics.json"
    assert not metrics.exists() or metrics.read_text() == ""  # not one iteration ran


@pytest.mark.slow
def test_sidecar_disagreement_stops(converted, voc_root, tmp_path):
    result = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"),
                  "--num-gpus", 1, "MODEL.WEIGHTS", converted / "r50.pkl", "INPUT.FORMAT", "BGR",
                  "OUTPUT_DIR", tmp_path / "run", env={"DETECTRON2_DATASETS": str(voc_root)})
    assert result.returncode == 1
    assert "INPUT.FORMAT is 'BGR', the weights need 'RGB'" in result.stderr


@pytest.mark.slow
def test_coco_json_mask_rcnn(converted, tmp_path):
    json_file, images = write_coco(str(tmp_path / "coco"))
    result = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/coco_R_50_FPN_cpu.yaml"),
                  "--num-gpus", 1, "--coco", "shapes", json_file, images, "DATASETS.TRAIN", "('shapes',)",
                  "DATASETS.TEST", "('shapes',)", "MODEL.ROI_HEADS.NUM_CLASSES", 2, "MODEL.WEIGHTS",
                  converted / "r50.pkl", "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", tmp_path / "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "final_results.json").read_text())["results"]
    assert {"bbox", "segm"} <= set(results) and "AP" in results["segm"]


def test_collect_results_on_written_metrics(tmp_path):
    values = {"random": [10.0, 12.0, 14.0], "houghcl": [20.0, 21.0]}
    for model, aps in values.items():
        for k, ap in enumerate(aps):
            folder = tmp_path / model / f"seed_{k}"
            folder.mkdir(parents=True)
            results = {"bbox": {"AP": ap, "AP50": ap + 20, "AP75": ap - 5},
                       "segm": {"AP": ap - 2, "AP50": ap + 18, "AP75": ap - 7}}
            (folder / "final_results.json").write_text(json.dumps({"results": results}))
    result = tool("collect_results.py", tmp_path / "random", tmp_path / "houghcl", "--out", tmp_path / "t")
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "t.md").read_text()
    assert "| random | 3 | 0,1,2 | 12.00 ± 2.00 | 32.00 ± 2.00 | 7.00 ± 2.00 | 10.00 ± 2.00 |" in md
    assert "| houghcl | 2 | 0,1 | 20.50 ± 0.71 |" in md
    empty = tmp_path / "nothing"
    empty.mkdir()
    result = tool("collect_results.py", empty)
    assert result.returncode == 1 and "no final_results.json" in result.stderr
    # Seeds of two recipes in one row: refused, naming the key (the seed and folder may differ).
    for k, iters in enumerate((4, 6)):
        folder = tmp_path / "mixed" / f"seed_{k}"
        folder.mkdir(parents=True)
        config = f"SEED: {k}\nOUTPUT_DIR: {folder}\nSOLVER:\n  MAX_ITER: {iters}\n  BASE_LR: 0.01\n"
        (folder / "final_results.json").write_text(json.dumps({"results": {"bbox": {"AP": 1.0}}, "seed": k,
                                                               "config": config}))
    result = tool("collect_results.py", tmp_path / "mixed")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "its seeds ran different configs (SOLVER.MAX_ITER: 4 (seed 0) vs 6 (seed 1))" in result.stderr
    same = config.replace("MAX_ITER: 6", "MAX_ITER: 4")
    (tmp_path / "mixed" / "seed_1" / "final_results.json").write_text(
        json.dumps({"results": {"bbox": {"AP": 2.0}}, "seed": 1, "config": same}))
    assert tool("collect_results.py", tmp_path / "mixed").returncode == 0


@pytest.mark.slow
def test_submit_through_local_executor(image_folder, tmp_path):
    result = tool("submit.py", "pretrain", "--cluster", "local", "--wait", "--folder", tmp_path / "jobs" / "%j",
                  "--config-file", os.path.join(ROOT, "configs/pretrain/tiny_r18_cpu.yaml"), "DATA.ROOT",
                  image_folder, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted job" in result.stdout and "completed" in result.stdout
    assert (tmp_path / "run" / "backbone.pth").exists()


@pytest.mark.slow
def test_drawn_seed_is_recorded_and_reruns_identically(converted, voc_root, tmp_path):
    """SEED -1 (Detectron2's default) gets a seed drawn, printed and recorded; rerunning with that seed gives the
    same AP, to the last digit, on this CPU."""
    def run(out, *seed):
        result = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"),
                      "--num-gpus", 1, "MODEL.WEIGHTS", converted / "r50.pkl", "SOLVER.MAX_ITER", 3, *seed,
                      "OUTPUT_DIR", tmp_path / out, env={"DETECTRON2_DATASETS": str(voc_root)})
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result, json.loads((tmp_path / out / "final_results.json").read_text())

    first, drawn = run("drawn", "SEED", -1)
    assert drawn["seed"] >= 0 and f"seed {drawn['seed']} (drawn: the config says SEED -1)" in first.stdout
    # --resume keeps the seed the run started with (not a new draw), and refuses another config.
    resumed, kept = run("drawn", "SEED", -1, "--resume")
    assert kept["seed"] == drawn["seed"] and "(the run's own, from" in resumed.stdout
    refused = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"), "--num-gpus",
                   1, "MODEL.WEIGHTS", "", "SOLVER.MAX_ITER", 3, "SEED", -1, "OUTPUT_DIR", tmp_path / "drawn",
                   "--resume", env={"DETECTRON2_DATASETS": str(voc_root)})
    assert refused.returncode == 1 and "MODEL.WEIGHTS: " in refused.stderr and "-> ''" in refused.stderr
    assert json.loads((tmp_path / "drawn" / "final_results.json").read_text())["weights"] == str(converted / "r50.pkl")
    _, again = run("again", "SEED", drawn["seed"])
    assert again["seed"] == drawn["seed"]
    assert again["results"] == drawn["results"]


@pytest.mark.slow
def test_two_processes_fine_tune_and_evaluate_on_cpu(converted, voc_root, tmp_path):
    """--num-gpus 2 on a machine without GPU: two processes over Gloo, naive SyncBN synchronised between them,
    evaluation gathered from both."""
    out = tmp_path / "two"
    result = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"),
                  "--num-gpus", 2, "MODEL.WEIGHTS", converted / "r50.pkl", "SEED", 3, "OUTPUT_DIR", out,
                  env={"DETECTRON2_DATASETS": str(voc_root)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "norm layers actually used: RESNETS naiveSyncBN" in log and "on 2 devices" in log
    assert (out / "log.txt.rank1").exists()
    data = json.loads((out / "final_results.json").read_text())
    assert data["seed"] == 3 and "AP50" in data["results"]["bbox"]
    assert data["metric"] == {"voc_2007_test": "VOC2007 11-point interpolated AP (AP50; AP and AP75 average over "
                                               "IoU 0.50:0.95)"}
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_submit_finetune_locally_with_voc_flags(converted, tmp_path):
    write_voc(str(tmp_path / "data"), classes=("person", "car"), train=4, test=2)
    voc = tmp_path / "data" / "VOC2007"
    result = tool("submit.py", "finetune", "--cluster", "local", "--wait", "--folder", tmp_path / "jobs" / "%j",
                  "--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"),
                  "--voc", "mine_train", voc, "trainval", "--voc", "mine_test", voc, "test",
                  "DATASETS.TRAIN", "('mine_train',)", "DATASETS.TEST", "('mine_test',)",
                  "MODEL.ROI_HEADS.NUM_CLASSES", 2, "MODEL.WEIGHTS", converted / "r50.pkl",
                  "OUTPUT_DIR", tmp_path / "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "run" / "seed_0" / "final_results.json").read_text())
    assert data["seed"] == 0 and data["metric"]["mine_test"].startswith("VOC2007 11-point")
    # A job that fails says why (its own error line), not only where its log is.
    result = tool("submit.py", "finetune", "--cluster", "local", "--wait", "--folder", tmp_path / "jobs" / "%j",
                  "--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"),
                  "--voc", "mine_train2", voc, "trainval", "DATASETS.TRAIN", "('mine_train2',)",
                  "DATASETS.TEST", "('mine_train2',)", "MODEL.WEIGHTS", converted / "r50.pkl",
                  "OUTPUT_DIR", tmp_path / "bad")
    assert result.returncode == 1
    assert "failed: error: MODEL.ROI_HEADS.NUM_CLASSES is 20, the datasets have 2 classes" in result.stderr


def test_train_net_config_mistakes_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_BASE_: voc_R_50_C4_24k.yaml\nSOLVER: [\n")
    for args, expected in [(("--config-file", bad), f"error: {bad}: not valid YAML"),
                           (("--config-file", os.path.join(CONFIGS, "voc_R_50_C4_24k.yaml"), "SOLVER.BASE_LR",
                             "-0.02"), "error: SOLVER.BASE_LR = -0.02 must be positive"),
                           (("--config-file", tmp_path / "none.yaml"), "none.yaml: no such file")]:
        result = tool("train_net.py", *args)
        assert result.returncode == 1 and expected in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr


def test_flags_may_follow_the_config_overrides():
    from transfer.finetune.arguments import parse_args
    args = parse_args(["--config-file", "x.yaml", "MODEL.WEIGHTS", "w.pkl", "--voc", "a", "DIR", "train",
                       "SOLVER.MAX_ITER", "2", "--seeds", "3", "--num-gpus", "2"])
    assert args.voc == [["a", "DIR", "train"]] and args.seeds == 3 and args.num_gpus == 2
    assert args.opts == ["MODEL.WEIGHTS", "w.pkl", "SOLVER.MAX_ITER", "2"]


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_in_one_line_and_resume_finishes(converted, voc_root, tmp_path):
    out = tmp_path / "stopped"
    command = [PYTHON, os.path.join(TOOLS, "train_net.py"), "--config-file",
               os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"), "--num-gpus", "1", "MODEL.WEIGHTS",
               str(converted / "r50.pkl"), "SOLVER.MAX_ITER", "8", "SEED", "0", "OUTPUT_DIR", str(out)]
    env = {**os.environ, "DETECTRON2_DATASETS": str(voc_root)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                               env=env)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "Starting training from iteration 0" in line:
            process.send_signal(signal.SIGINT)
            break
    lines += process.stdout.readlines()
    assert process.wait(timeout=600) == 130, "".join(lines)[-3000:]
    text = "".join(lines)
    assert "Traceback" not in text and "continue with the same command and --resume" in text
    assert "\x1b[" not in text + (out / "log.txt").read_text()  # no colour codes in redirected output or the log
    saved = (out / "last_checkpoint").read_text()
    assert saved.startswith("model_") and f"checkpoint {out / saved}" in text
    assert not list(out.glob(".*.tmp")) and not (out / "final_results.json").exists()
    stopped_after = int(saved[len("model_"):-len(".pth")]) + 1
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Starting training from iteration {stopped_after}" in (out / "log.txt").read_text()
    assert json.loads((out / "final_results.json").read_text())["seed"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_run_killed_after_a_checkpoint_resumes_to_the_weights_of_the_run_never_stopped(tmp_path, processes):
    """The state a kill -9 after iteration 4 leaves (checkpoint model_0000003, the pointer naming it), resumed,
    ends with the uninterrupted run's weights bit for bit, in one process and in two: the data order, the
    augmentations (two workers), the optimizer's momentum and the training step's draws continue where they were.
    final_results.json records the iteration it resumed at."""
    write_voc(str(tmp_path / "data"), classes=("person", "car"), train=6, test=2)
    voc = tmp_path / "data" / "VOC2007"
    command = ["--config-file", os.path.join(CONFIGS, "tiny/trees_R_18_FPN_cpu.yaml"),
               "--voc", "kill_train", voc, "trainval", "--voc", "kill_test", voc, "test",
               "DATASETS.TRAIN", "('kill_train',)", "DATASETS.TEST", "('kill_test',)", "MODEL.ROI_HEADS.NUM_CLASSES",
               2, "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TRAIN", "(64, 96)", "INPUT.MAX_SIZE_TRAIN", 128,
               "SOLVER.MAX_ITER", 6, "SOLVER.WARMUP_ITERS", 2, "SOLVER.STEPS", "(4,)", "SOLVER.CHECKPOINT_PERIOD", 2,
               "SEED", 5, "--num-gpus", processes]
    for out in ("whole", "killed"):
        result = tool("train_net.py", *command, "OUTPUT_DIR", tmp_path / out)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    killed = tmp_path / "killed"
    for name in ("model_0000005.pth", "model_final.pth", "final_results.json"):
        (killed / name).unlink()
    (killed / "last_checkpoint").write_text("model_0000003.pth")
    result = tool("train_net.py", *command, "OUTPUT_DIR", killed, "--resume")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    whole, resumed = (torch.load(tmp_path / out / "model_final.pth", weights_only=False)["model"]
                      for out in ("whole", "killed"))
    assert whole.keys() == resumed.keys()
    different = [k for k in whole if not torch.equal(whole[k], resumed[k])]
    assert not different, different[:5]
    assert json.loads((killed / "final_results.json").read_text())["resumed_at"] == [4]
    assert json.loads((tmp_path / "whole" / "final_results.json").read_text())["resumed_at"] == []


@pytest.mark.slow
def test_a_model_is_evaluated_only_with_the_class_order_it_was_trained_with(tmp_path):
    write_voc(str(tmp_path / "data"), classes=("person", "car"), train=2, test=2)
    voc = tmp_path / "data" / "VOC2007"

    def run(*args, classes=("person", "car")):
        return tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/trees_R_18_FPN_cpu.yaml"),
                    "--voc", "order_train", voc, "trainval", "--voc", "order_test", voc, "test", "--classes", *classes,
                    "DATASETS.TRAIN", "('order_train',)", "DATASETS.TEST", "('order_test',)",
                    "MODEL.ROI_HEADS.NUM_CLASSES", 2, "INPUT.MIN_SIZE_TEST", 96, "SOLVER.MAX_ITER", 1, *args)
    trained = run("MODEL.WEIGHTS", "", "OUTPUT_DIR", tmp_path / "run")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "final_results.json").read_text())["classes"] == ["person", "car"]
    model = tmp_path / "run" / "model_final.pth"
    same = run("--eval-only", "MODEL.WEIGHTS", model, "OUTPUT_DIR", tmp_path / "same")
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    swapped = run("--eval-only", "MODEL.WEIGHTS", model, "OUTPUT_DIR", tmp_path / "swapped", classes=("car", "person"))
    assert swapped.returncode == 1 and "Traceback" not in swapped.stderr
    assert (f"error: {model}: the model was trained with the classes ['person', 'car'] in this order, this run's "
            "datasets have ['car', 'person']; register them with --classes person car") in swapped.stderr
    assert not (tmp_path / "swapped" / "final_results.json").exists()


def test_a_number_of_seeds_below_one_and_a_seed_below_minus_one_are_refused(tmp_path):
    """--seeds 0 was a silent "no --seeds", --seeds -1 did nothing and exited 0, and the dense probe's --seeds 0
    raised a traceback; SEED -1 means draw one, other negative seeds are refused."""
    config = os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml")
    for tool_name, args in [("train_net.py", ("--config-file", config, "--seeds", 0)),
                            ("train_net.py", ("--config-file", config, "--seeds", -1)),
                            ("dense_probe.py", ("datasets/trees", "--seeds", 0, "--out", tmp_path / "p"))]:
        result = tool(tool_name, *args)
        assert result.returncode == 2 and "the number of seeds K (seeds 0..K-1) must be 1 or more" in result.stderr
        assert "Traceback" not in result.stderr
    result = tool("train_net.py", "--config-file", config, "SEED", -5, "OUTPUT_DIR", tmp_path / "s")
    assert result.returncode == 1 and "error: SEED = -5: a seed is 0 or more, or -1 to draw one" in result.stderr


@pytest.mark.slow
def test_a_moved_run_resumes_and_an_unwritable_output_dir_is_one_line(tmp_path):
    """The remedy for a full disk, moving the folder to a bigger disk, must work: OUTPUT_DIR may change on resume.
    An OUTPUT_DIR that cannot be written is one line before any work."""
    write_voc(str(tmp_path / "data"), classes=("person", "car"), train=2, test=2)
    voc = tmp_path / "data" / "VOC2007"
    command = ["--config-file", os.path.join(CONFIGS, "tiny/trees_R_18_FPN_cpu.yaml"),
               "--voc", "moved_train", voc, "trainval", "--voc", "moved_test", voc, "test",
               "DATASETS.TRAIN", "('moved_train',)", "DATASETS.TEST", "('moved_test',)",
               "MODEL.ROI_HEADS.NUM_CLASSES", 2, "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", 96,
               "SOLVER.CHECKPOINT_PERIOD", 1, "SEED", 1]
    first = tool("train_net.py", *command, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", tmp_path / "small_disk")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    (tmp_path / "small_disk" / "model_final.pth").unlink()
    (tmp_path / "small_disk" / "final_results.json").unlink()
    shutil.move(tmp_path / "small_disk", tmp_path / "big_disk")
    moved = tool("train_net.py", *command, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", tmp_path / "big_disk", "--resume")
    assert moved.returncode == 0, moved.stdout[-3000:] + moved.stderr[-3000:]
    assert json.loads((tmp_path / "big_disk" / "final_results.json").read_text())["resumed_at"] == [2]
    (tmp_path / "a_file").write_text("")
    for folder, reason in [(tmp_path / "a_file" / "run", "Not a directory"), ("/sys/run", "")]:
        refused = tool("train_net.py", *command, "OUTPUT_DIR", folder)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert f"error: OUTPUT_DIR {folder}: cannot write there ({reason}" in refused.stderr


@pytest.mark.slow
def test_each_seed_of_a_multi_seed_run_logs_each_line_once(tmp_path):
    write_voc(str(tmp_path / "data"), classes=("person", "car"), train=2, test=1)
    voc = tmp_path / "data" / "VOC2007"
    result = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/trees_R_18_FPN_cpu.yaml"),
                  "--voc", "twice_train", voc, "trainval", "--voc", "twice_test", voc, "test", "--seeds", 2,
                  "DATASETS.TRAIN", "('twice_train',)", "DATASETS.TEST", "('twice_test',)",
                  "MODEL.ROI_HEADS.NUM_CLASSES", 2, "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", 96,
                  "SOLVER.MAX_ITER", 1, "OUTPUT_DIR", tmp_path / "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("Starting training from iteration 0") == 2, output[-3000:]
    assert output.count("norm layers actually used") == 2


def test_eval_only_checks_what_it_reads_as_training_does(voc_root, tmp_path):
    """A builtin VOC test split that lists an image twice (Detectron2's reader takes it as it is) is refused in
    one line before any process starts, for --eval-only as for training."""
    root = tmp_path / "datasets"
    shutil.copytree(voc_root, root)
    split = root / "VOC2007" / "ImageSets" / "Main" / "test.txt"
    ids = split.read_text().split()
    split.write_text("\n".join(ids + ids[:1]) + "\n")
    for mode in (["--eval-only"], []):
        result = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "tiny/voc_R_50_C4_cpu.yaml"), *mode,
                      "MODEL.WEIGHTS", "", "OUTPUT_DIR", tmp_path / f"out{len(mode)}",
                      env={"DETECTRON2_DATASETS": str(root)})
        assert result.returncode == 1, result.stderr[-2000:]
        assert "dataset voc_2007_test: lists 1 images more than once" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / f"out{len(mode)}" / "seed_0").exists()
