"""How full RULER prompts are: the shortest prompt of each task and length as a fraction of its
token budget (length - generation budget - 1), with the byte tokenizer.

    python benchmarks/ruler_sizes.py [--samples 2]

qa_1 / qa_2 read the tiny fixture datasets of the tests (their documents repeat at long
lengths); a cell reads "too short" when a task's fixed parts do not fit in that length.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from iha.eval import ruler
from iha.eval.ruler_qa import load_qa_data
from iha.tokenizers import ByteTokenizer

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "eval"
LENGTHS = ruler.STANDARD_LENGTHS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2, help="prompts per task and length")
    args = parser.parse_args()
    tok = ByteTokenizer()
    qa = {
        "qa_1": load_qa_data("qa_1", FIXTURES / "squad_v2_tiny.json"),
        "qa_2": load_qa_data("qa_2", FIXTURES / "hotpotqa_tiny.json"),
    }
    print("| task | " + " | ".join(f"{n // 1024}k" for n in LENGTHS) + " | seconds |")
    print("|---" * (len(LENGTHS) + 2) + "|")
    for task in ruler.TASKS:
        start = time.perf_counter()
        cells = []
        for n in LENGTHS:
            try:
                samples = ruler.generate_samples(
                    task, tok, lengths=[n], num_samples=args.samples, qa_data=qa.get(task)
                )
            except ValueError:
                cells.append("too short")
                continue
            budget = n - samples[0].max_new_tokens - 1
            cells.append(f"{min(s.n_tokens for s in samples) / budget:.4f}")
        seconds = time.perf_counter() - start
        print(f"| {task} | " + " | ".join(cells) + f" | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
