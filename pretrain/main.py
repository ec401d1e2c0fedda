"""``tools/pretrain_net.py``: set up (config, processes, data, model, resume), then run ``engine.train_loop``."""
import argparse
import errno
import json
import logging
import os
import secrets
import signal
import sys

import torch
import yaml

from pretrain.backbone import save_backbone
from pretrain.builder import ContrastiveModel, describe
from pretrain.checkpoint import CheckpointError, load_latest, save_checkpoint
from pretrain.config import ConfigError, check_resume_config, grid_note, load_config, overrides_after_flags
from pretrain.data.device_views import DecodedDataset, DeviceViews
from pretrain.data.images import DataError, TwoViewDataset
from pretrain.data.transforms import TwoViewTransform
from pretrain.engine import MetricsLog, Placement, Schedule, amp_dtype, autocast_context, batches, to_device, train_loop
from pretrain.run_folder import check_checkpoint_fits, full_disk_message, has_checkpoint, run_files
from pretrain.runtime import distributed as du
from pretrain.runtime import numerics
from pretrain.runtime.files import atomic_write_text, remove_stale_temporaries
from pretrain.runtime.lock import LockError, OutputLock
from pretrain.runtime.provenance import provenance

logger = logging.getLogger("pretrain")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="HoughCL / DenseCL / MoCo-v2 / PixPro-style pretraining")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="YAML config (may use _BASE_)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="--resume even if the config differs from the run's (beyond the schedule length)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    # `... KEY VALUE --resume` is as common as `--resume KEY VALUE`: flags are taken wherever they stand.
    return parser.parse_args(overrides_after_flags(list(sys.argv[1:] if argv is None else argv), parser))


def setup_logging(output_dir: str) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter(f"[%(asctime)s r{du.rank()}] %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if du.is_main_process():
        handlers.append(logging.FileHandler(os.path.join(output_dir, "log.txt")))
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if not du.is_main_process():
        root.setLevel(logging.WARNING)


class StopRequest:
    """SIGTERM / SIGUSR1 (SLURM preemption or time limit) and Ctrl-C: finish the iteration, checkpoint, exit.
    A second Ctrl-C stops at once."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        if signum == signal.SIGINT:
            if self.signal == signal.SIGINT:
                raise KeyboardInterrupt
            print("\nCtrl-C: stopping after this iteration with a checkpoint (Ctrl-C again to stop at once)",
                  file=sys.stderr, flush=True)
        self.signal = signum

    def requested(self) -> bool:
        flag = torch.tensor(float(self.signal is not None))
        return bool(du.all_reduce_mean(flag) > 0) if du.world_size() > 1 else self.signal is not None


def with_seed(cfg, saved_config):
    """SEED -1 (as in fine-tuning): a seed drawn by the first process and shared with the others, printed and
    recorded in config.yaml; on --resume, the run's own seed from its saved config, not a new draw."""
    if cfg.SEED >= 0:
        return cfg
    seed = 0
    if du.is_main_process():
        if saved_config is not None:
            with open(saved_config) as f:
                seed, why = int(yaml.safe_load(f)["SEED"]), f"the run's own, from {saved_config}"
        else:
            seed, why = secrets.randbelow(2 ** 31), "drawn: the config says SEED -1"
        print(f"seed {seed} ({why})", flush=True)
    if du.is_distributed():
        shared = torch.tensor([seed], dtype=torch.int64)
        torch.distributed.broadcast(shared, 0)
        seed = int(shared.item())
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SEED = seed
    cfg.freeze()
    return cfg


def rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(cfg, resume: bool, device: torch.device) -> int:
    world, rank = du.world_size(), du.rank()
    transform = TwoViewTransform(cfg.INPUT.SIZE, cfg.INPUT.CROP_SCALE, cfg.INPUT.MEAN, cfg.INPUT.STD)
    device_views = cfg.DATALOADER.VIEWS == "device"
    dataset = (DecodedDataset if device_views else TwoViewDataset)(cfg.DATA.ROOT, transform, seed=cfg.SEED)
    global_batch = cfg.SOLVER.BATCH_SIZE * world
    iters_per_epoch = len(dataset) // global_batch
    if iters_per_epoch == 0:
        raise DataError(f"DATA.ROOT {cfg.DATA.ROOT!r}: {len(dataset)} readable images, fewer than one global "
                        f"batch of {global_batch}")
    max_iter = cfg.SOLVER.MAX_ITER if cfg.SOLVER.MAX_ITER > 0 else cfg.SOLVER.EPOCHS * iters_per_epoch
    lr = cfg.SOLVER.BASE_LR * global_batch / 256
    logger.info("%d images, %d iterations per epoch, %d iterations", len(dataset), iters_per_epoch, max_iter)
    logger.info("lr = BASE_LR %.4g x global batch %d / 256 = %.4g", cfg.SOLVER.BASE_LR, global_batch, lr)

    torch.manual_seed(cfg.SEED)  # identical initial weights and queues in every process
    model = ContrastiveModel(cfg).to(device)
    if cfg.MODEL.SYNC_BN and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = device.type == "cuda" and cfg.SOLVER.CHANNELS_LAST
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.SOLVER.COMPILE and device.type == "cuda":
        # In place (nn.Module.compile): the state_dict keys, checkpoints and backbone.pth stay as they are.
        model.encoder_q.compile()
        model.encoder_k.compile()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                                momentum=cfg.SOLVER.MOMENTUM, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    dtype = amp_dtype(cfg, device)
    autocast, scaler = autocast_context(dtype)
    logger.info("method: %s, ResNet-%d, device %s, mixed precision %s, world size %d", describe(cfg),
                cfg.MODEL.DEPTH, device, dtype or "off", world)

    start_iter = 0
    if resume:
        found = load_latest(cfg.OUTPUT_DIR)
        if found is None:
            logger.info("--resume: no checkpoint in %s, starting from scratch", cfg.OUTPUT_DIR)
        else:
            path, state = found
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            start_iter = int(state["iteration"])
            logger.info("resumed from %s at iteration %d", path, start_iter)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model

    def checkpoint(iteration):
        if du.is_main_process():
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None else {}, "iteration": iteration,
                     "rng": rng_state(), "cfg": cfg.dump()}
            path = save_checkpoint(cfg.OUTPUT_DIR, iteration, state, keep=cfg.SOLVER.KEEP_LAST)
            logger.info("checkpoint %s", path)
        du.barrier()

    log = MetricsLog(cfg.OUTPUT_DIR, start_iter) if du.is_main_process() else None
    stop = StopRequest()
    data = batches(cfg, dataset, start_iter, iters_per_epoch, world, rank)
    if device_views:  # the views are made on the device, batch by batch, before the step sees them
        data = map(DeviceViews.from_cfg(cfg), (to_device(b, device, False) for b in data))
    try:
        done = start_iter + train_loop(ddp, optimizer, data, Schedule.from_cfg(cfg, lr, max_iter), start_iter,
                                       Placement(device, autocast, scaler, channels_last), log, stop, checkpoint)
    finally:
        if log is not None:
            log.close()
    if done < max_iter:
        logger.info("stopped by signal %s at iteration %d; continue with the same command and --resume",
                    stop.signal, done)
        return 128 + stop.signal
    checkpoint(max_iter)
    if not du.weights_agree(model):
        raise FloatingPointError("the processes of this run ended with different parameters (their DDP updates "
                                 "diverged); the checkpoint is rank 0's")
    if du.world_size() > 1:
        logger.info("parameters identical on all %d processes", du.world_size())
    if du.is_main_process():
        path = save_backbone(model.encoder_q.backbone, os.path.join(cfg.OUTPUT_DIR, "backbone.pth"))
        logger.info("backbone: %s", path)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        numerics.apply(cfg.NUMERICS)
    except numerics.NumericsError as e:
        print(f"error: NUMERICS: {e}", file=sys.stderr)
        return 2
    device = du.init_distributed_mode(cfg.DEVICE)
    lock = OutputLock(cfg.OUTPUT_DIR)
    try:
        saved, resuming = os.path.join(cfg.OUTPUT_DIR, "config.yaml"), False
        if du.is_main_process():
            try:
                lock.acquire()
            except OSError as e:  # read-only, a file in the way, no permission
                raise ConfigError(f"OUTPUT_DIR {cfg.OUTPUT_DIR}: cannot write there ({e.strerror or e}); give a "
                                  "folder this user can write") from None
            resuming = args.resume and has_checkpoint(cfg.OUTPUT_DIR) and os.path.exists(saved)
        cfg = with_seed(cfg, saved if resuming else None)  # every process: the drawn seed is shared
        if du.is_main_process():
            if resuming and not args.allow_config_change:
                check_resume_config(saved, cfg)
            elif resuming:
                check_checkpoint_fits(cfg, saved)  # before config.yaml is rewritten
            held = run_files(cfg.OUTPUT_DIR)
            if held and not args.resume:
                raise ConfigError(f"OUTPUT_DIR {cfg.OUTPUT_DIR} holds another run ({', '.join(held)}): continue it "
                                  "with --resume, or give this run a new OUTPUT_DIR")
            stale = remove_stale_temporaries(cfg.OUTPUT_DIR)  # writes killed before their rename
            if stale:
                print(f"removed {len(stale)} unfinished temporary files of an earlier run: {', '.join(stale)}")
    except (LockError, ConfigError) as e:
        lock.release()
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    try:
        setup_logging(cfg.OUTPUT_DIR)
        if du.is_main_process():
            atomic_write_text(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())
            # Where this run's weights come from; a resumed run keeps each part's record (provenance.jsonl).
            record = json.dumps({"resumed": bool(args.resume), "method": describe(cfg),
                                 **provenance(du.world_size(), cfg.SOLVER.BATCH_SIZE, device)}) + "\n"
            with open(os.path.join(cfg.OUTPUT_DIR, "provenance.jsonl"), "a") as f:
                f.write(record)
        logger.info("config %s, output %s", args.config_file, cfg.OUTPUT_DIR)
        if grid_note(cfg):
            logger.warning(grid_note(cfg))
        return train(cfg, args.resume, device)
    except (DataError, CheckpointError, FloatingPointError) as e:
        where = f" ({cfg.OUTPUT_DIR})" if isinstance(e, FloatingPointError) else ""
        logger.error("error: %s%s", e, where)
        return 1
    except RuntimeError as e:
        if not (du.is_distributed() and du.peer_failure(e)):
            raise
        # Another process is gone: say so in one line and leave (waiting would hang in the next collective).
        print(f"[rank {du.rank()}] error: another process of this job stopped ({str(e).splitlines()[0][:200]}); "
              f"the last checkpoint in {cfg.OUTPUT_DIR} stands: start the job again with --resume", file=sys.stderr,
              flush=True)
        lock.release()
        os._exit(1)  # not sys.exit: tearing down the process group would wait for the peer that is gone
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        logger.error("error: %s", full_disk_message(cfg.OUTPUT_DIR, e.filename))
        return 1
    finally:
        lock.release()
        if du.is_distributed():
            torch.distributed.destroy_process_group()
