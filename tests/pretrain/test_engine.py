"""pretrain/engine.py: the schedules the loop reads, against torch's own schedulers."""
import math

import pytest
import torch

from pretrain.config import load_config
from pretrain.engine import Schedule


def test_cosine_decay_equals_torchs_cosine_annealing():
    schedule = Schedule(base_lr=0.3, max_iter=50)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50, eta_min=0.0)
    for iteration in range(50):
        expected = optimizer.param_groups[0]["lr"]
        assert schedule.learning_rate(iteration) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        optimizer.step()
        reference.step()


def test_warm_up_is_linear_then_cosine_from_the_base_rate():
    schedule = Schedule(base_lr=1.0, max_iter=110, warmup_iters=10)
    assert [schedule.learning_rate(i) for i in range(10)] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert schedule.learning_rate(10) == 1.0
    assert schedule.learning_rate(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_the_dense_loss_weight_waits_for_its_warm_up_and_comes_from_the_config():
    cfg = load_config("", ["MODEL.LOSS_LAMBDA", "0.7", "MODEL.LAMBDA_WARMUP_ITERS", "3", "SOLVER.LOG_PERIOD", "4"])
    schedule = Schedule.from_cfg(cfg, base_lr=0.1, max_iter=20)
    assert [schedule.lam(i) for i in range(5)] == [0.0, 0.0, 0.0, 0.7, 0.7]
    assert (schedule.log_period, schedule.max_iter) == (4, 20)
    assert schedule.checkpoint_period == cfg.SOLVER.CHECKPOINT_PERIOD
