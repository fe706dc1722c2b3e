"""Data of the language-model experiments: MQAR with mixed pair counts, and a real text corpus.

- :class:`MixedMQARTask`: multi-query associative recall in the style of the Zoology benchmark
  (Arora et al. 2023), every example with its own number of key-value pairs drawn from
  ``pair_counts``; examples are padded to the longest layout (or to a longer ``seq_len``). One
  trained model can be tested at every pair count separately (``with_pairs``). What lets a
  small model leave the in-context-guess plateau within a CPU budget is a large batch, not a
  mixture of pair counts (docs/results/lm/README.md).
- :func:`pydoc_corpus`: a real English corpus that every CPython ships, the 79 help topics of
  the Python language reference in ``pydoc_data.topics`` (~460 KB), as a document source for
  ``iha.train`` (``data.source = "iha.reproduce.lm_tasks:pydoc_corpus"``). Nothing is
  downloaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from iha.tasks.base import SyntheticTask, TaskBatch, check_int

CORPUS_SPLITS = ("train", "val")


class MixedMQARTask(SyntheticTask):
    """MQAR whose examples each draw their number of pairs D from ``pair_counts``.

    Layout of an example with D pairs (keys ``0..K-1``, values ``K..K+V-1``, padding ``K+V``):
    positions ``0..2D-1`` hold ``k_1 v_1 ... k_D v_D`` (distinct keys, values uniform with
    replacement), positions ``2D..3D-1`` the D keys again in a random order, and the rest up to
    ``seq_len`` (default ``3 * max(pair_counts)``) is padding. At a query position the target is
    the value bound to that key (predicted at the query, as a causal LM predicts the next token);
    ``loss_mask`` is True there only. Padding comes after every real token, so a causal model's
    outputs at real positions never see it.

    Args:
        pair_counts: the numbers of pairs examples are drawn from (uniformly).
        num_keys, num_values: key and value vocabulary sizes (num_keys >= max(pair_counts)).
        seq_len: padded length, at least ``3 * max(pair_counts)`` (None: exactly that). A longer
            context changes nothing a causal model sees at real positions; it sets the context N
            from which the paper's rule derives local windows (W = N / (2 P^2)).
        seed: base seed.
        split_sizes: examples per split (None: streaming).
    """

    name = "mqar_mixed"
    input_kind = "tokens"
    output = "classification"

    def __init__(
        self,
        pair_counts: Sequence[int] = (1, 2, 4, 8),
        num_keys: int = 32,
        num_values: int = 32,
        *,
        seq_len: int | None = None,
        seed: int = 0,
        split_sizes: dict[str, int | None] | None = None,
    ) -> None:
        counts = tuple(pair_counts)
        if not counts:
            raise ValueError("pair_counts must hold at least one number of pairs")
        for d in counts:
            check_int("pair_counts entry", d, 1)
        self.pair_counts = counts
        self.num_keys = check_int("num_keys", num_keys, max(counts))
        self.num_values = check_int("num_values", num_values, 1)
        self.pad_id = num_keys + num_values
        self.vocab_size = num_keys + num_values + 1
        self.num_classes = self.vocab_size
        shortest = 3 * max(counts)
        self.seq_len = shortest if seq_len is None else check_int("seq_len", seq_len, shortest)
        super().__init__(
            seed=seed,
            split_sizes=split_sizes or {"train": None, "val": 512, "test": 1024},
        )

    def with_pairs(self, num_pairs: int) -> MixedMQARTask:
        """The same task (seed, vocabulary, length) with every example holding ``num_pairs``."""
        return MixedMQARTask(
            (num_pairs,),
            self.num_keys,
            self.num_values,
            seq_len=max(self.seq_len, 3 * num_pairs),  # same padded length as the mixture
            seed=self.seed,
            split_sizes=dict(self.split_sizes),
        )

    def generate(self, n: int, generator: torch.Generator) -> TaskBatch:
        inputs = torch.full((n, self.seq_len), self.pad_id, dtype=torch.long)
        targets = torch.zeros(n, self.seq_len, dtype=torch.long)
        mask = torch.zeros(n, self.seq_len, dtype=torch.bool)
        choice = torch.randint(0, len(self.pair_counts), (n,), generator=generator)  # (n,)
        for i, d in enumerate(self.pair_counts):
            rows = (choice == i).nonzero().squeeze(1)  # (m,)
            m = len(rows)
            if m == 0:
                continue
            keys = torch.rand(m, self.num_keys, generator=generator).argsort(-1)[:, :d]  # (m, D)
            values = self.num_keys + torch.randint(0, self.num_values, (m, d), generator=generator)
            order = torch.rand(m, d, generator=generator).argsort(-1)  # (m, D) query order
            block = torch.empty(m, 3 * d, dtype=torch.long)
            block[:, 0 : 2 * d : 2] = keys
            block[:, 1 : 2 * d : 2] = values
            block[:, 2 * d :] = keys.gather(1, order)
            inputs[rows, : 3 * d] = block
            targets[rows, 2 * d : 3 * d] = values.gather(1, order)
            mask[rows, 2 * d : 3 * d] = True
        return TaskBatch(inputs, targets, mask)


CORPUS_FRACTIONS = {"train": 0.9, "val": 0.05, "test": 0.05}


def corpus_paragraphs() -> list[tuple[str, int, str]]:
    """The corpus as ``(topic, paragraph index, text)``: ``pydoc_data.topics`` split at blank
    lines, empty paragraphs dropped, topics in sorted order."""
    from pydoc_data.topics import topics

    out = []
    for topic in sorted(topics):
        paragraphs = [p for p in topics[topic].split("\n\n") if p.strip()]
        out += [(topic, i, p) for i, p in enumerate(paragraphs)]
    return out


def corpus_split_of(topic: str, index: int) -> str:
    """Split of one paragraph, from a hash of its place (the same on every machine)."""
    digest = hashlib.blake2b(f"{topic}/{index}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    edge = 0.0
    for name, fraction in CORPUS_FRACTIONS.items():
        edge += fraction
        if u < edge:
            return name
    return "test"


def corpus_fingerprint() -> dict[str, Any]:
    """Bytes per split and a hash of the whole corpus (it changes with the Python version)."""
    sizes = dict.fromkeys(CORPUS_FRACTIONS, 0)
    digest = hashlib.blake2b(digest_size=8)
    for topic, i, text in corpus_paragraphs():
        sizes[corpus_split_of(topic, i)] += len(text.encode())
        digest.update(text.encode())
    return {"bytes": sizes, "blake2b": digest.hexdigest()}


class CorpusDocuments:
    """The paragraphs of one split as documents (token ids, no loss mask)."""

    def __init__(self, split: str, tokenizer: Any, append_eos: bool = True) -> None:
        if split not in CORPUS_FRACTIONS:
            raise ValueError(f"split={split!r}: accepted values are {tuple(CORPUS_FRACTIONS)}")
        self.texts = [
            t for topic, i, t in corpus_paragraphs() if corpus_split_of(topic, i) == split
        ]
        self.tokenizer, self.append_eos = tokenizer, append_eos

    def __len__(self) -> int:
        return len(self.texts)

    def documents(
        self, epoch: int, start: int, shuffle: bool, seed: int
    ) -> Iterator[tuple[list[int], None]]:
        """Paragraphs from ``start`` on, in an order shuffled per (seed, epoch) if asked."""
        from iha.tasks.base import derive_seed

        n = len(self.texts)
        if shuffle:
            gen = torch.Generator().manual_seed(derive_seed("corpus", seed, epoch))
            order = torch.randperm(n, generator=gen).tolist()
        else:
            order = list(range(n))
        for i in order[start:]:
            ids = self.tokenizer.encode(self.texts[i])
            if self.append_eos:
                ids.append(self.tokenizer.eos_token_id)
            yield ids, None


def pydoc_corpus(data_config: Any, tokenizer: Any, split: str, seed: int) -> CorpusDocuments:
    """Document source of ``iha.train`` (``data.source = "iha.reproduce.lm_tasks:pydoc_corpus"``):
    the ``split`` paragraphs of the Python language reference text that CPython ships."""
    return CorpusDocuments(split, tokenizer, data_config.append_eos)
