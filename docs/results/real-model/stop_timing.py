"""Evaluation wall time per HumanEval problem with and without stopping at the stop strings.

Same model, same prompts, same greedy settings, alternating in one process: "cut afterwards"
generates until EOS or the token budget and cuts the text afterwards (what evaluation did
before); "stop strings" stops each row as soon as its text holds a stop string. The
completions must be identical.

    python docs/results/real-model/stop_timing.py MODEL_DIR --limit 3 --out timing.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from iha.cli.eval import load_generator
from iha.eval import runner
from iha.eval.humaneval import load_humaneval


class CutAfterwards:
    """A generator that ignores the stop strings (no tokenizer to decode them with)."""

    def __init__(self, inner):
        self.inner = inner
        self.context_length = inner.context_length
        self.prompt_bos = inner.prompt_bos

    def __call__(self, prompts, params):
        return self.inner(prompts, replace(params, stop_strings=()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--limit", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--prompt-style", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    generator, tokenizer, described = load_generator(args.model, None, "cpu")
    problems = load_humaneval(limit=args.limit)
    params = runner.SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0, seed=None)
    rows = []
    for p in problems:
        for mode in ("cut afterwards", "stop strings"):
            gen = CutAfterwards(generator) if mode == "cut afterwards" else generator
            began = time.perf_counter()
            res = runner.run_code_eval(
                "humaneval", [p], gen, tokenizer, params=params, batch_size=1,
                prompt_style=args.prompt_style, timeout=10.0,
            )  # fmt: skip
            rec = res.problems[0]
            rows.append(
                {
                    "task_id": p.task_id,
                    "mode": mode,
                    "seconds": time.perf_counter() - began,
                    "new_tokens": rec["new_tokens"][0],
                    "completion": rec["completions"][0],
                    "passed": rec["correct"][0],
                }
            )
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "completion"}), flush=True)
    same = all(
        a["completion"] == b["completion"] for a, b in zip(rows[::2], rows[1::2], strict=True)
    )
    summary = {
        "model": described,
        "prompt_style": res.settings["prompt_style"],
        "max_new_tokens": args.max_new_tokens,
        "threads": 1,
        "identical_completions": same,
        "seconds_per_problem": {
            m: sum(r["seconds"] for r in rows if r["mode"] == m) / len(problems)
            for m in ("cut afterwards", "stop strings")
        },
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary["seconds_per_problem"]), "identical:", same)


if __name__ == "__main__":
    main()
