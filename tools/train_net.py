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
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import logging
import sys

import transfer  # noqa: F401  isort: skip  (first: its filter of fvcore's FutureWarning precedes Detectron2)
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from torch.multiprocessing import ProcessExitedException

from pretrain.runtime import numerics
from pretrain.runtime.lock import LockError
from pretrain.runtime.provenance import provenance
from transfer.data.datasets import DatasetError, evaluation_identity, evaluation_metric, register_from_args
from transfer.finetune.arguments import parse_args
from transfer.finetune.checkpointing import ResumeError
from transfer.finetune.launcher import run
from transfer.finetune.run_checks import LaunchError
from transfer.finetune.run_record import read_record
from transfer.finetune.trainer import TransferTrainer, setup
from transfer.results import ResultsError, write_final_results
from transfer.weights import WeightsError

logger = logging.getLogger("transfer")


def main(args):
    register_from_args(args.voc, args.coco, args.classes, args.sem_seg)  # again in each spawned process
    cfg = setup(args)
    trainer = TransferTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    record = read_record(cfg.OUTPUT_DIR) or {}  # the numerics mode and the weights' sha256 the run started with
    extra = {"classes": trainer.classes, "numerics_modes": record.get("numerics"),
             "weights_sha256": record.get("weights_sha256")}
    if args.eval_only:
        results = TransferTrainer.test(cfg, trainer.model)
    else:
        trainer.train()
        results, extra["resumed_at"] = trainer.final_results(), trainer.resumed_at
    if comm.is_main_process():
        if len(cfg.TEST.EXPECTED_RESULTS):
            verify_results(cfg, results)
        metrics = {name: evaluation_metric(name) for name in cfg.DATASETS.TEST}
        world = comm.get_world_size()
        path = write_final_results(cfg.OUTPUT_DIR, results, cfg.SEED, cfg.MODEL.WEIGHTS, cfg.dump(),
                                   provenance(world, cfg.SOLVER.IMS_PER_BATCH // world), metric=metrics,
                                   evaluation=[evaluation_identity(name) for name in cfg.DATASETS.TEST], **extra)
        logger.info("results written to %s", path)
    return results


if __name__ == "__main__":
    numerics.reexec_if_needed()  # --numerics portable: the variables libraries read at load time
    arguments = parse_args()
    try:
        sys.exit(run(main, arguments))
    except (WeightsError, ResultsError, DatasetError, LockError, LaunchError, ResumeError, FileNotFoundError,
            ValueError, numerics.NumericsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except ProcessExitedException as e:  # a spawned process stopped and has said why
        sys.exit(e.exit_code or 1)
    except KeyboardInterrupt:
        print("stopped at once (second Ctrl-C): no file is half-written, the last checkpoint in OUTPUT_DIR stands; "
              "continue with the same command and --resume", file=sys.stderr)
        sys.exit(130)
