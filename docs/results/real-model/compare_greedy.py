"""Greedy HumanEval of the original and the converted model, problem by problem.

Reads the two runs' per-problem records (``humaneval.samples.jsonl``, else the progress file
of an unfinished run), counts identical generations and verdicts, and for every problem whose
generations differ replays both models greedily on that prompt (batch of 1, the same chat
prompt) to the first token where they part: both tokens and each model's logit gap between
them.

    python compare_greedy.py ORIG_RUN CONV_RUN --original DIR --converted DIR --out FILE
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def records(run: Path) -> dict[str, dict]:
    for name in ("humaneval.samples.jsonl", "humaneval.progress.jsonl"):
        path = run / name
        if path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return {r["task_id"]: r for r in rows if "task_id" in r}
    return {}


@torch.no_grad()
def first_divergence(models, tokenizer, prompt_ids: list[int], max_new: int) -> dict:
    """Greedy decode with both models in lock-step (full forwards of the shared prefix, batch
    of 1, no cache) to the first step where their argmax differs, else to EOS / ``max_new``.
    Also the largest |logit difference| seen and the smallest top-1 / top-2 gap of the original
    (how close a greedy choice came to flipping)."""
    ids = list(prompt_ids)
    worst, closest = 0.0, float("inf")
    for step in range(max_new):
        x = torch.tensor([ids])
        logits = [m(input_ids=x).logits[0, -1].double() for m in models]
        picks = [int(lg.argmax()) for lg in logits]
        worst = max(worst, float((logits[0] - logits[1]).abs().max()))
        top2 = torch.topk(logits[0], 2).values
        closest = min(closest, float(top2[0] - top2[1]))
        if picks[0] != picks[1]:
            a, b = picks
            return {
                "step": step,
                "prefix": tokenizer.decode(ids[len(prompt_ids) :]),
                "original_token": tokenizer.decode([a]),
                "converted_token": tokenizer.decode([b]),
                "original_gap": float(logits[0][a] - logits[0][b]),
                "converted_gap": float(logits[1][b] - logits[1][a]),
                "max_abs_logit_diff": worst,
            }
        ids.append(picks[0])
        if picks[0] == tokenizer.eos_token_id:
            break
    return {
        "step": None,
        "tokens_compared": len(ids) - len(prompt_ids),
        "max_abs_logit_diff": worst,
        "min_top2_gap_original": closest,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("original_run")
    ap.add_argument("converted_run")
    ap.add_argument("--original", default="out/smollm2")
    ap.add_argument("--converted", default="out/smollm2-iha")
    ap.add_argument("--replay", type=int, default=5, help="differing problems to replay")
    ap.add_argument("--check", nargs="*", default=[], help="also replay these task ids")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    a, b = records(Path(args.original_run)), records(Path(args.converted_run))
    common = [t for t in a if t in b]
    same_text = [t for t in common if a[t]["generations"] == b[t]["generations"]]
    same_verdict = [t for t in common if a[t]["correct"] == b[t]["correct"]]
    differ = [t for t in common if t not in same_text]
    out = {
        "problems_in_both": len(common),
        "identical_generations": len(same_text),
        "identical_verdicts": len(same_verdict),
        "passed_original": sum(a[t]["correct"][0] for t in common),
        "passed_converted": sum(b[t]["correct"][0] for t in common),
        "differing": differ,
        "divergences": {},
    }
    replay = differ[: args.replay] + [t for t in args.check if t not in differ]
    if replay:
        torch.set_num_threads(1)
        from transformers import AutoModelForCausalLM

        import iha.hf  # noqa: F401  registers the converted classes
        from iha.eval import runner
        from iha.eval.humaneval import load_humaneval
        from iha.tokenizers import load_tokenizer

        tok = load_tokenizer(args.original)
        models = [
            AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval()
            for p in (args.original, args.converted)
        ]
        problems = {p.task_id: p for p in load_humaneval()}
        for t in replay:
            ids = runner._code_prompt(tok, "humaneval", problems[t], "chat", "tokenizer")
            n = max(r[t]["new_tokens"][0] for r in (a, b) if t in r) + 1
            out["divergences"][t] = first_divergence(models, tok, ids, n)
            print(t, out["divergences"][t], flush=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "divergences"}))


if __name__ == "__main__":
    main()
