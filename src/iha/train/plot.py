"""PNG plots of one or more runs: loss vs tokens and loss vs training FLOPs (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iha.train.metrics import read_metrics


def _series(records: list[dict[str, Any]], split: str, x: str) -> tuple[list[float], list[float]]:
    rows = [r for r in records if r.get("split", "train") == split and x in r and "loss" in r]
    return [float(r[x]) for r in rows], [float(r["loss"]) for r in rows]


def _smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average (debiased), the TensorBoard-style smoothing of noisy losses."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** (i + 1)))
    return out


def plot_runs(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    labels: list[str] | None = None,
    smooth: float = 0.0,
) -> list[Path]:
    """Write ``loss_vs_tokens.png`` and ``loss_vs_flops.png`` comparing ``run_dirs``.

    Train loss is a line per run (optionally smoothed with an EMA of weight ``smooth``), the
    validation loss markers of the same colour. Returns the written files.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ValueError("run_dirs must name at least one run directory")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth={smooth} must be in [0, 1)")
    labels = labels or [Path(r).resolve().name for r in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"labels has {len(labels)} entries for {len(run_dirs)} run dirs")
    runs = [read_metrics(r) for r in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for x, xlabel in (("tokens", "tokens seen"), ("flops", "training FLOPs")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (records, label) in enumerate(zip(runs, labels)):
            color = f"C{i % 10}"
            xs, ys = _series(records, "train", x)
            if xs:
                ys = _smooth(ys, smooth) if smooth else ys
                ax.plot(xs, ys, color=color, lw=1.2, label=f"{label} train")
            vx, vy = _series(records, "val", x)
            if vx:
                ax.plot(vx, vy, "o--", color=color, ms=4, lw=0.8, label=f"{label} val")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss (nats/token)")
        if x == "flops":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"loss_vs_{x}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
