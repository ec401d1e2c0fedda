"""Fine-tuning checkpoints that survive kills and Ctrl-C, as pretraining's do: Detectron2's checkpointer publishing
by rename, a ``last_checkpoint`` that never leads to an unreadable file, and a hook that stops at Ctrl-C (or
SIGTERM) after the current iteration with a checkpoint, so that ``--resume`` continues."""
import logging
import os
import re
import signal
import zipfile

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import HookBase
from detectron2.utils import comm

from pretrain.runtime.files import atomic_torch_save, atomic_write_text

logger = logging.getLogger("transfer")


class ResumeError(ValueError):
    """A resume that would mix two experiments in one folder, or has nothing complete to continue from; the
    message names the keys or the files."""


class TrainingStopped(BaseException):
    """Raised after the stop checkpoint; a BaseException so that Detectron2's loop does not log it as a crash."""

    def __init__(self, iteration: int, signum: int, path: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} after iteration {iteration}")
        self.iteration, self.signum, self.path = iteration, signum, path


class CheckpointWriteError(BaseException):
    """A checkpoint could not be written (a full disk, a folder gone read-only); a BaseException so that
    Detectron2's loop does not log it as a crash. The message says what stands and how to continue."""


def os_reason(error: BaseException):
    """The operating system's reason behind ``error`` (torch.save reports a full disk as a RuntimeError of its
    zip writer, with the OSError as its context), or None when it is not an OS error."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return os.strerror(error.errno)  # the reason alone: the writer's own words would overflow the line
        error = error.__cause__ or error.__context__
    return None


class PeerLost(BaseException):
    """Another process of the job is gone (a collective failed); a BaseException so that Detectron2's loop does
    not log it as a crash of this process."""


def readable_checkpoint(path: str) -> bool:
    """A complete torch zip file (a kill during a non-atomic write leaves an empty or cut-off one)."""
    return os.path.isfile(path) and os.path.getsize(path) > 0 and zipfile.is_zipfile(path)


def checkpoint_order(path: str) -> int:
    """``model_0000009.pth`` -> 9; ``model_final.pth`` after all numbered ones."""
    found = re.search(r"_(\d+)\.pth$", path)
    return int(found.group(1)) if found else 1 << 62


class AtomicCheckpointer(DetectionCheckpointer):
    """``save`` and ``tag_last_checkpoint`` publish by rename; ``get_checkpoint_file`` falls back, with a warning,
    to the newest complete checkpoint when ``last_checkpoint`` is empty or names a damaged file."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **{k: o.state_dict() for k, o in self.checkpointables.items()}}
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        try:
            atomic_torch_save(data, path)
            self.tag_last_checkpoint(basename)
        except (OSError, RuntimeError) as e:
            reason = os_reason(e)
            if reason is None:
                raise
            pointer = os.path.join(self.save_dir, "last_checkpoint")
            last = open(pointer).read().strip() if os.path.isfile(pointer) else ""
            stands = f"the last complete checkpoint, {last}, stands" if last else "no checkpoint was written yet"
            raise CheckpointWriteError(
                f"cannot write the checkpoint {path} ({reason}); {stands}: free space (or move {self.save_dir} to "
                "a bigger disk) and continue with the same command, --resume and OUTPUT_DIR where the folder is "
                "now") from None

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def get_checkpoint_file(self) -> str:
        named = super().get_checkpoint_file()
        if readable_checkpoint(named):
            return named
        for path in sorted(self.get_all_checkpoint_files(), key=checkpoint_order, reverse=True):
            if readable_checkpoint(path):
                logger.warning("last_checkpoint of %s names %r, which is empty or damaged: resuming from %s",
                               self.save_dir, os.path.basename(named) or "(nothing)", path)
                return path
        raise ResumeError(f"{self.save_dir}: no complete checkpoint to resume from (last_checkpoint names "
                          f"{os.path.basename(named) or 'nothing'}); start again without --resume in a new "
                          "OUTPUT_DIR")


class StopOnSignal(HookBase):
    """Ctrl-C or SIGTERM: finish the iteration, save ``model_{iteration}`` and stop (TrainingStopped). A second
    Ctrl-C stops at once; the write it interrupts is never published (temp file, then rename)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        # Installed when the trainer is built, not at before_train: a Ctrl-C while the data loader starts counts.
        self.signum = None
        try:
            self.previous = {s: signal.signal(s, self.handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave the signals to whoever owns them
            self.previous = {}

    def handle(self, signum, frame):
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            print("\nCtrl-C: stopping after this iteration with a checkpoint (Ctrl-C again to stop at once)",
                  flush=True)
        self.signum = signum

    def after_step(self):
        stop = torch.tensor([float(self.signum or 0)])
        if comm.get_world_size() > 1:  # all processes stop together, or one waits alone in a collective
            torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
        if stop.item():
            iteration = self.trainer.iter
            name = f"model_{iteration:07d}"
            self.trainer.checkpointer.save(name, iteration=iteration)
            raise TrainingStopped(iteration + 1, int(stop.item()), os.path.join(self.trainer.cfg.OUTPUT_DIR,
                                                                                name + ".pth"))

    def after_train(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
