"""The Polynomial-filter construction (paper section 4, appendix B) as real module weights.

Task: from X (N x d) and a full-rank A (N x N) compute ``[X, AX, ..., A^(k-1) X]`` with one
layer of linear attention (``kernel="linear"``, no mask, no RoPE) on one-hot positions
``X_hat = [X, I_N]``. The module's score scale 1/sqrt(head_dim) is undone inside W_Q.

IHA (:func:`build_iha_polynomial`, H = P = ceil(sqrt(k))):

* query head h reads the one-hot position: ``q_n = row n of A^(hH)``; key head j gives
  ``k_m = column m of A^j``, so ``q_n . k_m = (A^(hH + j))_nm``;
* value head j writes X into its own block j of the head dimension;
* ``alpha_q`` routes query head h to pseudo 0 of head h only (the other pseudo queries are 0);
  ``alpha_k`` and ``alpha_v`` route key/value head j to pseudo j of every head;
* so pseudo query (n, 0) of head h sums, over the P pseudo keys, ``A^(hH + j) X`` into block j:
  head h outputs ``[A^(hH) X, ..., A^(hH + H - 1) X]``; the collapse keeps pseudo 0 and
  ``o_proj`` lays the H^2 >= k blocks out in order (powers >= k are dropped).

MHA (:func:`build_mha_polynomial`, k heads, the same module with P = 1 and identity mixing):
head j has ``q_n = row n of A^j``, ``k_m = e_m`` and ``v_m = X_m``.

Why MHA with H heads cannot (:func:`mha_lower_bound`). Every entry of a one-layer linear MHA's
output is a polynomial in X; the target is linear, so the degree-1 part must equal it. Writing
``Q = X W_qx + W_qe`` (content and position parts, likewise K and V), the degree-1 part is
``sum_h [T_h X C_h + X C'_h + B_h X^T D_h]`` with ``T_h = W_qe W_ke^T``. Restrict X to its first
column x and read the first column of each output block j: the block-j operator is
``A^j = sum_h c_hj T_h + c'_j I + sum_h b_h w_hj^T``, i.e. every power lies in
``S + {U W^T}`` with ``S = span(T_1..T_H, I)`` (dim <= H + 1) and U = span(b_1..b_H)
(dim <= H). The powers span r = min(k, N) dimensions (A has N distinct eigenvalues, so
p(A) for deg p < k is fixed by p's values at the eigenvalues), hence at least ``r - H - 1`` of
those dimensions hold matrices p(A) with column space in U. The column space of p(A) is spanned
by the eigenvectors where p does not vanish, so all of them vanish at >= N - H common
eigenvalues, a space of dimension ``max(0, r - N + H)``. With ``N >= 2H + 2`` this forces
``r <= H + 1`` (eigenvectors and eigenvalues over C). So an H-head MHA needs
``min(k, N) <= H + 1`` (k heads in the paper's count; the +1 is the identity that a
content-query/position-key term can add), while IHA with H heads reaches H^2 powers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from iha.attention import InterleavedHeadAttention
from iha.validate import check_int


def one_hot_positions(x: Tensor) -> Tensor:
    """``X_hat = [X, I_N]``: (..., N, d) -> (..., N, d + N)."""
    n = x.shape[-2]
    eye = torch.eye(n, dtype=x.dtype, device=x.device).expand(*x.shape[:-2], n, n)
    return torch.cat([x, eye], dim=-1)


class PolynomialFilterNet(nn.Module):
    """One attention layer computing the filter bank from ``X_hat``.

    ``forward(x_hat)``: (B, N, d + N) -> (B, N, k * d). The input is zero-padded to the layer's
    ``d_model`` and the first ``k * d`` output channels are returned.
    """

    def __init__(self, attn: InterleavedHeadAttention, in_features: int, out_features: int):
        super().__init__()
        self.attn = attn
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x_hat: Tensor) -> Tensor:
        pad = self.attn.d_model - self.in_features
        x = torch.nn.functional.pad(x_hat, (0, pad))  # (B, N, d_model)
        return self.attn(x)[..., : self.out_features]


def _linear_layer(
    d_model: int, n_heads: int, n_pseudo: int, head_dim: int
) -> InterleavedHeadAttention:
    layer = InterleavedHeadAttention(
        d_model,
        n_heads,
        n_pseudo=n_pseudo,
        collapse="global",
        mask="none",
        rope_theta=None,
        init="exact_mha",
        head_dim=head_dim,
        kernel="linear",
        backend="reference",
    ).double()
    for p in layer.parameters():
        p.data.zero_()
    return layer


def _check_operator(a: Tensor) -> int:
    if a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a has shape {tuple(a.shape)}; accepted: (N, N)")
    return a.shape[0]


@torch.no_grad()
def build_iha_polynomial(a: Tensor, d: int, k: int) -> PolynomialFilterNet:
    """IHA with H = P = ceil(sqrt(k)) heads whose output is ``[X, AX, ..., A^(k-1) X]``.

    Args:
        a: (N, N) operator.
        d: width of X.
        k: number of powers.

    Returns:
        A float64 :class:`PolynomialFilterNet` wrapping one ``InterleavedHeadAttention``.
    """
    n = _check_operator(a)
    check_int("d", d, 1)
    check_int("k", k, 1)
    heads = math.isqrt(k - 1) + 1  # ceil(sqrt(k))
    head_dim = max(n, heads * d)
    d_model = max(d + n, k * d)
    layer = _linear_layer(d_model, heads, heads, head_dim)
    a = a.double()
    root = math.sqrt(head_dim)  # undoes the layer's 1/sqrt(head_dim) score scale
    pos = slice(d, d + n)  # one-hot position channels of X_hat
    for h in range(heads):
        rows = slice(h * head_dim, h * head_dim + n)
        # q_n = row n of A^(hH): W_q[r, d + n] = (A^(hH))[n, r]
        layer.q_proj.weight[rows, pos] = root * torch.linalg.matrix_power(a, h * heads).T
        # k_m = column m of A^h: W_k[r, d + m] = (A^h)[r, m]
        layer.k_proj.weight[rows, pos] = torch.linalg.matrix_power(a, h)
        for c in range(d):  # v_m = X_m in block h
            layer.v_proj.weight[h * head_dim + h * d + c, c] = 1.0
        layer.alpha_q[h, h, 0] = 1.0
        layer.alpha_k[h, :, h] = 1.0
        layer.alpha_v[h, :, h] = 1.0
        layer.collapse[h, h * heads] = 1.0
        for j in range(heads):
            power = h * heads + j
            if power < k:
                for c in range(d):
                    layer.o_proj.weight[power * d + c, h * head_dim + j * d + c] = 1.0
    return PolynomialFilterNet(layer, d + n, k * d)


@torch.no_grad()
def build_mha_polynomial(a: Tensor, d: int, k: int) -> PolynomialFilterNet:
    """MHA with k heads (the module with P = 1, identity mixing) computing the filter bank."""
    n = _check_operator(a)
    check_int("d", d, 1)
    check_int("k", k, 1)
    head_dim = max(n, d)
    d_model = max(d + n, k * d)
    layer = _linear_layer(d_model, k, 1, head_dim)
    a = a.double()
    root = math.sqrt(head_dim)
    pos = slice(d, d + n)
    layer.alpha_q[:, :, 0] = torch.eye(k, dtype=torch.float64)
    layer.alpha_k[:, :, 0] = torch.eye(k, dtype=torch.float64)
    layer.alpha_v[:, :, 0] = torch.eye(k, dtype=torch.float64)
    layer.collapse.copy_(torch.eye(k, dtype=torch.float64))
    for j in range(k):
        rows = slice(j * head_dim, j * head_dim + n)
        layer.q_proj.weight[rows, pos] = root * torch.linalg.matrix_power(a, j).T
        layer.k_proj.weight[rows, pos] = torch.eye(n, dtype=torch.float64)
        for c in range(d):
            layer.v_proj.weight[j * head_dim + c, c] = 1.0
            layer.o_proj.weight[j * d + c, j * head_dim + c] = 1.0
    return PolynomialFilterNet(layer, d + n, k * d)


@dataclass(frozen=True)
class MHALowerBound:
    """The numbers behind "an H-head MHA cannot compute k powers" (see the module docstring).

    Attributes:
        n_heads: H.
        k: number of powers asked for.
        power_rank: numerical rank of {A^0, ..., A^(k-1)} (as N^2-vectors).
        operator_budget: H + 1, the most powers an H-head MHA can produce.
        min_eigen_gap: smallest distance between two eigenvalues of A (> 0: all distinct).
        premises_hold: N >= 2H + 2 and the eigenvalues are distinct (gap > 1e-8).
        best_fit_residual: relative Frobenius residual of the best fit of the k powers by
            span(I, T_1..T_H) (the positional-score heads plus the identity), Eckart-Young.
        impossible: premises hold and power_rank > H + 1.
    """

    n_heads: int
    k: int
    power_rank: int
    operator_budget: int
    min_eigen_gap: float
    premises_hold: bool
    best_fit_residual: float
    impossible: bool


def mha_lower_bound(a: Tensor, k: int, n_heads: int) -> MHALowerBound:
    """Check that no ``n_heads``-head linear MHA computes ``[X, ..., A^(k-1) X]`` exactly."""
    n = _check_operator(a)
    check_int("k", k, 1)
    check_int("n_heads", n_heads, 1)
    a = a.double()
    powers = torch.stack([torch.linalg.matrix_power(a, j).reshape(-1) for j in range(k)], 1)
    sv = torch.linalg.svdvals(powers)  # (min(N^2, k),)
    power_rank = int((sv > sv[0] * 1e-10).sum())
    eig = torch.linalg.eigvals(a)
    gaps = (eig[:, None] - eig[None, :]).abs() + torch.eye(n, dtype=torch.float64) * 1e30
    min_gap = float(gaps.min())
    # Best fit by span(I) + any n_heads-dimensional subspace: remove the identity direction,
    # then keep the top n_heads singular directions (Eckart-Young).
    u = torch.eye(n, dtype=torch.float64).reshape(-1, 1) / math.sqrt(n)
    rest = powers - u @ (u.T @ powers)
    sv_rest = torch.linalg.svdvals(rest)
    residual = float(sv_rest[n_heads:].square().sum().sqrt() / powers.norm())
    premises = n >= 2 * n_heads + 2 and min_gap > 1e-8
    return MHALowerBound(
        n_heads=n_heads,
        k=k,
        power_rank=power_rank,
        operator_budget=n_heads + 1,
        min_eigen_gap=min_gap,
        premises_hold=premises,
        best_fit_residual=residual,
        impossible=premises and power_rank > n_heads + 1,
    )


def attention_parameter_counts(net: PolynomialFilterNet) -> dict[str, int]:
    """Parameter counts of a construction's layer: projections, mixing and the total."""
    layer = net.attn
    proj = sum(
        p.numel()
        for m in (layer.q_proj, layer.k_proj, layer.v_proj, layer.o_proj)
        for p in m.parameters()
    )
    mixing = sum(p.numel() for p in (layer.alpha_q, layer.alpha_k, layer.alpha_v, layer.collapse))
    return {"projections": proj, "mixing": mixing, "total": proj + mixing}
