"""Training data: document sources, packing into fixed-length sequences, resumable streams.

Every stream serves *global* batches (the same on every process; each process takes its own
rows, see :func:`shard_rows`), which makes an N-process run see exactly the data of a 1-process
run with the same global batch, and keeps the data position identical on every rank. The price:
every process reads and tokenizes all the data (negligible next to a model step for local files;
for a streamed Hugging Face dataset every process downloads the whole stream).

A :class:`Batch` holds ``inputs`` (B, N) int64, ``targets`` (B, N) int64 (the token each
position must predict, already shifted) and ``loss_mask`` (B, N) bool.

Sources:

* local ``.txt`` files (one document per blank-line separated paragraph) and ``.jsonl`` files
  (one document per line; ``text_field``, or ``prompt_field`` + ``response_field`` with the loss
  on the response tokens only), indexed by byte offsets so that any document can be read
  without reading the ones before it;
* Hugging Face datasets by name (``datasets`` imported only when used; streaming by default);
* the synthetic tasks of :mod:`iha.tasks` (token inputs; classification or binary outputs);
* a plugin ``"package.module:function"`` called as ``function(data_config, tokenizer, split,
  seed)`` returning a :class:`DocumentSource` (or ``None`` when it has no such split).

Determinism: the document order of epoch ``e`` is a permutation seeded by ``(seed, e)``; the
stream position (epoch, document, token offset, one carried token) is the whole state, so
:meth:`PackedStream.load_state_dict` resumes exactly where :meth:`PackedStream.state_dict` was
taken, reading only the document it stopped in.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from iha.train.config import DataConfig
from iha.validate import check_choice

# A document: token ids and, optionally, a per-token loss mask (None: every token counts).
Document = tuple[list[int], list[bool] | None]


@dataclass
class Batch:
    """A batch of training sequences.

    Attributes:
        inputs: (B, N) int64 token ids fed to the model.
        targets: (B, N) int64 ids each position must predict.
        loss_mask: (B, N) bool, True where the loss is taken.
    """

    inputs: Tensor
    targets: Tensor
    loss_mask: Tensor

    def rows(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop`` of the batch."""
        return Batch(self.inputs[start:stop], self.targets[start:stop], self.loss_mask[start:stop])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.inputs.to(device), self.targets.to(device), self.loss_mask.to(device))


def shard_rows(batch: Batch, rank: int, world_size: int) -> Batch:
    """The contiguous block of rows of ``batch`` that process ``rank`` trains on."""
    per = batch.inputs.shape[0] // world_size
    return batch.rows(rank * per, (rank + 1) * per)


def _seed(*parts: object) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class DocumentSource(Protocol):
    """Documents in a fixed base order (``__len__``) or a stream (``__len__`` absent)."""

    def documents(self, epoch: int, start: int, shuffle: bool, seed: int) -> Iterator[Document]:
        """Documents of ``epoch`` in its order, from index ``start`` on."""
        ...


class IndexedDocuments:
    """Random-access documents: ``read(i)`` plus a seeded per-epoch permutation."""

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: int) -> Document:
        raise NotImplementedError

    def documents(self, epoch: int, start: int, shuffle: bool, seed: int) -> Iterator[Document]:
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, epoch)))
        else:
            order = torch.arange(n)
        for i in order[start:].tolist():
            yield self.read(i)


class Subset(IndexedDocuments):
    """The documents ``indices`` of another indexed source."""

    def __init__(self, base: IndexedDocuments, indices: list[int]) -> None:
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, index: int) -> Document:
        return self.base.read(self.indices[index])


def expand_braces(pattern: str) -> list[str]:
    """``pattern`` with its ``{a,b,...}`` groups expanded as a shell does, left group first:
    ``"data/*.{txt,md}"`` -> ``["data/*.txt", "data/*.md"]``. A brace pair without a comma, or
    a lone brace, is kept as written; groups do not nest."""
    start = pattern.find("{")
    while start != -1:
        end = pattern.find("}", start)
        if end == -1:
            break
        inner = pattern[start + 1 : end]
        if "," in inner and "{" not in inner:
            head, tail = pattern[:start], pattern[end + 1 :]
            return [head + alt + rest for alt in inner.split(",") for rest in expand_braces(tail)]
        start = pattern.find("{", start + 1)
    return [pattern]


def list_files(path: str, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under ``path`` (a file, a directory searched recursively, or a glob, whose
    ``{a,b}`` groups expand as in a shell: ``data/*.{txt,md}``), sorted, each listed once."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file() and f.suffix in suffixes]
    else:
        found = (glob.glob(pattern, recursive=True) for pattern in expand_braces(path))
        files = list({Path(f) for matches in found for f in matches if Path(f).is_file()})
    if not files:
        raise ValueError(f"data path {path!r} matches no files (looked for {', '.join(suffixes)})")
    return sorted(files)


class LocalFiles(IndexedDocuments):
    """Text or JSONL documents in local files, indexed by byte ranges.

    ``kind="text"``: a document is a maximal run of non-blank lines. ``kind="jsonl"``: a document
    is one non-blank line, a JSON object holding ``text_field`` (or ``prompt_field`` and
    ``response_field``: the loss mask then covers only the response tokens and the final eos).

    Every file is read once when the source is built: each JSONL line is parsed and its fields
    checked then (a bad line raises ``ValueError`` naming file and line before training starts),
    and lines holding bytes that are not UTF-8 are counted. Such bytes are decoded as U+FFFD;
    ``notes`` says how many lines of which file had them.
    """

    def __init__(self, path: str, kind: str, tokenizer: Any, cfg: DataConfig) -> None:
        check_choice("kind", kind, ("text", "jsonl"))
        self.kind, self.tokenizer, self.cfg = kind, tokenizer, cfg
        suffixes = (".txt", ".text", ".md") if kind == "text" else (".jsonl", ".json")
        self.files = list_files(path, suffixes)
        self.ranges: list[tuple[int, int, int]] = []  # (file index, start byte, end byte)
        self.notes: list[str] = []
        for fi, f in enumerate(self.files):
            self.ranges.extend((fi, s, e) for s, e in self._scan(f))
        if not self.ranges:
            raise ValueError(f"data path {path!r} holds no documents")

    def _scan(self, file: Path) -> Iterator[tuple[int, int]]:
        pos, start = 0, None
        bad_lines, first_bad = 0, 0
        with open(file, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                blank = not line.strip()
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    bad_lines += 1
                    first_bad = first_bad or number
                    text = line.decode("utf-8", errors="replace")
                if self.kind == "jsonl":
                    if not blank:
                        self._check_record(text, f"{file} line {number}")
                        yield pos, pos + len(line)
                elif blank and start is not None:
                    yield start, pos
                    start = None
                elif not blank and start is None:
                    start = pos
                pos += len(line)
        if self.kind == "text" and start is not None:
            yield start, pos
        if bad_lines:
            self.notes.append(
                f"data file {str(file)!r}: {bad_lines} line(s) hold bytes that are not UTF-8 "
                f"(first at line {first_bad}); they are read as U+FFFD"
            )

    def _check_record(self, text: str, where: str) -> None:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not valid JSON: {e}") from e
        except RecursionError:
            raise ValueError(
                f"{where} nests arrays or objects too deeply to be parsed (deeper than "
                f"Python's recursion limit of {sys.getrecursionlimit()})"
            ) from None
        cfg = self.cfg
        fields = [cfg.prompt_field, cfg.response_field] if cfg.prompt_field else [cfg.text_field]
        if not isinstance(record, dict):
            raise ValueError(f"{where} must be a JSON object, got {type(record).__name__}")
        for f in fields:
            if not isinstance(record.get(f), str):
                raise ValueError(f"{where} has no string field {f!r} (keys: {sorted(record)})")
            try:
                record[f].encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate: "\ud800" escapes parse
                char = record[f][e.start]
                raise ValueError(
                    f"{where} holds a lone surrogate {char!r} in field {f!r} (character "
                    f"{e.start}), which is not text and cannot be tokenized"
                ) from None

    def __len__(self) -> int:
        return len(self.ranges)

    def read(self, index: int) -> Document:
        fi, start, end = self.ranges[index]
        with open(self.files[fi], "rb") as fh:
            fh.seek(start)
            raw = fh.read(end - start).decode("utf-8", errors="replace")
        if self.kind == "text":
            text = raw.rstrip("\r\n")  # the paragraph without its line break
            return encode_document(self.tokenizer, text, None, self.cfg.append_eos)
        where = f"{self.files[fi]} (document {index})"
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not valid JSON: {e}") from e
        return document_from_record(record, self.tokenizer, self.cfg, where)


def encode_document(tokenizer: Any, text: str, prompt: str | None, append_eos: bool) -> Document:
    """Tokenize one document; with ``prompt``, the loss mask covers only ``text`` (+ eos)."""
    ids = tokenizer.encode(text)
    if append_eos:
        ids.append(tokenizer.eos_token_id)
    if prompt is None:
        return ids, None
    prompt_ids = tokenizer.encode(prompt)
    return prompt_ids + ids, [False] * len(prompt_ids) + [True] * len(ids)


def document_from_record(record: Any, tokenizer: Any, cfg: DataConfig, where: str) -> Document:
    """A JSON record -> document, using ``text_field`` or ``prompt_field``/``response_field``."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(record).__name__}")
    fields = [cfg.prompt_field, cfg.response_field] if cfg.prompt_field else [cfg.text_field]
    for f in fields:
        if not isinstance(record.get(f), str):
            raise ValueError(f"{where} has no string field {f!r} (keys: {sorted(record)})")
    if cfg.prompt_field:
        return encode_document(
            tokenizer, record[cfg.response_field], record[cfg.prompt_field], cfg.append_eos
        )
    return encode_document(tokenizer, record[cfg.text_field], None, cfg.append_eos)


class HFDocuments:
    """A Hugging Face dataset by name (``datasets`` is imported here, only when used).

    Streaming datasets are shuffled with a seeded buffer and re-seeded each epoch; resuming
    skips ``start`` records (no tokenization, but the records are still downloaded).
    """

    def __init__(self, cfg: DataConfig, split: str, tokenizer: Any) -> None:
        try:
            import datasets
        except ImportError as e:
            raise ImportError("data.source = 'hf' needs the datasets package") from e
        self.cfg, self.tokenizer = cfg, tokenizer
        self.dataset = datasets.load_dataset(
            cfg.hf_name, cfg.hf_config, split=split, streaming=cfg.hf_streaming
        )

    def documents(self, epoch: int, start: int, shuffle: bool, seed: int) -> Iterator[Document]:
        ds = self.dataset
        if self.cfg.hf_streaming:
            if shuffle:
                ds = ds.shuffle(seed=_seed(seed) % 2**32, buffer_size=10_000)
                ds.set_epoch(epoch)
            ds = ds.skip(start)
        else:
            if shuffle:
                ds = ds.shuffle(seed=_seed(seed, epoch) % 2**32)
            ds = ds.select(range(start, len(ds)))
        for i, record in enumerate(ds):
            yield document_from_record(
                record, self.tokenizer, self.cfg, f"{self.cfg.hf_name} record {start + i}"
            )


class PackedStream:
    """Documents concatenated and cut into sequences of ``seq_len + 1`` tokens.

    Consecutive windows share one token (the last target of a window is the first input of the
    next), so every token after the first is predicted exactly once. Attention is not masked at
    document boundaries (the usual pre-training packing). Epochs repeat forever.
    """

    def __init__(
        self, source: DocumentSource, seq_len: int, batch_size: int, shuffle: bool, seed: int
    ) -> None:
        self.source, self.seq_len, self.batch_size = source, seq_len, batch_size
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.doc, self.offset = 0, 0, 0
        self.carry: tuple[int, bool] | None = None
        self._iter: Iterator[Document] | None = None
        self._current: Document | None = None

    def state_dict(self) -> dict[str, Any]:
        """The stream position (JSON-serialisable)."""
        return {
            "kind": "packed",
            "epoch": self.epoch,
            "doc": self.doc,
            "offset": self.offset,
            "carry": list(self.carry) if self.carry is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "packed":
            raise ValueError(f"data state {state!r} is not a packed-stream state")
        self.epoch, self.doc, self.offset = state["epoch"], state["doc"], state["offset"]
        carry = state["carry"]
        self.carry = (int(carry[0]), bool(carry[1])) if carry is not None else None
        self._iter, self._current = None, None

    def _document(self) -> Document | None:
        """The document at the current position (None at the end of the epoch)."""
        if self._current is None:
            if self._iter is None:
                self._iter = self.source.documents(self.epoch, self.doc, self.shuffle, self.seed)
            self._current = next(self._iter, None)
        return self._current

    def _read(self, n: int) -> tuple[list[int], list[bool]]:
        ids: list[int] = []
        mask: list[bool] = []
        empty_epochs = 0
        while len(ids) < n:
            doc = self._document()
            if doc is None:  # end of epoch
                empty_epochs = empty_epochs + 1 if not ids else 0
                if empty_epochs > 1:
                    raise ValueError("the training data holds no tokens")
                self.epoch, self.doc, self.offset, self._iter = self.epoch + 1, 0, 0, None
                continue
            tokens, doc_mask = doc
            take = tokens[self.offset : self.offset + n - len(ids)]
            ids.extend(take)
            if doc_mask is None:
                mask.extend([True] * len(take))
            else:
                mask.extend(doc_mask[self.offset : self.offset + len(take)])
            self.offset += len(take)
            if self.offset >= len(tokens):
                self.doc, self.offset, self._current = self.doc + 1, 0, None
        return ids, mask

    def next_sequence(self) -> tuple[list[int], list[bool]]:
        """``seq_len + 1`` tokens and their loss-mask values."""
        if self.carry is None:
            ids, mask = self._read(self.seq_len + 1)
        else:
            ids, mask = self._read(self.seq_len)
            ids, mask = [self.carry[0], *ids], [self.carry[1], *mask]
        self.carry = (ids[-1], mask[-1])
        return ids, mask

    def next_batch(self) -> Batch:
        """The next global batch: (B, seq_len) inputs, targets, loss mask."""
        rows = [self.next_sequence() for _ in range(self.batch_size)]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.long)  # (B, N+1)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.bool)  # (B, N+1)
        return Batch(tokens[:, :-1], tokens[:, 1:], mask[:, 1:])


# ---------------------------------------------------------------------------------------------
# synthetic tasks


def import_object(spec: str) -> Any:
    """The object named by ``"package.module:name"`` (ValueError naming it when it is missing)."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import {spec!r}: {e}") from e


def build_task(name: str, task_args: dict[str, Any], seed: int) -> Any:
    """A synthetic task: a name known to :func:`iha.tasks.make_task`, or ``module:Class``."""
    try:
        if ":" in name:
            return import_object(name)(seed=seed, **task_args)
        from iha.tasks import make_task

        return make_task(name, seed=seed, **task_args)
    except TypeError as e:
        raise ValueError(f"data.task_args do not fit task {name!r}: {e}") from e


class TaskStream:
    """Global batches from a synthetic task's train split, resumable by batch count.

    Streaming splits are fast-forwarded on resume (the task generators are cheap); fixed-size
    splits run epoch after epoch, each shuffled by its own seed, dropping the last short batch.
    """

    def __init__(self, task: Any, split: str, batch_size: int, seed: int) -> None:
        if getattr(task, "input_kind", "tokens") != "tokens" or task.output == "regression":
            raise ValueError(
                f"task {task.name!r} has {task.input_kind} inputs and {task.output} outputs; "
                "iha train handles token inputs with classification or binary outputs"
            )
        self.task, self.split, self.batch_size, self.seed = task, split, batch_size, seed
        self.epoch, self.index = 0, 0
        self._iter: Iterator[Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "task", "epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "task":
            raise ValueError(f"data state {state!r} is not a task-stream state")
        self.epoch, self.index, self._iter = state["epoch"], state["index"], None

    def _open(self) -> None:
        seed = _seed(self.seed, self.epoch)
        self._iter = self.task.batches(self.split, self.batch_size, seed=seed)
        for _ in range(self.index):
            next(self._iter)

    def next_batch(self) -> Batch:
        if self._iter is None:
            self._open()
        assert self._iter is not None
        batch = next(self._iter, None)
        if batch is None or len(batch) < self.batch_size:
            if self.index == 0:
                raise ValueError(
                    f"task split {self.split!r} holds fewer than batch_size={self.batch_size} "
                    "examples"
                )
            self.epoch, self.index = self.epoch + 1, 0
            self._open()
            return self.next_batch()
        self.index += 1
        return task_batch(batch)


def task_batch(batch: Any) -> Batch:
    """A :class:`iha.tasks.base.TaskBatch` as a :class:`Batch` (binary labels -> class ids)."""
    return Batch(batch.inputs.long(), batch.targets.long(), batch.loss_mask.bool())


# ---------------------------------------------------------------------------------------------
# assembling train and validation data from a DataConfig


@dataclass
class TrainData:
    """What the trainer needs: a resumable train stream and a fixed list of validation batches."""

    train: PackedStream | TaskStream
    val: list[Batch]
    vocab_size: int  # ids the data can contain (the model's vocabulary must cover them)
    seq_len: int  # tokens per sequence (data.seq_len, or the task's own length)
    notes: list[str] = field(default_factory=list)  # what the user should know (bad bytes...)


def build_data(
    cfg: DataConfig, tokenizer: Any, batch_size: int, seed: int, val_batches: int
) -> TrainData:
    """Train stream and validation batches for ``cfg`` (global batches of ``batch_size``).

    The validation batches are drawn once, in a fixed order, from held-out documents
    (``val_path``, or a fraction ``val_fraction`` of the documents chosen by a fixed seed), the
    task's val split, or the dataset's ``hf_val_split``; none when there is no held-out data.
    """
    if cfg.source == "synthetic":
        task = build_task(cfg.task or "", cfg.task_args, seed)
        train = TaskStream(task, "train", batch_size, seed)
        # the val split in stored order; only full batches, so that every rank gets its rows
        val_iter = task.batches("val", batch_size, seed=None)
        val = [task_batch(b) for b in itertools.islice(val_iter, val_batches)]
        val = [b for b in val if b.inputs.shape[0] == batch_size]
        vocab = max(int(task.vocab_size or 0), int(task.num_classes), 2)
        return TrainData(train, val, vocab, int(task.seq_len))

    val_source: DocumentSource | None = None
    notes: list[str] = []
    if cfg.source in ("text", "jsonl"):
        docs = LocalFiles(cfg.path or "", cfg.source, tokenizer, cfg)
        notes.extend(docs.notes)
        if cfg.val_path:
            val_source = LocalFiles(cfg.val_path, cfg.source, tokenizer, cfg)
            notes.extend(val_source.notes)
            train_source: DocumentSource = docs
        elif cfg.val_fraction > 0 and val_batches:
            n = len(docs)
            n_val = max(1, round(cfg.val_fraction * n))
            if n - n_val < 1:
                raise ValueError(
                    f"data.path holds {n} document(s): too few to hold out data.val_fraction="
                    f"{cfg.val_fraction}; set data.val_path or data.val_fraction = 0"
                )
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
            val_source = Subset(docs, sorted(perm[:n_val]))
            train_source = Subset(docs, sorted(perm[n_val:]))
        else:
            train_source = docs
    elif cfg.source == "hf":
        train_source = HFDocuments(cfg, cfg.hf_split, tokenizer)
        if cfg.hf_val_split and val_batches:
            val_source = HFDocuments(cfg, cfg.hf_val_split, tokenizer)
    else:
        factory = import_object(cfg.source)
        train_source = factory(cfg, tokenizer, "train", seed)
        val_source = factory(cfg, tokenizer, "val", seed) if val_batches else None
    train = PackedStream(train_source, cfg.seq_len, batch_size, cfg.shuffle, seed)
    val: list[Batch] = []
    if val_source is not None and val_batches:
        vstream = PackedStream(val_source, cfg.seq_len, batch_size, False, 0)
        val = [vstream.next_batch() for _ in range(val_batches)]
    return TrainData(train, val, int(tokenizer.vocab_size), cfg.seq_len, notes)
