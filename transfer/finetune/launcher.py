"""What ``tools/train_net.py`` does before and around Detectron2's ``launch``: checks that need no process, the
OUTPUT_DIR lock, and one fine-tuning (its seed drawn once and kept on resume) or K seeds into OUTPUT_DIR/seed_k.
A resume must continue the same experiment: same config, same weights."""
import os
import secrets
import sys
import tempfile

from detectron2.engine import launch

from pretrain.runtime.files import remove_stale_temporaries
from pretrain.runtime.lock import OutputLock
from transfer.data.checks import check_datasets
from transfer.data.datasets import register_from_args
from transfer.finetune.checkpointing import CheckpointWriteError, PeerLost, TrainingStopped, os_reason
from transfer.finetune.config import setup_cfg
from transfer.finetune.run_checks import check_finished, check_launcher, check_resume, saved_config
from transfer.finetune.run_record import start_or_continue
from transfer.finetune.trainer import resolve_norms
from transfer.results import seed_runs


def run_process(main, args):
    """One process of a fine-tuning: ``main(args)``; a stop that is not a crash (Ctrl-C or SIGTERM with its
    checkpoint, another process gone) is one line and an exit status, in a spawned process as in this one."""
    try:
        return main(args)
    except TrainingStopped as e:
        print(f"{e}; checkpoint {e.path}: continue with the same command and --resume", file=sys.stderr,
              flush=True)
        raise SystemExit(128 + e.signum) from None
    except CheckpointWriteError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except PeerLost as e:
        print(f"error: another process of this job stopped ({e}); the last checkpoint in OUTPUT_DIR stands: start "
              "the job again with --resume", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)  # not sys.exit: tearing down the process group would wait for the peer that is gone


def launch_one(main, args):
    launch(run_process, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(main, args))


def run(main, args) -> int:
    """Check what can be checked before any process starts, hold OUTPUT_DIR, then fine-tune."""
    base = setup_cfg(args.config_file, args.opts)
    if base.SEED < -1:
        raise ValueError(f"SEED = {base.SEED}: a seed is 0 or more, or -1 to draw one (printed and recorded)")
    register_from_args(args.voc, args.coco, args.classes, args.sem_seg)
    check_datasets(base)
    check_launcher(args.num_gpus * args.num_machines, base.MODEL.DEVICE)
    check_writable(base.OUTPUT_DIR)
    if args.machine_rank > 0:  # the first machine's job holds the folder for all
        return run_seeds(main, args, base)
    with OutputLock(base.OUTPUT_DIR):
        return run_seeds(main, args, base)


def mode_of(args) -> str:
    return getattr(args, "numerics", "fast")


def check_writable(folder: str) -> None:
    """OUTPUT_DIR can be created and written (a read-only or misspelt place is one line, before any work)."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test"):
            pass
    except OSError as e:
        raise ValueError(f"OUTPUT_DIR {folder}: cannot write there ({os_reason(e) or e}); give a folder this "
                         "user can write") from None


def resumed_cfg(args, extra):
    """The config a process of this command builds (norms resolved for its world size), to hold against the
    config the run in its folder started with."""
    cfg = setup_cfg(args.config_file, list(args.opts) + extra, freeze=False)
    resolve_norms(cfg, args.num_gpus * args.num_machines)
    return cfg


def clean(output_dir: str) -> None:
    """Temp files of writes killed before their rename (the folder is held: none is live)."""
    stale = remove_stale_temporaries(output_dir)
    if stale:
        print(f"removed {len(stale)} unfinished temporary files of an earlier run in {output_dir}: "
              f"{', '.join(stale)}", flush=True)


def run_seeds(main, args, base) -> int:
    """One fine-tuning with the config's seed (drawn once and recorded if it is -1; on --resume, the run's own),
    or seeds 0..K-1. A resume must continue the same experiment: same config, same weights."""
    if not args.seeds:
        saved = saved_config(base.OUTPUT_DIR) if args.resume else None
        if saved is not None:
            seed, why = int(saved["SEED"]), f" (the run's own, from {base.OUTPUT_DIR}/config.yaml)"
        else:
            seed = base.SEED if base.SEED >= 0 else secrets.randbelow(2 ** 31)
            why = " (drawn: the config says SEED -1)" if base.SEED < 0 else ""
        if saved is not None:
            check_resume(resumed_cfg(args, ["SEED", str(seed)]), base.OUTPUT_DIR)
        print(f"seed {seed}{why}", flush=True)
        args.opts = list(args.opts) + ["SEED", str(seed)]
        clean(base.OUTPUT_DIR)
        start_or_continue(base.OUTPUT_DIR, mode_of(args), base.MODEL.WEIGHTS, args.resume and saved is not None)
        launch_one(main, args)
        return 0
    for k, out, overrides in seed_runs(base.OUTPUT_DIR, args.seeds):
        finished = os.path.join(out, "final_results.json")
        if args.resume and os.path.exists(finished):
            check_finished(finished, base.MODEL.WEIGHTS)
            start_or_continue(out, mode_of(args), base.MODEL.WEIGHTS, resume=True)  # its mode, its weights
            print(f"seed {k}: already finished ({finished}), skipped")
            continue
        one = type(args)(**vars(args))
        one.opts = list(args.opts) + overrides
        if args.resume:
            check_resume(resumed_cfg(one, []), out)
        print(f"seed {k} ({k + 1} of {args.seeds}) -> {out}", flush=True)
        clean(out)
        start_or_continue(out, mode_of(args), base.MODEL.WEIGHTS, args.resume and saved_config(out) is not None)
        launch_one(main, one)
    return 0
