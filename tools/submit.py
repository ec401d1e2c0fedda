#!/usr/bin/env python
"""Submit pretraining or fine-tuning jobs to SLURM (or run them locally) through submitit.

    tools/submit.py pretrain --config-file configs/pretrain/houghcl_r50_coco_800ep_8x32.yaml --nodes 1 \\
        --gpus-per-node 8 --partition learnfair
    tools/submit.py finetune --config-file configs/transfer/voc_R_50_C4_24k.yaml --seeds 5 --gpus-per-node 8 \\
        MODEL.WEIGHTS houghcl_r50.pkl OUTPUT_DIR output/voc/houghcl
    tools/submit.py pretrain --cluster local --wait --config-file configs/pretrain/tiny_r18_cpu.yaml ...
    tools/submit.py finetune --cluster local --wait --config-file configs/transfer/tiny/trees_R_18_FPN_cpu.yaml \
        --voc trees_train datasets/trees train --voc trees_test datasets/trees test MODEL.WEIGHTS r18.pkl

``--cluster local`` runs the jobs on this machine, one process each (no SLURM needed; fine-tuning on one GPU,
or on the CPU with a config that says MODEL.DEVICE cpu); ``--wait`` waits and reports each job's own error line.

Every job runs its command with ``--resume``: when SLURM preempts it or its time runs out, submitit requeues it
and it continues from its last checkpoint. Fine-tuning submits one job per seed (OUTPUT_DIR/seed_k).
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import os
import sys

from transfer.finetune.arguments import overrides_last
from transfer.pipeline.jobs import build_executor, commands, wait


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("pretrain", "finetune"))
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--seeds", type=int, default=1, help="finetune: one job per seed, OUTPUT_DIR/seed_k")
    parser.add_argument("--cluster", choices=("slurm", "local", "debug"), default=None,
                        help="default: SLURM when available, else local")
    parser.add_argument("--folder", default="output/jobs/%j", help="submitit logs (%%j: the job id)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--cpus-per-gpu", type=int, default=10)
    parser.add_argument("--mem-gb", type=int, default=0, help="per node; 0: the partition's default")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--timeout-min", type=int, default=72 * 60)
    parser.add_argument("--job-name", default=None)
    parser.add_argument("--wait", action="store_true", help="wait for the jobs and report how they ended")
    # What is left goes to the command: KEY VALUE overrides, and for finetune any train_net.py flag (--voc ...).
    args, opts = parser.parse_known_args(argv)
    unknown = [o for o in opts if o.startswith("--")]
    if unknown and args.kind == "pretrain":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.opts = opts
    return args


def main(argv=None):
    args = parse_args(argv)
    if not os.path.exists(args.config_file):
        print(f"error: {args.config_file}: no such config file", file=sys.stderr)
        return 1
    gpus = args.gpus_per_node if args.cluster != "local" else 1
    jobs_to_run = commands(args.kind, args.config_file, overrides_last(list(args.opts)), args.seeds, gpus)
    executor = build_executor(args)
    jobs = [executor.submit(command) for command in jobs_to_run]
    for job, command in zip(jobs, jobs_to_run):
        print(f"submitted job {job.job_id} ({executor.cluster}): {args.kind} {' '.join(command.argv)}")
        print(f"  logs: {job.paths.stdout} and {job.paths.stderr}")
    return 1 if args.wait and wait(jobs, poll_s=2 if executor.cluster != "slurm" else 30) else 0


if __name__ == "__main__":
    sys.exit(main())
