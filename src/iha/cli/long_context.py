"""`iha long-context`: a CPU rehearsal of the long-context stage: pretrain short, extend 4x,
evaluate RULER.

The paper fine-tunes its pretrained 8k models at 64k tokens and then evaluates RULER. This runs
the same protocol with the same commands on tiny byte-level models, in minutes on a CPU::

    iha long-context --out docs/results/long-context

1. writes RULER-format documents (``iha.eval.ruler`` prompts with their answers, seeds disjoint
   from the evaluation's) for pretraining at ``--short`` tokens and for the extension at 4x;
2. ``iha train`` pretrains a ``global`` and an ``iha`` model at ``--short`` tokens;
3. ``iha train`` extends each with ``train.init_from`` to ``--long`` tokens, once without and
   once with RoPE scaling (``--rope-type``, factor long / short, original = short); the IHA window
   stays the one stored at pretraining;
4. ``iha eval ruler`` scores the pretrained models at ``--short`` and at ``--long`` (no
   extension) and the extended ones at ``--long``;
5. writes ``results.md`` (the table, the commands, the settings, wall-clock times) and
   ``results.json`` under ``--out``; configs and logs sit next to them, runs under ``--work``.

Tiny models trained for minutes on synthetic documents: the numbers check the pipeline and show
what a 4x extension does to retrieval at this scale, not the paper's 2.4B result.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("global", "iha")
MODEL = {
    "vocab_size": 259,  # the byte tokenizer
    "hidden_size": 64,
    "num_hidden_layers": 5,
    "num_attention_heads": 4,
    "num_pseudo_heads": 2,  # iha: IIIIG, window N / (2 P^2) tokens
}
ANSWER_TOKENS = 48  # generation budget: a uuid is 36 bytes


DEFAULT_TASKS = ("niah_multikey_1", "niah_multikey_2", "niah_multikey_3")  # the paper's headline


def _fits(task: str, length: int) -> bool:
    from iha.eval import ruler
    from iha.tokenizers import ByteTokenizer

    try:
        ruler.generate_sample(task, ByteTokenizer(), length, tokens_to_generate=ANSWER_TOKENS)
    except ValueError:
        return False
    return True


def write_documents(path: Path, tasks: list[str], length: int, count: int, seed: int) -> None:
    """``count`` RULER prompts of at most ``length`` tokens with their answers, as JSONL
    (``prompt``, ``response``); lengths vary between 60% and 100% of ``length``."""
    from iha.eval import ruler
    from iha.tokenizers import ByteTokenizer

    tokenizer, rng = ByteTokenizer(), random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            task = tasks[i % len(tasks)]
            target = rng.randint(int(0.6 * length), length)
            try:
                sample, _ = ruler.generate_sample(
                    task, tokenizer, target, index=i, seed=seed, tokens_to_generate=ANSWER_TOKENS
                )
            except ValueError:  # this sample's fixed parts need more room: the full length
                sample, _ = ruler.generate_sample(
                    task, tokenizer, length, index=i, seed=seed, tokens_to_generate=ANSWER_TOKENS
                )
            record = {"prompt": "<|bos|>" + sample.input, "response": " " + sample.outputs[0]}
            f.write(json.dumps(record) + "\n")


def _config(run_dir: Path, data: Path, seq_len: int, steps: int, batch: int, lr: float,
            model: dict[str, Any], init_from: Path | None = None) -> str:
    from iha.train.config import dump_toml

    raw: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model": model,
        "data": {"source": "jsonl", "path": str(data), "prompt_field": "prompt",
                 "response_field": "response", "seq_len": seq_len, "val_fraction": 0.05,
                 "tokenizer": "byte"},
        "optim": {"lr": lr, "warmup_steps": max(1, steps // 10)},
        "train": {"max_steps": steps, "batch_size": batch, "device": "cpu", "precision": "fp32",
                  "log_every": max(1, steps // 10), "val_batches": 2},
        "checkpoint": {"every": 0, "keep": 1},
        "logging": {"progress": "none", "tensorboard": "off", "plots": False},
    }
    if init_from is not None:
        raw["train"]["init_from"] = str(init_from)
    return dump_toml(raw)


class _Steps:
    """Runs ``iha`` commands in this process, logging each with its wall-clock time."""

    def __init__(self, log: Path) -> None:
        self.log, self.commands, self.seconds = log, [], {}

    def run(self, name: str, argv: list[str]) -> None:
        from iha.cli import main

        line = "iha " + " ".join(argv)
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
        start = time.perf_counter()
        code = main(argv)
        self.seconds[name] = round(time.perf_counter() - start, 1)
        self.commands.append(line)
        with self.log.open("a", encoding="utf-8") as f:
            f.write(f"{line}  # {self.seconds[name]} s, exit {code}\n")
        if code != 0:
            raise RuntimeError(f"{line} exited with {code}")


def _val_loss(run: Path) -> float | None:
    """The last validation loss (nats per answer token) in a run's metrics, or None."""
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in losses if m.get("split") == "val"]
    return losses[-1] if losses else None


def _ruler_scores(out: Path) -> dict[str, dict[int, float]]:
    summary = json.loads((out / "ruler.json").read_text(encoding="utf-8"))
    return {t: {int(n): v for n, v in by.items()} for t, by in summary["scores"].items()}


def rehearse(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole rehearsal; returns the rows of the table."""
    import torch

    torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(args.work)
    for folder in (out / "configs", work):
        folder.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    log.write_text("", encoding="utf-8")
    steps = _Steps(log)
    tasks = list(args.tasks)
    short_tasks = [t for t in tasks if _fits(t, args.short)]
    factor = args.long / args.short
    pre_docs, ext_docs = work / "data" / "pretrain.jsonl", work / "data" / "extend.jsonl"
    write_documents(pre_docs, short_tasks, args.short, args.pretrain_docs, seed=1001)
    write_documents(ext_docs, tasks, args.long, args.extend_docs, seed=2002)
    rope = {"rope_type": args.rope_type, "factor": factor,
            "original_max_position_embeddings": args.short}
    arms = {"no scaling": None, f"{args.rope_type} x{factor:g}": rope}
    rows: list[dict[str, Any]] = []

    def evaluate(name: str, run: Path, length: int, eval_tasks: list[str], label: str) -> None:
        target = work / "eval" / name
        steps.run(f"eval {name}", [
            "eval", "ruler", str(run), "--lengths", str(length), "--tasks", *eval_tasks,
            "--limit", str(args.limit), "--max-new-tokens", str(ANSWER_TOKENS),
            "--batch-size", "4", "--tokenizer", "byte", "--device", "cpu", "--out", str(target),
        ])
        scores = _ruler_scores(target)
        rows.append({"model": name.split("-")[0], "stage": label, "length": length,
                     "val_loss": _val_loss(run),
                     "scores": {t: by[length] for t, by in scores.items()}})

    for variant in VARIANTS:
        model = {**MODEL, "attention_variant": variant, "max_position_embeddings": args.short}
        pre_run = work / f"{variant}-pretrain"
        cfg = out / "configs" / f"{variant}-pretrain.toml"
        cfg.write_text(_config(pre_run, pre_docs, args.short, args.pretrain_steps, args.batch,
                               args.lr, model), encoding="utf-8")
        steps.run(f"pretrain {variant}", ["train", str(cfg)])
        evaluate(f"{variant}-pretrained-short", pre_run, args.short, short_tasks,
                 f"pretrained ({args.short})")
        evaluate(f"{variant}-pretrained-long", pre_run, args.long, tasks,
                 "pretrained, not extended")
        for arm, scaling in arms.items():
            slug = "scaled" if scaling else "plain"
            ext_run = work / f"{variant}-extend-{slug}"
            ext_model = {"max_position_embeddings": args.long}
            if scaling:
                ext_model["rope_scaling"] = scaling
            cfg = out / "configs" / f"{variant}-extend-{slug}.toml"
            cfg.write_text(_config(ext_run, ext_docs, args.long, args.extend_steps,
                                   args.extend_batch, args.extend_lr, ext_model, pre_run),
                           encoding="utf-8")
            steps.run(f"extend {variant} {slug}", ["train", str(cfg)])
            evaluate(f"{variant}-extended-{slug}", ext_run, args.long, tasks,
                     f"extended, {arm}")
    result = {"settings": vars(args), "model": MODEL, "rows": rows,
              "commands": steps.commands, "seconds": steps.seconds}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out / "results.md").write_text(_markdown(result, tasks), encoding="utf-8")
    return result


def _markdown(result: dict[str, Any], tasks: list[str]) -> str:
    s = result["settings"]
    head = "| model | stage | val loss | length | " + " | ".join(tasks) + " | avg |"
    lines = [head, "|---" * (len(tasks) + 5) + "|"]
    for row in result["rows"]:
        cells = [f"{100 * row['scores'][t]:.1f}" if t in row["scores"] else "-" for t in tasks]
        avg = 100 * sum(row["scores"].values()) / len(row["scores"])
        loss = "-" if row["val_loss"] is None else f"{row['val_loss']:.3f}"
        lines.append(f"| {row['model']} | {row['stage']} | {loss} | {row['length']} | "
                     + " | ".join(cells) + f" | {avg:.1f} |")
    total = sum(result["seconds"].values())
    return "\n".join([
        "# Long-context rehearsal (CPU, tiny models)",
        "",
        f"RULER string_match_all (%), {s['limit']} samples per task and length, greedy. "
        f"Pretraining at {s['short']} tokens, extension to {s['long']} tokens "
        f"({s['long'] // s['short']}x). val loss: the run's last validation loss, nats per "
        "answer token (the training loss is on the answers only). Tiny models trained for "
        "minutes: docs/long-context.md says what this table does and does not show.",
        "",
        *lines,
        "",
        "Command: `iha long-context " + " ".join(
            f"--{k.replace('_', '-')} " + (" ".join(v) if isinstance(v, list) else str(v))
            for k, v in s.items()) + "`",
        "",
        f"Wall-clock: {total:.0f} s in all; per step (s): "
        + ", ".join(f"{k} {v}" for k, v in result["seconds"].items()),
        "",
        "Steps (configs in `configs/`):",
        "",
        *[f"    {c}" for c in result["commands"]],
        "",
    ])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results/long-context", help="results, configs, log")
    parser.add_argument("--work", default="runs/long-context", help="runs, data, eval outputs")
    parser.add_argument("--short", type=int, default=512, help="pretraining length (tokens)")
    parser.add_argument("--long", type=int, default=2048, help="extended length (tokens)")
    parser.add_argument("--rope-type", default="yarn", choices=("linear", "yarn", "dynamic"),
                        help="RoPE scaling of the scaled extension arm (factor long / short)")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS),
                        help="RULER tasks to train on and evaluate (synthetic ones: qa_1/qa_2 "
                        "need SQuAD / HotpotQA data)")
    parser.add_argument("--pretrain-steps", type=int, default=24, help="pretraining steps")
    parser.add_argument("--pretrain-docs", type=int, default=80,
                        help="pretraining documents written (--short tokens each)")
    parser.add_argument("--batch", type=int, default=2, help="pretraining batch (sequences)")
    parser.add_argument("--lr", type=float, default=3e-3, help="pretraining learning rate")
    parser.add_argument("--extend-steps", type=int, default=3, help="extension steps")
    parser.add_argument("--extend-docs", type=int, default=12,
                        help="extension documents written (--long tokens each)")
    parser.add_argument("--extend-batch", type=int, default=1, help="extension batch (sequences)")
    parser.add_argument("--extend-lr", type=float, default=1e-3, help="extension learning rate")
    parser.add_argument("--limit", type=int, default=2, help="RULER samples per task")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")


def run(args: argparse.Namespace) -> int:
    settings = {k: v for k, v in vars(args).items() if k != "command" and not k.startswith("_")}
    args = argparse.Namespace(**settings)  # the settings alone, as results.json records them
    if args.long <= args.short or args.short < 1:
        print("iha long-context: error: --long must exceed --short >= 1", file=sys.stderr)
        return 2
    from iha.eval import ruler

    unknown = sorted(set(args.tasks) - set(ruler.TASKS))
    if unknown:
        print(f"iha long-context: error: --tasks {unknown} are not RULER tasks; "
              f"expected some of {list(ruler.TASKS)}", file=sys.stderr)
        return 2
    try:
        rehearse(args)
    except (RuntimeError, ValueError) as e:
        print(f"iha long-context: error: {e}", file=sys.stderr)
        return 1
    print((Path(args.out) / "results.md").read_text(encoding="utf-8"))
    return 0
