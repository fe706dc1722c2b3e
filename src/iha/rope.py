"""Rotary position embeddings (Llama convention), the one RoPE used everywhere in `iha`.

Dimension i pairs with i + d/2 (``rotate_half``: [-x2, x1]); inverse frequencies are theta^(-2i/d).
Positions are explicit float/long tensors so that callers choose between virtual positions
(n*P + p, the paper's) and token positions (n) without a second implementation.

Precision: angles (position * inverse frequency) and their cos/sin are computed in float64, then
cast. A context of 64k tokens at P = 20 has virtual positions up to 1.3M, where float32 angles
lose the phase (cos error 3e-2 around 10^6 at head_dim 128, theta 5e5:
``benchmarks/rope_precision.py``); float64 keeps float32 tables within float32 rounding
(``tests/test_rope.py``).

Context extension: ``rope_scaling`` follows the ``transformers`` conventions, one rule each:

=========  ==========================================================================  ===========
rope_type  keys (required first)                                                       attention
=========  ==========================================================================  ===========
linear     factor                                                                      1
dynamic    factor; original_max_position_embeddings                                    1
yarn       factor, original_max_position_embeddings; beta_fast (32), beta_slow (1),    from factor
           attention_factor, mscale, mscale_all_dim, truncate (True)
llama3     factor, low_freq_factor, high_freq_factor, original_max_position_embeddings  1
=========  ==========================================================================  ===========

Every length in a rule is in the positions RoPE sees. ``positions_per_token`` (P under virtual
positions, 1 under token positions) multiplies ``original_max_position_embeddings``, which is given
in tokens; the dynamic rule's current length is the largest position + 1 (for virtual positions,
N*P). Linear scaling divides every (virtual) position by ``factor``. The attention factor (YaRN's
mscale) multiplies cos and sin, so it scales every query-key logit by its square, as in
``transformers``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from iha.validate import check_int

ROPE_TYPES = ("linear", "dynamic", "yarn", "llama3")
_REQUIRED_KEYS = {
    "linear": ("factor",),
    "dynamic": ("factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}
_OPTIONAL_KEYS = {
    "linear": (),
    "dynamic": (),
    "yarn": ("beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate"),
    "llama3": (),
}
# transformers >= 5 keeps rope_theta (and partial_rotary_factor) in the same dict; we accept them
# there but the base stays the model's ``rope_theta``.
_PASSTHROUGH_KEYS = ("rope_type", "type", "rope_theta")


def _number(rope_type: str, key: str, value: Any, *, minimum: float, strict: bool) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(
            f"rope_scaling[{key!r}]={value!r} for rope_type={rope_type!r} must be a number {bound}"
        )
    return value


def check_rope_scaling(rope_scaling: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A validated copy of ``rope_scaling`` (None or ``rope_type: "default"``: no scaling -> None).

    Raises ValueError naming the key for an unknown ``rope_type``, a missing or unknown key, or a
    value out of range. ``"type"`` is accepted as the old name of ``"rope_type"``.
    """
    if rope_scaling is None:
        return None
    if not isinstance(rope_scaling, Mapping):
        raise ValueError(f"rope_scaling={rope_scaling!r} must be None or a dict with a 'rope_type'")
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type"))
    if rope_type == "default":
        return None
    if rope_type not in ROPE_TYPES:
        raise ValueError(
            f"rope_scaling['rope_type']={rope_type!r} is not supported; expected one of "
            f"{list(ROPE_TYPES)} (or 'default' / None for no scaling)"
        )
    if rope_scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(
            f"rope_scaling['partial_rotary_factor']={rope_scaling['partial_rotary_factor']!r} is "
            "not supported; iha rotates the whole head (1.0)"
        )
    required, optional = _REQUIRED_KEYS[rope_type], _OPTIONAL_KEYS[rope_type]
    accepted = set(required) | set(optional) | set(_PASSTHROUGH_KEYS) | {"partial_rotary_factor"}
    unknown = sorted(set(rope_scaling) - accepted)
    if unknown:
        raise ValueError(
            f"rope_scaling key(s) {unknown} are not used by rope_type={rope_type!r}; accepted "
            f"keys: {sorted(set(required) | set(optional))}"
        )
    missing = [key for key in required if rope_scaling.get(key) is None]
    if missing:
        raise ValueError(
            f"rope_scaling for rope_type={rope_type!r} needs the key(s) {missing} "
            f"(required: {list(required)})"
        )
    out: dict[str, Any] = {"rope_type": rope_type}
    out["factor"] = _number(rope_type, "factor", rope_scaling["factor"], minimum=1.0, strict=False)
    if "original_max_position_embeddings" in required:
        original = rope_scaling["original_max_position_embeddings"]
        if isinstance(original, bool) or not isinstance(original, int) or original < 1:
            raise ValueError(
                f"rope_scaling['original_max_position_embeddings']={original!r} must be a positive "
                "int (the pretraining context, in tokens)"
            )
        out["original_max_position_embeddings"] = original
    if rope_type == "llama3":
        low = _number(rope_type, "low_freq_factor", rope_scaling["low_freq_factor"],
                      minimum=0.0, strict=True)
        high = _number(rope_type, "high_freq_factor", rope_scaling["high_freq_factor"],
                       minimum=0.0, strict=True)
        if high <= low:
            raise ValueError(
                f"rope_scaling['high_freq_factor']={high!r} must be greater than "
                f"rope_scaling['low_freq_factor']={low!r} for rope_type='llama3'"
            )
        out.update(low_freq_factor=low, high_freq_factor=high)
    if rope_type == "yarn":
        for key in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
            if rope_scaling.get(key) is not None:
                out[key] = _number(rope_type, key, rope_scaling[key], minimum=0.0, strict=True)
        if out.get("beta_fast", 32) <= out.get("beta_slow", 1):
            raise ValueError(
                f"rope_scaling['beta_fast']={out.get('beta_fast', 32)!r} must be greater than "
                f"rope_scaling['beta_slow']={out.get('beta_slow', 1)!r} for rope_type='yarn' "
                "(defaults 32 and 1)"
            )
        if rope_scaling.get("attention_factor") is not None:
            out["attention_factor"] = _number(
                rope_type, "attention_factor", rope_scaling["attention_factor"],
                minimum=0.0, strict=True,
            )
        truncate = rope_scaling.get("truncate", True)
        if not isinstance(truncate, bool):
            raise ValueError(f"rope_scaling['truncate']={truncate!r} must be a bool")
        out["truncate"] = truncate
    return out


def _yarn_attention_factor(scaling: Mapping[str, Any]) -> float:
    """YaRN's mscale: 0.1 * ln(factor) + 1, or the ratio of two mscales (DeepSeek form)."""
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])

    def mscale(factor: float, weight: float = 1.0) -> float:
        return 1.0 if factor <= 1 else 0.1 * weight * math.log(factor) + 1.0

    factor = scaling["factor"]
    if scaling.get("mscale") and scaling.get("mscale_all_dim"):
        return mscale(factor, scaling["mscale"]) / mscale(factor, scaling["mscale_all_dim"])
    return mscale(factor)


def rope_inv_freq(
    head_dim: int,
    theta: float,
    rope_scaling: Mapping[str, Any] | None = None,
    *,
    positions_per_token: int = 1,
    seq_len: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (head_dim/2,) in float64 and the attention factor of a scaling rule.

    Args:
        head_dim: d (even).
        theta: RoPE base.
        rope_scaling: None or a ``transformers``-style dict (see the module docstring).
        positions_per_token: RoPE positions per token (P under virtual positions, else 1);
            multiplies every length of the rule, which ``rope_scaling`` gives in tokens.
        seq_len: current length in RoPE positions (largest position + 1); used by "dynamic".
        device: where the frequencies live.
    """
    if head_dim % 2:
        raise ValueError(f"head_dim={head_dim} must be even for RoPE")
    check_int("positions_per_token", positions_per_token, 1)
    scaling = check_rope_scaling(rope_scaling)
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim
    if scaling is None:
        return theta ** (-exponents), 1.0
    rope_type, factor = scaling["rope_type"], scaling["factor"]
    original = scaling.get("original_max_position_embeddings", 0) * positions_per_token
    if rope_type == "linear":
        return theta ** (-exponents) / factor, 1.0
    if rope_type == "dynamic":  # NTK-aware base growth beyond the original length
        length = max(original if seq_len is None else seq_len, original)
        base = theta * (factor * length / original - (factor - 1)) ** (head_dim / (head_dim - 2))
        return base ** (-exponents), 1.0
    inv_freq = theta ** (-exponents)  # (d/2,)
    if rope_type == "llama3":
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        wavelength = 2 * math.pi / inv_freq
        # long wavelengths (> original / low) interpolate by factor, short ones (< original / high)
        # keep their frequency, the band between blends the two linearly in original / wavelength
        blend = ((original / wavelength - low) / (high - low)).clamp(0.0, 1.0)
        return (1 - blend) * inv_freq / factor + blend * inv_freq, 1.0
    # yarn: per-dimension ramp between interpolation (1/factor) and extrapolation, chosen by how
    # many full rotations a dimension makes over the original context
    beta_fast, beta_slow = scaling.get("beta_fast", 32), scaling.get("beta_slow", 1)

    def dimension_at(rotations: float) -> float:
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dimension_at(beta_fast), dimension_at(beta_slow)
    if scaling["truncate"]:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # a step instead of a ramp
    dims = torch.arange(head_dim // 2, device=device, dtype=torch.float64)
    interpolated = ((dims - low) / (high - low)).clamp(0.0, 1.0)  # 0: extrapolate, 1: interpolate
    inv_freq = inv_freq * (1 - interpolated) + inv_freq / factor * interpolated
    return inv_freq, _yarn_attention_factor(scaling)


def rope_cos_sin(
    positions: torch.Tensor,
    head_dim: int,
    theta: float,
    dtype: torch.dtype,
    rope_scaling: Mapping[str, Any] | None = None,
    positions_per_token: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for ``positions`` (L,) -> two (L, head_dim) tensors in ``dtype``.

    Angles and their cos/sin are computed in float64 and then cast, so that long virtual
    positions (N*P beyond 10^6) keep their phase. ``rope_scaling`` and ``positions_per_token``:
    see :func:`rope_inv_freq`; the dynamic rule's current length is ``positions.max() + 1``.
    """
    rope_scaling = check_rope_scaling(rope_scaling)
    seq_len = None
    if rope_scaling is not None and rope_scaling["rope_type"] == "dynamic" and positions.numel():
        seq_len = int(positions.max()) + 1
    inv_freq, attention_factor = rope_inv_freq(
        head_dim,
        theta,
        rope_scaling,
        positions_per_token=positions_per_token,
        seq_len=seq_len,
        device=positions.device,
    )
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # (L, d/2)
    cos, sin = angles.cos(), angles.sin()
    if attention_factor != 1.0:
        cos, sin = cos * attention_factor, sin * attention_factor
    cos, sin = cos.to(dtype), sin.to(dtype)
    return torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)  # (L, d) each


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., L, d) by the tables (L, d): ``x * cos + rotate_half(x) * sin``.

    Computed as a flip of the two halves with the sign folded into the sin table, which avoids
    the slices and zero-filled gradients of ``rotate_half``.
    """
    half = x.shape[-1] // 2
    sin_signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)  # (L, d)
    swapped = x.unflatten(-1, (2, half)).flip(-2).flatten(-2)  # [x2, x1]
    return torch.addcmul(x * cos, swapped, sin_signed)
