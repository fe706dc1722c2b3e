"""The 1-layer models of the synthetic experiments.

:class:`OneLayerTagger` is a per-position tagger: token embeddings (or a linear map of feature
inputs) plus learned absolute position embeddings, one pre-norm attention block, one pre-norm
MLP block, a final norm and a linear head. Only the attention differs between the compared
models (:func:`make_attention`):

* ``"mha"``: ``InterleavedHeadAttention`` with P = 1, the exact-MHA init and its mixing
  parameters frozen, which is exactly multi-head attention (docs/spec.md: P = 1 with identity
  alphas and R = 1 is MHA) with no extra trainable parameter;
* ``"iha"``: ``InterleavedHeadAttention`` with P pseudo-heads, the default training init
  (near MHA, symmetry broken by small noise) and the paper's global collapse.

Every experiment here needs the whole input for every output (the composed relation at (i, j)
reads row i and column j; a CPM-3 count reads every position; the filter bank reads all of X), so
the attention is bidirectional (``mask="none"``). Positions come from the learned embeddings;
RoPE is off (``rope_theta=None``), which also makes virtual vs token positions moot.
"""

from __future__ import annotations

import torch
from torch import nn

from iha.attention import InterleavedHeadAttention

ATTENTION_KINDS = ("mha", "iha")


def make_attention(
    kind: str,
    d_model: int,
    n_heads: int,
    n_pseudo: int = 1,
    *,
    head_dim: int | None = None,
    kernel: str = "softmax",
) -> InterleavedHeadAttention:
    """A bidirectional attention layer without RoPE: ``"mha"`` or ``"iha"`` (see module doc).

    Args:
        kind: one of :data:`ATTENTION_KINDS`.
        d_model: model width D.
        n_heads: H.
        n_pseudo: P for ``"iha"`` (ignored, and must be 1 or omitted, for ``"mha"``).
        head_dim: per-head width (default D / H).
        kernel: "softmax" or "linear" (the polynomial construction's linear attention).
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"kind={kind!r}: accepted values are {ATTENTION_KINDS}")
    if kind == "mha" and n_pseudo != 1:
        raise ValueError(f"n_pseudo={n_pseudo} must be 1 for kind='mha'")
    backend = "reference" if kernel == "linear" else "auto"
    layer = InterleavedHeadAttention(
        d_model,
        n_heads,
        n_pseudo=n_pseudo,
        collapse="global",
        mask="none",
        rope_theta=None,
        init="exact_mha" if kind == "mha" else "default",
        head_dim=head_dim,
        kernel=kernel,
        backend=backend,
    )
    if kind == "mha":
        for p in (layer.alpha_q, layer.alpha_k, layer.alpha_v, layer.collapse):
            p.requires_grad_(False)
    return layer


class OneLayerTagger(nn.Module):
    """Embeddings, one attention block, one MLP block and a per-position head.

    Args:
        attention: a (B, N, D) -> (B, N, D) layer, e.g. from :func:`make_attention`.
        seq_len: N (the number of learned position embeddings).
        out_dim: outputs per position (1 for a binary logit, C for C classes, T for regression).
        vocab_size: number of token ids for token inputs, or None.
        input_dim: feature width for feature inputs, or None (exactly one of the two is set).
        mlp_ratio: MLP hidden width is ``mlp_ratio * D``.
    """

    def __init__(
        self,
        attention: nn.Module,
        seq_len: int,
        out_dim: int,
        *,
        vocab_size: int | None = None,
        input_dim: int | None = None,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        if (vocab_size is None) == (input_dim is None):
            raise ValueError("give exactly one of vocab_size (token inputs) and input_dim")
        d_model = attention.d_model
        self.embed = (
            nn.Embedding(vocab_size, d_model)
            if vocab_size is not None
            else nn.Linear(input_dim, d_model)
        )
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        self.attn = attention
        self.norm_attn, self.norm_mlp, self.norm_out = (nn.LayerNorm(d_model) for _ in range(3))
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
        )
        self.head = nn.Linear(d_model, out_dim)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, N) token ids or (B, N, F) features -> (B, N, out_dim)."""
        x = self.embed(inputs) + self.pos[: inputs.shape[1]]  # (B, N, D)
        x = x + self.attn(self.norm_attn(x))
        x = x + self.mlp(self.norm_mlp(x))
        return self.head(self.norm_out(x))


def trainable_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (frozen MHA mixing weights are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
