"""The one mask definition of SPEC.md step 4, shared by every backend.

A ``MaskSpec`` describes which pseudo keys each pseudo query may see. Queries cover tokens
``q_start .. q_start + n_q - 1`` and keys cover ``k_start .. k_start + n_k - 1`` (absolute token
indices; with a KV cache the keys cover a longer prefix, bottom-right aligned). Virtual index of
pseudo token (n, p) is ``n * P + p``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MASK_MODES = ("flat", "token", "none")


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

    def allowed(self, device: torch.device | None = None) -> torch.Tensor:
        """Dense bool mask (n_q*P, n_k*P), True = may attend. O((N*P)^2) memory: reference only."""
        P = self.n_pseudo
        tq = torch.arange(self.q_start * P, (self.q_start + self.n_q) * P, device=device)
        tk = torch.arange(self.k_start * P, (self.k_start + self.n_k) * P, device=device)
        if self.mode == "none":
            return torch.ones(tq.numel(), tk.numel(), dtype=torch.bool, device=device)
        if self.mode == "flat":
            diff = tq[:, None] - tk[None, :]  # virtual distance
            allowed = diff >= 0
            if self.window is not None:
                allowed &= diff < self.window * P
            return allowed
        diff = tq[:, None] // P - tk[None, :] // P  # token distance
        allowed = diff >= 0
        if self.window is not None:
            allowed &= diff < self.window
        return allowed


def expand_key_padding(key_padding_mask: torch.Tensor, n_pseudo: int) -> torch.Tensor:
    """(B, N) bool, True = real token -> (B, N*P): every pseudo key of a padded token is removed."""
    return key_padding_mask.repeat_interleave(n_pseudo, dim=-1)
