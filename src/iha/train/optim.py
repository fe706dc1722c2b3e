"""The paper's optimiser: AdamW (0.9, 0.95, wd 0.1), linear warmup, cosine decay to 1% of peak.

Parameter grouping (weight decay on weight matrices only; norms, biases and the IHA mixing
parameters without decay; mixing parameters optionally at their own learning rate) is
:func:`iha.optim.param_groups`, shared with every other user of the package.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from iha.optim import param_groups
from iha.train.config import OptimConfig
from iha.validate import check_int


class WarmupCosine:
    """Learning-rate multiplier: linear warmup, then cosine from 1 to ``min_ratio``.

    ``factor(s) = (s + 1) / warmup`` for ``s < warmup`` (so the first step already moves), then
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2`` with
    ``t = (s - warmup) / (total - warmup)`` clamped to [0, 1]: the rate reaches
    ``min_ratio * peak`` at step ``total`` and stays there.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        check_int("warmup_steps", warmup_steps, 0)
        check_int("total_steps", total_steps, 1)
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"min_ratio={min_ratio} must be in [0, 1]")
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, max_steps: int, fused: bool | None = None
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over :func:`iha.optim.param_groups` and its warmup-cosine scheduler."""
    groups = param_groups(model, cfg.weight_decay, cfg.mixing_lr)
    beta1, beta2 = cfg.betas
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(beta1, beta2), eps=cfg.eps, fused=fused)
    schedule = WarmupCosine(cfg.warmup_steps, max_steps, cfg.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return optimizer, scheduler
