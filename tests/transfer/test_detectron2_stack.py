"""The installed Detectron2 works here: both model-zoo architectures build on CPU, train one iteration on a
tiny dataset written by the test, and evaluate with the standard evaluators."""
import math
import uuid

import pytest
import torch

from transfer.synthetic import write_coco, write_voc

d2 = pytest.importorskip("detectron2")

from detectron2 import model_zoo  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import build_detection_test_loader, build_detection_train_loader  # noqa: E402
from detectron2.data.datasets import register_coco_instances, register_pascal_voc  # noqa: E402
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator, inference_on_dataset  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.solver import build_optimizer  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402


def cpu_cfg(zoo_config, train, test, num_classes):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(zoo_config))
    cfg.MODEL.WEIGHTS = ""  # the zoo's default is a URL: no downloads here
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "BN"  # FrozenBN with random weights diverges
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST, cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 200, 100
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (96,), 128
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 96, 128
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR = 2, 0.001
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train,), (test,)
    return cfg


def train_one_iteration(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    with EventStorage(0):
        losses = model(next(iter(build_detection_train_loader(cfg))))
    total = sum(losses.values())
    assert math.isfinite(total.item()), losses
    total.backward()
    optimizer.step()
    return model


@pytest.mark.slow
def test_faster_rcnn_c4_on_voc_layout(tmp_path):
    base = write_voc(str(tmp_path))
    name = f"tiny_voc_{uuid.uuid4().hex[:6]}"
    for split in ("trainval", "test"):
        register_pascal_voc(f"{name}_{split}", base, split, 2007, ["person", "car"])
    cfg = cpu_cfg("PascalVOC-Detection/faster_rcnn_R_50_C4.yaml", f"{name}_trainval", f"{name}_test", 2)
    model = train_one_iteration(cfg)
    assert type(model.roi_heads).__name__ == "Res5ROIHeads"
    results = inference_on_dataset(model, build_detection_test_loader(cfg, f"{name}_test"),
                                   PascalVOCDetectionEvaluator(f"{name}_test"))
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}
    assert all(0.0 <= v <= 100.0 for v in results["bbox"].values())


@pytest.mark.slow
def test_mask_rcnn_fpn_on_coco_json(tmp_path):
    json_file, images = write_coco(str(tmp_path))
    name = f"tiny_coco_{uuid.uuid4().hex[:6]}"
    register_coco_instances(name, {}, json_file, images)
    cfg = cpu_cfg("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", name, name, 2)
    model = train_one_iteration(cfg)
    assert model.roi_heads.mask_on
    evaluator = COCOEvaluator(name, tasks=("bbox", "segm"), output_dir=str(tmp_path / "eval"))
    results = inference_on_dataset(model, build_detection_test_loader(cfg, name), evaluator)
    assert set(results) == {"bbox", "segm"}
    assert "AP" in results["bbox"] and "AP" in results["segm"]
