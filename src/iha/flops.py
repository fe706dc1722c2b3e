"""The one FLOP and parameter counter of `iha`.

Conventions: a multiply-add is 2 FLOPs; counts are for one forward pass (training is about 3x);
attention FLOPs count exactly the (query, key) pairs the mask allows, so causal masking and
windows are counted properly. ``paper_attention_cost`` is the paper's appendix-C formula, which
charges every query its full key range (no causal discount).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from iha.masks import MASK_MODES
from iha.validate import check_choice


def _tokens_seen(n_tokens: int, window: int | None) -> int:
    """sum over n in [0, N) of min(n + 1, window): keys seen by causal queries."""
    if window is None or window >= n_tokens:
        return n_tokens * (n_tokens + 1) // 2
    return window * (window + 1) // 2 + (n_tokens - window) * window


def attention_pairs(
    seq_len: int, n_pseudo: int = 1, mask: str = "flat", window: int | None = None
) -> int:
    """Number of (pseudo query, pseudo key) pairs the mask allows for one head.

    Args:
        seq_len (int): tokens N.
        n_pseudo (int): pseudo-heads P per head (1 = MHA). Default: 1.
        mask (str): ``"flat"`` (default; causal on the N*P sequence), ``"token"`` (block
            causal) or ``"none"`` (all pairs).
        window (int, optional): sliding window in original tokens, as everywhere in `iha`.
            Default: ``None``.

    Returns:
        int: the number of allowed pairs.

    Example::

        >>> from iha import flops
        >>> flops.attention_pairs(4, n_pseudo=2), flops.attention_pairs(4, 2, mask="token")
        (36, 40)
    """
    check_choice("mask", mask, MASK_MODES)
    if mask == "none":
        return (seq_len * n_pseudo) ** 2
    if mask == "flat":
        return _tokens_seen(seq_len * n_pseudo, None if window is None else window * n_pseudo)
    return n_pseudo**2 * _tokens_seen(seq_len, window)  # mask == "token"


def attention_flops(
    seq_len: int,
    n_heads: int,
    head_dim: int,
    n_pseudo: int = 1,
    mask: str = "flat",
    window: int | None = None,
) -> int:
    """Forward FLOPs of scores (QK^T) and weighted values (AV) over all heads, whole sequence:
    ``4 * head_dim * n_heads * attention_pairs(...)``.

    Args:
        seq_len (int): tokens N.
        n_heads (int): query heads H.
        head_dim (int): head size d.
        n_pseudo (int): pseudo-heads P per head (1 = MHA). Default: 1.
        mask (str): ``"flat"`` (default), ``"token"`` or ``"none"``.
        window (int, optional): sliding window in tokens. Default: ``None``.

    Returns:
        int: FLOPs (a multiply-add counts 2).

    Example::

        >>> from iha import flops
        >>> flops.attention_flops(seq_len=4, n_heads=1, head_dim=8, n_pseudo=2)
        1152
    """
    return 4 * head_dim * n_heads * attention_pairs(seq_len, n_pseudo, mask, window)


def paper_attention_cost(
    seq_len: int, n_heads: int, head_dim: int, n_pseudo: int = 1, window: int | None = None
) -> int:
    """The paper's cost H * (N*P) * (keys per query) * d, keys = N*P globally or W*P in a
    window (appendix C: no causal discount).

    Args:
        seq_len (int): tokens N.
        n_heads (int): heads H.
        head_dim (int): head size d.
        n_pseudo (int): pseudo-heads P. Default: 1.
        window (int, optional): window W in tokens. Default: ``None`` (global).

    Returns:
        int: the paper's cost.

    Example::

        >>> from iha import flops
        >>> flops.paper_attention_cost(4, 1, 8, n_pseudo=2)
        512
        >>> flops.paper_attention_cost(4, 1, 8, n_pseudo=2, window=2)
        256
    """
    keys = seq_len * n_pseudo if window is None else min(window, seq_len) * n_pseudo
    return n_heads * seq_len * n_pseudo * keys * head_dim


def simplicial_triples(seq_len: int, mask: str = "none", window=None) -> int:
    """Number of (query i, key j, key l) triples 2-simplicial attention allows for one head.

    Args:
        seq_len (int): tokens N.
        mask (str): ``"none"`` (default; all N^3) or ``"causal"`` (j, l <= i).
        window (int or tuple, optional): causal windows (w1, w2) in tokens for j and l (an int
            for both). Default: ``None``.

    Returns:
        int: the number of triples.

    Example::

        >>> from iha import flops
        >>> flops.simplicial_triples(3), flops.simplicial_triples(3, "causal")
        (27, 14)
    """
    if mask == "none":
        return seq_len**3
    if mask != "causal":
        raise ValueError(f"mask={mask!r} is not supported; expected one of ['none', 'causal']")
    w1, w2 = (window, window) if isinstance(window, int) else (window or (seq_len, seq_len))
    return sum(min(i + 1, w1) * min(i + 1, w2) for i in range(seq_len))


def simplicial_attention_flops(
    seq_len: int, n_heads: int, head_dim: int, mask: str = "none", window=None
) -> int:
    """Forward FLOPs of 2-simplicial attention (``iha.simplicial``) over all heads.

    Per allowed triple (i, j, l): the trilinear logit (d multiply-adds of q_i*k_j with k'_l) and
    the weighted value (d multiply-adds of A_ijl with v'_l), i.e. 4 d FLOPs as for a (query, key)
    pair of ordinary attention; plus, per (i, j) pair, forming q_i * k_j (d multiplies) and the
    final sum over j of v_j times the inner sum (d multiply-adds): 3 d FLOPs per pair.

    Args:
        seq_len (int): tokens N.
        n_heads (int): heads H.
        head_dim (int): head size d.
        mask (str): ``"none"`` (default) or ``"causal"``.
        window (int or tuple, optional): causal windows (w1, w2) in tokens. Default: ``None``.

    Returns:
        int: FLOPs.

    Example::

        >>> from iha import flops
        >>> flops.simplicial_attention_flops(3, n_heads=1, head_dim=4, mask="causal")
        296
    """
    if mask == "causal":
        w1 = window if isinstance(window, int) else (window or (seq_len, seq_len))[0]
        pairs = sum(min(i + 1, w1) for i in range(seq_len))
    else:
        pairs = seq_len * seq_len
    return n_heads * head_dim * (4 * simplicial_triples(seq_len, mask, window) + 3 * pairs)


def mixing_parameters(
    n_heads: int, n_pseudo: int, n_kv_heads: int | None = None, collapse: str = "global"
) -> int:
    """IHA parameters on top of MHA: alphas (H^2 P + 2 G^2 P) and the collapse (H^2 P or H P).

    With G = H and a global collapse this is the paper's 4 H^2 P.

    Args:
        n_heads (int): query heads H.
        n_pseudo (int): pseudo-heads P per head.
        n_kv_heads (int, optional): key/value heads G. Default: ``None`` (G = H).
        collapse (str): ``"global"`` (default, H^2 P) or ``"per_head"`` (H P).

    Returns:
        int: the number of mixing parameters.

    Example::

        >>> from iha import flops
        >>> flops.mixing_parameters(n_heads=8, n_pseudo=4)  # 4 H^2 P
        1024
    """
    G = n_heads if n_kv_heads is None else n_kv_heads
    R = n_heads * n_heads * n_pseudo if collapse == "global" else n_heads * n_pseudo
    return n_heads * n_heads * n_pseudo + 2 * G * G * n_pseudo + R


@dataclass(frozen=True)
class LayerFlops:
    """Forward FLOPs of one attention layer over a whole sequence of ``seq_len`` tokens
    (what :func:`layer_flops` returns).

    Args:
        projections (int): the q, k, v and o projections.
        mixing (int): the alpha mixing of queries, keys and values (0 without IHA).
        attention (int): scores and weighted values over the allowed pairs.
        collapse (int): the collapse (0 without IHA).

    Example::

        >>> from iha.flops import LayerFlops
        >>> f = LayerFlops(projections=4, mixing=2, attention=3, collapse=1)
        >>> f.total, f.as_dict()["total"]
        (10, 10)
    """

    projections: int
    mixing: int
    attention: int
    collapse: int

    @property
    def total(self) -> int:
        return self.projections + self.mixing + self.attention + self.collapse

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def layer_flops(
    d_model: int,
    n_heads: int,
    seq_len: int,
    n_pseudo: int = 1,
    n_kv_heads: int | None = None,
    head_dim: int | None = None,
    collapse: str | None = "global",
    mask: str = "flat",
    window: int | None = None,
) -> LayerFlops:
    """Forward FLOPs of an attention layer over ``seq_len`` tokens, part by part.

    Args:
        d_model (int): model width D.
        n_heads (int): query heads H.
        seq_len (int): tokens N.
        n_pseudo (int): pseudo-heads P (1 = MHA). Default: 1.
        n_kv_heads (int, optional): key/value heads G. Default: ``None`` (G = H).
        head_dim (int, optional): head size d. Default: ``None`` (D / H).
        collapse (str, optional): ``"global"`` (default), ``"per_head"``, or ``None`` for a
            layer without mixing (MHA).
        mask (str): ``"flat"`` (default), ``"token"`` or ``"none"``.
        window (int, optional): sliding window in tokens. Default: ``None``.

    Returns:
        LayerFlops: projections, mixing, attention and collapse FLOPs, and their ``total``.

    Example::

        >>> from iha import flops
        >>> f = flops.layer_flops(d_model=32, n_heads=4, seq_len=8, n_pseudo=2)
        >>> f.attention == flops.attention_flops(8, 4, 8, n_pseudo=2), f.total
        (True, 99328)
    """
    G = n_heads if n_kv_heads is None else n_kv_heads
    d = d_model // n_heads if head_dim is None else head_dim
    N, H, P = seq_len, n_heads, n_pseudo
    projections = 2 * N * d_model * d * (2 * H + 2 * G)  # q, o: H*d; k, v: G*d
    if collapse is None:
        mixing = collapse_flops = 0
    else:
        mixing = 2 * N * d * P * (H * H + 2 * G * G)
        collapse_flops = 2 * N * d * H * P * (H if collapse == "global" else 1)
    attention = attention_flops(N, H, d, P, mask, window)
    return LayerFlops(projections, mixing, attention, collapse_flops)
