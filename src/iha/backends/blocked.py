"""Masked attention without a dense (N*P)^2 mask: pieces merged by their log-sum-exp.

Every mask of docs/spec.md splits into a few dense *pieces*. A piece is a range of query rows
against a range of key rows of the interleaved sequence that needs no mask, ``is_causal``, or a
SMALL mask:

- flat, no window: one ``is_causal`` piece (plus an unmasked piece for a cached prefix);
- token, no window: the flat pieces plus a within-token piece, (P, P) per token, in which pseudo
  query p also sees the later pseudo keys p' > p of its own token (token = flat + that part);
- windows (``iha.backends.banded``): the rows in chunks of C, each chunk against its own chunk
  and the few chunks before it, one piece per chunk offset; O(N*P * W*P) time and memory.

The pieces are planned by ``iha.backends.pieces`` (no window) and ``iha.backends.banded``
(windows); this module runs them and merges their outputs. A piece may cut its rows into chunks
(query chunk j attends key chunk j); then the (B, H) axes are folded into one and a mask
broadcasts over (B*H, chunks, C, C). All query/key operands are views of the inputs: nothing is
gathered or copied. Each piece returns its output and row log-sum-exp
(LSE); outputs are merged exactly with weights ``exp(lse_i - lse)``. The backward pass calls each
piece's backward with the *merged* output and LSE, which gives every piece its exact share of the
gradient (the rule ring attention uses), accumulated in place into dq, dk, dv.

On CPU a piece runs PyTorch's fused flash kernel
(``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward, the kernels behind
``F.scaled_dot_product_attention`` on CPU); elsewhere a plain matmul version of the same two.

Precision: each merge weighs a piece by ``exp(lse_i - lse)`` from the kernel's float32 LSE, which
adds a relative error of about ``|lse| * 2^-24``; at realistic sizes the result stays within 2x of
the float32 reference's error (``tests/backends``), and tiny problems run as one piece.
"""

from __future__ import annotations

import torch

from iha.backends.banded import band_pieces
from iha.backends.pieces import Piece, dense_piece, full_pieces
from iha.backends.reference import attend_reference
from iha.backends.sdpa import attend_sdpa, expand_kv
from iha.masks import MaskSpec, expand_key_padding

_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_NEG_INF = float("-inf")

# Few query rows (decoding) or a small problem: one kernel call with a small dense mask beats
# several pieces, and needs no merge (each merge adds a relative error of about |lse| * eps).
DENSE_MAX_ROWS = 64
DENSE_MAX_SCORES = 1 << 16


def _layout(x: torch.Tensor, span: tuple[int, int], chunk: int | None) -> torch.Tensor:
    """View rows ``span`` of x (B, H, L, ...) in a piece's layout (no copy)."""
    x = x[:, :, span[0] : span[1]]
    if chunk is None:
        return x
    B, H, R = x.shape[:3]
    return x.reshape(B * H, R // chunk, chunk, *x.shape[3:])


def _key_layout(x: torch.Tensor, piece: Piece) -> torch.Tensor:
    """Keys/values of a piece: (B, H, K, d) rows, or overlapping chunks (B*H, n, key_len, d)."""
    c, n_k = piece.chunk, piece.key_len
    if c is None or n_k is None or n_k == c:
        return _layout(x, piece.keys, c)
    B, H, L, d = x.shape  # contiguous (``merged_attention`` ensures it)
    n = (piece.rows[1] - piece.rows[0]) // c
    return x.as_strided(
        (B * H, n, n_k, d), (L * d, c * d, d, 1), x.storage_offset() + piece.keys[0] * d
    )


def _add_key_grad(buf: _RowBuffer, grad: torch.Tensor, piece: Piece) -> None:
    """Accumulate a piece's key gradient (in its key layout) into the (B, H, Lk, d) buffer."""
    c, n_k = piece.chunk, piece.key_len
    if c is None or n_k is None or n_k == c:
        buf.add(*piece.keys, c, grad)
        return
    n = (piece.rows[1] - piece.rows[0]) // c
    k0 = piece.keys[0]
    for t in range(n_k // c):  # the t-th key chunk of query chunk j is key chunk j + t
        buf.add(k0 + t * c, k0 + t * c + n * c, c, grad[:, :, t * c : (t + 1) * c])


def _use_flash(q: torch.Tensor, v: torch.Tensor) -> bool:
    # The fused CPU kernel needs values as wide as queries (the Differential Transformer's are 2x).
    return q.device.type == "cpu" and q.dtype in _FLASH_DTYPES and v.shape[-1] == q.shape[-1]


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _math_scores(q, k, mask, causal, scale):
    w = _work_dtype(q)
    s = torch.matmul(q.to(w), k.to(w).transpose(-1, -2)) * scale  # (..., R, K)
    if mask is not None:
        s = s + mask
    if causal:
        lq, lk = s.shape[-2:]
        upper = torch.ones(lq, lk, dtype=torch.bool, device=s.device).triu(1)
        s = s.masked_fill(upper, _NEG_INF)
    return s


def _piece_forward(q, k, v, mask, causal, scale):
    """(out (..., R, d), lse (..., R)) of one piece; rows with no key give out 0."""
    if _use_flash(q, v) and q.shape[-2] > 0:  # its CPU kernel divides by the row count
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, attn_mask=mask, scale=scale
        )
    s = _math_scores(q, k, mask, causal, scale)
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.masked_fill(torch.isinf(lse), 0.0)[..., None])
    return torch.matmul(p, v.to(p.dtype)).to(v.dtype), lse


def _piece_backward(grad, q, k, v, out, lse, mask, causal, scale):
    """Gradients of one piece given the MERGED output and LSE (+inf on rows with no key)."""
    if _use_flash(q, v) and q.shape[-2] > 0:  # its CPU kernel divides by the row count
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad, q, k, v, out, lse, 0.0, causal, attn_mask=mask, scale=scale
        )
    s = _math_scores(q, k, mask, causal, scale)
    w = s.dtype
    p = torch.exp(s - lse.to(w)[..., None])  # exact attention weights of this piece's keys
    g = grad.to(w)
    dv = torch.matmul(p.transpose(-1, -2), g)
    dp = torch.matmul(g, v.to(w).transpose(-1, -2))
    ds = p * (dp - (g * out.to(w)).sum(-1, keepdim=True)) * scale
    dq = torch.matmul(ds, k.to(w))
    dk = torch.matmul(ds.transpose(-1, -2), q.to(w))
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class _RowBuffer:
    """A (B, H, L, ...) buffer written by row ranges: a row's first write copies, later ones add.

    Allocated empty (no zero-fill pass over a large tensor); rows never written are zeroed by
    ``result``.
    """

    def __init__(self, shape, dtype, device, fill: float = 0.0) -> None:
        self.buf = torch.empty(shape, dtype=dtype, device=device)
        self.fill = fill
        self.written: list[tuple[int, int]] = []

    def _unwritten(self, r0: int, r1: int) -> list[tuple[int, int]]:
        gaps, start = [], r0
        for a, b in sorted(self.written):
            if b <= start or a >= r1:
                continue
            if a > start:
                gaps.append((start, a))
            start = max(start, b)
        if start < r1:
            gaps.append((start, r1))
        return gaps

    def view(self, r0: int, r1: int, chunk: int | None) -> tuple[torch.Tensor, bool]:
        """The rows [r0, r1) in a piece's layout, and whether none of them was written yet."""
        gaps = self._unwritten(r0, r1)
        fresh = gaps == [(r0, r1)]
        if not fresh:
            for a, b in gaps:
                self.buf[:, :, a:b].fill_(self.fill)
        self.written.append((r0, r1))
        return _layout(self.buf, (r0, r1), chunk), fresh

    def add(self, r0: int, r1: int, chunk: int | None, value: torch.Tensor) -> None:
        view, fresh = self.view(r0, r1, chunk)
        if fresh:
            view.copy_(value)
        else:
            view.add_(value)

    def result(self) -> torch.Tensor:
        for a, b in self._unwritten(0, self.buf.shape[2]):
            self.buf[:, :, a:b].fill_(self.fill)
        return self.buf


class _MergedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pieces, scale):
        B, H, Lq, _ = q.shape
        work = _work_dtype(q)
        out = _RowBuffer((B, H, Lq, v.shape[-1]), work, q.device)
        lse = _RowBuffer((B, H, Lq), work, q.device, fill=_NEG_INF)
        for piece in pieces:
            (r0, r1), c = piece.rows, piece.chunk
            o_i, lse_i = _piece_forward(
                _layout(q, piece.rows, c),
                _key_layout(k, piece),
                _key_layout(v, piece),
                piece.mask,
                piece.causal,
                scale,
            )
            if piece.dead is not None:
                lse_i = lse_i.masked_fill(piece.dead, _NEG_INF)
            acc_o, fresh = out.view(r0, r1, c)  # views of the merged result in this layout
            acc_lse, _ = lse.view(r0, r1, c)
            if fresh:  # first piece on these rows
                acc_o.copy_(o_i)
                acc_lse.copy_(lse_i)
            else:
                lse_i = lse_i.to(work)
                new = torch.logaddexp(acc_lse, lse_i)
                safe = new.masked_fill(torch.isinf(new), 0.0)
                acc_o.mul_(torch.exp(acc_lse - safe)[..., None])
                acc_o.addcmul_(o_i, torch.exp(lse_i - safe)[..., None])
                acc_lse.copy_(new)
        out, lse = out.result().to(q.dtype), lse.result()
        ctx.pieces, ctx.scale = pieces, scale
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse = ctx.saved_tensors
        grad = grad.contiguous()
        lse = lse.masked_fill(lse == _NEG_INF, float("inf"))  # rows with no key: weights 0
        dq = _RowBuffer(q.shape, q.dtype, q.device)
        dk = _RowBuffer(k.shape, k.dtype, k.device)
        dv = _RowBuffer(v.shape, v.dtype, v.device)
        for piece in ctx.pieces:
            c = piece.chunk
            dqi, dki, dvi = _piece_backward(
                _layout(grad, piece.rows, c),
                _layout(q, piece.rows, c),
                _key_layout(k, piece),
                _key_layout(v, piece),
                _layout(out, piece.rows, c),
                _layout(lse, piece.rows, c),
                piece.mask,
                piece.causal,
                ctx.scale,
            )
            dq.add(*piece.rows, c, dqi)
            _add_key_grad(dk, dki, piece)
            _add_key_grad(dv, dvi, piece)
        return dq.result(), dk.result(), dv.result(), None, None


def merged_attention(
    q: torch.Tensor,  # (B, H, Lq, d)
    k: torch.Tensor,  # (B, H, Lk, d)
    v: torch.Tensor,  # (B, H, Lk, dv)
    pieces: list[Piece],
    scale: float,
) -> torch.Tensor:
    """Exact softmax attention of each query over the union of its pieces' keys: (B, H, Lq, dv).

    Rows that no piece covers, or that see no key in any piece, are zero (finite gradients).
    """
    # The fused kernel reads rows with their strides but the head dimension as contiguous;
    # overlapping key chunks are strided views of contiguous keys.
    q = q if q.stride(-1) == 1 else q.contiguous()
    if any(p.key_len not in (None, p.chunk) for p in pieces):
        k, v = k.contiguous(), v.contiguous()
    else:
        k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (k, v))
    return _MergedAttention.apply(q, k, v, pieces, scale)


def grouped_dense_attention(
    qt: torch.Tensor,  # (B, H, Lq, d)
    kt: torch.Tensor,  # (B, G, Lk, d), any strides with contiguous rows (a cache's view)
    vt: torch.Tensor,  # (B, G, Lk, dv)
    allowed: torch.Tensor,  # (Lq, Lk) bool
    keys: torch.Tensor | None,  # (B, Lk) bool key padding, True = real
    scale: float,
) -> torch.Tensor:
    """Few query rows (decoding) against all keys with a small dense mask: (B, H, Lq, dv).

    The H/G query heads of a key group (heads g*H/G .. (g+1)*H/G-1, as ``expand_kv``) become
    rows of one (B, G, H/G*Lq, d) query block, so the keys are neither expanded nor copied and
    each group is one fused attention call. Rows that see no key are zero.
    """
    B, H, Lq, d = qt.shape
    G, Lk = kt.shape[1], kt.shape[2]
    if H % G:
        raise ValueError(f"{G} key/value heads must divide the {H} query heads")
    mask = allowed[None, None]  # (1, 1, Lq, Lk)
    if keys is not None:
        mask = mask & keys[:, None, None, :]  # (B, 1, Lq, Lk)
    alive = mask.any(dim=-1, keepdim=True)  # (B|1, 1, Lq, 1)
    full = bool(mask.all())
    if not full:  # a row without any key would give NaN: let it see all, zero it below
        mask = (mask | ~alive).expand(-1, H // G, Lq, Lk).reshape(mask.shape[0], 1, -1, Lk)
    q = qt.reshape(B, G, H // G * Lq, d)
    out = torch.nn.functional.scaled_dot_product_attention(
        q, kt, vt, attn_mask=None if full else mask, scale=scale
    ).reshape(B, H, Lq, vt.shape[3])
    if full or bool(alive.all()):
        return out
    return out * alive  # (B|1, 1, Lq, 1) over every head


def attend_blocked(
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
    """Backend ``"blocked"``: every mask mode without a dense (N*P)^2 mask. -> (B, H, Nq*P, d).

    Windows use the banded layout (``iha.backends.banded``), O(N*P * W*P) time and memory.
    Small problems (at most ``DENSE_MAX_ROWS`` query rows, e.g. decoding, or at most
    ``DENSE_MAX_SCORES`` scores) run as one piece with a small dense mask.
    Dropout is delegated to ``"sdpa"`` and ``kernel="linear"`` to ``"reference"``.
    """
    common = dict(scale=scale, attention_mask=attention_mask, kernel=kernel)
    if kernel != "softmax":
        return attend_reference(qt, kt, vt, spec, **common, dropout_p=dropout_p)
    if dropout_p > 0.0:
        return attend_sdpa(qt, kt, vt, spec, **common, dropout_p=dropout_p)
    B, H, Lq, _ = qt.shape
    Lk = kt.shape[2]
    keys = None
    if attention_mask is not None:
        keys = expand_key_padding(attention_mask, spec.n_pseudo)  # (B, Nk*P)
    if Lq <= DENSE_MAX_ROWS:  # decoding: the heads of a key group share one call, no copies
        return grouped_dense_attention(qt, kt, vt, spec.allowed(qt.device), keys, scale)
    kt, vt = expand_kv(kt, H), expand_kv(vt, H)
    if Lq * Lk <= DENSE_MAX_SCORES:
        return merged_attention(qt, kt, vt, [dense_piece(spec, keys, qt.dtype, qt.device)], scale)
    if spec.window is None:
        pieces = full_pieces(B, H, Lq, Lk, spec, keys, qt.dtype, qt.device)
        return merged_attention(qt, kt, vt, pieces, scale)
    if keys is None:
        pieces = band_pieces(B, H, Lq, Lk, spec, None, qt.dtype, qt.device)
        return merged_attention(qt, kt, vt, pieces, scale)
    # Chunked pieces fold (B, H) into one axis, where a per-sequence padding mask of (C, C)
    # blocks cannot broadcast: run the sequences one at a time.
    outs = []
    for b in range(B):
        one = slice(b, b + 1)
        pieces = band_pieces(1, H, Lq, Lk, spec, keys[one], qt.dtype, qt.device)
        outs.append(merged_attention(qt[one], kt[one], vt[one], pieces, scale))
    return torch.cat(outs)
