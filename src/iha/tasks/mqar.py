"""Multi-query associative recall (MQAR): recall the value bound to each queried key.

Token layout of :class:`MQARTask` (``input_kind="tokens"``, ``output="classification"``):

* keys are token ids ``0..num_keys-1``, values are ``num_keys..num_keys+num_values-1``;
* positions ``0..2*num_pairs-1`` hold the context ``k_1 v_1 k_2 v_2 ... k_D v_D``, with distinct
  keys and values drawn uniformly (with replacement);
* positions ``2*num_pairs .. 2*num_pairs+num_queries-1`` hold the queried keys, distinct keys
  of the context in random order;
* at a query position the target is the value token bound to that key (predicted at the query
  position, as a causal LM predicts the next token); ``loss_mask`` is True there only.

``num_classes`` equals ``vocab_size``: the classes are token ids.
"""

from __future__ import annotations

import torch

from iha.tasks.base import SyntheticTask, TaskBatch
from iha.validate import check_int


class MQARTask(SyntheticTask):
    """Seeded MQAR generator (see the module docstring for the token layout).

    Args:
        num_pairs: key-value pairs in the context.
        num_keys: size of the key vocabulary (>= num_pairs).
        num_values: size of the value vocabulary.
        num_queries: queries after the context (default and maximum: ``num_pairs``).
        seed: base seed.
        split_sizes: examples per split (None: streaming).
    """

    name = "mqar"
    input_kind = "tokens"
    output = "classification"

    def __init__(
        self,
        num_pairs: int = 8,
        num_keys: int = 32,
        num_values: int = 32,
        num_queries: int | None = None,
        *,
        seed: int = 0,
        split_sizes: dict[str, int | None] | None = None,
    ) -> None:
        self.num_pairs = check_int("num_pairs", num_pairs, 1)
        self.num_keys = check_int("num_keys", num_keys, num_pairs)
        self.num_values = check_int("num_values", num_values, 1)
        queries = num_pairs if num_queries is None else num_queries
        self.num_queries = check_int("num_queries", queries, 1)
        if self.num_queries > num_pairs:
            raise ValueError(f"num_queries={num_queries} must be <= num_pairs={num_pairs}")
        self.vocab_size = num_keys + num_values
        self.seq_len = 2 * num_pairs + self.num_queries
        self.num_classes = self.vocab_size
        super().__init__(
            seed=seed,
            split_sizes=split_sizes or {"train": None, "val": 1000, "test": 1000},
        )

    def generate(self, n: int, generator: torch.Generator) -> TaskBatch:
        d, q = self.num_pairs, self.num_queries
        keys = torch.rand(n, self.num_keys, generator=generator).argsort(-1)[:, :d]  # (n, D)
        values = self.num_keys + torch.randint(0, self.num_values, (n, d), generator=generator)
        asked = torch.rand(n, d, generator=generator).argsort(-1)[:, :q]  # (n, Q) pair indices
        inputs = torch.empty(n, self.seq_len, dtype=torch.long)
        inputs[:, 0 : 2 * d : 2] = keys
        inputs[:, 1 : 2 * d : 2] = values
        inputs[:, 2 * d :] = keys.gather(1, asked)
        targets = torch.zeros(n, self.seq_len, dtype=torch.long)
        targets[:, 2 * d :] = values.gather(1, asked)
        mask = torch.zeros(n, self.seq_len, dtype=torch.bool)
        mask[:, 2 * d :] = True
        return TaskBatch(inputs, targets, mask)
