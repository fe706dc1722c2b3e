"""DecoderLM: training signal, KV-cache generation, padding, cache policies, GQA, tying."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iha.models import VARIANTS, DecoderLM, ModelConfig, generate
from iha.models.generate import filter_logits, sample_next


def tiny(variant: str, **kw) -> ModelConfig:
    base = dict(
        vocab_size=32,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attention_variant=variant,
        num_pseudo_heads=2,
        sliding_window=4,
        iha_window=3,
    )
    base.update(kw)
    return ModelConfig(**base)


def model_of(variant: str, seed: int = 0, dtype=torch.float64, **kw) -> DecoderLM:
    torch.manual_seed(seed)
    return DecoderLM(tiny(variant, **kw)).to(dtype).eval()


def test_loss_falls_on_a_tiny_copy_task_for_every_variant():
    g = torch.Generator().manual_seed(0)
    for variant in VARIANTS:
        torch.manual_seed(0)
        model = DecoderLM(tiny(variant, num_hidden_layers=2, layer_schedule=None))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(40):
            period = torch.randint(0, 32, (8, 2), generator=g)
            ids = period.repeat(1, 8)  # (8, 16) "abab...": the next token is the one 2 back
            logits = model(ids[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, 32), ids[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
        assert last < 0.7 * first, (variant, first, last)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_generation_equals_uncached_past_the_sliding_window(variant):
    model = model_of(variant, layer_schedule="IL" if variant == "iha" else None)
    ids = torch.randint(0, 32, (2, 6), generator=torch.Generator().manual_seed(1))
    policies = ("raw", "pseudo") if variant.startswith("iha") else ("raw",)
    ref_tok, ref_logits = generate(
        model, ids, max_new_tokens=10, use_cache=False, return_logits=True
    )
    assert ref_tok.shape == (2, 10)  # 16 tokens in all, windows are 3 and 4
    for policy in policies:
        tok, logits = generate(
            model, ids, max_new_tokens=10, cache_policy=policy, return_logits=True
        )
        assert torch.equal(tok, ref_tok)
        torch.testing.assert_close(logits, ref_logits, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("variant", ["global_local", "talking_heads", "diff", "iha"])
def test_left_padded_batch_equals_each_prompt_alone(variant):
    model = model_of(variant)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, 32, (1, 7), generator=g), torch.randint(0, 32, (1, 3), generator=g)
    ids = torch.cat([a, torch.cat([torch.zeros(1, 4, dtype=torch.long), b], 1)])
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :4] = 0
    tok, logits = generate(model, ids, mask, max_new_tokens=6, return_logits=True)
    for row, prompt in ((0, a), (1, b)):
        t1, l1 = generate(model, prompt, max_new_tokens=6, return_logits=True)
        assert torch.equal(tok[row], t1[0])
        torch.testing.assert_close(logits[row], l1[0], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_backend_choice_does_not_change_the_logits(variant):
    ids = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(8))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :2] = 0
    ref = model_of(variant, attention_backend="reference")(ids, attention_mask=mask)
    for backend in ("auto", "blocked"):
        got = model_of(variant, attention_backend=backend)(ids, attention_mask=mask)  # same seed
        torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)


def test_stop_tokens_finish_rows_and_fill_them():
    model = model_of("iha")
    ids = torch.randint(0, 32, (3, 5), generator=torch.Generator().manual_seed(3))
    free = generate(model, ids, max_new_tokens=8)
    stop = int(free[0, 2])
    first_stop = [next((j for j in range(8) if free[r, j] == stop), None) for r in range(3)]
    out = generate(model, ids, max_new_tokens=8, stop_token_ids=[stop])
    for r in range(3):
        j = first_stop[r]
        if j is None:
            assert torch.equal(out[r], free[r, : out.shape[1]])
        else:
            assert torch.equal(out[r, : j + 1], free[r, : j + 1])
            assert (out[r, j:] == stop).all()
    if all(j is not None for j in first_stop):
        assert out.shape[1] == max(first_stop) + 1


def test_filter_logits_matches_brute_force_top_k_and_top_p():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 12, generator=g, dtype=torch.float64)
    for k, p in ((3, 1.0), (0, 0.5), (4, 0.3), (0, 1.0)):
        got = torch.isfinite(filter_logits(logits, top_k=k, top_p=p))
        for r in range(5):
            order = sorted(range(12), key=lambda i: -logits[r, i].item())
            keep = set(order[:k] if k else order)
            probs = torch.softmax(logits[r], -1)
            mass, nucleus = 0.0, set()
            for i in order:  # smallest prefix with mass >= p
                nucleus.add(i)
                mass += probs[i].item()
                if mass >= p:
                    break
            # top-k first, then top-p on the renormalised survivors
            if k:
                sub = torch.softmax(logits[r, order[:k]], -1)
                mass, nucleus = 0.0, set()
                for i, pi in zip(order[:k], sub.tolist()):
                    nucleus.add(i)
                    mass += pi
                    if mass >= p:
                        break
            assert {i for i in range(12) if got[r, i]} == keep & nucleus


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    model = model_of("global", dtype=torch.float32)
    ids = torch.randint(0, 32, (2, 4), generator=torch.Generator().manual_seed(5))
    s1 = generate(model, ids, max_new_tokens=8, temperature=1.0, seed=7)
    s2 = generate(model, ids, max_new_tokens=8, temperature=1.0, seed=7)
    assert torch.equal(s1, s2)
    greedy = generate(model, ids, max_new_tokens=8)
    assert torch.equal(generate(model, ids, max_new_tokens=8, temperature=2.0, top_k=1), greedy)
    logits = torch.tensor([[0.0, 10.0, 0.0]])
    assert sample_next(logits, temperature=1.0, top_p=0.5).item() == 1


def test_raw_cache_holds_one_pth_of_pseudo_and_same_tokens():
    model = model_of("iha_global", num_pseudo_heads=3, dtype=torch.float32)
    ids = torch.randint(0, 32, (2, 5), generator=torch.Generator().manual_seed(6))
    caches = {}
    for policy in ("raw", "pseudo"):
        caches[policy] = model.make_cache(2, policy)
        model(ids, cache=caches[policy])
    assert caches["pseudo"].nbytes() == 3 * caches["raw"].nbytes() > 0
    t_raw = generate(model, ids, max_new_tokens=8, cache_policy="raw")
    assert torch.equal(t_raw, generate(model, ids, max_new_tokens=8, cache_policy="pseudo"))


def test_local_layer_caches_stay_bounded_by_their_window():
    model = model_of("iha", layer_schedule="ILG", num_hidden_layers=3, dtype=torch.float32)
    cache = model.make_cache(1, "raw")
    for i in range(12):
        model(torch.tensor([[i % 32]]), cache=cache)
    assert [c.n_tokens for c in cache.layers] == [3, 4, 12]  # iha_window, sliding_window, all
    assert cache.offset == 12


def test_gqa_shrinks_key_value_projections():
    for variant in VARIANTS:
        m1, m2 = model_of(variant, num_key_value_heads=4), model_of(variant, num_key_value_heads=2)
        attn1, attn2 = m1.layers[0].self_attn, m2.layers[0].self_attn
        assert attn1.k_proj.weight.shape == (32, 32)
        assert attn2.k_proj.weight.shape == (16, 32) and attn2.v_proj.weight.shape == (16, 32)


def test_tied_embeddings_share_one_tensor_counted_once():
    untied = model_of("global")
    tied = model_of("global", tie_word_embeddings=True)
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.num_parameters() - tied.num_parameters() == 32 * 32


def test_bad_inputs_raise_value_error():
    model = model_of("global")
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.randn(2, 3))
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="policy"):
        model.make_cache(2, "compressed")
    with pytest.raises(ValueError, match="top_p"):
        generate(model, torch.zeros(1, 2, dtype=torch.long), top_p=0.0)


def test_attention_mask_convention_is_checked_by_forward_and_generate():
    model = model_of("global_local")
    ids = torch.randint(0, 32, (2, 5), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, :2] = 0
    torch.testing.assert_close(model(ids, attention_mask=mask), model(ids, attention_mask=mask > 0))
    for bad, match in ((mask.float(), "float"), (mask * 2, "only 0 and 1")):
        with pytest.raises(ValueError, match=match):
            model(ids, attention_mask=bad)
        with pytest.raises(ValueError, match=match):
            generate(model, ids, bad, max_new_tokens=2)
