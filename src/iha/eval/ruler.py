"""RULER (Hsieh et al. 2024, arXiv:2404.06654): the 13 tasks of its standard suite.

``TASKS`` names them in RULER's order. Templates, answer prefixes, task parameters, generation
budgets and scoring follow RULER's ``synthetic.yaml`` and its data and evaluation scripts:

==================  ============================================================  ============
task                what the prompt holds                                        metric
==================  ============================================================  ============
niah_single_1       noise haystack, 1 needle (word key, 7-digit value)            match_all
niah_single_2       essay haystack, 1 needle (word key, 7-digit value)            match_all
niah_single_3       essay haystack, 1 needle (word key, uuid value)               match_all
niah_multikey_1     essay haystack, 4 needles with distinct keys, 1 queried       match_all
niah_multikey_2     a haystack of distractor needles (word keys, 7-digit values)  match_all
niah_multikey_3     as multikey_2 with uuid keys and uuid values                  match_all
niah_multivalue     essay haystack, 4 needles of one key: all 4 values wanted     match_all
niah_multiquery     essay haystack, 4 keys, all 4 queried                         match_all
vt                  noise lines hiding a 4-hop chain ``VAR B = VAR A``; one-shot  match_all
cwe                 numbered word list, 10 words 30x, the rest 3x; one-shot       match_all
fwe                 coded words with Zipf (alpha 2) counts: the 3 most frequent   match_all
qa_1                SQuAD v2 paragraphs (gold + distractors), one question        match_part
qa_2                HotpotQA paragraphs (gold + distractors), one question        match_part
==================  ============================================================  ============

``match_all`` (:func:`string_match_all`) is the fraction of the reference strings found in the
prediction, ``match_part`` (:func:`string_match_part`) is 1 when any reference is found; both are
case-insensitive and read the prediction after RULER's post-processing (stripped, control
characters turned into newlines). A task's score is the mean over its samples, in [0, 1].

Sizing. Every prompt is sized in tokens of the given tokenizer (anything with ``encode``): for a
target ``length`` it holds the largest haystack (essay sentences, noise lines, distractor
needles, words or documents) such that
``len(tokenizer.encode(prompt)) <= length - tokens_to_generate - 1`` (one token is kept for a BOS
the runner may add), so prompt + generation never exceed ``length``. ``tokens_to_generate``
defaults to RULER's budget of the task (niah 128, vt 30, cwe 120, fwe 50, qa 32). The prompt
ends with the task's answer prefix. Everything is seeded.

Where this implementation chooses (RULER fixes no such detail, or relies on files we do not
ship): needles sit at stratified depths (with k needles, needle i at a uniformly random depth in
[i/k, (i+1)/k)); the essay haystack is a built-in essay or any directory of ``.txt`` files
(RULER uses Paul Graham's essays); keys are "adjective-noun" from a built-in list and the
common-words pool is a built-in list of 331 English words followed by pseudo-words made of
consonant-vowel syllables when a long context needs more (RULER uses the ``wonderwords`` lists
and a large English word list); vt's one-shot example takes at most ``min(500, length // 4)``
tokens (RULER: 500) so tiny test lengths work. RULER's rules for lengths below 4096 (cwe: 6x /
1x repeats and a 20-word example instead of 40) are kept.
"""

from __future__ import annotations

import random
import re
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from iha.eval._ruler_text import ADJECTIVES, ESSAY, NOISE, NOUNS, VERBS
from iha.eval.ruler_qa import QAData
from iha.validate import check_int

TASKS: tuple[str, ...] = (
    "niah_single_1",
    "niah_single_2",
    "niah_single_3",
    "niah_multikey_1",
    "niah_multikey_2",
    "niah_multikey_3",
    "niah_multivalue",
    "niah_multiquery",
    "vt",
    "cwe",
    "fwe",
    "qa_1",
    "qa_2",
)

DEFAULT_LENGTHS = (4096, 8192, 16384)
STANDARD_LENGTHS = (4096, 8192, 16384, 32768, 65536, 131072)

# ---------------------------------------------------------------- RULER's templates

TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to "
    "memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."

VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
    "{context}\nQuestion: Find all variables that are assigned the value {query} in the text above."
)
VT_ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} "
    "variables are assigned the value {query}, they are: "
)
CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\n"
    "Question: What are the 10 most common words in the above list?"
)
CWE_ANSWER_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three "
    "most frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. "
    "Please ignore the dots '....'. What are the three most frequently appeared words in the "
    "above coded text?"
)
FWE_ANSWER_PREFIX = (
    " Answer: According to the coded text above, the three most frequently appeared words are:"
)
QA_TEMPLATE = (
    "Answer the question based on the given documents. Only give me the answer and do not "
    "output any other words.\n\nThe following are given documents.\n\n{context}\n\n"
    "Answer the question based on the given documents. Only give me the answer and do not "
    "output any other words.\n\nQuestion: {query}"
)
QA_ANSWER_PREFIX = " Answer:"
QA_DOCUMENT = "Document {i}:\n{document}"

# RULER's generation budget per task family, and its metric per family
TOKENS_TO_GENERATE = {"niah": 128, "vt": 30, "cwe": 120, "fwe": 50, "qa": 32}
METRICS = {
    "niah": "string_match_all",
    "vt": "string_match_all",
    "cwe": "string_match_all",
    "fwe": "string_match_all",
    "qa": "string_match_part",
}

# vt: one chain of 4 hops; cwe: 10 common words 30x, the others 3x; fwe: Zipf alpha 2
VT_NUM_CHAINS, VT_NUM_HOPS = 1, 4
CWE_NUM_COMMON, CWE_FREQ_COMMON, CWE_FREQ_UNCOMMON = 10, 30, 3
FWE_ALPHA, FWE_WORD_LENGTH = 2.0, 6


@dataclass(frozen=True)
class TaskConfig:
    """A RULER NIAH configuration: haystack kind, key/value kinds and needle counts.

    ``num_needle_k`` keys each get ``num_needle_v`` values (one needle per value);
    ``num_needle_q`` of the keys are queried and all their values are the answer.
    """

    haystack: str  # "noise" | "essay" | "needle"
    type_needle_k: str  # "words" | "uuids"
    type_needle_v: str  # "numbers" | "uuids"
    num_needle_k: int
    num_needle_v: int = 1
    num_needle_q: int = 1


NIAH: dict[str, TaskConfig] = {
    "niah_single_1": TaskConfig("noise", "words", "numbers", 1),
    "niah_single_2": TaskConfig("essay", "words", "numbers", 1),
    "niah_single_3": TaskConfig("essay", "words", "uuids", 1),
    "niah_multikey_1": TaskConfig("essay", "words", "numbers", 4),
    "niah_multikey_2": TaskConfig("needle", "words", "numbers", 1),
    "niah_multikey_3": TaskConfig("needle", "uuids", "uuids", 1),
    "niah_multivalue": TaskConfig("essay", "words", "numbers", 1, num_needle_v=4),
    "niah_multiquery": TaskConfig("essay", "words", "numbers", 4, num_needle_q=4),
}


def task_family(task: str) -> str:
    """``"niah"``, ``"vt"``, ``"cwe"``, ``"fwe"`` or ``"qa"``; ValueError for an unknown task."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")
    if task in NIAH:
        return "niah"
    return "qa" if task.startswith("qa_") else task


def resolve_tasks(names: Sequence[str]) -> list[str]:
    """Task names with ``"all"`` expanded to :data:`TASKS`, duplicates dropped, order kept."""
    out: list[str] = []
    for name in names:
        for task in TASKS if name == "all" else [name]:
            task_family(task)
            if task not in out:
                out.append(task)
    if not out:
        raise ValueError("tasks must name at least one task (or 'all')")
    return out


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass
class RulerSample:
    """One prompt: ``input`` ends with the answer prefix; ``outputs`` are the reference strings.

    ``n_tokens`` is the prompt length in tokens (no BOS) and ``max_new_tokens`` the generation
    budget it was sized for. For NIAH tasks ``query`` is the queried key(s), ``keys`` every
    needle key (the queried ones first) and ``depths`` the depth in [0, 1] of every needle (in
    the order of ``keys``, then of the key's values); for vt ``query`` is the chain's value, for
    qa the question.
    """

    task: str
    length: int
    index: int
    input: str
    outputs: list[str]
    n_tokens: int
    query: str
    keys: list[str] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    max_new_tokens: int = 128

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- haystack and needles


def _split_sentences(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text).strip()
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def load_essay_sentences(haystack_dir: str | Path | None = None) -> list[str]:
    """Sentences of every ``*.txt`` file under ``haystack_dir`` (sorted by path, recursive), or
    of the built-in essay when ``haystack_dir`` is None."""
    if haystack_dir is None:
        return _split_sentences(ESSAY)
    root = Path(haystack_dir)
    if not root.is_dir():
        raise ValueError(f"haystack_dir={str(haystack_dir)!r} is not a directory")
    files = sorted(root.rglob("*.txt"))
    if not files:
        raise ValueError(f"haystack_dir={str(haystack_dir)!r} holds no .txt files")
    sentences = _split_sentences(" ".join(f.read_text(encoding="utf-8") for f in files))
    if not sentences:
        raise ValueError(f"haystack_dir={str(haystack_dir)!r}: the .txt files hold no text")
    return sentences


def _random_key(kind: str, rng: random.Random) -> str:
    if kind == "words":
        return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _random_value(kind: str, rng: random.Random) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _distinct_keys(
    kind: str, n: int, rng: random.Random, forbid: set[str], avoid: set[str] | None = None
) -> list[str]:
    """n keys, never in ``forbid``; distinct from each other and from ``avoid`` as long as 100
    draws per key find one (a nearly exhausted word-key space then allows repeats)."""
    avoid = set() if avoid is None else avoid
    keys: list[str] = []
    for _ in range(n):
        for _attempt in range(100):
            k = _random_key(kind, rng)
            if k not in forbid and k not in avoid and k not in keys:
                break
        while k in forbid:
            k = _random_key(kind, rng)
        keys.append(k)
    return keys


class _Distractors:
    """A lazily grown, deterministic list of distractor needles (prefix-stable): keys never
    equal a real key, values never equal a real value."""

    def __init__(
        self, cfg: TaskConfig, rng: random.Random, real_keys: set[str], real_values: set[str]
    ) -> None:
        self.cfg, self.rng = cfg, rng
        self.real_keys, self.real_values = real_keys, real_values
        self.used_keys: set[str] = set()
        self.items: list[str] = []

    def take(self, n: int) -> list[str]:
        while len(self.items) < n:
            (key,) = _distinct_keys(
                self.cfg.type_needle_k, 1, self.rng, self.real_keys, self.used_keys
            )
            self.used_keys.add(key)
            value = _random_value(self.cfg.type_needle_v, self.rng)
            while value in self.real_values:
                value = _random_value(self.cfg.type_needle_v, self.rng)
            self.items.append(
                NEEDLE.format(type_needle_v=self.cfg.type_needle_v, key=key, value=value)
            )
        return self.items[:n]


def _largest_fitting(n_tokens: Callable[[int], int], budget: int, guess: int) -> int:
    """Largest n >= 0 with n_tokens(n) <= budget (n_tokens nondecreasing), galloping from guess.

    Returns -1 when even n = 0 exceeds the budget. When n_tokens is not monotone the result
    still fits (every returned n was measured), it may just not be the largest.
    """
    if n_tokens(0) > budget:
        return -1
    lo = max(0, guess)
    if n_tokens(lo) > budget:  # gallop down to a fitting lo
        hi, step = lo, 1
        lo = max(0, hi - step)
        while n_tokens(lo) > budget:
            hi, step = lo, step * 2
            lo = max(0, hi - step)
    else:  # gallop up to a non-fitting hi
        step = max(1, lo // 8)
        hi = lo + step
        while n_tokens(hi) <= budget:
            lo, step = hi, step * 2
            hi = lo + step
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        if n_tokens(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def _stratified_depths(k: int, rng: random.Random) -> list[float]:
    return [(i + rng.random()) / k for i in range(k)]


def _insert(units: list[str], needles: Sequence[str], depths: Sequence[float]) -> list[str]:
    """Insert needles into units, needle i before unit round(depths[i] * len(units))."""
    out = list(units)
    positions = [round(d * len(units)) for d in depths]
    for pos, needle in sorted(zip(positions, needles), key=lambda t: t[0], reverse=True):
        out.insert(pos, needle)
    return out


@dataclass
class _Built:
    """What a task builder makes for a haystack size: the prompt and what to score it by."""

    text: str
    outputs: list[str]
    query: str = ""
    keys: list[str] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)


def _singular(template: str) -> str:
    """RULER's rewording of the NIAH template when exactly one value is asked for."""
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        template = template.replace(old, new)
    return template


def _niah_builder(
    task: str, rng: random.Random, sentences: Sequence[str] | None
) -> Callable[[int], _Built]:
    cfg = NIAH[task]
    num_keys = max(cfg.num_needle_k, cfg.num_needle_q)
    keys = _distinct_keys(cfg.type_needle_k, num_keys, rng, set())
    values: list[list[str]] = []
    for _ in keys:
        vals: list[str] = []
        while len(vals) < cfg.num_needle_v:
            v = _random_value(cfg.type_needle_v, rng)
            if v not in vals:
                vals.append(v)
        values.append(vals)
    needles = [
        NEEDLE.format(type_needle_v=cfg.type_needle_v, key=k, value=v)
        for k, vals in zip(keys, values)
        for v in vals
    ]
    queried = sorted(rng.sample(range(num_keys), cfg.num_needle_q))
    depths = _stratified_depths(len(needles), rng)
    rng.shuffle(depths)  # which needle sits where is random too
    query_keys = [keys[i] for i in queried]
    query = (
        query_keys[0]
        if len(query_keys) == 1
        else (", ".join(query_keys[:-1]) + ", and " + query_keys[-1])
    )
    template = TEMPLATE + ANSWER_PREFIX
    type_needle_v = cfg.type_needle_v
    if cfg.num_needle_q * cfg.num_needle_v == 1:
        template, type_needle_v = _singular(template), type_needle_v[:-1]
    head, tail = template.split("{context}")
    head = head.format(type_needle_v=type_needle_v)
    tail = tail.format(type_needle_v=type_needle_v, query=query)

    if cfg.haystack == "essay":
        pool = list(sentences) if sentences is not None else load_essay_sentences()
        if not pool:
            raise ValueError("sentences must not be empty")

        def units(n: int) -> list[str]:
            return [pool[i % len(pool)] for i in range(n)]

        sep = " "
    elif cfg.haystack == "noise":

        def units(n: int) -> list[str]:
            return [NOISE] * n

        sep = "\n"
    else:
        real_values = {v for vals in values for v in vals}
        distractors = _Distractors(cfg, random.Random(rng.getrandbits(64)), set(keys), real_values)
        units = distractors.take
        sep = "\n"

    # queried keys first, then the others; depths follow the needles (key-major)
    order = queried + [i for i in range(num_keys) if i not in queried]
    v = cfg.num_needle_v
    ordered_depths = [depths[i * v + j] for i in order for j in range(v)]

    def build(n: int) -> _Built:
        return _Built(
            text=head + sep.join(_insert(units(n), needles, depths)) + tail,
            outputs=[val for i in queried for val in values[i]],
            query=query,
            keys=[keys[i] for i in order],
            depths=ordered_depths,
        )

    return build


# ---------------------------------------------------------------- variable tracking


def _vt_names(rng: random.Random, count: int, letters: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=letters))
        if name not in names:
            names.append(name)
    return names


def _vt_text(names: Sequence[str], value: str, noise_lines: int, rng: random.Random) -> str:
    """RULER's vt prompt (template + answer prefix) with the chain hidden among noise lines."""
    chain = [f"VAR {names[0]} = {value}"] + [
        f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(len(names) - 1)
    ]
    lines = [NOISE] * noise_lines
    if noise_lines >= len(chain):
        positions = sorted(rng.sample(range(noise_lines), len(chain)))
    else:  # too few lines to keep the chain apart
        positions = sorted(rng.choices(range(noise_lines + 1), k=len(chain)))
    for j, (pos, line) in enumerate(zip(positions, chain)):
        lines.insert(pos + j, line)
    context = "\n".join(lines)
    return (VT_TEMPLATE + VT_ANSWER_PREFIX).format(context=context, query=value, num_v=len(names))


def _vt_builder(
    key: str, rng: random.Random, tokenizer: Encoder, length: int
) -> Callable[[int], _Built]:
    hops = VT_NUM_HOPS
    # the one-shot example: 3-letter names, as large as fits in min(500, length // 4) tokens
    ex_names = _vt_names(rng, hops + 1, 3)
    ex_value = str(rng.randint(10000, 99999))
    ex_key = f"{key}|example"

    def example(n: int) -> str:
        text = _vt_text(ex_names, ex_value, n, random.Random(f"{ex_key}|{n}"))
        return text + " " + " ".join(ex_names) + "\n"

    ex_budget = min(500, length // 4)
    ex_n = max(0, _largest_fitting(lambda n: len(tokenizer.encode(example(n))), ex_budget, 0))
    shot = example(ex_n)
    names = _vt_names(rng, hops + 1, 5)
    value = str(rng.randint(10000, 99999))

    def build(n: int) -> _Built:
        text = shot + "\n" + _vt_text(names, value, n, random.Random(f"{key}|{n}"))
        return _Built(text=text, outputs=list(names), query=value)

    return build


# ---------------------------------------------------------------- common words extraction


_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"


class _WordStream:
    """Distinct words in a seeded order: the built-in English words first (shuffled), then
    pseudo-words of 3 to 5 consonant-vowel syllables, never repeating, never in ``exclude``."""

    def __init__(self, rng: random.Random, exclude: set[str]) -> None:
        real = [w for w in (*ADJECTIVES, *NOUNS, *VERBS) if w not in exclude]
        rng.shuffle(real)
        self.rng, self.words, self.seen = rng, real, set(real) | exclude

    def take(self, n: int) -> list[str]:
        while len(self.words) < n:
            syllables = self.rng.randint(3, 5)
            word = "".join(
                self.rng.choice(_CONSONANTS) + self.rng.choice(_VOWELS) for _ in range(syllables)
            )
            if word not in self.seen:
                self.seen.add(word)
                self.words.append(word)
        return self.words[:n]


def _cwe_list(words: Sequence[str], freq_common: int, freq_uncommon: int, seed: str) -> str:
    common, uncommon = words[:CWE_NUM_COMMON], words[CWE_NUM_COMMON:]
    entries = list(common) * freq_common + list(uncommon) * freq_uncommon
    random.Random(seed).shuffle(entries)
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(entries))


def _numbered(words: Sequence[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


def _cwe_builder(key: str, rng: random.Random, length: int) -> Callable[[int], _Built]:
    if length < 4096:  # RULER's settings for short contexts
        ex_words, ex_freq, freq = 20, (3, 1), (6, 1)
    else:
        ex_words, ex_freq, freq = 40, (10, 3), (CWE_FREQ_COMMON, CWE_FREQ_UNCOMMON)
    real = [*ADJECTIVES, *NOUNS, *VERBS]
    example_words = rng.sample(real, ex_words)
    shot = (
        (CWE_TEMPLATE + CWE_ANSWER_PREFIX).format(
            context=_cwe_list(example_words, *ex_freq, f"{key}|example")
        )
        + " "
        + _numbered(example_words[:CWE_NUM_COMMON])
    )
    stream = _WordStream(random.Random(rng.getrandbits(64)), set(example_words))

    def build(n: int) -> _Built:
        words = stream.take(CWE_NUM_COMMON + n)
        context = _cwe_list(words, *freq, f"{key}|{n}")
        text = shot + "\n" + (CWE_TEMPLATE + CWE_ANSWER_PREFIX).format(context=context)
        return _Built(text=text, outputs=list(words[:CWE_NUM_COMMON]))

    return build


# ---------------------------------------------------------------- frequent words extraction


def _zeta(alpha: float) -> float:
    """Riemann zeta(alpha) for alpha > 1: 100 terms plus the Euler-Maclaurin tail."""
    n = 100
    head = sum(k**-alpha for k in range(1, n))
    return head + n ** (1 - alpha) / (alpha - 1) + n**-alpha / 2 + alpha * n ** (-alpha - 1) / 12


def fwe_counts(num_words: int, vocab_size: int, alpha: float = FWE_ALPHA) -> list[int]:
    """RULER's fwe word counts: the word of rank k appears floor(num_words k^-alpha / zeta)."""
    z = _zeta(alpha)
    return [int(num_words * k**-alpha / z) for k in range(1, vocab_size + 1)]


def _fwe_builder(key: str, rng: random.Random, budget: int) -> Callable[[int], _Built]:
    vocab_size = max(5, budget // 50)
    vocab: set[str] = set()
    while len(vocab) < vocab_size:
        vocab.add("".join(rng.choices(string.ascii_lowercase, k=FWE_WORD_LENGTH)))
    ranked = sorted(vocab)
    rng.shuffle(ranked)
    ranked[0] = "..."  # the most frequent "word" is noise, which the question says to ignore

    def build(n: int) -> _Built:
        words = [w for w, c in zip(ranked, fwe_counts(n, vocab_size)) for _ in range(c)]
        random.Random(f"{key}|shuffle").shuffle(words)
        text = (FWE_TEMPLATE + FWE_ANSWER_PREFIX).format(context=" ".join(words))
        return _Built(text=text, outputs=ranked[1:4])

    return build


# ---------------------------------------------------------------- question answering


def _qa_builder(key: str, rng: random.Random, index: int, data: QAData) -> Callable[[int], _Built]:
    item = data.items[index % len(data.items)]
    gold = list(item.gold)
    related = [d for d in item.related if d not in gold]
    rng.shuffle(related)
    taken = set(gold) | set(related)
    others = [d for d in range(len(data.docs)) if d not in taken]
    rng.shuffle(others)
    distractors = related + others or gold  # same-article paragraphs first; cycled when short
    order_rng_seed = f"{key}|order"

    def build(n: int) -> _Built:
        docs = gold + [distractors[j % len(distractors)] for j in range(n)]
        random.Random(order_rng_seed).shuffle(docs)
        context = "\n\n".join(
            QA_DOCUMENT.format(i=i + 1, document=data.docs[d]) for i, d in enumerate(docs)
        )
        text = (QA_TEMPLATE + QA_ANSWER_PREFIX).format(context=context, query=item.question)
        return _Built(text=text, outputs=list(item.answers), query=item.question)

    return build


# ---------------------------------------------------------------- generation


def generate_sample(
    task: str,
    tokenizer: Encoder,
    length: int,
    index: int = 0,
    seed: int = 0,
    tokens_to_generate: int | None = None,
    sentences: Sequence[str] | None = None,
    size_hint: int = 0,
    qa_data: QAData | None = None,
) -> tuple[RulerSample, int]:
    """One sample of ``task`` sized to ``length`` tokens; also returns the haystack size used
    (a good ``size_hint`` for the next sample of the same length).

    ``sentences`` is the essay haystack (default: the built-in essay); ``qa_data`` the dataset
    of qa_1 / qa_2 (required for them: :func:`iha.eval.ruler_qa.load_qa_data`).
    ``tokens_to_generate`` defaults to RULER's budget of the task.
    """
    family = task_family(task)
    ttg = TOKENS_TO_GENERATE[family] if tokens_to_generate is None else tokens_to_generate
    budget = length - ttg - 1
    key = f"{task}|{length}|{seed}|{index}"
    rng = random.Random(key)
    if family == "niah":
        build = _niah_builder(task, rng, sentences)
    elif family == "vt":
        build = _vt_builder(key, rng, tokenizer, length)
    elif family == "cwe":
        build = _cwe_builder(key, rng, length)
    elif family == "fwe":
        build = _fwe_builder(key, rng, budget)
    else:
        if qa_data is None:
            raise ValueError(f"task={task!r} needs qa_data (iha.eval.ruler_qa.load_qa_data)")
        build = _qa_builder(key, rng, index, qa_data)

    cache: dict[int, tuple[_Built, int]] = {}

    def measured(n: int) -> tuple[_Built, int]:
        if n not in cache:
            built = build(n)
            cache[n] = (built, len(tokenizer.encode(built.text)))
        return cache[n]

    n = _largest_fitting(lambda m: measured(m)[1], budget, size_hint)
    if n < 0:
        raise ValueError(
            f"length={length} is too short for {task}: the template and the parts every prompt "
            f"needs take {measured(0)[1]} tokens, plus tokens_to_generate={ttg} and 1 for BOS"
        )
    built, n_tok = measured(n)
    if family == "fwe":
        counts = fwe_counts(n, max(5, budget // 50))
        if counts[3] <= counts[4]:  # the three answers must be strictly the most frequent
            raise ValueError(
                f"length={length} is too short for fwe: {n} words do not single out three "
                "most frequent words"
            )
    sample = RulerSample(
        task=task,
        length=length,
        index=index,
        input=built.text,
        outputs=built.outputs,
        n_tokens=n_tok,
        query=built.query,
        keys=built.keys,
        depths=built.depths,
        max_new_tokens=ttg,
    )
    return sample, n


def generate_samples(
    task: str,
    tokenizer: Encoder,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    num_samples: int = 100,
    seed: int = 0,
    tokens_to_generate: int | None = None,
    haystack_dir: str | Path | None = None,
    qa_data: QAData | None = None,
) -> list[RulerSample]:
    """``num_samples`` samples of ``task`` for each length in ``lengths`` (in tokens).

    ``haystack_dir`` replaces the built-in essay (a directory of ``.txt`` files); ``qa_data``
    is the dataset of qa_1 / qa_2 (default: loaded from the hub by
    :func:`iha.eval.ruler_qa.load_qa_data`)."""
    family = task_family(task)
    check_int("num_samples", num_samples, 1)
    check_int("tokens_to_generate", tokens_to_generate, 0, allow_none=True)
    if not lengths:
        raise ValueError("lengths must not be empty")
    for i, length in enumerate(lengths):
        check_int(f"lengths[{i}]", length, 1)
    essay = family == "niah" and NIAH[task].haystack == "essay"
    sentences = load_essay_sentences(haystack_dir) if essay else None
    if family == "qa" and qa_data is None:
        from iha.eval.ruler_qa import load_qa_data

        qa_data = load_qa_data(task)
    samples = []
    for length in lengths:
        hint = 0
        for i in range(num_samples):
            s, hint = generate_sample(
                task,
                tokenizer,
                length,
                index=i,
                seed=seed,
                tokens_to_generate=tokens_to_generate,
                sentences=sentences,
                size_hint=hint,
                qa_data=qa_data,
            )
            samples.append(s)
    return samples


# ---------------------------------------------------------------- scoring and tables


def postprocess(prediction: str) -> str:
    """RULER's post-processing: strip, control characters to newlines, strip again."""
    return re.sub(r"[\x00-\x1f]", "\n", prediction.strip()).strip()


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """Fraction of ``references`` that occur in ``prediction`` (case-insensitive)."""
    if len(references) == 0:
        raise ValueError("references must not be empty")
    pred = prediction.lower()
    return sum(r.lower() in pred for r in references) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    """1.0 when any of ``references`` occurs in ``prediction`` (case-insensitive), else 0.0."""
    if len(references) == 0:
        raise ValueError("references must not be empty")
    pred = prediction.lower()
    return float(any(r.lower() in pred for r in references))


def score_prediction(task: str, prediction: str, references: Sequence[str]) -> float:
    """RULER's score of one prediction for ``task``: its metric on the post-processed text."""
    metric = METRICS[task_family(task)]
    fn = string_match_all if metric == "string_match_all" else string_match_part
    return fn(postprocess(prediction), references)


def score_samples(
    samples: Sequence[RulerSample], predictions: Sequence[str]
) -> dict[str, dict[int, float]]:
    """Mean score (:func:`score_prediction`) per task and length: ``{task: {length: score}}``,
    in [0, 1]."""
    if len(samples) != len(predictions):
        raise ValueError(
            f"samples ({len(samples)}) and predictions ({len(predictions)}) differ in length"
        )
    sums: dict[str, dict[int, list[float]]] = {}
    for s, p in zip(samples, predictions):
        score = score_prediction(s.task, p, s.outputs)
        sums.setdefault(s.task, {}).setdefault(s.length, []).append(score)
    return {
        t: {n: sum(v) / len(v) for n, v in sorted(by_len.items())} for t, by_len in sums.items()
    }


def suite_average(scores: Mapping[str, Mapping[int, float]]) -> dict[str, Any]:
    """The suite average: ``{"by_length": {length: mean over tasks}, "overall": mean over
    tasks of each task's mean over lengths}`` (the paper's "average over the RULER suite")."""
    if not scores:
        raise ValueError("scores must hold at least one task")
    lengths = sorted({n for by_len in scores.values() for n in by_len})
    by_length = {}
    for n in lengths:
        vals = [by_len[n] for by_len in scores.values() if n in by_len]
        by_length[n] = sum(vals) / len(vals)
    per_task = [sum(by_len.values()) / len(by_len) for by_len in scores.values()]
    return {"by_length": by_length, "overall": sum(per_task) / len(per_task)}


def format_table(scores: Mapping[str, Mapping[int, float]], digits: int = 1) -> str:
    """Markdown table: one row per task, one column per length, then the row average (percent);
    with more than one task a last row holds the suite average (:func:`suite_average`)."""
    lengths = sorted({n for by_len in scores.values() for n in by_len})
    header = "| task | " + " | ".join(_fmt_len(n) for n in lengths) + " | avg |"
    lines = [header, "|---" * (len(lengths) + 2) + "|"]
    for task, by_len in scores.items():
        cells = [f"{100 * by_len[n]:.{digits}f}" if n in by_len else "-" for n in lengths]
        avg = 100 * sum(by_len.values()) / len(by_len)
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {avg:.{digits}f} |")
    if len(scores) > 1:
        avg = suite_average(scores)
        cells = [f"{100 * avg['by_length'][n]:.{digits}f}" for n in lengths]
        lines.append(
            "| **average** | " + " | ".join(cells) + f" | {100 * avg['overall']:.{digits}f} |"
        )
    return "\n".join(lines)


def _fmt_len(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)
