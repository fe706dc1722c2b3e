"""GSM8K: loader, 5-shot and chat prompts, answer extraction and scoring.

Answers are compared as normalised numbers (strings): :func:`extract_answer` takes the number
after ``####``, else after "the answer is", else inside the last ``\\boxed{}`` (what chat models
fine-tuned on OpenThoughts write), else the last number in the text; :func:`normalize_number`
removes commas, currency signs and a trailing period and writes decimals canonically
("3.50" -> "3.5", "12.0" -> "12").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from iha.eval.data import check_limit, load_hub_dataset, read_jsonl
from iha.eval.math import CHAT_INSTRUCTION, extract_boxed

HUB_NAME = "openai/gsm8k"
HUB_CONFIG = "main"

# A number as written in text: optional sign, optional currency sign, digits with thousands
# commas, an optional decimal part (a bare trailing "." is allowed and dropped later).
_NUMBER = re.compile(r"-?(?:[$€£¥]\s?)?-?(?:\d[\d,]*(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True)
class GSM8KProblem:
    """One problem: question, the full reference solution, and its normalised final answer."""

    question: str
    solution: str
    answer: str


def load_gsm8k(
    path: str | Path | None = None, split: str = "test", limit: int | None = None
) -> list[GSM8KProblem]:
    """GSM8K problems from a local JSONL file (fields ``question``, ``answer``: the solution
    ending in ``#### N``), else from the hub (``openai/gsm8k``, config ``main``)."""
    check_limit(limit)
    if path is not None:
        records = read_jsonl(path, required=("question", "answer"))
    else:
        records = load_hub_dataset(
            HUB_NAME, split=split, config=HUB_CONFIG, required=("question", "answer")
        )
    problems = []
    for i, r in enumerate(records[:limit] if limit else records):
        final = extract_answer(r["answer"])
        if final is None:
            raise ValueError(f"record {i}: the answer field holds no number")
        problems.append(GSM8KProblem(question=r["question"], solution=r["answer"], answer=final))
    return problems


# Few-shot exemplars written for this project (not dataset items), in GSM8K's answer format.
FEWSHOT_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "A baker makes 4 trays of muffins with 12 muffins on each tray. She sells 30 muffins. "
        "How many muffins does she have left?",
        "She makes 4 * 12 = 48 muffins. After selling 30 she has 48 - 30 = 18 muffins left.\n"
        "#### 18",
    ),
    (
        "Tom reads 15 pages of a book every day. The book has 240 pages. After 10 days, how "
        "many pages does he still have to read?",
        "In 10 days he reads 15 * 10 = 150 pages. He still has 240 - 150 = 90 pages to read.\n"
        "#### 90",
    ),
    (
        "A shirt costs $25 and a pair of shoes costs three times as much. How much do 2 shirts "
        "and 1 pair of shoes cost together?",
        "The shoes cost 3 * 25 = $75. Two shirts cost 2 * 25 = $50. Together they cost "
        "75 + 50 = $125.\n#### 125",
    ),
    (
        "A garden has 3 rows of tomato plants with 8 plants in each row. Each plant gives 5 "
        "tomatoes. Half of the tomatoes are used for sauce. How many tomatoes are not used for "
        "sauce?",
        "There are 3 * 8 = 24 plants, giving 24 * 5 = 120 tomatoes. Half of them, "
        "120 / 2 = 60, are not used for sauce.\n#### 60",
    ),
    (
        "Maria saves $6 each week. She wants to buy a bike that costs $138 and already has $42. "
        "How many weeks must she save?",
        "She still needs 138 - 42 = $96. At $6 a week that takes 96 / 6 = 16 weeks.\n#### 16",
    ),
)

STOP_STRINGS = ("\n\nQuestion:", "\nQuestion:")


def fewshot_prompt(question: str, n_shots: int = 5) -> str:
    """``Question: ...\\nAnswer: ... #### N`` exemplars, then the question and ``Answer:``."""
    if not 0 <= n_shots <= len(FEWSHOT_EXEMPLARS):
        raise ValueError(f"n_shots={n_shots} must be in [0, {len(FEWSHOT_EXEMPLARS)}]")
    parts = [f"Question: {q}\nAnswer: {a}\n\n" for q, a in FEWSHOT_EXEMPLARS[:n_shots]]
    parts.append(f"Question: {question}\nAnswer:")
    return "".join(parts)


def chat_messages(question: str) -> list[dict[str, str]]:
    """One user turn: the question and the instruction to box the final answer."""
    return [{"role": "user", "content": f"{question}\n{CHAT_INSTRUCTION}"}]


def normalize_number(text: str) -> str | None:
    """A number as written -> canonical string, or None if ``text`` is not a number.

    Removes commas, currency signs, spaces and a trailing period; a trailing ``%`` is dropped;
    then writes the value without trailing zeros: "3.50" -> "3.5", "12.0" -> "12",
    "-0" -> "0", ".5" -> "0.5".
    """
    s = text.strip()
    s = re.sub(r"[,$€£¥\s]", "", s)
    s = s.rstrip("%").rstrip(".")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite() or not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)", s):
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _first_number(text: str) -> str | None:
    for m in _NUMBER.finditer(text):
        n = normalize_number(m.group())
        if n is not None:
            return n
    return None


def _last_number(text: str) -> str | None:
    for m in reversed(list(_NUMBER.finditer(text))):
        n = normalize_number(m.group())
        if n is not None:
            return n
    return None


def extract_answer(text: str) -> str | None:
    """The final numeric answer in a solution or a model's output, normalised; None if none.

    In order: the first number after the first ``####`` that is followed by one; else the first
    number after the last "the answer is" (case-insensitive) that is followed by one; else a
    number inside the last ``\\boxed{}``; else the last number anywhere.
    """
    for m in re.finditer(r"####", text):
        line = text[m.end() :].split("\n", 1)[0]
        n = _first_number(line)
        if n is not None:
            return n
    for m in reversed(list(re.finditer(r"the answer is", text, flags=re.IGNORECASE))):
        n = _first_number(text[m.end() :])
        if n is not None:
            return n
    boxed = extract_boxed(text)
    if boxed is not None:
        n = _first_number(boxed)
        if n is not None:
            return n
    return _last_number(text)


def is_correct(prediction: str | None, reference: str | None) -> bool:
    """Numeric equality of two normalised answers (None is never correct)."""
    if prediction is None or reference is None:
        return False
    try:
        return Decimal(prediction) == Decimal(reference)
    except InvalidOperation:
        return prediction == reference
