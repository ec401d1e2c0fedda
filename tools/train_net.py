#!/usr/bin/env python
"""Fine-tune a converted backbone with Detectron2 and evaluate it (Detectron2's train_net conventions).

    DETECTRON2_DATASETS=~/data tools/train_net.py --config-file configs/transfer/voc_R_50_C4_24k.yaml \\
        --num-gpus 8 --seeds 5 MODEL.WEIGHTS houghcl_r50.pkl OUTPUT_DIR output/voc/houghcl
    tools/train_net.py --config-file configs/transfer/tiny/trees_R_18_FPN_cpu.yaml \\
        --voc trees_train datasets/trees train --voc trees_test datasets/trees test MODEL.WEIGHTS r18.pkl

Before training, every backbone parameter must come from MODEL.WEIGHTS (``--allow-partial`` to override), and
the input settings must agree with the converter's sidecar JSON. ``--seeds K`` runs seeds 0..K-1 into
OUTPUT_DIR/seed_k/; without it, one run with the config's SEED (drawn and recorded when it is -1).
"""
import logging
import os
import secrets
import sys

from detectron2.engine import launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from pretrain.lock import LockError, OutputLock
from pretrain.provenance import provenance
from transfer.config import setup_cfg
from transfer.datasets import DatasetError, check_datasets, evaluation_identity, evaluation_metric, register_from_args
from transfer.results import ResultsError, seed_dir, write_final_results
from transfer.trainer import (
    LaunchError,
    ResumeError,
    TransferTrainer,
    check_finished,
    check_launcher,
    check_resume,
    parse_args,
    resolve_norms,
    saved_config,
    setup,
)
from transfer.weights import WeightsError

logger = logging.getLogger("transfer")


def main(args):
    register_from_args(args.voc, args.coco, args.classes)  # again in each spawned process
    cfg = setup(args)
    trainer = TransferTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if args.eval_only:
        results = TransferTrainer.test(cfg, trainer.model)
    else:
        trainer.train()
        results = trainer.final_results()
    if comm.is_main_process():
        if len(cfg.TEST.EXPECTED_RESULTS):
            verify_results(cfg, results)
        metrics = {name: evaluation_metric(name) for name in cfg.DATASETS.TEST}
        world = comm.get_world_size()
        path = write_final_results(cfg.OUTPUT_DIR, results, cfg.SEED, cfg.MODEL.WEIGHTS, cfg.dump(),
                                   provenance(world, cfg.SOLVER.IMS_PER_BATCH // world), metric=metrics,
                                   evaluation=[evaluation_identity(name) for name in cfg.DATASETS.TEST])
        logger.info("results written to %s", path)
    return results


def launch_one(args):
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


def run(args) -> int:
    """Check what can be checked before any process starts, hold OUTPUT_DIR, then fine-tune."""
    base = setup_cfg(args.config_file, args.opts)
    register_from_args(args.voc, args.coco, args.classes)
    check_datasets(base)
    check_launcher(args.num_gpus * args.num_machines, base.MODEL.DEVICE)
    if args.machine_rank > 0:  # the first machine's job holds the folder for all
        return run_seeds(args, base)
    with OutputLock(base.OUTPUT_DIR):
        return run_seeds(args, base)


def resumed_cfg(args, extra):
    """The config a process of this command builds (norms resolved for its world size), to hold against the
    config the run in its folder started with."""
    cfg = setup_cfg(args.config_file, list(args.opts) + extra, freeze=False)
    resolve_norms(cfg, args.num_gpus * args.num_machines)
    return cfg


def run_seeds(args, base) -> int:
    """One fine-tuning with the config's seed (drawn once and recorded if it is -1; on --resume, the run's own),
    or seeds 0..K-1. A resume must continue the same experiment: same config, same weights."""
    if not args.seeds:
        saved = saved_config(base.OUTPUT_DIR) if args.resume else None
        if saved is not None:
            seed, why = int(saved["SEED"]), f" (the run's own, from {base.OUTPUT_DIR}/config.yaml)"
        else:
            seed = base.SEED if base.SEED >= 0 else secrets.randbelow(2 ** 31)
            why = " (drawn: the config says SEED -1)" if base.SEED < 0 else ""
        if saved is not None:
            check_resume(resumed_cfg(args, ["SEED", str(seed)]), base.OUTPUT_DIR)
        print(f"seed {seed}{why}", flush=True)
        args.opts = list(args.opts) + ["SEED", str(seed)]
        launch_one(args)
        return 0
    for k in range(args.seeds):
        out = seed_dir(base.OUTPUT_DIR, k)
        finished = os.path.join(out, "final_results.json")
        if args.resume and os.path.exists(finished):
            check_finished(finished, base.MODEL.WEIGHTS)
            print(f"seed {k}: already finished ({finished}), skipped")
            continue
        one = type(args)(**vars(args))
        one.opts = list(args.opts) + ["SEED", str(k), "OUTPUT_DIR", out]
        if args.resume:
            check_resume(resumed_cfg(one, []), out)
        print(f"seed {k} ({k + 1} of {args.seeds}) -> {out}", flush=True)
        launch_one(one)
    return 0


if __name__ == "__main__":
    arguments = parse_args()
    try:
        sys.exit(run(arguments))
    except (WeightsError, ResultsError, DatasetError, LockError, LaunchError, ResumeError, FileNotFoundError,
            ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
