"""Numerics modes: ``fast`` (the machine's fastest kernels, the default of real training) and ``portable`` (the
same bits on any x86-64 CPU with AVX2, whatever its vendor, cache sizes, core count or wider instruction sets: the
default of the demo and the study).

What decides a float32 result on a CPU, kernel family by kernel family, and how ``portable`` pins it:
- convolutions: oneDNN picks JIT kernels, blockings and the reduction order by the instruction set (AVX2, AVX-512,
  AMX) and the cache sizes, with no reproducibility mode; switched off (``torch.backends.mkldnn``), convolutions
  are ATen's im2col + BLAS GEMM. NNPACK (another ISA-dependent convolution path) is switched off too.
- matrix products (GEMM, and the convolutions above): MKL's Conditional Numerical Reproducibility, ``MKL_CBWR``
  = ``COMPATIBLE``: MKL's SSE2 code path without approximate instructions (rcpps/rsqrtps), with fixed cache sizes,
  deterministic reductions and static scheduling. It is the only branch MKL honours on non-Intel CPUs: Intel
  documents that ``AVX2`` falls back to the machine-dependent AUTO dispatch on an AMD CPU, so it would agree
  across Intel CPUs only (and cost less: a HoughCL step 2.1x fast here against 3.6x). MKL reads it when it
  starts, so it must be in the environment before the process starts; its results assume a fixed thread count.
- element-wise math, reductions and BatchNorm: ATen's vectorised kernels, compiled per instruction set (the
  vector width changes the summation order); ``ATEN_CPU_CAPABILITY`` = ``avx2`` holds an AVX-512 machine to the
  kernels of an AVX2 one. Read once, when the first kernel is dispatched: also set before the process starts.
- NumPy (the evaluations: VOC AP, COCO's pycocotools): its own run-time dispatch picks AVX-512 sorting kernels
  (x86-simd-sort) where the CPU has them, and ``np.argsort``, unstable, orders tied scores by the kernel: the VOC
  AP of the same detections moved in the fourth digit between an AVX-512 and an AVX2-only CPU. Held to the AVX2
  level (``NPY_DISABLE_CPU_FEATURES``, read when NumPy loads; features a CPU lacks are ignored).
- parallel reductions split their input by the number of threads: the count is fixed (``PORTABLE_THREADS``),
  not taken from the machine, for torch and for OpenMP/MKL.
- ``torch.use_deterministic_algorithms``: no nondeterministic kernel (atomics, on GPUs) is used silently; on GPUs,
  ``CUBLAS_WORKSPACE_CONFIG`` makes cuBLAS deterministic (GPUs of one model only: no GPU kernel is portable across
  GPU models).
Tools start again with these variables when they are missing (``reexec_if_needed``); the demo's stage runner
sets them for every stage (``environment``).
"""
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

MODES = ("fast", "portable")
PORTABLE_THREADS = 2
# Read by MKL, ATen and OpenMP when they start: set before the process starts.
PORTABLE_ENV = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "OMP_NUM_THREADS": str(PORTABLE_THREADS),
    "MKL_NUM_THREADS": str(PORTABLE_THREADS),
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's names (2.4) of the AVX-512 levels
}
# The settings of ``portable``; ``NUMERICS_OMIT`` (a comma list of them, a diagnostic) leaves some out, to show
# which ones matter (tests/pretrain/runtime/test_numerics.py); a run made so records it and is not called portable.
SETTINGS = ("mkldnn", "nnpack", "threads", "deterministic", "MKL_CBWR", "ATEN_CPU_CAPABILITY",
            "NPY_DISABLE_CPU_FEATURES")
_APPLIED: Dict[str, object] = {}


def omitted() -> Tuple[str, ...]:
    names = tuple(n for n in os.environ.get("NUMERICS_OMIT", "").split(",") if n)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise NumericsError(f"NUMERICS_OMIT names {unknown}; the settings are {SETTINGS}")
    return names


def portable_env() -> Dict[str, str]:
    """PORTABLE_ENV less what ``NUMERICS_OMIT`` leaves out."""
    drop = set(omitted())
    env = {k: v for k, v in PORTABLE_ENV.items() if k not in drop}
    if "threads" in drop:
        env = {k: v for k, v in env.items() if not k.endswith("_NUM_THREADS")}
    return env


class NumericsError(RuntimeError):
    pass


def busy(load: Optional[float] = None, cores: Optional[int] = None) -> Optional[str]:
    """One line when other work already holds the cores that portable's threads need (the load average of the
    last minute above ``cores - PORTABLE_THREADS + 1``), else None. ``load``, ``cores``: default this machine's."""
    try:
        load = os.getloadavg()[0] if load is None else load
    except OSError:  # no load average on this system
        return None
    cores = cores or os.cpu_count() or 1
    if load <= cores - PORTABLE_THREADS + 1:
        return None
    return (f"note: this machine is busy (load {load:.1f} on {cores} cores): portable numerics keep their "
            f"{PORTABLE_THREADS} threads (the bits depend on it), which wait passively rather than spin on cores "
            "that others hold; the run is slower than on a quiet machine, with the same bits")


def environment(mode: str, base: Optional[Dict[str, str]] = None, load: Optional[float] = None) -> Dict[str, str]:
    """The environment a process of ``mode`` must start with (``base``: default os.environ). Portable on a busy
    machine (``busy``; ``load``: default this machine's) says so in one line and has OpenMP's threads wait
    passively: the same bits (the work is split as before), and about half the step time of spinning threads on
    2 cores shared with other runs. Not on a quiet machine, where passive threads cost about a tenth more
    (docs/numerics.md, "A busy machine")."""
    env = dict(os.environ if base is None else base)
    if mode == "portable":
        env.update(portable_env())
        note = None if "OMP_WAIT_POLICY" in env else busy(load)
        if note:
            print(note, file=sys.stderr, flush=True)
            env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def missing(mode: str) -> Dict[str, str]:
    """The variables of ``mode`` that this process did not start with (``KEY: wanted``)."""
    if mode != "portable":
        return {}
    return {k: v for k, v in portable_env().items() if os.environ.get(k) != v}


def requested_mode(argv: Sequence[str], default: str = "fast") -> str:
    """The mode a command line asks for, read before the tool parses it: ``--numerics MODE`` or the config override
    ``NUMERICS MODE`` (pretraining), else ``default``."""
    argv = list(argv)
    for flag in ("--numerics", "NUMERICS"):
        if flag in argv[:-1]:
            return argv[argv.index(flag) + 1]
    for item in argv:
        if item.startswith("--numerics="):
            return item.split("=", 1)[1]
    return default


def reexec_if_needed(mode: Optional[str] = None, default: str = "fast") -> None:
    """Run as a script in ``portable`` mode without its variables: start this same command again with them (they
    are read by libraries when they load, too early for the process to set them itself)."""
    mode = mode or requested_mode(sys.argv[1:], default)
    if missing(mode):
        os.execve(sys.executable, [sys.executable, *sys.argv], environment(mode))


def apply(mode: str) -> Dict[str, object]:
    """Switch this process to ``mode``; returns what it set (for provenance). ``portable`` refuses to run in a
    process that did not start with its variables (``NumericsError``, one line naming them)."""
    import torch
    if mode not in MODES:
        raise NumericsError(f"numerics mode {mode!r} is not one of {MODES}")
    if mode == "fast":
        torch.backends.mkldnn.enabled = True
        torch.backends.nnpack.set_flags(True)
        torch.use_deterministic_algorithms(False)
        _APPLIED.clear()
        _APPLIED.update({"mode": "fast"})
        return dict(_APPLIED)
    absent = missing(mode)
    if absent:
        wanted = " ".join(f"{k}={v}" for k, v in absent.items())
        raise NumericsError(f"portable numerics need {wanted} in the environment before Python starts (libraries "
                            "read them when they load): run the tool as a script, which sets them, or export them")
    drop = omitted()
    torch.backends.mkldnn.enabled = "mkldnn" in drop
    torch.backends.nnpack.set_flags("nnpack" in drop)
    if "threads" not in drop:
        torch.set_num_threads(PORTABLE_THREADS)
    torch.use_deterministic_algorithms("deterministic" not in drop, warn_only=True)
    _APPLIED.clear()
    _APPLIED.update({"mode": "portable" if not drop else "portable, less " + ", ".join(drop),
                     "mkldnn": torch.backends.mkldnn.enabled, "nnpack": "nnpack" in drop,
                     "threads": torch.get_num_threads(), "deterministic_algorithms": "deterministic" not in drop,
                     "environment": portable_env()})
    return dict(_APPLIED)


def add_argument(parser, default: str = "fast") -> None:
    """The ``--numerics`` flag of a tool (its ``__main__`` calls ``reexec_if_needed`` first, ``main`` ``apply``)."""
    parser.add_argument("--numerics", choices=MODES, default=default,
                        help=f"fast: the machine's fastest kernels (numbers vary across CPUs); portable: the same "
                             f"bits on any x86-64 CPU with AVX2, slower (pretrain/runtime/numerics.py). "
                             f"Default: {default}")


def switch(mode: str) -> bool:
    """``apply`` for a tool's ``main``: False, after one line on stderr, when the mode cannot be set."""
    try:
        apply(mode)
    except NumericsError as e:
        print(f"error: --numerics {mode}: {e}", file=sys.stderr)
        return False
    return True


def current() -> Dict[str, object]:
    """What ``apply`` last set in this process (``fast`` when it was never called)."""
    return dict(_APPLIED) if _APPLIED else {"mode": "fast"}
