"""FLOP/parameter counts against brute-force counting, and optimizer groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iha import InterleavedHeadAttention, flops, param_groups


def _brute_pairs(N, P, mask, window):
    count = 0
    for tq in range(N * P):
        for tk in range(N * P):
            if mask == "none":
                ok = True
            elif mask == "flat":
                ok = tk <= tq and (window is None or tq - tk < window * P)
            else:
                ok = tk // P <= tq // P and (window is None or tq // P - tk // P < window)
            count += ok
    return count


@pytest.mark.parametrize("N", [1, 5, 9])
@pytest.mark.parametrize("P", [1, 3])
@pytest.mark.parametrize("mask", ["flat", "token", "none"])
@pytest.mark.parametrize("window", [None, 1, 4, 20])
def test_attention_pairs_equal_brute_force(N, P, mask, window):
    if mask == "none" and window is not None:
        return
    assert flops.attention_pairs(N, P, mask, window) == _brute_pairs(N, P, mask, window)


def test_global_iha_attention_is_p_squared_mha_without_causal_mask():
    mha = flops.attention_flops(64, 8, 16, 1, mask="none")
    assert flops.attention_flops(64, 8, 16, 4, mask="none") == 16 * mha
    # causal: P^2 up to the diagonal term: NP(NP+1)/2 vs P^2 N(N+1)/2
    assert flops.attention_flops(64, 8, 16, 4) == 4 * 16 * 8 * (256 * 257 // 2)


def test_paper_window_matches_half_global_cost():
    N, P, H, d = 8192, 4, 20, 128
    W = N // (2 * P * P)
    local = flops.paper_attention_cost(N, H, d, P, window=W)
    assert local * 2 == flops.paper_attention_cost(N, H, d, 1)  # H N^2 d / 2


@pytest.mark.parametrize("collapse", ["global", "per_head"])
@pytest.mark.parametrize("G", [4, 2])
def test_mixing_parameters_match_module(collapse, G):
    m = InterleavedHeadAttention(32, 4, n_pseudo=3, n_kv_heads=G, collapse=collapse)
    n = sum(p.numel() for name, p in m.named_parameters() if not name.endswith("weight"))
    assert flops.mixing_parameters(4, 3, G, collapse) == n
    if G == 4 and collapse == "global":
        assert n == 4 * 4**2 * 3  # the paper's 4 H^2 P


def test_layer_flops_projection_count_matches_matmul_shapes():
    f = flops.layer_flops(64, 4, 10, n_pseudo=2, n_kv_heads=2)
    d = 16
    assert f.projections == 2 * 10 * 64 * (4 * d + 2 * d + 2 * d + 4 * d)
    assert f.mixing == 2 * 10 * d * 2 * (16 + 2 * 4)
    assert f.total == f.projections + f.mixing + f.attention + f.collapse


def test_param_groups_separate_decay_norms_and_mixing():
    model = nn.Sequential(InterleavedHeadAttention(16, 2, n_pseudo=2, bias=True), nn.LayerNorm(16))
    groups = {g["name"]: g for g in param_groups(model, 0.1, mixing_lr=1e-2)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    att = model[0]
    assert ids["mixing"] == {id(att.alpha_q), id(att.alpha_k), id(att.alpha_v), id(att.collapse)}
    assert id(att.q_proj.weight) in ids["decay"] and id(att.q_proj.bias) in ids["no_decay"]
    assert id(model[1].weight) in ids["no_decay"]
    assert groups["mixing"]["weight_decay"] == 0 and groups["mixing"]["lr"] == 1e-2
    assert groups["decay"]["weight_decay"] == 0.1
    n_all = sum(len(g["params"]) for g in groups.values())
    assert n_all == len(list(model.parameters()))
    torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)  # accepted by AdamW
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(model, -1.0)
