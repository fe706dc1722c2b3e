"""Tokenizers behind one small interface: a built-in byte tokenizer and a Hugging Face wrapper.

Everything in ``iha.eval`` (prompt sizing, chat formatting, SFT masking, decoding of samples)
talks to a tokenizer only through the :class:`Tokenizer` protocol below, so a tiny model trained
on bytes and a Llama-3 checkpoint are evaluated by the same code.

``load_tokenizer("byte")`` gives :class:`ByteTokenizer` (no download, always available); any
other name is a local directory or a hub name handed to
``transformers.AutoTokenizer.from_pretrained`` and wrapped in :class:`HFTokenizer`.
:func:`hf_byte_tokenizer` builds the byte tokenizer as a ``transformers`` tokenizer (for
exported models), from the same ids, special tokens and chat template.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

CHAT_ROLES = ("system", "user", "assistant")


@runtime_checkable
class Tokenizer(Protocol):
    """The interface every tokenizer used by ``iha`` provides."""

    vocab_size: int
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    uses_bos: bool  # whether sequences should start with bos_token_id

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False
    ) -> str: ...


def _check_messages(messages: Sequence[dict[str, str]]) -> None:
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in CHAT_ROLES:
            raise ValueError(
                f"messages[{i}]['role']={m['role']!r} is not one of {', '.join(CHAT_ROLES)}"
            )


def plain_chat_template(
    messages: Sequence[dict[str, str]], add_generation_prompt: bool, end_of_turn: str
) -> str:
    """The simple chat template used when a tokenizer has none of its own.

    Every message is rendered as ``<|{role}|>\\n{content}`` followed by ``\\n`` for system and
    user messages and by ``end_of_turn`` (the end-of-sequence token text) for assistant messages,
    so that a model trained on it learns to stop. ``add_generation_prompt`` appends
    ``<|assistant|>\\n``. Example::

        <|system|>\\nBe brief.\\n<|user|>\\n2+2?\\n<|assistant|>\\n4<|eos|>

    The role markers are plain text, not special tokens.
    """
    _check_messages(messages)
    parts = []
    for m in messages:
        tail = end_of_turn if m["role"] == "assistant" else "\n"
        parts.append(f"<|{m['role']}|>\n{m['content']}{tail}")
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


class ByteTokenizer:
    """UTF-8 bytes as tokens: ids 0-255 are bytes, then ``<|bos|>``, ``<|eos|>``, ``<|pad|>``.

    ``encode`` turns the literal strings ``<|bos|>``, ``<|eos|>`` and ``<|pad|>`` found in the
    text into their special ids (as Hugging Face tokenizers do with their special tokens), which
    is what lets the chat template end an assistant turn with a real end-of-sequence token.
    ``decode`` drops special ids (or renders them as those strings with
    ``skip_special_tokens=False``) and decodes invalid UTF-8 with replacement characters.
    """

    SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>")

    def __init__(self) -> None:
        self.bos_token_id = 256
        self.eos_token_id = 257
        self.pad_token_id = 258
        self.vocab_size = 259
        self.uses_bos = True
        self.eos_token = "<|eos|>"
        self._special_to_id = {s: 256 + i for i, s in enumerate(self.SPECIAL_TOKENS)}
        self._id_to_special = {i: s for s, i in self._special_to_id.items()}
        self._special_re = re.compile("|".join(re.escape(s) for s in self.SPECIAL_TOKENS))

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=259)"

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text -> token ids (UTF-8 bytes, special-token strings mapped to their ids)."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = [self.bos_token_id] if add_bos else []
        pos = 0
        for match in self._special_re.finditer(text):
            ids.extend(text[pos : match.start()].encode("utf-8"))
            ids.append(self._special_to_id[match.group()])
            pos = match.end()
        ids.extend(text[pos:].encode("utf-8"))
        if add_eos:
            ids.append(self.eos_token_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Token ids -> text. Ids outside [0, vocab_size) raise ValueError."""
        out: list[str] = []
        buf = bytearray()
        for t in ids:
            t = int(t)
            if 0 <= t < 256:
                buf.append(t)
            elif t in self._id_to_special:
                out.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
                if not skip_special_tokens:
                    out.append(self._id_to_special[t])
            else:
                raise ValueError(f"token id {t} is outside the byte vocabulary [0, 259)")
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False
    ) -> str:
        """Render messages with :func:`plain_chat_template` (assistant turns end in ``<|eos|>``)."""
        return plain_chat_template(messages, add_generation_prompt, self.eos_token)


# the Jinja form of plain_chat_template for the byte tokenizer
BYTE_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ '<|eos|>' }}{% else %}{{ '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def hf_byte_tokenizer() -> Any:
    """A ``transformers.PreTrainedTokenizerFast`` equal to :class:`~iha.tokenizers.ByteTokenizer`.

    Byte b has id b (a byte-level BPE without merges), ``<|bos|>``, ``<|eos|>``, ``<|pad|>`` are
    the special ids 256, 257, 258; ``add_special_tokens=True`` prepends ``<|bos|>`` (what the
    training data does); the chat template renders like ``ByteTokenizer.apply_chat_template``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_tok = ByteTokenizer()
    bos, eos, pad = ByteTokenizer.SPECIAL_TOKENS
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins of the bytes
    # ByteLevel's byte -> character table (GPT-2's): printable ASCII and Latin-1 map to
    # themselves, the other bytes to 256 + k in order
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {b: chr(b) for b in keep}
    table.update({b: chr(256 + k) for k, b in enumerate(b for b in range(256) if b not in table)})
    if set(table.values()) != set(alphabet):
        raise RuntimeError("tokenizers' ByteLevel alphabet is not the expected byte table")
    raw = Tokenizer(models.BPE(vocab={table[b]: b for b in range(256)}, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens(list(ByteTokenizer.SPECIAL_TOKENS))  # ids 256, 257, 258
    raw.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A $B",
        special_tokens=[(bos, byte_tok.bos_token_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        chat_template=BYTE_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


class HFTokenizer:
    """A ``transformers`` tokenizer behind the :class:`Tokenizer` interface.

    ``encode`` never lets the Hugging Face tokenizer add its own special tokens; ``add_bos`` and
    ``add_eos`` are explicit. A missing pad token falls back to eos. A tokenizer without a bos
    token (Qwen, for one) has ``uses_bos = False`` and ``bos_token_id`` falls back to eos.
    ``apply_chat_template`` uses the tokenizer's own chat template when it has one, else
    :func:`plain_chat_template` ending assistant turns with the eos token text.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos token")
        self.eos_token_id = int(eos)
        self.eos_token = tokenizer.eos_token
        bos = tokenizer.bos_token_id
        self.uses_bos = bos is not None
        self.bos_token_id = int(bos) if bos is not None else self.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else self.eos_token_id
        self.vocab_size = len(tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> HFTokenizer:
        """Load with ``AutoTokenizer.from_pretrained`` (local directory or hub name)."""
        try:
            from transformers import AutoTokenizer
        except ImportError as e:  # pragma: no cover - transformers is in the eval extra
            raise ImportError(
                "loading a Hugging Face tokenizer needs transformers: pip install 'iha[eval]'"
            ) from e
        return cls(AutoTokenizer.from_pretrained(name_or_path, **kwargs))

    def __repr__(self) -> str:
        return f"HFTokenizer({self.hf.name_or_path!r}, vocab_size={self.vocab_size})"

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text -> token ids, special-token strings in the text become their ids."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        ids = list(self.hf.encode(text, add_special_tokens=False))
        if add_bos:
            ids.insert(0, self.bos_token_id)
        if add_eos:
            ids.append(self.eos_token_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Token ids -> text."""
        return self.hf.decode([int(t) for t in ids], skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False
    ) -> str:
        """Render messages as text with the tokenizer's chat template (or the plain one)."""
        _check_messages(messages)
        if getattr(self.hf, "chat_template", None):
            return self.hf.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
            )
        return plain_chat_template(messages, add_generation_prompt, self.eos_token)


def load_tokenizer(name_or_path: str, **kwargs: Any) -> ByteTokenizer | HFTokenizer:
    """``"byte"`` -> :class:`ByteTokenizer`; anything else -> :class:`HFTokenizer`.

    Other names are passed to ``transformers.AutoTokenizer.from_pretrained`` (a local directory
    holding ``tokenizer.json`` / ``tokenizer_config.json``, or a hub name, which may download).
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(
            f"name_or_path must be 'byte' or a tokenizer directory / hub name, got {name_or_path!r}"
        )
    if name_or_path == "byte":
        return ByteTokenizer()
    return HFTokenizer.from_pretrained(name_or_path, **kwargs)
