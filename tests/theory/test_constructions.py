"""The paper's constructions, built as weights of the real modules, checked in float64."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from iha import InterleavedHeadAttention
from iha.tasks import CPM3Task, cpm3_targets, random_full_rank
from iha.theory.cpm3 import attention_qk_parameters, build_cpm3_network, heads_needed
from iha.theory.polynomial import (
    attention_parameter_counts,
    build_iha_polynomial,
    build_mha_polynomial,
    mha_lower_bound,
    one_hot_positions,
)
from iha.theory.strictness import (
    build_inclusion_pair,
    build_mha,
    build_strict_iha,
    linearity_defect,
    mha_reference,
    tanh_reference,
)

TOL = 1e-9


def operator(n: int, seed: int) -> torch.Tensor:
    return random_full_rank(1, n, torch.Generator().manual_seed(seed))[0]


def powers_reference(a: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """[X, AX, ..., A^(k-1) X] with explicit matrix powers, one example at a time."""
    return torch.stack(
        [torch.cat([torch.linalg.matrix_power(a, j) @ xb for j in range(k)], dim=-1) for xb in x]
    )


@pytest.mark.parametrize("k", [1, 2, 4, 5, 9])
def test_iha_with_ceil_sqrt_k_heads_outputs_the_filter_bank_exactly(k: int) -> None:
    n, d = 7, 2
    a = operator(n, k)
    x = torch.randn(5, n, d, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    net = build_iha_polynomial(a, d, k)
    layer = net.attn
    assert isinstance(layer, InterleavedHeadAttention)
    heads = math.ceil(math.sqrt(k))
    assert (layer.n_heads, layer.n_pseudo) == (heads, heads)
    assert (layer.kernel, layer.mask, layer.rope_theta) == ("linear", "none", None)
    with torch.no_grad():
        out = net(one_hot_positions(x))
    ref = powers_reference(a, x, k)
    assert out.shape == ref.shape == (5, n, k * d)
    assert float((out - ref).abs().max()) <= TOL * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("k", [1, 3, 6])
def test_mha_with_k_heads_outputs_the_filter_bank_exactly(k: int) -> None:
    n, d = 6, 3
    a = operator(n, 10 + k)
    x = torch.randn(4, n, d, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    net = build_mha_polynomial(a, d, k)
    assert (net.attn.n_heads, net.attn.n_pseudo) == (k, 1)
    with torch.no_grad():
        out = net(one_hot_positions(x))
    ref = powers_reference(a, x, k)
    assert float((out - ref).abs().max()) <= TOL * max(1.0, float(ref.abs().max()))


def test_iha_polynomial_head_outputs_are_the_papers_worked_example() -> None:
    # k = 4, H = P = 2: head 0 gives [X, AX], head 1 gives [A^2 X, A^3 X] (before o_proj).
    n, d = 5, 1
    a = operator(n, 0)
    x = torch.randn(2, n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layer = build_iha_polynomial(a, d, 4).attn
    captured = {}
    handle = layer.o_proj.register_forward_hook(lambda m, i, o: captured.setdefault("in", i[0]))
    with torch.no_grad():
        layer(torch.nn.functional.pad(one_hot_positions(x), (0, layer.d_model - n - d)))
    handle.remove()
    heads = captured["in"].view(2, n, 2, layer.head_dim)  # (B, N, H, head_dim)
    for h in range(2):
        for j in range(2):
            ref = torch.stack([torch.linalg.matrix_power(a, 2 * h + j) @ xb for xb in x])
            torch.testing.assert_close(heads[:, :, h, j : j + 1], ref, rtol=0, atol=1e-12)


def test_mha_lower_bound_flags_exactly_the_impossible_cases() -> None:
    a = operator(8, 3)  # N = 8 >= 2H + 2 for H <= 3
    for k, heads, impossible in [(4, 2, True), (3, 2, False), (9, 3, True), (4, 3, False)]:
        bound = mha_lower_bound(a, k, heads)
        assert bound.premises_hold and bound.power_rank == min(k, 8)
        assert bound.impossible is impossible
        assert (bound.best_fit_residual > 1e-6) is impossible
    assert not mha_lower_bound(operator(5, 0), 9, 3).premises_hold  # N = 5 < 2H + 2


def test_mha_lower_bound_residual_is_no_worse_than_a_natural_candidate() -> None:
    # span(I, A, ..., A^H) is one admissible choice of "I + H operators"; the Eckart-Young
    # optimum must fit the powers at least as well as it does.
    a, k, heads = operator(8, 5), 6, 2
    powers = torch.stack([torch.linalg.matrix_power(a, j).reshape(-1) for j in range(k)], 1)
    basis = powers[:, : heads + 1]  # I, A, ..., A^H
    coef = torch.linalg.lstsq(basis, powers).solution
    candidate = float((powers - basis @ coef).norm() / powers.norm())
    best = mha_lower_bound(a, k, heads).best_fit_residual
    assert 0 < best <= candidate + 1e-12


def test_parameter_counts_follow_the_papers_formulas() -> None:
    a, d = operator(8, 1), 2
    for k in (4, 9, 16):
        heads = math.ceil(math.sqrt(k))
        iha, mha = build_iha_polynomial(a, d, k), build_mha_polynomial(a, d, k)
        p_iha, p_mha = attention_parameter_counts(iha), attention_parameter_counts(mha)
        assert p_iha["mixing"] == 4 * heads**2 * heads  # 4 H^2 P, P = H
        layer = iha.attn
        assert p_iha["projections"] == 4 * heads * layer.head_dim * layer.d_model
        assert p_mha["projections"] / p_iha["projections"] == pytest.approx(k / heads)


def brute_counts(xs: list[int], modulus: int, g: int) -> list[int]:
    return [
        sum(
            (xi + g * xs[j1] + xs[j2]) % modulus == 0
            for j1, j2 in itertools.product(range(len(xs)), repeat=2)
        )
        for xi in xs
    ]


@pytest.mark.parametrize("arch", ["iha", "mha"])
@pytest.mark.parametrize("n_max", [1, 3, 4, 5, 9])
def test_cpm3_network_reproduces_targets_exactly(arch: str, n_max: int) -> None:
    modulus, g = 5, 3
    task = CPM3Task(
        n_max, modulus, g, n_values=12, min_len=1, seed=n_max, split_sizes={"train": None}
    )
    batch = next(task.batches("train", 48, seed=0))
    net = build_cpm3_network(n_max, modulus, g, arch=arch, n_values=12)
    assert net.attn.n_heads == (math.ceil(math.sqrt(n_max)) if arch == "iha" else n_max)
    assert net.attn.n_pseudo == (net.attn.n_heads if arch == "iha" else 1)
    with torch.no_grad():
        out = net(batch.inputs)
    ref = cpm3_targets(batch.inputs, modulus, g, batch.loss_mask).double()
    assert float((out - ref).abs().max()) <= TOL
    for row, mask, got in list(zip(batch.inputs, batch.loss_mask, out))[:4]:
        length = int(mask.sum())
        assert got[:length].round().long().tolist() == brute_counts(row[:length].tolist(), 5, 3)


def test_cpm3_attention_realises_every_cyclic_shift() -> None:
    n_max, modulus = 7, 4  # H = 3: 9 pseudo pairs, shifts 7 and 8 wrap and are dropped
    net = build_cpm3_network(n_max, modulus, 3, arch="iha", n_values=9)
    tokens = torch.randint(0, 9, (6, n_max), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(n_max)
    with torch.no_grad():
        x = net.token_embed(tokens) + net.pos_embed(positions)
        stream = net.attn(x)  # (B, N, D): what attention adds to the residual stream
    blocks = stream[..., modulus + n_max :].view(6, n_max, n_max, modulus)  # (B, i, s, residue)
    for s in range(n_max):
        shifted = tokens[:, (positions + s) % n_max] % modulus  # (B, N)
        expect = torch.nn.functional.one_hot(shifted, modulus).double()
        assert float((blocks[:, :, s] - expect).abs().max()) <= 1e-12
    assert float(stream[..., : modulus + n_max].abs().max()) == 0.0


def test_cpm3_network_is_specific_to_its_multiplier() -> None:
    task = CPM3Task(4, 5, 3, seed=0, split_sizes={"train": None})
    batch = next(task.batches("train", 64))
    with torch.no_grad():
        out = build_cpm3_network(4, 5, 2, arch="iha")(batch.inputs)
    assert float((out - batch.targets.double()).abs().max()) >= 1.0


def test_cpm3_head_and_qk_counts() -> None:
    for n_max in (4, 9, 16):
        iha = build_cpm3_network(n_max, 3, 2, arch="iha")
        mha = build_cpm3_network(n_max, 3, 2, arch="mha")
        root = math.isqrt(n_max)
        assert heads_needed(n_max, "iha") == root and heads_needed(n_max, "mha") == n_max
        assert attention_qk_parameters(mha) == 2 * n_max**3
        assert attention_qk_parameters(iha) == 2 * root * n_max**2
    with pytest.raises(ValueError, match="arch"):
        heads_needed(4, "gqa")


def test_mha_output_is_linear_on_identical_tokens() -> None:
    assert linearity_defect(build_mha(8, 2), 8, 5) <= TOL


@pytest.mark.parametrize("mask", ["none", "flat", "token"])
def test_signed_iha_is_not_linear_on_identical_tokens(mask: str) -> None:
    assert linearity_defect(build_strict_iha(8, 2, values="signed", mask=mask), 8, 5) > 0.05


def test_signed_iha_equals_tanh_closed_form() -> None:
    layer = build_strict_iha(6, 3, values="signed", mask="none")
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        out = layer(x[:, None].expand(-1, 4, -1).contiguous())
    torch.testing.assert_close(out, tanh_reference(layer, x, 4), rtol=0, atol=1e-12)


def test_paper_values_iha_output_stays_linear() -> None:
    # alpha_V = (I, I) as printed: the pattern is non-linear but both values are v.
    for mask in ("none", "flat"):
        layer = build_strict_iha(8, 2, values="paper", mask=mask)
        assert linearity_defect(layer, 8, 5) <= TOL


@pytest.mark.parametrize("n_pseudo", [1, 2, 3])
def test_exact_mha_init_is_plain_mha(n_pseudo: int) -> None:
    layer = build_inclusion_pair(8, 2, n_pseudo)
    x = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), mha_reference(layer, x), rtol=0, atol=1e-12)
