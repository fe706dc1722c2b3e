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
  the mixing weights for the ablations are :data:`MIXING_INITS`. With softmax attention it is
  built as :class:`FoldedInterleavedHeadAttention`, the same layer computed faster;
* ``"simplicial"``: :class:`iha.simplicial.TwoSimplicialAttention`, the paper's strongest
  baseline on relation composition.

Every experiment here needs the whole input for every output (the composed relation at (i, j)
reads row i and column j; a CPM-3 count reads every position; the filter bank reads all of X), so
the attention is bidirectional (``mask="none"``). Positions come from the learned embeddings;
RoPE is off (``rope_theta=None``), which also makes virtual vs token positions moot.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from iha.attention import InterleavedHeadAttention, init_exact_mha_mixing
from iha.simplicial import TwoSimplicialAttention

ATTENTION_KINDS = ("mha", "iha", "simplicial")
# Starts of the IHA mixing weights compared in the ablations:
#   near_mha: exact-MHA (identity alphas, collapse picking one copy) + N(0, 0.02^2) noise (default)
#   near_mha_noise_0.2: the same start with ten times the noise
#   random: alphas N(0, 1/H) (each pseudo-head a random mix of heads), collapse N(0, 1/(H P))
MIXING_INITS = ("near_mha", "near_mha_noise_0.2", "random")
MIXING_NAMES = ("alpha_q", "alpha_k", "alpha_v", "collapse")


class FoldedInterleavedHeadAttention(InterleavedHeadAttention):
    """The same layer as ``InterleavedHeadAttention``, computed with the mixing folded in.

    The mixing is linear and static, so mixing the projected heads equals projecting with mixed
    weights: ``qt[h, p] = x @ (sum_m alpha_q[m, h, p] W_q[m])^T``, and likewise the collapse
    folds into ``o_proj``. For the synthetic experiments' case (mask "none", no RoPE, no cache,
    no padding, softmax) the forward pass is then three (D -> P*H*d) GEMMs, one attention call
    on a strided view and one (P*H*d -> D) GEMM, without the einsum permutes and copies of the
    step-by-step path (``benchmarks/small_heads.py`` measures the difference). Every other case
    falls back to the parent's forward. The FLOPs are the same: with D = H d, projecting to
    P*H*d costs what projecting to H*d and mixing cost.
    """

    def forward(
        self,
        x: torch.Tensor,  # (B, N, D)
        key_padding_mask: torch.Tensor | None = None,
        cache=None,
    ) -> torch.Tensor:
        foldable = (
            key_padding_mask is None
            and cache is None
            and self.mask == "none"
            and self.rope_theta is None
            and self.kernel == "softmax"
            and self.collapse_mode == "global"
            and self.n_kv_heads == self.n_heads
            and not (self.training and self.dropout > 0)
        )
        if not foldable or x.dim() != 3 or x.shape[-1] != self.d_model:
            return super().forward(x, key_padding_mask, cache)
        B, N, D = x.shape
        H, P, d = self.n_heads, self.n_pseudo, self.head_dim

        def pseudo(proj: nn.Linear, alpha: torch.Tensor) -> torch.Tensor:
            weight = proj.weight.view(H, d, D)  # [source head m, c, D]
            mixed = torch.einsum("mcD,mhp->phcD", weight, alpha).reshape(P * H * d, D)
            # rows ordered (p, h, c): token n's output holds pseudo tokens n*P + p, head-minor
            return F.linear(x, mixed).view(B, N * P, H, d).transpose(1, 2)  # (B, H, N*P, d)

        qt = pseudo(self.q_proj, self.alpha_q)
        kt = pseudo(self.k_proj, self.alpha_k)
        vt = pseudo(self.v_proj, self.alpha_v)
        o = F.scaled_dot_product_attention(qt, kt, vt, scale=1.0 / math.sqrt(d))  # (B,H,N*P,d)
        # y[n] = sum_h W_o[:, h] sum_{k,p} R[h, k, p] o[k, n*P + p]: fold R into W_o
        out_w = torch.einsum(
            "Dhc,hkp->Dpkc", self.o_proj.weight.view(D, H, d), self.collapse.view(H, H, P)
        ).reshape(D, P * H * d)
        y = o.transpose(1, 2).reshape(B, N, P * H * d)  # (B, N, P*H*d), ordered (p, k, c)
        return F.linear(y, out_w, self.o_proj.bias)


@torch.no_grad()
def init_mixing(layer: InterleavedHeadAttention, mixing_init: str, seed: int = 0) -> None:
    """Set the IHA mixing weights to one of :data:`MIXING_INITS` (projections untouched)."""
    if mixing_init not in MIXING_INITS:
        raise ValueError(f"mixing_init={mixing_init!r}: accepted values are {MIXING_INITS}")
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
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"kind={kind!r}: accepted values are {ATTENTION_KINDS}")
    if kind != "iha" and n_pseudo != 1:
        raise ValueError(f"n_pseudo={n_pseudo} must be 1 for kind={kind!r}")
    if kind == "simplicial":
        if kernel != "softmax":
            raise ValueError(f"kernel={kernel!r}: kind='simplicial' supports 'softmax' only")
        return TwoSimplicialAttention(d_model, n_heads, head_dim=head_dim, mask="none")
    if mixing_init not in MIXING_INITS:
        raise ValueError(f"mixing_init={mixing_init!r}: accepted values are {MIXING_INITS}")
    backend = "reference" if kernel == "linear" else "auto"
    cls = FoldedInterleavedHeadAttention if kind == "iha" else InterleavedHeadAttention
    layer = cls(
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
