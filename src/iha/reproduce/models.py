"""The 1-layer models of the synthetic experiments.

:class:`OneLayerTagger` is a per-position tagger: token embeddings (or a linear map of feature
inputs) plus learned absolute position embeddings, one pre-norm attention block, one pre-norm
MLP block, a final norm and a linear head. Only the attention differs between the compared
models (:func:`make_attention`):

* ``"mha"``: ``InterleavedHeadAttention`` with P = 1, the exact-MHA init and its mixing
  parameters frozen, which is exactly multi-head attention (docs/spec.md: P = 1 with identity
  alphas and R = 1 is MHA) with no extra trainable parameter;
* ``"iha"``: ``InterleavedHeadAttention`` with P pseudo-heads, the default training init
  (near MHA, symmetry broken by small noise) and the paper's global collapse; other starts of
  the mixing weights for the ablations are :data:`MIXING_INITS`;
* ``"simplicial"``: :class:`iha.simplicial.TwoSimplicialAttention`, the paper's strongest
  baseline on relation composition.

Every experiment here needs the whole input for every output (the composed relation at (i, j)
reads row i and column j; a CPM-3 count reads every position; the filter bank reads all of X), so
the attention is bidirectional (``mask="none"``). Positions come from the learned embeddings;
RoPE is off (``rope_theta=None``), which also makes virtual vs token positions moot.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from iha.attention import InterleavedHeadAttention, init_exact_mha_mixing
from iha.simplicial import TwoSimplicialAttention
from iha.validate import check_choice

ATTENTION_KINDS = ("mha", "iha", "simplicial")
# Starts of the IHA mixing weights compared in the ablations:
#   near_mha: exact-MHA (identity alphas, collapse picking one copy) + N(0, 0.02^2) noise (default)
#   near_mha_noise_0.2: the same start with ten times the noise
#   random: alphas N(0, 1/H) (each pseudo-head a random mix of heads), collapse N(0, 1/(H P))
MIXING_INITS = ("near_mha", "near_mha_noise_0.2", "random")
MIXING_NAMES = ("alpha_q", "alpha_k", "alpha_v", "collapse")


def __getattr__(name: str):
    """``FoldedInterleavedHeadAttention`` is deprecated: the same layer as
    ``iha.InterleavedHeadAttention`` (the mixing folded into the projection weights), removed
    because it duplicated the IHA pipeline; the old name returns the one layer."""
    if name == "FoldedInterleavedHeadAttention":
        warnings.warn(
            "iha.reproduce.models.FoldedInterleavedHeadAttention is deprecated; it computed the "
            "same layer as iha.InterleavedHeadAttention, which is returned instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return InterleavedHeadAttention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@torch.no_grad()
def init_mixing(layer: InterleavedHeadAttention, mixing_init: str, seed: int = 0) -> None:
    """Set the IHA mixing weights to one of :data:`MIXING_INITS` (projections untouched)."""
    check_choice("mixing_init", mixing_init, MIXING_INITS)
    g = torch.Generator().manual_seed(seed)
    H, P = layer.n_heads, layer.n_pseudo
    if mixing_init == "random":
        for a in (layer.alpha_q, layer.alpha_k, layer.alpha_v):
            a.copy_(torch.randn(a.shape, generator=g) / math.sqrt(a.shape[0]))
        layer.collapse.copy_(torch.randn(layer.collapse.shape, generator=g) / math.sqrt(H * P))
        return
    noise = 0.02 if mixing_init == "near_mha" else 0.2
    init_exact_mha_mixing(
        layer.alpha_q, layer.alpha_k, layer.alpha_v, layer.collapse, init_noise=noise, generator=g
    )


def mixing_movement(layer: nn.Module, start: dict[str, torch.Tensor]) -> dict[str, dict]:
    """How far the mixing weights moved from ``start`` (their values before training).

    Per parameter (alpha_q, alpha_k, alpha_v, collapse): ``rel_change`` = ||W - W0|| / ||W0||
    and ``copy_spread`` before and after: ||W - mean_p W|| / ||W|| over the pseudo axis p (0
    when the P pseudo-heads are identical copies, i.e. the layer is MHA-like; a global collapse
    is viewed as (H, H, P)).
    """
    out = {}
    for name in MIXING_NAMES:
        w = getattr(layer, name).detach().double()
        w0 = start[name].double()
        if name == "collapse":
            w, w0 = (t.view(layer.n_heads, -1, layer.n_pseudo) for t in (w, w0))

        def spread(t: torch.Tensor) -> float:
            return float((t - t.mean(-1, keepdim=True)).norm() / t.norm().clamp_min(1e-30))

        out[name] = {
            "rel_change": float((w - w0).norm() / w0.norm().clamp_min(1e-30)),
            "copy_spread_start": spread(w0),
            "copy_spread_end": spread(w),
        }
    return out


def make_attention(
    kind: str,
    d_model: int,
    n_heads: int,
    n_pseudo: int = 1,
    *,
    head_dim: int | None = None,
    kernel: str = "softmax",
    mixing_init: str = "near_mha",
    seed: int = 0,
) -> nn.Module:
    """A bidirectional attention layer without RoPE (see module doc for the kinds).

    Args:
        kind: one of :data:`ATTENTION_KINDS`.
        d_model: model width D.
        n_heads: H.
        n_pseudo: P for ``"iha"`` (must be 1 or omitted for the other kinds).
        head_dim: per-head width (default D / H).
        kernel: "softmax" or "linear" (the polynomial construction's linear attention; not for
            ``"simplicial"``).
        mixing_init: start of the IHA mixing weights, one of :data:`MIXING_INITS`.
        seed: seeds the noise of ``mixing_init``.
    """
    check_choice("kind", kind, ATTENTION_KINDS)
    if kind != "iha" and n_pseudo != 1:
        raise ValueError(f"n_pseudo={n_pseudo} must be 1 for kind={kind!r}")
    if kind == "simplicial":
        if kernel != "softmax":
            raise ValueError(f"kernel={kernel!r}: kind='simplicial' supports 'softmax' only")
        return TwoSimplicialAttention(d_model, n_heads, head_dim=head_dim, mask="none")
    check_choice("mixing_init", mixing_init, MIXING_INITS)
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
    elif n_pseudo > 1:
        init_mixing(layer, mixing_init, seed)
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
