"""Supervised fine-tuning data in the OpenThoughts schema: chat formatting, assistant-only loss
mask, packing, and a data source for ``iha train``.

A record of ``open-thoughts/OpenThoughts-114k`` holds ``system`` (a system prompt) and
``conversations``, a list of ``{"from": "user" | "assistant", "value": text}``; records in the
common ``messages`` schema (``[{"role", "content"}]``) are accepted too.

:func:`encode_chat` renders a conversation with the tokenizer's chat template and returns token
ids with a loss mask that is True exactly on the assistant tokens: for every assistant message,
the span from the end of the generation prompt (``template(messages[:i],
add_generation_prompt=True)``) to the end of ``template(messages[:i+1])``, i.e. the assistant's
text plus the template's end-of-turn marker (so the model learns to stop), never the role
header. The text is encoded span by span, so token boundaries fall exactly on the span
boundaries (for BPE tokenizers this can differ from encoding the whole string at a boundary
token; it never moves a token across the mask).

Training: set ``data.source = "iha.eval.sft_data:sft_source"`` in an ``iha train`` config;
``data.path`` is a local JSONL file (or directory of them), or leave it unset to stream the hub
dataset ``data.hf_name`` (default OpenThoughts-114k); the training engine packs the documents.
:func:`pack` does the same packing standalone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iha.eval.data import check_limit, load_hub_dataset, read_jsonl
from iha.train.data import IndexedDocuments, list_files
from iha.validate import check_int

HUB_NAME = "open-thoughts/OpenThoughts-114k"

_ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
}

Messages = list[dict[str, str]]


def record_to_messages(record: dict[str, Any]) -> Messages:
    """An OpenThoughts record (``system`` + ``conversations``) or a ``messages`` record ->
    a list of ``{"role", "content"}`` messages (system first when present and non-empty)."""
    if not isinstance(record, dict):
        raise ValueError(f"record must be a dict, got {type(record).__name__}")
    if "conversations" in record:
        turns = [(t.get("from"), t.get("value")) for t in record["conversations"]]
        system = record.get("system")
    elif "messages" in record:
        turns = [(t.get("role"), t.get("content")) for t in record["messages"]]
        system = None
    else:
        raise ValueError(
            f"record needs 'conversations' (OpenThoughts) or 'messages', has {sorted(record)}"
        )
    messages: Messages = []
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    for i, (role, content) in enumerate(turns):
        if role not in _ROLE_ALIASES:
            raise ValueError(
                f"turn {i}: role {role!r} is not one of {', '.join(sorted(_ROLE_ALIASES))}"
            )
        if not isinstance(content, str):
            raise ValueError(f"turn {i}: content must be a string, got {type(content).__name__}")
        messages.append({"role": _ROLE_ALIASES[role], "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("conversation has no assistant turn: nothing to train on")
    return messages


def load_sft_records(
    path: str | Path | None = None, split: str = "train", limit: int | None = None
) -> list[Messages]:
    """Conversations from a local JSONL file, else from the hub (OpenThoughts-114k; downloads
    the whole split; ``iha train`` streams it instead, see :func:`sft_source`)."""
    check_limit(limit)
    records = read_jsonl(path) if path is not None else load_hub_dataset(HUB_NAME, split=split)
    return [record_to_messages(r) for r in (records[:limit] if limit else records)]


def encode_chat(
    tokenizer: Any, messages: Sequence[dict[str, str]], add_bos: bool = True
) -> tuple[list[int], list[bool]]:
    """Token ids of the chat-formatted conversation and its loss mask (True on assistant tokens).

    ``add_bos`` prepends the BOS token (mask False) unless the template already starts with it
    or the tokenizer uses none (``uses_bos`` False).
    Raises ValueError when the tokenizer's chat template is not prefix-stable (a shorter
    conversation does not render as a prefix of a longer one), since spans cannot then be found.
    """
    messages = list(messages)
    full = tokenizer.apply_chat_template(messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start_text = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True)
        end_text = tokenizer.apply_chat_template(messages[: i + 1], add_generation_prompt=False)
        if not (end_text.startswith(start_text) and full.startswith(end_text)):
            raise ValueError(
                f"the chat template of {tokenizer!r} is not prefix-stable at message {i}: "
                "cannot locate the assistant tokens"
            )
        spans.append((len(start_text), len(end_text)))
    ids: list[int] = []
    mask: list[bool] = []
    pos = 0
    for start, end in spans:
        for text, is_assistant in ((full[pos:start], False), (full[start:end], True)):
            if text:
                piece = tokenizer.encode(text)
                ids.extend(piece)
                mask.extend([is_assistant] * len(piece))
        pos = end
    if pos < len(full):
        piece = tokenizer.encode(full[pos:])
        ids.extend(piece)
        mask.extend([False] * len(piece))
    if add_bos and getattr(tokenizer, "uses_bos", True) and ids[:1] != [tokenizer.bos_token_id]:
        ids.insert(0, tokenizer.bos_token_id)
        mask.insert(0, False)
    return ids, mask


@dataclass
class PackedSequences:
    """Fixed-length training sequences: ``input_ids`` (S, L) int64, ``loss_mask`` (S, L) bool."""

    input_ids: torch.Tensor
    loss_mask: torch.Tensor


def pack(
    documents: Iterable[tuple[Sequence[int], Sequence[bool]]],
    seq_len: int,
    pad_token_id: int | None = None,
) -> PackedSequences:
    """Concatenate documents and cut the stream into sequences of ``seq_len`` tokens.

    The mask travels with its tokens. The last, partial sequence is dropped when
    ``pad_token_id`` is None, else padded with it (mask False). Attention is not masked at
    document boundaries (the usual packing; documents start with BOS).
    """
    check_int("seq_len", seq_len, 1)
    ids: list[int] = []
    mask: list[bool] = []
    for i, (doc_ids, doc_mask) in enumerate(documents):
        if len(doc_ids) != len(doc_mask):
            raise ValueError(
                f"document {i}: {len(doc_ids)} ids but {len(doc_mask)} loss-mask values"
            )
        ids.extend(int(t) for t in doc_ids)
        mask.extend(bool(m) for m in doc_mask)
    rest = len(ids) % seq_len
    if rest and pad_token_id is not None:
        ids.extend([pad_token_id] * (seq_len - rest))
        mask.extend([False] * (seq_len - rest))
    n = len(ids) // seq_len
    return PackedSequences(
        input_ids=torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len),
        loss_mask=torch.tensor(mask[: n * seq_len], dtype=torch.bool).view(n, seq_len),
    )


# ---------------------------------------------------------------- iha train data source


def sft_source(cfg: Any, tokenizer: Any, split: str, seed: int) -> Any:
    """``data.source = "iha.eval.sft_data:sft_source"``: chat documents with assistant-only loss.

    ``split="train"`` reads ``cfg.path`` (JSONL file, directory or glob) or, when unset, streams
    ``cfg.hf_name`` (default OpenThoughts-114k) split ``cfg.hf_split``; ``split="val"`` reads
    ``cfg.val_path`` or ``cfg.hf_val_split`` and is None when neither is set. ``seed`` is unused:
    the engine shuffles.
    """
    del seed
    if tokenizer is None:
        raise ValueError("sft_source needs a tokenizer (data.tokenizer)")
    path = cfg.path if split == "train" else cfg.val_path
    if path:
        return _LocalChatDocuments(path, tokenizer)
    if split != "train" and not cfg.hf_val_split:
        return None
    return _HubChatDocuments(
        cfg.hf_name or HUB_NAME,
        cfg.hf_config,
        cfg.hf_split if split == "train" else cfg.hf_val_split,
        tokenizer,
    )


class _LocalChatDocuments(IndexedDocuments):
    """Random-access chat documents from local JSONL files (records held in memory, encoded on
    read); the engine's seeded per-epoch permutation comes with :class:`IndexedDocuments`."""

    def __init__(self, path: str, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.records: list[Messages] = []
        for f in list_files(path, (".jsonl", ".json")):
            self.records.extend(record_to_messages(r) for r in read_jsonl(f))
        if not self.records:
            raise ValueError(f"data path {path!r} holds no conversations")

    def __len__(self) -> int:
        return len(self.records)

    def read(self, index: int) -> tuple[list[int], list[bool]]:
        return encode_chat(self.tokenizer, self.records[index])


class _HubChatDocuments:
    """A streamed hub dataset of chat records (``datasets`` imported only here)."""

    def __init__(self, name: str, config: str | None, split: str, tokenizer: Any) -> None:
        try:
            import datasets
        except ImportError as e:
            raise RuntimeError(
                f"streaming {name!r} needs the 'datasets' package (pip install datasets); "
                "or set data.path to a local JSONL file"
            ) from e
        self.tokenizer = tokenizer
        self.dataset = datasets.load_dataset(name, config, split=split, streaming=True)

    def documents(
        self, epoch: int, start: int, shuffle: bool, seed: int
    ) -> Iterator[tuple[list[int], list[bool]]]:
        ds = self.dataset
        if shuffle:
            ds = ds.shuffle(seed=(seed * 1_000_003 + epoch) % 2**32, buffer_size=10_000)
        for record in ds.skip(start):
            yield encode_chat(self.tokenizer, record_to_messages(dict(record)))
