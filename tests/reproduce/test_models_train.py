"""The compared models and the evaluation metrics, against independent references."""

import math

import pytest
import torch

from iha.attention import InterleavedHeadAttention
from iha.reproduce.models import (
    OneLayerTagger,
    init_mixing,
    make_attention,
    mixing_movement,
    trainable_parameters,
)
from iha.reproduce.train import evaluate
from iha.tasks import TaskBatch


def _mha_reference(layer, x):
    """Bidirectional multi-head attention in float64 from the layer's projection weights."""
    B, N, D = x.shape
    H, d = layer.n_heads, layer.head_dim
    x = x.double()

    def heads(w):
        return torch.einsum("bnc,oc->bno", x, w.double()).view(B, N, H, d)

    q, k, v = heads(layer.q_proj.weight), heads(layer.k_proj.weight), heads(layer.v_proj.weight)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
    y = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, N, H * d)
    return y @ layer.o_proj.weight.double().T


def test_mha_is_exactly_bidirectional_multi_head_attention():
    torch.manual_seed(0)
    layer = make_attention("mha", 16, 4).double()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _mha_reference(layer, x), rtol=1e-10, atol=1e-10)


def test_mha_has_no_trainable_mixing_and_iha_adds_the_papers_4_h2_p():
    d_model, H, P = 16, 4, 3
    mha = make_attention("mha", d_model, H)
    iha = make_attention("iha", d_model, H, P)
    assert trainable_parameters(mha) == 4 * d_model * d_model
    assert trainable_parameters(iha) - trainable_parameters(mha) == 4 * H * H * P


def test_iha_output_differs_from_mha_with_the_same_projections():
    torch.manual_seed(0)
    mha, iha = make_attention("mha", 16, 4), make_attention("iha", 16, 4, 4)
    iha.load_state_dict({**iha.state_dict(), **{k: v for k, v in mha.state_dict().items()
                                                if k.endswith("proj.weight")}})  # fmt: skip
    x = torch.randn(2, 5, 16)
    assert not torch.allclose(iha(x), mha(x), atol=1e-4)  # symmetry-breaking init noise


def _iha_reference(layer, x):
    """Bidirectional IHA from the layer's weights: the float64 loop oracle (tests/oracle.py)."""
    from oracle import oracle_iha

    B, N, D = x.shape
    H, d = layer.n_heads, layer.head_dim

    def heads(w):
        return torch.einsum("bnc,oc->bno", x, w).view(B, N, H, d).transpose(1, 2)

    q, k, v = heads(layer.q_proj.weight), heads(layer.k_proj.weight), heads(layer.v_proj.weight)
    y = oracle_iha(q, k, v, layer.alpha_q, layer.alpha_k, layer.alpha_v, layer.collapse,
                   mask="none")  # fmt: skip
    return y.transpose(1, 2).reshape(B, N, H * d) @ layer.o_proj.weight.T


@pytest.mark.parametrize("mixing_init", ["near_mha", "random"])
def test_iha_kind_is_the_library_layer_and_matches_the_loop_oracle_forward_and_gradients(
    mixing_init,
):
    torch.manual_seed(0)
    layer = make_attention("iha", 8, 2, 3, mixing_init=mixing_init, seed=1).double()
    assert type(layer) is InterleavedHeadAttention
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    y = layer(x)
    torch.testing.assert_close(y, _iha_reference(layer, x), rtol=0, atol=1e-12)
    grad_out = torch.randn_like(y)
    (y * grad_out).sum().backward()
    got = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    (_iha_reference(layer, x) * grad_out).sum().backward()  # gradients through the loop oracle
    for name, p in layer.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=0, atol=1e-11, msg=name)


def test_the_removed_folded_layer_name_warns_and_gives_the_library_layer():
    import iha.reproduce.models as models

    with pytest.warns(DeprecationWarning, match="FoldedInterleavedHeadAttention"):
        assert models.FoldedInterleavedHeadAttention is InterleavedHeadAttention


def test_mixing_inits_and_movement_measure():
    layer = make_attention("iha", 8, 2, 3, mixing_init="near_mha", seed=0)
    eye = torch.eye(2)[:, :, None].expand(2, 2, 3)
    assert 0 < (layer.alpha_q.detach() - eye).abs().max() < 0.15
    init_mixing(layer, "random", seed=0)
    assert (layer.alpha_q.detach() - eye).abs().max() > 0.3
    start = {n: getattr(layer, n).detach().clone() for n in ("alpha_q", "alpha_k", "alpha_v",
                                                              "collapse")}  # fmt: skip
    with torch.no_grad():
        layer.alpha_k.mul_(2.0)  # moved by 100%
        layer.alpha_v.copy_(layer.alpha_v.mean(-1, keepdim=True).expand_as(layer.alpha_v))
    moved = mixing_movement(layer, start)
    assert moved["alpha_q"]["rel_change"] == 0.0
    assert moved["alpha_k"]["rel_change"] == pytest.approx(1.0)
    assert moved["alpha_v"]["copy_spread_end"] == pytest.approx(0.0, abs=1e-12)
    assert moved["alpha_v"]["copy_spread_start"] > 0.3
    with pytest.raises(ValueError, match="mixing_init"):
        make_attention("iha", 8, 2, 3, mixing_init="zeros")


def test_simplicial_kind_builds_the_two_simplicial_layer():
    layer = make_attention("simplicial", 16, 4)
    assert trainable_parameters(layer) == 6 * 16 * 16  # q, k, v, k', v', o
    tagger = OneLayerTagger(layer, 5, 1, vocab_size=3)
    assert tagger(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 1)
    with pytest.raises(ValueError, match="n_pseudo"):
        make_attention("simplicial", 16, 4, 2)


def test_make_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        make_attention("talking_heads", 16, 4)
    with pytest.raises(ValueError, match="n_pseudo"):
        make_attention("mha", 16, 4, 2)
    with pytest.raises(ValueError, match="vocab_size"):
        OneLayerTagger(make_attention("mha", 16, 4), 5, 1)


class _Fixed(torch.nn.Module):
    """Returns stored outputs batch by batch (rows are served in order)."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs, self.pos = outputs, 0

    def forward(self, inputs):
        out = self.outputs[self.pos : self.pos + len(inputs)]
        self.pos += len(inputs)
        return out


def test_binary_metrics_match_a_brute_force_count():
    g = torch.Generator().manual_seed(1)
    B, N = 7, 5
    logits = torch.randn(B, N, 1, generator=g)
    targets = (torch.rand(B, N, generator=g) < 0.5).float()
    mask = torch.rand(B, N, generator=g) < 0.7
    mask[:, 0] = True
    data = TaskBatch(torch.zeros(B, N, dtype=torch.long), targets, mask)
    got = evaluate(_Fixed(logits), data, "binary", batch_size=3)
    right = total = whole = 0
    for b in range(B):
        row_ok = True
        for n in range(N):
            if mask[b, n]:
                ok = (logits[b, n, 0].item() > 0) == (targets[b, n].item() == 1.0)
                right, total, row_ok = right + ok, total + 1, row_ok and ok
        whole += row_ok
    assert got["pos_acc"] == pytest.approx(right / total)
    assert got["example_acc"] == pytest.approx(whole / B)


def test_regression_nmse_is_one_minus_r2_per_channel():
    g = torch.Generator().manual_seed(2)
    B, N, T = 6, 4, 3
    targets = torch.randn(B, N, T, generator=g, dtype=torch.float64).float()
    preds = targets + 0.1 * torch.randn(B, N, T, generator=g)
    data = TaskBatch(torch.zeros(B, N, 1), targets, torch.ones(B, N, dtype=torch.bool))
    got = evaluate(_Fixed(preds), data, "regression", batch_size=4)
    y, p = targets.reshape(-1, T).double(), preds.reshape(-1, T).double()
    err = ((p - y) ** 2).sum(0)
    var = ((y - y.mean(0)) ** 2).sum(0)
    assert got["nmse"] == pytest.approx(float(err.sum() / var.sum()), rel=1e-9)
    assert got["nmse_max"] == pytest.approx(float((err / var).max()), rel=1e-9)
    # predicting each channel's mean scores exactly 1
    mean_pred = y.mean(0).float().expand(B * N, T).reshape(B, N, T)
    assert evaluate(_Fixed(mean_pred), data, "regression")["nmse"] == pytest.approx(1.0, 1e-6)
