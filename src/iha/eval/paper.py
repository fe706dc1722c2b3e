"""The paper's two evaluation tables as presets (PAPER.md, section 5; docs/eval.md).

``pretrained``: GSM8K EM and Maj@5, MATH-500 EM, MBPP P@1, HumanEval P@1 of a pre-trained
model. EM and P@1 are greedy (one sample); Maj@5 is the majority of 5 samples at temperature
0.6 (the paper gives no temperature for it: our choice). GSM8K and MATH-500 use our 5-shot
prompts, MBPP its standard 3-shot prompt, HumanEval its standard zero-shot completion (the
paper's table says "5-shot" for every column; the code benchmarks' standard shot counts are
kept).

``sft``: GSM8K and MATH-500 P@1 and Maj@16, MBPP P@1 and P@10, from 16 samples per problem at
temperature 0.6 (the paper's setting), chat prompts (the models are fine-tuned on chat data).

Each preset runs every benchmark through :mod:`iha.eval.runner` and returns one row of the
paper's table; :func:`format_table` writes the table in the paper's layout (percent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iha.eval import runner

PRESETS = ("pretrained", "sft")
COLUMNS = {
    "pretrained": (
        ("GSM8K EM", "gsm8k-greedy", "pass@1", 2),
        ("GSM8K Maj@5", "gsm8k-maj5", "maj@5", 2),
        ("MATH-500 EM", "math500-greedy", "pass@1", 2),
        ("MBPP P@1", "mbpp-greedy", "pass@1", 1),
        ("HumanEval P@1", "humaneval-greedy", "pass@1", 1),
    ),
    "sft": (
        ("GSM8K P@1", "gsm8k-sampled", "pass@1", 1),
        ("GSM8K Maj@16", "gsm8k-sampled", "maj@16", 1),
        ("MATH-500 P@1", "math500-sampled", "pass@1", 1),
        ("MATH-500 Maj@16", "math500-sampled", "maj@16", 1),
        ("MBPP P@1", "mbpp-sampled", "pass@1", 1),
        ("MBPP P@10", "mbpp-sampled", "pass@10", 1),
    ),
}


@dataclass(frozen=True)
class Run:
    """One evaluation of a preset: benchmark, samples per problem, temperature, prompt style."""

    name: str
    benchmark: str
    n_samples: int
    temperature: float
    prompt_style: str


def runs(preset: str, code_prompt_style: str | None = None) -> list[Run]:
    """The evaluations ``preset`` needs, in order (each run once, however many columns use it)."""
    if preset == "pretrained":
        return [
            Run("gsm8k-greedy", "gsm8k", 1, 0.0, "fewshot"),
            Run("gsm8k-maj5", "gsm8k", 5, 0.6, "fewshot"),
            Run("math500-greedy", "math500", 1, 0.0, "fewshot"),
            Run("mbpp-greedy", "mbpp", 1, 0.0, code_prompt_style or "fewshot"),
            Run("humaneval-greedy", "humaneval", 1, 0.0, "fewshot"),
        ]
    if preset == "sft":
        return [
            Run("gsm8k-sampled", "gsm8k", 16, 0.6, "chat"),
            Run("math500-sampled", "math500", 16, 0.6, "chat"),
            Run("mbpp-sampled", "mbpp", 16, 0.6, code_prompt_style or "chat"),
        ]
    raise ValueError(f"preset={preset!r} is not one of {', '.join(PRESETS)}")


@dataclass
class PaperResult:
    """A preset's results: every run's :class:`~iha.eval.runner.SampledResult` and the row."""

    preset: str
    label: str
    results: dict[str, runner.SampledResult] = field(default_factory=dict)

    def row(self) -> dict[str, float]:
        """Column name -> value in [0, 1]."""
        return {
            column: self.results[run].metrics[metric]["value"]
            for column, run, metric, _ in COLUMNS[self.preset]
        }

    def markdown(self) -> str:
        return format_table(self.preset, {self.label: self.row()}, self.settings_line())

    def settings_line(self) -> str:
        parts = []
        for name, res in self.results.items():
            s = res.settings
            parts.append(
                f"{name}: {s['n_problems']} problems x {s['n_samples']} "
                f"(T={s['temperature']}, {s['prompt_style']})"
            )
        return "; ".join(parts)


def format_table(
    preset: str, rows: Mapping[str, Mapping[str, float]], note: str | None = None
) -> str:
    """The paper's table: one row per model label, its columns in the paper's order (percent,
    with the paper's number of decimals)."""
    if preset not in COLUMNS:
        raise ValueError(f"preset={preset!r} is not one of {', '.join(PRESETS)}")
    cols = COLUMNS[preset]
    lines = [
        "| Model | " + " | ".join(c for c, _, _, _ in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for label, values in rows.items():
        cells = [f"{100 * values[c]:.{d}f}" if c in values else "-" for c, _, _, d in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines)


def run_preset(
    preset: str,
    generator: runner.Generator,
    tokenizer: Any,
    data: Mapping[str, str | Path | None],
    label: str = "model",
    limit: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    code_prompt_style: str | None = None,
    code_timeout: float = 10.0,
    code_workers: int = 1,
    code_isolate: bool = True,
    progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
) -> PaperResult:
    """Run every evaluation of ``preset`` and collect the table row.

    ``data`` maps ``gsm8k``, ``math500``, ``mbpp``, ``humaneval`` to a local file (None: the
    hub); ``limit`` takes the first problems of each; ``max_new_tokens`` defaults to 1024 for
    GSM8K / MATH-500 and 512 for the code benchmarks.
    """
    from iha.eval.gsm8k import load_gsm8k
    from iha.eval.humaneval import load_humaneval
    from iha.eval.math import load_math500
    from iha.eval.mbpp import load_mbpp

    loaders = {
        "gsm8k": load_gsm8k,
        "math500": load_math500,
        "mbpp": load_mbpp,
        "humaneval": load_humaneval,
    }
    plan = runs(preset, code_prompt_style)
    problems = {
        b: loaders[b](data.get(b), limit=limit) for b in dict.fromkeys(r.benchmark for r in plan)
    }
    out = PaperResult(preset, label)
    for r in plan:
        code = r.benchmark in runner.CODE_BENCHMARKS
        params = runner.SamplingParams(
            max_new_tokens=max_new_tokens or (512 if code else 1024),
            temperature=r.temperature,
            seed=seed if r.temperature > 0 else None,
        )
        report = progress(r.name) if progress is not None else None
        if code:
            out.results[r.name] = runner.run_code_eval(
                r.benchmark,
                problems[r.benchmark],
                generator,
                tokenizer,
                n_samples=r.n_samples,
                params=params,
                ks=(1, 10),
                batch_size=batch_size,
                prompt_style=r.prompt_style,
                timeout=code_timeout,
                workers=code_workers,
                isolate=code_isolate,
                progress=report,
            )
        else:
            out.results[r.name] = runner.run_sampled_eval(
                r.benchmark,
                problems[r.benchmark],
                generator,
                tokenizer,
                n_samples=r.n_samples,
                params=params,
                batch_size=batch_size,
                prompt_style=r.prompt_style,
                progress=report,
            )
    return out
