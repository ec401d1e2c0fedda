"""The whole model: MoCo-v2, DenseCL, PixPro-style and HoughCL differ only in LOSS_LAMBDA and MATCHER.

A query encoder and its momentum copy (the key encoder), each a torchvision ResNet with a global head and a
dense head; two queues of negatives. The dense loss pulls each query location towards ONE key location
chosen by the matcher, which looks at the backbone C5 features of both views (as DenseCL does).
"""
import copy
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from pretrain.backbone import resnet_features, resnet_stages
from pretrain.data.geometry import positives_accuracy, true_partners
from pretrain.matchers import (
    MATCHERS,
    Positives,
    all_options_from_cfg,
    describe_matcher,
    get_matcher,
    list_matchers,
    options_from_cfg,
)
from pretrain.matchers.hough import describe_options
from pretrain.runtime import distributed as du


def full_precision(device: torch.device):
    """Autocast off: matching, positives and contrastive logits are decided in fp32 whatever the backbone ran
    in (a bf16 ``bmm`` flips a few percent of the positives and moves cosines by up to 0.06)."""
    return torch.autocast(device_type=device.type, enabled=False)


class Encoder(nn.Module):
    """ResNet trunk (torchvision names, no ``fc``) + global MLP head + dense 1x1-conv head."""

    def __init__(self, depth: int, dim: int = 128, hidden: int = 0, dense: bool = True):
        super().__init__()
        self.backbone = torchvision.models.__dict__[f"resnet{depth}"](weights=None)
        width = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()  # the state_dict of .backbone is a plain ResNet's without fc
        hidden = hidden or width
        self.global_head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.dense_head = nn.Sequential(nn.Conv2d(width, hidden, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(hidden, dim, 1)) if dense else None

    def c5(self, x: torch.Tensor) -> torch.Tensor:
        return resnet_features(self.backbone, x, "layer4")

    def forward(self, x: torch.Tensor, stages: Tuple[str, ...] = ()):
        """Returns C5 ``[N, W, S, S]``, the global vector ``[N, D]``, the dense map ``[N, D, S, S]`` and its
        average-pooled vector ``[N, D]`` (pooled before normalisation), all normalised; dense ones None
        without a dense head; and ``{stage: features}`` of the finer ``stages`` a matcher asked for. The heads
        run in the ambient precision; their outputs are normalised in fp32."""
        found = resnet_stages(self.backbone, x, tuple(dict.fromkeys((*stages, "layer4"))))
        c5 = found.pop("layer4")
        g = F.normalize(self.global_head(torch.flatten(F.adaptive_avg_pool2d(c5, 1), 1)).float(), dim=1)
        if self.dense_head is None:
            return c5, g, None, None, found
        d = self.dense_head(c5).float()
        pooled = F.normalize(F.adaptive_avg_pool2d(d, 1).flatten(1), dim=1)
        return c5, g, F.normalize(d, dim=1), pooled, found


def info_nce(positive: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row InfoNCE with the positive at index 0: ``positive [...]``, ``negatives [..., K]`` -> ``[...]``."""
    logits = torch.cat([positive.unsqueeze(-1), negatives], dim=-1) / temperature
    return torch.logsumexp(logits, dim=-1) - logits[..., 0]


class ContrastiveModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m = cfg.MODEL
        self.cfg = cfg
        self.dense = m.LOSS_LAMBDA > 0
        self.temperature, self.momentum = m.TEMPERATURE, m.MOMENTUM
        self.encoder_q = Encoder(m.DEPTH, m.DIM, m.HIDDEN_DIM, dense=self.dense)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(m.DIM, m.QUEUE_SIZE), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        if self.dense:
            self.register_buffer("queue_dense", F.normalize(torch.randn(m.DIM, m.QUEUE_SIZE), dim=0))
        self.matcher = get_matcher(m.MATCHER)
        self.match_options = all_options_from_cfg(m)
        # Diagnostics compare every matcher that chooses by appearance, each with this config's options, so that
        # acc_<name> means the same matcher in every run.
        # A matcher that cannot run on views of this size (too few voters) is left out, not run on noise.
        self.diagnosed = [n for n in list_matchers(from_geometry=False) if m.DIAGNOSTICS
                          and not MATCHERS[n].input_problem(cfg.INPUT.SIZE, self.match_options[n])]
        self.stages = self.stages_for([m.MATCHER] if self.dense else [])
        self.diagnostic_stages = self.stages_for([m.MATCHER] * self.dense + self.diagnosed)

    def stages_for(self, names) -> Tuple[str, ...]:
        """The backbone stages besides C5 that these matchers read."""
        return tuple(dict.fromkeys(s for n in names for s in MATCHERS[n].stages(self.match_options[n])))

    @torch.no_grad()
    def momentum_update(self) -> None:
        k = list(self.encoder_k.parameters())
        q = [p.detach() for p in self.encoder_q.parameters()]
        torch._foreach_lerp_(k, q, 1.0 - self.momentum)  # k <- m k + (1 - m) q

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, dense_keys) -> None:
        """Write the whole global batch of keys into the queues (wrapping around) and advance the pointer."""
        keys = du.concat_all_gather(keys)
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue.shape[1]
        self.queue[:, slots] = keys.T.to(self.queue.dtype)
        if dense_keys is not None:
            self.queue_dense[:, slots] = du.concat_all_gather(dense_keys).T.to(self.queue_dense.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % self.queue.shape[1])

    def shuffle_keys(self) -> bool:
        # Shuffle-BN (MoCo): keys batch-normalised with other processes' images, so BN cannot leak which
        # query goes with which key. Pointless in one process; replaced by SyncBN when that is chosen.
        return du.world_size() > 1 and not self.cfg.MODEL.SYNC_BN

    @torch.no_grad()
    def encode_keys(self, im_k: torch.Tensor, stages: Tuple[str, ...]):
        if not self.shuffle_keys():
            return self.encoder_k(im_k, stages)
        gathered = du.concat_all_gather(im_k)
        order = du.broadcast_(torch.randperm(gathered.shape[0], device=im_k.device))
        mine = order.view(du.world_size(), -1)[du.rank()]
        *outputs, found = self.encoder_k(gathered[mine], stages)
        back = torch.argsort(order).view(du.world_size(), -1)[du.rank()]

        def unshuffle(o):
            return None if o is None else du.concat_all_gather(o)[back]
        return (*map(unshuffle, outputs), {name: unshuffle(o) for name, o in found.items()})

    def dense_loss(self, d_q, d_k, positives: Positives):
        """DenseCL's loss over the query cells that have a positive; fp32 inputs, called with autocast off."""
        r, t = d_q.flatten(2), d_k.flatten(2)                       # [N, D, Lq], [N, D, Lk]
        if positives.index is not None:
            index = positives.index.clamp(min=0).unsqueeze(1).expand(-1, t.shape[1], -1)
            l_pos = (r * torch.gather(t, 2, index)).sum(dim=1)         # [N, Lq]
        else:  # several positives (threshold): their logits are averaged
            mask = positives.mask
            l_pos = (torch.einsum("ndq,ndk->nqk", r, t) * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        valid = positives.valid()
        mode = self.cfg.MODEL.DENSE_NEGATIVES
        negatives = [torch.einsum("ndq,dk->nqk", r, self.queue_dense.clone().detach())] if "queue" in mode else []
        if "view" in mode:  # the diagnostic option: the other key cells of the same view as negatives too
            same = torch.einsum("ndq,ndk->nqk", r, t)                   # [N, Lq, Lk]
            chosen = positives.mask if positives.index is None else F.one_hot(
                positives.index.clamp(min=0), t.shape[-1]).bool()
            negatives.append(same.masked_fill(chosen, float("-inf")))  # a positive is never its own negative
        losses = info_nce(l_pos, torch.cat(negatives, dim=-1), self.temperature)
        count = valid.sum().clamp(min=1)
        return (losses * valid).sum() / count, (l_pos.detach() * valid).sum() / count

    @torch.no_grad()
    def matching_diagnostics(self, c5_q, c5_k, views, positives: Optional[Positives]) -> Dict[str, torch.Tensor]:
        """Within-one-cell matching accuracy on these features: ``acc_<name>`` of every appearance-based matcher
        (the run's own pick reused, not recomputed) and ``acc_positives`` of the run's own positives."""
        truth = true_partners(views["box_q"], views["flip_q"], tuple(c5_q.shape[-2:]), views["box_k"],
                              views["flip_k"], tuple(c5_k.shape[-2:]))
        out = {}
        for name in self.diagnosed:
            mine = positives if name == self.cfg.MODEL.MATCHER and positives is not None else None
            pick = mine or MATCHERS[name](c5_q, c5_k, views, self.match_options[name])
            out[f"acc_{name}"] = positives_accuracy(pick, truth, c5_k.shape[-1])
        if positives is not None:
            out["acc_positives"] = positives_accuracy(positives, truth, c5_k.shape[-1])
        return out

    def forward(self, batch: Dict[str, torch.Tensor], lam: float, diagnostics: bool = False):
        """Named losses (``total_loss`` is the one to minimise) and, when ``diagnostics`` (and MODEL.DIAGNOSTICS)
        are on, the matching accuracy of argmax and of Hough on this batch's C5 features.

        The encoders run in the ambient precision (autocast under AMP); everything after them in fp32."""
        stages = self.diagnostic_stages if diagnostics else self.stages
        c5_q, g_q, d_q, _, found_q = self.encoder_q(batch["view_q"], stages)
        with torch.no_grad():
            self.momentum_update()
            c5_k, g_k, d_k, pooled_k, found_k = self.encode_keys(batch["view_k"], stages)
        with full_precision(c5_q.device):
            views = {**batch, "stages_q": {k: v.detach().float() for k, v in found_q.items()},
                     "stages_k": {k: v.float() for k, v in found_k.items()}}
            out = self.losses(c5_q.detach().float(), g_q, d_q, c5_k.float(), g_k, d_k, views, lam, diagnostics)
        self.enqueue(g_k, pooled_k)
        return out

    def losses(self, c5_q, g_q, d_q, c5_k, g_k, d_k, views, lam: float, diagnostics: bool) -> Dict:
        out = {}
        l_pos = (g_q * g_k).sum(dim=1)
        out["loss_global"] = info_nce(l_pos, g_q @ self.queue.clone().detach(), self.temperature).mean()
        out["pos_sim_global"] = l_pos.detach().mean()
        positives = None
        if self.dense:
            positives = self.matcher(c5_q, c5_k, views, self.match_options[self.matcher.name])
            out["loss_dense"], out["pos_sim_dense"] = self.dense_loss(d_q, d_k, positives)
            out.update(positives.stats)
            out["total_loss"] = (1 - lam) * out["loss_global"] + lam * out["loss_dense"]
        else:
            out["total_loss"] = out["loss_global"]
        if diagnostics and self.cfg.MODEL.DIAGNOSTICS:
            out.update(self.matching_diagnostics(c5_q, c5_k, views, positives))
        return out


def describe(cfg) -> str:
    """The method a config trains, in words."""
    if cfg.MODEL.LOSS_LAMBDA == 0:
        return "MoCo-v2"
    method = describe_matcher(cfg.MODEL.MATCHER)
    node = cfg.MODEL.get(get_matcher(cfg.MODEL.MATCHER).config_key)
    if cfg.MODEL.MATCHER == "hough":
        method += f", {describe_options(options_from_cfg(cfg.MODEL, 'hough'))}"
    elif node is not None and "SPACE" in node:
        method += f", {node.SPACE} space"
    if cfg.MODEL.MATCHER == "hough_transform":
        method += f", voted on {node.LAYER}"
    return f"{method}, lambda {cfg.MODEL.LOSS_LAMBDA}"
