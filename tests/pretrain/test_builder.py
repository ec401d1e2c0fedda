"""One model step at world size 1, the MoCo-v2 special case against an independent loss, and two processes."""
import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from pretrain.builder import ContrastiveModel
from pretrain.config import load_config
from pretrain.data.images import TwoViewDataset
from pretrain.data.transforms import TwoViewTransform
from pretrain.engine import epoch_loader
from pretrain.runtime import distributed as du

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_cfg(image_folder, *opts):
    return load_config(os.path.join(ROOT, "configs/pretrain/tiny_r18_cpu.yaml"),
                       ["DATA.ROOT", image_folder, "MODEL.QUEUE_SIZE", 16, "INPUT.SIZE", 96, *opts])


def first_batch(cfg, world=1, rank=0):
    dataset = TwoViewDataset(cfg.DATA.ROOT, TwoViewTransform(cfg.INPUT.SIZE), seed=cfg.SEED)
    return next(iter(epoch_loader(cfg, dataset, epoch=0, start_batch=0, world=world, rank=rank)))


@pytest.mark.parametrize("matcher", ["argmax", "hough", "hough_transform", "threshold", "geometric"])
def test_one_step(image_folder, matcher):
    cfg = make_cfg(image_folder, "MODEL.MATCHER", matcher, "MODEL.MOMENTUM", 0.9)
    torch.manual_seed(0)
    model = ContrastiveModel(cfg)
    batch = first_batch(cfg)
    # Make the two encoders differ so that the EMA has something to move.
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(0.01 * torch.randn_like(p))
    q_before = [p.clone() for p in model.encoder_q.parameters()]
    k_before = [p.clone() for p in model.encoder_k.parameters()]
    out = model(batch, lam=0.5, diagnostics=True)
    for name in ("total_loss", "loss_global", "loss_dense", "acc_argmax", "acc_hough", "acc_hough_transform",
                 "acc_positives", "pos_sim_dense"):
        assert torch.isfinite(out[name]), name
    torch.testing.assert_close(out["total_loss"], 0.5 * out["loss_global"] + 0.5 * out["loss_dense"])
    assert model.queue_ptr.item() == 4
    for k_new, k_old, q in zip(model.encoder_k.parameters(), k_before, q_before):
        torch.testing.assert_close(k_new, 0.9 * k_old + 0.1 * q)
    # The keys in the queue come from the momentum encoder (after its update), not the query encoder.
    with torch.no_grad():
        _, keys, _, pooled, _ = model.encoder_k(batch["view_k"])
        _, queries, _, _, _ = model.encoder_q(batch["view_k"])
    torch.testing.assert_close(model.queue[:, :4].T, keys, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.queue_dense[:, :4].T, pooled, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(model.queue[:, :4].T, queries, atol=1e-3)
    out["total_loss"].backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert model.encoder_q.dense_head[0].weight.grad.abs().sum() > 0


def test_diagnostics_name_the_same_matcher_in_every_run(image_folder):
    # The same weights and batch under every matcher: acc_<name> must not depend on which matcher trains.
    outs = {}
    for matcher in ("argmax", "hough", "hough_transform", "threshold"):
        cfg = make_cfg(image_folder, "MODEL.MATCHER", matcher)
        torch.manual_seed(0)
        model = ContrastiveModel(cfg).eval()
        outs[matcher] = model(first_batch(cfg), lam=0.5, diagnostics=True)
    for name in ("acc_argmax", "acc_hough", "acc_hough_transform"):
        values = {matcher: float(out[name]) for matcher, out in outs.items()}
        assert max(values.values()) - min(values.values()) < 1e-6, (name, values)
    for matcher in ("argmax", "hough", "hough_transform"):
        assert float(outs[matcher]["acc_positives"]) == float(outs[matcher][f"acc_{matcher}"])
    assert 0.0 < float(outs["threshold"]["acc_positives"]) <= 1.0
    assert 0.0 <= float(outs["hough_transform"]["outside_share"]) <= 1.0
    assert "outside_share" not in outs["hough"]


def test_queue_wraps_around(image_folder):
    cfg = make_cfg(image_folder, "MODEL.QUEUE_SIZE", 6)
    model = ContrastiveModel(cfg)
    keys = F.normalize(torch.randn(4, 128), dim=1)
    model.enqueue(keys, keys)
    model.enqueue(keys, keys)
    assert model.queue_ptr.item() == 2
    torch.testing.assert_close(model.queue[:, [4, 5, 0, 1]].T, keys)


def test_lambda_zero_is_mocov2(image_folder):
    cfg = make_cfg(image_folder, "MODEL.LOSS_LAMBDA", 0.0)
    torch.manual_seed(1)
    model = ContrastiveModel(cfg)
    assert model.encoder_q.dense_head is None and not hasattr(model, "queue_dense")
    batch = first_batch(cfg)
    encoder_q, encoder_k = copy.deepcopy(model.encoder_q), copy.deepcopy(model.encoder_k)
    queue = model.queue.clone()
    out = model(batch, lam=0.0)
    # MoCo-v2 written out: EMA, then q against [k+, queue] at temperature 0.2, cross-entropy on index 0.
    with torch.no_grad():
        for pk, pq in zip(encoder_k.parameters(), encoder_q.parameters()):
            pk.mul_(cfg.MODEL.MOMENTUM).add_(pq, alpha=1 - cfg.MODEL.MOMENTUM)

    def embed(encoder, images):
        b = encoder.backbone
        feats = torch.flatten(F.adaptive_avg_pool2d(b.layer4(b.layer3(b.layer2(b.layer1(
            b.maxpool(b.relu(b.bn1(b.conv1(images)))))))), 1), 1)
        return F.normalize(encoder.global_head(feats), dim=1)

    q = embed(encoder_q, batch["view_q"])
    with torch.no_grad():
        k = embed(encoder_k, batch["view_k"])
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / 0.2
    expected = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
    torch.testing.assert_close(out["total_loss"], expected, rtol=1e-5, atol=1e-5)
    assert "loss_dense" not in out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_process_worker(rank, port, image_folder, result_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    du.init_distributed_mode("cpu")
    cfg = make_cfg(image_folder, "MODEL.MATCHER", "hough")
    torch.manual_seed(0)
    model = ContrastiveModel(cfg)
    own_keys = []
    enqueue = model.enqueue
    model.enqueue = lambda keys, dense: (own_keys.append(keys.clone()), enqueue(keys, dense))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    out = ddp(first_batch(cfg, world=2, rank=rank), lam=0.5)
    out["total_loss"].backward()
    torch.save({"queue": model.queue.clone(), "ptr": model.queue_ptr.clone(), "keys": own_keys[0],
                "loss": out["total_loss"].detach(),
                "grad": model.encoder_q.backbone.conv1.weight.grad.clone()}, os.path.join(result_dir, f"{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_fill_queues_with_gathered_keys(image_folder, tmp_path):
    mp.spawn(_two_process_worker, args=(_free_port(), image_folder, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert r0["ptr"].item() == r1["ptr"].item() == 8
    gathered = torch.cat([r0["keys"], r1["keys"]])
    torch.testing.assert_close(r0["queue"][:, :8].T, gathered)
    torch.testing.assert_close(r1["queue"][:, :8].T, gathered)
    assert torch.isfinite(r0["loss"]) and torch.isfinite(r1["loss"])
    torch.testing.assert_close(r0["grad"], r1["grad"])  # DDP averaged the gradients


@pytest.mark.parametrize("mode", ["queue", "queue+view", "view"])
def test_the_dense_negatives_option_against_a_per_cell_reference(image_folder, mode):
    """MODEL.DENSE_NEGATIVES (a labelled diagnostic, not the paper's loss): the same-view key cells other than
    the positive(s) join the queue's negatives, or replace them; checked cell by cell in float64."""
    from pretrain.matchers import Positives
    cfg = make_cfg(image_folder, "MODEL.DENSE_NEGATIVES", mode)
    model = ContrastiveModel(cfg)
    g = torch.Generator().manual_seed(0)
    d_q = F.normalize(torch.randn(2, 128, 2, 3, generator=g), dim=1)
    d_k = F.normalize(torch.randn(2, 128, 3, 2, generator=g), dim=1)
    index = torch.tensor([[0, 5, 2, -1, 3, 1], [4, 4, 0, 1, 2, 5]])
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[0, 0, [0, 1]] = mask[0, 1, 5] = mask[1, :, 2] = True
    queue, temperature = model.queue_dense.double(), cfg.MODEL.TEMPERATURE
    r, t = d_q.flatten(2).double(), d_k.flatten(2).double()
    for positives in (Positives(index=index), Positives(mask=mask)):
        loss, _ = model.dense_loss(d_q, d_k, positives)
        losses = []
        for n in range(2):
            for q in range(6):
                chosen = [int(index[n, q])] if positives.index is not None else mask[n, q].nonzero()[:, 0].tolist()
                if chosen in ([], [-1]):
                    continue
                pos = sum(float(r[n, :, q] @ t[n, :, j]) for j in chosen) / len(chosen)
                negs = [float(r[n, :, q] @ queue[:, k]) for k in range(queue.shape[1])] if "queue" in mode else []
                if "view" in mode:
                    negs += [float(r[n, :, q] @ t[n, :, j]) for j in range(6) if j not in chosen]
                logits = torch.tensor([pos] + negs, dtype=torch.float64) / temperature
                losses.append(float(torch.logsumexp(logits, 0) - logits[0]))
        assert float(loss) == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    if mode == "view":  # a wrong positive from the same image now costs: the true one is a negative against it
        same = d_k.reshape(2, 128, 2, 3)  # query cell q is key cell q
        right, _ = model.dense_loss(same, d_k, Positives(index=torch.arange(6).repeat(2, 1)))
        wrong, _ = model.dense_loss(same, d_k, Positives(index=torch.arange(6).roll(1).repeat(2, 1)))
        assert float(right) < float(wrong)
