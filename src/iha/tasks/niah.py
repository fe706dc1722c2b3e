"""Multi-key needle in a haystack, at small context: find the values of the queried keys.

Token layout of :class:`MultiKeyNIAHTask` (``input_kind="tokens"``,
``output="classification"``), with F = num_filler, K = num_keys, V = num_values:

* filler tokens are ids ``0..F-1``, keys ``F..F+K-1``, values ``F+K..F+K+V-1`` and the query
  marker is ``query_id = F+K+V`` (``vocab_size = F+K+V+1``);
* positions ``0..H-1`` (``H = seq_len - 1 - num_queries``) are the haystack: uniform filler with
  ``num_needles`` two-token needles ``key value`` at non-overlapping random places (uniform
  over all such placements), with distinct keys and uniform values;
* position H holds ``query_id``, positions ``H+1..seq_len-1`` hold ``num_queries`` distinct
  needle keys in random order (the other needles are distractors);
* at each queried-key position the target is that key's value token; ``loss_mask`` is True there
  only. ``num_classes`` equals ``vocab_size``: the classes are token ids.
"""

from __future__ import annotations

import torch

from iha.tasks.base import SyntheticTask, TaskBatch
from iha.validate import check_int


class MultiKeyNIAHTask(SyntheticTask):
    """Seeded multi-key NIAH generator (see the module docstring for the token layout).

    Args:
        seq_len: N.
        num_needles: key-value needles in the haystack.
        num_queries: keys asked at the end (<= num_needles).
        num_filler, num_keys, num_values: vocabulary sizes (num_keys >= num_needles).
        seed: base seed.
        split_sizes: examples per split (None: streaming).
    """

    name = "niah"
    input_kind = "tokens"
    output = "classification"

    def __init__(
        self,
        seq_len: int = 64,
        num_needles: int = 4,
        num_queries: int = 1,
        *,
        num_filler: int = 16,
        num_keys: int = 16,
        num_values: int = 16,
        seed: int = 0,
        split_sizes: dict[str, int | None] | None = None,
    ) -> None:
        self.num_needles = check_int("num_needles", num_needles, 1)
        self.num_queries = check_int("num_queries", num_queries, 1)
        if num_queries > num_needles:
            raise ValueError(f"num_queries={num_queries} must be <= num_needles={num_needles}")
        self.num_filler = check_int("num_filler", num_filler, 1)
        self.num_keys = check_int("num_keys", num_keys, num_needles)
        self.num_values = check_int("num_values", num_values, 1)
        self.haystack_len = seq_len - 1 - num_queries
        if self.haystack_len < 2 * num_needles:
            raise ValueError(
                f"seq_len={seq_len} is too short: it must be >= 2*num_needles + num_queries + 1 "
                f"= {2 * num_needles + num_queries + 1}"
            )
        self.seq_len = seq_len
        self.query_id = num_filler + num_keys + num_values
        self.vocab_size = self.query_id + 1
        self.num_classes = self.vocab_size
        super().__init__(
            seed=seed,
            split_sizes=split_sizes or {"train": None, "val": 1000, "test": 1000},
        )

    def generate(self, n: int, generator: torch.Generator) -> TaskBatch:
        h, k, q = self.haystack_len, self.num_needles, self.num_queries
        f, nk = self.num_filler, self.num_keys
        inputs = torch.randint(0, f, (n, self.seq_len), generator=generator)
        # Uniform non-overlapping placements: k sorted distinct slots among h - k, then the
        # r-th needle shifts right by r (each earlier needle is one token longer than a slot).
        slots = torch.rand(n, h - k, generator=generator).argsort(-1)[:, :k].sort(-1).values
        starts = slots + torch.arange(k)  # (n, k)
        keys = f + torch.rand(n, nk, generator=generator).argsort(-1)[:, :k]  # (n, k) distinct
        values = f + nk + torch.randint(0, self.num_values, (n, k), generator=generator)
        inputs.scatter_(1, starts, keys)
        inputs.scatter_(1, starts + 1, values)
        asked = torch.rand(n, k, generator=generator).argsort(-1)[:, :q]  # (n, Q)
        inputs[:, h] = self.query_id
        inputs[:, h + 1 :] = keys.gather(1, asked)
        targets = torch.zeros(n, self.seq_len, dtype=torch.long)
        targets[:, h + 1 :] = values.gather(1, asked)
        mask = torch.zeros(n, self.seq_len, dtype=torch.bool)
        mask[:, h + 1 :] = True
        return TaskBatch(inputs, targets, mask)
