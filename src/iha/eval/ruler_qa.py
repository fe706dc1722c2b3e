"""Datasets of RULER's qa_1 (SQuAD v2) and qa_2 (HotpotQA): questions, answers, documents.

Both follow RULER's reading of its data files:

- SQuAD v2: every distinct paragraph is a document; every answerable question (impossible ones
  are skipped) has its paragraph as the gold document and the other paragraphs of the same
  article as preferred distractors; its answers are all annotated answer texts.
- HotpotQA (distractor setting): every distinct ``"{title}\\n{sentences joined}"`` paragraph is
  a document; a question's gold documents are all ten paragraphs that come with it (its two
  supporting paragraphs and its eight distractors); its answer is the one answer string.

Documents are sorted and numbered once, so a dataset gives the same prompts wherever it is read
from. Sources: a local file in the original release format (SQuAD's ``dev-v2.0.json``,
HotpotQA's ``hotpot_dev_distractor_v1.json``) or in the hub's record format (JSON lines of
``rajpurkar/squad_v2`` / ``hotpotqa/hotpot_qa`` rows), else the hub itself (needs
``datasets``; validation split).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iha.eval.data import check_limit, load_hub_dataset, read_jsonl

SQUAD_HUB = "rajpurkar/squad_v2"
HOTPOTQA_HUB, HOTPOTQA_CONFIG = "hotpotqa/hotpot_qa", "distractor"
DATASET_OF_TASK = {"qa_1": "squad", "qa_2": "hotpotqa"}


@dataclass(frozen=True)
class QAItem:
    """One question: reference answers, gold document ids, preferred distractor ids."""

    question: str
    answers: tuple[str, ...]
    gold: tuple[int, ...]
    related: tuple[int, ...] = ()


@dataclass(frozen=True)
class QAData:
    """A qa dataset: ``items`` in dataset order, ``docs`` sorted distinct document texts."""

    name: str
    items: tuple[QAItem, ...]
    docs: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError(f"{self.name}: no answerable questions")


def _read_records(path: str | Path) -> list[dict[str, Any]] | dict[str, Any]:
    """A ``.json`` file (any JSON value) or a ``.jsonl`` file (a list of objects)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path={str(path)!r} is not a file (expected .json or .jsonl)")
    if p.suffix == ".jsonl":
        return read_jsonl(p)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e.msg})") from e


def _squad_rows(raw: Any) -> Iterable[tuple[str, str, str | None, list[str]]]:
    """(title, context, question, answers) of SQuAD's release format or hub rows; a paragraph
    without questions gives one row with question None."""
    if isinstance(raw, Mapping) and "data" in raw:
        for article in raw["data"]:
            for para in article["paragraphs"]:
                if not para["qas"]:
                    yield article.get("title", ""), para["context"], None, []
                for qa in para["qas"]:
                    answers = [] if qa.get("is_impossible") else [a["text"] for a in qa["answers"]]
                    yield article.get("title", ""), para["context"], qa["question"], answers
    elif isinstance(raw, list):
        for i, r in enumerate(raw):
            missing = [k for k in ("context", "question", "answers") if k not in r]
            if missing:
                raise ValueError(f"squad record {i}: missing field(s) {missing}")
            yield r.get("title", ""), r["context"], r["question"], list(r["answers"]["text"])
    else:
        raise ValueError("squad data: expected SQuAD's {'data': [...]} or a list of hub records")


def load_squad(
    path: str | Path | None = None, split: str = "validation", limit: int | None = None
) -> QAData:
    """SQuAD v2 as RULER reads it, from ``path`` or the hub (``rajpurkar/squad_v2``)."""
    check_limit(limit)
    raw = _read_records(path) if path is not None else load_hub_dataset(SQUAD_HUB, split)
    rows = list(_squad_rows(raw))
    docs = sorted({context for _, context, _, _ in rows})
    doc_id = {d: i for i, d in enumerate(docs)}
    by_title: dict[str, list[int]] = {}
    for title, context, _, _ in rows:
        ids = by_title.setdefault(title, [])
        if doc_id[context] not in ids:
            ids.append(doc_id[context])
    items = []
    for title, context, question, answers in rows:
        if question is None or not answers:
            continue
        gold = doc_id[context]
        related = tuple(i for i in by_title[title] if i != gold)
        items.append(QAItem(question, tuple(answers), (gold,), related))
    return QAData("squad", tuple(items[:limit] if limit else items), tuple(docs))


def _hotpot_rows(raw: Any) -> Iterable[tuple[str, str, list[tuple[str, list[str]]]]]:
    """(question, answer, [(title, sentences)]) of HotpotQA's release format or hub rows."""
    if not isinstance(raw, list):
        raise ValueError("hotpotqa data: expected a list of questions")
    for i, r in enumerate(raw):
        missing = [k for k in ("question", "answer", "context") if k not in r]
        if missing:
            raise ValueError(f"hotpotqa record {i}: missing field(s) {missing}")
        ctx = r["context"]
        if isinstance(ctx, Mapping):  # hub rows: {"title": [...], "sentences": [[...]]}
            paragraphs = list(zip(ctx["title"], ctx["sentences"]))
        else:  # release format: [[title, [sentences]], ...]
            paragraphs = [(t, s) for t, s in ctx]
        yield r["question"], r["answer"], paragraphs


def load_hotpotqa(
    path: str | Path | None = None, split: str = "validation", limit: int | None = None
) -> QAData:
    """HotpotQA (distractor) as RULER reads it, from ``path`` or the hub
    (``hotpotqa/hotpot_qa``, config ``distractor``)."""
    check_limit(limit)
    if path is not None:
        raw = _read_records(path)
    else:
        raw = load_hub_dataset(HOTPOTQA_HUB, split, config=HOTPOTQA_CONFIG)
    rows = [
        (q, a, [f"{t}\n{''.join(s)}" for t, s in paragraphs])
        for q, a, paragraphs in _hotpot_rows(raw)
    ]
    docs = sorted({d for _, _, paras in rows for d in paras})
    doc_id = {d: i for i, d in enumerate(docs)}
    items = [
        QAItem(q, (a,), tuple(dict.fromkeys(doc_id[d] for d in paras))) for q, a, paras in rows
    ]
    return QAData("hotpotqa", tuple(items[:limit] if limit else items), tuple(docs))


def load_qa_data(
    task: str,
    path: str | Path | None = None,
    split: str = "validation",
    limit: int | None = None,
) -> QAData:
    """The dataset of RULER task ``task`` (``qa_1``: SQuAD v2, ``qa_2``: HotpotQA)."""
    if task not in DATASET_OF_TASK:
        raise ValueError(f"task={task!r} is not one of {', '.join(DATASET_OF_TASK)}")
    loader = load_squad if DATASET_OF_TASK[task] == "squad" else load_hotpotqa
    return loader(path, split=split, limit=limit)
