"""Bad input as clear errors, empty calls, and activation checkpointing with equal gradients."""

from __future__ import annotations

import pytest
import torch

from iha import InterleavedHeadAttention
from iha.models import DecoderLM, ModelConfig, generate

TINY = {
    "vocab_size": 40,
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "max_position_embeddings": 32,
    "attention_variant": "iha_global",
    "num_pseudo_heads": 2,
}


def tiny_model(seed: int = 0) -> DecoderLM:
    torch.manual_seed(seed)
    return DecoderLM(ModelConfig.from_dict(TINY))


@pytest.mark.parametrize("bad", [-1, 40, 1000])
def test_token_ids_outside_the_vocabulary_are_a_value_error(bad):
    model = tiny_model()
    ids = torch.tensor([[1, 2, bad, 3]])
    with pytest.raises(ValueError, match=rf"input_ids holds token id {bad}, outside .*\[0, 40\)"):
        model(ids)
    with pytest.raises(ValueError, match="input_ids holds token id"):
        generate(model, ids, max_new_tokens=2)
    model(torch.tensor([[0, 39]]))  # both ends of the vocabulary are fine


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_zero_new_tokens_on_a_filled_cache_is_an_empty_result(backend):
    torch.manual_seed(0)
    layer = InterleavedHeadAttention(16, 2, n_pseudo=2, backend=backend).eval()
    cache = layer.make_cache("raw")
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        layer(x, cache=cache)
        offset, keys = cache.offset, cache.keys.clone()
        out = layer(x[:, :0], cache=cache)
    assert out.shape == (2, 0, 16)
    assert cache.offset == offset and torch.equal(cache.keys, keys)


def _grads(model: DecoderLM, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), ids[:, 1:].reshape(-1))
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_activation_checkpointing_gives_equal_gradients(dropout):
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    model = tiny_model().train()
    for layer in model.layers:
        layer.self_attn.dropout = dropout
    torch.manual_seed(7)
    stored = _grads(model, ids)
    model.gradient_checkpointing_enable()
    torch.manual_seed(7)  # the same dropout masks: the recomputation replays the RNG state
    recomputed = _grads(model, ids)
    assert stored.keys() == recomputed.keys() and len(stored) == len(list(model.parameters()))
    for name in stored:
        torch.testing.assert_close(recomputed[name], stored[name], rtol=1e-5, atol=1e-7)


def test_activation_checkpointing_recomputes_the_layers_in_backward():
    calls = []
    model = tiny_model().train()
    model.layers[0].register_forward_pre_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    ids = torch.randint(0, 40, (1, 8))
    model(ids).sum().backward()
    assert len(calls) == 1
    model.gradient_checkpointing_enable()
    calls.clear()
    model(ids).sum().backward()
    assert len(calls) == 2  # once in forward, once again in backward
    model.eval()
    calls.clear()
    model(ids).sum().backward()  # off in eval mode
    assert len(calls) == 1
