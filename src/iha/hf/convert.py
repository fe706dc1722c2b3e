"""Retrofit pretrained Hugging Face Llama / Qwen2 / Mistral models with Interleaved Head Attention.

``convert(model)`` swaps the attention module of the chosen decoder layers for
:class:`IHAConvertedAttention`, which keeps the original ``q_proj``/``k_proj``/``v_proj``/``o_proj``
``nn.Linear`` modules (weights, Qwen2's q/k/v biases, grouped-query heads) and adds the IHA mixing
parameters ``alpha_q`` (H, H, P), ``alpha_k`` and ``alpha_v`` (G, G, P) and ``collapse`` (H, P) or
(H, H*P), initialised so that every pseudo head is a copy of its head and the collapse selects the
last copy.

Two modes:

- ``"exact"``: token mask and token positions. The layer computes exactly the original attention
  (same logits to float rounding) whatever RoPE scaling the model uses, because the queries and
  keys are rotated with the model's own ``position_embeddings`` (cos, sin) *before* the heads are
  mixed, and the core is called with ``rope_theta=None``. Under token positions this equals
  rotating after mixing, for any mixing weights, not only at the identity init: mixing combines
  heads of the same token, RoPE rotates every head of a token by the same angle, and the two
  linear maps commute (``rope(sum_m a_m x_m) = sum_m a_m rope(x_m)``).
  The HF cache holds the raw (unmixed) *rotated* keys and values, exactly what the original
  model caches.
- ``"paper"``: the paper's flat mask and virtual positions: pseudo token (n, p) sits at RoPE
  position n*P + p. RoPE must then be applied after mixing, so the HF cache holds the raw
  (unmixed) *un-rotated* keys and values, and the core rotates mixed pseudo queries and keys with
  the model's ``rope_theta`` and RoPE scaling read from its config (:func:`rope_from_hf_config`)
  through the one implementation of each rule in :mod:`iha.rope`: at virtual positions every
  length of the rule is multiplied by P, as for ``iha`` models. Not exact: measure the drift with
  ``iha convert-report`` (:mod:`iha.hf.convert_report`).

Masks and caches: the layers accept what ``transformers`` builds for them (no mask, a 4-D boolean
or additive causal mask with padding and sliding window, a 2-D padding mask) and check that it is
a causal (+ sliding window) mask with key padding, which is what the IHA core implements; other
masks (packed documents, static caches with empty slots, flex-attention block masks) raise a
ValueError. Sliding-window layers (Mistral, Qwen2 with ``use_sliding_window``) keep their window.

Saving: a converted model is an instance of a converted model type of :mod:`iha.hf.converted`
(``iha_llama``, ``iha_qwen2``, ``iha_mistral``), so ``save_pretrained`` writes a directory that
``AutoModelForCausalLM`` loads as the converted model (after ``import iha.hf``, or with
``trust_remote_code=True``), with the mixing parameters, ``config.iha_conversion`` (the per-layer
settings) and an ``auto_map`` shim. :func:`load_converted` also reads older directories.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iha.attention import COLLAPSE_MODES, init_exact_mha_mixing
from iha.cache import RowBuffer
from iha.functional import collapse_heads, interleaved_head_attention, mix_heads
from iha.masks import MaskSpec
from iha.optim import is_mixing_parameter
from iha.rope import apply_rope, check_rope_scaling
from iha.validate import check_choice, check_int

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")
CONVERTED_PREFIX = "iha_"  # model_type of a converted checkpoint, e.g. "iha_llama"
MODES = ("exact", "paper")
CONFIG_KEY = "iha_conversion"
FORMAT_VERSION = 1
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
FREEZE_MODES = ("none", "mixing")


class IHAConvertedAttention(nn.Module):
    """Drop-in replacement for a Llama/Qwen2/Mistral attention module that runs IHA.

    Called like the module it replaces: ``forward(hidden_states (B, N, D), position_embeddings
    (cos, sin) each (B, N, d), attention_mask, cache | past_key_values, **kwargs)`` returns
    ``(output (B, N, D), None)`` (attention weights are not materialised).

    Args:
        attn: the original attention module; its four projections are moved into this module.
        config: the model's config (heads, head_dim, dropout).
        n_pseudo: P, pseudo heads per head.
        mode: "exact" (token mask, token positions, rotation before mixing) or "paper" (flat
            mask, virtual positions, rotation after mixing).
        collapse: "global" (H, H*P) or "per_head" (H, P).
        init_noise: std of Gaussian noise added to the exact-MHA mixing init (0: exact).
        generator: random generator for that noise.
    """

    def __init__(
        self,
        attn: nn.Module,
        config: Any,
        *,
        n_pseudo: int,
        mode: str = "exact",
        collapse: str = "global",
        init_noise: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_choice("mode", mode, MODES)
        check_choice("collapse", collapse, COLLAPSE_MODES)
        self.config = config
        self.layer_idx = attn.layer_idx
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = attn.head_dim
        self.num_key_value_groups = self.n_heads // self.n_kv_heads
        self.scaling = attn.scaling
        self.attention_dropout = float(getattr(attn, "attention_dropout", 0.0) or 0.0)
        self.is_causal = True
        self.n_pseudo, self.mode, self.collapse_mode = n_pseudo, mode, collapse
        # Qwen2 stores the window on the layer (None on full-attention layers); Mistral reads it
        # from the config at every call; Llama has none.
        if hasattr(attn, "sliding_window"):
            self.sliding_window = attn.sliding_window
        else:
            self.sliding_window = getattr(config, "sliding_window", None)
        for name in PROJECTIONS:
            setattr(self, name, getattr(attn, name))
        if mode == "paper":  # the model's RoPE, rotated by the core at virtual positions
            self.rope_theta, self.rope_scaling = rope_from_hf_config(config)
        H, G, P = self.n_heads, self.n_kv_heads, n_pseudo
        weight = self.q_proj.weight
        kw = {"dtype": weight.dtype, "device": weight.device}
        self.alpha_q = nn.Parameter(torch.empty(H, H, P, **kw))
        self.alpha_k = nn.Parameter(torch.empty(G, G, P, **kw))
        self.alpha_v = nn.Parameter(torch.empty(G, G, P, **kw))
        self.collapse = nn.Parameter(torch.empty(H, P if collapse == "per_head" else H * P, **kw))
        self.reset_mixing(init_noise, generator)

    def reset_mixing(
        self, init_noise: float = 0.0, generator: torch.Generator | None = None
    ) -> None:
        """Exact-MHA init: alpha = identity for every pseudo index, collapse selects copy P-1.

        ``init_noise`` > 0 adds N(0, init_noise^2) noise to all four tensors, which breaks the
        symmetry between the P copies before fine-tuning (the layer is then no longer exact).
        """
        init_exact_mha_mixing(
            self.alpha_q,
            self.alpha_k,
            self.alpha_v,
            self.collapse,
            init_noise=init_noise,
            generator=generator,
        )

    def settings(self) -> dict[str, Any]:
        """The conversion settings of this layer, as stored in ``config.iha_conversion``."""
        return {
            "layer": self.layer_idx,
            "num_pseudo_heads": self.n_pseudo,
            "mode": self.mode,
            "collapse": self.collapse_mode,
        }

    def extra_repr(self) -> str:
        return (
            f"layer_idx={self.layer_idx}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
            f"n_pseudo={self.n_pseudo}, head_dim={self.head_dim}, mode={self.mode!r}, "
            f"collapse={self.collapse_mode!r}, sliding_window={self.sliding_window}"
        )

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, N, D)
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,  # (B, N, d) each
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        cache = cache if cache is not None else past_key_values
        B, N, _ = hidden_states.shape
        H, G, d = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(hidden_states).view(B, N, H, d).transpose(1, 2)  # (B, H, N, d)
        k = self.k_proj(hidden_states).view(B, N, G, d).transpose(1, 2)  # (B, G, N, d)
        v = self.v_proj(hidden_states).view(B, N, G, d).transpose(1, 2)  # (B, G, N, d)
        if self.mode == "exact":
            if position_embeddings is None:
                raise ValueError("position_embeddings (cos, sin) are required by converted layers")
            cos, sin = (t[:, None] for t in position_embeddings)  # (B, 1, N, d)
            # Rotation before mixing == rotation after mixing under token positions (module doc).
            q = apply_rope(q, cos, sin).to(v.dtype)
            k = apply_rope(k, cos, sin).to(v.dtype)
        dropout_p = self.attention_dropout if self.training else 0.0
        if cache is not None and self.mode == "exact":
            y = self._exact_cached(q, k, v, cache, attention_mask, dropout_p)
            y = y.transpose(1, 2).reshape(B, N, H * d)
            return self.o_proj(y), None
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, G, Nk, d): prefix + new tokens
        key_padding_mask = self._key_padding_mask(attention_mask, B, N, k.shape[2])
        if self.mode == "exact":
            y = interleaved_head_attention(
                q,
                k,
                v,
                self.alpha_q,
                self.alpha_k,
                self.alpha_v,
                self.collapse,
                mask="token",
                window=self.sliding_window,
                rope_theta=None,
                positions="token",
                position_offset=k.shape[2] - N,
                attention_mask=key_padding_mask,
                scale=self.scaling,
                dropout_p=dropout_p,
            )  # (B, H, N, d)
        else:
            y = self._paper_attention(q, k, v, key_padding_mask, dropout_p)
        y = y.transpose(1, 2).reshape(B, N, H * d)
        return self.o_proj(y), None

    def _exact_cached(
        self,
        q: torch.Tensor,  # (B, H, N, d), rotated
        k: torch.Tensor,  # (B, G, N, d), rotated
        v: torch.Tensor,
        cache: Any,
        attention_mask: Any,
        dropout_p: float,
    ) -> torch.Tensor:
        """Exact mode with a cache. Returns the collapsed outputs (B, H, N, d).

        The HF cache holds the raw rotated keys and values, as the original model's does. Under
        token positions a token's mixed pseudo keys and values never change once computed, so
        beside it this layer keeps them, token-major (B, G, L*P, d), in :class:`iha.KVCache`'s
        :class:`~iha.cache.RowBuffer` stored on the cache object: a decoding step mixes the new
        token only, appends it without copying the cache, and attends over the held pseudo keys
        (what its FLOPs say). The kept copy is used only while the HF cache still holds the very
        tensor it saw after the last step (any reordering, cropping or foreign prefix rebuilds
        it from the raw keys). The query rows of the H/G heads of a group share the group's
        keys: one attention call per group serves them all. A call without a cached prefix
        (prefill) runs the ordinary core.
        """
        B, H, N, d = q.shape
        G, P = self.n_kv_heads, self.n_pseudo
        layer = self.layer_idx
        kept = cache.__dict__.setdefault("_iha_pseudo_kv", {})
        held_before = _held_keys(cache, layer)
        k_all, v_all = cache.update(k, v, layer)  # raw (B, G, Nk, d): prefix + new tokens
        n_k = k_all.shape[2]
        state = kept.get(layer)
        if (
            state is not None
            and held_before is not None
            and state[0] is held_before
            and len(state[1]) >= n_k - N
        ):
            kt = state[1].append(mix_heads(k, self.alpha_k))  # (B, G, L*P, d)
            vt = state[2].append(mix_heads(v, self.alpha_v))
        else:  # a new or changed cache: mix what it holds once
            state = (None, RowBuffer(), RowBuffer())
            kt = state[1].append(mix_heads(k_all, self.alpha_k))
            vt = state[2].append(mix_heads(v_all, self.alpha_v))
        kt, vt = kt[:, :, kt.shape[2] - n_k * P :], vt[:, :, vt.shape[2] - n_k * P :]
        held_after = _held_keys(cache, layer)
        if held_after is None:  # an unknown cache type: nothing to check a kept copy against
            kept.pop(layer, None)
        else:
            state[1].keep_last(held_after.shape[2] * P)
            state[2].keep_last(held_after.shape[2] * P)
            kept[layer] = (held_after, state[1], state[2])
        key_padding_mask = self._key_padding_mask(attention_mask, B, N, n_k)
        if n_k == N:  # no cached prefix (prefill): the core, on the unmixed keys and values
            return interleaved_head_attention(
                q, k, v, self.alpha_q, self.alpha_k, self.alpha_v, self.collapse,
                mask="token", window=self.sliding_window, rope_theta=None, positions="token",
                attention_mask=key_padding_mask, scale=self.scaling, dropout_p=dropout_p,
            )  # (B, H, N, d)
        rows = (H // G) * N * P  # query rows of a group: (head in group, token, pseudo)
        qg = mix_heads(q, self.alpha_q).reshape(B, G, rows, d)
        allowed = alive = None
        window = self.sliding_window
        if N > 1 or key_padding_mask is not None or (window is not None and n_k > window):
            tokens = MaskSpec(
                "token", 1, N, n_k, q_start=n_k - N, k_start=0, window=window
            ).allowed(q.device)[None]  # (1, N, Nk)
            if key_padding_mask is not None:
                tokens = tokens & key_padding_mask[:, None, :]  # (B, N, Nk)
            allowed = (
                tokens[:, None, None, :, None, :, None]
                .expand(-1, 1, H // G, N, P, n_k, P)
                .reshape(tokens.shape[0], 1, rows, n_k * P)
            )
            alive = allowed.any(dim=-1, keepdim=True)
            allowed = allowed | ~alive  # a query with no key (padding) is zeroed below
        o = F.scaled_dot_product_attention(
            qg, kt, vt, attn_mask=allowed, scale=self.scaling, dropout_p=dropout_p
        )  # (B, G, rows, d)
        if alive is not None:
            o = o * alive
        return collapse_heads(o.reshape(B, H, N * P, o.shape[3]), self.collapse, P)

    def _paper_attention(
        self,
        q: torch.Tensor,  # (B, H, Nq, d), not rotated
        k: torch.Tensor,  # (B, G, Nk, d), not rotated
        v: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        dropout_p: float,
    ) -> torch.Tensor:
        """Flat mask, virtual positions: the IHA core with this model's RoPE at n*P + p."""
        # HF sliding caches keep W-1 past tokens; a flat window of W tokens would need part of
        # token n-W, so sliding layers use a flat window of W-1 tokens (everything it needs is
        # cached, and cached and uncached runs agree).
        window = None if self.sliding_window is None else max(1, self.sliding_window - 1)
        # RoPE only sees position differences, so the first cached key is placed at token 0.
        return interleaved_head_attention(
            q,
            k,
            v,
            self.alpha_q,
            self.alpha_k,
            self.alpha_v,
            self.collapse,
            mask="flat",
            window=window,
            positions="virtual",
            position_offset=k.shape[2] - q.shape[2],
            attention_mask=key_padding_mask,
            scale=self.scaling,
            dropout_p=dropout_p,
            rope_theta=self.rope_theta,
            rope_scaling=self.rope_scaling,
        )  # (B, H, Nq, d)

    def _key_padding_mask(
        self, attention_mask: Any, B: int, n_q: int, n_k: int
    ) -> torch.Tensor | None:
        """(B, Nk) bool key padding (True = real) from the mask transformers passes, or None.

        A 4-D mask must be causal (+ this layer's sliding window) with key padding, bottom-right
        aligned; anything else raises, since the IHA core would silently compute another mask.
        """
        if attention_mask is None:
            return None
        if not isinstance(attention_mask, torch.Tensor):
            raise ValueError(
                f"attention_mask of type {type(attention_mask).__name__} is not supported by IHA "
                "layers; load the model with attn_implementation='sdpa' or 'eager'"
            )
        if attention_mask.dim() == 2:  # flash-attention style (B, past + N) padding mask
            keys = attention_mask[:, -n_k:].bool()
            if tuple(keys.shape) != (B, n_k):
                raise ValueError(
                    f"2-D attention_mask {tuple(attention_mask.shape)} does not cover the "
                    f"{n_k} keys of batch {B}"
                )
            return None if bool(keys.all()) else keys
        if attention_mask.dim() != 4 or tuple(attention_mask.shape[-2:]) != (n_q, n_k):
            raise ValueError(
                f"attention_mask must be (B, 1, {n_q}, {n_k}) for {n_q} queries over {n_k} keys, "
                f"got {tuple(attention_mask.shape)} (static caches are not supported: use the "
                "default dynamic cache)"
            )
        if attention_mask.dtype == torch.bool:
            allowed = attention_mask
        else:  # additive mask: 0 where allowed, a large negative number elsewhere
            allowed = attention_mask == 0
        allowed = allowed[:, 0].expand(B, n_q, n_k)  # (B, Nq, Nk)
        keys = allowed.any(dim=1)  # (B, Nk): keys some query may see
        causal = MaskSpec(
            "token", 1, n_q, n_k, q_start=n_k - n_q, k_start=0, window=self.sliding_window
        ).allowed(allowed.device)  # (Nq, Nk)
        expected = causal[None] & keys[:, None, :]  # (B, Nq, Nk)
        real_queries = keys[:, n_k - n_q :, None]  # (B, Nq, 1): padded queries are don't-care
        if bool(((expected != allowed) & real_queries).any()):
            raise ValueError(
                "attention_mask is not a causal mask with key padding"
                + ("" if self.sliding_window is None else f" and window {self.sliding_window}")
                + ": IHA layers support exactly these masks (no packed-document masks, no "
                "static caches)"
            )
        return None if bool(keys.all()) else keys


def _held_keys(cache: Any, layer: int) -> torch.Tensor | None:
    """The key tensor a ``transformers`` cache holds for ``layer`` (None when unknown/empty)."""
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, (list, tuple)) or layer >= len(layers):
        return None
    keys = getattr(layers[layer], "keys", None)
    return keys if isinstance(keys, torch.Tensor) and keys.dim() == 4 else None


def _backbone(model: nn.Module) -> nn.Module:
    """The decoder stack (``LlamaModel`` and friends) of a causal LM or of the stack itself."""
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module) and hasattr(inner, "layers"):
        return inner
    if hasattr(model, "layers"):
        return model
    raise ValueError(
        f"{type(model).__name__} has no decoder layers (.model.layers or .layers); expected a "
        "LlamaForCausalLM, Qwen2ForCausalLM or MistralForCausalLM"
    )


def original_model_type(model_type: Any) -> Any:
    """"llama" for "iha_llama" (and qwen2, mistral); any other model_type unchanged."""
    if isinstance(model_type, str) and model_type.startswith(CONVERTED_PREFIX):
        original = model_type[len(CONVERTED_PREFIX) :]
        if original in SUPPORTED_MODEL_TYPES:
            return original
    return model_type


def rope_from_hf_config(config: Any) -> tuple[float, dict[str, Any] | None]:
    """``(rope_theta, rope_scaling)`` of a ``transformers`` config, in :mod:`iha.rope`'s form.

    Reads ``rope_parameters`` (transformers >= 5) or ``rope_theta`` + ``rope_scaling`` (4.x).
    Lengths a rule leaves implicit take transformers' meaning: the dynamic rule's original length
    is ``max_position_embeddings``, and so is a missing ``original_max_position_embeddings``.
    Raises ValueError naming the key for a rule ``iha.rope`` does not implement (longrope, ...).
    """
    parameters = getattr(config, "rope_parameters", None)
    if isinstance(parameters, dict) and parameters:
        theta = parameters.get("rope_theta", getattr(config, "rope_theta", None))
        scaling = dict(parameters)
    else:
        theta = getattr(config, "rope_theta", None)
        scaling = dict(getattr(config, "rope_scaling", None) or {})
    if theta is None:
        raise ValueError(f"{type(config).__name__} has no rope_theta")
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "dynamic":
        scaling["original_max_position_embeddings"] = config.max_position_embeddings
    elif rope_type in ("yarn", "llama3"):
        scaling.setdefault("original_max_position_embeddings", config.max_position_embeddings)
    return float(theta), check_rope_scaling(scaling or None)


def _mark_converted(model: nn.Module, config: Any) -> None:
    """Make a just-converted model and its config the converted types, in place.

    The converted types (``iha.hf.converted``) are registered with the Auto classes when
    ``iha.hf`` is imported, which happens before this module loads; they are looked up there, so
    that this module and ``iha.hf.converted`` (whose models convert their layers with
    :func:`apply_conversion`) import each other only one way. The config object keeps its
    identity (every layer holds it), only its class changes, to a subclass that differs in
    ``model_type``. A causal LM of exactly the original class becomes the converted class (no
    new state); a bare decoder stack keeps its class.
    """
    from transformers import CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING

    original = original_model_type(config.model_type)
    config_class = CONFIG_MAPPING[CONVERTED_PREFIX + original]
    if type(config) is not config_class:
        config.__class__ = config_class
    if type(model) is MODEL_FOR_CAUSAL_LM_MAPPING[CONFIG_MAPPING[original]]:
        model.__class__ = MODEL_FOR_CAUSAL_LM_MAPPING[config_class]


def _check_model(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    model_type = original_model_type(getattr(config, "model_type", None))  # converting more layers
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model_type={model_type!r} is not supported; expected one of "
            f"{list(SUPPORTED_MODEL_TYPES)} (LlamaForCausalLM, Qwen2ForCausalLM, "
            "MistralForCausalLM)"
        )
    return config


def _resolve_layers(layers: Iterable[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, int):
        layers = [layers]
    out = list(layers)
    for i in out:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_layers:
            raise ValueError(f"layers={out!r}: each entry must be an int in [0, {n_layers})")
    if len(set(out)) != len(out):
        raise ValueError(f"layers={out!r} lists a layer more than once")
    if not out:
        raise ValueError("layers=[] selects no layer; pass None for all layers")
    return sorted(out)


def convert(
    model: nn.Module,
    num_pseudo_heads: int | None = 2,
    layers: Iterable[int] | None = None,
    mode: str = "exact",
    collapse: str = "global",
    init_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Replace the attention of the chosen layers by IHA, in place; returns ``model``.

    Args:
        model: a ``LlamaForCausalLM``, ``Qwen2ForCausalLM`` or ``MistralForCausalLM`` (or its
            decoder stack), loaded with ``attn_implementation`` "sdpa" or "eager".
        num_pseudo_heads: P >= 1 (default 2); None means the number of attention heads (the
            paper's P = H). Attention costs P^2 times the original in both modes; the whole
            model's FLOP ratio is :func:`iha.hf.cost.conversion_cost` (SmolLM2-135M, P = 2:
            1.19x a 512-token forward; P = H = 9: 5.97x).
        layers: layer indices to convert; None converts every layer.
        mode: "exact" (same function as the original) or "paper" (flat mask, virtual positions).
        collapse: "global" (H, H*P) or "per_head" (H, P).
        init_noise: std of noise added to the exact init to break the symmetry of the P copies
            before fine-tuning (0 keeps the converted model exact).
        generator: random generator for ``init_noise``.

    Raises:
        ValueError: unsupported model, bad argument, or a selected layer that is already
            converted (nothing is changed then).

    Example::

        >>> import torch, iha.hf
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
        ...                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        >>> llama = LlamaForCausalLM(cfg).eval()
        >>> ids = torch.tensor([[1, 2, 3, 4]])
        >>> before = llama(ids).logits
        >>> model = iha.hf.convert(llama, num_pseudo_heads=2)  # mode="exact": same function
        >>> torch.allclose(model(ids).logits, before, atol=1e-4)
        True
    """
    config = _check_model(model)
    backbone = _backbone(model)
    decoder_layers = backbone.layers
    H = config.num_attention_heads
    check_int("num_pseudo_heads", num_pseudo_heads, allow_none=True)
    P = H if num_pseudo_heads is None else num_pseudo_heads
    check_choice("mode", mode, MODES)
    check_choice("collapse", collapse, COLLAPSE_MODES)
    if not isinstance(init_noise, (int, float)) or not math.isfinite(init_noise) or init_noise < 0:
        raise ValueError(f"init_noise={init_noise!r} must be a finite number >= 0")
    chosen = _resolve_layers(layers, len(decoder_layers))
    if mode == "paper":
        rope_from_hf_config(config)  # an unsupported RoPE raises before anything changes
    for i in chosen:  # check everything before changing anything
        attn = decoder_layers[i].self_attn
        if isinstance(attn, IHAConvertedAttention):
            raise ValueError(
                f"layer {i} is already converted to IHA (num_pseudo_heads={attn.n_pseudo}, "
                f"mode={attn.mode!r}); each layer can be converted only once"
            )
        children = {name for name, _ in attn.named_children()}
        own = [name for name, _ in attn.named_parameters(recurse=False)]
        if children != set(PROJECTIONS) or own:
            raise ValueError(
                f"layer {i}: attention module {type(attn).__name__} has submodules "
                f"{sorted(children)} and parameters {own}; only q_proj, k_proj, v_proj, o_proj "
                "are supported"
            )
    for i in chosen:
        decoder_layers[i].self_attn = IHAConvertedAttention(
            decoder_layers[i].self_attn,
            config,
            n_pseudo=P,
            mode=mode,
            collapse=collapse,
            init_noise=float(init_noise),
            generator=generator,
        )
    settings = [
        layer.self_attn.settings()
        for layer in decoder_layers
        if isinstance(layer.self_attn, IHAConvertedAttention)
    ]
    setattr(config, CONFIG_KEY, {"format_version": FORMAT_VERSION, "layers": settings})
    _mark_converted(model, config)  # saves as model_type "iha_<type>" (iha.hf.converted)
    return model


def converted_layers(model: nn.Module) -> dict[int, IHAConvertedAttention]:
    """Layer index -> converted attention module, for every converted layer of ``model``."""
    return {
        i: layer.self_attn
        for i, layer in enumerate(_backbone(model).layers)
        if isinstance(layer.self_attn, IHAConvertedAttention)
    }


def apply_conversion(model: nn.Module, settings: dict[str, Any]) -> nn.Module:
    """Convert ``model``'s layers as recorded in ``config.iha_conversion`` (exact-MHA init)."""
    if not isinstance(settings, dict) or settings.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{CONFIG_KEY}={settings!r} is not a conversion record of format_version "
            f"{FORMAT_VERSION}"
        )
    groups: dict[tuple[int, str, str], list[int]] = {}
    for entry in settings.get("layers", []):
        key = (int(entry["num_pseudo_heads"]), entry["mode"], entry["collapse"])
        groups.setdefault(key, []).append(int(entry["layer"]))
    for (P, mode, collapse), layers in groups.items():
        convert(model, num_pseudo_heads=P, layers=layers, mode=mode, collapse=collapse)
    return model


def _checkpoint_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / n for n in names]
    single = path / "model.safetensors"
    if single.exists():
        return [single]
    raise ValueError(f"{str(path)!r} holds no model.safetensors (save with safe_serialization)")


class _DropLoadReport(logging.Filter):
    """Drops transformers' unexpected-keys report (v5 "LOAD REPORT", v4 "were not used")."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "LOAD REPORT" not in message and "were not used when initializing" not in message


def load_converted(path: str | Path, **from_pretrained_kwargs: Any) -> nn.Module:
    """Load a checkpoint written by ``save_pretrained`` of a converted model.

    A directory of model type ``iha_llama`` / ``iha_qwen2`` / ``iha_mistral`` (what
    ``save_pretrained`` writes) loads with ``AutoModelForCausalLM.from_pretrained(path, **kw)``.
    An older directory (the original model type plus ``config.iha_conversion``) loads the original
    architecture, converts the layers recorded in ``config.iha_conversion`` and loads their mixing
    parameters from the checkpoint's safetensors files; saving the result writes the new form.
    Raises ValueError when the checkpoint has no conversion record or lacks mixing parameters of
    a converted layer.

    Args:
        path (str or Path): the checkpoint directory.
        **from_pretrained_kwargs: passed to ``AutoModelForCausalLM.from_pretrained``
            (``torch_dtype``, ``attn_implementation``, ...).

    Returns:
        nn.Module: the converted model.

    Example::

        >>> import tempfile, torch, iha.hf
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
        ...                   num_hidden_layers=1, num_attention_heads=4)
        >>> model = iha.hf.convert(LlamaForCausalLM(cfg).eval(), num_pseudo_heads=2)
        >>> folder = tempfile.mkdtemp()
        >>> model.save_pretrained(folder)
        >>> again = iha.hf.load_converted(folder).eval()
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> torch.equal(again(ids).logits, model(ids).logits)
        True
    """
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    config = AutoConfig.from_pretrained(path)  # iha.hf has registered the converted types
    if original_model_type(config.model_type) != config.model_type:
        return AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs)
    settings = getattr(config, CONFIG_KEY, None)
    if settings is None:
        raise ValueError(
            f"{str(path)!r} is not a converted checkpoint (config.json has no '{CONFIG_KEY}'); "
            "load it with from_pretrained and call iha.hf.convert"
        )
    # transformers reports the mixing parameters as unexpected keys: drop that report (the
    # loading info is checked below, and anything else unexpected or missing raises).
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_filter = _DropLoadReport()
    report_logger.addFilter(report_filter)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            path, output_loading_info=True, **from_pretrained_kwargs
        )
    finally:
        report_logger.removeFilter(report_filter)
    apply_conversion(model, settings)
    wanted = {name: p for name, p in model.named_parameters() if is_mixing_parameter(name, p)}
    unexpected = set(info.get("unexpected_keys", ())) - set(wanted)
    missing = set(info.get("missing_keys", ()))
    if unexpected or missing:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match its architecture: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    found: set[str] = set()
    with torch.no_grad():
        for file in _checkpoint_files(path):
            with safe_open(str(file), framework="pt") as f:
                for name in set(f.keys()) & set(wanted):
                    p = wanted[name]
                    p.copy_(f.get_tensor(name).to(p.device, p.dtype))
                    found.add(name)
    if found != set(wanted):
        raise ValueError(
            f"checkpoint {str(path)!r} lacks mixing parameters {sorted(set(wanted) - found)}"
        )
    return model


def _norm_parameters(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        if "norm" in type(module).__name__.lower():
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names


def freeze_except_mixing(model: nn.Module) -> list[str]:
    """ "IHA-only" fine-tuning: only the mixing parameters and the norms stay trainable.

    Sets ``requires_grad`` on every parameter of ``model`` (True for ``alpha_q``, ``alpha_k``,
    ``alpha_v``, ``collapse`` and the parameters of normalisation modules, False elsewhere) and
    returns the names of the trainable ones. Raises ValueError when the model has no IHA mixing
    parameter (convert it first).

    Args:
        model (nn.Module): a converted model (:func:`convert`) or any model with IHA layers.

    Returns:
        list[str]: the names of the parameters left trainable.

    Example::

        >>> import iha.hf
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
        ...                   num_hidden_layers=1, num_attention_heads=4)
        >>> model = iha.hf.convert(LlamaForCausalLM(cfg), num_pseudo_heads=2)
        >>> sorted(n.rsplit(".", 1)[-1] for n in iha.hf.freeze_except_mixing(model))[:4]
        ['alpha_k', 'alpha_q', 'alpha_v', 'collapse']
    """
    norms = _norm_parameters(model)
    trainable = []
    for name, p in model.named_parameters():
        keep = is_mixing_parameter(name, p) or name in norms
        p.requires_grad_(keep)
        if keep:
            trainable.append(name)
    if not any(is_mixing_parameter(n, p) for n, p in model.named_parameters()):
        raise ValueError("model has no IHA mixing parameters: call iha.hf.convert(model) first")
    return trainable


class CausalLMLogits(nn.Module):
    """Wraps a HF causal LM as ``module(input_ids (B, N)) -> logits (B, N, V)`` for iha.train."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def sft_model_factory(model_cfg: dict[str, Any]) -> nn.Module:
    """Model factory for ``iha.train.train(cfg, model_factory=...)`` from a converted checkpoint.

    ``model_cfg`` keys: ``hf_path`` (a directory written by ``iha convert`` or
    ``save_pretrained`` of a converted model, required) and ``freeze``: "none" (default, all
    weights train) or "mixing" (:func:`freeze_except_mixing`). Returns a
    :class:`CausalLMLogits`; after training, ``wrapper.model.save_pretrained(dir)`` writes a HF
    checkpoint that :func:`load_converted` reads.
    """
    unknown = set(model_cfg) - {"hf_path", "freeze"}
    if unknown:
        raise ValueError(f"unknown model keys {sorted(unknown)}; accepted: hf_path, freeze")
    if not model_cfg.get("hf_path"):
        raise ValueError("model key 'hf_path' (a converted checkpoint directory) is required")
    freeze = model_cfg.get("freeze", "none")
    check_choice("freeze", freeze, FREEZE_MODES)
    model = load_converted(model_cfg["hf_path"], dtype=torch.float32)
    if freeze == "mixing":
        freeze_except_mixing(model)
    return CausalLMLogits(model)
