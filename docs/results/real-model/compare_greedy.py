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
    """Greedy decode with every model in lock-step (full forwards of the shared prefix) to the
    first step where their argmax differs."""
    ids = list(prompt_ids)
    for step in range(max_new):
        x = torch.tensor([ids])
        logits = [m(input_ids=x).logits[0, -1].double() for m in models]
        picks = [int(lg.argmax()) for lg in logits]
        if picks[0] != picks[1]:
            a, b = picks
            return {
                "step": step,
                "prefix": tokenizer.decode(ids[len(prompt_ids) :]),
                "original_token": tokenizer.decode([a]),
                "converted_token": tokenizer.decode([b]),
                "original_gap": float(logits[0][a] - logits[0][b]),
                "converted_gap": float(logits[1][b] - logits[1][a]),
                "max_abs_logit_diff": float((logits[0] - logits[1]).abs().max()),
            }
        ids.append(picks[0])
        if picks[0] == tokenizer.eos_token_id:
            break
    return {"step": None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("original_run")
    ap.add_argument("converted_run")
    ap.add_argument("--original", default="/work/assets/smollm2-hf")
    ap.add_argument("--converted", default="/work/assets/smollm2-iha-p2")
    ap.add_argument("--replay", type=int, default=5, help="differing problems to replay")
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
    if differ and args.replay:
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
        for t in differ[: args.replay]:
            ids = runner._code_prompt(tok, "humaneval", problems[t], "chat", "tokenizer")
            n = max(a[t]["new_tokens"][0], b[t]["new_tokens"][0]) + 1
            out["divergences"][t] = first_divergence(models, tok, ids, n)
            print(t, out["divergences"][t], flush=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "divergences"}))


if __name__ == "__main__":
    main()
