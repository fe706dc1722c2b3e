"""``ModelConfig``: one decoder-LM config for the paper's five attention variants.

Field names follow Hugging Face (``hidden_size``, ``num_attention_heads``, ...). The attention of
each layer comes from ``attention_variant`` (or an explicit ``layer_schedule``), resolved by
:meth:`ModelConfig.layer_kinds` into one *layer kind* per layer:

=============  ======  =====================================================================
kind           letter  layer
=============  ======  =====================================================================
global         G       causal GQA multi-head attention over the whole prefix
local          L       the same with a sliding window of ``sliding_window`` tokens
talking_heads  T       talking-heads attention (Shazeer et al. 2020), global
diff           D       differential attention (Ye et al. 2024), global
iha_local      I       IHA with a sliding window of ``iha_window`` tokens (the paper's IHA layer)
iha_global     H       IHA over the whole prefix
=============  ======  =====================================================================

Variants: ``global`` = G every layer; ``global_local`` = LLLLG repeated; ``talking_heads`` = T;
``diff`` = D; ``iha`` = IIIIG repeated (the paper's FLOP-matched schedule: the fifth layer is
plain global MHA, as the paper's cost formula charges it H N^2 d); ``iha_global`` = H.
A schedule shorter than ``num_hidden_layers`` is repeated (26 layers of LLLLG end in L); a
variant's pattern is cut for fewer than 5 layers (a 2-layer ``iha`` model is II). An explicit
``layer_schedule`` longer than ``num_hidden_layers`` is an error.

Long contexts: ``iha_window`` is a stored number of tokens. Left as None it is computed once, when
the config is made, from the pretraining context (N / (2 P^2)) and kept from then on:
``replace(max_position_embeddings=...)`` and ``to_dict``/``from_dict`` keep it, so extending the
context never changes the model. ``rope_scaling`` (``transformers`` conventions, see
:mod:`iha.rope`) changes RoPE for context extension; its lengths are in tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from iha.attention import COLLAPSE_MODES
from iha.functional import BACKEND_NAMES, POSITION_MODES
from iha.rope import check_rope_scaling
from iha.validate import check_choice, check_int, check_positive_number

VARIANTS = ("global", "global_local", "talking_heads", "diff", "iha", "iha_global")
LAYER_KINDS = ("global", "local", "talking_heads", "diff", "iha_local", "iha_global")
KIND_LETTERS = {
    "G": "global",
    "L": "local",
    "T": "talking_heads",
    "D": "diff",
    "I": "iha_local",
    "H": "iha_global",
}
LETTER_OF_KIND = {kind: letter for letter, kind in KIND_LETTERS.items()}
VARIANT_SCHEDULES = {
    "global": "G",
    "global_local": "LLLLG",
    "talking_heads": "T",
    "diff": "D",
    "iha": "IIIIG",
    "iha_global": "H",
}
IHA_COLLAPSES = COLLAPSE_MODES
IHA_MASKS = ("flat", "token")  # a decoder is causal: the module's masks without "none"
IHA_POSITIONS = POSITION_MODES
MLP_TYPES = ("swiglu", "gelu")  # gated down(silu(gate x) * up x), or plain down(gelu(up x))


@dataclass
class ModelConfig:
    """A Llama-style decoder LM (RMSNorm, SwiGLU, RoPE) with a per-layer attention choice.

    See the module docstring for ``attention_variant`` and ``layer_schedule``. Field names
    follow Hugging Face; every field is checked when the config is made (``ValueError`` naming
    it).

    Args:
        vocab_size (int): token ids 0 .. vocab_size - 1. Default: 259.
        hidden_size (int): model width D. Default: 64.
        num_hidden_layers (int): decoder blocks. Default: 2.
        num_attention_heads (int): query heads H (D divisible by H, D / H even). Default: 4.
        num_key_value_heads (int, optional): key/value heads G dividing H. Default: ``None``
            (G = H, no GQA).
        intermediate_size (int, optional): MLP width. Default: ``None`` (8/3 D rounded up to
            a multiple of 8).
        max_position_embeddings (int): the training context N (the IHA window derives from
            it). Default: 256.
        rope_theta (float): RoPE base. Default: 10000.0.
        rope_scaling (dict, optional): ``transformers``-style RoPE scaling rule (linear,
            dynamic, yarn, llama3; lengths in tokens). Default: ``None``.
        rms_norm_eps (float): RMSNorm epsilon. Default: 1e-5.
        tie_word_embeddings (bool): share the input embedding and the LM head. Default:
            ``False``.
        attention_variant (str): one of ``iha.models.VARIANTS``: ``"global"`` (default),
            ``"global_local"``, ``"talking_heads"``, ``"diff"``, ``"iha"`` (the paper's
            IIIIG schedule), ``"iha_global"``.
        num_pseudo_heads (int, optional): P of the IHA layers. Default: ``None`` (P = H).
        sliding_window (int): window in tokens of the ``"local"`` MHA layers. Default: 512.
        iha_window (int, optional): window in tokens of the ``"iha_local"`` layers. Default:
            ``None``: N / (2 P^2), computed once and stored.
        layer_schedule (str or list, optional): an explicit schedule, letters (``"LLLLG"``,
            see ``KIND_LETTERS``) or kind names; repeated to ``num_hidden_layers``. Default:
            ``None`` (the variant's).
        iha_collapse (str): ``"global"`` (default) or ``"per_head"``.
        iha_mask (str): ``"flat"`` (default) or ``"token"`` (a decoder is causal).
        iha_positions (str): ``"virtual"`` (default) or ``"token"``.
        initializer_range (float): std of the normal init of linears and embeddings.
            Default: 0.02.
        attention_backend (str): ``iha.functional`` backend of the IHA and MHA-family layers.
            Default: ``"auto"``.
        mlp_type (str): ``"swiglu"`` (default, Llama) or ``"gelu"`` (plain two-matrix MLP).

    Example::

        >>> from iha.models import ModelConfig
        >>> cfg = ModelConfig(hidden_size=32, num_hidden_layers=5, attention_variant="iha",
        ...                   num_pseudo_heads=2, max_position_embeddings=64)
        >>> cfg.layer_kinds()[-2:], cfg.iha_window  # 64 / (2 * 2^2)
        (['iha_local', 'global'], 8)
    """

    vocab_size: int = 259
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None  # None = num_attention_heads (no GQA)
    intermediate_size: int | None = None  # None = 8/3 * hidden rounded up to a multiple of 8
    max_position_embeddings: int = 256  # training context N
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # iha.rope rules: linear, dynamic, yarn, llama3
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    attention_variant: str = "global"
    num_pseudo_heads: int | None = None  # P of IHA layers; None = num_attention_heads
    sliding_window: int = 512  # window (tokens) of "local" MHA layers
    iha_window: int | None = None  # "iha_local" window (tokens); None: N / (2 P^2), then stored
    layer_schedule: str | list[str] | None = None  # letters ("LLLLG") or kind names
    iha_collapse: str = "global"
    iha_mask: str = "flat"
    iha_positions: str = "virtual"
    initializer_range: float = 0.02
    attention_backend: str = "auto"  # iha.functional backend of IHA and MHA-family layers
    mlp_type: str = "swiglu"  # "swiglu" (Llama) or "gelu" (plain two-matrix MLP, GPT style)

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
            "sliding_window",
        ):
            check_int(name, getattr(self, name))
        for name in ("num_key_value_heads", "intermediate_size", "num_pseudo_heads", "iha_window"):
            check_int(name, getattr(self, name), allow_none=True)
        H, G = self.num_attention_heads, self.n_kv_heads
        if self.hidden_size % H:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={H}"
            )
        if H % G:
            raise ValueError(f"num_key_value_heads={G} must divide num_attention_heads={H}")
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim = hidden_size / num_attention_heads = {self.head_dim} must be even "
                "(RoPE rotates pairs of dimensions)"
            )
        for name in ("rope_theta", "rms_norm_eps", "initializer_range"):
            check_positive_number(name, getattr(self, name))
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(f"tie_word_embeddings={self.tie_word_embeddings!r} must be a bool")
        check_choice("attention_variant", self.attention_variant, VARIANTS)
        check_choice("iha_collapse", self.iha_collapse, IHA_COLLAPSES)
        check_choice("iha_mask", self.iha_mask, IHA_MASKS)
        check_choice("iha_positions", self.iha_positions, IHA_POSITIONS)
        check_choice("attention_backend", self.attention_backend, BACKEND_NAMES)
        check_choice("mlp_type", self.mlp_type, MLP_TYPES)
        self.rope_scaling = check_rope_scaling(self.rope_scaling)
        if self.iha_window is None:  # computed once, from the pretraining context
            self.iha_window = max(1, self.max_position_embeddings // (2 * self.n_pseudo**2))
        if isinstance(self.layer_schedule, tuple):
            self.layer_schedule = list(self.layer_schedule)
        kinds = self.layer_kinds()  # validates the schedule
        if "diff" in kinds and (H % 2 or G % 2):
            raise ValueError(
                f"diff layers pair heads: num_attention_heads={H} and num_key_value_heads={G} "
                "must both be even"
            )

    # ------------------------------------------------------------------ derived quantities
    @property
    def n_kv_heads(self) -> int:
        """G: key/value heads."""
        return (
            self.num_attention_heads
            if self.num_key_value_heads is None
            else (self.num_key_value_heads)
        )

    @property
    def head_dim(self) -> int:
        """d = hidden_size / num_attention_heads."""
        return self.hidden_size // self.num_attention_heads

    @property
    def n_pseudo(self) -> int:
        """P: pseudo-heads per head in IHA layers."""
        return (
            self.num_attention_heads if self.num_pseudo_heads is None else (self.num_pseudo_heads)
        )

    @property
    def ffn_size(self) -> int:
        """MLP hidden size: ``intermediate_size``, else 4 * hidden for ``mlp_type="gelu"`` and
        8/3 * hidden rounded up to 8 for SwiGLU (the same parameters as a 4x plain MLP)."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        if self.mlp_type == "gelu":
            return 4 * self.hidden_size
        ideal = -(-8 * self.hidden_size // 3)  # ceil(8/3 * hidden)
        return -(-ideal // 8) * 8

    @property
    def iha_window_tokens(self) -> int:
        """Window (tokens) of ``iha_local`` layers: the stored ``iha_window``.

        Unless given, it was set to max(1, N // (2 P^2)) when the config was made (N = the
        ``max_position_embeddings`` of that moment, the pretraining context).
        """
        return self.iha_window

    def layer_kinds(self) -> list[str]:
        """The attention kind of every layer (see the module docstring)."""
        sched = self.layer_schedule
        if sched is None:
            sched = VARIANT_SCHEDULES[self.attention_variant]
        if isinstance(sched, str):
            bad = sorted(set(sched) - set(KIND_LETTERS))
            if not sched or bad:
                legend = ", ".join(f"{k}={v}" for k, v in KIND_LETTERS.items())
                raise ValueError(
                    f"layer_schedule={sched!r} must be a non-empty string of the letters "
                    f"{''.join(KIND_LETTERS)} ({legend})"
                )
            kinds = [KIND_LETTERS[c] for c in sched]
        elif isinstance(sched, list) and sched:
            for i, kind in enumerate(sched):
                if kind not in LAYER_KINDS:
                    raise ValueError(
                        f"layer_schedule[{i}]={kind!r} is not supported; expected one of "
                        f"{list(LAYER_KINDS)}"
                    )
            kinds = list(sched)
        else:
            raise ValueError(
                f"layer_schedule={sched!r} must be None, a string of letters or a non-empty list "
                "of layer kinds"
            )
        L = self.num_hidden_layers
        if self.layer_schedule is not None and len(kinds) > L:
            raise ValueError(
                f"layer_schedule has {len(kinds)} entries, more than num_hidden_layers={L}"
            )
        return [kinds[i % len(kinds)] for i in range(L)]

    def schedule_string(self) -> str:
        """The resolved schedule as letters, one per layer (e.g. ``"IIIIGIIIIG"``)."""
        return "".join(LETTER_OF_KIND[k] for k in self.layer_kinds())

    def layer_window(self, kind: str) -> int | None:
        """Window in tokens of a layer of this kind (None = global)."""
        if kind == "local":
            return self.sliding_window
        if kind == "iha_local":
            return self.iha_window_tokens
        return None

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (``from_dict(to_dict())`` round-trips)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(out["layer_schedule"], list):
            out["layer_schedule"] = list(out["layer_schedule"])
        if out["rope_scaling"] is not None:
            out["rope_scaling"] = dict(out["rope_scaling"])
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a dict; an unknown key raises ValueError naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown ModelConfig key(s) {unknown}; accepted keys: {sorted(names)}"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        return ModelConfig.from_dict({**self.to_dict(), **changes})
