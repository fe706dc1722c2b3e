"""The paper's parameter formulas, evaluated against the constructions' real weights."""

from __future__ import annotations

import torch

from iha.theory.checks import formula_checks
from iha.theory.formulas import (
    cpm3_formula,
    iha_mixing_formula,
    polynomial_formula,
    polynomial_formula_checks,
    weight_counts,
)
from iha.theory.polynomial import build_iha_polynomial


def test_formulas_are_the_papers_expressions_by_hand() -> None:
    # MHA, k = 4, N = 12, d = 2: W_Q, W_K 4 x 12 x 14 each, W_V 4 x 2 x 14
    assert polynomial_formula(4, 12, 2) == 2 * 4 * 12 * 14 + 4 * 2 * 14 == 1456
    assert polynomial_formula(2, 12, 2) == 728  # IHA: H = ceil(sqrt(4)) = 2 heads
    assert iha_mixing_formula(3, 3) == 108
    assert cpm3_formula(9, "mha") == 2 * 9**3 and cpm3_formula(9, "iha") == 2 * 3 * 81


def test_grid_covers_both_sides_of_the_assumption_and_every_formula_matches() -> None:
    checks = polynomial_formula_checks()
    assert {c.inside_assumptions for c in checks} == {True, False}
    assert all(c.matches for c in checks)
    # the module allocates more than the formula counts (one head_dim for q, k and v)
    assert all(c.allocated > c.formula for c in checks if "W_V" in c.what)


def test_weight_counts_see_a_changed_construction() -> None:
    torch.manual_seed(0)
    a = torch.randn(12, 12, dtype=torch.float64) + 4 * torch.eye(12, dtype=torch.float64)
    layer = build_iha_polynomial(a, 2, 4).attn
    before = weight_counts(layer, 14)["rows_x_input"]
    assert before == polynomial_formula(2, 12, 2)
    with torch.no_grad():  # use one more value row: the count must move off the formula
        layer.v_proj.weight[layer.head_dim - 1, 0] = 1.0
    assert weight_counts(layer, 14)["rows_x_input"] == before + 14


def test_formula_rows_say_inside_or_beyond_and_report_numbers() -> None:
    rows = formula_checks(polynomial_grid=[(4, 12, 2), (9, 8, 2)], cpm3_n_max=(4,))
    assert {r.status for r in rows} == {"MATCHES"}
    assert any("inside kd < N" in r.claim for r in rows)
    assert any("beyond the assumption" in r.claim for r in rows)
    assert all("allocated by the module" in r.ours for r in rows)
