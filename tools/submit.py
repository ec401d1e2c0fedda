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
import argparse
import os
import subprocess
import sys

import submitit

from transfer.results import seed_dir
from transfer.trainer import overrides_last

TOOLS = os.path.dirname(os.path.abspath(__file__))


class ResumableCommand(submitit.helpers.Checkpointable):
    """A tools/ command run inside a submitit job; requeued as is (it already says --resume)."""

    def __init__(self, kind, argv):
        self.kind, self.argv = kind, list(argv)

    def command(self):
        if self.kind == "pretrain":
            # One SLURM task per GPU: pretrain/distributed.py reads the SLURM variables itself.
            return [sys.executable, os.path.join(TOOLS, "pretrain_net.py"), "--resume"] + self.argv
        # Detectron2: one task per node, launch() spawns a process per GPU.
        env = submitit.JobEnvironment()
        port = 20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000
        master = env.hostnames[0] if env.hostnames else "127.0.0.1"
        return [sys.executable, os.path.join(TOOLS, "train_net.py"), "--resume", "--num-machines",
                str(env.num_nodes), "--machine-rank", str(env.node), "--dist-url", f"tcp://{master}:{port}"] + self.argv

    def __call__(self):
        command = self.command()
        print("running:", " ".join(command), flush=True)
        subprocess.run(command, check=True)
        return command


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


def output_dir_of(args):
    """OUTPUT_DIR from the overrides, else from the config file (for the per-seed folders)."""
    opts = list(args.opts)
    if "OUTPUT_DIR" in opts[:-1]:
        return opts[opts.index("OUTPUT_DIR") + 1]
    from transfer.config import setup_cfg
    return setup_cfg(args.config_file).OUTPUT_DIR


def build_executor(args):
    executor = submitit.AutoExecutor(folder=args.folder, cluster=args.cluster)
    per_node = args.gpus_per_node if args.kind == "pretrain" else 1
    params = dict(name=args.job_name or f"{args.kind}-{os.path.splitext(os.path.basename(args.config_file))[0]}",
                  timeout_min=args.timeout_min, nodes=args.nodes, tasks_per_node=per_node)
    if executor.cluster == "slurm":
        params.update(slurm_partition=args.partition, gpus_per_node=args.gpus_per_node,
                      cpus_per_task=args.cpus_per_gpu * args.gpus_per_node // per_node,
                      slurm_signal_delay_s=120)
        if args.mem_gb:
            params["mem_gb"] = args.mem_gb
    elif executor.cluster == "local":
        params.update(gpus_per_node=0, nodes=1, tasks_per_node=1)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def failure_reason(job, error) -> str:
    """The command's own last ``error:`` line from the job's log (what went wrong), else the exception's."""
    try:
        log = job.stderr() or ""
    except OSError:
        log = ""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for wanted in (lambda line: line.startswith("error:"),  # the tools' own one-line errors
                   lambda line: "Error:" in line and "CalledProcessError" not in line):  # else a traceback's last
        found = [line for line in lines if wanted(line)]
        if found:
            return found[-1]
    return str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.exists(args.config_file):
        print(f"error: {args.config_file}: no such config file", file=sys.stderr)
        return 1
    base = ["--config-file", args.config_file] + overrides_last(list(args.opts))
    if args.kind == "finetune":
        gpus = ["--num-gpus", str(args.gpus_per_node if args.cluster != "local" else 1)]
        out = output_dir_of(args)
        commands = [ResumableCommand("finetune", gpus + base + ["SEED", str(k), "OUTPUT_DIR",
                                                                seed_dir(out, k)])
                    for k in range(args.seeds)]
    else:
        commands = [ResumableCommand("pretrain", base)]
    executor = build_executor(args)
    jobs = [executor.submit(command) for command in commands]
    for job, command in zip(jobs, commands):
        print(f"submitted job {job.job_id} ({executor.cluster}): {args.kind} {' '.join(command.argv)}")
        print(f"  logs: {job.paths.stdout} and {job.paths.stderr}")
    if args.wait:
        failed = 0
        for job in jobs:
            try:
                job.result()
                print(f"job {job.job_id}: completed")
            except Exception as e:  # submitit re-raises the job's failure here
                failed += 1
                print(f"job {job.job_id}: failed: {failure_reason(job, e)}\n  full log: {job.paths.stderr}",
                      file=sys.stderr)
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
