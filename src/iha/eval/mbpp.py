"""MBPP (Austin et al. 2021): loader, the standard 3-shot prompt, and the test program.

The standard prompt (the MBPP paper's, as lm-evaluation-harness's ``mbpp`` task writes it):
three solved exemplars, MBPP's prompt-split tasks 2, 3 and 4, then the problem, each as

    You are an expert Python programmer, and here is your task: {text} Your code should pass
    these tests:\\n\\n{test 1}\\n{test 2}\\n{test 3}\\n[BEGIN]\\n

followed, for the exemplars, by their code and ``\\n[DONE]``; blocks are joined with a blank
line; generation stops at ``[DONE]``. The program run in the sandbox is the problem's
``test_setup_code``, the completion and its test asserts. A chat-tuned model gets the same task
text as one user message instead and answers in a fenced code block (:func:`extract_code`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from iha.eval.data import check_limit, load_hub_dataset, read_jsonl

HUB_NAME, HUB_CONFIG = "google-research-datasets/mbpp", "full"
FIELDS = ("task_id", "text", "test_list")
STOP_STRINGS = ("[DONE]",)
# task-id ranges of MBPP's splits (the release file mbpp.jsonl holds all 974 problems)
SPLIT_IDS = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
}


@dataclass(frozen=True)
class MBPPProblem:
    """One problem: its description, reference code and test asserts."""

    task_id: int
    text: str
    test_list: tuple[str, ...]
    code: str = ""
    test_setup_code: str = ""


# MBPP's prompt-split tasks 2, 3 and 4, the dataset's own few-shot exemplars, as the dataset
# holds them (its code uses \r\n line ends).
FEWSHOT_EXEMPLARS: tuple[MBPPProblem, ...] = (
    MBPPProblem(
        2,
        "Write a function to find the similar elements from the given two tuple lists.",
        (
            "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
            "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
            "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
        ),
        "def similar_elements(test_tup1, test_tup2):\r\n"
        "  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
        "  return (res) ",
    ),
    MBPPProblem(
        3,
        "Write a python function to identify non-prime numbers.",
        (
            "assert is_not_prime(2) == False",
            "assert is_not_prime(10) == True",
            "assert is_not_prime(35) == True",
        ),
        "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n"
        "    for i in range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n"
        "            result = True\r\n    return result",
    ),
    MBPPProblem(
        4,
        "Write a function to find the largest integers from a given list of numbers using heap "
        "queue algorithm.",
        (
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)"
            "==[85, 75, 65, 58, 35]",
        ),
        "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n"
        "  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums",
    ),
)


def load_mbpp(
    path: str | Path | None = None, split: str = "test", limit: int | None = None
) -> list[MBPPProblem]:
    """MBPP problems of ``split`` from a local JSONL file (MBPP's ``mbpp.jsonl`` or hub rows:
    ``task_id``, ``text``, ``test_list``, optionally ``code``, ``test_setup_code``; the records
    whose task id lies in the split's range), else from the hub
    (``google-research-datasets/mbpp``, config ``full``)."""
    check_limit(limit)
    if split not in SPLIT_IDS:
        raise ValueError(f"split={split!r} is not one of {', '.join(SPLIT_IDS)}")
    if path is not None:
        records = [r for r in read_jsonl(path, required=FIELDS) if r["task_id"] in SPLIT_IDS[split]]
        if not records:
            raise ValueError(
                f"{path}: no record with a task_id of the {split!r} split "
                f"({SPLIT_IDS[split].start}..{SPLIT_IDS[split].stop - 1})"
            )
    else:
        records = load_hub_dataset(HUB_NAME, split=split, config=HUB_CONFIG, required=FIELDS)
    return [
        MBPPProblem(
            task_id=int(r["task_id"]),
            text=r["text"],
            test_list=tuple(r["test_list"]),
            code=r.get("code", ""),
            test_setup_code=r.get("test_setup_code", "") or "",
        )
        for r in (records[:limit] if limit else records)
    ]


def task_text(problem: MBPPProblem) -> str:
    """The task block of the standard prompt, up to and including ``[BEGIN]\\n``."""
    tests = "\n".join(problem.test_list[:3])
    return (
        f"You are an expert Python programmer, and here is your task: {problem.text} "
        f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
    )


def fewshot_prompt(problem: MBPPProblem, n_shots: int = 3) -> str:
    """The standard 3-shot prompt: solved exemplars, then the problem's task block."""
    if not 0 <= n_shots <= len(FEWSHOT_EXEMPLARS):
        raise ValueError(f"n_shots={n_shots} must be in [0, {len(FEWSHOT_EXEMPLARS)}]")
    shots = [task_text(p) + p.code + "\n[DONE]" for p in FEWSHOT_EXEMPLARS[:n_shots]]
    return "\n\n".join([*shots, task_text(problem)])


def chat_messages(problem: MBPPProblem) -> list[dict[str, str]]:
    """One user turn: the task block (without ``[BEGIN]``) and a request for a code block."""
    tests = "\n".join(problem.test_list[:3])
    content = (
        f"You are an expert Python programmer, and here is your task: {problem.text} "
        f"Your code should pass these tests:\n\n{tests}\n\n"
        "Write the Python code in one ```python code block."
    )
    return [{"role": "user", "content": content}]


def extract_code(text: str) -> str:
    """The code of a completion: the last fenced code block when there is one (chat answers,
    after any reasoning), else the text up to ``[DONE]``."""
    blocks = re.findall(r"```(?:[Pp]ython3?|py)?[ \t]*\n(.*?)```", text, flags=re.S)
    if blocks:
        return blocks[-1]
    return text.split("[DONE]", 1)[0]


def program(problem: MBPPProblem, completion: str) -> str:
    """The program that passes iff the code of ``completion`` passes ``problem``'s asserts."""
    parts = [problem.test_setup_code, extract_code(completion), *problem.test_list]
    return "\n".join(p for p in parts if p)
