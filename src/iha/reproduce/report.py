"""The report of `iha reproduce synthetic`: markdown tables, plain verdicts, PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from iha.reproduce.plans import PAPER_RELATIONS, HeadSweep, RelationsExperiment, SyntheticPlan
from iha.reproduce.stats import Interval

PAPER_GAIN = {"binary": "+4.7%", "ternary": "+3.3%"}
NAMES = {"mha": "MHA", "iha": "IHA", "simplicial": "2-simplicial"}


def _name(kind: str, exp: RelationsExperiment | None = None) -> str:
    if kind == "iha" and exp is not None:
        return f"IHA (P={exp.n_pseudo})"
    return NAMES.get(kind, kind)


def _pct(iv: Interval | None) -> str:
    return "-" if iv is None else iv.format(2, scale=100.0)


def _diff_tail(diff: Interval, other: str) -> str:
    if diff.n < 2:
        return "one seed: no interval, no conclusion."
    test = f"paired t {diff.format_p()}"
    if diff.low > 0:
        return f"IHA beats {other} here ({test})."
    if diff.high < 0:
        return f"{other} beats IHA here ({test}): IHA does NOT beat {other}."
    side = "higher" if diff.mean > 0 else "lower"
    return (
        f"no significant difference ({test}; IHA {side} on average): "
        f"IHA does NOT significantly beat {other} here."
    )


def relations_verdict(s: dict) -> str:
    """One sentence: does IHA beat MHA (and 2-simplicial) on this task (paired CIs over seeds)?"""
    exp: RelationsExperiment = s["experiment"]
    best, diff = s["best"], s["diff"]
    if diff is None:
        return f"{exp.name}: no paired MHA/IHA runs to compare."
    m, i = best["mha"], best["iha"]
    head = (
        f"{exp.name.capitalize()} composition: IHA (P={exp.n_pseudo}, lr {i['lr']:g}) "
        f"{_pct(i['test_pos_acc'])}% vs MHA (lr {m['lr']:g}) {_pct(m['test_pos_acc'])}% "
        f"test per-position accuracy; IHA - MHA = {diff.format(2, 100.0)} points "
        f"(paired by seed, n = {diff.n}, 95% t-interval)"
    )
    text = f"{head}: {_diff_tail(diff, 'MHA')}"
    simplicial = s.get("diffs", {}).get("simplicial")
    if simplicial is not None:
        b = best["simplicial"]
        text += (
            f" 2-simplicial (lr {b['lr']:g}) {_pct(b['test_pos_acc'])}%; IHA - 2-simplicial = "
            f"{simplicial.format(2, 100.0)} points: {_diff_tail(simplicial, '2-simplicial')}"
        )
    strongest = s.get("strongest_baseline")
    if strongest is not None and simplicial is not None:
        text += f" Strongest baseline on validation: {NAMES[strongest]}."
    paper = PAPER_GAIN.get(exp.name)
    if paper:
        text += f" (The paper reports IHA {paper} over its strongest baseline.)"
    return text


def sweep_verdict(s: dict) -> str:
    exp: HeadSweep = s["experiment"]
    paper_mha, paper_iha = s["paper"]
    need = s["needed"]
    op = ">=" if exp.higher_is_better else "<="
    fmt = {k: ("none of the tried counts" if v is None else f"H = {v}") for k, v in need.items()}
    text = (
        f"{exp.name}: fewest heads with mean test {exp.metric} {op} {exp.solved:g}: "
        f"MHA {fmt['mha']}, IHA {fmt['iha']} (the paper's constructions: MHA {paper_mha}, "
        f"IHA {paper_iha} = ceil(sqrt({paper_mha})))."
    )
    m, i = need["mha"], need["iha"]
    if m is None or i is None:
        claim = " The sqrt(heads) claim cannot be read off at these sizes."
    elif i < m:
        claim = (
            f" IHA needs fewer heads than MHA here ({i} vs {m}); "
            + ("about the square root, as claimed." if i <= math.isqrt(m - 1) + 1 else
               "but not as few as the square root.")
        )  # fmt: skip
    else:
        claim = (
            f" IHA does NOT need fewer heads than MHA here ({i} vs {m}): the trained models do "
            "not show the sqrt(heads) separation of the constructions."
        )
    return text + claim + _paired_claim(s)


def _paired_claim(s: dict) -> str:
    exp: HeadSweep = s["experiment"]
    c = s["comparison"]
    same, full = c["vs_same_heads"], c["vs_full_heads"]
    h, big = c["iha_heads"], c["mha_full_heads"]
    if same is None or full is None or min(same.n, full.n) < 2:
        return " Too few paired runs to test IHA with sqrt heads against MHA."
    if exp.higher_is_better:
        unit, a, b = "accuracy points", same.format(2, 100.0), full.format(2, 100.0)
    else:
        unit, a, b = "log10 nMSE ratio", same.format(2), full.format(2)
    a, b = f"{a} (paired t {same.format_p()})", f"{b} ({full.format_p()})"
    text = (
        f" Paired by seed (positive = IHA better, in {unit}): IHA with {h} heads vs MHA with {h} "
        f"heads {a}; vs MHA with {big} heads {b}."
    )
    if same.low > 0 and full.high >= 0:
        return text + (
            f" Consistent with the claim: IHA with {h} heads beats MHA with {h} heads and is not "
            f"significantly worse than MHA with {big} heads (with {full.n} seeds, a weak test "
            "of equality)."
        )
    if same.low <= 0:
        return text + (
            f" The claim is NOT supported here: IHA with {h} heads does not significantly beat "
            f"MHA with {h} heads."
        )
    return text + (
        f" Only partly supported: IHA with {h} heads beats MHA with {h} heads but is "
        f"significantly worse than MHA with {big} heads."
    )


def _relations_section(s: dict) -> list[str]:
    exp: RelationsExperiment = s["experiment"]
    paper = PAPER_RELATIONS.get(exp.name, {})
    lines = [
        f"### {exp.name.capitalize()} composition ({exp.hops} hops)",
        "",
        f"m in {exp.m_min}..{exp.m_max} (sequence {exp.m_max**2} tokens), p = {exp.p}, "
        f"{exp.train} / {exp.val} / {exp.test} train / val / test examples "
        f"(paper: m in {paper.get('m', '?')}, {paper.get('splits', '?')}); "
        f"d_model {exp.d_model}, H = {exp.n_heads}, batch {exp.batch_size}, "
        f"at most {exp.max_epochs} epochs, patience {exp.patience}.",
        "",
        "| model | lr | trainable params | attention MFLOPs/example | epochs (mean) | "
        "val pos. acc % | test pos. acc % | test whole-relation acc % | train s/run (wall) | "
        "CPU s/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        chosen = s["best"].get(r["kind"]) is r
        lines.append(
            f"| {_name(r['kind'], exp)}{' (chosen lr)' if chosen else ''} | {r['lr']:g} | "
            f"{r['params']:,} | {r['attn_flops'] / 1e6:.2f} | {r['epochs']:.1f} | "
            f"{_pct(r['val_pos_acc'])} | {_pct(r['test_pos_acc'])} | "
            f"{_pct(r['test_example_acc'])} | {r['seconds']:.0f} | "
            + ("-" if r.get("cpu_seconds") is None else f"{r['cpu_seconds']:.0f}") + " |"
        )
    if s["baseline"] is not None:
        lines.append(f"| majority class | - | - | - | - | - | {_pct(s['baseline'])} | - | - | - |")
    lines += ["", f"**{relations_verdict(s)}**", ""]
    best = s["best"]
    if "mha" in best and "iha" in best:
        ratio = best["iha"]["attn_flops"] / best["mha"]["attn_flops"]
        wall = s["iha_over_mha_seconds"]
        lines += [
            f"Cost: IHA's attention runs on N*P = {exp.m_max**2} x {exp.n_pseudo} = "
            f"{exp.m_max**2 * exp.n_pseudo} virtual tokens per head, {ratio:.1f}x the attention-"
            f"layer FLOPs of MHA per example"
            + (f"; an IHA run took {wall:.1f}x the wall time of an MHA run (shared machine: "
               "wall times are noisy)." if wall else "."),
            "",
        ]  # fmt: skip
    lines += [_capped_sentence(s["n_capped"], s["n_runs"], exp.max_epochs), ""]
    lines += _ablation_lines(s)
    return lines


def _capped_sentence(n_capped: int, n_runs: int, cap: int) -> str:
    if n_capped == 0:
        return f"Convergence: early stopping ended all {n_runs} runs before the epoch cap ({cap})."
    return (
        f"Convergence: {n_capped} of {n_runs} runs reached the epoch cap ({cap}) with fewer than "
        "`patience` epochs since their best one: early stopping did not end them, so those "
        "models are under-trained at this budget."
    )


def _movement_cells(movement: dict | None) -> str:
    if movement is None:
        return "- | - | -"
    alphas = ("alpha_q", "alpha_k", "alpha_v")
    change = sum(movement[a]["rel_change"].mean for a in alphas) / 3
    spread0 = sum(movement[a]["copy_spread_start"].mean for a in alphas) / 3
    spread1 = sum(movement[a]["copy_spread_end"].mean for a in alphas) / 3
    coll = movement["collapse"]
    return (
        f"{100 * change:.1f}% / {100 * coll['rel_change'].mean:.1f}% | "
        f"{spread0:.3f} -> {spread1:.3f} | "
        f"{coll['copy_spread_start'].mean:.3f} -> {coll['copy_spread_end'].mean:.3f}"
    )


def _ablation_lines(s: dict) -> list[str]:
    ablations = s.get("ablations") or []
    if not ablations:
        return []
    exp = s["experiment"]
    lines = [
        f"#### IHA ablations ({exp.name} composition, lr {ablations[0]['lr']:g})",
        "",
        "Paired by seed against the main IHA runs (P = 8, exact-MHA init + noise 0.02, mixing "
        "weights at the model's learning rate). Movement of the mixing weights from their start: "
        "relative change ||W - W0|| / ||W0|| (alphas averaged / collapse), and the copy spread "
        "||W - mean_p W|| / ||W|| over the pseudo axis (0 = the P pseudo-heads are identical "
        "copies, i.e. no use of the extra patterns), start -> end.",
        "",
        "| variant | seeds | epochs (mean) | runs at cap | test pos. acc % | minus main IHA, "
        "points | change alphas / collapse | alpha copy spread | collapse copy spread |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in ablations:
        abl = a["ablation"]
        name = "main IHA (P=8, near-MHA init)" if abl is None else abl.description
        vs = ("-" if a["vs_main"] is None else
              f"{a['vs_main'].format(2, 100.0)} (paired t {a['vs_main'].format_p()})")  # fmt: skip
        lines.append(
            f"| {name} | {a['n_seeds']} | {a['epochs']:.1f} | {a['capped']} | "
            f"{_pct(a['test_pos_acc'])} | {vs} | {_movement_cells(a['movement'])} |"
        )
    lines.append("")
    return lines


def _sweep_section(s: dict) -> list[str]:
    exp: HeadSweep = s["experiment"]
    args = ", ".join(f"{k}={v}" for k, v in exp.task_args)
    width = f"d_model {exp.d_model} (head_dim = d_model / H)" if exp.d_model else (
        "linear attention on X_hat = [X, I_N], layer sized like the paper's construction "
        "(head_dim = max(N, H d))"
    )  # fmt: skip
    metric = (
        "test per-position accuracy %"
        if exp.metric == "pos_acc"
        else "worst-channel test nMSE (1 - R^2 of the hardest output channel)"
    )
    kinds = list(s["curves"])
    titles = {"mha": "MHA", "iha": "IHA (P = H)", "simplicial": "2-simplicial"}
    lines = [
        f"### Head-count sweep: {exp.name} ({args})",
        "",
        f"{width}; IHA uses P = H pseudo-heads; lr {exp.lr:g}, batch {exp.batch_size}, "
        f"{exp.steps_per_epoch} steps per epoch of fresh examples, at most {exp.max_epochs} "
        f"epochs, patience {exp.patience}. Metric: {metric}.",
        "",
        "| H | " + " | ".join(titles[k] for k in kinds) + " | "
        + " | ".join(f"{NAMES[k]} params" for k in kinds) + " |",
        "|---|" + "---|" * (2 * len(kinds)),
    ]  # fmt: skip
    by_h: dict[int, dict] = {}
    for kind, points in s["curves"].items():
        for p in points:
            by_h.setdefault(p["n_heads"], {})[kind] = p
    scale, digits = (100.0, 2) if exp.metric == "pos_acc" else (1.0, 4)
    for h in sorted(by_h):
        row = by_h[h]
        cell = [row[k]["test"].format(digits, scale) if k in row else "-" for k in kinds]
        par = [f"{row[k]['params']:,}" if k in row else "-" for k in kinds]
        lines.append(f"| {h} | " + " | ".join(cell + par) + " |")
    if s["baseline"] is not None:
        lines.append(f"| majority class | {_pct(s['baseline'])} |" + " |" * (2 * len(kinds) - 1))
    lines += ["", f"**{sweep_verdict(s)}**", ""]
    if "n_capped" in s:
        lines += [_capped_sentence(s["n_capped"], s["n_runs"], exp.max_epochs), ""]
    return lines


def plot_all(summary: dict, out_dir: Path) -> list[str]:
    """Write the PNG plots; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    rel = [s for s in summary["relations"] if _ran(s)]
    if rel:
        fig, axes = plt.subplots(1, len(rel), figsize=(5 * len(rel), 4), squeeze=False)
        for ax, s in zip(axes[0], rel):
            exp = s["experiment"]
            lrs = sorted({r["lr"] for r in s["rows"]}, reverse=True)
            kinds = [k for k in NAMES if any(r["kind"] == k for r in s["rows"])]
            width = 0.8 / max(len(kinds), 1)
            for j, kind in enumerate(kinds):
                rows = {r["lr"]: r for r in s["rows"] if r["kind"] == kind}
                xs = [i + (j - (len(kinds) - 1) / 2) * width for i in range(len(lrs))]
                means = [rows[lr]["test_pos_acc"].mean * 100 if lr in rows else math.nan
                         for lr in lrs]  # fmt: skip
                errs = [_err(rows[lr]["test_pos_acc"]) * 100 if lr in rows else 0 for lr in lrs]
                ax.bar(xs, means, width, yerr=errs, capsize=4, label=_name(kind, exp))
                for x, lr in zip(xs, lrs):
                    seeds = list(rows[lr]["test_pos_by_seed"].values()) if lr in rows else []
                    ax.scatter([x] * len(seeds), [v * 100 for v in seeds], s=9, color="black")
            if s["baseline"] is not None:
                ax.axhline(s["baseline"].mean * 100, color="gray", ls="--", label="majority")
            ax.set_xticks(range(len(lrs)), [f"lr {lr:g}" for lr in lrs])
            lo = min([s["baseline"].mean * 100] if s["baseline"] else [50.0])
            ax.set_ylim(max(0.0, lo - 10), 100)
            ax.set_ylabel("test per-position accuracy %")
            ax.set_title(f"{exp.name} relation composition, 1 layer, H={exp.n_heads}")
            ax.legend(loc="lower right", fontsize=8)
        fig.suptitle("bars: mean ± 95% CI over seeds; dots: single seeds", fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / "relations.png", dpi=110)
        plt.close(fig)
        names.append("relations.png")
    for s in summary["sweeps"]:
        if not _ran(s):
            continue
        exp = s["experiment"]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        pct = exp.metric == "pos_acc"
        scale = 100.0 if pct else 1.0
        all_heads: set[int] = set()
        for j, (kind, points) in enumerate(s["curves"].items()):
            if not points:
                continue
            hs = [p["n_heads"] for p in points]
            all_heads.update(hs)
            ms = [p["test"].mean * scale for p in points]
            es = [_err(p["test"]) * scale for p in points]
            # on a log axis an interval reaching below 0 is drawn down to the axis floor
            low = es if pct else [min(e, 0.95 * m) for e, m in zip(es, ms)]
            color = f"C{j}"
            ax.errorbar(hs, ms, yerr=[low, es], marker="o", capsize=4, color=color,
                        label={"mha": "MHA", "iha": "IHA (P = H)"}.get(kind, NAMES[kind]))
            for p in points:  # every seed, small and offset a little for visibility
                seeds = list(p["test_by_seed"].values())
                x = [p["n_heads"] + {"mha": -0.08, "iha": 0.08}.get(kind, 0.0)] * len(seeds)
                ax.scatter(x, [v * scale for v in seeds], s=9, color=color, alpha=0.5)
        ax.set_xticks(sorted(all_heads))
        paper_mha, paper_iha = s["paper"]
        ax.axvline(paper_mha, color="C0", ls=":", label=f"MHA construction: {paper_mha} heads")
        ax.axvline(paper_iha, color="C1", ls=":", label=f"IHA construction: {paper_iha} heads")
        if pct:
            ax.set_ylabel("test per-position accuracy %")
            ax.set_ylim(0, 100)
            if s["baseline"] is not None:
                ax.axhline(s["baseline"].mean * 100, color="gray", ls="--", label="majority")
        else:
            ax.set_yscale("log")
            ax.set_ylabel("worst-channel test nMSE")
        ax.set_xlabel("heads H")
        ax.set_title(f"{exp.name}: 1 layer, metric vs heads\nmean ± 95% CI over seeds; dots: seeds",
                     fontsize=10)  # fmt: skip
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"heads_{exp.name}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _err(iv: Interval) -> float:
    return 0.0 if math.isnan(iv.half_width) else iv.half_width


def _ran(s: dict) -> bool:
    return s.get("n_runs", 1) > 0


def _not_run(s: dict) -> str:
    return f"{s['experiment'].key}: not run yet."


def verdicts(summary: dict) -> list[str]:
    """The plain-language outcome of every experiment."""
    return [relations_verdict(s) if _ran(s) else _not_run(s) for s in summary["relations"]] + [
        sweep_verdict(s) if _ran(s) else _not_run(s) for s in summary["sweeps"]
    ]


def markdown_tables(summary: dict) -> list[str]:
    """The result tables (what the command prints)."""
    lines: list[str] = []
    for s in summary["relations"]:
        lines += _relations_section(s) if _ran(s) else [f"### {_not_run(s)}", ""]
    for s in summary["sweeps"]:
        lines += _sweep_section(s) if _ran(s) else [f"### {_not_run(s)}", ""]
    return lines


def busy_time(spans: list[tuple[float, float]]) -> tuple[float, int]:
    """The union length of ``(start, finish)`` spans and the most that overlap at one moment.

    A report written after several invocations (``--resume``) measures its wall time by the
    spans of its runs, so that the hours between invocations do not count.
    """
    events = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans])
    total, running, most, since = 0.0, 0, 0, 0.0
    for time_, step in events:
        if running > 0:
            total += time_ - since
        running += step
        most = max(most, running)
        since = time_
    return total, most


def write_report(
    plan: SyntheticPlan,
    summary: dict,
    out_dir: Path,
    *,
    command: str,
    wall_seconds: float,
    run_seconds: float,
    machine: dict,
    workers: int,
    threads: int,
    missing: list[str] | None = None,
) -> Path:
    """Write ``report.md``, ``summary.json`` and the plots into ``out_dir``; returns the report.

    ``wall_seconds`` and ``workers``: see :func:`busy_time`.

    ``missing``: keys of the plan's jobs without a finished run (listed in the report).
    """
    plots = plot_all(summary, out_dir)
    lines = [
        f"# Synthetic reproduction of Interleaved Head Attention ({plan.mode} mode)",
        "",
        f"- Command: `{command}`",
        f"- Seeds: {', '.join(map(str, plan.seeds))} (each seed draws its own data set and "
        "initialisation; MHA and IHA runs with the same seed see the same data in the same order)",
        f"- Wall time: {_duration(wall_seconds)} while runs were going (the union of the runs'"
        f" start-finish spans, so pauses between invocations do not count), at most {workers} "
        f"run(s) at once x {threads} torch thread(s) ({_duration(run_seconds)} of training "
        "summed over runs)",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores visible (shared with other "
        f"jobs), Python {machine['python']}, torch {machine['torch']}, {machine['platform']}",
        "- Intervals: mean ± t-based 95% confidence half-width over seeds "
        "(t_{n-1} * s / sqrt(n)); no interval with one seed.",
        "",
        "## Outcome",
        "",
        *[f"- {v}" for v in verdicts(summary)],
        "",
        *_missing_lines(plan, missing or [], command),
        "## Results",
        "",
        *markdown_tables(summary),
        "## Plots",
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
        *_setup_notes(plan),
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    slim = {  # runs.jsonl already holds the records
        part: [{k: v for k, v in s.items() if k != "records"} for s in items]
        for part, items in summary.items()
    }
    (out_dir / "summary.json").write_text(json.dumps(to_jsonable(slim), indent=1) + "\n")
    return path


def _missing_lines(plan: SyntheticPlan, missing: list[str], command: str) -> list[str]:
    if not missing:
        return []
    counts: dict[str, int] = {}
    for key in missing:
        group = "/".join(key.split("/")[:3])  # experiment and model
        counts[group] = counts.get(group, 0) + 1
    resume = command if "--resume" in command else f"{command} --resume"
    return [
        "## Not run yet",
        "",
        f"{len(missing)} of {len(plan.jobs())} jobs of this plan have not finished, so the "
        f"tables above hold only the finished runs; `{resume}` continues them (finished jobs "
        "are skipped, an interrupted one resumes from its last epoch). Missing, per experiment "
        "and model: " + ", ".join(f"{k} ({v})" for k, v in sorted(counts.items())) + ".",
        "",
    ]


def _sizes_table(plan: SyntheticPlan) -> list[str]:
    """Relation-composition settings here vs the paper's appendix D."""
    lines = [
        "| setting | " + " | ".join(f"{e.name}: paper | {e.name}: here" for e in plan.relations)
        + " |",
        "|---|" + "---|---|" * len(plan.relations),
    ]  # fmt: skip
    rows = {
        "m (relation size)": lambda e, p: (p["m"], f"{e.m_min}..{e.m_max}"),
        "sequence length (tokens)": lambda e, p: (
            str(int(p["m"].split("..")[1]) ** 2), str(e.m_max**2)),
        "entry probability p": lambda e, p: (str(p["p"]), str(e.p)),
        "train / val / test": lambda e, p: (p["splits"], f"{e.train:,} / {e.val:,} / {e.test:,}"),
        "layers, heads H, pseudo-heads P": lambda e, p: (
            "1, 8, 8", f"1, {e.n_heads}, {e.n_pseudo}"),
        "d_model": lambda e, p: ("not given", str(e.d_model)),
        "learning rates": lambda e, p: ("1e-3, 1e-4", ", ".join(f"{lr:g}" for lr in e.lrs)),
        "epochs / early-stopping patience": lambda e, p: (
            "not given / 10", f"at most {e.max_epochs} / {e.patience}"),
        "batch size, optimiser": lambda e, p: ("not given", f"{e.batch_size}, AdamW"),
        "baselines": lambda e, p: ("MHA, 2-simplicial", ", ".join(
            NAMES[k] for k in e.models if k != "iha")),
    }  # fmt: skip
    for label, fn in rows.items():
        cells = []
        for e in plan.relations:
            cells += fn(e, PAPER_RELATIONS.get(e.name, {"m": "?..0", "p": "?", "splits": "?"}))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _setup_notes(plan: SyntheticPlan) -> list[str]:
    P = plan.relations[0].n_pseudo if plan.relations else 8
    return [
        "## Setup and deviations from the paper",
        "",
        *_sizes_table(plan),
        "",
        "- Model: token + learned absolute position embeddings, one pre-norm block "
        "(attention, then a 4x GELU MLP), final LayerNorm, linear per-position head. Only the "
        "attention differs: MHA is `InterleavedHeadAttention` with P = 1, the exact-MHA init "
        "and frozen mixing weights (exactly multi-head attention); IHA has P pseudo-heads, "
        "global collapse, exact-MHA init + noise 0.02 on the mixing weights "
        "(`iha.InterleavedHeadAttention`; runs made while a variant with the mixing folded into "
        "the projections existed computed the same layer that way, equal up to float rounding); "
        "2-simplicial is `iha.simplicial."
        "TwoSimplicialAttention` (Roy et al. 2025: trilinear logits <q_i, k_j, k'_l> / sqrt(d), "
        "softmax over the (j, l) pairs, output sum A_ijl v_j * v'_l; five projections, so 1.5x "
        "MHA's attention parameters).",
        '- Attention is bidirectional (`mask="none"`), with no RoPE: the output at (i, j) of '
        "a composed relation needs row i and column j of the whole matrix, a CPM-3 count needs "
        "every position and the filter bank needs all of X. The paper does not say which mask "
        "it used for relation composition.",
        "- Padding tokens stay visible to attention (no key-padding mask): the model infers m "
        "from them. Loss and accuracy are taken on the m*m real positions only.",
        "- Optimiser: AdamW (betas 0.9, 0.98, weight decay 0.01 on matrices, none on mixing "
        "weights), linear warmup over 20 steps then constant LR, gradient clipping at 1.0.",
        "- Early stopping on validation loss, evaluated once per epoch, with the plan's patience; "
        "the weights of the best epoch are tested. The learning rate of the comparison is chosen "
        "per model on mean validation per-position accuracy (never on test).",
        *([] if plan.mode == "paper" else [
            "- Sizes are reduced from the paper's (40k training examples, m up to 10, patience 10 "
            f"epochs) to fit 2 shared CPU cores: IHA with P = {P} attends over N*P virtual "
            f"tokens, so its attention costs P^2 = {P * P} times MHA's, and 2-simplicial "
            "attention is cubic in N; see the per-experiment lines above. "
            "`iha reproduce synthetic --mode paper` runs the paper's sizes (on a GPU)."]),
        "- Head sweeps: the paper proves its Polynomial and CPM-3 head counts by construction "
        "(see `iha theory`) and reports no training runs; these sweeps ask whether trained "
        "1-layer models show the same separation. A trained soft-attention layer with an MLP is "
        "not limited to the constructions' hard attention (e.g. one uniform head can count "
        "residues for CPM-3), so a missing separation does not contradict the theorems.",
        "- Left out: Talking-Heads and Differential attention. `iha.models` has them only as "
        "causal decoder layers (causal mask and RoPE built in), and these tasks need "
        "bidirectional attention: a causal 1-layer block cannot see the rows below i, so it would "
        "be solving a different task.",
        "- Raw data: `runs.jsonl` (one record per run, with per-epoch validation history) and "
        "`summary.json`.",
    ]


def to_jsonable(obj):
    """Summaries with Interval and experiment objects turned into plain JSON values."""
    from dataclasses import asdict, is_dataclass

    if isinstance(obj, Interval):
        return {"mean": obj.mean, "ci95": None if math.isnan(obj.half_width) else obj.half_width,
                "n": obj.n}  # fmt: skip
    if is_dataclass(obj):
        return asdict(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
