"""Named model configs.

``paper-2.4b`` is the paper's model (section 5): 26 layers, d_model 2560, 20 heads of 128, vocab
128256 (Llama-3 tokenizer), RoPE theta 500000, context 8192. The paper gives "FFN 10240" and
"2.4B" but not the MLP type, GQA or embedding tying. A SwiGLU MLP of width 10240 would give
2.73B parameters without embeddings (3.05B tied, 3.38B untied), far from 2.4B. The preset reads
10240 as the nominal 4 * d_model of Llama/Meta-Lingua code, whose SwiGLU width is 2/3 of it
rounded up to a multiple of 256 (6912), and ties the embeddings: 2.39B parameters.
``docs/models.md`` lists the alternatives with their counts. The paper does not give P; the
preset keeps the default P = H = 20 (``num_pseudo_heads`` overrides it).

Small CPU presets: ``tiny`` (tests, seconds) and ``small`` (benchmarks, minutes); both use the
259-token byte vocabulary of ``iha.tokenizers.ByteTokenizer``.
"""

from __future__ import annotations

from typing import Any

from iha.models.config import ModelConfig

PAPER_FFN_NOMINAL = 10240


def lingua_ffn_size(nominal: int, multiple_of: int = 256) -> int:
    """SwiGLU width from a nominal FFN size: 2/3 of it, rounded up to ``multiple_of``."""
    width = int(2 * nominal / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


_PRESETS: dict[str, dict[str, Any]] = {
    "paper-2.4b": dict(
        vocab_size=128256,
        hidden_size=2560,
        num_hidden_layers=26,
        num_attention_heads=20,
        intermediate_size=lingua_ffn_size(PAPER_FFN_NOMINAL),
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        vocab_size=259,
        hidden_size=64,
        num_hidden_layers=5,
        num_attention_heads=4,
        max_position_embeddings=128,
        sliding_window=32,
        num_pseudo_heads=2,
    ),
    "small": dict(
        vocab_size=259,
        hidden_size=256,
        num_hidden_layers=10,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        sliding_window=256,
        num_pseudo_heads=4,
    ),
}


def list_presets() -> list[str]:
    """Names accepted by :func:`get_preset`."""
    return list(_PRESETS)


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """The named config, with ``overrides`` applied (e.g. ``attention_variant="iha"``)."""
    if name not in _PRESETS:
        raise ValueError(f"preset={name!r} is not known; expected one of {list_presets()}")
    return ModelConfig.from_dict({**_PRESETS[name], **overrides})
