import random
import re

import pytest

from iha.eval import ruler
from iha.eval.ruler import (
    NIAH,
    format_table,
    generate_samples,
    load_essay_sentences,
    score_samples,
    string_match_all,
)
from iha.tokenizers import ByteTokenizer

TOKENS_TO_GENERATE = 32


class WhitespaceEncoder:
    """A word-level stand-in tokenizer, independent of the byte tokenizer."""

    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]


def _needles(sample):
    kind = NIAH[sample.task].type_needle_v
    pattern = rf"One of the special magic {kind} for (\S+) is: (\S+?)\.(?:\s|$)"
    return re.findall(pattern, sample.input)


def _max_unit_tokens(tok, task):
    """The largest haystack unit (essay sentence or needle) in tokens, plus a separator."""
    if NIAH[task].haystack == "essay":
        return max(len(tok.encode(s)) for s in load_essay_sentences()) + 1
    needle = ruler.NEEDLE.format(type_needle_v="uuids", key="x" * 36, value="y" * 36)
    return len(tok.encode(needle)) + 1


@pytest.fixture(scope="module")
def byte_samples():
    tok = ByteTokenizer()
    return {
        task: generate_samples(
            task, tok, lengths=[1024, 2048], num_samples=3, tokens_to_generate=TOKENS_TO_GENERATE
        )
        for task in NIAH
    }


@pytest.mark.parametrize("task", list(NIAH))
def test_lengths_within_tolerance_of_target(byte_samples, task):
    tok = ByteTokenizer()
    slack = _max_unit_tokens(tok, task)
    for s in byte_samples[task]:
        n = len(tok.encode(s.input))  # recount independently of the generator
        assert n == s.n_tokens
        budget = s.length - TOKENS_TO_GENERATE - 1
        assert budget - slack < n <= budget, (s.length, n, slack)


@pytest.mark.parametrize("task", list(NIAH))
def test_sizing_follows_the_given_tokenizer(task):
    enc = WhitespaceEncoder()
    samples = generate_samples(task, enc, lengths=[300, 600], num_samples=2, tokens_to_generate=20)
    for s in samples:
        n = len(s.input.split())
        assert s.length - 20 - 1 - 40 < n <= s.length - 20 - 1
        assert len(ByteTokenizer().encode(s.input)) > 2 * n  # really counted in words


@pytest.mark.parametrize("task", list(NIAH))
def test_every_needle_present_once_and_answer_recoverable(byte_samples, task):
    cfg = NIAH[task]
    for s in byte_samples[task]:
        found = _needles(s)
        keys = [k for k, _ in found]
        for key in s.keys:
            assert keys.count(key) == cfg.num_needle_v, (key, s.task)
        # the answer is recoverable: the needles of the queried keys hold the reference values
        queried = s.keys[: cfg.num_needle_q]
        assert sorted(s.outputs) == sorted(v for k, v in found if k in queried)
        assert len(s.outputs) == cfg.num_needle_q * cfg.num_needle_v
        query = (
            queried[0] if len(queried) == 1 else ", ".join(queried[:-1]) + ", and " + queried[-1]
        )
        assert s.query == query
        # RULER's template, in the singular when one value is asked for
        if len(s.outputs) == 1:
            kind = cfg.type_needle_v[:-1]
            assert s.input.startswith(f"A special magic {kind} is hidden within the following")
            question = (
                f"What is the special magic {kind} for {query} mentioned in the provided text?"
            )
            prefix = f" The special magic {kind} for {query} mentioned in the provided text is"
        else:
            kind = cfg.type_needle_v
            assert s.input.startswith(f"Some special magic {kind} are hidden within the following")
            question = (
                f"What are all the special magic {kind} for {query} mentioned in the provided text?"
            )
            prefix = f" The special magic {kind} for {query} mentioned in the provided text are"
        assert s.input.endswith("\n" + question + prefix)
        if cfg.haystack == "needle":
            assert len(found) > 3  # a haystack of distractor needles
            assert sum(v == s.outputs[0] for _, v in found) == 1
        else:
            assert len(found) == len(s.keys) * cfg.num_needle_v
        if cfg.haystack == "noise":
            lines = s.input.split("\n")[1:-1]
            assert {line for line in lines if not line.startswith("One of")} == {ruler.NOISE}


def test_key_and_value_formats(byte_samples):
    uuid_re = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    for task, samples in byte_samples.items():
        cfg = NIAH[task]
        for s in samples:
            for k, v in _needles(s):
                if cfg.type_needle_k == "words":
                    assert re.fullmatch(r"[a-z]+-[a-z]+", k)
                else:
                    assert re.fullmatch(uuid_re, k)
                if cfg.type_needle_v == "numbers":
                    assert re.fullmatch(r"[1-9]\d{6}", v)
                else:
                    assert re.fullmatch(uuid_re, v)


def test_multikey_1_needles_spread_over_depth_strata(byte_samples):
    for s in byte_samples["niah_multikey_1"]:
        strata = sorted(int(d * 4) for d in s.depths)
        assert strata == [0, 1, 2, 3]
        # needles appear in the text in the order of their depths
        pos = {k: s.input.index(f"for {k} is:") for k in s.keys}
        by_depth = [k for _, k in sorted(zip(s.depths, s.keys))]
        assert sorted(s.keys, key=pos.get) == by_depth


def test_needle_depth_is_realised_in_long_context():
    s = generate_samples("niah_multikey_2", ByteTokenizer(), lengths=[8192], num_samples=4)
    for x in s:
        where = x.input.index(f"for {x.query} is:") / len(x.input)
        assert abs(where - x.depths[0]) < 0.08


def test_generation_is_seeded():
    tok = ByteTokenizer()
    kwargs = dict(lengths=[1024], num_samples=2, tokens_to_generate=TOKENS_TO_GENERATE)
    a = generate_samples("niah_multikey_3", tok, seed=1, **kwargs)
    b = generate_samples("niah_multikey_3", tok, seed=1, **kwargs)
    c = generate_samples("niah_multikey_3", tok, seed=2, **kwargs)
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    assert a[0].input != c[0].input
    assert a[0].input != a[1].input


def test_essay_haystack_from_local_directory(tmp_path):
    (tmp_path / "a.txt").write_text("Zebras graze on the quiet plain. " * 3)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("Kettles whistle when water boils!")
    sentences = load_essay_sentences(tmp_path)
    assert sentences[-1] == "Kettles whistle when water boils!"
    (s,) = generate_samples(
        "niah_multikey_1",
        ByteTokenizer(),
        lengths=[2048],
        num_samples=1,
        tokens_to_generate=TOKENS_TO_GENERATE,
        haystack_dir=tmp_path,
    )
    assert "Zebras graze on the quiet plain." in s.input
    assert "river" not in s.input  # the built-in essay is not used
    with pytest.raises(ValueError, match="haystack_dir"):
        load_essay_sentences(tmp_path / "missing")


def test_bad_arguments():
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match="too short"):
        generate_samples("niah_multikey_1", tok, lengths=[256], num_samples=1)
    with pytest.raises(ValueError, match="task"):
        generate_samples("niah_single_4", tok, lengths=[1024])
    with pytest.raises(ValueError, match="lengths"):
        generate_samples("niah_multikey_2", tok, lengths=[0])


def test_largest_fitting_matches_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        steps = [rng.randint(0, 5) for _ in range(60)]
        costs = [sum(steps[: i + 1]) for i in range(60)]  # nondecreasing

        def f(n, costs=costs):
            return costs[min(n, 59)] + (n - 59 if n > 59 else 0) * 3

        budget = rng.randint(0, 200)
        brute = max((n for n in range(400) if f(n) <= budget), default=-1)
        assert ruler._largest_fitting(f, budget, rng.randint(0, 80)) == brute


def test_string_match_all():
    assert string_match_all("The numbers are 1234567 and 7654321.", ["1234567", "7654321"]) == 1.0
    assert string_match_all("only 1234567", ["1234567", "7654321"]) == 0.5
    assert string_match_all("nothing here", ["1234567"]) == 0.0
    assert string_match_all("ABC-def", ["abc-DEF"]) == 1.0  # case-insensitive
    with pytest.raises(ValueError, match="references"):
        string_match_all("x", [])


def test_scoring_perfect_and_wrong_predictions_and_table(byte_samples):
    samples = [s for task in NIAH for s in byte_samples[task]]
    perfect = score_samples(samples, [" " + ", ".join(s.outputs) + "." for s in samples])
    assert all(v == 1.0 for by_len in perfect.values() for v in by_len.values())
    wrong = score_samples(samples, ["I cannot find it." for _ in samples])
    assert all(v == 0.0 for by_len in wrong.values() for v in by_len.values())
    # half right at 1024, all right at 2048
    mk1 = byte_samples["niah_multikey_1"]
    mixed = score_samples(
        mk1[:3] * 2 + mk1[3:6],
        ["x"] * 3 + [s.outputs[0] for s in mk1[:3]] + [s.outputs[0] for s in mk1[3:6]],
    )
    assert mixed["niah_multikey_1"] == {1024: 0.5, 2048: 1.0}
    table = format_table(mixed)
    lines = table.splitlines()
    assert lines[0] == "| task | 1k | 2k | avg |"
    assert lines[2] == "| niah_multikey_1 | 50.0 | 100.0 | 75.0 |"
    assert len(lines) == 3  # one task: no average row
    with pytest.raises(ValueError, match="differ"):
        score_samples(samples, [])
