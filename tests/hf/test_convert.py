"""Retrofitting HF Llama / Qwen2 / Mistral models with IHA (iha.hf.convert).

Tiny models with random weights built from configs (no download). References are the original
HF models and an independent float64 einsum implementation of the converted layer.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from iha.cli import main as cli_main  # noqa: E402
from iha.functional import interleaved_head_attention  # noqa: E402
from iha.hf.convert import (  # noqa: E402
    IHAConvertedAttention,
    convert,
    converted_layers,
    freeze_except_mixing,
    load_converted,
    sft_model_factory,
)
from iha.hf.convert_report import measure_drift  # noqa: E402
from iha.rope import rope_cos_sin  # noqa: E402

VOCAB = 64
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    attn_implementation="sdpa",
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights (and Qwen2's q/k/v biases) at a scale where attention is far from uniform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.3 * noise)


def make_model(kind: str, seed: int = 0) -> torch.nn.Module:
    """Tiny random model: llama, llama-eager, llama3 (llama3 RoPE scaling), qwen2 (biases,
    sliding window on layer 1), mistral (sliding window 5)."""
    T = transformers
    if kind == "llama":
        model = T.LlamaForCausalLM(T.LlamaConfig(**COMMON))
    elif kind == "llama-eager":  # additive float masks instead of sdpa's boolean ones
        model = T.LlamaForCausalLM(T.LlamaConfig(**{**COMMON, "attn_implementation": "eager"}))
    elif kind == "llama3":
        model = T.LlamaForCausalLM(T.LlamaConfig(**COMMON, rope_parameters=LLAMA3_ROPE))
    elif kind == "qwen2":
        cfg = T.Qwen2Config(
            **COMMON, use_sliding_window=True, sliding_window=5, max_window_layers=1
        )
        model = T.Qwen2ForCausalLM(cfg)
    elif kind == "mistral":
        model = T.MistralForCausalLM(T.MistralConfig(**COMMON, sliding_window=5))
    else:
        raise AssertionError(kind)
    _randomize(model, seed)
    return model.eval()


def logits(model, ids, attention_mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=attention_mask, use_cache=False).logits


def left_padded_batch(seed: int = 1, n: int = 14):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (2, n), generator=g)
    mask = torch.ones(2, n, dtype=torch.long)
    mask[0, :3] = 0  # row 0 is left-padded by 3 tokens
    return ids, mask


# ---------------------------------------------------------------------------------------------
# an independent float64 reference of a converted layer


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def virtual_rotary(model: torch.nn.Module, n_pseudo: int) -> torch.nn.Module:
    """The model's rotary embedding class on a copy of its config whose RoPE lengths (the
    original context of llama3 / yarn, the dynamic rule's max_position_embeddings) are
    multiplied by P: the rule seen in virtual positions."""
    config = copy.deepcopy(model.config)
    params = config.rope_parameters
    if "original_max_position_embeddings" in params:
        params["original_max_position_embeddings"] *= n_pseudo
    config.max_position_embeddings *= n_pseudo
    return type(model.model.rotary_emb)(config=config)


def reference_layer(attn: IHAConvertedAttention, rotary, x: torch.Tensor) -> torch.Tensor:
    """Mix -> rotate after mixing (token pos n or virtual pos n*P+p, the model's own RoPE) ->
    token or flat causal mask (+ window) -> softmax -> collapse -> o_proj, all by einsum."""
    B, N, _ = x.shape
    H, G, P, d = attn.n_heads, attn.n_kv_heads, attn.n_pseudo, attn.head_dim
    q = attn.q_proj(x).view(B, N, H, d)
    k = attn.k_proj(x).view(B, N, G, d)
    v = attn.v_proj(x).view(B, N, G, d)
    qt = torch.einsum("bnmd,mhp->bnphd", q, attn.alpha_q)  # (B, N, P, H, d)
    kt = torch.einsum("bnmd,mgp->bnpgd", k, attn.alpha_k)  # (B, N, P, G, d)
    vt = torch.einsum("bnmd,mgp->bnpgd", v, attn.alpha_v)
    n = torch.arange(N)[:, None].expand(N, P)
    p = torch.arange(P)[None, :].expand(N, P)
    pos = n if attn.mode == "exact" else n * P + p  # (N, P) RoPE position of pseudo (n, p)
    cos, sin = rotary(x, position_ids=pos.reshape(1, -1))  # (1, N*P, d)
    cos, sin = cos.view(N, P, 1, d), sin.view(N, P, 1, d)
    qt, kt = rotate(qt, cos, sin), rotate(kt, cos, sin)
    kt = kt.repeat_interleave(H // G, dim=3)  # pseudo KV head g serves heads g*H/G..
    vt = vt.repeat_interleave(H // G, dim=3)
    scores = torch.einsum("bnphd,bmqhd->bhnpmq", qt, kt) * attn.scaling  # (B,H,N,P,N,P)
    tq = (n * P + p)[:, :, None, None]
    tk = (n * P + p)[None, None]
    nq, nk = n[:, :, None, None], n[None, None]
    W = attn.sliding_window
    if attn.mode == "exact":
        allowed = (nk <= nq) & (True if W is None else nq - nk < W)
    else:
        allowed = (tk <= tq) & (True if W is None else tq - tk < (W - 1) * P)
    scores = scores.masked_fill(~allowed, float("-inf"))
    w = torch.softmax(scores.reshape(B, H, N, P, N * P), dim=-1).view_as(scores)
    o = torch.einsum("bhnpmq,bmqhd->bnphd", w, vt)  # (B, N, P, H, d)
    R = attn.collapse
    if R.shape[1] == P:
        y = torch.einsum("bnphd,hp->bnhd", o, R)
    else:
        y = torch.einsum("bnpkd,hkp->bnhd", o, R.view(H, H, P))
    return attn.o_proj(y.reshape(B, N, H * d))


# ---------------------------------------------------------------------------------------------
# exactness


@pytest.mark.parametrize("kind", ["llama", "llama-eager", "llama3", "qwen2", "mistral"])
def test_exact_conversion_matches_original_logits(kind):
    model = make_model(kind)
    ids, mask = left_padded_batch(n=14)
    ref = logits(model, ids, mask)
    convert(model, num_pseudo_heads=3)
    assert len(converted_layers(model)) == 2
    out = logits(model, ids, mask)
    real = mask.bool()  # padded positions are don't-care in both models
    assert ref.abs().max() > 1.0  # the logits are not trivially small
    torch.testing.assert_close(out[real], ref[real], atol=1e-4, rtol=0)


def test_rotation_before_mixing_equals_rotation_after_mixing_at_token_positions():
    torch.manual_seed(0)
    B, H, G, N, d, P, theta = 2, 4, 2, 7, 8, 3, 500.0
    q = torch.randn(B, H, N, d, dtype=torch.float64)
    k = torch.randn(B, G, N, d, dtype=torch.float64)
    v = torch.randn(B, G, N, d, dtype=torch.float64)
    alphas = [torch.randn(m, m, P, dtype=torch.float64) for m in (H, G, G)]  # not identity
    R = torch.randn(H, H * P, dtype=torch.float64)
    after = interleaved_head_attention(
        q, k, v, *alphas, R, mask="token", rope_theta=theta, positions="token"
    )
    cos, sin = rope_cos_sin(torch.arange(N), d, theta, torch.float64)
    before = interleaved_head_attention(
        rotate(q, cos, sin), rotate(k, cos, sin), v, *alphas, R, mask="token", rope_theta=None
    )
    torch.testing.assert_close(before, after, atol=1e-12, rtol=0)
    # ...and not under virtual positions, where the copies of a token sit at different phases
    virtual = interleaved_head_attention(
        q, k, v, *alphas, R, mask="token", rope_theta=theta, positions="virtual"
    )
    assert (virtual - before).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kind,mode,collapse",
    [
        ("llama3", "exact", "global"),
        ("qwen2", "exact", "per_head"),
        ("mistral", "paper", "global"),
        ("llama3", "paper", "per_head"),
    ],
)
def test_converted_layer_with_trained_mixing_matches_float64_reference(kind, mode, collapse):
    model = make_model(kind).double()
    convert(model, num_pseudo_heads=2, mode=mode, collapse=collapse, init_noise=0.3)
    N = 9
    x = torch.randn(2, N, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    rotary = model.model.rotary_emb
    pe = rotary(x, position_ids=torch.arange(N)[None])
    # paper mode: transformers' own rotary embedding with every length of its rule times P
    virtual = virtual_rotary(model, 2).double() if mode == "paper" else rotary
    for attn in converted_layers(model).values():
        assert float(attn.alpha_q.detach().std()) > 0.1  # far from the identity init
        with torch.no_grad():
            out, _ = attn(x, position_embeddings=pe, attention_mask=None)
            ref = reference_layer(attn, virtual, x)
        # paper mode rotates with iha.rope's float64 tables, transformers' are float32
        torch.testing.assert_close(out, ref, atol=1e-10 if mode == "exact" else 1e-5, rtol=0)


def test_paper_mode_with_one_pseudo_head_is_exact():
    # P = 1: virtual position n*1+0 = n and the flat mask is the token mask, with llama3 RoPE.
    model = make_model("llama3")
    d = COMMON["hidden_size"] // COMMON["num_attention_heads"]
    default = 1.0 / 10000.0 ** (torch.arange(0, d, 2) / d)
    assert (model.model.rotary_emb.inv_freq - default).abs().max() > 1e-3  # scaling is active
    ids, mask = left_padded_batch()
    ref = logits(model, ids, mask)
    convert(model, num_pseudo_heads=1, mode="paper")
    torch.testing.assert_close(
        logits(model, ids, mask)[mask.bool()], ref[mask.bool()], atol=1e-4, rtol=0
    )


def test_paper_mode_runs_and_reports_drift():
    model = make_model("llama")
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(5))
    exact = measure_drift(model, ids, num_pseudo_heads=2, mode="exact")
    paper = measure_drift(model, ids, num_pseudo_heads=2, mode="paper")
    print(f"\nexact: {exact}\npaper: {paper}")
    assert exact["max_abs_logit_diff"] < 1e-4
    assert exact["top1_agreement"] == 1.0
    assert math.isclose(exact["ppl_original"], exact["ppl_converted"], rel_tol=1e-5)
    assert math.isfinite(paper["ppl_converted"])
    assert paper["max_abs_logit_diff"] > 1e-2  # the paper's mask/positions change the function
    assert not converted_layers(model)  # measure_drift converts a copy


def test_convert_report_prints_both_modes_and_the_control(capsys):
    argv = ["--train-steps", "2", "--finetune-steps", "1", "--seq-len", "16", "--rows", "2"]
    assert cli_main(["convert-report", *argv]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["mode"], r["stage"]) for r in rows] == [
        ("exact", "converted"),
        ("exact", "+1 IHA-only steps"),
        ("paper", "converted"),
        ("paper", "+1 IHA-only steps"),
        ("original", "+1 norm-only steps"),
    ]
    assert rows[0]["max_abs_logit_diff"] < 1e-4 < rows[2]["max_abs_logit_diff"]


# ---------------------------------------------------------------------------------------------
# generation and caches


@pytest.mark.parametrize(
    "kind,mode", [("llama3", "exact"), ("qwen2", "exact"), ("mistral", "paper")]
)
def test_cached_and_uncached_greedy_generation_agree(kind, mode):
    model = make_model(kind)
    ids, mask = left_padded_batch(n=6)
    kw = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        original = model.generate(ids, **kw)
        convert(model, num_pseudo_heads=2, mode=mode)
        cached = model.generate(ids, use_cache=True, **kw)
        uncached = model.generate(ids, use_cache=False, **kw)
    assert cached.shape == (2, 14)
    assert torch.equal(cached, uncached)
    if mode == "exact":
        assert torch.equal(cached, original)


@pytest.mark.parametrize(
    "kind,mode", [("mistral", "exact"), ("mistral", "paper"), ("qwen2", "paper")]
)
def test_token_by_token_decoding_logits_match_full_forward(kind, mode):
    # Sliding window 5 < 12 tokens: the HF sliding cache drops old tokens during decoding.
    model = convert(make_model(kind), num_pseudo_heads=2, mode=mode, init_noise=0.1)
    ids, mask = left_padded_batch(n=12)
    full = logits(model, ids, mask)
    steps = []
    with torch.no_grad():
        out = model(input_ids=ids[:, :4], attention_mask=mask[:, :4], use_cache=True)
        steps.append(out.logits)
        for n in range(4, 12):
            out = model(
                input_ids=ids[:, n : n + 1],
                attention_mask=mask[:, : n + 1],
                cache=out.cache,
                use_cache=True,
            )
            steps.append(out.logits)
    inc = torch.cat(steps, dim=1)  # (B, 12, V)
    real = mask.bool()
    torch.testing.assert_close(inc[real], full[real], atol=1e-4, rtol=0)


def test_exact_conversion_accepts_the_original_models_cache():
    # The cache holds raw rotated keys/values, as the original model's does.
    model = make_model("llama3")
    ids = torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids).logits
        prefix = model(ids[:, :7], use_cache=True).cache
        convert(model, num_pseudo_heads=2)
        rest = model(ids[:, 7:], cache=prefix, use_cache=True).logits
    torch.testing.assert_close(rest, full[:, 7:], atol=1e-4, rtol=0)


def test_non_causal_attention_mask_is_rejected():
    model = convert(make_model("llama"), num_pseudo_heads=2)
    N = 6
    block = torch.zeros(N, N, dtype=torch.bool)
    block[:3, :3] = block[3:, 3:] = True  # two packed documents
    mask4 = torch.tril(block)[None, None]  # (1, 1, N, N)
    ids = torch.randint(0, VOCAB, (1, N))
    with pytest.raises(ValueError, match="causal mask with key padding"):
        model.model.layers[0].self_attn(
            torch.randn(1, N, 32),
            position_embeddings=model.model.rotary_emb(torch.randn(1), torch.arange(N)[None]),
            attention_mask=mask4,
        )
    assert logits(model, ids).shape == (1, N, VOCAB)


# ---------------------------------------------------------------------------------------------
# layers, errors


def test_subset_of_layers_and_converting_twice_is_an_error():
    model = make_model("qwen2")
    ids, mask = left_padded_batch()
    ref = logits(model, ids, mask)
    convert(model, num_pseudo_heads=2, layers=[1])
    layers = model.model.layers
    assert not isinstance(layers[0].self_attn, IHAConvertedAttention)
    assert isinstance(layers[1].self_attn, IHAConvertedAttention)
    assert layers[1].self_attn.sliding_window == 5  # Qwen2's sliding layer keeps its window
    assert [e["layer"] for e in model.config.iha_conversion["layers"]] == [1]
    with pytest.raises(ValueError, match="layer 1 is already converted"):
        convert(model, num_pseudo_heads=2, layers=[0, 1])
    assert not isinstance(layers[0].self_attn, IHAConvertedAttention)  # nothing changed
    with pytest.raises(ValueError, match="layer 1 is already converted"):
        convert(model)
    convert(model, num_pseudo_heads=3, layers=[0], collapse="per_head")
    record = model.config.iha_conversion["layers"]
    assert [(e["layer"], e["num_pseudo_heads"], e["collapse"]) for e in record] == [
        (0, 3, "per_head"),
        (1, 2, "global"),
    ]
    out = logits(model, ids, mask)
    torch.testing.assert_close(out[mask.bool()], ref[mask.bool()], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_pseudo_heads": 0}, "num_pseudo_heads"),
        ({"num_pseudo_heads": 2.0}, "num_pseudo_heads"),
        ({"mode": "flat"}, "mode='flat'"),
        ({"collapse": "mean"}, "collapse='mean'"),
        ({"layers": [2]}, r"layers=\[2\]"),
        ({"layers": [0, 0]}, "more than once"),
        ({"layers": []}, "selects no layer"),
        ({"init_noise": -1.0}, "init_noise"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    model = make_model("llama")
    with pytest.raises(ValueError, match=match):
        convert(model, **kwargs)
    assert not converted_layers(model)


def test_unsupported_model_type_is_rejected():
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="model_type='gpt2' is not supported"):
        convert(transformers.GPT2LMHeadModel(cfg))


# ---------------------------------------------------------------------------------------------
# save / load


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("qwen2", dict(num_pseudo_heads=2, layers=[0], collapse="per_head")),
        ("mistral", dict(num_pseudo_heads=3, mode="paper")),
    ],
)
def test_save_pretrained_load_converted_round_trip_is_exact(tmp_path, kind, kwargs):
    model = convert(make_model(kind), init_noise=0.1, **kwargs)  # mixing away from its init
    ids, mask = left_padded_batch()
    before = logits(model, ids, mask)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["iha_conversion"] == (
        model.config.iha_conversion
    )
    loaded = load_converted(tmp_path).eval()
    assert type(loaded) is type(model)
    want, got = model.state_dict(), loaded.state_dict()
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert torch.equal(logits(loaded, ids, mask), before)


def test_load_converted_rejects_an_unconverted_checkpoint(tmp_path):
    make_model("llama").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a converted checkpoint"):
        load_converted(tmp_path)


def test_cli_convert_writes_a_checkpoint_that_loads_and_matches(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    model = make_model("llama3")
    model.save_pretrained(src)
    (src / "tokenizer_config.json").write_text("{}")
    rc = cli_main(["convert", str(src), str(dst), "--num-pseudo-heads", "2", "--layers", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    drift = float(out.split("random tokens: ")[1].split()[0])
    assert drift < 1e-4
    assert (dst / "tokenizer_config.json").exists()
    loaded = load_converted(dst).eval()
    assert list(converted_layers(loaded)) == [1]
    ids, mask = left_padded_batch()
    torch.testing.assert_close(
        logits(loaded, ids, mask)[mask.bool()],
        logits(model, ids, mask)[mask.bool()],
        atol=1e-4,
        rtol=0,
    )
    assert cli_main(["convert", str(dst), str(tmp_path / "again")]) == 2  # already converted
    assert cli_main(["convert", str(src), str(tmp_path / "x"), "--num-pseudo-heads", "0"]) == 2
    assert "num_pseudo_heads" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# fine-tuning


def test_freeze_except_mixing_then_sft_steps_reduce_the_loss():
    model = convert(
        make_model("qwen2"),
        num_pseudo_heads=2,
        init_noise=1e-2,
        generator=torch.Generator().manual_seed(0),
    )
    trainable = freeze_except_mixing(model)
    mixing = {
        n
        for n in trainable
        if n.rsplit(".", 1)[-1] in ("alpha_q", "alpha_k", "alpha_v", "collapse")
    }
    assert len(mixing) == 8  # 4 tensors in each of 2 layers
    assert all("norm" in n for n in set(trainable) - mixing)  # the rest are norms
    assert not any("proj" in n or "embed" in n or "lm_head" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, VOCAB, (4, 12), generator=g)
    loss_mask = torch.zeros(4, 12, dtype=torch.bool)
    loss_mask[:, 6:] = True  # "response" tokens only, as in SFT
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    model.train()

    def loss_fn():
        out = model(input_ids=ids, use_cache=False).logits[:, :-1]  # (B, N-1, V)
        targets = ids[:, 1:].masked_fill(~loss_mask[:, 1:], -100)
        return torch.nn.functional.cross_entropy(out.reshape(-1, VOCAB), targets.reshape(-1))

    losses = []
    for _ in range(8):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"\nSFT losses (mixing + norms only): {[round(x, 3) for x in losses]}")
    assert losses[-1] < 0.9 * losses[0]
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def test_freeze_except_mixing_needs_a_converted_model():
    with pytest.raises(ValueError, match="convert"):
        freeze_except_mixing(make_model("llama"))


def test_sft_model_factory_loads_a_converted_checkpoint_for_iha_train(tmp_path):
    model = convert(make_model("llama"), num_pseudo_heads=2)
    model.save_pretrained(tmp_path)
    wrapped = sft_model_factory({"hf_path": str(tmp_path), "freeze": "mixing"})
    ids = torch.randint(0, VOCAB, (2, 5))
    assert torch.equal(wrapped(ids), logits(model, ids))
    assert all(
        p.requires_grad
        == (n.rsplit(".", 1)[-1] in ("alpha_q", "alpha_k", "alpha_v", "collapse") or "norm" in n)
        for n, p in wrapped.named_parameters()
    )
    with pytest.raises(ValueError, match="freeze"):
        sft_model_factory({"hf_path": str(tmp_path), "freeze": "all"})
    with pytest.raises(ValueError, match="unknown model keys"):
        sft_model_factory({"hf_path": str(tmp_path), "preset": "tiny"})


def test_iha_train_sft_from_a_converted_checkpoint_trains_only_mixing_and_norms(tmp_path):
    from iha.train.config import config_from_dict
    from iha.train.trainer import load_trained_model, train

    cfg = transformers.LlamaConfig(**{**COMMON, "vocab_size": 260, "tie_word_embeddings": True})
    model = transformers.LlamaForCausalLM(cfg)
    convert(model, num_pseudo_heads=2, init_noise=1e-2)
    model.save_pretrained(tmp_path / "converted")
    with open(tmp_path / "sft.jsonl", "w") as f:
        for i in range(24):
            f.write(json.dumps({"prompt": f"{i}+{i}=", "response": f"{2 * i}"}) + "\n")
    raw = {
        "run_dir": str(tmp_path / "run"),
        "model": {"hf_path": str(tmp_path / "converted"), "freeze": "mixing"},
        "data": {
            "source": "jsonl",
            "path": str(tmp_path / "sft.jsonl"),
            "prompt_field": "prompt",
            "response_field": "response",
            "tokenizer": "byte",
            "seq_len": 16,
            "val_fraction": 0.1,
        },
        "optim": {"lr": 1e-3, "mixing_lr": 1e-2, "warmup_steps": 0},
        "train": {"max_steps": 3, "batch_size": 2, "device": "cpu", "val_batches": 1},
        "logging": {"progress": "none", "tensorboard": "off", "plots": False},
    }
    result = train(config_from_dict(raw, resolve_model=False), model_factory=sft_model_factory)
    assert result.reason == "done"
    wrapped, _, _ = load_trained_model(tmp_path / "run", model_factory=sft_model_factory)
    before = dict(model.named_parameters())
    for name, p in wrapped.model.named_parameters():
        moved = not torch.equal(p, before[name])
        trainable = name.rsplit(".", 1)[-1] in ("alpha_q", "alpha_k", "alpha_v", "collapse")
        assert moved == (trainable or "norm" in name), name
    wrapped.model.save_pretrained(tmp_path / "export")  # back to a HF checkpoint
    exported = load_converted(tmp_path / "export").eval()
    ids = torch.randint(0, 260, (1, 7))
    assert torch.equal(logits(exported, ids), wrapped.eval()(ids))


def test_paper_mode_reads_the_source_rope_rule_and_rejects_unknown_ones():
    from iha.hf.convert import rope_from_hf_config

    theta, rule = rope_from_hf_config(make_model("llama3").config)
    assert theta == 10000.0 and rule["rope_type"] == "llama3"
    assert rule["original_max_position_embeddings"] == 16 and rule["factor"] == 8.0
    dynamic = transformers.LlamaConfig(**COMMON, rope_parameters={
        "rope_type": "dynamic", "rope_theta": 500.0, "factor": 2.0})
    assert rope_from_hf_config(dynamic) == (500.0, {
        "rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 256})
    assert rope_from_hf_config(make_model("qwen2").config)[1] is None
    model = make_model("llama")
    model.config.rope_parameters = {"rope_type": "longrope", "rope_theta": 1e4, "factor": 2.0,
                                    "short_factor": [1.0] * 2, "long_factor": [2.0] * 2}
    with pytest.raises(ValueError, match="rope_type"):
        convert(model, num_pseudo_heads=2, mode="paper")
    assert not converted_layers(model)  # nothing changed
