"""`iha reproduce lm`: the six attention variants as decoder LMs at equal training FLOPs.

Each run is an ``iha.train`` run in its own directory ``OUT/runs/<experiment>/<variant>/lr<lr>/
s<seed>`` (config, ``metrics.jsonl`` with cumulative FLOPs, checkpoints), so ``iha plot`` reads
it and an interrupted run resumes from its last checkpoint. When a run has finished, its test
metrics go to ``result.json`` in that directory (written atomically); a finished run is never
trained again. :func:`run_lm_plan` runs the jobs (seed 0 with every learning rate first, then the
other seeds with the rate chosen on validation), :func:`summarise_lm` builds the tables and
:func:`write_lm_report` the report.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from iha.reproduce.convergence import classify
from iha.reproduce.lm_plans import LMExperiment, LMJob, LMPlan
from iha.reproduce.stats import (
    Interval,
    discordant,
    mcnemar_exact,
    mean_ci,
    paired_difference_ci,
)

RESULT_FILE = "result.json"
BASELINE = "global"
CORPUS_SOURCE = "iha.reproduce.lm_tasks:pydoc_corpus"
MQAR_TASK = "iha.reproduce.lm_tasks:MixedMQARTask"
RECALL_SOLVED = 0.95  # recall tasks: validation accuracy that counts as solved
RECALL_CHANCE = 0.5  # recall tasks: below this a flat run is on the guessing plateau (~1/3)


# ------------------------------------------------------------------------------- tasks and data
def make_task(exp: LMExperiment, seed: int, seq_len: int | None = None) -> Any:
    """The synthetic task of ``exp`` (MQAR or NIAH), optionally at another context length."""
    args = dict(exp.task_args)
    if exp.task == "mqar":
        from iha.reproduce.lm_tasks import MixedMQARTask

        return MixedMQARTask(seed=seed, **args)
    if exp.task == "niah":
        from iha.tasks import MultiKeyNIAHTask

        sizes = {"train": None, "val": 512, "test": 512}
        return MultiKeyNIAHTask(seq_len or exp.seq_len, seed=seed, split_sizes=sizes, **args)
    raise ValueError(f"task={exp.task!r} has no synthetic generator")


def vocab_size(exp: LMExperiment) -> int:
    """Token ids the model needs: the task's, or the byte tokenizer's 259."""
    if exp.task == "text":
        from iha.tokenizers import ByteTokenizer

        return ByteTokenizer().vocab_size
    return int(make_task(exp, 0).vocab_size)


def run_config(exp: LMExperiment, job: LMJob, run_dir: Path, steps: int):
    """The ``iha.train`` configuration of one job."""
    from iha.train.config import (
        CheckpointSection,
        DataConfig,
        LoggingSection,
        OptimConfig,
        RunConfig,
        TrainSection,
    )

    if exp.task == "text":
        data = DataConfig(source=CORPUS_SOURCE, tokenizer="byte", seq_len=exp.seq_len)
        val_batches = max(1, 4096 // (exp.batch_size * exp.seq_len))
    else:
        name = MQAR_TASK if exp.task == "mqar" else "niah"
        args = {k: list(v) if isinstance(v, tuple) else v for k, v in exp.task_args}
        if exp.task == "niah":
            args["seq_len"] = exp.seq_len
        data = DataConfig(source="synthetic", task=name, task_args=args)
        val_batches = max(1, 256 // exp.batch_size)
    every = max(1, steps // exp.evals)
    return RunConfig(
        run_dir=str(run_dir),
        model=exp.model_config(job.variant, vocab_size(exp)),
        data=data,
        optim=OptimConfig(
            lr=job.lr,
            min_lr_ratio=0.1,
            warmup_steps=min(exp.warmup_steps, steps),
            betas=[0.9, 0.98],
            weight_decay=0.1,
        ),  # fmt: skip
        train=TrainSection(
            max_steps=steps,
            batch_size=exp.batch_size,
            seed=job.seed,
            device="cpu",
            precision="fp32",
            log_every=max(1, steps // 50),
            val_every=every,
            val_batches=val_batches,
        ),  # fmt: skip
        checkpoint=CheckpointSection(every=every, keep=1),
        logging=LoggingSection(progress="none", tensorboard="off", plots=False),
    )


# ------------------------------------------------------------------------------------- FLOPs
def flop_accounting(exp: LMExperiment) -> dict[str, dict[str, Any]]:
    """Per variant: parameters, forward FLOPs per token (causal count), attention FLOPs vs the
    global variant in the causal count and in the paper's formula, and the steps that give every
    variant the training FLOPs of ``global`` at ``exp.budget_steps`` steps."""
    from iha.models import ModelConfig
    from iha.models.describe import count_parameters, model_flops

    vocab = vocab_size(exp)
    cfgs = {v: ModelConfig.from_dict(exp.model_config(v, vocab)) for v in exp.variants}
    base_cfg = ModelConfig.from_dict(exp.model_config(BASELINE, vocab))
    base = model_flops(base_cfg, exp.seq_len)
    tokens_per_step = exp.batch_size * exp.seq_len
    budget = 3 * base["total"] / exp.seq_len * tokens_per_step * exp.budget_steps
    out = {}
    for v, cfg in cfgs.items():
        f = model_flops(cfg, exp.seq_len)
        train_per_token = 3 * f["total"] / exp.seq_len
        steps = max(1, round(budget / (train_per_token * tokens_per_step)))
        out[v] = {
            "schedule": cfg.schedule_string(),
            "windows": sorted({cfg.layer_window(k) for k in cfg.layer_kinds()} - {None}),
            "params": count_parameters(cfg)["params"],
            "train_flops_per_token": train_per_token,
            "attn_vs_global": f["attention"] / base["attention"],
            "paper_attn_vs_global": f["paper_attention"] / base["paper_attention"],
            "total_vs_global": f["total"] / base["total"],
            "steps": steps,
            "train_flops": train_per_token * tokens_per_step * steps,
        }
    return out


# -------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def task_accuracy(model: torch.nn.Module, data: Any, batch_size: int = 128) -> dict[str, float]:
    """Loss and accuracy of ``model`` over the ``loss_mask`` positions of a task split.

    ``pos_acc``: fraction of queried values right; ``example_acc``: fraction of examples with
    every queried value right.
    """
    model.eval()
    loss_sum, right, n, whole = 0.0, 0, 0, 0
    for start in range(0, len(data), batch_size):
        b = data[start : start + batch_size]
        logits = model(b.inputs)  # (B, N, V)
        mask = b.loss_mask  # (B, N)
        loss_sum += float(F.cross_entropy(logits[mask], b.targets[mask], reduction="sum"))
        ok = (logits.argmax(-1) == b.targets) | ~mask  # (B, N)
        right += int(ok[mask].sum())
        n += int(mask.sum())
        whole += int(ok.all(dim=1).sum())
    return {"loss": loss_sum / max(n, 1), "pos_acc": right / max(n, 1),
            "example_acc": whole / max(len(data), 1)}  # fmt: skip


@torch.no_grad()
def corpus_loss(model: torch.nn.Module, split: str, seq_len: int, batch_size: int = 64) -> dict:
    """Token-mean loss (nats/byte) and bits per byte of ``model`` over a whole corpus split."""
    from iha.reproduce.lm_tasks import CorpusDocuments
    from iha.tokenizers import ByteTokenizer
    from iha.train.data import PackedStream

    docs = CorpusDocuments(split, ByteTokenizer())
    total = sum(len(ids) for ids, _ in docs.documents(0, 0, False, 0))
    stream = PackedStream(docs, seq_len, batch_size, False, 0)
    batches = max(1, total // (seq_len * batch_size))
    model.eval()
    loss_sum, n = 0.0, 0
    for _ in range(batches):
        b = stream.next_batch()
        logits = model(b.inputs)  # (B, N, V)
        loss_sum += float(
            F.cross_entropy(logits.flatten(0, 1), b.targets.flatten(), reduction="sum")
        )
        n += b.targets.numel()
    loss = loss_sum / n
    return {"loss": loss, "bits_per_byte": loss / math.log(2), "tokens": n}


def evaluate_job(exp: LMExperiment, job: LMJob, model: torch.nn.Module) -> dict[str, Any]:
    """Validation and test metrics of a trained model (``val`` picks the learning rate)."""
    if exp.task == "text":
        return {"val": corpus_loss(model, "val", exp.seq_len),
                "test": {"all": corpus_loss(model, "test", exp.seq_len)}}  # fmt: skip
    task = make_task(exp, job.seed)
    if exp.task == "mqar":
        val = task_accuracy(model, task.split("val"))
        test = {str(p): task_accuracy(model, task.with_pairs(p).split("test"))
                for p in exp.test_points}  # fmt: skip
        return {"val": val, "test": test}
    val = task_accuracy(model, task.split("val"))
    test = {str(n): task_accuracy(model, make_task(exp, job.seed, n).split("test"))
            for n in exp.test_points}  # fmt: skip
    return {"val": val, "test": test}


# --------------------------------------------------------------------------------------- runs
def job_dir(out: Path, job: LMJob) -> Path:
    return out / "runs" / job.experiment / job.variant / f"lr{job.lr:g}" / f"s{job.seed}"


def read_result(out: Path, job: LMJob) -> dict[str, Any] | None:
    path = job_dir(out, job) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def rule_status(record: dict[str, Any]) -> str:
    """The convergence rule (:func:`iha.reproduce.convergence.classify`) on a finished run:
    K = half its evaluations (3..10); a recall run is "solved" at validation accuracy >=
    ``RECALL_SOLVED`` and on the "plateau" below ``RECALL_CHANCE`` when its loss is flat."""
    pts = sorted((int(step), float(loss)) for step, loss in record["val_losses"].items())
    acc = (record.get("val") or {}).get("pos_acc")
    recall = not record["experiment"].startswith("text")
    return classify(
        [loss for _, loss in pts],
        positions=[step for step, _ in pts],
        solved=recall and acc is not None and acc >= RECALL_SOLVED,
        at_chance=recall and acc is not None and acc < RECALL_CHANCE,
    ).status


def run_job(exp: LMExperiment, job: LMJob, out: Path, steps: int) -> dict[str, Any]:
    """Train (or resume, or reuse) one job and return its record."""
    from iha.train.trainer import Trainer

    done = read_result(out, job)
    if done is not None:
        return done
    run_dir = job_dir(out, job)
    started = time.time()
    trainer = Trainer(run_config(exp, job, run_dir, steps), resume=True)
    try:
        trainer.prepare()
        result = trainer.run()
        if result.reason not in ("done", "nonfinite"):
            raise RuntimeError(f"run {job.key} stopped early ({result.reason}); resume it")
        metrics = {"val": None, "test": None}
        if result.reason == "done":
            metrics = evaluate_job(exp, job, trainer.model)
        val_losses = {
            int(json.loads(line)["step"]): json.loads(line)["loss"]
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip() and json.loads(line).get("split") == "val"
        }
    finally:
        trainer.close()
    record = {
        "key": job.key,
        "experiment": job.experiment,
        "variant": job.variant,
        "lr": job.lr,
        "seed": job.seed,
        "steps": trainer.step,
        "train_flops": trainer.flops,
        "tokens": trainer.tokens,
        "reason": result.reason,
        "val_losses": val_losses,
        **metrics,
        "run_dir": str(run_dir),
        "seconds": time.time() - started,
    }
    record["convergence"] = rule_status(record)
    _write_atomic(run_dir / RESULT_FILE, json.dumps(record, indent=1))
    return record


def _in_worker(exp: LMExperiment, job: LMJob, out: Path, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    return run_job(exp, job, out, steps)


def finished_lm_records(plan: LMPlan, out: Path) -> list[dict[str, Any]]:
    """The records of every finished run of ``plan``'s experiments in ``out`` (trains nothing)."""
    names = {e.name for e in plan.experiments}
    records = []
    for path in sorted((out / "runs").glob(f"**/{RESULT_FILE}")):
        record = json.loads(path.read_text())
        if record["experiment"] in names and record["seed"] in plan.seeds:
            records.append(record)
    return records


def selection_score(exp: LMExperiment, record: dict[str, Any]) -> float:
    """Higher is better: validation accuracy (recall tasks) or minus validation loss (text)."""
    val = record.get("val")
    if not val:
        return -math.inf
    score = -val["loss"] if exp.task == "text" else val["pos_acc"]
    return score if math.isfinite(score) else -math.inf


def chosen_lr(exp: LMExperiment, records: list[dict[str, Any]], variant: str) -> float | None:
    """The learning rate of ``variant`` with the best seed-0 validation score."""
    mine = [r for r in records if r["experiment"] == exp.name and r["variant"] == variant
            and r["seed"] == 0]  # fmt: skip
    if not mine:
        return None
    return max(mine, key=lambda r: (selection_score(exp, r), -r["lr"]))["lr"]


def run_lm_plan(
    plan: LMPlan,
    out: Path,
    *,
    workers: int = 1,
    threads: int = 1,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every job of ``plan`` (finished ones are reused); returns all records.

    Per experiment: every variant x learning rate with seed 0 first, then the other seeds at
    each variant's chosen rate. Experiments run in plan order, so an interrupted plan leaves the
    first experiments complete.
    """
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))

    def run_all(exp: LMExperiment, jobs: list[LMJob], steps: dict[str, int]) -> None:
        todo = [j for j in jobs if read_result(out, j) is None]
        records.extend(r for j in jobs if (r := read_result(out, j)) is not None)
        if pool is None:
            results = (run_job(exp, j, out, steps[j.variant]) for j in todo)
        else:
            results = pool.map(_in_worker, [exp] * len(todo), todo, [out] * len(todo),
                               [steps[j.variant] for j in todo], [threads] * len(todo))  # fmt: skip
        for rec in results:
            records.append(rec)
            score = {
                k: round(v.get("pos_acc", v["loss"]), 4) for k, v in (rec["test"] or {}).items()
            }
            log(f"[{time.perf_counter() - start:7.1f}s] {rec['key']}: {rec['steps']} steps, "
                f"test {score} ({rec['seconds']:.0f}s)")  # fmt: skip

    try:
        for exp in plan.experiments:
            steps = {v: a["steps"] for v, a in flop_accounting(exp).items()}
            first = plan.seeds[0]
            grid = [LMJob(exp.name, v, lr, first) for v in exp.variants for lr in exp.lrs]
            log(f"{exp.name}: {len(grid)} learning-rate runs (seed {first}), steps {steps}")
            run_all(exp, grid, steps)
            rest = []
            for v in exp.variants:
                lr = chosen_lr(exp, records, v)
                rest += [LMJob(exp.name, v, lr, s) for s in plan.seeds[1:]]
            run_all(exp, rest, steps)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return records


# ------------------------------------------------------------------------------------ summary
def summarise_experiment(exp: LMExperiment, records: list[dict[str, Any]], seeds) -> dict:
    """Per variant at its chosen learning rate: test metric per point (mean ± 95% CI over seeds)
    and the paired per-seed difference to ``global``; the learning-rate grid on seed 0."""
    mine = [r for r in records if r["experiment"] == exp.name]
    metric = "loss" if exp.task == "text" else "pos_acc"
    points = ["all"] if exp.task == "text" else [str(p) for p in exp.test_points]
    grid = {v: {r["lr"]: selection_score(exp, r) for r in mine
                if r["variant"] == v and r["seed"] == seeds[0]}
            for v in exp.variants}  # fmt: skip
    rows: dict[str, dict[str, Any]] = {}
    for v in exp.variants:
        lr = chosen_lr(exp, mine, v)
        runs = [r for r in mine if r["variant"] == v and r["lr"] == lr and r["test"]]
        by_seed = {p: {r["seed"]: r["test"][p][metric] for r in runs} for p in points}
        rows[v] = {
            "lr": lr,
            "n_seeds": len(runs),
            "steps": runs[0]["steps"] if runs else None,
            "train_flops": runs[0]["train_flops"] if runs else None,
            "rule": Counter(rule_status(r) for r in runs),
            "test": {p: mean_ci(list(s.values())) if s else None for p, s in by_seed.items()},
            "by_seed": by_seed,
            "run_dirs": [r["run_dir"] for r in sorted(runs, key=lambda r: r["seed"])],
        }
    base = rows.get(BASELINE)
    for v, row in rows.items():
        row["vs_global"] = {}
        for p in points:
            if base is None or v == BASELINE:
                row["vs_global"][p] = None
                continue
            a, b = row["by_seed"][p], base["by_seed"][p]
            common = sorted(set(a) & set(b))
            row["vs_global"][p] = (
                paired_difference_ci([a[s] for s in common], [b[s] for s in common])
                if common
                else None
            )
    return {"experiment": exp, "metric": metric, "points": points, "rows": rows, "grid": grid,
            "n_seeds": len(seeds)}  # fmt: skip


def summarise_lm(plan: LMPlan, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [summarise_experiment(e, records, plan.seeds) for e in plan.experiments]


def _better(metric: str, diff: Interval) -> str:
    """Plain reading of a paired difference (variant - global)."""
    if diff.n < 2 or math.isnan(diff.half_width):
        return "one seed: no interval"
    good = diff.low > 0 if metric != "loss" else diff.high < 0
    bad = diff.high < 0 if metric != "loss" else diff.low > 0
    return (
        "better than global"
        if good
        else "worse than global"
        if bad
        else "no significant difference"
    )


def solved_by_seed(row: dict[str, Any]) -> dict[int, bool]:
    """Per seed: test accuracy >= ``RECALL_SOLVED`` at every test point."""
    per_point = [set(v) for v in row["by_seed"].values()]
    seeds = set.intersection(*per_point) if per_point else set()
    return {s: all(v[s] >= RECALL_SOLVED for v in row["by_seed"].values()) for s in sorted(seeds)}


def solved_lines(summaries: list[dict[str, Any]]) -> list[str]:
    """Solved or not per run, each variant against global by the exact McNemar test, per
    recall experiment and pooled over the MQAR experiments (pairs = (experiment, seed))."""
    recall = [s for s in summaries if s["experiment"].task != "text"]
    if not recall:
        return []
    lines = [
        "## Solved or not (exact McNemar against global)",
        "",
        f"A run is solved when its test accuracy is >= {RECALL_SOLVED:.0%} at every test point. "
        "Discordant pairs: (variant solved, global not) : (global solved, variant not).",
        "",
        "| experiment | variant | solved | global solved | discordant | exact McNemar p |",
        "|---|---|---|---|---|---|",
    ]
    groups = [(s["experiment"].name, [s]) for s in recall]
    mqar = [s for s in recall if s["experiment"].task == "mqar"]
    if len(mqar) > 1:
        groups.append(("MQAR pooled", mqar))
    for name, ss in groups:
        for v in ss[0]["rows"]:
            if v == BASELINE:
                continue
            a, b = {}, {}
            for s in ss:
                rows = s["rows"]
                for seed, ok in solved_by_seed(rows[v]).items():
                    a[(s["experiment"].name, seed)] = ok
                for seed, ok in solved_by_seed(rows[BASELINE]).items():
                    b[(s["experiment"].name, seed)] = ok
            only_a, only_b, n = discordant(a, b)
            if n == 0:
                continue
            keys = sorted(set(a) & set(b))
            lines.append(f"| {name} | {v} | {sum(a[k] for k in keys)}/{n} | "
                         f"{sum(b[k] for k in keys)}/{n} | {only_a}:{only_b} | "
                         f"{mcnemar_exact(only_a, only_b):.3f} |")  # fmt: skip
    return lines + [""]


def verdicts(summaries: list[dict[str, Any]]) -> list[str]:
    """One sentence per experiment: which variants differ significantly from global."""
    out = []
    for s in summaries:
        exp, metric = s["experiment"], s["metric"]
        seeds = [row["n_seeds"] for row in s["rows"].values()]
        if not any(seeds):
            out.append(f"{exp.name}: not run (no finished runs).")
            continue
        if min(seeds) < 2:
            missing = [v for v, row in s["rows"].items() if row["n_seeds"] < 2]
            out.append(f"{exp.name}: incomplete, fewer than 2 seeds for {', '.join(missing)}: "
                       "no comparison.")  # fmt: skip
            continue
        parts = []
        for v, row in s["rows"].items():
            if v == BASELINE:
                continue
            for p, diff in row["vs_global"].items():
                if diff is None:
                    continue
                verdict = _better(metric, diff)
                if verdict in ("better than global", "worse than global"):
                    where = "" if p == "all" else f" at {_point_name(exp, p)}"
                    parts.append(f"{v} {verdict}{where} ({_fmt(metric, diff, signed=True)}, "
                                 f"paired t {diff.format_p()})")  # fmt: skip
        text = "; ".join(parts) if parts else "no variant differs significantly from global"
        out.append(f"{exp.name}: {text}.")
    return out


def _point_name(exp: LMExperiment, p: str) -> str:
    return {"mqar": f"{p} pairs", "niah": f"length {p}"}.get(exp.task, p)


def _fmt(metric: str, iv: Interval | None, signed: bool = False) -> str:
    if iv is None:
        return "-"
    if metric == "loss":
        text = iv.format(3)
    else:
        text = iv.format(1, scale=100.0)
    return ("+" + text) if signed and iv.mean >= 0 else text


def _fmt_diff(metric: str, iv: Interval | None) -> str:
    if iv is None:
        return "-"
    return f"{_fmt(metric, iv, signed=True)} ({iv.format_p()})"


# ------------------------------------------------------------------------------------- report
def experiment_section(s: dict[str, Any], flops_table: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown: sizes, FLOP accounting, LR grid, results and paired differences."""
    exp: LMExperiment = s["experiment"]
    metric, points = s["metric"], s["points"]
    unit = "test loss (nats/byte)" if metric == "loss" else "test accuracy % (queried values)"
    args = ", ".join(f"{k}={v}" for k, v in exp.task_args) or "pydoc_data.topics, bytes"
    lines = [
        f"### {exp.name}",
        "",
        f"Task {exp.task} ({args}); training context N = {exp.seq_len}; d_model "
        f"{exp.hidden_size}, {exp.num_layers} layers, {exp.num_heads} heads, P = "
        f"{exp.num_pseudo}; batch {exp.batch_size}; FLOP budget = global at {exp.budget_steps} "
        f"steps; learning rates {', '.join(f'{x:g}' for x in exp.lrs)} (AdamW, warmup "
        f"{exp.warmup_steps}, cosine to 0.1x).",
        "",
        "| variant | schedule | windows | params | train FLOPs/token | attention vs global "
        "(causal count) | attention vs global (paper's formula) | steps | train FLOPs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v, a in flops_table.items():
        lines.append(
            f"| {v} | {a['schedule']} | {','.join(map(str, a['windows'])) or '-'} | "
            f"{a['params']:,} | {a['train_flops_per_token']:,.0f} | {a['attn_vs_global']:.3f} | "
            f"{a['paper_attn_vs_global']:.3f} | {a['steps']} | {a['train_flops']:.3g} |"
        )
    head = " | ".join(f"{_point_name(exp, p)}" for p in points)
    diff_head = " | ".join(f"minus global, {_point_name(exp, p)}" for p in points)
    lines += [
        "",
        f"{unit}, mean ± 95% t-interval over seeds at the chosen learning rate, and the paired "
        "per-seed difference to global:",
        "",
        f"| variant | lr (chosen) | seeds | convergence rule | {head} | {diff_head} |",
        "|---|---|---|---|" + "---|" * (2 * len(points)),
    ]
    for v, row in s["rows"].items():
        cells = " | ".join(_fmt(metric, row["test"][p]) for p in points)
        diffs = " | ".join(_fmt_diff(metric, row["vs_global"][p]) for p in points)
        lr = "-" if row["lr"] is None else f"{row['lr']:g}"
        lines.append(
            f"| {v} | {lr} | {row['n_seeds']} | {_rule_cell(row['rule'])} | "
            f"{cells} | {diffs} |"
        )
    grid = "; ".join(
        f"{v}: " + ", ".join(f"{lr:g} -> {_score(metric, sc)}" for lr, sc in sorted(g.items()))
        for v, g in s["grid"].items() if g
    )  # fmt: skip
    n_runs = sum(row["n_seeds"] for row in s["rows"].values())
    lines += ["", f"Finished runs at the chosen rates: {n_runs} of "
              f"{len(exp.variants) * s['n_seeds']} planned."]  # fmt: skip
    sel = "validation loss" if metric == "loss" else "validation accuracy %"
    lines += ["", f"Learning-rate grid (seed 0, {sel}): {grid}.", ""]
    return lines


def _rule_cell(counts: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def _score(metric: str, score: float) -> str:
    if not math.isfinite(score):
        return "diverged"
    return f"{-score:.3f}" if metric == "loss" else f"{100 * score:.1f}"


def plot_experiment(s: dict[str, Any], out: Path) -> list[Path]:
    """``iha plot`` of the seed-0 run of every variant at its chosen rate (loss vs FLOPs)."""
    from iha.train.plot import plot_runs

    runs, labels = [], []
    for v, row in s["rows"].items():
        if row["run_dirs"]:
            runs.append(row["run_dirs"][0])
            labels.append(v)
    if not runs:
        return []
    target = out / "plots" / s["experiment"].name.replace("/", "_")
    return plot_runs(runs, target, labels=labels, smooth=0.6)


def machine_description() -> dict[str, Any]:
    from iha.reproduce.synthetic import machine_description as describe_machine

    return describe_machine()


def write_lm_report(
    plan: LMPlan, summaries: list[dict[str, Any]], out: Path, *, command: str, wall: float
) -> Path:
    """``report.md`` and ``summary.json`` in ``out``; returns the report path."""
    from iha.reproduce.lm_tasks import corpus_fingerprint

    m = machine_description()
    lines = [
        f"# Language-model comparison of the six attention variants ({plan.mode})",
        "",
        f"Command: `{command}`. Seeds: {', '.join(map(str, plan.seeds))}. The runs' wall "
        f"times summed, divided by this command's workers: {wall / 60:.1f} min. Machine: "
        f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}.",
        "",
        "Every variant gets the training FLOPs of the global model at the stated steps (forward "
        "FLOPs x 3, causal masks and windows counted exactly by `iha.flops`); a costlier variant "
        "runs fewer steps. The learning rate is chosen per variant on seed 0's validation metric "
        "and the other seeds run at that rate. Every run trains for its fixed budget (no early "
        "stopping). Convergence rule (`iha.reproduce.convergence`): over the last K = half the "
        "evaluations (3..10), a one-sided t-test of the validation-loss slope; 'improving' "
        "when it falls significantly (p < 0.05: the budget ran out first), else 'converged'; "
        f"a recall run is 'solved' at validation accuracy >= {RECALL_SOLVED} and on the "
        f"'plateau' (flat at chance) below {RECALL_CHANCE}. Differences to global: paired t "
        "over seeds, with its p-value.",
        "",
    ]
    corpus = corpus_fingerprint()
    plots: list[str] = []
    for s in summaries:
        exp = s["experiment"]
        lines += experiment_section(s, flop_accounting(exp))
        if exp.task == "text":
            sizes, digest = corpus["bytes"], corpus["blake2b"]
            lines += [
                f"Corpus: pydoc_data.topics of Python {m['python']}, {sizes} bytes per split, "
                f"blake2b {digest}.",
                "",
            ]
        for path in plot_experiment(s, out):
            rel = path.relative_to(out)
            plots.append(str(rel))
            if path.name == "loss_vs_flops.png":
                lines += [f"![{exp.name}: loss vs training FLOPs]({rel})", ""]
    lines += ["## Outcome", ""] + [f"- {v}" for v in verdicts(summaries)] + [""]
    lines += solved_lines(summaries)
    path = out / "report.md"
    _write_atomic(path, "\n".join(lines))
    _write_atomic(out / "summary.json", json.dumps(_jsonable(summaries), indent=1))
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Interval):
        return {"mean": obj.mean, "half_width": obj.half_width, "n": obj.n}
    if isinstance(obj, LMExperiment):
        return {"name": obj.name, "task": obj.task}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
