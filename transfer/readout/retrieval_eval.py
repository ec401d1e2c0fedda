"""One dense retrieval evaluation, end to end: the backbone, the memory bank of the training records, the label
transfer to every test image, and its mIoU from Detectron2's SemSegEvaluator (the scorer of the segmentation
transfer)."""
import hashlib
import time
from typing import Dict, Optional, Sequence

import torch

from pretrain.backbone import build_resnet, extract_resnet, torchvision_resnet
from transfer.readout.retrieval import (
    MemorySpec,
    NeighbourIndex,
    bank_bytes,
    build_memory,
    dilate_last_stage,
    predict,
    reestimate_bn,
    stride_of,
)
from transfer.readout.retrieval_data import IGNORE, read_sample
from transfer.weights import read_converted


def load_backbone(weights: Optional[Sequence[str]], depth: int = 18, seed: int = 0,
                  encoder: str = "query") -> torch.nn.Module:
    """What the toolkit reads (backbone.pth, checkpoints, other projects' files, several files averaged), a
    ``.pkl`` that tools/convert.py wrote, or a random init drawn with ``seed``."""
    if weights and any(str(w).endswith(".pkl") for w in weights):
        if len(weights) > 1:
            raise ValueError("--weights: a converted .pkl is read alone, not averaged with other files")
        found = extract_resnet(read_converted(weights[0]), encoder=encoder, path=weights[0])
        model = torchvision_resnet(found.depth, found.groups, found.width_per_group)
        model.load_state_dict(found.tensors, strict=False)
        return model.eval()
    return build_resnet(None if weights else depth, list(weights) if weights else None, seed, encoder)


def score(records: Sequence[Dict], classes: Sequence[str], predictions) -> Dict:
    """mIoU, mACC and pACC (x 100) and the IoU of every class, from Detectron2's SemSegEvaluator over the test
    records and their ``[K, H, W]`` class scores (``predictions``: an iterable in the records' order)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator
    key = hashlib.sha256("\n".join(r["file_name"] + ">" + r["sem_seg_file_name"] for r in records).encode())
    name = f"retrieval_test_{key.hexdigest()[:16]}"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: list(records))
        MetadataCatalog.get(name).set(stuff_classes=list(classes), ignore_label=IGNORE, evaluator_type="sem_seg")
    evaluator = SemSegEvaluator(name, distributed=False)
    evaluator.reset()
    for record, scores in zip(records, predictions):
        evaluator.process([{"file_name": record["file_name"]}], [{"sem_seg": scores}])
    found = evaluator.evaluate()["sem_seg"]
    return {**{k: found[k] for k in ("mIoU", "mACC", "pACC")},
            **{k: found[k] for k in found if k.startswith("IoU-")}}


def evaluate(train: Sequence[Dict], test: Sequence[Dict], classes: Sequence[str], weights: Optional[Sequence[str]],
             spec: MemorySpec, neighbours: int = 30, temperature: float = 0.02, depth: int = 18, init_seed: int = 0,
             encoder: str = "query", dilate: bool = False, precise_bn: bool = True, log=print) -> Dict:
    """The retrieval readout of one backbone: ``{"retrieval": {metric: value}, "bank": {...}}``."""
    from tqdm import tqdm
    model = load_backbone(weights, depth, init_seed, encoder)
    if dilate:
        dilate_last_stage(model)
    stride = stride_of(model, spec.layer, spec.size)
    samples = [read_sample(record) for record in train]  # read once: BN re-estimation and the bank
    if not any(bool((labels != IGNORE).any()) for _, labels in samples):
        raise ValueError(f"the {len(train)} training label maps hold no labelled pixel (every one is {IGNORE}, "
                         f"unlabelled, e.g. {train[0]['sem_seg_file_name']}): the memory bank would be empty")
    cells = (spec.size // stride) ** 2
    every = len(train) * spec.epochs * cells
    patches = min(spec.bank_size, every) if spec.bank_size else every
    dim = channels_of(model, spec.layer)
    log(f"memory bank: at most {patches:,} patches x {dim} dimensions x 4 bytes = "
        f"{bank_bytes(patches, dim) / 2 ** 20:.1f} MiB ({len(train)} images x {spec.epochs} augmentation epochs, "
        f"{cells} cells of {spec.layer} each)")
    check_memory(patches, dim, len(classes))
    if precise_bn:
        reestimate_bn(model, samples, spec.size, spec.layer)
    start = time.perf_counter()
    with tqdm(total=len(train) * spec.epochs, desc="memory bank", unit="view") as bar:
        memory = build_memory(model, samples, len(classes), spec, bar.update)
    built = time.perf_counter() - start
    index = NeighbourIndex(memory.keys)
    start = time.perf_counter()

    def predictions():
        for record in tqdm(test, desc="retrieval", unit="image"):
            yield predict(model, index, memory, read_sample(record)[0], spec, neighbours, temperature)

    metrics = score(test, classes, predictions())
    return {"retrieval": metrics, "bank": {"patches": len(memory.keys), "dimensions": dim, "stride": stride,
                                           "build_seconds": built, "query_seconds": time.perf_counter() - start}}


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(patches: int, dim: int, classes: int, available: Optional[int] = None) -> None:
    """The bank's keys and labels, and faiss's copy of the keys, must fit in the memory available now: refused in
    one line before any image is read through the backbone, not hours into building it."""
    needed = 2 * bank_bytes(patches, dim) + patches * classes * 4
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise ValueError(f"the memory bank of {patches:,} patches x {dim} dimensions needs about "
                         f"{needed / 2 ** 30:.1f} GiB (its keys, faiss's copy and the labels) and "
                         f"{available / 2 ** 30:.1f} GiB are available: give a smaller --bank-size")


def channels_of(model: torch.nn.Module, layer: str) -> int:
    last = list(getattr(model, layer))[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features
