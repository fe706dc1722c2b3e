"""The paper's optimiser recipe: schedule shape, parameter groups, AdamW settings."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from iha.train.config import OptimConfig
from iha.train.optim import WarmupCosine, build_optimizer


def test_warmup_is_linear_and_reaches_the_peak():
    s = WarmupCosine(warmup_steps=10, total_steps=100, min_ratio=0.01)
    assert [s(i) for i in range(10)] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert s(10) == pytest.approx(1.0)


def test_cosine_ends_at_one_percent_of_peak_and_passes_the_midpoint():
    s = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.01)
    assert s(60) == pytest.approx((1 + 0.01) / 2)  # half way through the decay
    assert s(110) == pytest.approx(0.01)
    assert s(500) == pytest.approx(0.01)  # stays at the floor past the end
    decay = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_no_warmup_starts_at_the_peak():
    assert WarmupCosine(0, 50, 0.1)(0) == pytest.approx(1.0)


class _WithMixing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)  # weight decayed, bias not
        self.norm = nn.LayerNorm(4)  # not decayed
        self.alpha_q = nn.Parameter(torch.ones(2, 2, 2))  # mixing: not decayed, own lr


def test_weight_decay_only_on_matrices_and_mixing_lr_follows_the_schedule():
    model = _WithMixing()
    cfg = OptimConfig(lr=1e-3, warmup_steps=4, mixing_lr=1e-2)
    opt, sched = build_optimizer(model, cfg, max_steps=20)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model.proj.weight)]["weight_decay"] == pytest.approx(0.1)
    for p in (model.proj.bias, model.norm.weight, model.norm.bias, model.alpha_q):
        assert by_param[id(p)]["weight_decay"] == 0.0
    assert opt.defaults["betas"] == (0.9, 0.95)
    # first step: lr = peak / warmup for every group, each at its own peak
    assert by_param[id(model.proj.weight)]["lr"] == pytest.approx(1e-3 / 4)
    assert by_param[id(model.alpha_q)]["lr"] == pytest.approx(1e-2 / 4)
    for _ in range(20):
        opt.step()
        sched.step()
    assert by_param[id(model.proj.weight)]["lr"] == pytest.approx(1e-5)
    assert by_param[id(model.alpha_q)]["lr"] == pytest.approx(1e-4)
    assert not math.isnan(model.alpha_q.sum().item())
