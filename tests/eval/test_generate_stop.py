"""Generation that stops each row at its stop strings or EOS and the batch when all stopped:
``iha.models.generate``, Hugging Face models through ``HFGenerator``, and the runners.

Every check compares against full-length generation cut afterwards by an independent loop (the
token-by-token decode of the full output, searched with ``in``)."""

from __future__ import annotations

import os

import pytest
import torch

from iha.models import DecoderLM, ModelConfig, generate
from iha.models.generate import StopStringTracker, find_stop
from iha.tokenizers import ByteTokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 40
PAD, EOS = 0, 1


class PieceTokenizer:
    """Token t >= 2 decodes to a fixed piece of 2-3 letters (so strings split across tokens);
    0 (pad) and 1 (eos) decode to nothing."""

    pad_token_id, eos_token_id = PAD, EOS

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(5)
        letters = "abcdefgh"
        self.pieces = {PAD: "", EOS: ""}
        for t in range(2, VOCAB):
            n = 2 + int(torch.randint(0, 2, (1,), generator=g))
            picks = torch.randint(0, 8, (n,), generator=g)
            self.pieces[t] = "".join(letters[int(i)] for i in picks)

    def decode(self, ids, skip_special_tokens=True) -> str:
        return "".join(self.pieces[int(t)] for t in ids)


TOK = PieceTokenizer()


def independent_cut(row: list[int], stop_strings, stop_ids=()) -> int:
    """Tokens kept by a row of full-length output: up to and including the token at which the
    decoded text first holds a stop string, or the first stop token."""
    for j in range(len(row)):
        if row[j] in stop_ids:
            return j + 1
        text = "".join(TOK.pieces[t] for t in row[: j + 1])
        if any(s in text for s in stop_strings):
            return j + 1
    return len(row)


@pytest.fixture(scope="module")
def model() -> DecoderLM:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
        attention_variant="iha_global",
    )
    return DecoderLM(cfg).eval()


PROMPTS = torch.tensor([[PAD, PAD, 5, 9, 13], [7, 3, 22, 8, 30], [PAD, 11, 12, 17, 4]])


def _mask() -> torch.Tensor:
    m = torch.ones_like(PROMPTS)
    m[0, :2] = 0
    m[2, :1] = 0
    return m


def _straddling_stop(row: list[int], k: int) -> str:
    """A stop string made of the last letter of token k and the first of token k + 1."""
    return TOK.pieces[row[k]][-1] + TOK.pieces[row[k + 1]][0]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_rows_stop_at_split_stop_strings_like_full_generation_cut_afterwards(model, temperature):
    n = 24
    full = generate(model, PROMPTS, _mask(), max_new_tokens=n, temperature=temperature, seed=3)
    assert full.shape == (3, n)
    rows = full.tolist()
    # stop strings that straddle a token boundary somewhere inside rows 0 and 2
    stops = [_straddling_stop(rows[0], 6), _straddling_stop(rows[2], 9)]
    cuts = [independent_cut(r, stops) for r in rows]
    got = generate(
        model,
        PROMPTS,
        _mask(),
        max_new_tokens=n,
        temperature=temperature,
        seed=3,
        stop_strings=stops,
        tokenizer=TOK,
    )
    assert got.shape[1] == max(cuts)  # the batch ran until its last row stopped
    for r, (row, cut) in enumerate(zip(got.tolist(), cuts)):
        assert row[:cut] == rows[r][:cut]
        assert row[cut:] == [PAD] * (got.shape[1] - cut)
        assert find_stop(TOK.decode(row[:cut]), stops) != -1 or cut == n
        assert find_stop(TOK.decode(row[: cut - 1]), stops) == -1  # not one token earlier


def test_batch_stops_early_when_every_row_stopped(model):
    n = 40
    full = generate(model, PROMPTS, _mask(), max_new_tokens=n).tolist()
    # each row's own straddling string at an early position: all rows stop before n
    stops = [_straddling_stop(row, 2) for row in full]
    cuts = [independent_cut(r, stops) for r in full]
    assert max(cuts) < n
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = generate(model, PROMPTS, _mask(), max_new_tokens=n, stop_strings=stops, tokenizer=TOK)
    finally:
        handle.remove()
    assert got.shape[1] == max(cuts)
    assert len(calls) == max(cuts)  # the prefill and one forward per further token, no more
    for row, ref, cut in zip(got.tolist(), full, cuts):
        assert row[:cut] == ref[:cut]


def test_eos_and_stop_strings_together_and_pad_fill(model):
    n = 20
    full = generate(model, PROMPTS, _mask(), max_new_tokens=n).tolist()
    eos_like = full[1][4]  # row 1 emits this token at step 4: treat it as the stop token
    stops = [_straddling_stop(full[0], 3)]
    cuts = [independent_cut(r, stops, (eos_like,)) for r in full]
    got = generate(
        model,
        PROMPTS,
        _mask(),
        max_new_tokens=n,
        stop_token_ids=[eos_like],
        stop_strings=stops,
        tokenizer=TOK,
        pad_token_id=PAD,
    ).tolist()
    for r, (row, ref, cut) in enumerate(zip(got, full, cuts)):
        assert row[:cut] == ref[:cut]
        ended_by_token = ref[cut - 1] == eos_like
        fill = eos_like if ended_by_token else PAD
        assert all(t == fill for t in row[cut:]), r


def test_stop_string_arguments_are_checked(model):
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, PROMPTS, _mask(), max_new_tokens=2, stop_strings=["ab"])
    with pytest.raises(ValueError, match="stop_strings"):
        generate(model, PROMPTS, _mask(), max_new_tokens=2, stop_strings="ab", tokenizer=TOK)
    with pytest.raises(ValueError, match="stop_strings"):
        generate(model, PROMPTS, _mask(), max_new_tokens=2, stop_strings=[""], tokenizer=TOK)


def test_tracker_finds_a_string_split_inside_a_multibyte_character():
    tok = ByteTokenizer()
    ids = list("ab\u00e9!cd".encode())  # é is two bytes: the stop string spans three tokens
    tracker = StopStringTracker(1, ["\u00e9!"], tok.decode)
    hits = [bool(tracker.update([0], [t])) for t in ids]
    assert hits.index(True) == 4  # the byte of "!" completes it, nothing earlier
    tracker = StopStringTracker(2, ["xyz", "cd"], tok.decode)
    seen = [tracker.update([0, 1], [a, b]) for a, b in zip(b"abcd", b"xyzq")]
    assert seen == [[], [], [1], [0, 1]]  # the caller drops finished rows


def test_find_stop_is_the_earliest_of_all_strings():
    assert find_stop("abcdef", ["ef", "cd"]) == 2
    assert find_stop("abc", ["x"]) == -1


def test_tracker_finds_a_long_string_fed_one_byte_at_a_time():
    tok = ByteTokenizer()
    stop = "return value\n"
    tracker = StopStringTracker(1, [stop], tok.decode)
    text = "x = 1\n    return value\n    y"
    hits = [bool(tracker.update([0], [b])) for b in text.encode()]
    assert hits.index(True) == text.index(stop) + len(stop) - 1


def test_runner_model_generator_stops_rows_at_stop_strings(model):
    from iha.eval.runner import ModelGenerator, SamplingParams

    prompts = [[5, 9, 13], [7, 3, 22, 8, 30], [11, 12, 17, 4]]
    n = 24
    base = SamplingParams(max_new_tokens=n, temperature=0.0, seed=None, stop_token_ids=(EOS,))
    full = ModelGenerator(model, pad_token_id=PAD)(prompts, base)
    assert all(len(r) == n for r in full)
    stops = (
        _straddling_stop(full[0], 5),
        _straddling_stop(full[1], 3),
        _straddling_stop(full[2], 7),
    )
    cuts = [independent_cut(r, stops, (EOS,)) for r in full]
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = ModelGenerator(model, pad_token_id=PAD, tokenizer=TOK)(
            prompts, SamplingParams(**{**base.__dict__, "stop_strings": stops})
        )
    finally:
        handle.remove()
    assert got == [r[:c] for r, c in zip(full, cuts)]
    assert len(calls) == max(cuts)
