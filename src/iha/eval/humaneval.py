"""HumanEval (Chen et al. 2021): loader, prompt, stop strings and the program that tests a
completion.

The standard zero-shot protocol (the reference harness, and lm-evaluation-harness's
``humaneval`` task): the prompt is the problem's ``prompt`` (a function signature and its
docstring); the model completes the function body; generation stops at the first top-level
``\\nclass``, ``\\ndef``, ``\\n#``, ``\\nif`` or ``\\nprint``; the program run in the sandbox is
``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from iha.eval.data import check_limit, load_hub_dataset, read_jsonl

HUB_NAME = "openai/openai_humaneval"
FIELDS = ("task_id", "prompt", "test", "entry_point")
STOP_STRINGS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@dataclass(frozen=True)
class HumanEvalProblem:
    """One problem: its prompt (signature + docstring), test code and function name."""

    task_id: str
    prompt: str
    test: str
    entry_point: str
    canonical_solution: str = ""


def _read(path: Path) -> list[dict]:
    if path.suffix == ".gz":  # the release file HumanEval.jsonl.gz
        if not path.is_file():
            raise ValueError(f"path={str(path)!r} is not a file (expected a .jsonl or .jsonl.gz)")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        for i, r in enumerate(records):
            missing = [k for k in FIELDS if k not in r]
            if missing:
                raise ValueError(f"{path}: record {i} is missing field(s) {missing}")
        return records
    return read_jsonl(path, required=FIELDS)


def load_humaneval(
    path: str | Path | None = None, split: str = "test", limit: int | None = None
) -> list[HumanEvalProblem]:
    """HumanEval problems from a local ``.jsonl`` / ``.jsonl.gz`` file (fields ``task_id``,
    ``prompt``, ``test``, ``entry_point``, optionally ``canonical_solution``), else from the
    hub (``openai/openai_humaneval``)."""
    check_limit(limit)
    if path is not None:
        records = _read(Path(path))
    else:
        records = load_hub_dataset(HUB_NAME, split=split, required=FIELDS)
    return [
        HumanEvalProblem(
            task_id=str(r["task_id"]),
            prompt=r["prompt"],
            test=r["test"],
            entry_point=r["entry_point"],
            canonical_solution=r.get("canonical_solution", ""),
        )
        for r in (records[:limit] if limit else records)
    ]


def cut_completion(text: str) -> str:
    """The completion up to the first stop string (the function body only)."""
    cut = len(text)
    for s in STOP_STRINGS:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def program(problem: HumanEvalProblem, completion: str) -> str:
    """The program that passes iff ``completion`` solves ``problem``."""
    return (
        problem.prompt + completion + "\n" + problem.test + "\n" + f"check({problem.entry_point})"
    )
