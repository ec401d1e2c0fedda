"""ResNet weights as they arrive from any project, and the one ResNet forward of the toolkit.

``read_checkpoint`` opens a file strictly (a PyTorch checkpoint or safetensors); ``extract_resnet`` finds the
backbone inside whatever layout the project used, checks every key and shape against the ResNet table of its
inferred architecture and says what it dropped; ``read_resnet`` reads one file's (or averages several files');
``build_resnet`` and ``resnet_features`` run it.
"""
import dataclasses
import os
import pickle
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import torch
import torchvision

from pretrain.runtime.files import atomic_torch_save

# The normalisation of torchvision ResNets, which every self-supervised recipe here trains with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGES = ("layer1", "layer2", "layer3", "layer4")

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
    ("ddp", "module.", None),  # a DistributedDataParallel-wrapped ResNet (SwAV, DINO, supervised trainers)
    ("torchvision", "", None),
]
# Heads that self-supervised projects keep beside the backbone, under its own prefix; dropped by name.
KNOWN_HEADS = ("fc", "head", "heads", "projection_head", "prototypes", "projector", "predictor", "neck", "classifier")
BLOCKS = {(2, 2, 2, 2, "basic"): 18, (3, 4, 6, 3, "basic"): 34, (3, 4, 6, 3, "bottleneck"): 50,
          (3, 4, 23, 3, "bottleneck"): 101, (3, 8, 36, 3, "bottleneck"): 152}


class BackboneError(Exception):
    """A file or state that holds no usable ResNet; the message names the file and the keys."""


@dataclasses.dataclass
class ResNetWeights:
    """A ResNet's tensors under torchvision names (no ``fc``), and how they were found."""
    tensors: "OrderedDict[str, torch.Tensor]"
    depth: int
    layout: str
    prefix: str
    encoder: str
    dropped: List[str]
    source_dtype: str
    groups: int = 1
    width_per_group: int = 64  # ResNeXt 32x4d: 32 groups of 4; wide ResNet-50-2: 1 group of 128


def read_checkpoint(path: str, unsafe: bool = False):
    """The object stored in ``path``: torch.load (weights only unless ``unsafe``); a clear error otherwise."""
    if not os.path.exists(path):
        raise BackboneError(f"{path}: no such file")
    if os.path.isdir(path):
        raise BackboneError(f"{path}: is a directory, not a checkpoint")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    magic = head[:4]
    if head[8:10] == b'{"':  # safetensors: an 8-byte header length, then a JSON header
        return read_safetensors(path)
    if magic[:1] == b"\x80" and b"stem.conv1" in head and b"res2." in head:
        raise BackboneError(f"{path}: is already a Detectron2 file (keys such as stem.conv1, res2.*), what "
                            "tools/convert.py writes: give it to tools/train_net.py as MODEL.WEIGHTS as it is; here, "
                            "give the checkpoint it was converted from")
    # torch.save writes a zip archive (PK..) or, in the legacy format, a pickle (protocol byte 0x80).
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise BackboneError(f"{path}: not a readable PyTorch checkpoint nor a safetensors file (starts with {magic!r})")
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as e:
        if not unsafe and "Weights only load failed" in str(e):
            raise BackboneError(f"{path}: holds Python objects beyond tensors; if you trust the file, rerun "
                                "with --unsafe-load") from None
        raise BackboneError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        detail = str(e).splitlines()[0] if str(e) else ""
        raise BackboneError(f"{path}: not a readable PyTorch checkpoint; truncated or damaged "
                            f"({e.__class__.__name__}: {detail})") from None


def read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise BackboneError(f"{path}: not a readable safetensors file; truncated or damaged ({e})") from None


def state_dict_of(obj, path: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint: ``state_dict`` (MoCo, DenseCL), ``model`` (PixPro, ours), or
    the object itself."""
    if not isinstance(obj, dict):
        raise BackboneError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise BackboneError(f"{path}: no tensors found (top-level keys: {sorted(obj)[:10]})")
    return tensors


def detect_layout(state, encoder: str, path: str, forced_prefix: Optional[str] = None):
    """``(layout, prefix)``: the project is recognised by where its query encoder lives, then the prefix of the
    asked-for encoder is taken from that project's layout (PixPro's momentum encoder is not MoCo's)."""
    if forced_prefix is not None:
        return "given", forced_prefix

    def holds_resnet(prefix):
        return f"{prefix}conv1.weight" in state and any(k.startswith(f"{prefix}layer1.0.") for k in state)

    for name, query, momentum in LAYOUTS:
        if holds_resnet(query):
            prefix = query if encoder == "query" else momentum
            if prefix is not None and holds_resnet(prefix):
                return name, prefix
            raise BackboneError(f"{path}: layout {name} holds no {encoder} encoder"
                                f"{f' (expected under {prefix!r})' if prefix else ''}; use --prefix to name it")
    sample = ", ".join(sorted(state)[:8])
    raise BackboneError(f"{path}: unknown layout: no ResNet with a {encoder} encoder found (expected e.g. "
                        f"'conv1.weight' under one of the prefixes {[p for _, p, _ in LAYOUTS if p]}); "
                        f"first keys: {sample}. Use --prefix to name it.")


def split_backbone(state, prefix: str, drop: Sequence[str] = ()):
    """ResNet tensors under ``prefix`` (prefix removed), and the keys dropped on purpose: outside the prefix,
    known heads (``KNOWN_HEADS``), names starting with one of ``drop``, and BN's ``num_batches_tracked``."""
    kept, dropped = OrderedDict(), []
    for key, value in state.items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        if (name is None or name.split(".")[0] in KNOWN_HEADS or name.endswith("num_batches_tracked")
                or key.startswith(tuple(drop))):
            dropped.append(key)
        else:
            kept[name] = value
    return kept, dropped


def infer_depth(tensors, path: str) -> int:
    counts = []
    for stage in range(1, 5):
        blocks = {int(m.group(1)) for k in tensors for m in [re.match(rf"layer{stage}\.(\d+)\.", k)] if m}
        counts.append(max(blocks) + 1 if blocks else 0)
    kind = "bottleneck" if any(".conv3." in k for k in tensors) else "basic"
    depth = BLOCKS.get((*counts, kind))
    if depth is None:
        raise BackboneError(f"{path}: not a ResNet-18/34/50/101/152: {kind} blocks per stage {counts}")
    return depth


def infer_groups(tensors) -> tuple:
    """``(groups, width_per_group)`` of a bottleneck ResNet from its first block's shapes; (1, 64) for basic."""
    if "layer1.0.conv3.weight" not in tensors:
        return 1, 64
    width = tensors["layer1.0.conv1.weight"].shape[0]
    groups = max(1, width // tensors["layer1.0.conv2.weight"].shape[1])
    return groups, width // groups


def torchvision_resnet(depth: int, groups: int = 1, width_per_group: int = 64) -> torch.nn.Module:
    return torchvision.models.__dict__[f"resnet{depth}"](groups=groups, width_per_group=width_per_group)


def expected_shapes(depth: int, groups: int = 1, width_per_group: int = 64) -> Dict[str, tuple]:
    with torch.device("meta"):
        model = torchvision_resnet(depth, groups, width_per_group)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}


def check_against_table(tensors, depth: int, path: str, groups: int = 1, width_per_group: int = 64) -> None:
    table = expected_shapes(depth, groups, width_per_group)
    missing = sorted(set(table) - set(tensors))
    extra = sorted(set(tensors) - set(table))
    wrong = sorted(k for k in set(table) & set(tensors) if tuple(tensors[k].shape) != table[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} {architecture(depth, groups, width_per_group)} keys missing: {missing[:20]}")
    if extra:
        problems.append(f"{len(extra)} unexpected backbone keys: {extra[:20]}")
    if wrong:
        shapes = [f"{k} {tuple(tensors[k].shape)} != {table[k]}" for k in wrong[:20]]
        problems.append("wrong shapes: " + ", ".join(shapes))
    if problems:
        raise BackboneError(f"{path}: " + "; ".join(problems))


def extract_resnet(state, encoder: str = "query", prefix: Optional[str] = None, path: str = "checkpoint",
                   drop: Sequence[str] = ()) -> ResNetWeights:
    """The strictly checked ResNet of ``encoder`` inside a checkpoint object or state_dict (float32, CPU)."""
    state = state_dict_of(state, path)
    layout, prefix = detect_layout(state, encoder, path, prefix)
    tensors, dropped = split_backbone(state, prefix, drop)
    if "conv1.weight" not in tensors:
        raise BackboneError(f"{path}: not a ResNet: no 'conv1.weight' under prefix {prefix!r}")
    depth = infer_depth(tensors, path)
    groups, width = infer_groups(tensors)
    check_against_table(tensors, depth, path, groups, width)
    source_dtype = str(tensors["conv1.weight"].dtype).replace("torch.", "")
    tensors = OrderedDict((k, v.detach().float().cpu()) for k, v in tensors.items())
    return ResNetWeights(tensors, depth, layout, prefix, encoder, dropped, source_dtype, groups, width)


def architecture(depth: int, groups: int = 1, width_per_group: int = 64) -> str:
    """ResNet-50, ResNeXt-50 32x4d, wide ResNet-50 (width 128 per group), ..."""
    if groups > 1:
        return f"ResNeXt-{depth} {groups}x{width_per_group}d"
    return f"ResNet-{depth}" + (f" (width {width_per_group})" if width_per_group != 64 else "")


def read_resnet(weights: Union[str, Sequence[str]], encoder: str = "query") -> ResNetWeights:
    """The ResNet of ``encoder`` in one file, or the element-wise mean of the ResNets in several files (checkpoints
    of one run: averaging the last ones smooths the step-to-step noise of the end of training; the BN buffers are
    averaged too, which is why the probes re-estimate BN statistics). Every file must hold the same architecture."""
    paths = [weights] if isinstance(weights, str) else list(weights)
    if not paths:
        raise BackboneError("no weights file given")
    found = [extract_resnet(read_checkpoint(p), encoder=encoder, path=p) for p in paths]
    first = found[0]
    for path, other in zip(paths[1:], found[1:]):
        if (other.depth, other.groups, other.width_per_group) != (first.depth, first.groups, first.width_per_group) \
                or other.tensors.keys() != first.tensors.keys():
            raise BackboneError(f"{path}: holds a {architecture(other.depth, other.groups, other.width_per_group)} "
                                f"with other keys than {paths[0]}'s "
                                f"{architecture(first.depth, first.groups, first.width_per_group)}: "
                                "only checkpoints of one architecture can be averaged")
    if len(found) > 1:
        first = dataclasses.replace(first, tensors=OrderedDict(
            (k, torch.stack([f.tensors[k] for f in found]).mean(0)) for k in first.tensors))
    return first


def build_resnet(depth: Optional[int] = None, weights: Union[str, Sequence[str], None] = None, seed: int = 0,
                 encoder: str = "query") -> torch.nn.Module:
    """A torchvision ResNet in eval mode: the backbone of ``weights`` (any layout; several files: their mean,
    ``read_resnet``; its depth when ``depth`` is None), or a random init drawn with ``seed`` (ResNet-18 when
    ``depth`` is None)."""
    found = read_resnet(weights, encoder) if weights else None
    if found is not None and depth is not None and found.depth != depth:
        raise BackboneError(f"{weights}: holds a ResNet-{found.depth}, not a ResNet-{depth}")
    torch.manual_seed(seed)  # random init is reproducible too
    model = torchvision_resnet(found.depth, found.groups, found.width_per_group) if found else torchvision_resnet(
        depth or 18)
    if found is not None:
        model.load_state_dict(found.tensors, strict=False)  # everything but fc, checked by extract_resnet
    return model.eval()


def resnet_stages(model: torch.nn.Module, x: torch.Tensor, stages: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The outputs of the named stages (``layer1`` .. ``layer4``, C2 .. C5) of a torchvision ResNet, in one
    forward that stops at the deepest of them."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"unknown ResNet stage(s) {unknown or stages!r}; expected some of {STAGES}")
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    out = {}
    for name in STAGES[:max(STAGES.index(s) for s in stages) + 1]:
        x = getattr(model, name)(x)
        if name in stages:
            out[name] = x
    return out


def resnet_features(model: torch.nn.Module, x: torch.Tensor, upto: str = "layer4") -> torch.Tensor:
    """The output of stage ``upto`` (``layer1`` .. ``layer4``, C2 .. C5) of a torchvision ResNet."""
    return resnet_stages(model, x, (upto,))[upto]


def save_backbone(model: torch.nn.Module, path: str) -> str:
    """A plain torchvision ResNet state_dict (no ``fc``), written atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    atomic_torch_save(state, path)
    return path


def normalise(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``[N, 3, H, W]`` images in [0, 1] -> the normalised input of a torchvision ResNet."""
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
