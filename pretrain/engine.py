"""Training mechanics: schedules, the loader for an epoch, one optimisation step, the loop, the metrics log."""
import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from typing import Callable, Dict, Iterator, Optional

import torch
from torch.utils.data import DataLoader

from pretrain.data.images import EpochSampler
from pretrain.runtime import distributed as du
from pretrain.runtime.files import read_jsonl

logger = logging.getLogger("pretrain")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What the loop reads from the config: the learning rate and loss-weight schedules and the periods."""
    base_lr: float                  # already scaled to the global batch
    max_iter: int
    warmup_iters: int = 0
    loss_lambda: float = 0.5
    lambda_warmup_iters: int = 0
    log_period: int = 10
    checkpoint_period: int = 1000

    @classmethod
    def from_cfg(cls, cfg, base_lr: float, max_iter: int) -> "Schedule":
        return cls(base_lr, max_iter, cfg.SOLVER.WARMUP_ITERS, float(cfg.MODEL.LOSS_LAMBDA),
                   cfg.MODEL.LAMBDA_WARMUP_ITERS, cfg.SOLVER.LOG_PERIOD, cfg.SOLVER.CHECKPOINT_PERIOD)

    def learning_rate(self, iteration: int) -> float:
        """Linear warm-up (optional), then cosine decay to 0 at ``max_iter``."""
        if iteration < self.warmup_iters:
            return self.base_lr * (iteration + 1) / self.warmup_iters
        progress = (iteration - self.warmup_iters) / max(1, self.max_iter - self.warmup_iters)
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def lam(self, iteration: int) -> float:
        """The dense loss's weight: 0 during its warm-up (global loss only), then ``loss_lambda``."""
        return 0.0 if iteration < self.lambda_warmup_iters else self.loss_lambda


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where and in which precision a step runs: the device, the autocast context factory, the fp16 scaler."""
    device: torch.device
    autocast: Callable = contextlib.nullcontext
    scaler: Optional[object] = None
    channels_last: bool = False


def amp_dtype(cfg, device: torch.device):
    """The autocast dtype of SOLVER.AMP on GPU; None (full precision) when it is off and on CPU."""
    if device.type != "cuda" or cfg.SOLVER.AMP == "off":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.SOLVER.AMP]


def autocast_context(dtype):
    """A context factory for the forward pass, and a GradScaler where fp16 needs one."""
    if dtype is None:
        return contextlib.nullcontext, None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def epoch_loader(cfg, dataset, epoch: int, start_batch: int, world: int, rank: int) -> DataLoader:
    """Batches of ``epoch`` for this process, starting after ``start_batch`` batches already consumed. The
    loader's sampler can be moved on to the next epoch without restarting the workers (``batches``)."""
    sampler = EpochSampler(dataset, world, rank, seed=cfg.SEED, epoch=epoch,
                           start=start_batch * cfg.SOLVER.BATCH_SIZE)
    workers = cfg.DATALOADER.NUM_WORKERS
    # Pinned host memory makes the non-blocking copies in to_device asynchronous; persistent workers keep their
    # decoders and file handles from one epoch to the next instead of being forked again.
    return DataLoader(dataset, batch_size=cfg.SOLVER.BATCH_SIZE, sampler=sampler, num_workers=workers,
                      collate_fn=getattr(dataset, "collate", None),
                      pin_memory=torch.cuda.is_available() and cfg.DATALOADER.PIN_MEMORY, drop_last=True,
                      persistent_workers=workers > 0 and cfg.DATALOADER.PERSISTENT_WORKERS,
                      prefetch_factor=cfg.DATALOADER.PREFETCH_FACTOR if workers > 0 else None)


def batches(cfg, dataset, start_iter: int, iters_per_epoch: int, world: int, rank: int) -> Iterator[Dict]:
    """Endless batches from ``start_iter`` on, epoch after epoch, each epoch in its own seeded order, from one
    loader (the sampler runs in this process, so moving it to the next epoch reaches the persistent workers)."""
    epoch, done = divmod(start_iter, iters_per_epoch)
    loader = epoch_loader(cfg, dataset, epoch, done, world, rank)
    while True:
        yield from loader
        epoch += 1
        loader.sampler.set_epoch(epoch)
        loader.sampler.start = 0


def to_device(batch: Dict, device: torch.device, channels_last: bool) -> Dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def train_step(model, batch, optimizer, scaler, autocast, lam: float, diagnostics: bool = False) -> Dict:
    """Forward, backward, optimizer step. Returns the model's named losses and diagnostics (on device)."""
    with autocast():
        out = model(batch, lam, diagnostics)
    loss = out["total_loss"]
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return out


def train_loop(model, optimizer, data: Iterator[Dict], schedule: Schedule, start_iter: int, placement: Placement,
               log, stop, checkpoint: Callable[[int], None]) -> int:
    """Iterations ``start_iter`` .. ``schedule.max_iter`` - 1 over ``data``; returns the number of iterations done.

    ``log`` is the main process's MetricsLog (None elsewhere); ``checkpoint(iteration)`` is called every
    ``checkpoint_period`` iterations and when ``stop.requested()`` ends the loop early (a signal): every
    process checks together, so that none waits alone in a collective.
    """
    model.train()
    max_iter = schedule.max_iter
    started = tic = time.time()
    for iteration in range(start_iter, max_iter):
        batch = to_device(next(data), placement.device, placement.channels_last)
        data_time = time.time() - tic
        lr_now = schedule.learning_rate(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        lam = schedule.lam(iteration)
        done = iteration + 1
        log_now = done % schedule.log_period == 0 or done == max_iter or done == start_iter + 1
        out = train_step(model, batch, optimizer, placement.scaler, placement.autocast, lam, diagnostics=log_now)
        if du.all_reduce_mean(torch.isfinite(out["total_loss"].detach()).float()).item() < 1:
            raise FloatingPointError(f"non-finite total_loss at iteration {done} "
                                     f"({ {k: float(v) for k, v in out.items()} }); the last checkpoint is the "
                                     "last good state")
        if log_now:
            # Every process joins the reduction; only the main one writes.
            row = {"iteration": done, **{k: float(du.all_reduce_mean(v.detach())) for k, v in out.items()},
                   "lr": lr_now, "lambda": lam, "time": time.time() - tic, "data_time": data_time}
            if log is not None:
                log.write(row)
                eta = (time.time() - started) / (done - start_iter) * (max_iter - done)
                logger.info("iter %d/%d  total_loss %.4f  %s  lr %.4g  time %.3fs  data %.3fs  eta %s", done,
                            max_iter, row["total_loss"],
                            "  ".join(f"{k} {row[k]:.3f}" for k in out if k != "total_loss"), lr_now, row["time"],
                            data_time, time.strftime("%H:%M:%S", time.gmtime(eta)))
        if done % schedule.checkpoint_period == 0 and done < max_iter:
            checkpoint(done)
        if stop.requested():
            checkpoint(done)
            return done - start_iter
        tic = time.time()
    return max_iter - start_iter


class MetricsLog:
    """``metrics.jsonl`` (one JSON row per logged iteration) and TensorBoard events beside it.

    On resume, rows beyond the resumed iteration and a torn last line (a kill during a write) are dropped,
    so that the log never holds an iteration twice.
    """

    def __init__(self, output_dir: str, resume_iter: int = 0):
        self.path = os.path.join(output_dir, "metrics.jsonl")
        rows = [r for r in read_jsonl(self.path) if r.get("iteration", -1) <= resume_iter] if resume_iter else []
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        self.file = open(self.path, "a")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(output_dir, "tb"), purge_step=resume_iter or None)
        except ImportError:
            pass

    def write(self, row: Dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        if self.tb is not None:
            for key, value in row.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["iteration"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def plot_metrics(run_dirs: Dict[str, str], path: str) -> str:
    """Loss and matching accuracy (argmax's, and the run's own positives') over the iterations of several
    pretraining runs, one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, run_dir in run_dirs.items():
        rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
        its = [r["iteration"] for r in rows]
        axes[0].plot(its, [r["total_loss"] for r in rows], label=name)
        for key, style, label in (("acc_argmax", "--", "argmax"), ("acc_positives", "-", "own positives")):
            axes[1].plot(its, [r.get(key, float("nan")) for r in rows], style, label=f"{name}: {label}")
    axes[0].set(title="pretraining loss", xlabel="iteration")
    axes[1].set(title="matching accuracy within one cell (C5)", xlabel="iteration")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
