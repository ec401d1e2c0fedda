"""What a pretraining run's folder holds: whether it has a checkpoint to resume, the files that make it another
run's, and the one line a full disk gets."""
import glob
import os
import shutil

from pretrain.checkpoint import POINTER


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
