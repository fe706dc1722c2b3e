"""Sliding-window attention in O(N*P * W*P) time and memory: chunks against their key band.

The interleaved query rows are cut into chunks of C virtual tokens (C a multiple of P and at most
W*P). Query chunk j sees keys only in its own chunk (offset s = 0) and in the m chunks before it
(offsets s = 1..m), m = ceil(E / C), where E is how far back the window reaches from a chunk's
first query: W*P - 1 virtual tokens for the flat mask, (W-1)*P for the token mask. Because the
mask is translation invariant, every chunk pair at offset s has the same (C, C) pattern, taken
from ``MaskSpec.allowed`` on one chunk pair. So each offset is one piece (``iha.backends.blocked``)
whose query and key chunks are plain views of the sequence: no mask at all where the pattern is
full, ``is_causal`` on the flat mask's diagonal, a (C, C) mask at the band's edge. Rows before the
first whole chunk (a cached prefix not a multiple of C) and after the last one get a dense piece
with a mask of at most (C, E + C).
"""

from __future__ import annotations

import math

import torch

from iha.backends.pieces import Piece, additive_mask, causal_dead_rows
from iha.masks import MaskSpec

# Chunk length as a fraction of the window: a chunk pair at the band's edge computes C*C scores
# of which about half are used, so small chunks waste less; but every offset is one more kernel
# call and one more merge pass over the output. C = W*P/4 ... W*P measured within noise of each
# other at N=2048, P=4 (docs/benchmarks.md); W*P/2 also keeps the merges few.
CHUNKS_PER_WINDOW = 2


def chunk_tokens(window: int) -> int:
    """Default chunk length in tokens for a window of ``window`` tokens."""
    return max(1, math.ceil(window / CHUNKS_PER_WINDOW))


def band_pieces(
    B: int,
    H: int,
    Lq: int,
    Lk: int,
    spec: MaskSpec,
    keys: torch.Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
    chunk: int | None = None,
) -> list[Piece]:
    """Pieces of a windowed flat/token mask; queries (Lq rows) bottom-right aligned to Lk keys.

    ``keys``: (B, Lk) bool virtual key padding (True = real) or None; with padding the chunked
    pieces need B == 1. ``chunk``: chunk length in tokens (default ``chunk_tokens(window)``).
    """
    P, W = spec.n_pseudo, spec.window
    if W is None or spec.mode == "none":
        raise ValueError(f"band_pieces needs a window and mask 'flat' or 'token', got {spec}")
    c_tok = min(chunk_tokens(W) if chunk is None else chunk, W)
    C = c_tok * P
    reach = W * P - 1 if spec.mode == "flat" else (W - 1) * P  # keys before a chunk's 1st query
    m = math.ceil(reach / C)
    D = Lk - Lq  # key row of query row 0
    head = min(-D % C, Lq)  # rows before the first chunk whose keys start on a multiple of C
    n = (Lq - head) // C
    tail = head + n * C
    a = D + head  # key row of chunk 0's own keys, a multiple of C

    pieces = []
    for r0, r1 in ((0, head), (tail, Lq)):
        if r1 > r0:
            pieces.append(_dense_piece(r0, r1, D, reach, spec, keys, dtype, device))
    if n == 0:
        return pieces
    if keys is not None and B != 1:
        raise ValueError(f"band_pieces with key padding needs B == 1, got B={B}")

    def first(s: int) -> int:  # first query chunk whose key chunk at offset s exists
        return max(0, s - a // C)

    def rows(j0: int, j1: int) -> tuple[int, int]:
        return head + j0 * C, head + j1 * C

    def offset_piece(s: int, pattern: torch.Tensor, j0: int, j1: int) -> Piece:
        """Query chunks j0..j1-1 against the key chunk s before each, pattern (C, C)."""
        span = (a + (j0 - s) * C, a + (j1 - s) * C)
        causal = s == 0 and torch.equal(pattern, torch.ones_like(pattern).tril())
        if keys is None:
            mask = None if causal or pattern.all() else additive_mask(pattern, dtype)[None, None]
            dead = ~pattern.any(-1)
            return Piece(rows(j0, j1), span, chunk=C, mask=mask, causal=causal,
                         dead=dead[None, None] if dead.any() else None)
        own = keys[0, span[0] : span[1]].view(1, -1, 1, C)  # (1, chunks, 1, C)
        if causal:  # the padding alone, broadcast over the rows
            return Piece(rows(j0, j1), span, chunk=C, mask=additive_mask(own, dtype),
                         causal=True, dead=causal_dead_rows(own[:, :, 0, :], C))
        allowed = pattern & own  # (1, chunks, C, C)
        return Piece(rows(j0, j1), span, chunk=C, mask=additive_mask(allowed, dtype),
                     dead=~allowed.any(-1))

    patterns = [
        MaskSpec(spec.mode, P, c_tok, c_tok, q_start=s * c_tok, k_start=0, window=W).allowed(
            device
        )
        for s in range(m + 1)
    ]  # patterns[s]: (C, C), query chunk j against key chunk j - s
    full = 0  # offsets 1..full are fully visible: one piece with overlapping key views
    while full < m and bool(patterns[full + 1].all()):
        full += 1
    if full < 2:
        full = 0
    j_full = first(full)
    for s in range(m + 1):
        if not patterns[s].any():
            continue
        if 1 <= s <= full:  # only the early chunks that the merged piece below cannot serve
            j0, j1 = first(s), min(j_full, n)
        else:
            j0, j1 = first(s), n
        if j0 < j1:
            pieces.append(offset_piece(s, patterns[s], j0, j1))
    if full and j_full < n:
        k0 = a + (j_full - full) * C
        span = (k0, a + (n - 1) * C)  # keys of chunk j: full*C rows from k0 + (j - j_full)*C
        merged = Piece(rows(j_full, n), span, chunk=C, key_len=full * C)
        if keys is not None:
            visible = keys[0, k0 : a + (n - 1) * C].unfold(0, full * C, C)  # (chunks, full*C)
            merged.mask = additive_mask(visible[None, :, None, :], dtype)
            merged.dead = ~visible.any(-1)[None, :, None]
        pieces.append(merged)
    return pieces


def _dense_piece(r0, r1, D, reach, spec, keys, dtype, device) -> Piece:
    """Query rows [r0, r1) (fewer than a chunk) against every key they can reach, dense mask."""
    P = spec.n_pseudo
    k0 = max(0, (D + r0 - reach) // P * P)  # first reachable key, rounded down to a token
    k1 = D + r1
    allowed = MaskSpec(
        spec.mode, P, (r1 - r0) // P, (k1 - k0) // P, q_start=(D + r0) // P, k_start=k0 // P,
        window=spec.window,
    ).allowed(device)  # (R, K)
    if keys is not None:
        allowed = allowed[None, None] & keys[:, None, None, k0:k1]  # (B, 1, R, K)
    return Piece(
        (r0, r1), (k0, k1), mask=additive_mask(allowed, dtype), dead=~allowed.any(-1)
    )
