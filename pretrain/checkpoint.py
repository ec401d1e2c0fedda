"""Checkpoints that survive kill -9: written to a temp file, fsynced, renamed; ``last_checkpoint`` names the
newest, as in Detectron2. A damaged newest checkpoint falls back to the previous one, with a warning."""
import glob
import logging
import os
import re
from typing import Any, Dict, Optional, Tuple

import torch

from pretrain.runtime.files import atomic_torch_save, atomic_write_text

logger = logging.getLogger(__name__)
POINTER = "last_checkpoint"


class CheckpointError(RuntimeError):
    pass


def checkpoint_name(iteration: int) -> str:
    return f"model_{iteration:07d}.pth"


def save_checkpoint(output_dir: str, iteration: int, state: Dict[str, Any], keep: int = 0) -> str:
    """Save ``state`` as ``model_{iteration}.pth`` and point ``last_checkpoint`` at it (both atomically).
    ``keep`` > 0 keeps only the newest ``keep`` checkpoints: those that would go anyway go BEFORE the write (the
    newest always stays until the new one is in place), so that ``keep`` 1 needs room for two checkpoints only."""
    name = checkpoint_name(iteration)
    path = os.path.join(output_dir, name)
    if keep > 0:
        prune(output_dir, max(1, keep - 1), but=path)
    atomic_torch_save(state, path)
    atomic_write_text(os.path.join(output_dir, POINTER), name)
    if keep > 0:
        prune(output_dir, keep)
    return path


def prune(output_dir: str, keep: int, but: str = "") -> None:
    """Delete all checkpoints but the newest ``keep`` (by iteration), never ``but``."""
    found = sorted((p for p in glob.glob(os.path.join(output_dir, "model_*.pth")) if p != but),
                   key=checkpoint_iteration)
    for old in found[:-keep]:
        os.unlink(old)


def load_file(path: str) -> Dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e.__class__.__name__}: {e})") from None


def checkpoint_iteration(path: str) -> int:
    """The iteration in a checkpoint's file name (``model_0000120.pth`` -> 120); -1 for other names."""
    match = re.search(r"model_(\d+)\.pth$", path)
    return int(match.group(1)) if match else -1


def load_latest(output_dir: str) -> Optional[Tuple[str, Dict[str, Any]]]:
    """The newest loadable checkpoint of ``output_dir`` as ``(path, state)``; None when there is none.

    Starts from ``last_checkpoint``; if that file is damaged or missing, falls back to older checkpoints with a
    warning (never silently). Raises when checkpoints exist but none can be read.
    """
    pointer = os.path.join(output_dir, POINTER)
    candidates = sorted(glob.glob(os.path.join(output_dir, "model_*.pth")), key=checkpoint_iteration, reverse=True)
    if os.path.exists(pointer):
        with open(pointer) as f:
            named = os.path.join(output_dir, f.read().strip())
        candidates = [named] + [c for c in candidates
                                if c != named and checkpoint_iteration(c) < checkpoint_iteration(named)]
    if not candidates:
        return None
    errors = []
    for path in candidates:
        if not os.path.exists(path):
            errors.append(f"{path}: missing")
            continue
        try:
            state = load_file(path)
            if not isinstance(state, dict) or "model" not in state or "iteration" not in state:
                raise CheckpointError(f"{path}: not a pretraining checkpoint (no model/iteration)")
        except CheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            logger.warning("damaged checkpoint(s) skipped, resuming from the older %s:\n  %s", path,
                           "\n  ".join(errors))
        return path, state
    raise CheckpointError(f"no readable checkpoint in {output_dir}:\n  " + "\n  ".join(errors))
