"""k-hop induction heads: follow the "what came after my last occurrence" pointer k times.

For a sequence x_0..x_{N-1} define ``pointer(i) = 1 + max{j < i : x_j == x_i}`` (the position
right after the most recent earlier occurrence of the current token), undefined when x_i has
not occurred before. ``hop_k(i) = x[pointer^k(i)]``, undefined if any step is. One hop is the
classic induction head (predict the token that followed the previous occurrence); k hops need
k chained look-ups.

Token layout of :class:`KHopInductionTask` (``input_kind="tokens"``,
``output="classification"``):

* positions ``0..seq_len-1`` hold tokens drawn uniformly from ``0..vocab_size-1``;
* ``targets[b, i] = hop_k(i)``, or the extra class ``none_id = vocab_size`` when undefined,
  so ``num_classes = vocab_size + 1``;
* ``loss_mask`` is True at every position (``loss_on="all"``) or only where hop_k is defined
  (``loss_on="defined"``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from iha.tasks.base import SyntheticTask, TaskBatch
from iha.validate import check_choice, check_int

LOSS_ON: tuple[str, ...] = ("all", "defined")


def khop_targets(x: Tensor, hops: int, none_id: int) -> Tensor:
    """``hop_k`` at every position (see the module docstring).

    Args:
        x: (B, N) int64 tokens.
        hops: k >= 1.
        none_id: value written where hop_k is undefined.

    Returns:
        (B, N) int64.
    """
    check_int("hops", hops, 1)
    if x.dim() != 2:
        raise ValueError(f"x has shape {tuple(x.shape)}; accepted: (B, N)")
    b, n = x.shape
    vocab = int(x.max()) + 1 if x.numel() else 1
    last = torch.full((b, vocab), -1, dtype=torch.long)  # last position of each token so far
    rows = torch.arange(b)
    pointer = torch.empty(b, n, dtype=torch.long)
    for i in range(n):
        prev = last[rows, x[:, i]]  # (B,)
        pointer[:, i] = torch.where(prev >= 0, prev + 1, prev)
        last[rows, x[:, i]] = i
    pos = torch.arange(n).expand(b, n)  # (B, N) current pointer per query position
    for _ in range(hops):
        pos = torch.where(pos >= 0, pointer.gather(1, pos.clamp(min=0)), pos)
    return torch.where(pos >= 0, x.gather(1, pos.clamp(min=0)), torch.full_like(pos, none_id))


class KHopInductionTask(SyntheticTask):
    """Seeded k-hop induction generator (see the module docstring for the token layout).

    Args:
        vocab_size: number of token ids.
        seq_len: N.
        hops: k.
        loss_on: "all" or "defined".
        seed: base seed.
        split_sizes: examples per split (None: streaming).
    """

    name = "khop"
    input_kind = "tokens"
    output = "classification"

    def __init__(
        self,
        vocab_size: int = 8,
        seq_len: int = 32,
        hops: int = 2,
        *,
        loss_on: str = "all",
        seed: int = 0,
        split_sizes: dict[str, int | None] | None = None,
    ) -> None:
        self.vocab_size = check_int("vocab_size", vocab_size, 1)
        self.seq_len = check_int("seq_len", seq_len, 1)
        self.hops = check_int("hops", hops, 1)
        check_choice("loss_on", loss_on, LOSS_ON)
        self.loss_on = loss_on
        self.none_id = vocab_size
        self.num_classes = vocab_size + 1
        super().__init__(
            seed=seed,
            split_sizes=split_sizes or {"train": None, "val": 1000, "test": 1000},
        )

    def generate(self, n: int, generator: torch.Generator) -> TaskBatch:
        x = torch.randint(0, self.vocab_size, (n, self.seq_len), generator=generator)
        targets = khop_targets(x, self.hops, self.none_id)
        if self.loss_on == "all":
            mask = torch.ones_like(x, dtype=torch.bool)
        else:
            mask = targets != self.none_id
        return TaskBatch(x, targets, mask)
