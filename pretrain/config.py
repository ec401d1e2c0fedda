"""Pretraining configuration: fvcore CfgNode defaults, YAML files with ``_BASE_``, command-line overrides."""
import dataclasses
import os
import re
from typing import List, Tuple

import yaml
from fvcore.common.config import CfgNode as CN

from pretrain.backbone import IMAGENET_MEAN, IMAGENET_STD
from pretrain.matchers import MATCHERS, get_matcher, list_matchers, options_from_cfg
from pretrain.runtime.numerics import MODES

_C = CN()
_C.SEED = 0
_C.OUTPUT_DIR = "output/pretrain"

_C.DATA = CN()
# A folder tree of images (searched recursively), a COCO-style image folder, or a text file listing paths.
_C.DATA.ROOT = ""

_C.INPUT = CN()
_C.INPUT.SIZE = 224
_C.INPUT.CROP_SCALE = (0.2, 1.0)
_C.INPUT.MEAN = IMAGENET_MEAN
_C.INPUT.STD = IMAGENET_STD

_C.MODEL = CN()
_C.MODEL.DEPTH = 50
_C.MODEL.DIM = 128
_C.MODEL.HIDDEN_DIM = 0  # 0: the backbone's output width (2048 for ResNet-50, as MoCo-v2 and DenseCL)
_C.MODEL.QUEUE_SIZE = 65536
_C.MODEL.MOMENTUM = 0.999
_C.MODEL.TEMPERATURE = 0.2
_C.MODEL.LOSS_LAMBDA = 0.5  # 0: MoCo-v2 (no dense branch at all)
# The dense loss's negatives. "queue": DenseCL's (and HoughCL's) pooled dense keys of other images. A labelled
# DIAGNOSTIC option, not the paper's loss: "queue+view" adds the other key cells of the same view, "view" uses them
# alone (PixPro's PixContrast takes its negatives from the image pair), so that a wrong positive from the same image
# costs something (docs/results.md section 4).
_C.MODEL.DENSE_NEGATIVES = "queue"
_C.MODEL.LAMBDA_WARMUP_ITERS = 0  # lambda is 0 for the first iterations, then LOSS_LAMBDA
# The matcher that picks each query cell's positive (pretrain/matchers/__init__.py): argmax (DenseCL) | hough (HoughCL:
# per-pair Hough confidence; its defaults are the reference, RHM at C5) | hough_transform (estimated-geometry
# positives, an extension of this toolkit) | threshold (PixPro-style) | geometric (the oracle). Each one's options:
# MODEL.<NAME> below.
_C.MODEL.MATCHER = "hough"
_C.MODEL.SYNC_BN = False  # SyncBatchNorm in both encoders under DDP (otherwise shuffle-BN for the keys)
# Matching accuracy at logged steps of every appearance-based matcher on the same features (acc_<name>), and of
# the run's own positives (acc_positives).
_C.MODEL.DIAGNOSTICS = True


def options_node(defaults) -> CN:
    """A config node whose keys are the upper-cased fields of a matcher's options dataclass, with its defaults."""
    return CN({f.name.upper(): getattr(defaults, f.name) for f in dataclasses.fields(defaults)})


for _name in list_matchers():
    _defaults = get_matcher(_name).default_options()
    if _defaults is not None:
        _C.MODEL[get_matcher(_name).config_key] = options_node(_defaults)

_C.SOLVER = CN()
_C.SOLVER.BATCH_SIZE = 32  # per process
_C.SOLVER.BASE_LR = 0.03  # for a global batch of 256; scaled linearly
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.EPOCHS = 200
_C.SOLVER.MAX_ITER = 0  # > 0 overrides EPOCHS
_C.SOLVER.WARMUP_ITERS = 0
_C.SOLVER.CHECKPOINT_PERIOD = 5000
_C.SOLVER.LOG_PERIOD = 20
_C.SOLVER.KEEP_LAST = 0  # > 0: keep only the newest N checkpoints (the final one is the newest); 0 keeps all
# Mixed precision of the encoders on GPU: off (fp32, as the official MoCo-v2 and DenseCL) | bf16 | fp16 (with a
# GradScaler). Matching, positives and contrastive logits are fp32 whatever is chosen. Ignored on CPU.
_C.SOLVER.AMP = "off"
_C.SOLVER.CHANNELS_LAST = True  # on GPU
# torch.compile the two encoders' backbones (GPU). Off by default: measure with tools/benchmark.py step --compile
# (it reports the compile time too); it pays only on runs long enough to amortise it.
_C.SOLVER.COMPILE = False

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 8
_C.DATALOADER.PERSISTENT_WORKERS = True  # keep the workers across epochs (no fork per epoch)
_C.DATALOADER.PIN_MEMORY = True  # on GPU: page-locked batches, copied to the device without blocking
_C.DATALOADER.PREFETCH_FACTOR = 4  # batches loaded ahead per worker
# Where the two views are made: "cpu", Pillow in the data workers; "device", the workers only decode and draw the
# parameters, and crop-resize, jitter, grayscale, blur, flip and normalisation run batched on the training
# device (pretrain/data/device_views.py). The same (seed, epoch, index) gives the same crop boxes and flips in both.
_C.DATALOADER.VIEWS = "cpu"

_C.DEVICE = "auto"  # auto | cpu | cuda
# fast: the machine's fastest kernels (real training) | portable: the same bits on any x86-64 CPU with AVX2, about
# 3x slower on CPU (pretrain/runtime/numerics.py says what it pins and why)
_C.NUMERICS = "fast"


def get_cfg() -> CN:
    """A fresh copy of the defaults."""
    return _C.clone()


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and the key."""


def merge_config(cfg: CN, config_file: str = "", opts=(), error=None) -> CN:
    """``cfg`` <- file (with its ``_BASE_`` chain) <- ``KEY VALUE`` overrides; every problem is one ``error``
    (ConfigError by default) naming the file or the key: a missing file or ``_BASE_`` (and which file names
    it), invalid YAML, an unknown key, a value of the wrong type."""
    error = error or ConfigError
    if config_file:
        missing = missing_base(config_file)
        if missing:
            raise error(missing)
        try:
            cfg.merge_from_file(config_file)
        except yaml.YAMLError as e:
            raise error(f"{config_file}: not valid YAML ({' '.join(str(e).split())})") from None
        except (KeyError, ValueError, TypeError, AssertionError) as e:
            raise error(f"{config_file}: {e}") from None
        except OSError as e:
            raise error(f"{e.filename or config_file}: cannot read config file ({e.strerror or e})") from None
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise error(f"command-line override: {e}") from None
    return cfg


def missing_base(config_file: str) -> str:
    """'' if ``config_file`` and every ``_BASE_`` it names (relative to the file naming it) exist; else which
    file is missing and which file names it."""
    path, named_by = config_file, None
    while path:
        if not os.path.isfile(path):
            return (f"{path}: no such config file" if named_by is None else
                    f"{named_by}: its _BASE_ {path} does not exist")
        try:
            with open(path) as f:
                base = (yaml.safe_load(f) or {}).get("_BASE_")
        except (yaml.YAMLError, AttributeError, OSError):
            return ""  # merge_from_file names the problem
        if not base:
            return ""
        base = os.path.expanduser(base)
        path, named_by = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base), path
    return ""


def load_config(config_file: str = "", opts=()) -> CN:
    """Defaults <- file (with ``_BASE_``) <- ``KEY VALUE`` overrides, then validated and frozen."""
    cfg = merge_config(get_cfg(), config_file, opts)
    validate(cfg)
    cfg.freeze()
    return cfg


CHOICES = {
    "MODEL.MATCHER": tuple(MATCHERS),
    "MODEL.DENSE_NEGATIVES": ("queue", "queue+view", "view"),
    **{f"MODEL.{m.config_key}.{field.upper()}": allowed for m in MATCHERS.values() if m.options
       for field, allowed in getattr(m.options, "CHOICES", {}).items()},
    "MODEL.DEPTH": (18, 34, 50, 101),
    "SOLVER.AMP": ("off", "bf16", "fp16"),
    "DATALOADER.VIEWS": ("cpu", "device"),
    "DEVICE": ("auto", "cpu", "cuda"),
    "NUMERICS": MODES,
}


def validate(cfg: CN) -> None:
    for key, allowed in CHOICES.items():
        value = cfg
        for part in key.split("."):
            value = value[part]
        if value not in allowed:
            raise ConfigError(f"{key} = {value!r} is not one of {allowed}")
    if not 0.0 <= cfg.MODEL.LOSS_LAMBDA <= 1.0:
        raise ConfigError(f"MODEL.LOSS_LAMBDA = {cfg.MODEL.LOSS_LAMBDA} must lie in [0, 1]")
    for key in ("SOLVER.BATCH_SIZE", "MODEL.QUEUE_SIZE", "INPUT.SIZE", "SOLVER.CHECKPOINT_PERIOD", "SOLVER.LOG_PERIOD"):
        section, name = key.split(".")
        if cfg[section][name] <= 0:
            raise ConfigError(f"{key} = {cfg[section][name]} must be positive")
    if cfg.SEED < -1:
        raise ConfigError(f"SEED = {cfg.SEED}: a seed is 0 or more, or -1 to draw one (printed and recorded)")
    if not cfg.SOLVER.BASE_LR > 0:
        raise ConfigError(f"SOLVER.BASE_LR = {cfg.SOLVER.BASE_LR} must be positive (it is scaled by batch / 256)")
    if cfg.SOLVER.WEIGHT_DECAY < 0 or not 0 <= cfg.SOLVER.MOMENTUM < 1:
        raise ConfigError(f"SOLVER.WEIGHT_DECAY = {cfg.SOLVER.WEIGHT_DECAY} must be >= 0 and SOLVER.MOMENTUM = "
                          f"{cfg.SOLVER.MOMENTUM} in [0, 1)")
    if cfg.MODEL.LOSS_LAMBDA > 0 and c5_grid(cfg.INPUT.SIZE) < 2:
        raise ConfigError(f"INPUT.SIZE {cfg.INPUT.SIZE} gives a 1 x 1 C5 grid: the dense loss has one cell per view "
                          "and nothing to match; use at least 33 px (a 2 x 2 grid), 224 px as the recipes")
    for name in MATCHERS:  # every matcher's options: the diagnostics build them all
        try:
            options_from_cfg(cfg.MODEL, name)
        except (ValueError, TypeError) as e:
            raise ConfigError(str(e)) from None
    matcher = MATCHERS[cfg.MODEL.MATCHER]
    options = options_from_cfg(cfg.MODEL, matcher.name)
    problem = cfg.MODEL.LOSS_LAMBDA > 0 and matcher.input_problem(cfg.INPUT.SIZE, options)
    if problem:
        raise ConfigError(problem)
    if cfg.SOLVER.MAX_ITER <= 0 and cfg.SOLVER.EPOCHS <= 0:
        raise ConfigError("set SOLVER.EPOCHS or SOLVER.MAX_ITER to a positive number")


def c5_grid(size: int) -> int:
    """Cells per side of the C5 grid of a torchvision ResNet on views of ``size`` px (stride 32, rounded up)."""
    return -(-size // 32)


def grid_note(cfg) -> str:
    """What the C5 grid of these views means for dense matching, when it is coarse enough to mislead."""
    cells = c5_grid(cfg.INPUT.SIZE)
    if cfg.MODEL.LOSS_LAMBDA > 0 and cells < 4:
        return (f"INPUT.SIZE {cfg.INPUT.SIZE} gives a {cells} x {cells} C5 grid: every key cell is within one cell "
                f"of every other{' or nearly' if cells == 3 else ''}, so acc_* (within one cell) says little and "
                "the dense positives are coarse; fine for a smoke test, not for a measurement")
    return ""


# What a resumed run may change: how long it trains, and how it keeps checkpoints (which changes no number: a
# full disk is continued with SOLVER.KEEP_LAST 1). Anything else would silently mix two experiments.
SCHEDULE_KEYS = ("SOLVER.MAX_ITER", "SOLVER.EPOCHS", "SOLVER.KEEP_LAST", "SOLVER.CHECKPOINT_PERIOD")


def flat_keys(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def config_changes(saved: CN, cfg: CN) -> List[Tuple[str, object, object]]:
    """``(key, saved value, new value)`` for every key that differs, except SCHEDULE_KEYS and OUTPUT_DIR (a run
    moved to a bigger disk continues where it now is). A key added to the toolkit after the run started, absent
    from its saved config, is unchanged when it keeps its default (the computation the run ran)."""
    old, new, default = flat_keys(saved), flat_keys(cfg), flat_keys(_C)
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in SCHEDULE_KEYS + ("OUTPUT_DIR",)
            and not (k not in old and k in default and new.get(k) == default[k])]


def check_resume_config(saved_path: str, cfg: CN) -> None:
    """Refuse to continue a run with another config; the message names each changed key."""
    try:
        with open(saved_path) as f:
            saved = CN.load_cfg(f)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{saved_path}: cannot read the config of the run to resume ({e})") from None
    changes = config_changes(saved, cfg)
    if changes:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes)
        raise ConfigError(f"--resume with a config that differs from {saved_path}: {listed}. Only "
                          f"{', '.join(SCHEDULE_KEYS)} may change; use another OUTPUT_DIR for another experiment, "
                          f"or pass --allow-config-change")


CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


def overrides_after_flags(argv: List[str], parser) -> List[str]:
    """``argv`` with every ``KEY VALUE`` config override moved after the flags of ``parser``, so that flags may be
    given in any order (argparse takes everything after the first override as overrides). A flag's own values
    (``--voc NAME DIR SPLIT``) stay with it, even when one looks like a key (a folder named ``VOC2007``)."""
    arity = {}  # how many values each flag takes ("+": at least its ``min_values``, default 1)
    for action in parser._actions:
        for option in action.option_strings:
            arity[option] = action.nargs if isinstance(action.nargs, int) else getattr(action, "min_values", 1)
    flags, overrides, i = [], [], 0
    while i < len(argv):
        if argv[i] in arity:
            flags += argv[i:i + 1 + arity[argv[i]]]
            i += 1 + arity[argv[i]]
        elif CONFIG_KEY.match(argv[i]) and i + 1 < len(argv):
            overrides += argv[i:i + 2]
            i += 2
        else:
            flags.append(argv[i])
            i += 1
    return flags + overrides
