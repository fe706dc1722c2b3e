"""The decisive plan: the primary comparisons with enough seeds, bracketed learning rates and
the convergence rule (pre-registered in docs/results/preregistration.md).

Every setting is that of the ``full`` plans (``iha.reproduce.plans.full_plan``,
``iha.reproduce.lm_plans.full_plan``) except:

* seeds: :data:`SEEDS` per arm (the power calculation of the pre-registration);
* learning rate: each arm starts from its full-plan grid, runs it with seeds :data:`GRID_SEEDS`,
  and extends the grid one step beyond an edge (ladder 1, 3, 10, 30, ...) until the rate with
  the best mean validation score has a tried neighbour on both sides (:func:`bracket`);
* synthetic early stopping also needs the convergence rule (``converge_window`` =
  :data:`~iha.reproduce.convergence.MAX_WINDOW`);
* the text experiment trains 10x the committed tokens (2,000 steps of global), evaluated 20
  times, for global, global_local, iha and iha_global;
* only the arms of the primary comparisons run (no ablations, no head sweeps, no NIAH).

Runs are resumable: one directory per run (the synthetic ``jobs/<key>/`` with a checkpoint per
epoch, the LM ``runs/<experiment>/<variant>/lr<lr>/s<seed>/`` of ``iha train``), and each
finished record is appended once to ``runs.jsonl`` of its suite. Stages run cheapest first:
binary composition, ternary composition, MQAR, text.

    python -m iha.reproduce.decisive run --out results/decisive     # start or resume
    python -m iha.reproduce.decisive report --out results/decisive  # interim report
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from iha.reproduce import lm as lm_mod
from iha.reproduce import lm_plans, plans
from iha.reproduce import synthetic as syn
from iha.reproduce.convergence import MAX_WINDOW, classify
from iha.reproduce.stats import (
    discordant,
    mcnemar_exact,
    mcnemar_power,
    paired_t_power,
    paired_t_test,
)
from iha.validate import check_int

SEEDS = 10
TEXT_SEEDS = 11  # the power calculation's answer for text (see power_lines)
GRID_SEEDS = (0, 1)
LR_MIN, LR_MAX = 1e-5, 1.0
SOLVED = 0.95  # MQAR: test per-position accuracy that counts as solved


# ------------------------------------------------------------------------- learning-rate grid
def next_rate(lr: float, up: bool) -> float:
    """The neighbour of ``lr`` on the ladder ..., 1e-3, 3e-3, 1e-2, 3e-2, ... (up or down)."""
    if not (isinstance(lr, float | int) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr={lr!r} must be a positive finite number")
    e = math.floor(math.log10(lr) + 1e-9)
    mantissa = lr / 10.0**e
    three = mantissa >= 2.0
    if up:
        out = 10.0 ** (e + 1) if three else 3.0 * 10.0**e
    else:
        out = 10.0**e if three else 3.0 * 10.0 ** (e - 1)
    return float(f"{out:.3g}")


def bracket(scores: dict[float, float]) -> tuple[float, float | None]:
    """(best rate, next rate to try or None): None when the best rate has a tried neighbour on
    each side (both no better, being the best) or the ladder left [LR_MIN, LR_MAX].

    Args:
        scores: mean validation score per tried rate, higher is better (non-finite: worst).
    """
    if not scores:
        raise ValueError("scores must hold at least one learning rate")
    lrs = sorted(scores)
    key = {lr: (s if math.isfinite(s) else -math.inf) for lr, s in scores.items()}
    best = max(lrs, key=lambda lr: (key[lr], -lr))
    i = lrs.index(best)
    if i == 0:
        nxt = next_rate(best, up=False)
        return best, nxt if nxt >= LR_MIN else None
    if i == len(lrs) - 1:
        nxt = next_rate(best, up=True)
        return best, nxt if nxt <= LR_MAX else None
    return best, None


# ------------------------------------------------------------------------------------- arms
@dataclass(frozen=True)
class Arm:
    """One model of one experiment: its starting grid and how to run and score a job."""

    suite: str  # "synthetic" | "lm"
    experiment: str
    variant: str  # synthetic: kind ("mha", "iha", "simplicial"); lm: attention_variant
    lrs: tuple[float, ...]

    @property
    def name(self) -> str:
        return f"{self.experiment}/{self.variant}"


@dataclass(frozen=True)
class Comparison:
    """One pre-registered primary comparison: ``a`` vs ``b`` on ``experiments``.

    ``test`` is "paired_t" (continuous metric, paired by seed) or "mcnemar" (solved or not,
    exact, pairs = (experiment, seed), pooled over ``experiments``).
    """

    name: str
    experiments: tuple[str, ...]
    a: str
    b: str
    metric: str  # "test_pos_acc" | "test_loss" | "solved"
    test: str


@dataclass(frozen=True)
class DecisivePlan:
    seeds: tuple[int, ...]
    grid_seeds: tuple[int, ...]
    relations: tuple[plans.RelationsExperiment, ...]
    lm: tuple[lm_plans.LMExperiment, ...]
    stages: tuple[tuple[str, ...], ...]  # experiment names, run stage by stage
    comparisons: tuple[Comparison, ...]
    extra_seeds: tuple[tuple[str, int], ...] = ()  # (experiment, seeds) above ``seeds``

    def seeds_of(self, experiment: str) -> tuple[int, ...]:
        n = dict(self.extra_seeds).get(experiment, len(self.seeds))
        return tuple(range(max(n, len(self.seeds))))

    def arms(self, experiment: str) -> list[Arm]:
        for e in self.relations:
            if e.key == experiment:
                return [Arm("synthetic", e.key, k, e.lrs) for k in e.models]
        for e in self.lm:
            if e.name == experiment:
                return [Arm("lm", e.name, v, e.lrs) for v in e.variants]
        raise ValueError(f"experiment={experiment!r} is not in the decisive plan")

    def relations_experiment(self, key: str) -> plans.RelationsExperiment:
        return next(e for e in self.relations if e.key == key)

    def lm_experiment(self, name: str) -> lm_plans.LMExperiment:
        return next(e for e in self.lm if e.name == name)


MQAR_VARIANTS = ("global", "global_local", "iha")
TEXT_VARIANTS = ("global", "global_local", "iha", "iha_global")


def decisive_plan(n_seeds: int = SEEDS, tiny: bool = False) -> DecisivePlan:
    """The decisive plan (``tiny``: the same structure at test sizes, seconds per run)."""
    check_int("n_seeds", n_seeds, 2)
    full_syn = plans.tiny_plan() if tiny else plans.full_plan()
    relations = tuple(
        replace(e, ablations=(), ablation_lr=None, converge_window=MAX_WINDOW)
        for e in full_syn.relations
    )
    full_lm = lm_plans.tiny_plan() if tiny else lm_plans.full_plan()
    mqar = tuple(replace(e, variants=MQAR_VARIANTS) for e in full_lm.experiments
                 if e.task == "mqar")  # fmt: skip
    text0 = next(e for e in full_lm.experiments if e.task == "text")
    steps = text0.budget_steps * 10
    text = replace(text0, name=f"{text0.name}-steps{steps}", budget_steps=steps,
                   evals=2 if tiny else 20,
                   variants=("global", "iha") if tiny else TEXT_VARIANTS)  # fmt: skip
    if tiny:
        mqar = tuple(replace(e, variants=("global", "iha")) for e in mqar)
    rel = {e.name: e.key for e in relations}
    mq = tuple(e.name for e in mqar)
    iha_vs = ("mha", "simplicial")
    comparisons = (
        *(Comparison(f"{name}: iha vs {b}", (key,), "iha", b, "test_pos_acc", "paired_t")
          for name, key in rel.items() for b in iha_vs
          if b in full_syn.relations[0].models),
        *(Comparison(f"mqar: iha vs {b}", mq, "iha", b, "solved", "mcnemar")
          for b in ("global_local", "global") if tiny is False or b == "global"),
        Comparison("text: iha vs global", (text.name,), "iha", "global", "test_loss",
                   "paired_t"),
    )  # fmt: skip
    stages = (
        tuple(e.key for e in relations if e.name == "binary"),
        tuple(e.key for e in relations if e.name == "ternary"),
        mq,
        (text.name,),
    )
    extra = () if tiny else ((text.name, TEXT_SEEDS),)
    return DecisivePlan(tuple(range(n_seeds)), GRID_SEEDS, relations, (*mqar, text), stages,
                        comparisons, extra)  # fmt: skip


# ------------------------------------------------------------------------------------ records
def _syn_job(plan: DecisivePlan, arm: Arm, lr: float, seed: int) -> plans.Job:
    e = plan.relations_experiment(arm.experiment)
    return plans.Job(e.key, arm.variant, e.n_heads, e.n_pseudo if arm.variant == "iha" else 1,
                     lr, seed)  # fmt: skip


def _lm_job(arm: Arm, lr: float, seed: int) -> lm_plans.LMJob:
    return lm_plans.LMJob(arm.experiment, arm.variant, lr, seed)


def suite_dir(out: Path, suite: str) -> Path:
    return out / suite


def read_record(plan: DecisivePlan, out: Path, arm: Arm, lr: float, seed: int) -> dict | None:
    """The finished record of one run, or None."""
    if arm.suite == "synthetic":
        path = syn.job_dir(suite_dir(out, "synthetic"), _syn_job(plan, arm, lr, seed))
        path = path / "record.json"
        return json.loads(path.read_text()) if path.is_file() else None
    return lm_mod.read_result(suite_dir(out, "lm"), _lm_job(arm, lr, seed))


def _append_once(path: Path, record: dict) -> None:
    keys = set()
    if path.exists():
        keys = {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()}
    if record["key"] not in keys:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def run_one(plan: DecisivePlan, out: Path, arm: Arm, lr: float, seed: int,
            log: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Run (or resume, or reuse) one job; its record is appended once to runs.jsonl."""
    done = read_record(plan, out, arm, lr, seed)
    if done is not None:
        return done
    started = time.perf_counter()
    base = suite_dir(out, arm.suite)
    if arm.suite == "synthetic":
        exp = plan.relations_experiment(arm.experiment)
        job = _syn_job(plan, arm, lr, seed)
        record = syn.run_job(exp, job, folder=syn.job_dir(base, job))
    else:
        exp = plan.lm_experiment(arm.experiment)
        steps = lm_mod.flop_accounting(exp)[arm.variant]["steps"]
        record = lm_mod.run_job(exp, _lm_job(arm, lr, seed), base, steps)
    _append_once(base / "runs.jsonl", record)
    log(f"{time.strftime('%H:%M:%S')} {record['key']}: {score_text(record)} "
        f"({time.perf_counter() - started:.0f}s)")  # fmt: skip
    return record


def score_text(record: dict) -> str:
    val = record.get("val") or {}
    parts = [f"val {k} {v:.4f}" for k, v in val.items() if k in ("loss", "pos_acc")]
    return ", ".join(parts) or "no validation metrics (diverged)"


def selection_score(record: dict | None) -> tuple[float, float]:
    """(validation accuracy or minus loss, minus validation loss): higher is better."""
    val = (record or {}).get("val")
    if not val:
        return (-math.inf, -math.inf)
    loss = val.get("loss", math.nan)
    neg_loss = -loss if math.isfinite(loss) else -math.inf
    acc = val.get("pos_acc")
    first = neg_loss if acc is None else (acc if math.isfinite(acc) else -math.inf)
    return (first, neg_loss)


def grid_scores(plan: DecisivePlan, out: Path, arm: Arm) -> dict[float, tuple[int, float]]:
    """Per tried rate with every grid seed finished: (seeds, mean selection score)."""
    out_scores: dict[float, tuple[int, float]] = {}
    for lr in tried_rates(plan, out, arm):
        recs = [read_record(plan, out, arm, lr, s) for s in plan.grid_seeds]
        if any(r is None for r in recs):
            continue
        firsts = [selection_score(r)[0] for r in recs]
        seconds = [selection_score(r)[1] for r in recs]
        mean = sum(firsts) / len(firsts) + 1e-9 * sum(seconds) / len(seconds)
        out_scores[lr] = (len(recs), mean)
    return out_scores


def tried_rates(plan: DecisivePlan, out: Path, arm: Arm) -> list[float]:
    """The arm's starting grid plus every rate with a run on disk."""
    rates = set(arm.lrs)
    for s in plan.grid_seeds:
        for lr in _rates_on_disk(plan, out, arm, s):
            rates.add(lr)
    return sorted(rates)


def _rates_on_disk(plan: DecisivePlan, out: Path, arm: Arm, seed: int) -> list[float]:
    base = suite_dir(out, arm.suite)
    found = []
    if arm.suite == "synthetic":
        e = plan.relations_experiment(arm.experiment)
        heads = f"H{e.n_heads}/P{e.n_pseudo if arm.variant == 'iha' else 1}"
        prefix = f"{e.key}/{arm.variant}/{heads}/lr".replace("/", "__")
        for d in (base / "jobs").glob(f"{prefix}*__s{seed}"):
            found.append(float(d.name[len(prefix) :].rsplit("__s", 1)[0]))
    else:
        for d in (base / "runs" / arm.experiment / arm.variant).glob(f"lr*/s{seed}"):
            found.append(float(d.parent.name[2:]))
    return found


def chosen_rate(plan: DecisivePlan, out: Path, arm: Arm) -> tuple[float | None, bool]:
    """(the rate chosen so far, whether it is bracketed); (None, False) before the grid ran."""
    scores = grid_scores(plan, out, arm)
    if not scores or len(scores) < len(tried_rates(plan, out, arm)):
        return None, False
    best, nxt = bracket({lr: s for lr, (_, s) in scores.items()})
    return best, nxt is None and _has_both_neighbours(best, scores)


def _has_both_neighbours(best: float, scores: dict) -> bool:
    lrs = sorted(scores)
    return 0 < lrs.index(best) < len(lrs) - 1


# ------------------------------------------------------------------------------------- runner
def run_stage(plan: DecisivePlan, out: Path, experiments: Sequence[str],
              log: Callable[[str], None] = print) -> None:  # fmt: skip
    """Bracket every arm's learning rate on the grid seeds, then run the other seeds at the
    chosen rates, seed by seed across arms (so finished seeds form complete pairs)."""
    arms = [a for e in experiments for a in plan.arms(e)]
    for arm in arms:
        grid = list(arm.lrs)
        while True:
            for lr in grid:
                for s in plan.grid_seeds:
                    run_one(plan, out, arm, lr, s, log)
            scores = {lr: sc for lr, (_, sc) in grid_scores(plan, out, arm).items()}
            best, nxt = bracket(scores)
            if nxt is None:
                break
            log(f"{arm.name}: best rate {best:g} is at the edge of {sorted(scores)}; "
                f"trying {nxt:g}")  # fmt: skip
            grid = sorted(set(scores) | {nxt})
        log(f"{arm.name}: learning rate {best:g} (grid {sorted(scores)})")
    n = max(len(plan.seeds_of(e)) for e in experiments)
    for s in range(n):
        if s in plan.grid_seeds:
            continue
        for arm in arms:
            if s in plan.seeds_of(arm.experiment):
                lr, _ = chosen_rate(plan, out, arm)
                run_one(plan, out, arm, lr, s, log)


def run_decisive(plan: DecisivePlan, out: Path, log: Callable[[str], None] = print) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stage in plan.stages:
        run_stage(plan, out, stage, log)
    log("decisive plan finished")


# ------------------------------------------------------------------------------------- report
def arm_runs(plan: DecisivePlan, out: Path, arm: Arm) -> tuple[float | None, bool, dict]:
    """(chosen rate, bracketed, {seed: record}) at the chosen rate."""
    lr, ok = chosen_rate(plan, out, arm)
    if lr is None:
        return None, False, {}
    recs = {s: r for s in plan.seeds_of(arm.experiment)
            if (r := read_record(plan, out, arm, lr, s)) is not None}  # fmt: skip
    return lr, ok, recs


def outcome(record: dict, metric: str) -> float | bool | None:
    test = record.get("test")
    if not test:
        return None
    if metric == "test_pos_acc":
        return test["pos_acc"]
    if metric == "test_loss":
        return test["all"]["loss"]
    if metric == "solved":
        return all(v["pos_acc"] >= SOLVED for v in test.values())
    raise ValueError(f"metric={metric!r}")


def compare(plan: DecisivePlan, out: Path, c: Comparison) -> dict[str, Any]:
    """The comparison as far as finished runs go: pairs, effect, test statistic, p."""
    a_vals, b_vals, lrs = {}, {}, {}
    for e in c.experiments:
        for side, store in ((c.a, a_vals), (c.b, b_vals)):
            arm = next(x for x in plan.arms(e) if x.variant == side)
            lr, ok, recs = arm_runs(plan, out, arm)
            lrs[f"{e}/{side}"] = (lr, ok)
            for s, r in recs.items():
                v = outcome(r, c.metric)
                if v is not None:
                    store[(e, s)] = v
    pairs = sorted(set(a_vals) & set(b_vals))
    res: dict[str, Any] = {
        "comparison": c,
        "pairs": len(pairs),
        "lrs": lrs,
        "target_pairs": sum(len(plan.seeds_of(e)) for e in c.experiments),
    }
    if c.test == "mcnemar":
        only_a, only_b, n = discordant({k: a_vals[k] for k in pairs},
                                       {k: b_vals[k] for k in pairs})  # fmt: skip
        res.update(solved_a=sum(bool(a_vals[k]) for k in pairs),
                   solved_b=sum(bool(b_vals[k]) for k in pairs), only_a=only_a, only_b=only_b,
                   p=mcnemar_exact(only_a, only_b) if n else None)  # fmt: skip
    elif len(pairs) >= 2:
        t = paired_t_test([a_vals[k] for k in pairs], [b_vals[k] for k in pairs])
        res.update(diff=t.diff, t=t.t, df=t.df, p=t.p)
    else:
        res.update(p=None)
    return res


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (None stays None; the family is the non-None ones)."""
    idx = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    out: list[float | None] = [None] * len(ps)
    running, m = 0.0, len(idx)
    for rank, (p, i) in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def convergence_counts(plan: DecisivePlan, out: Path) -> dict[str, dict[str, int]]:
    """Per experiment: the convergence rule's verdict on every finished run."""
    counts: dict[str, dict[str, int]] = {}
    for stage in plan.stages:
        for e in stage:
            c: dict[str, int] = {}
            for arm in plan.arms(e):
                for lr in tried_rates(plan, out, arm):
                    for s in plan.seeds_of(e):
                        rec = read_record(plan, out, arm, lr, s)
                        if rec is None:
                            continue
                        status = verdict_of(rec)
                        c[status] = c.get(status, 0) + 1
            counts[e] = c
    return counts


def verdict_of(record: dict) -> str:
    """The convergence rule on one finished record (synthetic history or LM val_losses)."""
    if "history" in record:
        losses = [h["loss"] for h in record["history"]]
        return classify(losses, window=None).status
    pts = sorted((int(k), v) for k, v in record["val_losses"].items())
    solved = outcome(record, "solved") if record["experiment"].startswith("mqar") else False
    return classify([v for _, v in pts], positions=[k for k, _ in pts],
                    solved=bool(solved)).status  # fmt: skip


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def chosen_rate_verdicts(plan: DecisivePlan, out: Path, c: Comparison) -> dict[str, dict]:
    """Per arm of comparison ``c`` (variant -> {verdict: runs}): the convergence rule on its
    finished runs at its chosen rate, over the comparison's experiments."""
    res: dict[str, dict[str, int]] = {}
    for e in c.experiments:
        for side in (c.a, c.b):
            arm = next(x for x in plan.arms(e) if x.variant == side)
            counts = res.setdefault(side, {})
            for r in arm_runs(plan, out, arm)[2].values():
                v = verdict_of(r)
                counts[v] = counts.get(v, 0) + 1
    return res


def flags(plan: DecisivePlan, out: Path) -> list[str]:
    """The pre-registered flag of each text comparison: its runs were still improving at the
    end of the budget (the rule on the chosen-rate runs of either arm)."""
    lines = []
    for c in plan.comparisons:
        if not all(e.startswith("text") for e in c.experiments):
            continue
        verdicts = chosen_rate_verdicts(plan, out, c)
        improving = {v: n.get("improving", 0) for v, n in verdicts.items()}
        if any(improving.values()):
            counts = ", ".join(f"`{v}` {k} of {sum(verdicts[v].values())}"
                               for v, k in improving.items())  # fmt: skip
            lines.append(
                f"**Flag ({c.name}), as pre-registered:** the convergence rule calls these "
                f"chosen-rate runs still improving at the end of their budget: {counts}. The "
                "comparison is at this budget, not at convergence: the size was not enough "
                "for the convergence the plan asked for."
            )
    return lines


def plan_complete(plan: DecisivePlan, out: Path) -> bool:
    """Every primary comparison has all its planned pairs."""
    return all(r["pairs"] >= r["target_pairs"]
               for r in (compare(plan, out, c) for c in plan.comparisons))  # fmt: skip


def interim_report(plan: DecisivePlan, out: Path) -> list[str]:
    """Markdown: each primary comparison as far as runs exist, then what remains."""
    results = [compare(plan, out, c) for c in plan.comparisons]
    adjusted = holm([r["p"] for r in results])
    lines = [
        "| primary comparison | test | pairs done / planned | result | p | Holm p |",
        "|---|---|---|---|---|---|",
    ]
    for r, adj in zip(results, adjusted):
        c = r["comparison"]
        if c.test == "mcnemar":
            body = (f"solved {c.a} {r['solved_a']}/{r['pairs']}, {c.b} {r['solved_b']}/"
                    f"{r['pairs']}; discordant {r['only_a']}:{r['only_b']}")  # fmt: skip
        elif r.get("diff") is not None:
            scale, unit = (100.0, " points") if c.metric == "test_pos_acc" else (1.0, " nats")
            body = f"{c.a} - {c.b} = {r['diff'].format(2 if scale > 1 else 4, scale)}{unit}"
        else:
            body = "fewer than 2 pairs: no test"
        test = "exact McNemar" if c.test == "mcnemar" else "paired t"
        lines.append(f"| {c.name} | {test} | {r['pairs']} / {r['target_pairs']} | {body} | "
                     f"{_fmt_p(r['p'])} | {_fmt_p(adj)} |")  # fmt: skip
    per_comparison = []
    for c in plan.comparisons:
        arms = chosen_rate_verdicts(plan, out, c).items()
        per_comparison.append(f"{c.name}: " + ", ".join(
            f"`{v}` " + (", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "none")
            for v, counts in arms))  # fmt: skip
    lines += ["", "The convergence rule on the runs of each comparison (chosen rates): "
              + "; ".join(per_comparison) + "."]  # fmt: skip
    flagged = flags(plan, out)
    if flagged:
        lines += ["", *flagged]
    lines += [
        "",
        "Learning rates (mean validation score over seeds "
        f"{', '.join(map(str, plan.grid_seeds))}; bracketed = a worse tried rate on "
        "each side):",
        "",
        "| arm | tried rates | chosen | bracketed |",
        "|---|---|---|---|",
    ]
    for stage in plan.stages:
        for e in stage:
            for arm in plan.arms(e):
                scores = grid_scores(plan, out, arm)
                lr, ok = chosen_rate(plan, out, arm)
                tried = ", ".join(f"{x:g} ({s:.4f})" for x, (_, s) in sorted(scores.items()))
                lines.append(
                    f"| {arm.name} | {tried or '-'} | "
                    f"{'-' if lr is None else f'{lr:g}'} | {'yes' if ok else 'no'} |"
                )
    counts = convergence_counts(plan, out)
    lines += ["", "Convergence rule on the finished runs: " + "; ".join(
        f"{e}: " + (", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none")
        for e, c in counts.items()) + ".", ""]  # fmt: skip
    lines += eta_lines(plan, out)
    return lines


def committed_seconds(docs: Path = Path("docs/results")) -> dict[str, float]:
    """Mean wall seconds per run of each arm (``experiment/variant``) in the committed full-plan
    runs (text scaled to the decisive plan's 10x steps); {} when they are not there."""
    out: dict[str, list[float]] = {}
    runs = docs / "synthetic" / "runs.jsonl"
    if runs.is_file():
        for line in runs.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if not r.get("variant"):
                    out.setdefault(f"{r['experiment']}/{r['kind']}", []).append(r["seconds"])
    for path in (docs / "lm" / "runs").glob("**/result.json"):
        r = json.loads(path.read_text())
        name, scale = r["experiment"], 1.0
        if name.startswith("text/"):
            name, scale = f"{name}-steps2000", 10.0
        out.setdefault(f"{name}/{r['variant']}", []).append(scale * float(r["seconds"]))
    return {k: sum(v) / len(v) for k, v in out.items()}


def _arm_left(plan: DecisivePlan, out: Path, arm: Arm) -> tuple[int, int, list[float]]:
    """(runs done, runs still needed at least, seconds of the finished runs) of one arm."""
    rates = tried_rates(plan, out, arm)
    seeds = plan.seeds_of(arm.experiment)
    recs = [r for lr in rates for s in seeds if (r := read_record(plan, out, arm, lr, s))]
    lr, ok = chosen_rate(plan, out, arm)
    grid_left = sum(read_record(plan, out, arm, x, s) is None
                    for x in rates for s in plan.grid_seeds)  # fmt: skip
    seeds_left = sum(lr is None or read_record(plan, out, arm, lr, s) is None
                     for s in seeds if s not in plan.grid_seeds)  # fmt: skip
    left = grid_left + seeds_left + (0 if ok else len(plan.grid_seeds))
    return len(recs), left, [float(r.get("seconds", 0.0)) for r in recs]


def eta_lines(plan: DecisivePlan, out: Path, docs: Path = Path("docs/results")) -> list[str]:
    """Runs done and still needed per experiment, and hours at the cost per run of each arm:
    its finished decisive runs where there are some, else its committed runs' time times the
    slowdown measured on the arms that have both (the machine is shared)."""
    past = committed_seconds(docs)
    arms = [a for stage in plan.stages for e in stage for a in plan.arms(e)]
    state = {a.name: _arm_left(plan, out, a) for a in arms}
    mine = {k: sum(v[2]) / len(v[2]) for k, v in state.items() if v[2]}
    both = [k for k in mine if past.get(k)]
    slowdown = sum(mine[k] for k in both) / sum(past[k] for k in both) if both else 1.0
    lines = ["| experiment | runs done | runs still needed (at least) | hours left |",
             "|---|---|---|---|"]  # fmt: skip
    total, done_all, left_all = 0.0, 0, 0
    for stage in plan.stages:
        for e in stage:
            done = left = 0
            hours = 0.0
            for a in plan.arms(e):
                d, n, _ = state[a.name]
                per = mine.get(a.name, past.get(a.name, math.nan) * slowdown)
                done, left = done + d, left + n
                hours += n * per / 3600 if math.isfinite(per) else 0.0
            total, done_all, left_all = total + hours, done_all + done, left_all + left
            lines.append(f"| {e} | {done} | {left} | {hours:.1f} |")
    lines += ["", f"Runs done: {done_all}; still needed: at least {left_all} (grid extensions not "
              f"yet known are not counted); about {total:.0f} h of wall time at each arm's "
              "mean wall time per finished decisive run, or, for an arm with none yet, its "
              f"committed runs' mean times {slowdown:.2f} (the ratio of decisive to committed "
              f"wall time on the {len(both)} arms that have both). A rough estimate: the "
              "machine is shared and its load changes."]  # fmt: skip
    return lines


# ------------------------------------------------------------------------------------ publish
PUBLISHED = {"synthetic": ("record.json", "settings.txt"),
             "lm": ("result.json", "metrics.jsonl", "config.toml")}  # fmt: skip


def default_header(out: Path, complete: bool = False) -> list[str]:
    """The report's preamble: what runs, how it was started and how to resume it
    (``complete``: every comparison has its planned pairs)."""
    commit = out / "code" / "COMMIT"
    code = commit.read_text().strip() if commit.is_file() else "the working tree"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    status = (
        "from all the planned runs"
        if complete
        else "from the runs finished so far. An interim table is descriptive: the conclusions "
        "are drawn at the planned seed counts only"
    )
    return [
        "# Decisive comparisons: " + ("results" if complete else "interim report"),
        "",
        f"Written {stamp} by `python -m iha.reproduce.decisive publish` from `{out}` (code of "
        f"commit {code}), {status}. The comparisons, seeds, learning-rate rule and convergence "
        "rule were fixed beforehand in [../preregistration.md](../preregistration.md).",
        "",
        "The runs (one worker, one torch thread, resumable) were started from the repository "
        f"root with a copy of `src/` at commit {code} (so that later edits of the working "
        "tree do not change a running plan):",
        "",
        f"    git archive {code} src | tar -x -C results/decisive/code",
        "    PYTHONPATH=results/decisive/code/src OMP_NUM_THREADS=1 nice -n 19 \\",
        "      python -m iha.reproduce.decisive run --out results/decisive "
        ">> results/decisive/run.log 2>&1",
        "",
        "In a fresh clone, first copy the published runs back (`mkdir -p results/decisive "
        "&& cp -r docs/results/decisive/synthetic results/decisive/`): finished runs are then "
        "reused. Running the same command again resumes: finished runs are reused, an interrupted "
        "synthetic run continues from its last epoch and an LM run from its last checkpoint. "
        "`synthetic/` and `lm/` below hold each finished run's record (and for LM runs "
        "`metrics.jsonl` and `config.toml`) and the suite's `runs.jsonl`, one record per run.",
        "",
        "## Primary comparisons" + ("" if complete else " so far"),
        "",
    ]


def publish(plan: DecisivePlan, out: Path, docs: Path, header: Sequence[str] = ()) -> int:
    """Copy every finished run of ``out`` (its record and metrics, never checkpoints) and the
    suites' runs.jsonl into ``docs`` (same layout), and write ``docs/README.md``: ``header``
    and the interim report. Returns the number of finished runs copied."""
    import shutil

    n = 0
    for suite, names in PUBLISHED.items():
        src = suite_dir(out, suite)
        marker = names[0]
        for rec in sorted(src.glob(f"**/{marker}")):
            dest = docs / suite / rec.parent.relative_to(src)
            dest.mkdir(parents=True, exist_ok=True)
            for name in names:
                if (rec.parent / name).is_file():
                    shutil.copyfile(rec.parent / name, dest / name)
            n += 1
        if (src / "runs.jsonl").is_file():
            shutil.copyfile(src / "runs.jsonl", docs / suite / "runs.jsonl")
    docs.mkdir(parents=True, exist_ok=True)
    lines = [*header, *interim_report(plan, out)]
    (docs / "README.md").write_text("\n".join(lines) + "\n")
    return n


# -------------------------------------------------------------------------------------- power
EFFECTS = {"relations": 0.02, "text": 0.04}  # smallest effects of interest (accuracy, nats)
MCNEMAR_DISCORDANCE = 0.3  # P(only one arm solves), all in one direction
TARGET_POWER = 0.8


def seeds_for(effect: float, sd: float, alpha: float = 0.05, power: float = TARGET_POWER,
              floor: int = SEEDS) -> int:  # fmt: skip
    """The smallest n >= ``floor`` whose paired t-test has ``power`` for ``effect``."""
    n = max(2, floor)
    while paired_t_power(effect, sd, n, alpha) < power:
        n += 1
    return n


def power_lines(docs: Path = Path("docs/results")) -> list[str]:
    """The power calculation of the pre-registration, from the committed full-plan runs."""
    recs: dict[str, dict] = {}
    for line in (docs / "synthetic" / "runs.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            recs[r["key"]] = r  # the last record of a key is the one the report used
    summary = syn.summarise(plans.full_plan(), list(recs.values()))
    lines = [
        "| comparison | committed per-seed differences | sd | effect of interest | "
        "power at 10 seeds | seeds for 80% |",
        "|---|---|---|---|---|---|",
    ]
    for rel in summary["relations"]:
        best = rel["best"]
        for b in ("mha", "simplicial"):
            a_s, b_s = best["iha"]["test_pos_by_seed"], best[b]["test_pos_by_seed"]
            d = [a_s[k] - b_s[k] for k in sorted(set(a_s) & set(b_s))]
            sd = _sd(d)
            eff = EFFECTS["relations"]
            lines.append(
                f"| {rel['experiment'].name}: iha vs {b} (test accuracy) | "
                f"{', '.join(f'{x * 100:+.2f}' for x in d)} points | "
                f"{sd * 100:.2f} points | {eff * 100:.0f} points | "
                f"{paired_t_power(eff, sd, SEEDS):.3f} | {seeds_for(eff, sd)} |"
            )
    lm_recs = [json.loads(p.read_text()) for p in (docs / "lm" / "runs").glob("**/result.json")]
    text = next(e for e in lm_plans.full_plan().experiments if e.task == "text")
    rows = lm_mod.summarise_experiment(text, lm_recs, (0, 1, 2))["rows"]
    a_s, b_s = rows["iha"]["by_seed"]["all"], rows["global"]["by_seed"]["all"]
    d = [a_s[k] - b_s[k] for k in sorted(set(a_s) & set(b_s))]
    sd, eff = _sd(d), EFFECTS["text"]
    lines.append(
        f"| text: iha vs global (test loss) | {', '.join(f'{x:+.4f}' for x in d)} "
        f"nats | {sd:.4f} nats | {eff} nats | {paired_t_power(eff, sd, SEEDS):.3f} | "
        f"{seeds_for(eff, sd)} |"
    )
    pw = mcnemar_power(MCNEMAR_DISCORDANCE, 0.0, 3 * SEEDS)
    lines += ["", f"MQAR (exact McNemar, pairs = 3 configurations x seeds): with {SEEDS} seeds "
              f"per configuration (30 pairs) and a discordance of {MCNEMAR_DISCORDANCE:.0%} in "
              f"one direction, the power is {pw:.3f}."]  # fmt: skip
    return lines


def _sd(xs: Sequence[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m iha.reproduce.decisive",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument(
        "command",
        choices=("run", "report", "power", "publish"),
        help="run: start or resume the plan; report: print the interim report; "
        "power: the power calculation from the committed runs in docs/results; "
        "publish: copy the finished runs and the interim report to --docs",
    )
    p.add_argument("--docs", type=Path, default=Path("docs/results/decisive"),
                   help="publish: destination (default docs/results/decisive)")  # fmt: skip
    p.add_argument("--header", type=Path, default=None,
                   help="publish: a markdown file put before the report (default: how the "
                   "runs were started and resumed)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("results/decisive"),
                   help="output folder (default results/decisive)")  # fmt: skip
    p.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds per arm (default {SEEDS})")
    p.add_argument("--tiny", action="store_true", help="test sizes: seconds, learns nothing")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    plan = decisive_plan(args.seeds, tiny=args.tiny)
    if args.command == "run":
        import torch

        torch.set_num_threads(args.threads)
        run_decisive(plan, args.out, log=lambda s: print(s, flush=True))
        return 0
    if args.command == "publish":
        header = (args.header.read_text().splitlines() if args.header
                  else default_header(args.out, plan_complete(plan, args.out)))  # fmt: skip
        n = publish(plan, args.out, args.docs, header)
        print(f"published {n} finished runs and {args.docs / 'README.md'}")
        return 0
    if args.command == "power":
        print("\n".join(power_lines()))
        return 0
    print("\n".join(interim_report(plan, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
