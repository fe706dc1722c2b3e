"""The compact decoder of Hugging Face models (``iha.eval.hf_decode.generate_hf``): finished
rows leave the batch, and the tokens are still those of ``model.generate``.

References are independent of the code under test: ``transformers``' own ``model.generate``
(greedy), full-length generation cut afterwards by a token-by-token search (stop strings), and
``iha.models.generate`` for the native model."""

from __future__ import annotations

import json
import os

import pytest
import torch

from iha.eval.hf_decode import generate_hf

transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB, PAD, EOS = 40, 0, 1


class PieceTokenizer:
    """Token t >= 2 decodes to 2-3 letters (stop strings split across tokens); 0 and 1 decode
    to nothing."""

    pad_token_id, eos_token_id = PAD, EOS

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(11)
        self.pieces = {PAD: "", EOS: ""}
        for t in range(2, VOCAB):
            n = 2 + int(torch.randint(0, 2, (1,), generator=g))
            self.pieces[t] = "".join(
                "abcdef"[int(i)] for i in torch.randint(0, 6, (n,), generator=g)
            )

    def decode(self, ids, skip_special_tokens=True) -> str:
        return "".join(self.pieces[int(t)] for t in ids)


TOK = PieceTokenizer()
PROMPTS = torch.tensor(
    [[PAD, PAD, 5, 9, 13], [7, 3, 22, 8, 30], [PAD, 11, 12, 17, 4], [PAD, PAD, PAD, 6, 2]]
)


def _mask() -> torch.Tensor:
    return (PROMPTS != PAD).long()


def _llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=2,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def llama():
    return _llama()


@pytest.fixture(scope="module")
def converted():
    from iha.hf import convert

    return convert(_llama(), num_pseudo_heads=2, mode="exact", init_noise=0.2,
                   generator=torch.Generator().manual_seed(1)).eval()  # fmt: skip


def _hf_greedy(model, n, **kw):
    with torch.no_grad():
        out = model.generate(input_ids=PROMPTS, attention_mask=_mask(), max_new_tokens=n,
                             do_sample=False, pad_token_id=PAD, **kw)  # fmt: skip
    return out[:, PROMPTS.shape[1] :]


def _cut(row, stop_strings=(), stop_ids=()) -> int:
    """Tokens a row keeps: through the first stop token or the token completing a stop string."""
    for j in range(len(row)):
        if row[j] in stop_ids or any(s in TOK.decode(row[: j + 1]) for s in stop_strings):
            return j + 1
    return len(row)


def _batch_sizes(model):
    seen: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return seen, handle


@pytest.mark.parametrize("which", ["llama", "converted"])
def test_greedy_equals_model_generate_and_finished_rows_leave_the_batch(which, request):
    model = request.getfixturevalue(which)
    n = 24
    full = _hf_greedy(model, n, eos_token_id=None).tolist()  # no stop: every row runs n tokens
    # a stop token that row 1 emits early, and stop strings straddling tokens of rows 0 and 2
    stop_id = full[1][3]
    stops = [TOK.pieces[full[0][5]][-1] + TOK.pieces[full[0][6]][0],
             TOK.pieces[full[2][9]][-1] + TOK.pieces[full[2][10]][0]]  # fmt: skip
    cuts = [_cut(r, stops, (stop_id,)) for r in full]
    seen, handle = _batch_sizes(model)
    try:
        got = generate_hf(model, PROMPTS, _mask(), max_new_tokens=n, stop_token_ids=[stop_id],
                          stop_strings=stops, tokenizer=TOK, pad_token_id=PAD).tolist()  # fmt: skip
    finally:
        handle.remove()
    assert len(got[0]) == max(cuts)
    for row, ref, cut in zip(got, full, cuts):
        assert row[:cut] == ref[:cut]
        fill = stop_id if ref[cut - 1] == stop_id else PAD
        assert all(t == fill for t in row[cut:])
    # one prefill, then one forward per step over the rows still going
    assert len(seen) == max(cuts)
    assert seen[0] == 4
    live = [sum(c > t for c in cuts) for t in range(1, max(cuts))]
    assert seen[1:] == live
    assert min(seen) < 4  # rows did leave


@pytest.mark.parametrize("which", ["llama", "converted"])
def test_greedy_with_eos_equals_model_generate(which, request):
    model = request.getfixturevalue(which)
    n = 30
    ref = _hf_greedy(model, n, eos_token_id=None).tolist()
    eos = ref[2][4]  # a token row 2 emits: the model's generate stops rows at it too
    expect = _hf_greedy(model, n, eos_token_id=eos)
    got = generate_hf(model, PROMPTS, _mask(), max_new_tokens=n, stop_token_ids=[eos])
    # model.generate pads a finished row with pad_token_id; this decoder repeats the stop token
    for row, exp in zip(got.tolist(), expect.tolist()):
        k = _cut(exp, stop_ids=(eos,))
        assert row[:k] == exp[:k]
    assert got.shape[1] == expect.shape[1]


def test_sampled_rows_do_not_depend_on_when_other_rows_finish(llama):
    n = 20
    full = generate_hf(llama, PROMPTS, _mask(), max_new_tokens=n, temperature=1.0, seed=7).tolist()
    again = generate_hf(llama, PROMPTS, _mask(), max_new_tokens=n, temperature=1.0, seed=7)
    assert again.tolist() == full  # seeded
    other = generate_hf(llama, PROMPTS, _mask(), max_new_tokens=n, temperature=1.0, seed=8)
    assert other.tolist() != full
    stop_id = full[0][2]
    cuts = [_cut(r, stop_ids=(stop_id,)) for r in full]
    got = generate_hf(llama, PROMPTS, _mask(), max_new_tokens=n, temperature=1.0, seed=7,
                      stop_token_ids=[stop_id]).tolist()  # fmt: skip
    for row, ref, cut in zip(got, full, cuts):
        assert row[:cut] == ref[:cut]


def test_native_iha_model_through_its_hf_wrapper_matches_iha_generate():
    import iha.hf
    from iha.models import generate

    torch.manual_seed(0)
    model = iha.hf.IHAForCausalLM(
        iha.hf.IHAConfig(
            hidden_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=VOCAB,
            attention_variant="iha_global",
        )  # fmt: skip
    ).eval()
    ref = generate(model, PROMPTS, _mask(), max_new_tokens=12).tolist()
    stop_id = ref[3][2]
    expect = generate(model, PROMPTS, _mask(), max_new_tokens=12, stop_token_ids=[stop_id])
    seen, handle = _batch_sizes(model)
    try:
        got = generate_hf(model, PROMPTS, _mask(), max_new_tokens=12, stop_token_ids=[stop_id])
    finally:
        handle.remove()
    assert got.tolist() == expect.tolist()
    assert min(seen) < 4 or all(stop_id not in r[:-1] for r in ref)


def test_runner_hf_generator_decoders_agree_on_greedy(llama):
    from iha.eval.runner import HFGenerator, SamplingParams

    prompts = [[5, 9, 13], [7, 3, 22, 8, 30], [11, 12, 17, 4]]
    base = SamplingParams(max_new_tokens=16, temperature=0.0, seed=None, stop_token_ids=(EOS,))
    full = HFGenerator(llama, PAD, decoder="hf")(prompts, base)
    long = max(full, key=len)
    assert len(long) > 6
    stops = (TOK.pieces[long[4]][-1] + TOK.pieces[long[5]][0],)
    params = SamplingParams(**{**base.__dict__, "stop_strings": stops})
    hf = HFGenerator(llama, PAD, tokenizer=TOK, decoder="hf")(prompts, params)
    compact = HFGenerator(llama, PAD, tokenizer=TOK)(prompts, params)
    assert compact == hf
    assert compact == [r[: _cut(r, stops)] for r in full]
    assert compact != full  # the stop string cut a row


def test_bad_arguments_name_what_is_accepted(llama):
    from iha.eval.runner import HFGenerator

    with pytest.raises(ValueError, match="decoder"):
        HFGenerator(llama, PAD, decoder="fast")
    with pytest.raises(ValueError, match="input_ids"):
        generate_hf(llama, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="attention_mask"):
        generate_hf(llama, PROMPTS, torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="tokenizer"):
        generate_hf(llama, PROMPTS, _mask(), stop_strings=["ab"])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_hf(llama, PROMPTS, _mask(), max_new_tokens=-1)
    assert generate_hf(llama, PROMPTS, _mask(), max_new_tokens=0).shape == (4, 0)


def test_progress_files_record_the_decoder_and_older_ones_resume_with_hf(tmp_path):
    from iha.eval.runner import SamplingParams, run_code_eval
    from tests.eval.test_humaneval_chat import PROBLEMS, ChatCoder, _answers, hf_tokenizer

    tok = hf_tokenizer(False, True)
    answers = [_answers(p)["body only"] for p in PROBLEMS]
    params = SamplingParams(max_new_tokens=64, temperature=0.0, seed=None)
    log = tmp_path / "humaneval.progress.jsonl"
    kw = dict(params=params, batch_size=1, prompt_style="chat", timeout=5, progress_file=log)

    def coder(decoder, **extra):
        gen = ChatCoder(tok, answers, **extra)
        gen.decoder = decoder  # what an HFGenerator carries
        return gen

    with pytest.raises(RuntimeError, match="interrupted"):
        run_code_eval("humaneval", PROBLEMS, coder("compact", fail_after=2), tok, **kw)
    header = json.loads(log.read_text().splitlines()[0])["settings"]
    assert header["decoder"] == "compact"
    with pytest.raises(ValueError, match="other settings"):  # another decoder: refused
        run_code_eval("humaneval", PROBLEMS, coder("hf"), tok, **kw)
    # a file from before the choice (no decoder in its header) was written by model.generate
    lines = log.read_text().splitlines()
    del header["decoder"]
    log.write_text("\n".join([json.dumps({"settings": header}), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="other settings"):
        run_code_eval("humaneval", PROBLEMS, coder("compact"), tok, **kw)
    again = coder("hf")
    res = run_code_eval("humaneval", PROBLEMS, again, tok, **kw)
    assert len(again.calls) == 1 and len(res.problems) == len(PROBLEMS)
