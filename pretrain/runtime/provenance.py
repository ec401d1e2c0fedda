"""Where a number came from: the code, the packages, the machine and the process layout that produced it.

Every results file carries this record (``provenance``): the same seed and config give other numbers with other
code, other package versions, another CPU instruction set (oneDNN and MKL pick their kernels by it) or another
number of processes at the same total batch.
"""
import functools
import importlib.metadata
import os
import platform
import subprocess
from typing import Dict, Optional

import torch

from pretrain.runtime import numerics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Installed packages whose versions decide the numbers (kernels, image decoding, the detector, statistics).
VERSIONED = ("torch", "torchvision", "detectron2", "pb1-detectron2", "numpy", "Pillow", "scipy", "fvcore",
             "pycocotools", "opencv-python-headless")
# Variables that change which CPU kernels run, hence the floating-point results.
KERNEL_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG", "MKL_CBWR", "NUMERICS_OMIT",
                    "NPY_DISABLE_CPU_FEATURES")
# CPU flags that choose kernels (oneDNN, MKL and ATen dispatch on them).
KERNEL_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


@functools.lru_cache(maxsize=1)
def cpu_description() -> Dict[str, object]:
    """The CPU's model, vendor and kernel-choosing flags (from /proc/cpuinfo where there is one)."""
    info = {"model": platform.processor() or platform.machine(), "vendor": None, "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return info
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", info["model"]), "vendor": fields.get("vendor_id"),
            "flags": [f for f in KERNEL_FLAGS if f in flags]}


def package_versions() -> Dict[str, str]:
    """``{name: version}`` of every package of VERSIONED, ``absent`` where not installed."""
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "absent"
    return {name: version(name) for name in VERSIONED}


@functools.lru_cache(maxsize=1)
def versions_line() -> str:
    return " ".join(f"{name}=={v}" for name, v in package_versions().items())


def git_state(root: str = ROOT) -> Dict[str, Optional[object]]:
    """The commit checked out and whether tracked files differ from it (None for both outside a git tree)."""
    def git(*args):
        result = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "clean": None if changes is None else changes == ""}


def device_description(device: Optional[torch.device] = None) -> str:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}"


def provenance(world_size: int = 1, batch_per_process: Optional[int] = None,
               device: Optional[torch.device] = None) -> Dict[str, object]:
    """The record written beside every number."""
    return {
        **git_state(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "device": device_description(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu_description(),
        "blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "onednn": torch.backends.mkldnn.version() if hasattr(torch.backends.mkldnn, "version") else None,
        "numerics": numerics.current(),
        "threads": torch.get_num_threads(),
        "world_size": world_size,
        "batch_per_process": batch_per_process,
        "kernel_variables": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
    }


def provenance_lines(record: Dict[str, object]) -> str:
    """The record as a few Markdown lines (for reports)."""
    packages = ", ".join(f"{k} {v}" for k, v in record["packages"].items() if v != "absent")
    commit = record.get("commit") or "unknown"
    clean = {True: "clean tree", False: "tree with uncommitted changes", None: "not a git tree"}[record.get("clean")]
    variables = ", ".join(f"{k}={v}" for k, v in record["kernel_variables"].items()) or "none set"
    cpu = record.get("cpu") or {}
    mode = (record.get("numerics") or {}).get("mode", "fast")
    return (f"- code: commit `{commit}` ({clean})\n- packages: {packages}; Python {record['python']}\n"
            f"- machine: {record['device']} ({cpu.get('model')}, {cpu.get('vendor')}, flags "
            f"{' '.join(cpu.get('flags') or []) or 'unknown'}), numerics {mode}, "
            f"CPU capability {record['cpu_capability']}, {record['threads']} threads; "
            f"kernel variables: {variables}\n- processes: {record['world_size']} (batch per process: "
            f"{record['batch_per_process'] if record['batch_per_process'] is not None else 'n/a'})")
