"""The paper's parameter formulas as functions, evaluated against the constructions' real weights.

Polynomial filter (appendix B). X is N x d, the input is ``X_hat = [X, I_N]`` (width N + d), a
head has query/key width n (n = N for a full-rank score matrix) and value width d. A head's
W_Q and W_K hold ``n (N + d)`` parameters each and W_V ``d (N + d)``, so a construction with
``heads`` heads needs

    2 n (N + d) heads + d (N + d) heads

(:func:`polynomial_formula`): with heads = k for MHA this is the paper's Theta(k N^2), with
heads = ceil(sqrt(k)) for IHA its Theta(sqrt(k) N^2), IHA adding the 4 H^2 P mixing and
collapse weights (:func:`iha_mixing_formula`). The theorem assumes kd < N.

CPM-3 (appendix B). The attention "cost" of the constructions is read as the query/key weights
that address positions: each head maps the N_max one-hot positions to an N_max-wide query and
key, 2 N_max^2 per head, so ``T_MHA = 2 N_max^3`` (N_max heads, Theta(N_max^3)) and
``T_IHA = 2 ceil(sqrt(N_max)) N_max^2`` (Theta(N_max^2.5)) (:func:`cpm3_formula`).

The constructions in :mod:`iha.theory.polynomial` and :mod:`iha.theory.cpm3` are real
``InterleavedHeadAttention`` layers, whose single ``head_dim`` and padded ``d_model`` allocate
more than the formulas count. Each construction is counted three ways from its weights
(:func:`weight_counts`): the rows of W_Q, W_K, W_V that hold a non-zero weight times the width
of the input the formula charges (N + d for the polynomial filter: the formula's own
accounting), the non-zero block (those rows times the input columns actually read), and every
entry the module allocates. ``iha theory`` prints each formula as MATCHES or DIFFERS against
the first count, with all three numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from iha.tasks import random_full_rank
from iha.tasks.base import make_generator


def ceil_sqrt(k: int) -> int:
    """ceil(sqrt(k)) for k >= 1, exactly."""
    return math.isqrt(k - 1) + 1


def polynomial_formula(heads: int, n_tokens: int, d: int, qk_width: int | None = None) -> int:
    """The paper's polynomial-filter count ``2 n (N + d) heads + d (N + d) heads`` (n = N)."""
    n = n_tokens if qk_width is None else qk_width
    return 2 * n * (n_tokens + d) * heads + d * (n_tokens + d) * heads


def iha_mixing_formula(n_heads: int, n_pseudo: int) -> int:
    """The paper's IHA overhead: 4 H^2 P (three alphas H x H x P and a global H x HP collapse)."""
    return 4 * n_heads * n_heads * n_pseudo


def cpm3_formula(n_max: int, arch: str) -> int:
    """``T_MHA = 2 N_max^3`` (arch "mha") or ``T_IHA = 2 ceil(sqrt(N_max)) N_max^2`` ("iha")."""
    heads = n_max if arch == "mha" else ceil_sqrt(n_max)
    return 2 * heads * n_max * n_max


def weight_counts(
    layer: nn.Module, input_width: int, names: Iterable[str] = ("q_proj", "k_proj", "v_proj")
) -> dict[str, int]:
    """Counts of a construction's projection weights (summed over ``names``).

    ``rows_x_input``: rows holding a non-zero weight times ``input_width``; ``nonzero_block``:
    those rows times the input columns any row reads; ``allocated``: every entry.
    """
    counts = {"rows_x_input": 0, "nonzero_block": 0, "allocated": 0}
    for name in names:
        nonzero = getattr(layer, name).weight.detach() != 0  # (out, in)
        rows, cols = int(nonzero.any(dim=1).sum()), int(nonzero.any(dim=0).sum())
        counts["rows_x_input"] += rows * input_width
        counts["nonzero_block"] += rows * cols
        counts["allocated"] += nonzero.numel()
    return counts


@dataclass(frozen=True)
class FormulaCheck:
    """One evaluation: a formula's value against a construction's used and allocated weights."""

    what: str  # e.g. "Polynomial MHA (k=4, N=8, d=2)"
    inside_assumptions: bool | None  # kd < N for the polynomial filter; None where none stated
    formula_text: str
    formula: int
    counted: int  # the construction counted the formula's way (see the module docstring)
    nonzero_block: int
    allocated: int

    @property
    def matches(self) -> bool:
        return self.counted == self.formula


def polynomial_formula_checks(
    grid: Iterable[tuple[int, int, int]] = (
        (4, 12, 2), (9, 20, 2), (16, 40, 2), (4, 8, 2), (9, 8, 2), (16, 12, 1),
    ),  # fmt: skip
    seed: int = 0,
) -> list[FormulaCheck]:
    """The polynomial-filter formula against both constructions over (k, N, d) triples.

    The default grid has three points inside the theorem's assumption kd < N and three beyond
    it (kd >= N; the first two are the settings of the construction checks in ``iha theory``).
    """
    from iha.theory.polynomial import build_iha_polynomial, build_mha_polynomial

    out = []
    for k, n, d in grid:
        a = random_full_rank(1, n, make_generator(seed, "theory-formulas"))[0]
        inside = k * d < n
        for arch, build in (("MHA", build_mha_polynomial), ("IHA", build_iha_polynomial)):
            layer = build(a, d, k).attn
            heads = layer.n_heads
            text = f"2n(N+d)H + d(N+d)H, n = N, H = {'k' if arch == 'MHA' else 'ceil(sqrt(k))'}"
            c = weight_counts(layer, n + d)
            out.append(FormulaCheck(
                f"Polynomial {arch} (k={k}, N={n}, d={d}): W_Q, W_K, W_V",
                inside, text, polynomial_formula(heads, n, d),
                c["rows_x_input"], c["nonzero_block"], c["allocated"],
            ))  # fmt: skip
            if arch == "IHA":
                mixing = sum(p.numel() for p in (layer.alpha_q, layer.alpha_k, layer.alpha_v,
                                                 layer.collapse))  # fmt: skip
                nonzero = sum(int((p != 0).sum()) for p in (
                    layer.alpha_q, layer.alpha_k, layer.alpha_v, layer.collapse))  # fmt: skip
                out.append(FormulaCheck(
                    f"Polynomial IHA (k={k}, N={n}, d={d}): mixing and collapse", inside,
                    "4 H^2 P", iha_mixing_formula(heads, layer.n_pseudo), mixing, nonzero,
                    mixing,
                ))  # fmt: skip
    return out


def cpm3_formula_checks(n_max_values: Iterable[int] = (4, 9, 16, 25)) -> list[FormulaCheck]:
    """T_MHA and T_IHA against the CPM-3 constructions' position-addressing W_Q, W_K."""
    from iha.theory.cpm3 import build_cpm3_network

    out = []
    for n_max in n_max_values:
        for arch in ("mha", "iha"):
            net = build_cpm3_network(n_max, 5, 3, arch=arch)
            text = "2 N_max^3" if arch == "mha" else "2 ceil(sqrt(N_max)) N_max^2"
            # the formula charges each used row the N_max position channels it reads
            c = weight_counts(net.attn, n_max, ("q_proj", "k_proj"))
            out.append(FormulaCheck(
                f"CPM-3 T_{arch.upper()} (N_max={n_max}): W_Q, W_K", None, text,
                cpm3_formula(n_max, arch), c["rows_x_input"], c["nonzero_block"],
                c["allocated"],
            ))  # fmt: skip
    return out
