"""Decoding a converted model (exact mode) with a cache: the layer keeps the mixed pseudo keys
and values beside the HF cache and mixes only the new tokens at each step.

References: the same converted model without a cache (whole sequence at once), whose agreement
with the original model and with an independent float64 reference is tested in test_convert.py.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import importlib  # noqa: E402

from iha.hf.convert import convert  # noqa: E402

convert_module = importlib.import_module("iha.hf.convert")  # iha.hf.convert is also a function

VOCAB = 64


def make_model(kind: str = "llama", seed: int = 0) -> torch.nn.Module:
    """Tiny random model with mixing noise (the layers are not the identity mixing)."""
    T = transformers
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  attn_implementation="sdpa")
    if kind == "llama":
        model = T.LlamaForCausalLM(T.LlamaConfig(**common))
    else:
        model = T.MistralForCausalLM(T.MistralConfig(**common, sliding_window=5))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.3 * noise)
    convert(model, num_pseudo_heads=3, init_noise=0.2, generator=g)
    return model.eval()


def batch(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (2, n), generator=g)
    mask = torch.ones(2, n, dtype=torch.long)
    mask[0, :3] = 0  # row 0 left-padded by 3 tokens
    return ids, mask


def full_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


def incremental_logits(model, ids, mask, chunks):
    """Logits of a prefill of chunks[0] tokens, then chunks of the given sizes, with a cache."""
    out, got, n = None, [], 0
    with torch.no_grad():
        for size in chunks:
            out = model(input_ids=ids[:, n : n + size], attention_mask=mask[:, : n + size],
                        cache=None if out is None else out.cache, use_cache=True)
            got.append(out.logits)
            n += size
    return torch.cat(got, dim=1), out.cache


@pytest.mark.parametrize("kind", ["llama", "mistral"])
@pytest.mark.parametrize("chunks", [(4, 1, 1, 1, 1, 1, 1, 1, 1), (3, 2, 1, 3, 1, 2)])
def test_cached_decoding_with_mixing_noise_matches_the_uncached_forward(kind, chunks):
    # Padding, several new tokens per call (a mask among new tokens) and a window of 5 that the
    # HF sliding cache enforces by dropping old tokens.
    model = make_model(kind)
    ids, mask = batch(sum(chunks))
    inc, _ = incremental_logits(model, ids, mask, chunks)
    real = mask.bool()
    torch.testing.assert_close(inc[real], full_logits(model, ids, mask)[real], atol=1e-4, rtol=0)


def test_a_decoding_step_mixes_only_the_new_token(monkeypatch):
    model = make_model("llama")
    ids, mask = batch(10)
    seen = []
    mix = convert_module.mix_heads

    def recording(x, alpha):
        seen.append(x.shape[2])
        return mix(x, alpha)

    monkeypatch.setattr(convert_module, "mix_heads", recording)
    inc, cache = incremental_logits(model, ids, mask, (6, 1, 1, 1, 1))
    # prefill: k, v of 6 tokens per layer; each step: q, k, v of 1 token per layer
    assert seen == [6, 6] * 2 + [1, 1, 1] * 2 * 4
    kept = cache._iha_pseudo_kv
    assert sorted(kept) == [0, 1] and len(kept[0][1]) == 10 * 3  # 10 tokens, P = 3
    real = mask.bool()
    torch.testing.assert_close(inc[real], full_logits(model, ids, mask)[real], atol=1e-4, rtol=0)


def test_a_reordered_cache_is_not_served_from_the_kept_copy():
    # Beam search reorders the HF cache's batch rows: the kept pseudo keys must follow.
    model = make_model("llama")
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = model(input_ids=ids[:, :6], attention_mask=mask[:, :6], use_cache=True)
        out.cache.reorder_cache(torch.tensor([1, 0]))
        swapped = ids.flip(0)
        for n in range(6, 9):
            out = model(input_ids=swapped[:, n : n + 1], attention_mask=mask[:, : n + 1],
                        cache=out.cache, use_cache=True)
    torch.testing.assert_close(out.logits[:, -1], full_logits(model, swapped, mask)[:, -1],
                               atol=1e-4, rtol=0)


def test_the_original_models_cache_is_accepted_after_conversion():
    # A prefix cached by the original model (raw rotated keys): the kept copy is built from it,
    # and the exact conversion continues the original model's logits.
    T = transformers
    model = T.LlamaForCausalLM(T.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")).eval()
    ids = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        prefix = model(ids[:, :6], use_cache=True).cache
        convert(model, num_pseudo_heads=2)
        out = model(ids[:, 6:7], cache=prefix, use_cache=True)
        out = model(ids[:, 7:9], cache=out.cache, use_cache=True)
    torch.testing.assert_close(out.logits, full[:, 7:9], atol=1e-4, rtol=0)
