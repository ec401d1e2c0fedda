"""Dense nearest-neighbour retrieval: scene understanding with no training, for ResNets.

In-context scene understanding as Balazevic et al. ("Towards In-context Scene Understanding", NeurIPS 2023)
define it and open-hummingbird-eval implements it for ViTs: the L2-normalised features of training patches, each
with the share of its pixels in every class, form a memory bank built from augmented training images; every test
patch takes its k nearest bank patches by cosine, weights them by a softmax of similarity / temperature, and sums
their label shares; the patch scores are upsampled bilinearly to pixels and the argmax is scored by mIoU.

For a ResNet the patches are the cells of a stage (C4: stride 16, 14 x 14 at 224 px, the grid of a ViT-S/16;
C5 stride 32, or stride 16 with ``dilate``). Where this differs from the public code (docs/retrieval.md says
why): ignored pixels (255) add nothing to a patch's label shares (there: they count as class 0); BN statistics
are re-estimated on the training images, as for the dense linear probe (a ViT has none); the neighbours found by
faiss are re-ranked by float64 similarities, so that the result does not depend on faiss's SIMD kernels; the
prediction is scored at each image's own size (there: at the 224 px input).

    memory = build_memory(model, train, MemorySpec(...))          # keys [M, D], labels [M, K]
    scores = transfer_labels(search(memory, queries, k), ...)     # [Q, K]
"""
import dataclasses
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pretrain.backbone import normalise, resnet_stages
from transfer.readout.precise_bn import reestimate_bn as reestimate_through
from transfer.readout.retrieval_data import IGNORE, Sample, augmented_view, resized, resized_image

REFERENCE = {"neighbours": 30, "temperature": 0.02, "size": 224}  # open-hummingbird-eval's defaults


@dataclasses.dataclass
class MemorySpec:
    layer: str = "layer3"
    size: int = 224                    # views are size x size, as the public code's input_size
    epochs: int = 1                    # augmentation epochs over the training images
    bank_size: Optional[int] = None    # patches kept (None: every patch of every view)
    batch: int = 16
    seed: int = 0                      # the crops, the jitter and the patch sampling
    augment: bool = True               # False: each training image once, resized whole (a test of the readout)


@dataclasses.dataclass
class Memory:
    keys: torch.Tensor    # [M, D] float32, unit rows
    labels: torch.Tensor  # [M, K] float32: the share of each class among a patch's pixels


def dilate_last_stage(model: torch.nn.Module) -> torch.nn.Module:
    """Output stride 16 at C5, as torchvision's ``replace_stride_with_dilation`` makes it (the first block of
    layer4 without its stride, the 3x3 convolutions of the later blocks dilated by 2), for basic blocks too."""
    blocks = list(model.layer4)
    for i, block in enumerate(blocks):
        for conv in [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]:
            if i == 0:
                conv.stride = (1, 1)
            elif conv.kernel_size == (3, 3):
                conv.dilation, conv.padding = (2, 2), (2, 2)
    return model


def stride_of(model: torch.nn.Module, layer: str, size: int) -> int:
    with torch.no_grad():
        side = resnet_stages(model, torch.zeros(1, 3, size, size), (layer,))[layer].shape[-1]
    if size % side:
        raise ValueError(f"--size {size}: not a multiple of the {layer} grid ({side} cells): choose a multiple "
                         f"of {size // side}")
    return size // side


@torch.no_grad()
def patch_features(model: torch.nn.Module, views: torch.Tensor, layer: str) -> torch.Tensor:
    """``[N, h, w, D]`` unit-norm features of the cells of ``layer`` for ``[N, 3, S, S]`` views in [0, 1]."""
    fmap = resnet_stages(model, normalise(views), (layer,))[layer]
    return F.normalize(fmap.permute(0, 2, 3, 1).float(), dim=-1)


def patch_labels(labels: torch.Tensor, classes: int, stride: int) -> torch.Tensor:
    """``[N, h, w, K]``: the share of each class among the pixels of every ``stride`` x ``stride`` patch of
    ``[N, S, S]`` labels; ignored pixels count for no class."""
    if ((labels < 0) | (labels >= classes) & (labels != IGNORE)).any():
        raise ValueError(f"a label value outside 0..{classes - 1} and {IGNORE} (ignore)")
    one_hot = F.one_hot(labels.clamp(0, classes), classes + 1)[..., :classes].float()  # IGNORE: no class
    return F.avg_pool2d(one_hot.permute(0, 3, 1, 2), stride).permute(0, 2, 3, 1)


def sample_patches(labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """The indices of ``count`` patches of one view (``labels`` [P, K]), as the public code samples them:
    rarer classes first. A class's frequency is the number of the view's patches that hold it; a patch scores
    the sum of the frequencies of its classes times a uniform draw; the ``count`` lowest scores are kept;
    patches without a labelled pixel come last."""
    present = labels > 0
    frequency = present.sum(0).float()
    scores = (present.float() * frequency).sum(1)
    scores = scores * torch.rand(len(scores), generator=generator)
    scores[~present.any(1)] = 1e6
    return torch.topk(scores, min(count, len(scores)), largest=False).indices


def reestimate_bn(model: torch.nn.Module, samples: Sequence[Sample], size: int, layer: str, batch: int = 16) -> None:
    """BN running statistics := their average over the un-augmented training views (fvcore's precise BN, through
    stage ``layer``: transfer/readout/precise_bn.py); eval mode after. ``samples``: ``read_sample`` of each record."""
    views = [resized_image(image, size) for image, _ in samples]
    reestimate_through(model, [normalise(torch.stack(views[i:i + batch])) for i in range(0, len(views), batch)],
                       layer)


def build_memory(model: torch.nn.Module, samples: Sequence[Sample], classes: int, spec: MemorySpec,
                 progress=None) -> Memory:
    """The memory bank of ``spec.epochs`` augmented views of every training sample (``read_sample`` of each
    record, read once for this and the BN re-estimation). With ``bank_size``, each view keeps
    ``bank_size // (len(samples) * epochs)`` patches (``sample_patches``); without it, every patch with a labelled
    pixel."""
    stride = stride_of(model, spec.layer, spec.size)
    per_view = None if spec.bank_size is None else spec.bank_size // (len(samples) * spec.epochs)
    if per_view == 0:
        raise ValueError(f"--bank-size {spec.bank_size}: below one patch per view ({len(samples)} images x "
                         f"{spec.epochs} epochs)")
    generator = torch.Generator().manual_seed(spec.seed)
    keys: List[torch.Tensor] = []
    labels: List[torch.Tensor] = []
    jobs = [s for _ in range(spec.epochs) for s in samples]
    for start in range(0, len(jobs), spec.batch):
        views, targets = zip(*(augmented_view(image, label, spec.size, generator) if spec.augment else
                               resized(image, label, spec.size) for image, label in jobs[start:start + spec.batch]))
        feats = patch_features(model, torch.stack(views), spec.layer).flatten(1, 2)  # [B, P, D]
        shares = patch_labels(torch.stack(targets), classes, stride).flatten(1, 2)   # [B, P, K]
        for f, s in zip(feats, shares):
            keep = s.sum(1) > 0 if per_view is None else sample_patches(s, per_view, generator)
            keys.append(f[keep])
            labels.append(s[keep])
        if progress is not None:
            progress(len(views))
    return Memory(torch.cat(keys).contiguous(), torch.cat(labels).contiguous())


def bank_bytes(patches: int, dim: int) -> int:
    """What the bank's keys take in memory: patches x dimension x 4 bytes (float32)."""
    return patches * dim * 4


class NeighbourIndex:
    """Exact inner-product search over the bank with faiss (``IndexFlatIP``): the top ``k + slack`` candidates,
    re-ranked by float64 similarities (ties by bank index), so that the neighbours and their weights do not
    depend on faiss's kernels or thread count."""

    def __init__(self, keys: torch.Tensor, slack: int = 8):
        import faiss
        self.keys, self.slack = keys, slack
        self.index = faiss.IndexFlatIP(keys.shape[1])
        self.index.add(keys.numpy().astype(np.float32))

    def search(self, queries: torch.Tensor, k: int):
        """``(similarities [Q, k] float64, indices [Q, k] long)``, most similar first."""
        wanted = min(k + self.slack, len(self.keys))
        _, found = self.index.search(queries.numpy().astype(np.float32), wanted)
        candidates = torch.from_numpy(found).long()
        sims = torch.einsum("qd,qcd->qc", queries.double(), self.keys[candidates].double())
        # order by similarity, then index: the same neighbours whatever order faiss returned them in
        order = torch.from_numpy(np.lexsort((candidates.numpy(), -sims.numpy()), axis=1)[:, :k])
        return sims.gather(1, order), candidates.gather(1, order)


def brute_force(keys: torch.Tensor, queries: torch.Tensor, k: int):
    """The reference search: every similarity in float64, the top ``k`` (ties by bank index)."""
    sims = queries.double() @ keys.double().T
    order = torch.from_numpy(np.lexsort((np.broadcast_to(np.arange(len(keys)), sims.shape), -sims.numpy()),
                                        axis=1)[:, :k])
    return sims.gather(1, order), order


def transfer_labels(sims: torch.Tensor, neighbours: torch.Tensor, labels: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """``[Q, K]`` label scores: the neighbours' label shares weighted by softmax(similarity / temperature)."""
    weights = torch.softmax(sims / temperature, dim=1)
    return torch.einsum("qn,qnk->qk", weights, labels[neighbours].double())


@torch.no_grad()
def predict(model: torch.nn.Module, index: NeighbourIndex, memory: Memory, image: torch.Tensor, spec: MemorySpec,
            k: int, temperature: float) -> torch.Tensor:
    """``[K, H, W]`` class scores of one test image at its own size: its ``size`` x ``size`` view's patches
    labelled by their neighbours, upsampled bilinearly."""
    view = resized_image(image, spec.size)
    feats = patch_features(model, view[None], spec.layer)[0]  # [h, w, D]
    h, w, _ = feats.shape
    sims, neighbours = index.search(feats.reshape(h * w, -1), k)
    scores = transfer_labels(sims, neighbours, memory.labels, temperature).float()
    grid = scores.T.reshape(1, -1, h, w)
    return F.interpolate(grid, size=tuple(image.shape[1:]), mode="bilinear", align_corners=False)[0]
