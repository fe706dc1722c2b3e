"""Summary of the HumanEval runs in this folder, finished or not (their progress files).

python docs/results/real-model/summarize.py > docs/results/real-model/summary.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOTAL = 164


def rows(run: Path) -> list[dict]:
    for name in ("humaneval.samples.jsonl", "humaneval.progress.jsonl"):
        path = run / name
        if path.exists():
            out = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            return [r for r in out if "task_id" in r]
    return []


def pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summary(run: Path) -> dict:
    rs = rows(run)
    if not rs:
        return {"problems_done": 0}
    n = len(rs[0]["correct"])
    verdicts = [(a, b) for r in rs for a, b in zip(r["correct"], r.get("human_eval_passed", []))]
    seconds = [r["generation_seconds"] for r in rs]
    out = {
        "problems_done": len(rs),
        "samples_per_problem": n,
        "passed_samples": sum(sum(r["correct"]) for r in rs),
        "cross_check_agree": f"{sum(a == b for a, b in verdicts)} of {len(verdicts)}",
        "generation_seconds_per_problem": sum(seconds) / len(seconds),
        "new_tokens_mean": sum(sum(r["new_tokens"]) for r in rs) / (len(rs) * n),
        "hit_token_budget": sum(t >= 512 for r in rs for t in r["new_tokens"]),
        "remaining_estimate_s": (TOTAL - len(rs)) * sum(seconds) / len(seconds),
    }
    for k in (1, 10):
        if k <= n:
            out[f"pass@{k}"] = sum(pass_at_k(n, sum(r["correct"]), k) for r in rs) / len(rs)
    return out


if __name__ == "__main__":
    runs = sorted(p for p in HERE.iterdir() if p.is_dir())
    print(json.dumps({p.name: summary(p) for p in runs}, indent=2))
