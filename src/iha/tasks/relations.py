"""Relation composition (paper appendix D): predict R o R (binary) or R o R o R (ternary).

``(R o S)_ij = 1`` iff there is a k with ``R_ik = 1`` and ``S_kj = 1``.

Token layout of :class:`RelationCompositionTask` (``input_kind="tokens"``, ``output="binary"``):

* an m x m relation R (m drawn uniformly in ``m_min..m_max`` per example, entries
  Bernoulli(p)) is flattened row-major: position ``i * m + j`` holds token ``R_ij`` (0 or 1);
* positions ``m*m .. m_max*m_max - 1`` hold ``pad_id = 2`` (right padding);
* ``targets[b, i * m + j]`` is the float label ``(R o ... o R)_ij`` (``hops`` factors);
* ``loss_mask`` (the validity mask) is True on the m*m real positions.

The paper's settings are :func:`binary_relations` (hops 2, m in 6..10, p = 0.325) and
:func:`ternary_relations` (hops 3, m in 5..8, p = 0.264), with 40,000 / 5,000 / 5,000
examples; every size is an argument so that tests can use small ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from iha.tasks.base import SyntheticTask, TaskBatch
from iha.validate import check_int

PAPER_SPLIT_SIZES: dict[str, int | None] = {"train": 40_000, "val": 5_000, "test": 5_000}


def compose(r: Tensor, hops: int) -> Tensor:
    """``R o R o ... o R`` with ``hops`` factors (hops = 1 returns R).

    Args:
        r: (m, m) or (B, m, m) bool relation.
        hops: number of factors, >= 1.

    Returns:
        Bool tensor of ``r``'s shape.
    """
    check_int("hops", hops, 1)
    if r.dtype != torch.bool:
        raise ValueError(f"r has dtype {r.dtype}; accepted: torch.bool")
    if r.dim() not in (2, 3) or r.shape[-1] != r.shape[-2]:
        raise ValueError(f"r has shape {tuple(r.shape)}; accepted: (m, m) or (B, m, m)")
    base = r.to(torch.float32)  # path counts stay exact: they are thresholded at every step
    out = base
    for _ in range(hops - 1):
        out = ((out @ base) > 0).to(torch.float32)
    return out > 0


class RelationCompositionTask(SyntheticTask):
    """Seeded relation-composition dataset (see the module docstring for the token layout).

    Args:
        hops: 2 (binary composition) or more.
        m_min, m_max: the relation size m is uniform in ``m_min..m_max``.
        p: Bernoulli probability of each entry.
        seed: base seed.
        split_sizes: examples per split (default: the paper's 40k / 5k / 5k).
    """

    name = "relations"
    input_kind = "tokens"
    output = "binary"

    def __init__(
        self,
        hops: int = 2,
        m_min: int = 6,
        m_max: int = 10,
        p: float = 0.325,
        *,
        seed: int = 0,
        split_sizes: dict[str, int | None] | None = None,
    ) -> None:
        self.hops = check_int("hops", hops, 1)
        self.m_min = check_int("m_min", m_min, 1)
        self.m_max = check_int("m_max", m_max, m_min)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p={p!r} must be a probability in [0, 1]")
        self.p = float(p)
        self.vocab_size = 3
        self.pad_id = 2
        self.seq_len = m_max * m_max
        self.num_classes = 1
        super().__init__(seed=seed, split_sizes=split_sizes or dict(PAPER_SPLIT_SIZES))

    def generate(self, n: int, generator: torch.Generator) -> TaskBatch:
        m_max = self.m_max
        sizes = torch.randint(self.m_min, m_max + 1, (n,), generator=generator)  # (n,)
        entries = torch.rand(n, m_max, m_max, generator=generator, dtype=torch.float64) < self.p
        idx = torch.arange(m_max)
        inside = (idx[:, None] < sizes[:, None, None]) & (idx < sizes[:, None, None])
        rel = entries & inside  # (n, m_max, m_max); zero outside the top-left m x m block
        # Zero rows/columns beyond m add no paths, so composing the padded matrix is exact.
        composed = compose(rel, self.hops)
        inputs = torch.full((n, self.seq_len), self.pad_id, dtype=torch.long)
        targets = torch.zeros(n, self.seq_len, dtype=torch.float32)
        valid = torch.zeros(n, self.seq_len, dtype=torch.bool)
        for m in range(self.m_min, m_max + 1):
            rows = (sizes == m).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            inputs[rows, : m * m] = rel[rows, :m, :m].reshape(len(rows), m * m).long()
            targets[rows, : m * m] = composed[rows, :m, :m].reshape(len(rows), m * m).float()
            valid[rows, : m * m] = True
        return TaskBatch(inputs, targets, valid)


def binary_relations(
    *, seed: int = 0, split_sizes: dict[str, int | None] | None = None
) -> RelationCompositionTask:
    """The paper's binary composition task: R o R, m in 6..10, p = 0.325."""
    return RelationCompositionTask(2, 6, 10, 0.325, seed=seed, split_sizes=split_sizes)


def ternary_relations(
    *, seed: int = 0, split_sizes: dict[str, int | None] | None = None
) -> RelationCompositionTask:
    """The paper's ternary composition task: R o R o R, m in 5..8, p = 0.264."""
    return RelationCompositionTask(3, 5, 8, 0.264, seed=seed, split_sizes=split_sizes)
