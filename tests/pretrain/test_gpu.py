"""The GPU path, run by tools/gpu_check.sh on a machine with CUDA (skipped cleanly without): mixed precision
against fp32, DDP over NCCL through torchrun, resume on the GPU."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from pretrain.builder import ContrastiveModel, Encoder
from pretrain.config import load_config
from pretrain.engine import amp_dtype, autocast_context, train_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
PYTHON = sys.executable


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
TINY = os.path.join(ROOT, "configs/pretrain/tiny_r18_cpu.yaml")


def gpu_cfg(image_folder, *opts):
    return load_config(TINY, ["DATA.ROOT", image_folder, "DEVICE", "cuda", "INPUT.SIZE", 224, "MODEL.QUEUE_SIZE", 256,
                              "SOLVER.BATCH_SIZE", 16, *opts])


def synthetic_batch(n=16, size=224):
    g = torch.Generator().manual_seed(0)
    view_q = torch.randn(n, 3, size, size, generator=g)
    box = torch.tensor([[0.0, 0.0, 2.0 * size, 2.0 * size]]).repeat(n, 1)
    batch = {"view_q": view_q, "view_k": view_q.flip(-1).roll(13, -2), "box_q": box, "box_k": box,
             "flip_q": torch.zeros(n, dtype=torch.bool), "flip_k": torch.ones(n, dtype=torch.bool)}
    return {k: v.cuda() for k, v in batch.items()}


@pytest.mark.parametrize("matcher", ["argmax", "hough"])
def test_bf16_on_gpu_keeps_positives_and_logits_fp32(image_folder, monkeypatch, matcher):
    forward = Encoder.forward

    def fp32_encoder(self, x):  # encoders in fp32: any difference would come from matching or logits
        with torch.autocast("cuda", enabled=False):
            return forward(self, x)

    monkeypatch.setattr(Encoder, "forward", fp32_encoder)
    seen = {}
    dense_loss = ContrastiveModel.dense_loss

    def record(self, d_q, d_k, positives):
        seen.setdefault("positives", []).append(positives.index.clone())
        return dense_loss(self, d_q, d_k, positives)

    monkeypatch.setattr(ContrastiveModel, "dense_loss", record)
    torch.manual_seed(0)
    model = ContrastiveModel(gpu_cfg(image_folder, "MODEL.MATCHER", matcher)).cuda().eval()
    batch = synthetic_batch()
    outs = []
    for enabled in (False, True):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled):
            outs.append(model(batch, lam=0.5, diagnostics=True))
    assert torch.equal(seen["positives"][0], seen["positives"][1])
    for name in ("loss_global", "loss_dense", "total_loss"):
        assert outs[1][name].dtype == torch.float32
        torch.testing.assert_close(outs[1][name], outs[0][name], atol=1e-3, rtol=0)


def test_real_amp_step_is_finite_and_close_to_fp32(image_folder):
    losses = {}
    for amp in ("off", "bf16", "fp16"):
        cfg = gpu_cfg(image_folder, "SOLVER.AMP", amp)
        torch.manual_seed(0)
        model = ContrastiveModel(cfg).cuda()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        autocast, scaler = autocast_context(amp_dtype(cfg, torch.device("cuda")))
        out = train_step(model, synthetic_batch(), optimizer, scaler, autocast, 0.5)
        losses[amp] = float(out["total_loss"])
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert abs(losses["bf16"] - losses["off"]) < 0.05 * abs(losses["off"]), losses


def torchrun(nproc, out, image_folder, *extra):
    return subprocess.run([PYTHON, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
                           os.path.join(TOOLS, "pretrain_net.py"), "--config-file", TINY, "DATA.ROOT", image_folder,
                           "DEVICE", "cuda", "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2, "OUTPUT_DIR", out,
                           "SOLVER.BATCH_SIZE", 2, *map(str, extra)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.mark.parametrize("nproc", [1, 2])
def test_ddp_over_nccl_through_torchrun(image_folder, tmp_path, nproc):
    if torch.cuda.device_count() < nproc:
        pytest.skip(f"needs {nproc} GPUs")
    result = torchrun(nproc, tmp_path / "ddp", image_folder)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"world size {nproc}" in result.stdout
    rows = [json.loads(line) for line in open(tmp_path / "ddp" / "metrics.jsonl")]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert (tmp_path / "ddp" / "backbone.pth").exists()


def test_resume_on_gpu(image_folder, tmp_path):
    full = torchrun(1, tmp_path / "full", image_folder, "SEED", 3)
    assert full.returncode == 0, full.stderr[-3000:]
    part = tmp_path / "part"  # the same run, stopped after its checkpoint at iteration 2
    part.mkdir()
    shutil.copy(tmp_path / "full" / "model_0000002.pth", part)
    shutil.copy(tmp_path / "full" / "config.yaml", part)
    (part / "last_checkpoint").write_text("model_0000002.pth")
    rows = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
    (part / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    resumed = torchrun(1, part, image_folder, "SEED", 3, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = [json.loads(line) for line in open(part / "metrics.jsonl")]
    assert [r["iteration"] for r in again] == [1, 2, 3, 4]
    # cuDNN picks its algorithms per run: equal to within its nondeterminism, not bit for bit.
    for x, y in zip(rows[2:], again[2:]):
        assert abs(x["total_loss"] - y["total_loss"]) < 1e-2 * abs(x["total_loss"]), (x, y)
