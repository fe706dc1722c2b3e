"""Behaviours that once had no guard: KV-cache padding bookkeeping, sampling temperature,
early stopping of generation, FLOP counts with a window longer than the sequence."""

from __future__ import annotations

import pytest
import torch

from iha.cache import KVCache
from iha.flops import attention_pairs, paper_attention_cost
from iha.models import DecoderLM, ModelConfig, generate
from iha.models.generate import sample_next


def _kv(B, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 2, n, 4, generator=g), torch.randn(B, 2, n, 4, generator=g)


def test_a_padded_chunk_appended_to_an_unpadded_cache_keeps_both_masks():
    cache = KVCache("raw")
    k1, v1 = _kv(2, 3, 0)
    k, v, mask, start = cache.update(k1, v1, 3)
    assert mask is None and start == 0
    k2, v2 = _kv(2, 2, 1)
    new_mask = torch.tensor([[False, True], [True, True]])
    k, v, mask, start = cache.update(k2, v2, 2, new_mask)
    want = torch.tensor([[True, True, True, False, True], [True] * 5])
    assert start == 3 and torch.equal(mask, want)
    assert torch.equal(cache.attention_mask, want)
    assert torch.equal(k, torch.cat([k1, k2], dim=2)) and torch.equal(v, torch.cat([v1, v2], 2))


def test_reordering_rows_for_beam_search_moves_their_padding_with_them():
    cache = KVCache("raw")
    k, v = _kv(3, 4, 2)
    pad = torch.tensor([[False, False, True, True], [True] * 4, [False, True, True, True]])
    cache.update(k, v, 4, pad)
    order = torch.tensor([2, 0, 0])
    cache.reorder(order)
    assert torch.equal(cache.keys, k[order]) and torch.equal(cache.values, v[order])
    assert torch.equal(cache.attention_mask, pad[order])
    _, _, mask, _ = cache.update(*_kv(3, 1, 3), 1)
    assert torch.equal(mask[:, :4], pad[order]) and bool(mask[:, 4].all())


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampling_draws_from_softmax_of_logits_over_temperature(temperature):
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.0, 0.3, 0.1, 3.0], [1.0, 1.0, -2.0, 0.2]])
    probs = torch.exp(logits.double() / temperature)
    probs = (probs / probs.sum(-1, keepdim=True)).float()  # the reference distribution
    for seed in range(40):
        got = sample_next(logits, temperature, generator=torch.Generator().manual_seed(seed))
        want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(got, want.squeeze(-1)), seed


def _model():
    torch.manual_seed(0)
    cfg = {"vocab_size": 24, "hidden_size": 16, "num_hidden_layers": 2,
           "num_attention_heads": 2, "max_position_embeddings": 32,
           "attention_variant": "iha_global", "num_pseudo_heads": 2}  # fmt: skip
    return DecoderLM(ModelConfig.from_dict(cfg)).eval()


def test_generation_ends_as_soon_as_every_row_has_stopped():
    model = _model()
    prompts = torch.tensor([[1, 2, 3], [4, 5, 6]])
    free = generate(model, prompts, max_new_tokens=6)
    assert free.shape == (2, 6)
    stops = sorted({int(t) for t in free[:, 0]})  # every row emits a stop token at once
    stopped = generate(model, prompts, max_new_tokens=6, stop_token_ids=stops)
    assert stopped.shape == (2, 1)
    assert torch.equal(stopped, free[:, :1])


def _pairs_brute_force(n, p, mask, window):
    """Allowed (pseudo query, pseudo key) pairs of one head, counted one by one."""
    count = 0
    for i in range(n * p):
        for j in range(n * p):
            ti, tj = i // p, j // p
            if mask == "flat":
                ok = j <= i and (window is None or i - j < window * p)
            else:  # token
                ok = tj <= ti and (window is None or ti - tj < window)
            count += ok
    return count


@pytest.mark.parametrize("mask", ["flat", "token"])
@pytest.mark.parametrize("window", [None, 2, 5, 7, 30])
def test_attention_pairs_for_any_window_including_longer_than_the_sequence(mask, window):
    n, p = 7, 2
    assert attention_pairs(n, p, mask, window) == _pairs_brute_force(n, p, mask, window)


def test_paper_cost_with_a_window_longer_than_the_sequence_is_the_global_cost():
    H, d, P, N = 3, 8, 2, 10
    assert paper_attention_cost(N, H, d, P, window=25) == H * (N * P) * (N * P) * d
    assert paper_attention_cost(N, H, d, P, window=4) == H * (N * P) * (4 * P) * d


def test_cache_bytes_count_keys_and_values():
    cache = KVCache("raw", max_tokens=3)
    assert cache.nbytes() == 0
    k, v = _kv(2, 5, 4)  # float32 (2, 2, 5, 4); a 3-token window keeps 3 of 5
    cache.update(k, v, 5)
    assert cache.nbytes() == 2 * (2 * 2 * 3 * 4) * 4  # keys + values, 4 bytes each
