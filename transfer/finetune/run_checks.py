"""The checks of a fine-tuning before its processes start: a resume continues the run's own config, a finished run
counts only for its own weights, and several CPU processes need Detectron2's Gloo fallback."""
import importlib
import inspect
import json
import os
from typing import Optional

import torch
import yaml

from pretrain.config import flat_keys
from transfer.finetune.checkpointing import ResumeError


class LaunchError(RuntimeError):
    pass


# What a resumed fine-tuning may differ in: whether partial weights are allowed (a loading check, not the run), and
# the folder itself (a run moved to a bigger disk continues where it now is).
RESUME_IGNORED = ("TRANSFER.ALLOW_PARTIAL_WEIGHTS", "OUTPUT_DIR")


def saved_config(output_dir: str) -> Optional[dict]:
    """The config Detectron2 wrote to ``output_dir/config.yaml`` when the run started (None if none)."""
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return yaml.safe_load(f)


def check_resume(cfg, output_dir: str) -> None:
    """Refuse to continue the run in ``output_dir`` with a config other than the one it started with."""
    saved = saved_config(output_dir)
    if saved is None:
        return
    old, new = flat_keys(saved), flat_keys(yaml.safe_load(cfg.dump()))
    changes = [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k) and k not in RESUME_IGNORED]
    if changes:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes)
        raise ResumeError(f"--resume with a config that differs from {output_dir}/config.yaml: {listed}; continue "
                          "with the run's own config, or use another OUTPUT_DIR for another experiment")


def check_finished(results_path: str, weights: str) -> None:
    """A finished run counts for ``weights`` only if it was fine-tuned from them."""
    with open(results_path) as f:
        finished = json.load(f).get("weights")
    if finished != weights:
        raise ResumeError(f"{results_path}: this run was fine-tuned from MODEL.WEIGHTS {finished!r}, not "
                          f"{weights!r}; use another OUTPUT_DIR for other weights")


def check_launcher(world_size: int, device: str) -> None:
    """Several processes without CUDA need a Detectron2 launcher that falls back to Gloo (upstream after v0.6;
    tools/install_detectron2.py patches v0.6)."""
    if world_size <= 1 or (device != "cpu" and torch.cuda.is_available()):
        return
    launch_module = importlib.import_module("detectron2.engine.launch")  # the attribute is the function
    if "GLOO" not in inspect.getsource(launch_module):
        raise LaunchError("--num-gpus > 1 without CUDA needs Detectron2's Gloo fallback, which this Detectron2 "
                          "lacks: run python tools/install_detectron2.py --force, or use --num-gpus 1")
