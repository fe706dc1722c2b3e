"""Named model configs.

The paper's 2.4B model (section 5) is given as: 26 layers, d_model 2560, 20 heads of dim 128,
"FFN 10240", vocab 128256 (Llama-3 tokenizer), RoPE theta 500000, context 8192, "2.4B"
parameters. It does not say the MLP type, GQA, embedding tying or P. Two readings fit "2.4B";
both are presets, neither is "the paper's model":

* ``paper-2.4b-swiglu``: our Llama/Meta-Lingua reading. 10240 is the nominal 4 * d_model, whose
  SwiGLU width is 2/3 of it rounded up to a multiple of 256 (6912); tied embeddings: 2.39B
  parameters. (A SwiGLU of width 10240 would give 2.73B without embeddings, 3.05B tied.)
* ``paper-2.4b-mlp``: our literal reading. A plain GELU MLP of width 10240 (4 * d_model, two
  matrices); tied embeddings: 2.37B parameters.

Both keep P = H = 20 (the paper does not give P; ``num_pseudo_heads`` overrides it) and no GQA.
``paper-2.4b`` is a deprecated alias of ``paper-2.4b-swiglu`` (the preset's name before the
second reading existed). :func:`preset_assumptions` lists what each preset assumes.

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


_PAPER_2_4B: dict[str, Any] = dict(
    vocab_size=128256,
    hidden_size=2560,
    num_hidden_layers=26,
    num_attention_heads=20,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    tie_word_embeddings=True,
)

_PRESETS: dict[str, dict[str, Any]] = {
    "paper-2.4b-swiglu": dict(
        _PAPER_2_4B, mlp_type="swiglu", intermediate_size=lingua_ffn_size(PAPER_FFN_NOMINAL)
    ),
    "paper-2.4b-mlp": dict(_PAPER_2_4B, mlp_type="gelu", intermediate_size=PAPER_FFN_NOMINAL),
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


# Old names kept working: alias -> preset.
PRESET_ALIASES = {"paper-2.4b": "paper-2.4b-swiglu"}

_PAPER_STATED = (
    "stated by the paper: 26 layers, d_model 2560, 20 heads of 128, FFN 10240, vocab 128256, "
    "RoPE theta 500000, context 8192, about 2.4B parameters"
)
_PAPER_UNSTATED = (
    "assumed (the paper does not say): tied input/output embeddings; no GQA (20 key/value "
    "heads); P = H = 20 pseudo-heads in IHA layers"
)
_ASSUMPTIONS: dict[str, tuple[str, ...]] = {
    "paper-2.4b-swiglu": (
        "our reading of the paper's 2.4B model (Llama/Meta-Lingua convention)",
        _PAPER_STATED,
        "assumed: 'FFN 10240' is the nominal 4 * d_model; the MLP is SwiGLU of width "
        "2/3 * 10240 rounded up to 256 = 6912 (three matrices)",
        _PAPER_UNSTATED,
    ),
    "paper-2.4b-mlp": (
        "our literal reading of the paper's 2.4B model",
        _PAPER_STATED,
        "assumed: 'FFN 10240' is the width of a plain two-matrix MLP with GELU",
        _PAPER_UNSTATED,
    ),
}


def list_presets() -> list[str]:
    """Names accepted by :func:`get_preset` (deprecated aliases included).

    Returns:
        list[str]: the preset names.

    Example::

        >>> from iha.models import list_presets
        >>> "tiny" in list_presets()
        True
    """
    return list(_PRESETS) + list(PRESET_ALIASES)


def resolve_preset_name(name: str) -> str:
    """The preset an alias stands for (``paper-2.4b`` -> ``paper-2.4b-swiglu``), else ``name``."""
    return PRESET_ALIASES.get(name, name)


def preset_assumptions(name: str) -> tuple[str, ...]:
    """What a preset assumes beyond its source (empty for the small CPU presets).

    Args:
        name (str): a name of :func:`list_presets`.

    Returns:
        tuple[str, ...]: one sentence per assumption.

    Example::

        >>> from iha.models import preset_assumptions
        >>> preset_assumptions("tiny")
        ()
    """
    if resolve_preset_name(name) not in _PRESETS:
        raise ValueError(f"preset={name!r} is not known; expected one of {list_presets()}")
    return _ASSUMPTIONS.get(resolve_preset_name(name), ())


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """The named config, with ``overrides`` applied (e.g. ``attention_variant="iha"``).

    Args:
        name (str): a name of :func:`list_presets`.
        **overrides: ``ModelConfig`` fields to change.

    Returns:
        ModelConfig: the config (validated).

    Example::

        >>> from iha.models import get_preset
        >>> cfg = get_preset("tiny", attention_variant="iha", num_hidden_layers=5)
        >>> cfg.attention_variant, "".join(k[0] for k in cfg.layer_kinds())
        ('iha', 'iiiig')
    """
    key = resolve_preset_name(name)
    if key not in _PRESETS:
        raise ValueError(f"preset={name!r} is not known; expected one of {list_presets()}")
    return ModelConfig.from_dict({**_PRESETS[key], **overrides})
