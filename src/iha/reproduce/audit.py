"""The convergence rule applied to the committed runs in docs/results (a validation report).

    python -m iha.reproduce.audit [--docs docs/results] [--write docs/results/convergence_audit.md]

Reads the synthetic ``runs.jsonl`` (the last record of each key: the one the report used) and
the LM ``result.json`` files, and shows what the old criteria and the rule of
:mod:`iha.reproduce.convergence` say about them: the recall runs the old LM criterion called
converged while at chance accuracy, the rule applied backwards (after every evaluation, as if the
run had ended there) with the runs whose loss later dropped, and the early-stopped CPM-3 runs
whose validation loss was still falling.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iha.reproduce import lm_plans
from iha.reproduce.convergence import classify, window_for
from iha.reproduce.lm import chosen_lr, rule_status

CONVERGED_NATS = 0.01  # the old criterion's absolute threshold
CHANCE = 0.5  # recall tasks: validation accuracy below this is the guessing plateau (~1/3)
SOLVED = 0.95  # recall tasks: accuracy that counts as solved
LATER_DROP = 0.1  # nats: "the loss later dropped"


def convergence(val_losses: dict[int | str, float]) -> dict[str, Any]:
    """The criterion the LM reports used before the rule (kept to audit them): the last
    evaluation improved by less than 1% (relative) or by less than ``CONVERGED_NATS`` on the one
    before it, skipping evaluations less than half an interval before the last one. Fewer than
    two evaluations: None. A flat loss on a plateau counts as converged too."""
    points = sorted((int(step), loss) for step, loss in val_losses.items())
    if len(points) < 2:
        return {"converged": None, "last_improvement": None}
    interval = points[1][0] - points[0][0]
    last_step, last = points[-1]
    earlier = [loss for step, loss in points if step <= last_step - interval / 2]
    if not earlier:
        return {"converged": None, "last_improvement": None}
    change = (earlier[-1] - last) / max(abs(earlier[-1]), 1e-12)
    flat = change < 0.01 or earlier[-1] - last < CONVERGED_NATS
    return {"converged": bool(flat), "last_improvement": change}


def load_synthetic(docs: Path) -> dict[str, dict]:
    """The last record of each key in the synthetic runs.jsonl (and superseded.jsonl ignored)."""
    out: dict[str, dict] = {}
    for line in (docs / "synthetic" / "runs.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[r["key"]] = r
    return out


def load_lm(docs: Path) -> list[dict]:
    return [
        json.loads(p.read_text()) for p in sorted((docs / "lm" / "runs").glob("**/result.json"))
    ]


def _curve(record: dict) -> tuple[list[int], list[float]]:
    pts = sorted((int(k), float(v)) for k, v in record["val_losses"].items())
    return [p[0] for p in pts], [p[1] for p in pts]


def lm_verdict(record: dict) -> str:
    """The rule on a whole LM run (:func:`iha.reproduce.lm.rule_status`)."""
    return rule_status(record)


def chosen_runs(records: list[dict]) -> list[dict]:
    """The runs at each variant's chosen learning rate (what the LM report's tables use)."""
    plan = lm_plans.full_plan()
    out = []
    for exp in plan.experiments:
        mine = [r for r in records if r["experiment"] == exp.name]
        for v in exp.variants:
            lr = chosen_lr(exp, mine, v)
            out += [r for r in mine if r["variant"] == v and r["lr"] == lr]
    return out


def backwards(record: dict, rule: str) -> tuple[int | None, bool]:
    """The first evaluation (1-based count) after which ``rule`` ("old" or "new") calls the
    run converged before its end, and whether the loss later fell by > LATER_DROP nats. The
    new rule uses the run's own K (:func:`window_for` of all its evaluations) throughout, as
    early stopping does, so it cannot fire before K evaluations."""
    steps, losses = _curve(record)
    k = window_for(len(losses))
    for i in range(2, len(losses)):  # prefixes that end before the last evaluation
        prefix = dict(zip(steps[:i], losses[:i]))
        if rule == "old":
            fired = bool(convergence(prefix)["converged"])
        else:
            fired = classify(losses[:i], positions=steps[:i], window=k).status == "converged"
        if fired:
            return i, min(losses[i:]) < losses[i - 1] - LATER_DROP
    return None, False


def lm_section(records: list[dict]) -> list[str]:
    chosen = chosen_runs(records)
    recall = [r for r in chosen if not r["experiment"].startswith("text")]
    old_conv = [r for r in recall if convergence(r["val_losses"])["converged"]]
    at_chance = [r for r in old_conv if r["val"]["pos_acc"] < CHANCE]
    new = Counter(lm_verdict(r) for r in at_chance)
    all_new = Counter(lm_verdict(r) for r in recall)
    lines = [
        "## LM recall runs (MQAR, NIAH)",
        "",
        f"Runs at the chosen learning rates: {len(chosen)} ({len(recall)} recall runs). The old "
        f"criterion (last evaluation < 1% below the one before) called {len(old_conv)} recall "
        f"runs converged; {len(at_chance)} of them end at chance accuracy (validation accuracy "
        f"< {CHANCE}, the guessing plateau near 1/3).",
        "",
        f"The rule on those {len(at_chance)} runs: "
        + ", ".join(f"{k} {v}" for k, v in sorted(new.items()))
        + ". None is called converged: a run whose loss still creeps down is 'improving' (its "
        "budget ended too early to say), a flat one at chance is 'plateau'.",
        "",
        f"The rule on all {len(recall)} recall runs: "
        + ", ".join(f"{k} {v}" for k, v in sorted(all_new.items()))
        + ".",
        "",
    ]
    lines += [
        "Applied backwards (after every evaluation but the last, as if the run ended there, with "
        "the run's K; mid-run the accuracy is not recorded, so neither 'solved' nor 'plateau' "
        "can be used):",
        "",
        "| runs | criterion | fires mid-run | of which the loss later fell > 0.1 nats |",
        "|---|---|---|---|",
    ]
    groups = []
    for label, rs in (("chosen learning rates", chosen), ("all committed LM runs", records)):
        for task, pick in (("recall", lambda r: not r["experiment"].startswith("text")),
                           ("text", lambda r: r["experiment"].startswith("text"))):  # fmt: skip
            groups.append((f"{label}, {task}", [r for r in rs if pick(r)]))
    for label, rs in groups:
        for rule, name in (("old", "old (< 1% per interval)"), ("new", "slope rule")):
            fired = [backwards(r, rule) for r in rs]
            n_fired = sum(i is not None for i, _ in fired)
            n_drop = sum(d for _, d in fired)
            lines.append(f"| {label} ({len(rs)}) | {name} | {n_fired} | {n_drop} |")
    drops = [(r["key"], backwards(r, "new")) for r in records]
    drops = [(k, i) for k, (i, d) in drops if d]
    lines += [
        "",
        "Runs where the slope rule fired mid-run and the loss later fell by > 0.1 nats: "
        + (", ".join(f"{k} (after evaluation {i})" for k, i in drops) or "none")
        + ". A loss that is flat (no significant slope) on a plateau and then drops cannot be "
        "told apart from a converged one by any rule on the past; this is why the LM runs are "
        "never stopped early (fixed budgets) and why an at-chance flat run is reported as "
        "'plateau', not 'converged'. The committed text runs have 5 or 6 evaluations, so their "
        "K is 3 (one degree of freedom): the test has almost no power there and fires early; "
        "the decisive text runs evaluate 20 times (K = 10).",
        "",
    ]
    key = "mqar/d48-p4-n16/global/lr0.003/s0"
    case = next((r for r in records if r["key"] == key), None)
    if case is not None:
        steps, losses = _curve(case)
        row, k = [], window_for(len(losses))
        for i in range(k, len(losses) + 1):
            status = classify(losses[:i], positions=steps[:i], window=k).status
            row.append(f"{steps[i - 1]}: {losses[i - 1]:.3f} {status}")
        old_i, _ = backwards(case, "old")
        lines += [
            f"The named case {key} (the rule after each evaluation from the K-th on, K = {k}): "
            + "; ".join(row)
            + ". "
            f"The old criterion fired after evaluation {old_i} (step "
            f"{steps[old_i - 1] if old_i else '-'}); at its end the rule says "
            f"'{lm_verdict(case)}'.",
            "",
        ]
    return lines


def synthetic_section(recs: dict[str, dict]) -> list[str]:
    lines = ["## Synthetic runs (early stopping)", ""]
    counts: dict[str, Counter] = {}
    improving = []
    for key, r in recs.items():
        exp = r["experiment"]
        losses = [h["loss"] for h in r["history"]]
        stopped = r["epochs"] < r["settings"]["max_epochs"]
        v = classify(losses)
        counts.setdefault(exp, Counter())[(("stopped" if stopped else "cap"), v.status)] += 1
        if exp == "heads/cpm3" and stopped and v.status == "improving":
            improving.append((key, v.test.p_decreasing, r["test"]["pos_acc"], len(losses)))
    lines += ["| experiment | runs | early-stopped: converged / improving | ran to the cap |",
              "|---|---|---|---|"]  # fmt: skip
    for exp, c in sorted(counts.items()):
        n = sum(c.values())
        cap = sum(v for (where, _), v in c.items() if where == "cap")
        lines.append(f"| {exp} | {n} | {c[('stopped', 'converged')]} / "
                     f"{c[('stopped', 'improving')]} | {cap} |")  # fmt: skip
    n_cpm = sum(v for (w, _), v in counts.get("heads/cpm3", Counter()).items() if w == "stopped")
    unsolved = [x for x in improving if x[2] < SOLVED]
    lines += [
        "",
        f"CPM-3: {len(improving)} of {n_cpm} early-stopped runs still had a significantly "
        f"falling validation loss (slope over the last K = min(10, epochs/2) epochs, one-sided "
        f"p < 0.05) when patience 3 stopped them; {len(unsolved)} of them below the "
        f"sweep's solved level ({SOLVED:.0%} test accuracy):",
        "",
        "| run | epochs | slope p | test accuracy |",
        "|---|---|---|---|",
    ]
    for key, p, acc, n in sorted(improving):
        lines.append(f"| {key} | {n} | {p:.4f} | {acc * 100:.1f}% |")
    h1 = [recs[k]["test"]["pos_acc"] for k in recs if k.startswith("heads/cpm3/mha/H1/")]
    if h1:
        lines += [
            "",
            f"The single-head MHA mean ({sum(h1) / len(h1) * 100:.1f}% over {len(h1)} seeds: "
            + ", ".join(f"{x * 100:.1f}%" for x in h1)
            + ") includes heads/cpm3/mha/H1/P1/lr0.003/s1, stopped while still improving "
            f"({window_for(26)}-epoch slope p < 0.05): it says what patience 3 reached, not "
            "what one head can reach.",
        ]
    return lines


def audit_lines(docs: Path) -> list[str]:
    lines = [
        "# The convergence rule on the committed runs",
        "",
        "Generated by `python -m iha.reproduce.audit --write docs/results/convergence_audit.md`"
        " from docs/results/synthetic/runs.jsonl and docs/results/lm/runs/. The rule "
        "(`iha.reproduce.convergence.classify`, pre-registered in preregistration.md): over the "
        "last K = min(10, max(3, n/2)) of n validation evaluations, a one-sided t-test of the "
        "least-squares slope; 'improving' when p < 0.05, else 'converged' ('plateau' when at "
        "chance accuracy); 'solved' when the accuracy threshold is reached.",
        "",
    ]
    return lines + lm_section(load_lm(docs)) + synthetic_section(load_synthetic(docs))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m iha.reproduce.audit", description="the convergence rule on the runs"
    )
    p.add_argument("--docs", type=Path, default=Path("docs/results"),
                   help="folder holding synthetic/ and lm/ (default docs/results)")  # fmt: skip
    p.add_argument("--write", type=Path, default=None, help="also write the report here")
    args = p.parse_args(argv)
    text = "\n".join(audit_lines(args.docs)) + "\n"
    print(text, end="")
    if args.write is not None:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
