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


# One decoder for all 164 problems: HumanEval/0-60 sampled again with the compact decoder (after
# the decoder check below), with the two compact halves of 61-163.
COMPACT_PARTS = ("sampled-original-0-30", "sampled-original-31-60", "sampled-original-61-112",
                 "sampled-original-113-163")

# The decoder check: the 9 problems the greedy original solves (chosen by the greedy run, not by
# a sampled one), sampled by the compact decoder and by model.generate again, against the first
# run's model.generate samples of the same problems ("sampled-original"); pass counts compared
# pairwise by two-sided Fisher exact tests.
DECODER_CHECK = {
    "compact": ("decoder-check-a", "decoder-check-b"),
    "model.generate, rerun": ("decoder-check-hf-a", "decoder-check-hf-b"),
}


def decoder_check() -> dict:
    arms = {name: [r for p in parts for r in rows(HERE / p)]
            for name, parts in DECODER_CHECK.items()}
    if not all(arms.values()):
        return {"problems_done": 0}
    ids = {r["task_id"] for r in arms["compact"]}
    first = rows(HERE / SAMPLED_PARTS[0])
    arms["model.generate, first run"] = [r for r in first if r["task_id"] in ids]
    for name, rs in arms.items():
        if {r["task_id"] for r in rs} != ids:
            raise SystemExit(f"decoder check: {name} has not sampled every checked problem")
    from scipy.stats import fisher_exact

    out: dict = {"problems": sorted(ids, key=lambda t: int(t.split("/")[1]))}
    for name, rs in arms.items():
        passed = sum(sum(r["correct"]) for r in rs)
        out[name] = {"passed": passed, "samples": sum(len(r["correct"]) for r in rs),
                     "per_problem": {r["task_id"]: sum(r["correct"]) for r in rs}}
    names = list(arms)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, y = out[a], out[b]
            table = [[x["passed"], x["samples"] - x["passed"]],
                     [y["passed"], y["samples"] - y["passed"]]]
            out[f"fisher_exact_p: {a} vs {b}"] = float(fisher_exact(table).pvalue)
    return out


if __name__ == "__main__":
    runs = sorted(p for p in HERE.iterdir() if p.is_dir())
    table = {p.name: summary(p) for p in runs}
    table["sampled-original, all parts"] = merged(SAMPLED_PARTS)
    table["sampled-original, compact decoder, all parts"] = merged(COMPACT_PARTS)
    table["decoder check"] = decoder_check()
    print(json.dumps(table, indent=2))
