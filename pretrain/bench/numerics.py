"""What portable numerics cost: one pretraining step in a ``fast`` and in a ``portable`` process, timed in turn
(tools/benchmark.py ``numerics``).

MKL reads ``MKL_CBWR`` and ATen its CPU capability when they load, so the two modes cannot share a process: each
mode gets a worker process started with its own environment (pretrain/runtime/numerics.py), and the parent asks the
workers for one step at a time, alternately, so that drifts of the machine hit both; the ratio is the median of
same-round ratios, as for the other parts. A second portable worker takes the same steps untimed: its weights must
equal the first's to the bit (``repeat_identical``), which on a GPU is what the deterministic settings buy
(``use_deterministic_algorithms``, ``CUBLAS_WORKSPACE_CONFIG``; no GPU result is portable across GPU models).

Candidates for a cheaper portable mode (``CANDIDATES``) run as more workers, portable but for what they change; each
is reported with its time and whether it ended with the portable worker's weights (the same bits: the same promise
on this machine; other bits: a promise of its own, to be shown on other CPUs).

    python -m pretrain.bench.numerics MODE DEPTH SIZE BATCH VARIANT DEVICE [CANDIDATE]   (a worker: "step"/"digest")
"""
import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, NamedTuple

import torch

from pretrain.bench.step import STEP_VARIANTS, random_batch, step_function
from pretrain.bench.timing import paired_ratio, sync
from pretrain.runtime import numerics
from pretrain.runtime.provenance import cpu_description


class Candidate(NamedTuple):
    env: Dict[str, str]  # what it changes in the portable environment
    omit: str  # the portable settings it leaves out (NUMERICS_OMIT)
    why: str
    channels_last: bool = False
    threads: int = 0  # torch's thread count, when not portable's


CANDIDATES = {
    "mkl_avx2_strict": Candidate({"MKL_CBWR": "AVX2,STRICT"}, "MKL_CBWR",
                                 "MKL's AVX2 branch, strict: documented for Intel CPUs only"),
    "mkl_auto": Candidate({"MKL_CBWR": "AUTO"}, "MKL_CBWR", "MKL's own dispatch, with CNR's fixed cache sizes, "
                          "reductions and scheduling"),
    "onednn_avx2": Candidate({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "mkldnn", "oneDNN's convolutions held to AVX2 "
                             "kernels: oneDNN promises run-to-run bits on one machine only"),
    "channels_last": Candidate({}, "", "portable's kernels on channels-last tensors (another im2col and GEMM layout)",
                               channels_last=True),
    "passive_wait": Candidate({"OMP_WAIT_POLICY": "PASSIVE"}, "", "OpenMP's threads sleep between parallel "
                              "regions (portable's choice on a busy machine)"),
    **{f"threads_{n}": Candidate({"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}, "threads",
                                 f"{n} thread{'s' * (n > 1)} instead of {numerics.PORTABLE_THREADS}", threads=n)
       for n in (1, 4)},
}


def mode_environment(mode: str, candidate: str = "") -> Dict[str, str]:
    """The environment of a worker in ``mode``: ``fast`` is this environment less the portable variables;
    ``candidate``: portable changed as CANDIDATES says."""
    if mode == "portable":
        env = numerics.environment("portable", load=0.0)  # as on a quiet machine: passive_wait measures the other
        if candidate:
            env.update({**CANDIDATES[candidate].env, "NUMERICS_OMIT": CANDIDATES[candidate].omit})
        return env
    return {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV and k != "NUMERICS_OMIT"}


class Worker:
    """A process that holds one model in ``mode`` and times one training step per request."""

    def __init__(self, mode: str, args, variant: str, candidate: str = ""):
        command = [sys.executable, "-m", "pretrain.bench.numerics", mode, str(args.depth), str(args.size),
                   str(args.batch), variant, args.device, candidate]
        self.mode = candidate or mode
        self.process = subprocess.Popen(command, env=mode_environment(mode, candidate), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.threads = int(self.read())  # "ready" carries the worker's thread count

    def read(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.mode} worker stopped (exit status {self.process.wait()})")
        return line.strip()

    def ask(self, request: str) -> str:
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        return self.read()

    def step(self) -> float:
        return float(self.ask("step"))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def bench_numerics(args) -> Dict:
    """Median seconds per step of ``args.variant`` in each mode and candidate (``args.candidates``), each / fast
    (same-round ratios), and which of them end with the portable worker's weights."""
    candidates = list(getattr(args, "candidates", None) or [])
    workers = {mode: Worker(mode, args, args.variant) for mode in numerics.MODES}
    workers.update({name: Worker("portable", args, args.variant, name) for name in candidates})
    again = Worker("portable", args, args.variant)
    try:
        for worker in [*workers.values(), again]:
            for _ in range(args.warmup):
                worker.step()
        times = {name: [] for name in workers}
        for _ in range(args.repeats):
            for name, worker in workers.items():
                times[name].append(worker.step())
            again.step()
        digests = {name: worker.ask("digest") for name, worker in workers.items()}
        repeat_identical = digests["portable"] == again.ask("digest")
    finally:
        for worker in [*workers.values(), again]:
            worker.close()
    timing = {name: {"median": statistics.median(t), "min": min(t), "max": max(t), "n": len(t), "times": t}
              for name, t in times.items()}
    return {"numerics": timing, "ratios": {f"{name}/fast": paired_ratio(timing, name, "fast")
                                           for name in workers if name != "fast"},
            "threads": {name: w.threads for name, w in workers.items()}, "repeat_identical": repeat_identical,
            "same_weights": [sorted(n for n in workers if digests[n] == d) for d in sorted(set(digests.values()))
                             if sum(digests[n] == d for n in workers) > 1],
            "candidates": {name: {"same_bits_as_portable": digests[name] == digests["portable"],
                                  "why": CANDIDATES[name].why} for name in candidates},
            "settings": {"depth": args.depth, "size": args.size, "batch": args.batch, "variant": args.variant,
                         "device": args.device}, "cpu": cpu_description(), "cores": os.cpu_count(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def worker_main(argv) -> int:
    mode, depth, size, batch, variant, device, *candidate = argv
    numerics.apply(mode)
    chosen = CANDIDATES[candidate[0]] if candidate and candidate[0] else Candidate({}, "", "")
    channels_last = chosen.channels_last
    if chosen.threads:
        torch.set_num_threads(chosen.threads)
    args = argparse.Namespace(depth=int(depth), size=int(size), batch=int(batch), amp=False, compile=False)
    device = torch.device(device)
    step = step_function(args, STEP_VARIANTS[variant], random_batch(args, args.batch, device, channels_last), device,
                         channels_last)
    print(torch.get_num_threads(), flush=True)
    for line in sys.stdin:
        if line.strip() == "digest":  # sha256 of every parameter and buffer
            digest = hashlib.sha256()
            for value in step.model.state_dict().values():
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            print(digest.hexdigest(), flush=True)
            continue
        if line.strip() != "step":
            break
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        print(time.perf_counter() - start, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
