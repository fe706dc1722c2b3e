"""FlexAttention with a block mask: the GPU path for token masks, windows and padding.

``torch.nn.attention.flex_attention`` evaluates the mask rule of docs/spec.md step 4
(``MaskSpec.mask_mod``) per block of (128, 128) scores and skips blocks that are fully masked,
so windows cost O(N*P * W*P) and the token mask costs what the flat one does.

On CUDA the kernel is compiled (``torch.compile``); ``set_compile_policy("always")`` compiles it
on CPU too (the same code path: the tests run it that way) and ``"never"`` runs it eagerly
everywhere. Block masks without padding depend on the ``MaskSpec`` only and are cached. The mask
captures offsets and windows as tensors, so new offsets and windows reuse the compiled kernel;
new lengths compile one dynamic-shape kernel (``tests/backends/test_flex_compiled.py`` holds the
recompilation budget). ``auto`` sends decoding (a few query rows) to ``sdpa`` instead, whose
dense mask is then tiny and needs no new block mask per step. On CPU this torch runs flex
forward only (no backward).
"""

from __future__ import annotations

import functools

import torch

from iha.backends.reference import attend_reference
from iha.backends.sdpa import attend_sdpa
from iha.masks import MaskSpec

COMPILE_POLICIES = ("cuda", "always", "never")
_compile_policy = "cuda"


def set_compile_policy(policy: str) -> str:
    """When the flex kernel runs compiled: ``"cuda"`` (default: on CUDA devices only),
    ``"always"`` or ``"never"``. Returns the previous policy."""
    global _compile_policy
    if policy not in COMPILE_POLICIES:
        raise ValueError(f"policy={policy!r} is not supported; expected one of {COMPILE_POLICIES}")
    previous, _compile_policy = _compile_policy, policy
    return previous


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    # dynamic=None: a static kernel first, one with dynamic shapes after a new length
    return torch.compile(flex_attention)


def _flex_kernel(device: torch.device):
    from torch.nn.attention.flex_attention import flex_attention

    compiled = _compile_policy == "always" or (
        _compile_policy == "cuda" and device.type == "cuda"
    )
    return _compiled_flex_attention() if compiled else flex_attention


@functools.lru_cache(maxsize=32)
def _shared_block_mask(spec: MaskSpec, device: torch.device):
    """The batch-independent block mask of ``spec`` (no padding), one per (spec, device)."""
    return spec.block_mask(device=device)


def attend_flex(
    qt: torch.Tensor,  # (B, H, Nq*P, d)
    kt: torch.Tensor,  # (B, G, Nk*P, d)
    vt: torch.Tensor,  # (B, G, Nk*P, d)
    spec: MaskSpec,
    *,
    scale: float,
    attention_mask: torch.Tensor | None = None,  # (B, Nk) bool, True = real
    kernel: str = "softmax",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Backend ``"flex"``: FlexAttention with a block mask -> (B, H, Nq*P, d).

    Rows with no key give zeros. ``kernel="linear"`` goes to ``"reference"``, dropout to
    ``"sdpa"`` (flex has no attention dropout).
    """
    common = dict(scale=scale, attention_mask=attention_mask, kernel=kernel)
    if kernel != "softmax":
        return attend_reference(qt, kt, vt, spec, **common, dropout_p=dropout_p)
    if dropout_p > 0.0:
        return attend_sdpa(qt, kt, vt, spec, **common, dropout_p=dropout_p)
    H, G = qt.shape[1], kt.shape[1]
    if attention_mask is None:
        block_mask = _shared_block_mask(spec, qt.device)
    else:
        block_mask = spec.block_mask(attention_mask, qt.device)
    flex = _flex_kernel(qt.device)
    return flex(qt, kt, vt, block_mask=block_mask, scale=scale, enable_gqa=G != H)
