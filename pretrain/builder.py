"""The whole model: MoCo-v2, DenseCL, PixPro-style and HoughCL differ only in LOSS_LAMBDA and MATCHER.

A query encoder and its momentum copy (the key encoder), each a torchvision ResNet with a global head and a
dense head; two queues of negatives. The dense loss pulls each query location towards ONE key location
chosen by the matcher, which looks at the backbone C5 features of both views (as DenseCL does).
"""
import copy
import dataclasses
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from . import distributed as du
from .backbone import resnet_features, resnet_stages
from .geometry import matching_hits, true_partners
from .matching import MATCHERS, METHODS, MatchOptions, Positives


def full_precision(device: torch.device):
    """Autocast off: matching, positives and contrastive logits are decided in fp32 whatever the backbone ran
    in (a bf16 ``bmm`` flips a few percent of the positives and moves cosines by up to 0.06)."""
    return torch.autocast(device_type=device.type, enabled=False)


class Encoder(nn.Module):
    """ResNet trunk (torchvision names, no ``fc``) + global MLP head + dense 1x1-conv head."""

    def __init__(self, depth: int, dim: int = 128, hidden: int = 0, dense: bool = True, vote_layer: str = "layer4"):
        super().__init__()
        self.vote_layer = vote_layer  # a finer stage that Hough voting reads (pretrain/voting.py), or layer4
        self.backbone = torchvision.models.__dict__[f"resnet{depth}"](weights=None)
        width = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()  # the state_dict of .backbone is a plain ResNet's without fc
        hidden = hidden or width
        self.global_head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.dense_head = nn.Sequential(nn.Conv2d(width, hidden, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(hidden, dim, 1)) if dense else None

    def c5(self, x: torch.Tensor) -> torch.Tensor:
        return resnet_features(self.backbone, x, "layer4")

    def forward(self, x: torch.Tensor):
        """Returns C5 ``[N, W, S, S]``, the global vector ``[N, D]``, the dense map ``[N, D, S, S]`` and its
        average-pooled vector ``[N, D]`` (pooled before normalisation), all normalised; dense ones None
        without a dense head; and the features of ``vote_layer`` (None when that is C5 itself). The heads run
        in the ambient precision; their outputs are normalised in fp32."""
        stages = resnet_stages(self.backbone, x, ("layer4",) if self.vote_layer == "layer4" else
                               (self.vote_layer, "layer4"))
        c5, vote = stages["layer4"], stages.get(self.vote_layer) if self.vote_layer != "layer4" else None
        g = F.normalize(self.global_head(torch.flatten(F.adaptive_avg_pool2d(c5, 1), 1)).float(), dim=1)
        if self.dense_head is None:
            return c5, g, None, None, vote
        d = self.dense_head(c5).float()
        pooled = F.normalize(F.adaptive_avg_pool2d(d, 1).flatten(1), dim=1)
        return c5, g, F.normalize(d, dim=1), pooled, vote


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
        # Only the matcher that votes on a finer stage needs that stage's features out of the encoders.
        votes_finer = self.dense and m.MATCHER == "hough" and m.HOUGH.SELECT == "transform"
        self.encoder_q = Encoder(m.DEPTH, m.DIM, m.HIDDEN_DIM, dense=self.dense,
                                 vote_layer=m.HOUGH.LAYER if votes_finer else "layer4")
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(m.DIM, m.QUEUE_SIZE), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        if self.dense:
            self.register_buffer("queue_dense", F.normalize(torch.randn(m.DIM, m.QUEUE_SIZE), dim=0))
        self.matcher = MATCHERS[m.MATCHER]
        self.match_options = MatchOptions.from_cfg(m)

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
    def encode_keys(self, im_k: torch.Tensor):
        if not self.shuffle_keys():
            return self.encoder_k(im_k)
        gathered = du.concat_all_gather(im_k)
        order = du.broadcast_(torch.randperm(gathered.shape[0], device=im_k.device))
        mine = order.view(du.world_size(), -1)[du.rank()]
        outputs = self.encoder_k(gathered[mine])
        back = torch.argsort(order).view(du.world_size(), -1)[du.rank()]
        return tuple(None if o is None else du.concat_all_gather(o)[back] for o in outputs)

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
        l_neg = torch.einsum("ndq,dk->nqk", r, self.queue_dense.clone().detach())
        losses = info_nce(l_pos, l_neg, self.temperature)
        count = valid.sum().clamp(min=1)
        return (losses * valid).sum() / count, (l_pos.detach() * valid).sum() / count

    @torch.no_grad()
    def matching_diagnostics(self, c5_q, c5_k, views, positives: Positives) -> Dict[str, torch.Tensor]:
        """Matching accuracy of argmax and Hough on these features (the matcher's own pick reused)."""
        truth = true_partners(views["box_q"], views["flip_q"], tuple(c5_q.shape[-2:]), views["box_k"],
                              views["flip_k"], tuple(c5_k.shape[-2:]))
        out = {}
        for name in ("argmax", "hough"):
            mine = name == self.cfg.MODEL.MATCHER and positives is not None
            options = self.match_options
            if name == "hough" and not mine and "vote_q" not in views:
                options = MatchOptions(dataclasses.replace(options.hough, select="confidence"), options.threshold)
            pick = positives.index if mine else MATCHERS[name](c5_q, c5_k, views, options).index
            hits, counted = matching_hits(pick, truth, c5_k.shape[-1])
            out[f"acc_{name}"] = hits.float() / counted.clamp(min=1).float()
        return out

    def forward(self, batch: Dict[str, torch.Tensor], lam: float, diagnostics: bool = False):
        """Named losses (``total_loss`` is the one to minimise) and, when ``diagnostics`` (and MODEL.DIAGNOSTICS)
        are on, the matching accuracy of argmax and of Hough on this batch's C5 features.

        The encoders run in the ambient precision (autocast under AMP); everything after them in fp32."""
        c5_q, g_q, d_q, _, vote_q = self.encoder_q(batch["view_q"])
        with torch.no_grad():
            self.momentum_update()
            c5_k, g_k, d_k, pooled_k, vote_k = self.encode_keys(batch["view_k"])
        with full_precision(c5_q.device):
            views = batch if vote_q is None else {**batch, "vote_q": vote_q.detach().float(),
                                                  "vote_k": vote_k.float()}
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
            positives = self.matcher(c5_q, c5_k, views, self.match_options)
            out["loss_dense"], out["pos_sim_dense"] = self.dense_loss(d_q, d_k, positives)
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
    method = METHODS[cfg.MODEL.MATCHER]
    if cfg.MODEL.MATCHER == "hough":
        h = cfg.MODEL.HOUGH
        method += f" ({h.SPACE}" + (f", transform voted on {h.LAYER})" if h.SELECT == "transform" else ")")
    return f"{method}, lambda {cfg.MODEL.LOSS_LAMBDA}"
