"""Forward FLOPs of a model config, layer by layer (what ``iha describe`` and the trainer report).

All counts are built on ``iha.flops`` (the one FLOP counter): a multiply-add is 2 FLOPs, one
forward pass, causal masks and windows counted exactly (only allowed (query, key) pairs).
Per layer:

- global / local MHA: ``layer_flops(..., n_pseudo=1, collapse=None, window=w)``;
- talking heads: MHA plus two H x H mixes of the (causal) attention matrix, 2 H^2 FLOPs per
  allowed pair each;
- diff: the same projections and QK/AV work as MHA (two d-wide score maps for H/2 heads, one
  2d-wide value product), plus the lambda combination, 2 FLOPs per pair per differential head;
- IHA: ``layer_flops(..., n_pseudo=P, collapse=..., mask=..., window=w)`` (head mixing, virtual
  sequence attention, collapse).

The MLP costs 2 * 3 * D * F per token (SwiGLU: three D x F matrices; a GELU MLP has two, 2 * 2 *
D * F) and the LM head 2 * D * V; norms, RoPE and softmax are left out (lower order).
``paper_attn`` is the paper's appendix-C formula
(``iha.flops.paper_attention_cost``: H * N*P * keys * d, no causal discount).
"""

from __future__ import annotations

from iha import flops
from iha.models.config import ModelConfig
from iha.validate import check_int


def layer_flops_of_kind(cfg: ModelConfig, kind: str, seq_len: int) -> dict[str, int]:
    """Forward FLOPs of one attention layer of ``kind`` over ``seq_len`` tokens.

    Returns ``projections``, ``mixing`` (head mixing and collapse, talking-heads maps, diff
    lambda combination), ``attention`` (QK^T and AV over allowed pairs), ``total`` and
    ``paper_attention`` (the paper's formula).
    """
    D, H, G, d, N = cfg.hidden_size, cfg.num_attention_heads, cfg.n_kv_heads, cfg.head_dim, seq_len
    window = cfg.layer_window(kind)
    if kind.startswith("iha"):
        P = cfg.n_pseudo
        lf = flops.layer_flops(
            D,
            H,
            N,
            n_pseudo=P,
            n_kv_heads=G,
            head_dim=d,
            collapse=cfg.iha_collapse,
            mask=cfg.iha_mask,
            window=window,
        )
        mixing = lf.mixing + lf.collapse
        paper = flops.paper_attention_cost(N, H, d, n_pseudo=P, window=window)
    else:
        lf = flops.layer_flops(
            D, H, N, n_pseudo=1, n_kv_heads=G, head_dim=d, collapse=None, window=window
        )
        pairs = flops.attention_pairs(N, 1, "flat", window)  # per head
        if kind == "talking_heads":
            mixing = 2 * (2 * H * H * pairs)
        elif kind == "diff":
            mixing = 2 * (H // 2) * pairs
        else:
            mixing = 0
        paper = flops.paper_attention_cost(N, H, d, window=window)
    out = {
        "projections": lf.projections,
        "mixing": mixing,
        "attention": lf.attention,
        "paper_attention": paper,
    }
    out["total"] = out["projections"] + out["mixing"] + out["attention"]
    return out


def model_flops(cfg: ModelConfig, seq_len: int | None = None) -> dict[str, int]:
    """Forward FLOPs of the whole model over one sequence of ``seq_len`` tokens (default N).

    Args:
        cfg (ModelConfig): the model.
        seq_len (int, optional): tokens N. Default: ``None`` (``cfg.max_position_embeddings``).

    Returns:
        dict[str, int]: ``attention`` (QK/AV), ``attention_layers`` (attention layers in full),
        ``mlp``, ``lm_head``, ``total``, ``paper_attention`` (the paper's formula).

    Example::

        >>> from iha.models import get_preset, model_flops
        >>> f = model_flops(get_preset("tiny"), seq_len=64)
        >>> f["total"] == f["attention_layers"] + f["mlp"] + f["lm_head"]
        True
    """
    N = cfg.max_position_embeddings if seq_len is None else seq_len
    check_int("seq_len", N)
    attention = layers = paper = 0
    for kind in cfg.layer_kinds():
        lf = layer_flops_of_kind(cfg, kind, N)
        attention += lf["attention"]
        layers += lf["total"]
        paper += lf["paper_attention"]
    mlp_matrices = 2 if cfg.mlp_type == "gelu" else 3
    mlp = cfg.num_hidden_layers * 2 * N * mlp_matrices * cfg.hidden_size * cfg.ffn_size
    lm_head = 2 * N * cfg.hidden_size * cfg.vocab_size
    return {
        "attention": attention,
        "attention_layers": layers,
        "mlp": mlp,
        "lm_head": lm_head,
        "total": layers + mlp + lm_head,
        "paper_attention": paper,
    }
