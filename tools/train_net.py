#!/usr/bin/env python
"""Fine-tune a converted backbone with Detectron2 and evaluate it (Detectron2's train_net conventions).

    DETECTRON2_DATASETS=~/data tools/train_net.py --config-file configs/transfer/voc_R_50_C4_24k.yaml \\
        --num-gpus 8 --seeds 5 MODEL.WEIGHTS houghcl_r50.pkl OUTPUT_DIR output/voc/houghcl
    tools/train_net.py --config-file configs/transfer/tiny/voc_R_50_C4_cpu.yaml \\
        --voc trees_train datasets/trees train --voc trees_test datasets/trees test \\
        DATASETS.TRAIN "('trees_train',)" DATASETS.TEST "('trees_test',)" MODEL.ROI_HEADS.NUM_CLASSES 1

Before training, every backbone parameter must come from MODEL.WEIGHTS (``--allow-partial`` to override), and
the input settings must agree with the converter's sidecar JSON when there is one.
"""
import json
import logging
import os
import sys

import _bootstrap  # noqa: F401  isort:skip
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.evaluation import verify_results  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import transfer  # noqa: E402  (registers the extra-norm ROI head)
from pretrain.checkpoint import atomic_write  # noqa: E402
from transfer.checks import WeightsError, check_sidecar, load_and_check_coverage  # noqa: E402
from transfer.datasets import build_evaluator, missing_builtin, register_from_args  # noqa: E402

logger = logging.getLogger("train_net")
NORM_KEYS = ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))


def resolve_norms(cfg, world_size):
    """SyncBN needs several GPU processes: at world size 1 it is plain BN, and on CPU processes it must be
    naiveSyncBN (torch's SyncBatchNorm refuses CPU tensors). Says what is actually used."""
    notes = []
    for key in NORM_KEYS:
        node = cfg.MODEL[key]
        if node.NORM != "SyncBN":
            continue
        if world_size == 1:
            node.NORM = "BN"
            notes.append(f"MODEL.{key}.NORM SyncBN -> BN (world size 1: same statistics)")
        elif cfg.MODEL.DEVICE == "cpu":
            node.NORM = "naiveSyncBN"
            notes.append(f"MODEL.{key}.NORM SyncBN -> naiveSyncBN (CPU processes)")
    return notes


def setup(args):
    cfg = transfer.setup_cfg(args.config_file, args.opts, freeze=False)
    if args.allow_partial:
        cfg.TRANSFER.ALLOW_PARTIAL_WEIGHTS = True
    notes = resolve_norms(cfg, comm.get_world_size())
    cfg.freeze()
    default_setup(cfg, args)
    for name in ("transfer", "train_net"):
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=name, abbrev_name=name)
    norms = ", ".join(f"{k} {cfg.MODEL[k].NORM or 'none'}" for k in NORM_KEYS)
    logger.info("norm layers actually used: %s%s", norms, "".join(f"\n  {n}" for n in notes))
    return cfg


def load_weights(cfg, model):
    """Load MODEL.WEIGHTS with every backbone parameter accounted for (or say that training starts random)."""
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        logger.info("MODEL.WEIGHTS is empty: random initialisation")
        return
    if not os.path.exists(weights):
        raise WeightsError(f"MODEL.WEIGHTS {weights}: no such file")
    check_sidecar(cfg, weights)
    load_and_check_coverage(model, weights, cfg.TRANSFER.ALLOW_PARTIAL_WEIGHTS)


def write_results(cfg, results):
    if comm.is_main_process():
        payload = {"results": results, "weights": cfg.MODEL.WEIGHTS, "seed": cfg.SEED,
                   "config": cfg.dump()}
        path = os.path.join(cfg.OUTPUT_DIR, "final_results.json")
        atomic_write(path, lambda f: f.write(json.dumps(payload, indent=2).encode()))
        logger.info("results written to %s", path)


def main(args):
    register_from_args(args.voc, args.coco)
    cfg = setup(args)
    missing = missing_builtin(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    if missing:
        raise FileNotFoundError(f"dataset files missing under DETECTRON2_DATASETS: {missing}")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        if args.resume and checkpointer.has_checkpoint():
            checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=True)
        else:
            load_weights(cfg, model)
        results = Trainer.test(cfg, model)
        write_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    if args.resume and trainer.checkpointer.has_checkpoint():
        trainer.resume_or_load(resume=True)  # continue this run: its own last checkpoint
    else:
        load_weights(cfg, trainer.model)
    trainer.train()
    results = getattr(trainer, "_last_eval_results", {})  # set by the final evaluation hook
    if len(cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
        verify_results(cfg, results)
    write_results(cfg, results)
    return results


def parse_args(argv=None):
    parser = default_argument_parser()
    parser.add_argument("--allow-partial", action="store_true",
                        help="train even if MODEL.WEIGHTS leaves some backbone parameters random")
    parser.add_argument("--seeds", type=int, default=1, help="run K fine-tunings into OUTPUT_DIR/seed_k/")
    parser.add_argument("--voc", nargs=3, action="append", default=[], metavar=("NAME", "DIR", "SPLIT"),
                        help="register a VOC-layout dataset (classes read from its annotations)")
    parser.add_argument("--coco", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGES"),
                        help="register a COCO-json dataset")
    return parser.parse_args(argv)


def run(args):
    """Launch one fine-tuning, or K of them with seeds 0..K-1 into OUTPUT_DIR/seed_k/."""
    def launch_one(one):
        launch(main, one.num_gpus, num_machines=one.num_machines, machine_rank=one.machine_rank,
               dist_url=one.dist_url, args=(one,))

    if args.seeds <= 1:
        launch_one(args)
        return 0
    base = transfer.setup_cfg(args.config_file, args.opts)
    for k in range(args.seeds):
        out = os.path.join(base.OUTPUT_DIR, f"seed_{k}")
        if args.resume and os.path.exists(os.path.join(out, "final_results.json")):
            print(f"seed {k}: already finished ({out}/final_results.json), skipped")
            continue
        one = type(args)(**vars(args))
        one.opts = list(args.opts) + ["SEED", str(k), "OUTPUT_DIR", out]
        print(f"seed {k} ({k + 1} of {args.seeds}) -> {out}", flush=True)
        launch_one(one)
    return 0


if __name__ == "__main__":
    arguments = parse_args()
    try:
        sys.exit(run(arguments))
    except (WeightsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
