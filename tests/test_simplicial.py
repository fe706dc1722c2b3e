"""2-simplicial attention against a float64 loop oracle written from the formula."""

from __future__ import annotations

import math

import pytest
import torch

from iha import flops
from iha.simplicial import TwoSimplicialAttention, two_simplicial_attention


def loop_oracle(q, k, v, k2, v2, *, causal=False, window=None, attention_mask=None):
    """out[b,h,i] = sum_{j,l} softmax_{(j,l)}(sum_c q_ic k_jc k'_lc / sqrt(d)) v_j * v'_l."""
    B, H, N, d = q.shape
    out = torch.zeros(B, H, N, d, dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(N):
                terms, values = [], []
                for j in range(N):
                    for l in range(N):  # noqa: E741
                        if causal and (j > i or l > i):
                            continue
                        if window is not None and (i - j >= window[0] or i - l >= window[1]):
                            continue
                        if attention_mask is not None and not (
                            attention_mask[b, j] and attention_mask[b, l]
                        ):
                            continue
                        logit = sum(
                            q[b, h, i, c] * k[b, h, j, c] * k2[b, h, l, c] for c in range(d)
                        )
                        terms.append(logit / math.sqrt(d))
                        values.append(v[b, h, j] * v2[b, h, l])
                if not terms:
                    continue
                logits = torch.stack(terms)
                weights = torch.exp(logits - logits.max())
                weights = weights / weights.sum()
                out[b, h, i] = sum(w * val for w, val in zip(weights, values))
    return out


def _inputs(B=2, H=2, N=4, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, N, d, generator=g, dtype=torch.float64) for _ in range(5)]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"causal": True},
        {"causal": True, "window": (2, 3)},
    ],
    ids=["bidirectional", "causal", "causal-window"],
)
def test_two_simplicial_forward_matches_loop_oracle(options):
    q, k, v, k2, v2 = _inputs()
    mask = "causal" if options.get("causal") else "none"
    got = two_simplicial_attention(q, k, v, k2, v2, mask=mask, window=options.get("window"))
    want = loop_oracle(q, k, v, k2, v2, **options)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_two_simplicial_padding_matches_oracle_and_zeroes_dead_queries():
    q, k, v, k2, v2 = _inputs(N=5)
    keep = torch.tensor([[True, True, True, False, False], [False, True, True, True, True]])
    got = two_simplicial_attention(q, k, v, k2, v2, mask="causal", attention_mask=keep)
    want = loop_oracle(q, k, v, k2, v2, causal=True, attention_mask=keep)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert torch.isfinite(got).all()
    assert got[1, :, 0].abs().max() == 0  # query 0 of example 1 sees no real key pair


def test_two_simplicial_gradients_match_loop_oracle():
    inputs = [t.requires_grad_() for t in _inputs(B=1, H=2, N=4, d=2, seed=1)]
    grad_out = torch.randn(1, 2, 4, 2, dtype=torch.float64)
    (two_simplicial_attention(*inputs, mask="causal") * grad_out).sum().backward()
    got = [t.grad.clone() for t in inputs]
    for t in inputs:
        t.grad = None
    (loop_oracle(*inputs, causal=True) * grad_out).sum().backward()
    for name, g, t in zip(("q", "k", "v", "k2", "v2"), got, inputs):
        torch.testing.assert_close(g, t.grad, rtol=0, atol=1e-11, msg=f"grad of {name}")


def test_two_simplicial_is_not_pairwise_attention():
    # With k' = 1 and v' = 1 the trilinear form reduces to q.k: the softmax over (j, l) then
    # gives every j the weight of ordinary attention; any other k' changes the result.
    q, k, v, _, _ = _inputs(B=1, H=1, N=3, d=2)
    ones = torch.ones_like(q)
    got = two_simplicial_attention(q, k, v, ones, ones)
    pairwise = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(2), dim=-1) @ v
    torch.testing.assert_close(got, pairwise, rtol=0, atol=1e-12)
    k2 = torch.randn_like(q)
    assert (two_simplicial_attention(q, k, v, k2, ones) - pairwise).abs().max() > 1e-3


def test_two_simplicial_module_matches_functional_on_its_projections():
    torch.manual_seed(0)
    layer = TwoSimplicialAttention(8, 2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    B, N, H, d = 2, 5, 2, 4

    def heads(w):
        return (x @ w.T).view(B, N, H, d).transpose(1, 2)

    proj = [layer.q_proj, layer.k_proj, layer.v_proj, layer.k2_proj, layer.v2_proj]
    y = loop_oracle(*[heads(p.weight) for p in proj])
    want = y.transpose(1, 2).reshape(B, N, H * d) @ layer.o_proj.weight.T
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-12)


def test_simplicial_flops_count_allowed_triples():
    N, H, d = 6, 2, 3
    for mask, window, causal in (("none", None, False), ("causal", None, True),
                                 ("causal", (2, 3), True)):  # fmt: skip
        triples = sum(
            1
            for i in range(N)
            for j in range(N)
            for l in range(N)  # noqa: E741
            if not causal or (j <= i and l <= i and (
                window is None or (i - j < window[0] and i - l < window[1])))
        )  # fmt: skip
        pairs = sum(
            1
            for i in range(N)
            for j in range(N)
            if not causal or (j <= i and (window is None or i - j < window[0]))
        )
        assert flops.simplicial_triples(N, mask, window) == triples
        assert flops.simplicial_attention_flops(N, H, d, mask, window) == H * d * (
            4 * triples + 3 * pairs
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mask": "flat"}, "mask"),
        ({"mask": "none", "window": 2}, "window"),
        ({"mask": "causal", "window": (0, 2)}, "window"),
    ],
)
def test_two_simplicial_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TwoSimplicialAttention(8, 2, **kwargs)
