"""The nn.Module: exact-MHA init, causality, strictness, KV cache, argument checks, compile."""

from __future__ import annotations

import pytest
import torch
from oracle import _rope, oracle_mha

import iha
from iha import InterleavedHeadAttention
from iha.attention import InterleavedHeadAttention as FromSubmodule


def _layer(**kw):
    kw.setdefault("d_model", 16)
    kw.setdefault("n_heads", 4)
    torch.manual_seed(kw.pop("seed", 0))
    return InterleavedHeadAttention(**kw).double()


def _mha_weights(m):
    return m.q_proj.weight, m.k_proj.weight, m.v_proj.weight, m.o_proj.weight


def test_module_importable_from_package_and_submodule():
    assert iha.InterleavedHeadAttention is FromSubmodule


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("collapse", ["global", "per_head"])
@pytest.mark.parametrize("window", [None, 3])
def test_exact_mha_init_matches_mha_token_mask(n_kv_heads, collapse, window):
    m = _layer(n_pseudo=3, n_kv_heads=n_kv_heads, collapse=collapse, mask="token",
               positions="token", init="exact_mha", window=window)
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    want = oracle_mha(x, *_mha_weights(m), 4, n_kv_heads, rope_theta=10000.0, window=window)
    torch.testing.assert_close(m(x), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("positions,rope", [("token", 10000.0), ("virtual", None)])
def test_exact_mha_init_under_flat_mask_is_mha_with_token_positions_or_no_rope(positions, rope):
    m = _layer(n_pseudo=4, n_kv_heads=2, positions=positions, rope_theta=rope, init="exact_mha")
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    want = oracle_mha(x, *_mha_weights(m), 4, 2, rope_theta=rope)
    torch.testing.assert_close(m(x), want, rtol=0, atol=1e-12)


def test_exact_mha_init_under_paper_flat_virtual_is_mha_over_p_rotated_key_copies():
    """Documented behaviour (attention.py docstring): the last copy of token n, at virtual position
    n*P + P-1, attends over P copies of every key m <= n, copy p' rotated to m*P + p'."""
    P, H, d, N, theta = 3, 4, 4, 5, 10000.0
    m = _layer(n_pseudo=P, init="exact_mha", rope_theta=theta)
    x = torch.randn(1, N, 16, dtype=torch.float64)
    wq, wk, wv, wo = _mha_weights(m)
    q = (x @ wq.T).view(1, N, H, d).transpose(1, 2)[0]  # (H, N, d)
    k = (x @ wk.T).view(1, N, H, d).transpose(1, 2)[0]
    v = (x @ wv.T).view(1, N, H, d).transpose(1, 2)[0]
    qr = _rope(q, torch.arange(N) * P + P - 1, theta)
    kpos = torch.arange(N * P)
    kr = _rope(k.repeat_interleave(P, dim=1), kpos, theta)  # (H, N*P, d)
    vr = v.repeat_interleave(P, dim=1)
    s = qr @ kr.transpose(-1, -2) / d**0.5  # (H, N, N*P)
    s = s.masked_fill(kpos[None, :] > (torch.arange(N) * P + P - 1)[:, None], float("-inf"))
    y = (torch.softmax(s, -1) @ vr).transpose(0, 1).reshape(1, N, H * d) @ wo.T
    torch.testing.assert_close(m(x), y, rtol=0, atol=1e-12)
    mha = oracle_mha(x, wq, wk, wv, wo, H, H, rope_theta=theta)
    assert (m(x) - mha).abs().max() > 1e-3  # not MHA: documented, not hidden


def test_default_init_breaks_symmetry_between_pseudo_copies():
    m = _layer(n_pseudo=2)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    m(x).square().sum().backward()
    a = m.alpha_q.view(4, 4, 2)
    assert not torch.allclose(a[..., 0], a[..., 1])
    g = m.alpha_q.grad
    assert not torch.allclose(g[..., 0], g[..., 1])  # copies learn different things


@pytest.mark.parametrize("mask", ["flat", "token"])
@pytest.mark.parametrize("window", [None, 2])
def test_no_future_leakage(mask, window):
    m = _layer(n_pseudo=3, n_kv_heads=2, mask=mask, window=window)
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    y = m(x)
    for n in range(7):
        x2 = x.clone()
        x2[:, n + 1:] = torch.randn_like(x2[:, n + 1:]) * 5
        y2 = m(x2)
        torch.testing.assert_close(y2[:, : n + 1], y[:, : n + 1], rtol=0, atol=1e-12)
        assert (y2[:, n + 1:] - y[:, n + 1:]).abs().max() > 1e-6


def _strictness_layers(alpha_v_sign: float):
    torch.manual_seed(1)
    D, H = 4, 2
    mha = InterleavedHeadAttention(D, H, n_pseudo=1, init="exact_mha", rope_theta=None,
                                   mask="none").double()
    ihal = InterleavedHeadAttention(D, H, n_pseudo=2, init="exact_mha", rope_theta=None,
                                    mask="none", collapse="per_head").double()
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        getattr(ihal, name).load_state_dict(getattr(mha, name).state_dict())
    eye = torch.eye(H, dtype=torch.float64)
    with torch.no_grad():
        ihal.alpha_q.copy_(torch.stack([eye, -eye], -1))
        ihal.alpha_k.copy_(torch.stack([eye, -eye], -1))
        ihal.alpha_v.copy_(torch.stack([eye, alpha_v_sign * eye], -1))
        ihal.collapse.copy_(torch.tensor([[1.0, 0.0]] * H))
    return mha, ihal


def test_strictness_example_mha_linear_iha_not():
    """PAPER.md: on N identical tokens every MHA head is linear in the token, while IHA with P=2,
    alpha_Q = alpha_K = (+I, -I) has attention softmax([[S, -S], [-S, S]]), tanh-like.

    Finding: with alpha_V = (I, I) as the paper writes it, all pseudo values are equal, so the
    *output* is still linear (weights sum to one over identical values); the non-linearity
    reaches the output with alpha_V = (I, -I), where each head gives exactly tanh(S) * v."""
    N, D, H, d = 3, 4, 2, 2
    t = torch.randn(D, dtype=torch.float64)

    def f(layer, c):
        return layer((c * t).expand(1, N, D).contiguous())[0, 0]

    mha, iha_same_v = _strictness_layers(+1.0)
    _, iha_signed_v = _strictness_layers(-1.0)
    cs = (0.5, 2.0, 3.0)
    for c in cs:
        torch.testing.assert_close(f(mha, c), c * f(mha, 1.0), rtol=0, atol=1e-12)
        torch.testing.assert_close(f(iha_same_v, c), c * f(iha_same_v, 1.0), rtol=0, atol=1e-12)
    defect = [(f(iha_signed_v, c) - c * f(iha_signed_v, 1.0)).abs().max().item() for c in cs]
    assert max(defect) > 1e-3
    # closed form tanh(S_h) v_h per head, S_h = <q_h, k_h> / sqrt(d)
    for c in cs:
        x = c * t
        q = (iha_signed_v.q_proj.weight @ x).view(H, d)
        k = (iha_signed_v.k_proj.weight @ x).view(H, d)
        v = (iha_signed_v.v_proj.weight @ x).view(H, d)
        heads = torch.tanh((q * k).sum(-1, keepdim=True) / d**0.5) * v
        want = iha_signed_v.o_proj.weight @ heads.reshape(-1)
        torch.testing.assert_close(f(iha_signed_v, c), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("policy", ["raw", "pseudo"])
@pytest.mark.parametrize(
    "cfg",
    [dict(), dict(mask="token", positions="token"), dict(window=3), dict(mask="token", window=2),
     dict(n_kv_heads=2, collapse="per_head")],
)
def test_incremental_decoding_equals_full_forward(policy, cfg):
    m = _layer(n_pseudo=3, **cfg)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    full = m(x)
    cache = m.make_cache(policy)
    chunks = [m(x[:, :4], cache=cache)]  # prompt
    chunks += [m(x[:, i:i + 1], cache=cache) for i in range(4, 9)]  # token by token
    torch.testing.assert_close(torch.cat(chunks, 1), full, rtol=0, atol=1e-12)
    if m.window is not None:
        assert cache.n_tokens == m.window  # bounded
    assert cache.offset == 9


def test_cache_policies_bytes_raw_is_one_over_p_of_pseudo():
    m = _layer(n_pseudo=4)
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    raw, pseudo = m.make_cache("raw"), m.make_cache("pseudo")
    m(x, cache=raw)
    m(x, cache=pseudo)
    assert pseudo.nbytes() == 4 * raw.nbytes() > 0


@pytest.mark.parametrize("policy", ["raw", "pseudo"])
def test_left_padded_decoding_equals_unpadded_rows(policy):
    m = _layer(n_pseudo=2)
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    alone = m(x)
    pad = torch.randn(1, 2, 16, dtype=torch.float64)
    xp = torch.cat([pad, x], 1)
    kpm = torch.tensor([[False, False] + [True] * 5])
    cache = m.make_cache(policy)
    out = [m(xp[:, :4], attention_mask=kpm[:, :4], cache=cache)]
    out += [m(xp[:, i:i + 1], attention_mask=kpm[:, : i + 1], cache=cache) for i in range(4, 7)]
    torch.testing.assert_close(torch.cat(out, 1)[:, 2:], alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(n_pseudo=0), "n_pseudo"),
        (dict(n_kv_heads=3), "n_kv_heads"),
        (dict(d_model=18), "d_model"),
        (dict(mask="causal"), "mask"),
        (dict(window=0), "window"),
        (dict(collapse="sum"), "collapse"),
        (dict(init="xavier"), "init"),
        (dict(positions="rel"), "positions"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs, needle):
    base = dict(d_model=16, n_heads=4)
    base.update(kwargs)
    with pytest.raises(ValueError, match=needle):
        InterleavedHeadAttention(**base)


def test_bad_forward_input_raises_value_error():
    m = _layer()
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(2, 3, 15, dtype=torch.float64))
    with pytest.raises(ValueError, match="attention_mask"):
        x = torch.randn(2, 3, 16, dtype=torch.float64)
        m(x, attention_mask=torch.ones(3, dtype=torch.bool))


def test_torch_compile_forward_and_backward():
    torch.manual_seed(0)
    m = InterleavedHeadAttention(16, 2, n_pseudo=2)
    x = torch.randn(2, 6, 16)
    want = m(x)
    compiled = torch.compile(m, backend="aot_eager")
    got = compiled(x)
    got.sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert m.alpha_q.grad is not None and torch.isfinite(m.alpha_q.grad).all()


@pytest.mark.parametrize("dtype", [torch.bool, torch.long, torch.int32])
def test_attention_mask_follows_hugging_face_one_is_a_real_token(dtype):
    # a left-padded row gives, at its real tokens, what the unpadded row gives alone: 1 = keep
    m = _layer(n_pseudo=2, window=3).eval()
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    alone = m(x)
    xp = torch.cat([torch.randn(1, 3, 16, dtype=torch.float64), x], 1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]]).to(dtype)
    torch.testing.assert_close(m(xp, mask)[:, 3:], alone, rtol=0, atol=1e-12)
    assert not torch.allclose(m(xp)[:, 3:], alone)  # the padding did matter


def test_attention_mask_refuses_float_and_other_values_and_the_old_keyword():
    m = _layer()
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="1/True = real token"):
        m(x, torch.ones(2, 3))  # float
    with pytest.raises(ValueError, match="only 0 and 1"):
        m(x, torch.full((2, 3), 2))
    with pytest.raises(ValueError, match=r"\(B, N\) = \(2, 3\)"):
        m(x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="attention_mask"):
        m(x, key_padding_mask=torch.ones(2, 3, dtype=torch.bool))
