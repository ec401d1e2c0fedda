"""Checkpoints that survive kill -9: written to a temp file, fsynced, renamed; ``last_checkpoint`` names the
newest, as in Detectron2. A damaged newest checkpoint falls back to the previous one, with a warning."""
import glob
import hashlib
import logging
import os
import re
import tempfile
from typing import Any, Dict, Optional, Tuple

import torch

logger = logging.getLogger(__name__)
POINTER = "last_checkpoint"
_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(RuntimeError):
    pass


def atomic_write(path: str, write) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # name the file the error is about
            raise OSError(e.errno, e.strerror, path) from e
        raise


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_torch_save(obj: Any, path: str) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def checkpoint_name(iteration: int) -> str:
    return f"model_{iteration:07d}.pth"


def save_checkpoint(output_dir: str, iteration: int, state: Dict[str, Any], keep: int = 0) -> str:
    """Save ``state`` as ``model_{iteration}.pth`` and point ``last_checkpoint`` at it (both atomically).
    ``keep`` > 0 deletes all but the newest ``keep`` checkpoints."""
    name = checkpoint_name(iteration)
    path = os.path.join(output_dir, name)
    atomic_torch_save(state, path)
    atomic_write(os.path.join(output_dir, POINTER), lambda f: f.write(name.encode()))
    if keep > 0:
        for old in sorted(glob.glob(os.path.join(output_dir, "model_*.pth")))[:-keep]:
            os.unlink(old)
    return path


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
