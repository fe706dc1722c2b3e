"""RULER multi-key needle-in-a-haystack tasks (Hsieh et al. 2024, arXiv:2404.06654).

Three tasks, following RULER's templates and configurations:

- ``niah_multikey_1``: an essay haystack holding 4 needles with distinct word keys and 7-digit
  values; the question asks for the value of one key (the other three are distractors).
- ``niah_multikey_2``: the haystack itself is made of distractor needles (word keys, 7-digit
  values); one of them answers the question.
- ``niah_multikey_3``: as 2, with uuid keys and uuid values.

A needle reads "One of the special magic {numbers|uuids} for {key} is: {value}.", the prompt is
RULER's template followed by its answer prefix, and a prediction is scored with
:func:`string_match_all` (the fraction of reference values found in it, case-insensitive).

Each prompt is sized in tokens of the given tokenizer (anything with ``encode``): for a target
``length`` the prompt holds the largest haystack such that
``len(tokenizer.encode(prompt)) <= length - tokens_to_generate - 1`` (one token is kept for a BOS
the runner may add), so prompt + generation never exceed ``length``. The haystack grows one
unit (an essay sentence or a distractor needle) at a time, so a prompt falls short of that budget
by less than one unit. Needles sit at stratified depths: with k needles, needle i is at a
uniformly random depth in [i/k, (i+1)/k), so they are spread over the whole context. Everything
is seeded.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from iha.eval._ruler_text import ADJECTIVES, ESSAY, NOUNS

TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to "
    "memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."

DEFAULT_LENGTHS = (4096, 8192, 16384)


@dataclass(frozen=True)
class TaskConfig:
    """A RULER NIAH configuration: haystack kind, key/value kinds and the number of keys."""

    haystack: str  # "essay" | "needle"
    type_needle_k: str  # "words" | "uuids"
    type_needle_v: str  # "numbers" | "uuids"
    num_needle_k: int


TASKS: dict[str, TaskConfig] = {
    "niah_multikey_1": TaskConfig("essay", "words", "numbers", 4),
    "niah_multikey_2": TaskConfig("needle", "words", "numbers", 1),
    "niah_multikey_3": TaskConfig("needle", "uuids", "uuids", 1),
}


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass
class RulerSample:
    """One prompt: ``input`` ends with the answer prefix; ``outputs`` are the reference values.

    ``n_tokens`` is the prompt length in tokens (no BOS), ``depths`` the needle depths in [0, 1]
    (fraction of the haystack before each needle), ``keys`` the needle keys (the query first).
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

    Returns -1 when even n = 0 exceeds the budget.
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


# ---------------------------------------------------------------- generation


def _stratified_depths(k: int, rng: random.Random) -> list[float]:
    return [(i + rng.random()) / k for i in range(k)]


def _insert(units: list[str], needles: Sequence[str], depths: Sequence[float]) -> list[str]:
    """Insert needles into units, needle i before unit round(depths[i] * len(units))."""
    out = list(units)
    positions = [round(d * len(units)) for d in depths]
    for pos, needle in sorted(zip(positions, needles), key=lambda t: t[0], reverse=True):
        out.insert(pos, needle)
    return out


def generate_sample(
    task: str,
    tokenizer: Encoder,
    length: int,
    index: int = 0,
    seed: int = 0,
    tokens_to_generate: int = 128,
    sentences: Sequence[str] | None = None,
    size_hint: int = 0,
) -> tuple[RulerSample, int]:
    """One sample of ``task`` sized to ``length`` tokens; also returns the haystack size used
    (a good ``size_hint`` for the next sample of the same length)."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")
    cfg = TASKS[task]
    budget = length - tokens_to_generate - 1
    rng = random.Random(f"{task}|{length}|{seed}|{index}")
    keys = _distinct_keys(cfg.type_needle_k, cfg.num_needle_k, rng, set())
    values = [_random_value(cfg.type_needle_v, rng) for _ in keys]
    needles = [
        NEEDLE.format(type_needle_v=cfg.type_needle_v, key=k, value=v) for k, v in zip(keys, values)
    ]
    query_idx = rng.randrange(len(keys))
    depths = _stratified_depths(len(needles), rng)
    rng.shuffle(depths)  # which key sits where is random too
    query = keys[query_idx]
    head = TEMPLATE.split("{context}")[0].format(type_needle_v=cfg.type_needle_v)
    tail = (TEMPLATE.split("{context}")[1] + ANSWER_PREFIX).format(
        type_needle_v=cfg.type_needle_v, query=query
    )

    if cfg.haystack == "essay":
        pool = list(sentences) if sentences is not None else load_essay_sentences()
        if not pool:
            raise ValueError("sentences must not be empty")

        def units(n: int) -> list[str]:
            return [pool[i % len(pool)] for i in range(n)]

        sep = " "
    else:
        distractors = _Distractors(cfg, random.Random(rng.getrandbits(64)), set(keys), set(values))
        units = distractors.take
        sep = "\n"

    def build(n: int) -> str:
        return head + sep.join(_insert(units(n), needles, depths)) + tail

    cache: dict[int, int] = {}

    def n_tokens(n: int) -> int:
        if n not in cache:
            cache[n] = len(tokenizer.encode(build(n)))
        return cache[n]

    n = _largest_fitting(n_tokens, budget, size_hint)
    if n < 0:
        fixed = n_tokens(0)
        raise ValueError(
            f"length={length} is too short for {task}: the template and needles alone take "
            f"{fixed} tokens, plus tokens_to_generate={tokens_to_generate} and 1 for BOS"
        )
    text = build(n)
    sample = RulerSample(
        task=task,
        length=length,
        index=index,
        input=text,
        outputs=[values[query_idx]],
        n_tokens=n_tokens(n),
        query=query,
        keys=[query] + [k for i, k in enumerate(keys) if i != query_idx],
        depths=[depths[query_idx]] + [d for i, d in enumerate(depths) if i != query_idx],
    )
    return sample, n


def generate_samples(
    task: str,
    tokenizer: Encoder,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    num_samples: int = 100,
    seed: int = 0,
    tokens_to_generate: int = 128,
    haystack_dir: str | Path | None = None,
) -> list[RulerSample]:
    """``num_samples`` samples of ``task`` for each length in ``lengths`` (in tokens)."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be >= 1")
    if tokens_to_generate < 0:
        raise ValueError(f"tokens_to_generate={tokens_to_generate} must be >= 0")
    if not lengths or any(not isinstance(n, int) or n < 1 for n in lengths):
        raise ValueError(f"lengths={list(lengths)!r} must be positive ints")
    sentences = load_essay_sentences(haystack_dir) if TASKS[task].haystack == "essay" else None
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
            )
            samples.append(s)
    return samples


# ---------------------------------------------------------------- scoring and tables


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """Fraction of ``references`` that occur in ``prediction`` (case-insensitive)."""
    if len(references) == 0:
        raise ValueError("references must not be empty")
    pred = prediction.lower()
    return sum(r.lower() in pred for r in references) / len(references)


def score_samples(
    samples: Sequence[RulerSample], predictions: Sequence[str]
) -> dict[str, dict[int, float]]:
    """Mean :func:`string_match_all` per task and length: ``{task: {length: score}}`` in [0, 1]."""
    if len(samples) != len(predictions):
        raise ValueError(
            f"samples ({len(samples)}) and predictions ({len(predictions)}) differ in length"
        )
    sums: dict[str, dict[int, list[float]]] = {}
    for s, p in zip(samples, predictions):
        sums.setdefault(s.task, {}).setdefault(s.length, []).append(string_match_all(p, s.outputs))
    return {
        t: {n: sum(v) / len(v) for n, v in sorted(by_len.items())} for t, by_len in sums.items()
    }


def format_table(scores: Mapping[str, Mapping[int, float]], digits: int = 1) -> str:
    """Markdown table: one row per task, one column per length, then the row average (percent)."""
    lengths = sorted({n for by_len in scores.values() for n in by_len})
    header = "| task | " + " | ".join(_fmt_len(n) for n in lengths) + " | avg |"
    lines = [header, "|---" * (len(lengths) + 2) + "|"]
    for task, by_len in scores.items():
        cells = [f"{100 * by_len[n]:.{digits}f}" if n in by_len else "-" for n in lengths]
        avg = 100 * sum(by_len.values()) / len(by_len)
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {avg:.{digits}f} |")
    return "\n".join(lines)


def _fmt_len(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)
