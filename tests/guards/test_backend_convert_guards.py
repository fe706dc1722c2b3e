"""Behaviours that once had no guard: attention dropout on every backend, the linear kernel
under masks, the 2-D padding mask of converted layers, the collapse init of conversion."""

from __future__ import annotations

import pytest
import torch
from oracle import oracle_iha

from iha import InterleavedHeadAttention
from iha.backends import BACKENDS
from iha.functional import interleaved_head_attention


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_dropout_is_off_in_eval_and_applied_unbiased_in_training(backend):
    torch.manual_seed(0)
    layer = InterleavedHeadAttention(16, 2, n_pseudo=2, dropout=0.5, backend=backend)
    x = torch.randn(1, 6, 16)
    with torch.no_grad():
        layer.eval()
        clean = layer(x)
        assert torch.equal(layer(x), clean)  # eval: deterministic, no dropout
        layer.dropout = 0.0
        torch.testing.assert_close(layer(x), clean, rtol=0, atol=0)
        layer.dropout = 0.5
        layer.train()
        draws = layer(x.expand(600, 6, 16))  # (600, 6, 16): one dropout mask per row
    assert not torch.allclose(draws[0], clean[0], atol=1e-3)  # training: dropout acts
    assert not torch.allclose(draws[0], draws[1], atol=1e-3)
    # inverted dropout keeps the expectation: the mean of many draws approaches the clean output
    err = (draws.mean(0) - clean[0]).abs().max() / clean.abs().max()
    assert float(err) < 0.15


MASKS = [("flat", None), ("flat", 2), ("token", 3), ("none", None)]


@pytest.mark.parametrize("mask, window", MASKS)
def test_linear_kernel_respects_the_mask_and_padding(mask, window):
    g = torch.Generator().manual_seed(1)
    B, H, N, d, P = 2, 2, 5, 4, 2
    q, k, v = (torch.randn(B, H, N, d, generator=g, dtype=torch.float64) for _ in range(3))
    alphas = [torch.randn(H, H, P, generator=g, dtype=torch.float64) for _ in range(3)]
    collapse = torch.randn(H, H * P, generator=g, dtype=torch.float64)
    pad = torch.tensor([[False, True, True, True, True], [True] * 5])
    common = dict(mask=mask, window=window, rope_theta=10000.0, attention_mask=pad)
    got = interleaved_head_attention(
        q, k, v, *alphas, collapse, kernel="linear", backend="reference", **common
    )
    want = oracle_iha(q, k, v, *alphas, collapse, kernel="linear", **common)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


transformers = pytest.importorskip("transformers")


def _tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        attn_implementation="sdpa",
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return model


def test_a_2d_padding_mask_on_a_converted_layer_equals_the_4d_mask():
    from iha.hf.convert import convert, converted_layers

    model = _tiny_llama()
    convert(model, num_pseudo_heads=2, mode="exact")
    layer = converted_layers(model)[0]
    B, N = 2, 5
    hidden = torch.randn(B, N, 32, dtype=torch.float64)
    positions = torch.arange(N)[None].expand(B, N)
    cos_sin = model.model.rotary_emb(hidden, positions)
    padding = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    causal = torch.ones(N, N, dtype=torch.bool).tril()
    four_d = (causal[None] & padding.bool()[:, None, :])[:, None]  # (B, 1, N, N)
    with torch.no_grad():
        via_2d = layer(hidden, cos_sin, attention_mask=padding)[0]
        via_4d = layer(hidden, cos_sin, attention_mask=four_d)[0]
        unpadded = layer(hidden, cos_sin, attention_mask=None)[0]
    real = padding.bool()  # padded query rows are don't-care
    torch.testing.assert_close(via_2d[real], via_4d[real], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(via_2d[0, 2:], unpadded[0, 2:])  # the padding did matter
    torch.testing.assert_close(via_2d[1], unpadded[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["exact", "paper"])
@pytest.mark.parametrize("collapse", ["global", "per_head"])
def test_conversion_starts_from_identity_mixing_and_a_collapse_onto_the_last_copy(mode, collapse):
    from iha.hf.convert import convert, converted_layers

    model = _tiny_llama()
    P = 3
    convert(model, num_pseudo_heads=P, mode=mode, collapse=collapse)
    layer = converted_layers(model)[0]
    H, G = 4, 2
    for alpha, n in ((layer.alpha_q, H), (layer.alpha_k, G), (layer.alpha_v, G)):
        for p in range(P):
            assert torch.equal(alpha[:, :, p], torch.eye(n, dtype=alpha.dtype))
    want = torch.zeros(H, H, P) if collapse == "global" else torch.zeros(H, P)
    for h in range(H):
        if collapse == "global":
            want[h, h, P - 1] = 1.0  # head h reads its own last pseudo copy
        else:
            want[h, P - 1] = 1.0
    assert torch.equal(layer.collapse.detach().float().reshape(want.shape), want)
