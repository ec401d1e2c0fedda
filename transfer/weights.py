"""Pretrained ResNet weights in Detectron2's format: renaming, the ``.pkl`` and its sidecar, and checks.

The sidecar (``WEIGHTS.json`` beside the weights) records where the weights came from and the input settings a
Detectron2 config needs for them; ``check_input_settings`` holds a fine-tuning config against it.
"""
import hashlib
import io
import json
import os
import pickle
import re
from collections import Counter, OrderedDict
from typing import Dict, Optional

import torch

from pretrain.backbone import KNOWN_HEADS, BackboneError, ResNetWeights, architecture, extract_resnet, read_checkpoint
from pretrain.runtime.files import atomic_write, atomic_write_json, sha256_of

# Settings a Detectron2 model needs for weights trained on torchvision-normalised RGB input.
INPUT_SETTINGS = {
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530],
    "MODEL.PIXEL_STD": [58.395, 57.120, 57.375],
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
}
FORMATS = {".pkl": "detectron2", ".pth": "torchvision", ".safetensors": "torchvision"}


class WeightsError(RuntimeError):
    """Weights that cannot be used as they are; the message names the file and what to do."""


def torchvision_to_detectron2(name: str) -> str:
    """One torchvision ResNet name -> its Detectron2 name (stem / resN / convK.norm / shortcut)."""
    if name.startswith("conv1."):
        return "stem." + name
    if name.startswith("bn1."):
        return "stem.conv1.norm." + name[len("bn1."):]
    m = re.match(r"layer(\d)\.(\d+)\.(.+)$", name)
    if not m:
        raise BackboneError(f"cannot rename {name!r}: not a ResNet key")
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
    rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
    return f"res{stage}.{block}.{rest}"


def detectron2_to_torchvision(name: str) -> str:
    """The inverse of ``torchvision_to_detectron2``."""
    if name.startswith("stem.conv1.norm."):
        return "bn1." + name[len("stem.conv1.norm."):]
    if name.startswith("stem."):
        return name[len("stem."):]
    m = re.match(r"res(\d)\.(\d+)\.(.+)$", name)
    if not m:
        raise BackboneError(f"cannot rename {name!r}: not a Detectron2 ResNet key")
    rest = re.sub(r"^conv(\d)\.norm\.", r"bn\1.", m.group(3))
    rest = re.sub(r"^shortcut\.norm\.", "downsample.1.", rest)
    rest = re.sub(r"^shortcut\.", "downsample.0.", rest)
    return f"layer{int(m.group(1)) - 1}.{m.group(2)}.{rest}"


def read_converted(path: str) -> Dict[str, torch.Tensor]:
    """The torchvision state dict of a ``.pkl`` that tools/convert.py wrote (torchvision layout, RGB input); a
    Detectron2 file of another origin (Caffe2 strides and BGR input) is refused: give its source instead."""
    with open(path, "rb") as f:
        try:
            data = pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError) as e:
            raise WeightsError(f"{path}: not a readable pickle, truncated or damaged "
                               f"({e.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("__author__") != "houghcl-toolkit":
        raise WeightsError(f"{path}: a Detectron2 file not written by tools/convert.py (its layout and input "
                           "settings are unknown): give the checkpoint it was converted from")
    return OrderedDict((detectron2_to_torchvision(k), torch.as_tensor(v)) for k, v in data["model"].items())


def to_detectron2(weights: ResNetWeights) -> Dict:
    """The payload of a Detectron2 ``.pkl``: numpy arrays under Detectron2 names."""
    renamed = OrderedDict()
    for name, value in weights.tensors.items():
        new = torchvision_to_detectron2(name)
        if new in renamed:
            raise BackboneError(f"two tensors map to {new!r}")
        renamed[new] = value.numpy()
    return {"model": renamed, "__author__": "houghcl-toolkit", "matching_heuristics": True}


def output_format(path: str) -> str:
    """``detectron2`` for ``.pkl``, ``torchvision`` for ``.pth``: Detectron2 picks its loader by extension."""
    fmt = FORMATS.get(os.path.splitext(path)[1])
    if fmt is None:
        raise WeightsError(f"{path}: unknown output extension; use .pkl (Detectron2), .pth or .safetensors "
                           "(torchvision)")
    return fmt


def architecture_settings(weights: ResNetWeights) -> Dict:
    """The Detectron2 keys that build the network these weights belong to."""
    return {"MODEL.RESNETS.DEPTH": weights.depth, "MODEL.RESNETS.NUM_GROUPS": weights.groups,
            "MODEL.RESNETS.WIDTH_PER_GROUP": weights.width_per_group}


def sidecar_of(weights: ResNetWeights, source: str, fmt: str, drop=()) -> Dict:
    """What was done, exactly: the layout detected (or "given" with --prefix), the prefix, the encoder (None
    when a prefix was given: the prefix alone says which), what was dropped, and what Detectron2 needs."""
    return {"source": os.path.abspath(source), "source_sha256": sha256_of(source), "layout": weights.layout,
            "layout_detected": weights.layout != "given", "prefix": weights.prefix,
            "encoder": weights.encoder if weights.layout != "given" else None, "drop": list(drop),
            "num_dropped": len(weights.dropped), "source_dtype": weights.source_dtype, "depth": weights.depth,
            "groups": weights.groups, "width_per_group": weights.width_per_group, "format": fmt,
            "num_tensors": len(weights.tensors), "input_settings": INPUT_SETTINGS,
            "architecture_settings": architecture_settings(weights),
            "verified": False}  # True only once tools/convert.py --verify has finished on these bytes


def mark_verified(path: str) -> None:
    """Record in ``path.json`` that ``--verify`` finished on these bytes (a kill during it leaves False)."""
    sidecar = read_sidecar(path)
    atomic_write_json(path + ".json", {**sidecar, "verified": True})


def write_with_sidecar(path: str, data: bytes, sidecar: Dict) -> None:
    """The weights and ``path.json`` together: both or neither (a file without its sidecar would skip the
    input-settings check of fine-tuning). The sidecar records the sha256 of the bytes it describes, so that a
    kill between the two renames, which leaves a new file beside an old sidecar, is caught when it is read."""
    sidecar_bytes = (json.dumps({**sidecar, "sha256": hashlib.sha256(data).hexdigest()}, indent=2) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))
    try:
        atomic_write(path + ".json", lambda f: f.write(sidecar_bytes))
    except BaseException:
        os.unlink(path)
        raise


def write_detectron2(path: str, weights: ResNetWeights, sidecar: Dict) -> None:
    write_with_sidecar(path, pickle.dumps(to_detectron2(weights)), sidecar)


def write_torchvision(path: str, weights: ResNetWeights, sidecar: Dict) -> None:
    if path.endswith(".safetensors"):
        from safetensors.torch import save
        data = save({k: v.contiguous() for k, v in weights.tensors.items()}, metadata={"format": "pt"})
    else:
        buffer = io.BytesIO()
        torch.save(dict(weights.tensors), buffer)
        data = buffer.getvalue()
    write_with_sidecar(path, data, sidecar)


def convert(source: str, output: str, to: str = "detectron2", encoder: str = "query",
            prefix: Optional[str] = None, unsafe: bool = False, drop=()) -> ResNetWeights:
    """Read ``source`` (any known layout), write ``output`` in the format its extension names, with sidecar.
    ``to`` must agree with that extension (checked before any work)."""
    fmt = output_format(output)
    if to != fmt:
        wanted = " or ".join(e for e, f in FORMATS.items() if f == to)
        raise WeightsError(f"{output}: {to} output is a {wanted} file, not {os.path.splitext(output)[1]} "
                           f"(Detectron2 picks its loader from the extension)"
                           + ("; for a torchvision file add --to torchvision" if fmt == "torchvision" else ""))
    weights = extract_resnet(read_checkpoint(source, unsafe), encoder, prefix, path=source, drop=drop)
    sidecar = sidecar_of(weights, source, fmt, drop)
    (write_detectron2 if fmt == "detectron2" else write_torchvision)(output, weights, sidecar)
    return weights


def dropped_heads(weights) -> str:
    heads = sorted({k[len(weights.prefix):].split(".")[0] for k in weights.dropped if k.startswith(weights.prefix)}
                   & set(KNOWN_HEADS) - {"fc"})
    return f" (heads: {', '.join(heads)})" if heads else ""


def dropped_groups(weights) -> str:
    """What was dropped, by name: each group of keys (first name below the backbone's prefix, or the first
    name of keys outside it) with its count."""
    groups, counters = Counter(), 0
    for key in weights.dropped:
        if key.endswith(".num_batches_tracked"):  # BN's step counters: no weights, Detectron2 has none
            counters += 1
            continue
        inside = key.startswith(weights.prefix)
        rest = key[len(weights.prefix):] if inside else key
        groups[(weights.prefix if inside else "") + rest.split(".")[0]] += 1
    named = [f"{name} ({count})" for name, count in sorted(groups.items())]
    return "; ".join(named + ([f"BN num_batches_tracked counters ({counters})"] if counters else []))


def conversion_summary(weights: ResNetWeights) -> str:
    """One line: the layout and encoder found, the architecture, what was kept and, by name, what was dropped."""
    encoder = f"{weights.encoder} encoder" if weights.layout != "given" else "the given prefix"
    return (f"layout {weights.layout} (prefix {weights.prefix!r}), {encoder}, "
            f"{architecture(weights.depth, weights.groups, weights.width_per_group)}, {len(weights.tensors)} backbone "
            f"tensors kept, {len(weights.dropped)} other tensors dropped{dropped_heads(weights)}"
            f"{': ' + dropped_groups(weights) if weights.dropped else ''}")


def remove_with_sidecar(path: str) -> None:
    for p in (path, path + ".json"):
        if os.path.exists(p):
            os.unlink(p)


def check_weights_file(path: str) -> None:
    """MODEL.WEIGHTS as Detectron2 will read it, checked first so that a bad file is one sentence, not a
    traceback: a Detectron2 pickle (what tools/convert.py writes) or a torch file with Detectron2 names."""
    hint = (f"convert it first (tools/convert.py {path} {os.path.splitext(path)[0]}.pkl) and give the .pkl as "
            "MODEL.WEIGHTS")
    if path.endswith(".pkl"):
        try:
            with open(path, "rb") as f:
                data = pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError) as e:
            raise WeightsError(f"MODEL.WEIGHTS {path}: not a readable pickle, truncated or damaged "
                               f"({e.__class__.__name__}); convert the source again with tools/convert.py") from None
        model = data.get("model", data) if isinstance(data, dict) else None
        if not isinstance(model, dict) or not model or not all(hasattr(v, "shape") for v in model.values()):
            raise WeightsError(f"MODEL.WEIGHTS {path}: a pickle of {type(data).__name__}, not a Detectron2 weights "
                               "file ({'model': {name: array}}); tools/convert.py writes one")
        return
    try:
        state = read_checkpoint(path)
    except BackboneError as e:
        if "beyond tensors" in str(e):  # a Detectron2 training checkpoint (optimizer, scheduler): let it load
            return
        raise WeightsError(f"MODEL.WEIGHTS {e}") from None
    with open(path, "rb") as f:
        if f.read(10)[8:10] == b'{"':
            raise WeightsError(f"MODEL.WEIGHTS {path}: a safetensors file, which Detectron2 does not read; {hint}")
    state = state.get("model", state) if isinstance(state, dict) else state
    keys = list(state) if isinstance(state, dict) else []
    detectron2_names = any(k.startswith(("backbone.", "stem.", "res2.", "roi_heads.")) for k in keys)
    if not detectron2_names and any(re.search(r"(^|\.)(conv1|layer1\.0\.conv1)\.weight$", k) for k in keys):
        raise WeightsError(f"MODEL.WEIGHTS {path}: an unconverted checkpoint (names such as conv1.weight, "
                           f"layer1.*); {hint}")


def read_sidecar(weights: str) -> Optional[Dict]:
    """The converter's record beside ``weights``, or None when there is none; a record of other bytes (a
    conversion killed between its two renames, a file replaced by hand) is refused."""
    path = weights + ".json"
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            sidecar = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not a converter sidecar ({e}); reconvert the weights with tools/convert.py")
    if "sha256" in sidecar and os.path.exists(weights) and sha256_of(weights) != sidecar["sha256"]:
        raise WeightsError(f"{path} describes other bytes than {weights} (sha256 differs: an interrupted "
                           "conversion, or a file replaced by hand); reconvert the weights with tools/convert.py")
    return sidecar


def check_input_settings(cfg, weights: str) -> bool:
    """The config's input settings must agree with the sidecar of ``weights``; False when there is none."""
    sidecar = read_sidecar(weights)
    if sidecar is None:
        return False
    problems = []
    required = {**sidecar.get("input_settings", {}), **sidecar.get("architecture_settings", {})}
    for key, expected in required.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        actual = list(node) if isinstance(node, (tuple, list)) else node
        if isinstance(expected, list):
            same = len(actual) == len(expected) and all(abs(a - b) < 1e-3 for a, b in zip(actual, expected))
        else:
            same = actual == expected
        if not same:
            problems.append(f"{key} is {actual!r}, the weights need {expected!r}")
    if problems:
        raise WeightsError(f"{weights}: the config disagrees with {weights}.json: " + "; ".join(problems))
    return True


def architecture_opts(weights: ResNetWeights):
    """Config overrides that build the network of ``weights`` in Detectron2."""
    # Detectron2 builds ResNet-18/34 from basic blocks only with 64 channels out of res2.
    basic = ["MODEL.RESNETS.RES2_OUT_CHANNELS", 64] if weights.depth < 50 else []
    return [x for key, value in architecture_settings(weights).items() for x in (key, value)] + basic
