"""The paper's Polynomial-filter task: from X and a full-rank A, compute [X, AX, ..., A^(k-1) X].

:func:`filter_bank` is the target map. :class:`PolynomialTask` is a regression dataset with
one-hot positions, ``X_hat = [X, I_N]``, the input of the paper's linear-attention construction.

Feature layout of :class:`PolynomialTask` (``input_kind="features"``, no tokens):

* ``operator="fixed"`` (the paper's setting: A lives in the weights): one full-rank A per task
  instance (drawn from the task seed, ``task.operator``); ``inputs[b, n] = [X[b, n], e_n]``,
  width ``d + N``.
* ``operator="per_example"``: a fresh full-rank A per example, given to the model as row
  features; ``inputs[b, n] = [X[b, n], A[b, n, :], e_n]``, width ``d + 2N``. One layer of
  linear attention cannot compute A^2 X from this input; the mode is for deeper models.
* ``targets[b, n] = [X, AX, ..., A^(k-1) X][b, n]``, width ``k * d``; ``loss_mask`` all True.

A is Gaussian rescaled to spectral norm 1 (so powers stay bounded) and redrawn until its
condition number is below 1e6 (so it is full rank in floating point, not just almost surely).
"""

from __future__ import annotations

import torch
from torch import Tensor

from iha.tasks.base import SyntheticTask, TaskBatch, make_generator
from iha.validate import check_choice, check_int

OPERATOR_MODES: tuple[str, ...] = ("fixed", "per_example")
_MAX_CONDITION = 1e6


def filter_bank(a: Tensor, x: Tensor, k: int) -> Tensor:
    """``[X, AX, ..., A^(k-1) X]`` concatenated along the last dimension.

    Args:
        a: (..., N, N) operator.
        x: (..., N, d) signal (batch dimensions broadcast with ``a``'s).
        k: number of powers, >= 1.

    Returns:
        (..., N, k*d); block j (columns j*d..(j+1)*d-1) is A^j X.
    """
    check_int("k", k, 1)
    if a.dim() < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"a has shape {tuple(a.shape)}; accepted: (..., N, N)")
    if x.dim() < 2 or x.shape[-2] != a.shape[-1]:
        raise ValueError(
            f"x has shape {tuple(x.shape)}; accepted: (..., N, d) with N={a.shape[-1]}"
        )
    blocks = [x]
    for _ in range(k - 1):
        blocks.append(a @ blocks[-1])  # (..., N, d)
    return torch.cat(blocks, dim=-1)


def random_full_rank(
    n: int, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> Tensor:
    """(n, size, size) Gaussian matrices with spectral norm 1 and condition number < 1e6."""
    check_int("size", size, 1)
    out = torch.empty(n, size, size, dtype=torch.float64)
    todo = torch.arange(n)
    while len(todo):
        draw = torch.randn(len(todo), size, size, generator=generator, dtype=torch.float64)
        sv = torch.linalg.svdvals(draw)  # (m, size), descending
        good = sv[:, -1] * _MAX_CONDITION > sv[:, 0]
        out[todo[good]] = draw[good] / sv[good, :1, None]
        todo = todo[~good]
    return out.to(dtype)


class PolynomialTask(SyntheticTask):
    """Regression on the polynomial filter bank (see the module docstring for the layout).

    Args:
        n_tokens: N.
        d: width of X.
        k: number of powers in the target.
        operator: "fixed" (one A per task, the paper's construction) or "per_example".
        dtype: float dtype of inputs and targets.
        seed: base seed.
        split_sizes: examples per split (None: streaming).
    """

    name = "polynomial"
    input_kind = "features"
    output = "regression"

    def __init__(
        self,
        n_tokens: int = 8,
        d: int = 2,
        k: int = 4,
        *,
        operator: str = "fixed",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        split_sizes: dict[str, int | None] | None = None,
    ) -> None:
        self.n_tokens = check_int("n_tokens", n_tokens, 1)
        self.d = check_int("d", d, 1)
        self.k = check_int("k", k, 1)
        check_choice("operator", operator, OPERATOR_MODES)
        if not dtype.is_floating_point:
            raise ValueError(f"dtype={dtype}: accepted: a floating dtype")
        self.operator_mode = operator
        self.dtype = dtype
        self.seq_len = n_tokens
        self.input_dim = d + n_tokens * (2 if operator == "per_example" else 1)
        self.num_classes = k * d
        super().__init__(
            seed=seed,
            split_sizes=split_sizes or {"train": None, "val": 1000, "test": 1000},
        )
        self.operator: Tensor | None = None
        if operator == "fixed":
            gen = make_generator(seed, "operator")
            self.operator = random_full_rank(1, n_tokens, gen)[0]  # (N, N) float64

    def generate(self, n: int, generator: torch.Generator) -> TaskBatch:
        x = torch.randn(n, self.n_tokens, self.d, generator=generator, dtype=torch.float64)
        eye = torch.eye(self.n_tokens, dtype=torch.float64).expand(n, -1, -1)  # (n, N, N)
        if self.operator is None:
            a = random_full_rank(n, self.n_tokens, generator)  # (n, N, N)
            features = torch.cat([x, a, eye], dim=-1)
        else:
            a = self.operator
            features = torch.cat([x, eye], dim=-1)
        targets = filter_bank(a, x, self.k)  # (n, N, k*d)
        mask = torch.ones(n, self.n_tokens, dtype=torch.bool)
        return TaskBatch(features.to(self.dtype), targets.to(self.dtype), mask)
