"""Pieces: how the masks of docs/spec.md split into dense parts that need little or no mask.

A ``Piece`` is a range of query rows against a range of key rows of the interleaved sequence,
with no mask, ``is_causal``, or a small mask. This module plans the pieces of masks without a
window (``full_pieces``) and of small problems (``dense_piece``); ``iha.backends.banded`` plans
windows; ``iha.backends.blocked`` runs any list of pieces and merges them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iha.masks import MaskSpec


@dataclass
class Piece:
    """Query rows ``rows`` = [r0, r1) against key rows ``keys`` = [k0, k1) of one sequence.

    ``chunk=None``: one problem per (b, h): q (B, H, R, d) against k (B, H, K, d), scores
    (B, H, R, K). ``chunk=c``: rows are cut into chunks of c, q (B*H, R/c, c, d); query chunk j
    attends the ``key_len`` keys from row k0 + j*c on (default c: key chunk j), scores
    (B*H, R/c, c, key_len). With key_len > c consecutive chunks' keys overlap: a strided view.
    ``mask`` is additive (0 / -inf) in the queries' dtype and broadcasts to the scores;
    ``causal`` adds the top-left causal mask within each problem; ``dead`` (bool) broadcasts to
    the score rows ((B, H, R) or (B*H, R/c, c)) and marks rows that see no key of this piece.
    """

    rows: tuple[int, int]
    keys: tuple[int, int]
    chunk: int | None = None
    key_len: int | None = None
    mask: torch.Tensor | None = None
    causal: bool = False
    dead: torch.Tensor | None = None


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool mask (True = may attend) -> additive float mask (0 / -inf) in ``dtype``."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, float("-inf")
    )


def causal_dead_rows(keys: torch.Tensor, n_rows: int) -> torch.Tensor:
    """keys (..., K) bool -> (..., n_rows): row i sees none of keys[..., :i+1]."""
    return keys.cumsum(-1)[..., :n_rows] == 0


def dense_piece(spec: MaskSpec, keys: torch.Tensor | None, dtype, device) -> Piece:
    """All query rows against all keys with the dense mask (for small problems only).

    ``keys``: (B, Lk) bool virtual key padding, True = real, or None.
    """
    allowed = spec.allowed(device)  # (Lq, Lk)
    if keys is not None:
        allowed = allowed[None, None] & keys[:, None, None, :]  # (B, 1, Lq, Lk)
    Lq, Lk = allowed.shape[-2:]
    return Piece((0, Lq), (0, Lk), mask=additive_mask(allowed, dtype), dead=~allowed.any(-1))


def full_pieces(
    B: int, H: int, Lq: int, Lk: int, spec: MaskSpec, keys: torch.Tensor | None, dtype, device
) -> list[Piece]:
    """Pieces of a mask without a window (flat, token or none), keys bottom-right aligned.

    ``keys``: (B, Lk) bool virtual key padding, True = real, or None.
    """
    P = spec.n_pseudo

    def padding(span: tuple[int, int]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        # keys of span -> additive (B, 1, 1, K) mask and rows that see none of them (B, 1, 1)
        if keys is None:
            return None, None
        sel = keys[:, span[0] : span[1]]
        return additive_mask(sel[:, None, None, :], dtype), ~sel.any(-1)[:, None, None]

    if spec.mode == "none":
        mask, dead = padding((0, Lk))
        return [Piece((0, Lq), (0, Lk), mask=mask, dead=dead)]
    D = Lk - Lq  # key row of query row 0 (a cached prefix before the queries)
    pieces = []
    if D > 0:  # the cached prefix is fully visible
        mask, dead = padding((0, D))
        pieces.append(Piece((0, Lq), (0, D), mask=mask, dead=dead))
    mask, _ = padding((D, Lk))
    dead = None if keys is None else causal_dead_rows(keys[:, D:], Lq)[:, None]
    pieces.append(Piece((0, Lq), (D, Lk), mask=mask, causal=True, dead=dead))
    if spec.mode == "token" and P > 1:
        later = torch.ones(P, P, dtype=torch.bool, device=device).triu(1)  # (P q, P k): p' > p
        if keys is None:
            allowed = later[None, None]  # (1, 1, P, P)
        else:
            # Folded (B*H) layout: the per-token padding cannot broadcast over H; it is small.
            own = keys[:, D:].view(B, 1, Lq // P, 1, P)
            allowed = (later & own).expand(B, H, Lq // P, P, P).reshape(B * H, Lq // P, P, P)
        pieces.append(
            Piece(
                (0, Lq),
                (D, Lk),
                chunk=P,
                mask=additive_mask(allowed, dtype),
                dead=~allowed.any(-1),
            )
        )
    return pieces
