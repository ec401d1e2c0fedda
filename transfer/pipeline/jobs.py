"""Jobs through submitit (``tools/submit.py``): SLURM, or this machine with ``cluster="local"``. Every job runs its
tools/ command with ``--resume``, so that a requeued job (preemption, time limit) continues from its checkpoint."""
import os
import subprocess
import sys
import time
from typing import List

import submitit

from transfer.results import seed_runs

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")


class ResumableCommand(submitit.helpers.Checkpointable):
    """A tools/ command run inside a submitit job; requeued as is (it already says --resume). When the job is
    preempted or reaches its time limit, submitit calls ``checkpoint``: the command gets SIGTERM, saves a
    checkpoint and exits (pretraining and fine-tuning both do), and the requeued job resumes from it."""

    def __init__(self, kind, argv):
        self.kind, self.argv = kind, [str(a) for a in argv]
        self.process = None

    def __getstate__(self):
        return {"kind": self.kind, "argv": self.argv, "process": None}  # a running process does not travel

    def command(self):
        if self.kind == "pretrain":
            # One SLURM task per GPU: pretrain/runtime/distributed.py reads the SLURM variables itself.
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
        self.process = subprocess.Popen(command)
        # Polled, not wait(): submitit's signal handler (checkpoint) runs in this thread and must be able to
        # wait for the command too; Popen.wait holds a lock the handler would then wait for forever.
        while self.process.poll() is None:
            time.sleep(0.5)
        if self.process.returncode:
            raise subprocess.CalledProcessError(self.process.returncode, command)
        return command

    def checkpoint(self, *args, **kwargs):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # the command checkpoints and exits
            deadline = time.time() + 600
            while self.process.poll() is None and time.time() < deadline:
                time.sleep(0.5)
            if self.process.poll() is None:
                self.process.kill()
        print(f"requeued: {self.kind} continues from its checkpoint", flush=True)
        return submitit.helpers.DelayedSubmission(ResumableCommand(self.kind, self.argv))


def output_dir_of(config_file: str, opts: List[str]) -> str:
    """OUTPUT_DIR from the overrides, else from the config file (for the per-seed folders)."""
    if "OUTPUT_DIR" in opts[:-1]:
        return opts[opts.index("OUTPUT_DIR") + 1]
    from transfer.finetune.config import setup_cfg  # Detectron2: only when the folder is not given
    return setup_cfg(config_file).OUTPUT_DIR


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


def commands(kind: str, config_file: str, opts: List[str], seeds: int, gpus: int) -> List[ResumableCommand]:
    """Pretraining: one job. Fine-tuning: one job per seed (OUTPUT_DIR/seed_k), each on ``gpus`` GPUs."""
    base = ["--config-file", config_file] + list(opts)
    if kind == "pretrain":
        return [ResumableCommand("pretrain", base)]
    out = output_dir_of(config_file, opts)
    return [ResumableCommand("finetune", ["--num-gpus", str(gpus)] + base + overrides)
            for _, _, overrides in seed_runs(out, seeds)]


def wait(jobs, poll_s: float = 30.0) -> int:
    """Each job's state whenever it changes (with its log), then how it ended; the number that failed."""
    states = {}
    while True:
        for job in jobs:
            state = job.state
            if states.get(job.job_id) != state:
                states[job.job_id] = state
                print(f"job {job.job_id}: {state} (log: {job.paths.stdout})", flush=True)
        if all(job.done() for job in jobs):
            break
        time.sleep(poll_s)
    failed = 0
    for job in jobs:
        try:
            job.result()
            print(f"job {job.job_id}: completed")
        except Exception as e:  # submitit re-raises the job's failure here
            failed += 1
            print(f"job {job.job_id}: failed: {failure_reason(job, e)}\n  full log: {job.paths.stderr}",
                  file=sys.stderr)
    return failed
