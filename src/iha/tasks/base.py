"""The interface every synthetic task shares: a batch type, seeded splits and streaming batches.

A task object knows how to draw ``n`` i.i.d. examples from a ``torch.Generator``
(:meth:`SyntheticTask.generate`). Everything else lives here, once:

* **Determinism.** Every random draw comes from a generator seeded by :func:`derive_seed` from
  the task's ``seed``, the split name and a chunk index, so the same task arguments always give
  the same examples, on any machine (the generators run on the CPU).
* **Disjoint splits.** An example belongs to the split chosen by a hash of its input row
  (:func:`split_of`), with probabilities ``split_fractions`` (0.8 / 0.1 / 0.1 by default). A
  split keeps only the examples that hash to it, so train, val and test can never share an
  input, even on tasks whose whole input space is tiny. Seeds still differ per split, so the
  three draws are independent.
* **Fixed-size splits and streaming.** ``split_sizes[name]`` is an int for a fixed, reproducible
  set of examples (:meth:`SyntheticTask.split` materialises and caches it) or ``None`` for an
  endless stream of fresh examples. :meth:`SyntheticTask.batches` serves both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from iha.validate import check_choice, check_int

SPLITS: tuple[str, ...] = ("train", "val", "test")
OUTPUT_KINDS: tuple[str, ...] = ("classification", "binary", "regression")
INPUT_KINDS: tuple[str, ...] = ("tokens", "features")

_CHUNK = 1024  # examples drawn per generator; fixed so that a smaller split is a prefix of a larger
_MAX_EMPTY_CHUNKS = 200


@dataclass(frozen=True)
class TaskBatch:
    """One batch of a synthetic task.

    Attributes:
        inputs: (B, N) int64 token ids, or (B, N, F) float features for ``input_kind="features"``.
        targets: (B, N) int64 class ids (``output="classification"``), (B, N) float 0/1 labels
            (``"binary"``) or (B, N, T) float values (``"regression"``). Entries outside
            ``loss_mask`` are 0 and carry no meaning.
        loss_mask: (B, N) bool, True where the loss (and the accuracy) is taken.
    """

    inputs: Tensor
    targets: Tensor
    loss_mask: Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index: Tensor | slice | int) -> TaskBatch:
        """Select examples (rows); an int keeps the batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return TaskBatch(self.inputs[index], self.targets[index], self.loss_mask[index])

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(self.inputs.to(device), self.targets.to(device), self.loss_mask.to(device))

    @staticmethod
    def cat(batches: list[TaskBatch]) -> TaskBatch:
        """Concatenate batches along the example dimension."""
        return TaskBatch(
            torch.cat([b.inputs for b in batches]),
            torch.cat([b.targets for b in batches]),
            torch.cat([b.loss_mask for b in batches]),
        )


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that depends on every part (stable across runs and platforms)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def make_generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def split_of(inputs: Tensor, fractions: tuple[float, float, float]) -> Tensor:
    """Index into :data:`SPLITS` of each example, from a hash of its input row.

    Args:
        inputs: (B, ...) the examples' inputs; the hash covers the whole row.
        fractions: probability of each split (train, val, test), summing to 1.

    Returns:
        (B,) int64 split indices.
    """
    rows = inputs.detach().cpu().contiguous().reshape(inputs.shape[0], -1).numpy()
    edges = torch.tensor(fractions, dtype=torch.float64).cumsum(0)
    u = torch.tensor(
        [
            int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
            / 2.0**64
            for row in rows
        ],
        dtype=torch.float64,
    )
    return torch.searchsorted(edges[:-1], u, right=True)


class SyntheticTask:
    """Base class: seeded splits and batches around a subclass's :meth:`generate`.

    Subclasses set, in ``__init__``, the attributes below and call ``super().__init__``.

    Attributes:
        name: short task name.
        input_kind: "tokens" (inputs are (B, N) ids below ``vocab_size``) or "features"
            (inputs are (B, N, input_dim) floats; ``vocab_size`` is None).
        vocab_size: number of input token ids, or None for feature inputs.
        input_dim: feature width for feature inputs, or None for token inputs.
        pad_id: the padding token id (None when the task never pads). A model may build its
            ``attention_mask`` as ``inputs != pad_id``.
        seq_len: N, the (padded) length of every example.
        output: "classification" (targets are class ids below ``num_classes``), "binary"
            (float 0/1 labels; ``num_classes`` is 1, one logit) or "regression" (float vectors
            of width ``num_classes``).
        num_classes: see ``output``.
        seed: base seed of every draw.
        split_sizes: examples per split; None means an endless stream.
        split_fractions: hash-partition probabilities of (train, val, test).
    """

    name: str = "task"
    input_kind: str = "tokens"
    vocab_size: int | None = None
    input_dim: int | None = None
    pad_id: int | None = None
    seq_len: int
    output: str
    num_classes: int

    def __init__(
        self,
        *,
        seed: int,
        split_sizes: Mapping[str, int | None],
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    ) -> None:
        check_int("seed", seed, None)
        unknown = set(split_sizes) - set(SPLITS)
        if unknown:
            raise ValueError(f"split_sizes has unknown splits {sorted(unknown)}; use {SPLITS}")
        sizes = {name: split_sizes.get(name) for name in SPLITS}
        for name, size in sizes.items():
            if size is not None:
                check_int(f"split_sizes[{name!r}]", size, 0)
        if (
            len(split_fractions) != 3
            or any(f <= 0 for f in split_fractions)
            or abs(sum(split_fractions) - 1.0) > 1e-9
        ):
            raise ValueError(
                f"split_fractions={split_fractions!r} must be three positive numbers summing to 1"
            )
        check_choice("output", self.output, OUTPUT_KINDS)
        check_choice("input_kind", self.input_kind, INPUT_KINDS)
        self.seed = seed
        self.split_sizes: dict[str, int | None] = sizes
        self.split_fractions = tuple(float(f) for f in split_fractions)
        self._cache: dict[str, TaskBatch] = {}

    def generate(self, n: int, generator: torch.Generator) -> TaskBatch:
        """Draw ``n`` i.i.d. examples (any split) using only ``generator``."""
        raise NotImplementedError

    def _check_split(self, split: str) -> int:
        check_choice("split", split, SPLITS)
        return SPLITS.index(split)

    def _stream_chunks(self, split: str, *seed_parts: object) -> Iterator[TaskBatch]:
        """Endless chunks of examples that hash to ``split``, drawn from derived seeds."""
        index = self._check_split(split)
        empty = 0
        chunk = 0
        while True:
            batch = self.generate(_CHUNK, make_generator(self.seed, split, *seed_parts, chunk))
            keep = split_of(batch.inputs, self.split_fractions) == index
            chunk += 1
            if not bool(keep.any()):
                empty += 1
                if empty >= _MAX_EMPTY_CHUNKS:
                    raise RuntimeError(
                        f"no example of split {split!r} in {empty} chunks: the task's input "
                        "space is too small for this split; enlarge it or change split_fractions"
                    )
                continue
            empty = 0
            yield batch[keep.nonzero().squeeze(1)]

    def split(self, name: str) -> TaskBatch:
        """The whole fixed-size split ``name`` (materialised once, then cached)."""
        self._check_split(name)
        size = self.split_sizes[name]
        if size is None:
            raise ValueError(
                f"split {name!r} is a stream (split_sizes[{name!r}] is None); use batches()"
            )
        if name not in self._cache:
            parts: list[TaskBatch] = []
            have = 0
            chunks = self._stream_chunks(name, "fixed")
            while have < size:
                part = next(chunks)
                parts.append(part)
                have += len(part)
            full = TaskBatch.cat(parts) if parts else self.generate(0, torch.Generator())
            self._cache[name] = full[:size]
        return self._cache[name]

    def batches(self, split: str, batch_size: int, seed: int | None = 0) -> Iterator[TaskBatch]:
        """Batches of ``split``.

        A fixed-size split yields one epoch over its examples, shuffled by ``seed`` (in stored
        order when ``seed`` is None); the last batch may be smaller. A streaming split
        (size None) yields fresh examples forever, drawn from seeds derived from ``seed``.
        """
        self._check_split(split)
        check_int("batch_size", batch_size, 1)
        if self.split_sizes[split] is not None:
            data = self.split(split)
            if seed is None:
                order = torch.arange(len(data))
            else:
                order = torch.randperm(len(data), generator=make_generator(self.seed, "perm", seed))
            for start in range(0, len(data), batch_size):
                yield data[order[start : start + batch_size]]
            return
        buffer: list[TaskBatch] = []
        have = 0
        for chunk in self._stream_chunks(split, "stream", seed):
            buffer.append(chunk)
            have += len(chunk)
            while have >= batch_size:
                merged = TaskBatch.cat(buffer)
                yield merged[:batch_size]
                rest = merged[batch_size:]
                buffer, have = [rest], len(rest)

    def describe(self) -> dict[str, object]:
        """The task's interface attributes, for logs and reports."""
        return {
            "name": self.name,
            "input_kind": self.input_kind,
            "vocab_size": self.vocab_size,
            "input_dim": self.input_dim,
            "pad_id": self.pad_id,
            "seq_len": self.seq_len,
            "output": self.output,
            "num_classes": self.num_classes,
            "seed": self.seed,
            "split_sizes": dict(self.split_sizes),
        }
