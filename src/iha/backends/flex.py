"""FlexAttention with a block mask: the GPU path for token masks, windows and padding.

``torch.nn.attention.flex_attention`` evaluates the mask rule of SPEC.md step 4 per block of
(128, 128) scores and skips blocks that are fully masked, so windows cost O(N*P * W*P) and the
token mask costs what the flat one does. The mask rule below is ``MaskSpec.allowed`` written as a
``mask_mod`` (index arithmetic on the virtual positions); the tests check both agree.

On CUDA the kernel is compiled (``torch.compile``) and block masks are cached per (mask, shape);
``auto`` sends decoding (a few query rows) to ``sdpa`` instead, whose dense mask is then tiny and
needs no new block mask per step. On CPU this torch runs flex forward only (no backward), in
eager mode: useful to check the mask rule, not for speed.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from iha.backends.reference import attend_reference
from iha.backends.sdpa import attend_sdpa
from iha.masks import MaskSpec

_BLOCK_MASKS: OrderedDict = OrderedDict()
_BLOCK_MASK_CACHE_SIZE = 32
_COMPILED: dict = {}


def mask_mod_for(spec: MaskSpec, key_padding_mask: torch.Tensor | None = None):
    """``mask_mod(b, h, q_idx, kv_idx) -> bool`` equal to ``spec.allowed()`` (and the padding).

    ``key_padding_mask`` is (B, Nk) bool, True = real token.
    """
    P, W = spec.n_pseudo, spec.window
    q0, k0 = spec.q_start * P, spec.k_start * P  # virtual index of the first query / key

    def mask_mod(b, h, q_idx, kv_idx):
        tq, tk = q0 + q_idx, k0 + kv_idx
        if spec.mode == "flat":
            ok = tk <= tq
            if W is not None:
                ok = ok & (tq - tk < W * P)
        elif spec.mode == "token":
            nq, nk = tq // P, tk // P
            ok = nk <= nq
            if W is not None:
                ok = ok & (nq - nk < W)
        else:
            ok = tq >= 0  # every key (an always-true tensor)
        if key_padding_mask is not None:
            ok = ok & key_padding_mask[b, kv_idx // P]
        return ok

    return mask_mod


def block_mask_for(
    spec: MaskSpec, batch: int, device: torch.device, key_padding_mask: torch.Tensor | None
):
    """A ``BlockMask`` for ``spec``; cached when there is no padding (it depends on shape only)."""
    from torch.nn.attention.flex_attention import create_block_mask

    Lq, Lk = spec.n_q * spec.n_pseudo, spec.n_k * spec.n_pseudo
    mask_mod = mask_mod_for(spec, key_padding_mask)
    if key_padding_mask is not None:
        return create_block_mask(mask_mod, batch, None, Lq, Lk, device=device)
    key = (spec, str(device))
    if key in _BLOCK_MASKS:
        _BLOCK_MASKS.move_to_end(key)
        return _BLOCK_MASKS[key]
    block_mask = create_block_mask(mask_mod, None, None, Lq, Lk, device=device)
    _BLOCK_MASKS[key] = block_mask
    if len(_BLOCK_MASKS) > _BLOCK_MASK_CACHE_SIZE:
        _BLOCK_MASKS.popitem(last=False)
    return block_mask


def _flex_kernel(device: torch.device):
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if "cuda" not in _COMPILED:
        # dynamic=None: static first, dynamic shapes after the first recompile (new lengths)
        _COMPILED["cuda"] = torch.compile(flex_attention)
    return _COMPILED["cuda"]


def attend_flex(
    qt: torch.Tensor,  # (B, H, Nq*P, d)
    kt: torch.Tensor,  # (B, G, Nk*P, d)
    vt: torch.Tensor,  # (B, G, Nk*P, d)
    spec: MaskSpec,
    *,
    scale: float,
    key_padding_mask: torch.Tensor | None = None,  # (B, Nk) bool, True = real
    kernel: str = "softmax",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Backend ``"flex"``: FlexAttention with a block mask -> (B, H, Nq*P, d).

    Rows with no key give zeros. ``kernel="linear"`` goes to ``"reference"``, dropout to
    ``"sdpa"`` (flex has no attention dropout).
    """
    common = dict(scale=scale, key_padding_mask=key_padding_mask, kernel=kernel)
    if kernel != "softmax":
        return attend_reference(qt, kt, vt, spec, **common, dropout_p=dropout_p)
    if dropout_p > 0.0:
        return attend_sdpa(qt, kt, vt, spec, **common, dropout_p=dropout_p)
    H, G = qt.shape[1], kt.shape[1]
    block_mask = block_mask_for(spec, qt.shape[0], qt.device, key_padding_mask)
    flex = _flex_kernel(qt.device)
    return flex(qt, kt, vt, block_mask=block_mask, scale=scale, enable_gqa=G != H)
