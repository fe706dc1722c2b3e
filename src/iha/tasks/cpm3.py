"""CPM-3 (count permutation match-3), the paper's order-sensitive counting task.

For a sequence x_1..x_N, the target at position i is the number of ordered pairs
(j1, j2) in [N]^2 (all positions; j1 == j2 and j1 or j2 == i included) with
``(x_i + g * x_j1 + x_j2) mod modulus == 0``.

Order sensitivity needs ``g mod modulus != 1``: swapping j1 and j2 changes the sum by
``(g - 1)(x_j1 - x_j2)``, which vanishes mod M exactly when g = 1 (mod M) for every pair.
The paper's example (1, 2, 3 with g = 10, counts 3, 3, 3, which needs M = 3) falls in that
trap; :class:`CPM3Task` warns when it is asked for it.

Token layout of :class:`CPM3Task` (``input_kind="tokens"``):

* positions 0..L-1 hold the numbers, token id = the number, in ``0..n_values-1``
  (L is drawn uniformly in ``min_len..n_max`` per example);
* positions L..n_max-1 hold ``pad_id = n_values``;
* ``targets[b, i]`` is the count for position i (a class id in ``0..n_max**2``), taken over the
  L real positions only; ``loss_mask`` is True on the real positions.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from iha.tasks.base import SyntheticTask, TaskBatch
from iha.validate import check_int


def cpm3_targets(x: Tensor, modulus: int, g: int, valid: Tensor | None = None) -> Tensor:
    """CPM-3 counts for every position.

    Args:
        x: (N,) or (B, N) integer tensor of natural numbers.
        modulus: M >= 1.
        g: the multiplier G of the first pair element.
        valid: optional (N,) or (B, N) bool; only positions marked True take part as j1, j2,
            and invalid positions get target 0.

    Returns:
        Same shape as ``x``, int64: ``#{(j1, j2): (x_i + g x_j1 + x_j2) mod M == 0}``.
    """
    check_int("modulus", modulus, 1)
    check_int("g", g, None)
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ValueError(f"x has dtype {x.dtype}; accepted: an integer dtype")
    if x.dim() not in (1, 2):
        raise ValueError(f"x has shape {tuple(x.shape)}; accepted: (N,) or (B, N)")
    squeeze = x.dim() == 1
    x2 = x.long().reshape(-1, x.shape[-1])  # (B, N)
    if valid is None:
        valid2 = torch.ones_like(x2, dtype=torch.bool)
    else:
        if valid.shape != x.shape or valid.dtype != torch.bool:
            raise ValueError(
                f"valid must be a bool tensor of shape {tuple(x.shape)}, "
                f"got {valid.dtype} {tuple(valid.shape)}"
            )
        valid2 = valid.reshape(x2.shape)
    residues = x2 % modulus  # (B, N)
    # counts[b, v] = number of valid positions whose residue is v
    counts = torch.zeros(x2.shape[0], modulus, dtype=torch.long)
    counts.scatter_add_(1, residues, valid2.long())  # (B, M)
    v1 = torch.arange(modulus)
    # For query residue r and first residue v1, the second residue must be (-r - g v1) mod M.
    needed = (-residues[:, :, None] - g * v1) % modulus  # (B, N, M)
    second = counts.gather(1, needed.reshape(x2.shape[0], -1)).reshape(needed.shape)
    out = (counts[:, None, :] * second).sum(-1)  # (B, N)
    out = torch.where(valid2, out, torch.zeros_like(out))
    return out.reshape(x.shape[-1]) if squeeze else out


def check_order_sensitive(modulus: int, g: int) -> None:
    """Warn (UserWarning) when g = 1 mod M, where CPM-3 is symmetric in (j1, j2)."""
    if g % modulus == 1 % modulus:
        warnings.warn(
            f"g={g} and modulus={modulus} give g mod modulus == 1: CPM-3 is then symmetric in "
            "(j1, j2) and not order sensitive; pick g with gcd(g - 1, modulus) == 1",
            UserWarning,
            stacklevel=3,
        )


class CPM3Task(SyntheticTask):
    """Seeded CPM-3 generator (see the module docstring for the token layout).

    Args:
        n_max: N_max, the padded sequence length.
        modulus: M.
        g: the multiplier G; warns when ``g % modulus == 1``.
        n_values: numbers are drawn uniformly from ``0..n_values-1`` (default: ``modulus``).
        min_len: shortest sequence (default: ``n_max``, i.e. fixed length, no padding).
        seed: base seed.
        split_sizes: examples per split (None: streaming).
    """

    name = "cpm3"
    input_kind = "tokens"
    output = "classification"

    def __init__(
        self,
        n_max: int = 8,
        modulus: int = 7,
        g: int = 3,
        *,
        n_values: int | None = None,
        min_len: int | None = None,
        seed: int = 0,
        split_sizes: dict[str, int | None] | None = None,
    ) -> None:
        self.n_max = check_int("n_max", n_max, 1)
        self.modulus = check_int("modulus", modulus, 1)
        self.g = check_int("g", g, None)
        self.n_values = check_int("n_values", modulus if n_values is None else n_values, 1)
        self.min_len = check_int("min_len", n_max if min_len is None else min_len, 1)
        if self.min_len > n_max:
            raise ValueError(f"min_len={min_len} must be <= n_max={n_max}")
        check_order_sensitive(modulus, g)
        self.vocab_size = self.n_values + (1 if self.min_len < n_max else 0)
        self.pad_id = self.n_values if self.min_len < n_max else None
        self.seq_len = n_max
        self.num_classes = n_max * n_max + 1
        super().__init__(
            seed=seed,
            split_sizes=split_sizes or {"train": None, "val": 1000, "test": 1000},
        )

    def generate(self, n: int, generator: torch.Generator) -> TaskBatch:
        values = torch.randint(0, self.n_values, (n, self.n_max), generator=generator)
        lengths = torch.randint(self.min_len, self.n_max + 1, (n,), generator=generator)
        valid = torch.arange(self.n_max) < lengths[:, None]  # (n, N)
        targets = cpm3_targets(values, self.modulus, self.g, valid)
        if self.pad_id is not None:
            values = torch.where(valid, values, torch.full_like(values, self.pad_id))
        return TaskBatch(values, targets, valid)
