"""Summary of the HumanEval runs in this folder, finished or not (their progress files).

python docs/results/real-model/summarize.py > docs/results/real-model/summary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "src"))  # run from anywhere in a checkout
from iha.eval.metrics import bootstrap_ci, pass_at_k  # noqa: E402

TOTAL = 164


def rows(run: Path) -> list[dict]:
    for name in ("humaneval.samples.jsonl", "humaneval.progress.jsonl"):
        path = run / name
        if path.exists():
            out = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            return [r for r in out if "task_id" in r]
    return []


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


# The sampled run of the original: HumanEval/0-60 decoded with model.generate, 61-163 with the
# compact decoder (two halves run side by side); one run over the 164 problems once all are in.
SAMPLED_PARTS = ("sampled-original", "sampled-original-61-112", "sampled-original-113-163")


def merged(parts: tuple[str, ...]) -> dict:
    rs = [r for p in parts for r in rows(HERE / p)]
    ids = [r["task_id"] for r in rs]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{parts}: a problem appears twice")
    out: dict = {"parts": list(parts), "problems_done": len(rs)}
    if not rs:
        return out
    n = len(rs[0]["correct"])
    for k in (1, 10):
        per = [pass_at_k(n, sum(r["correct"]), k) for r in rs]
        out[f"pass@{k}"] = sum(per) / len(per)
        est = bootstrap_ci(per)  # percentile, 1000 resamples over problems, seed 0
        out[f"pass@{k}_ci95"] = [est.low, est.high]
    verdicts = [(a, b) for r in rs for a, b in zip(r["correct"], r.get("human_eval_passed", []))]
    out["cross_check_agree"] = f"{sum(a == b for a, b in verdicts)} of {len(verdicts)}"
    return out


if __name__ == "__main__":
    runs = sorted(p for p in HERE.iterdir() if p.is_dir())
    table = {p.name: summary(p) for p in runs}
    table["sampled-original, all parts"] = merged(SAMPLED_PARTS)
    print(json.dumps(table, indent=2))
