"""IHAForCausalLM: hidden states of every layer, attentions refused clearly, gradient
checkpointing through the transformers switch."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from iha.hf import IHAConfig, IHAForCausalLM  # noqa: E402


def hf_model(seed: int = 0) -> IHAForCausalLM:
    torch.manual_seed(seed)
    cfg = IHAConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
        max_position_embeddings=32, attention_variant="iha", num_pseudo_heads=2,
    )  # fmt: skip
    return IHAForCausalLM(cfg).double().eval()


def test_output_hidden_states_are_the_embeddings_and_each_layer_output():
    model = hf_model()
    ids = torch.randint(0, 32, (2, 7), generator=torch.Generator().manual_seed(1))
    out = model(ids, output_hidden_states=True)
    hidden = out.hidden_states
    assert isinstance(hidden, tuple) and len(hidden) == 4
    lm = model.model
    h = lm.embed_tokens(ids)  # recomputed layer by layer, independently of the output path
    torch.testing.assert_close(hidden[0], h, rtol=0, atol=0)
    for i, layer in enumerate(lm.layers):
        h = layer(h)
        if i < len(lm.layers) - 1:
            torch.testing.assert_close(hidden[i + 1], h, rtol=0, atol=0)
    torch.testing.assert_close(hidden[-1], lm.norm(h), rtol=0, atol=0)
    torch.testing.assert_close(out.logits, lm.lm_head(hidden[-1]), rtol=0, atol=0)
    assert model(ids).hidden_states is None  # off by default


def test_output_attentions_is_a_clear_error():
    model = hf_model()
    with pytest.raises(ValueError, match="output_attentions=True is not supported"):
        model(torch.tensor([[1, 2, 3]]), output_attentions=True)
    assert model(torch.tensor([[1, 2, 3]]), output_attentions=False).logits.shape == (1, 3, 32)


def test_gradient_checkpointing_enable_gives_equal_gradients():
    model = hf_model().train()
    ids = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(2))

    def grads():
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    stored = grads()
    model.gradient_checkpointing_enable()
    assert model.model.gradient_checkpointing
    recomputed = grads()
    for name, g in stored.items():
        torch.testing.assert_close(recomputed[name], g, rtol=1e-10, atol=1e-12)
    model.gradient_checkpointing_disable()
    assert not model.model.gradient_checkpointing
