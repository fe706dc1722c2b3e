"""The one mask definition of docs/spec.md step 4, shared by every backend.

A ``MaskSpec`` describes which pseudo keys each pseudo query may see. Queries cover tokens
``q_start .. q_start + n_q - 1`` and keys cover ``k_start .. k_start + n_k - 1`` (absolute token
indices; with a KV cache the keys cover a longer prefix, bottom-right aligned). Virtual index of
pseudo token (n, p) is ``n * P + p``.

The rule is written once, as a FlexAttention ``mask_mod`` (``MaskSpec.mask_mod``); the dense
bool mask (``MaskSpec.allowed``, for the reference and ``sdpa``) and the ``BlockMask``
(``MaskSpec.block_mask``, for ``flex``) are both evaluated from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

MASK_MODES = ("flat", "token", "none")

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MaskSpec:
    mode: str  # "flat" | "token" | "none"
    n_pseudo: int  # P
    n_q: int  # query tokens
    n_k: int  # key tokens
    q_start: int = 0  # absolute token index of the first query
    k_start: int = 0  # absolute token index of the first key
    window: int | None = None  # in original tokens

    @property
    def is_plain_causal(self) -> bool:
        """True when the mask is exactly ``is_causal`` on the interleaved sequence."""
        return (
            self.mode == "flat"
            and self.window is None
            and self.n_q == self.n_k
            and self.q_start == self.k_start
        )

    @property
    def is_full(self) -> bool:
        """True when every query sees every key (no mask at all)."""
        return self.mode == "none"

    def mask_mod(
        self,
        attention_mask: torch.Tensor | None = None,  # (B, n_k) bool, True = real token
        device: torch.device | None = None,
    ) -> MaskMod:
        """The mask rule: ``mask_mod(b, h, q_idx, kv_idx) -> bool``, True = may attend.

        ``q_idx`` / ``kv_idx`` index the pseudo queries (0 .. n_q*P-1) and keys (0 .. n_k*P-1);
        they may be broadcastable tensors of any shape. The flat mask compares virtual indices,
        the token mask the tokens they belong to (``// P``); a window keeps distances below W
        tokens (W*P virtual positions for the flat mask). A padded key token hides its P keys.

        Only the distance between the first query and the first key matters. It is captured,
        with the window, as a 0-dim tensor rather than a Python int, so that a compiled kernel
        (``torch.compile`` guards on captured ints) serves every offset and window without
        recompiling; P and the mode shape the rule and stay Python values.
        """
        P, mode = self.n_pseudo, self.mode
        # virtual index of query 0 counted from key 0; a multiple of P, so (q + shift) // P is
        # the query's token counted from the first key token
        shift = torch.tensor((self.q_start - self.k_start) * P, device=device)
        reach = None  # the window in the unit the mode measures distances in
        if self.window is not None:
            reach = torch.tensor(self.window * (P if mode == "flat" else 1), device=device)
        keys = None if attention_mask is None else expand_key_padding(attention_mask, P)

        def mask_mod(b, h, q_idx, kv_idx):
            if mode == "none":
                ok = (q_idx >= 0) & (kv_idx >= 0)  # every pair, in the broadcast shape
            else:
                if mode == "flat":
                    dist = q_idx + shift - kv_idx  # virtual distance
                else:
                    dist = (q_idx + shift) // P - kv_idx // P  # token distance
                ok = dist >= 0
                if reach is not None:
                    ok = ok & (dist < reach)
            if keys is not None:
                ok = ok & keys[b, kv_idx]  # (B, n_k*P) bool
            return ok

        return mask_mod

    def allowed(self, device: torch.device | None = None) -> torch.Tensor:
        """Dense bool mask (n_q*P, n_k*P), True = may attend.

        Its memory grows with n_q*P times n_k*P: the reference backend and ``sdpa`` (when the
        mask is not plain causal) build it for the whole call, ``blocked`` only for small pieces,
        the ``band`` kernel never."""
        P = self.n_pseudo
        q_idx = torch.arange(self.n_q * P, device=device)[:, None]  # (Lq, 1)
        kv_idx = torch.arange(self.n_k * P, device=device)[None, :]  # (1, Lk)
        zero = torch.zeros((), dtype=torch.long, device=device)
        return self.mask_mod(device=device)(zero, zero, q_idx, kv_idx)  # (Lq, Lk)

    def block_mask(
        self,
        attention_mask: torch.Tensor | None = None,  # (B, n_k) bool, True = real token
        device: torch.device | None = None,
    ):
        """FlexAttention ``BlockMask`` of ``mask_mod``: per (128, 128) block of scores, whether
        it is empty, full or partial. Batch-independent (broadcast) without padding."""
        from torch.nn.attention.flex_attention import create_block_mask

        batch = None if attention_mask is None else attention_mask.shape[0]
        P = self.n_pseudo
        mask_mod = self.mask_mod(attention_mask, device)
        return create_block_mask(
            mask_mod, batch, None, self.n_q * P, self.n_k * P, device=device or "cpu"
        )


def expand_key_padding(attention_mask: torch.Tensor, n_pseudo: int) -> torch.Tensor:
    """(B, N) bool, True = real token -> (B, N*P): every pseudo key of a padded token is removed."""
    return attention_mask.repeat_interleave(n_pseudo, dim=-1)


CONVENTION = "1/True = real token, 0/False = padding (the Hugging Face attention_mask)"


def check_attention_mask(mask, name: str = "attention_mask") -> torch.Tensor | None:
    """An ``attention_mask`` in Hugging Face's convention as a bool tensor, True = real token.

    Accepts None, a bool tensor, or an integer tensor holding only 0 and 1. Refuses float masks
    (additive 0 / -inf masks, or the probabilities of a soft mask) and any other value, with a
    ``ValueError`` naming the expected convention. The shape is checked by the caller.
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(
            f"{name} must be a bool or integer (0/1) tensor, {CONVENTION}; got "
            f"{type(mask).__name__}"
        )
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(
            f"{name} must be a bool or integer (0/1) tensor, {CONVENTION}; got dtype "
            f"{mask.dtype} (float masks, additive or not, are not accepted)"
        )
    if mask.numel() and not torch.compiler.is_compiling():
        bad = (mask != 0) & (mask != 1)
        if bool(bad.any()):
            raise ValueError(
                f"{name} must hold only 0 and 1, {CONVENTION}; got the value {int(mask[bad][0])}"
            )
    return mask != 0


def reject_key_padding_mask(value) -> None:
    """TypeError for the removed ``key_padding_mask`` keyword (whose True meant "real token", the
    opposite of ``nn.MultiheadAttention``'s): the argument is now ``attention_mask``."""
    if value is not None:
        raise TypeError(
            "key_padding_mask is not accepted: pass attention_mask instead, with "
            f"{CONVENTION}. (nn.MultiheadAttention's key_padding_mask means the opposite, "
            "True = ignore; invert such a mask with ~key_padding_mask.)"
        )
