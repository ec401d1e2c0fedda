"""What a pretraining run's folder holds: whether it has a checkpoint to resume (and whether it fits a changed
config), the files that make it another run's, and the one line a full disk gets."""
import glob
import os
import shutil

import torch

from pretrain.builder import ContrastiveModel
from pretrain.checkpoint import POINTER, load_latest
from pretrain.config import CN, ConfigError, config_changes


def has_checkpoint(output_dir: str) -> bool:
    return os.path.exists(os.path.join(output_dir, POINTER)) or bool(glob.glob(os.path.join(output_dir, "model_*.pth")))


def run_files(output_dir: str) -> list:
    """What a pretraining run that reached its first iteration leaves in its folder (a new run there would
    overwrite or mix with it). A start that failed before it (a wrong DATA.ROOT) leaves only its config and
    logs: they block nothing, and the corrected command starts there."""
    names = ["backbone.pth", "metrics.jsonl", POINTER]
    found = [n for n in names if os.path.isfile(os.path.join(output_dir, n))
             and os.path.getsize(os.path.join(output_dir, n)) > 0]
    return found + sorted(os.path.basename(p) for p in glob.glob(os.path.join(output_dir, "model_*.pth")))[:3]


def full_disk_message(output_dir: str, path: str) -> str:
    """One line: where, how much a checkpoint needs and how much is free, and the command that continues."""
    sizes = [os.path.getsize(p) for p in glob.glob(os.path.join(output_dir, "model_*.pth"))]
    free = shutil.disk_usage(output_dir).free / 2 ** 20
    if not sizes:  # the first checkpoint: nothing to keep, nothing to prune
        return (f"the disk of {output_dir} is full (writing {path}, the run's first checkpoint): {free:.0f} MiB are "
                f"free. No checkpoint was written yet; free space (or move {output_dir} to a bigger disk) and run "
                "the same command with --resume there")
    return (f"the disk of {output_dir} is full (writing {path}): a checkpoint needs about {max(sizes) / 2 ** 20:.0f} "
            f"MiB, {free:.0f} MiB are free. The previous checkpoint is intact; free space, or keep one checkpoint: "
            "the same command with --resume SOLVER.KEEP_LAST 1")


def check_checkpoint_fits(cfg, saved_path: str) -> None:
    """``--allow-config-change``: the run's latest checkpoint must load into the model of the new config. A
    changed key that changes a tensor's shape (``MODEL.QUEUE_SIZE``, ``MODEL.DIM``, ...) is refused in one line,
    naming the tensors and the changed keys, before anything in the folder is rewritten."""
    found = load_latest(cfg.OUTPUT_DIR)
    if found is None:
        return
    path, state = found
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        expected = {k: tuple(v.shape) for k, v in ContrastiveModel(cfg).state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state["model"].items()}
    differ = [k for k in sorted(set(expected) | set(saved)) if expected.get(k) != saved.get(k)]
    if not differ:
        return
    with open(saved_path) as f:
        changed = [k for k, _, _ in config_changes(CN.load_cfg(f), cfg)]
    listed = ", ".join(f"{k} {list(saved[k]) if k in saved else 'absent'} -> "
                       f"{list(expected[k]) if k in expected else 'absent'}" for k in differ[:3])
    more = ", ..." if len(differ) > 3 else ""
    raise ConfigError(f"--allow-config-change: {path} does not fit the new config ({listed}{more}); "
                      f"of the changed keys ({', '.join(changed) or 'none'}) one changes a tensor's shape, which a "
                      "resume cannot: start a new run in another OUTPUT_DIR")
