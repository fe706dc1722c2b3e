"""Optimizer parameter groups: weight decay on matrices only, mixing parameters on their own."""

from __future__ import annotations

from torch import nn

from iha.validate import check_number, check_positive_number

MIXING_NAMES = ("alpha_q", "alpha_k", "alpha_v", "collapse")


def is_mixing_parameter(name: str, param: nn.Parameter) -> bool:
    """IHA mixing parameters (alphas, collapse) and any parameter tagged ``_iha_mixing``."""
    return name.rsplit(".", 1)[-1] in MIXING_NAMES or getattr(param, "_iha_mixing", False)


def param_groups(
    model: nn.Module, weight_decay: float, mixing_lr: float | None = None
) -> list[dict]:
    """AdamW parameter groups.

    - ``decay``: weight matrices (dim >= 2) that are not mixing parameters, with ``weight_decay``;
    - ``no_decay``: norms, biases and other vectors, no weight decay;
    - ``mixing``: the IHA mixing parameters (alphas, collapse), no weight decay, and learning rate
      ``mixing_lr`` when given (otherwise the optimizer's).
    Empty groups are left out. Each group carries a ``name`` key for logging. Parameters with
    ``requires_grad=False`` are left out.

    Args:
        model (nn.Module): any module; IHA mixing parameters are found by name (``alpha_q``,
            ``alpha_k``, ``alpha_v``, ``collapse``) or by the ``_iha_mixing`` tag.
        weight_decay (float): decay of the ``decay`` group, >= 0.
        mixing_lr (float, optional): learning rate of the ``mixing`` group, > 0. Default:
            ``None`` (the optimizer's).

    Returns:
        list[dict]: ``torch.optim`` parameter groups.

    Example::

        >>> import torch
        >>> from iha import InterleavedHeadAttention, param_groups
        >>> layer = InterleavedHeadAttention(16, 2, n_pseudo=2)
        >>> groups = param_groups(layer, weight_decay=0.1, mixing_lr=1e-3)
        >>> [(g["name"], len(g["params"])) for g in groups]
        [('decay', 4), ('mixing', 4)]
        >>> optimizer = torch.optim.AdamW(groups, lr=3e-4)
    """
    check_number("weight_decay", weight_decay, 0)
    if mixing_lr is not None:
        check_positive_number("mixing_lr", mixing_lr)
    decay, no_decay, mixing = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if is_mixing_parameter(name, p):
            mixing.append(p)
        elif p.dim() >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
        {"name": "mixing", "params": mixing, "weight_decay": 0.0},
    ]
    if mixing_lr is not None:
        groups[2]["lr"] = mixing_lr
    return [g for g in groups if g["params"]]
