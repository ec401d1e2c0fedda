#!/usr/bin/env python
"""Convert a pretrained ResNet (this toolkit's or another project's) to Detectron2 or torchvision format.

    tools/convert.py output/pretrain/x/backbone.pth houghcl_r50.pkl --verify
    tools/convert.py moco_v2_800ep.pth.tar moco.pkl                      # layout detected
    tools/convert.py ckpt.pth r50.pth --to torchvision --encoder momentum

Strict: every backbone tensor is converted exactly once and checked against the full key and shape table of
the inferred depth; heads, queues, ``fc``, ``num_batches_tracked`` and the other encoder are dropped on
purpose and reported. On any problem: a message naming the file and the keys, exit status 1, no output file.
"""
import argparse
import json
import os
import pickle
import re
import sys
from collections import OrderedDict

import torch
import torchvision

import _bootstrap  # noqa: F401  isort:skip
from pretrain.checkpoint import atomic_write, sha256_of  # noqa: E402

# Where each project keeps the backbone in its checkpoints: (layout, query-encoder prefix, momentum prefix).
# Most specific first; the first whose prefix holds a ResNet stem and first block wins.
LAYOUTS = [
    ("houghcl", "encoder_q.backbone.", "encoder_k.backbone."),
    ("moco", "module.encoder_q.", "module.encoder_k."),
    ("moco", "encoder_q.", "encoder_k."),
    ("mocov3", "module.base_encoder.", "module.momentum_encoder."),
    ("mocov3", "base_encoder.", "momentum_encoder."),
    ("pixpro", "module.encoder.", "module.encoder_k."),
    ("solo-learn", "backbone.", "momentum_backbone."),  # also DenseCL/OpenSelfSup and mmselfsup
    ("torchvision", "", None),
]
BLOCKS = {(2, 2, 2, 2, "basic"): 18, (3, 4, 6, 3, "basic"): 34, (3, 4, 6, 3, "bottleneck"): 50,
          (3, 4, 23, 3, "bottleneck"): 101, (3, 8, 36, 3, "bottleneck"): 152}
# Settings a Detectron2 model needs for weights trained on torchvision-normalised RGB input.
INPUT_SETTINGS = {
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530],
    "MODEL.PIXEL_STD": [58.395, 57.120, 57.375],
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
}


class ConversionError(Exception):
    pass


def load_checkpoint(path, unsafe=False):
    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ConversionError(f"{path}: is a directory, not a checkpoint")
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive (PK..) or, in the legacy format, a pickle (protocol byte 0x80).
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint (starts with {magic!r})")
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as e:
        if not unsafe and "Weights only load failed" in str(e):
            raise ConversionError(f"{path}: holds Python objects beyond tensors; if you trust the file, rerun "
                                  "with --unsafe-load") from None
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        detail = str(e).splitlines()[0] if str(e) else ""
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint; truncated or damaged "
                              f"({e.__class__.__name__}: {detail})") from None


def state_dict_of(obj, path):
    """The tensor mapping inside a checkpoint: ``state_dict`` (MoCo, DenseCL), ``model`` (PixPro, ours), or
    the object itself."""
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConversionError(f"{path}: no tensors found (top-level keys: {sorted(obj)[:10]})")
    return tensors


def detect_layout(state, encoder, path, forced_prefix=None):
    if forced_prefix is not None:
        return "given", forced_prefix
    for name, query, momentum in LAYOUTS:
        prefix = query if encoder == "query" else momentum
        if prefix is None:
            continue
        if f"{prefix}conv1.weight" in state and any(k.startswith(f"{prefix}layer1.0.") for k in state):
            return name, prefix
    sample = ", ".join(sorted(state)[:8])
    raise ConversionError(f"{path}: unknown layout: no ResNet with a {encoder} encoder found (expected e.g. "
                          f"'conv1.weight' under one of the prefixes {[p for _, p, _ in LAYOUTS if p]}); "
                          f"first keys: {sample}. Use --prefix to name it.")


def backbone_tensors(state, prefix):
    """ResNet tensors under ``prefix`` (prefix removed), and the keys dropped on purpose."""
    kept, dropped = OrderedDict(), []
    for key, value in state.items():
        if not key.startswith(prefix):
            dropped.append(key)
            continue
        name = key[len(prefix):]
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            dropped.append(key)
        else:
            kept[name] = value
    return kept, dropped


def infer_depth(tensors, path):
    counts = []
    for stage in range(1, 5):
        blocks = {int(m.group(1)) for k in tensors for m in [re.match(rf"layer{stage}\.(\d+)\.", k)] if m}
        counts.append(max(blocks) + 1 if blocks else 0)
    kind = "bottleneck" if any(".conv3." in k for k in tensors) else "basic"
    depth = BLOCKS.get((*counts, kind))
    if depth is None:
        raise ConversionError(f"{path}: not a ResNet-18/34/50/101/152: {kind} blocks per stage {counts}")
    return depth


def expected_shapes(depth):
    with torch.device("meta"):
        model = torchvision.models.__dict__[f"resnet{depth}"]()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}


def check_against_table(tensors, depth, path):
    table = expected_shapes(depth)
    missing = sorted(set(table) - set(tensors))
    extra = sorted(set(tensors) - set(table))
    wrong = sorted(k for k in set(table) & set(tensors) if tuple(tensors[k].shape) != table[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} ResNet-{depth} keys missing: {missing[:20]}")
    if extra:
        problems.append(f"{len(extra)} unexpected backbone keys: {extra[:20]}")
    if wrong:
        shapes = [f"{k} {tuple(tensors[k].shape)} != {table[k]}" for k in wrong[:20]]
        problems.append("wrong shapes: " + ", ".join(shapes))
    if problems:
        raise ConversionError(f"{path}: " + "; ".join(problems))


def torchvision_to_detectron2(name):
    """One torchvision ResNet name -> its Detectron2 name (stem / resN / convK.norm / shortcut)."""
    if name.startswith("conv1."):
        return "stem." + name
    if name.startswith("bn1."):
        return "stem.conv1.norm." + name[len("bn1."):]
    m = re.match(r"layer(\d)\.(\d+)\.(.+)$", name)
    if not m:
        raise ConversionError(f"cannot rename {name!r}: not a ResNet key")
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
    rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
    return f"res{stage}.{block}.{rest}"


def rename_all(tensors):
    renamed = OrderedDict()
    for name, value in tensors.items():
        new = torchvision_to_detectron2(name)
        if new in renamed:
            raise ConversionError(f"two tensors map to {new!r}")
        renamed[new] = value
    return renamed


def convert(args):
    obj = load_checkpoint(args.input, args.unsafe_load)
    state = state_dict_of(obj, args.input)
    layout, prefix = detect_layout(state, args.encoder, args.input, args.prefix)
    tensors, dropped = backbone_tensors(state, prefix)
    if "conv1.weight" not in tensors:
        raise ConversionError(f"{args.input}: not a ResNet: no 'conv1.weight' under prefix {prefix!r}")
    depth = infer_depth(tensors, args.input)
    check_against_table(tensors, depth, args.input)
    tensors = OrderedDict((k, v.detach().float().cpu()) for k, v in tensors.items())
    print(f"{args.input}: layout {layout} (prefix {prefix!r}), {args.encoder} encoder, ResNet-{depth}, "
          f"{len(tensors)} backbone tensors kept, {len(dropped)} other tensors dropped")
    sidecar = {"source": os.path.abspath(args.input), "source_sha256": sha256_of(args.input), "layout": layout,
               "prefix": prefix, "encoder": args.encoder, "depth": depth, "format": args.to,
               "num_tensors": len(tensors), "input_settings": INPUT_SETTINGS}
    if args.to == "torchvision":
        payload = dict(tensors)
    else:
        model = {k: v.numpy() for k, v in rename_all(tensors).items()}
        payload = {"model": model, "__author__": "houghcl-toolkit", "matching_heuristics": True}

    def write(f):
        if args.to == "torchvision":
            torch.save(payload, f)
        else:
            pickle.dump(payload, f)

    sidecar_bytes = (json.dumps(sidecar, indent=2) + "\n").encode()
    atomic_write(args.output, write)
    try:
        atomic_write(args.output + ".json", lambda f: f.write(sidecar_bytes))
    except BaseException:
        os.unlink(args.output)  # weights without their sidecar would skip train_net's input check
        raise
    print(f"wrote {args.output} and {args.output}.json")
    return tensors, depth


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="checkpoint: ours (full or backbone.pth), torchvision, MoCo, DenseCL, ...")
    parser.add_argument("output", help="the .pkl (Detectron2) or .pth (torchvision) to write")
    parser.add_argument("--to", choices=("detectron2", "torchvision"), default="detectron2")
    parser.add_argument("--encoder", choices=("query", "momentum"), default="query")
    parser.add_argument("--prefix", help="the key prefix of the backbone, when the layout is not detected")
    parser.add_argument("--verify", action="store_true",
                        help="check the written file against the source in Detectron2 (needs detectron2)")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow arbitrary pickled objects in INPUT (only for files you trust)")
    args = parser.parse_args(argv)
    if args.verify and args.to != "detectron2":
        parser.error("--verify checks Detectron2 output; drop it with --to torchvision")
    try:
        tensors, depth = convert(args)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.verify:
        try:
            from transfer.verify import verify
        except ImportError as e:
            print(f"error: --verify needs Detectron2 and this project's transfer package ({e})", file=sys.stderr)
            return 1
        try:
            verify(args.output, tensors, depth)
        except Exception as e:
            # A file that fails verification is not a usable conversion: remove it rather than leave it.
            for path in (args.output, args.output + ".json"):
                if os.path.exists(path):
                    os.unlink(path)
            print(f"error: verification failed, {args.output} removed: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
