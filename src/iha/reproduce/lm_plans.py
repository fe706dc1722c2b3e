"""What `iha reproduce lm` runs: decoder LMs of the six attention variants at equal FLOPs.

Every experiment trains :class:`iha.models.DecoderLM` models that differ only in their attention
(``attention_variant``: global, global_local, talking_heads, diff, iha, iha_global), each for the
same training-FLOP budget as counted by the project's one FLOP counter (``iha.flops`` through
:func:`iha.models.describe.model_flops`, causal masks and windows counted exactly): a variant whose
forward pass costs more per token runs proportionally fewer steps. The budget is that of the
``global`` model at ``budget_steps`` steps.

Learning rate: every variant tries every rate of ``lrs`` with seed 0; the one with the best
validation metric (accuracy for the recall tasks, loss for text) is then run with the other seeds.
Tables compare the chosen rates over all seeds (paired by seed: same data, same draw order).

Sizes per mode: ``full`` (the committed results, docs/results/lm/), ``quick`` (at most a few
minutes: one experiment per task, small budgets) and ``tiny`` (seconds, the test suite; learns
nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from iha.models.config import VARIANTS

LM_MODES = ("tiny", "quick", "full")
TASK_KINDS = ("mqar", "niah", "text")


@dataclass(frozen=True)
class LMExperiment:
    """One task at one model size, trained for every variant, LR and seed.

    Attributes:
        name: unique name, e.g. ``"mqar/d48-p4-n16"`` (also the folder of its runs).
        task: one of :data:`TASK_KINDS`.
        hidden_size, num_layers, num_heads, num_pseudo: the model (P pseudo-heads in IHA
            layers); 5 layers hold one whole 4:1 schedule of ``global_local`` and ``iha``.
        seq_len: training context N (also ``max_position_embeddings``).
        batch_size: sequences per step.
        budget_steps: steps of the ``global`` variant; its training FLOPs are every variant's
            budget.
        lrs: learning-rate grid (tried with seed 0).
        warmup_steps: linear warmup, then cosine decay to a tenth of the rate.
        evals: validation evaluations per run (the loss curve of the report's plots).
        task_args: arguments of the task (``(name, value)`` pairs).
        test_points: MQAR: numbers of pairs tested; NIAH: context lengths tested (the first is
            the training length); text: empty.
        local_window: window (tokens) of the ``global_local`` variant's local layers.
    """

    name: str
    task: str
    hidden_size: int
    seq_len: int
    batch_size: int
    budget_steps: int
    lrs: tuple[float, ...]
    task_args: tuple[tuple[str, Any], ...] = ()
    test_points: tuple[int, ...] = ()
    num_layers: int = 5
    num_heads: int = 4
    num_pseudo: int = 2
    warmup_steps: int = 20
    evals: int = 5
    local_window: int | None = None
    variants: tuple[str, ...] = field(default=VARIANTS)

    def model_config(self, variant: str, vocab_size: int) -> dict[str, Any]:
        """The ``[model]`` table of one variant (``iha.models.ModelConfig`` keys)."""
        window = self.local_window or max(1, self.seq_len // (2 * self.num_pseudo**2))
        return {
            "vocab_size": vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "max_position_embeddings": self.seq_len,
            "attention_variant": variant,
            "num_pseudo_heads": self.num_pseudo,
            "sliding_window": window,
        }


@dataclass(frozen=True)
class LMJob:
    """One training run: an experiment, a variant, a learning rate and a seed."""

    experiment: str
    variant: str
    lr: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.variant}/lr{self.lr:g}/s{self.seed}"


@dataclass(frozen=True)
class LMPlan:
    """Everything one `iha reproduce lm` invocation runs."""

    mode: str
    seeds: tuple[int, ...]
    experiments: tuple[LMExperiment, ...]

    def experiment(self, name: str) -> LMExperiment:
        for e in self.experiments:
            if e.name == name:
                return e
        raise ValueError(f"experiment={name!r} is not in this plan")


def mqar_experiment(
    width: int, pairs: int, keys: int, steps: int, batch: int, lrs, seq_len: int = 0, **kw
) -> LMExperiment:
    """MQAR with ``pairs`` pairs, padded to ``seq_len`` tokens (0: exactly ``3 * pairs``)."""
    n = seq_len or 3 * pairs
    return LMExperiment(
        name=f"mqar/d{width}-p{pairs}-n{n}",
        task="mqar",
        hidden_size=width,
        seq_len=n,
        batch_size=batch,
        budget_steps=steps,
        lrs=lrs,
        task_args=(
            ("pair_counts", (pairs,)),
            ("num_keys", keys),
            ("num_values", keys),
            ("seq_len", n),
        ),  # fmt: skip
        test_points=(pairs,),
        **kw,
    )


def niah_experiment(
    width: int,
    seq_len: int,
    tests: tuple[int, ...],
    steps: int,
    batch: int,
    lrs,
    needles: int = 4,
    queries: int = 2,
    **kw,
) -> LMExperiment:
    """Multi-key NIAH: ``needles`` key-value needles, ``queries`` of them asked (the rest are
    distractors); trained at ``seq_len``, tested at ``tests``."""
    shape = "" if (needles, queries) == (4, 2) else f"-k{needles}q{queries}"
    return LMExperiment(
        name=f"niah/d{width}-n{seq_len}{shape}",
        task="niah",
        hidden_size=width,
        seq_len=seq_len,
        batch_size=batch,
        budget_steps=steps,
        lrs=lrs,
        task_args=(
            ("num_needles", needles),
            ("num_queries", queries),
            ("num_filler", 8),
            ("num_keys", 16),
            ("num_values", 16),
        ),  # fmt: skip
        test_points=tests,
        **kw,
    )


def text_experiment(width: int, seq_len: int, steps: int, batch: int, lrs, **kw) -> LMExperiment:
    return LMExperiment(
        name=f"text/d{width}-n{seq_len}",
        task="text",
        hidden_size=width,
        seq_len=seq_len,
        batch_size=batch,
        budget_steps=steps,
        lrs=lrs,
        **kw,
    )


def full_plan() -> LMPlan:
    """The committed results: byte-level text, MQAR at two widths, NIAH (3 seeds).

    Experiments run in this order; the text experiment's definition is that of its committed
    runs, so ``--resume`` reuses them. MQAR and NIAH train at a context N = 16, a multiple of
    2 P^2 = 8, so the paper's window W = N / (2 P^2) spans 2 tokens (a key and its value);
    batch 128 lets a 5-layer global model of width 48 leave MQAR's in-context-guess plateau
    within the budget, while width 32 does not (sizing probes: docs/results/lm/README.md).
    NIAH is tested at its training length and at 2x and 4x. The last point, 6 pairs at N = 24
    (window 3 tokens), is the pairs axis of the MQAR sweep at width 48.
    """
    lrs = (1e-3, 3e-3)
    recall_lrs = (3e-3, 1e-2)
    recall = dict(evals=10, warmup_steps=50)
    return LMPlan(
        mode="full",
        seeds=(0, 1, 2),
        experiments=(
            text_experiment(64, 64, 200, 16, lrs),
            mqar_experiment(48, 4, 16, 500, 128, recall_lrs, seq_len=16, **recall),
            mqar_experiment(32, 4, 16, 500, 128, recall_lrs, seq_len=16, **recall),
            niah_experiment(48, 16, (16, 32, 64), 500, 128, recall_lrs, **recall),
            mqar_experiment(48, 6, 16, 500, 128, recall_lrs, seq_len=24, **recall),
        ),
    )


def quick_plan() -> LMPlan:
    """A few minutes: one small experiment per task, one learning rate, 3 seeds."""
    lrs = (3e-3,)
    return LMPlan(
        mode="quick",
        seeds=(0, 1, 2),
        experiments=(
            mqar_experiment(32, 4, 16, 60, 32, lrs, num_layers=5, evals=2),
            niah_experiment(32, 24, (24, 48), 40, 16, lrs, evals=2),
            text_experiment(32, 32, 40, 8, lrs, evals=2),
        ),
    )


def tiny_plan() -> LMPlan:
    """Seconds: every code path (two LRs, two seeds, three tasks, two variants); learns nothing."""
    lrs = (1e-3, 3e-3)
    small = dict(num_layers=5, num_heads=2, evals=1, warmup_steps=1, variants=("global", "iha"))
    return LMPlan(
        mode="tiny",
        seeds=(0, 1),
        experiments=(
            mqar_experiment(8, 2, 4, 2, 4, lrs, **small),
            niah_experiment(8, 14, (14, 20), 2, 4, lrs, **small),
            text_experiment(8, 16, 2, 2, lrs, **small),
        ),
    )


def get_lm_plan(mode: str, seeds: int | None = None) -> LMPlan:
    """The plan of ``mode`` (one of :data:`LM_MODES`), optionally with seeds 0..seeds-1."""
    builders = {"tiny": tiny_plan, "quick": quick_plan, "full": full_plan}
    if mode not in builders:
        raise ValueError(f"mode={mode!r}: accepted values are {LM_MODES}")
    plan = builders[mode]()
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"seeds={seeds!r} must be an integer >= 1")
        plan = replace(plan, seeds=tuple(range(seeds)))
    return plan
