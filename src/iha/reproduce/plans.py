"""What `iha reproduce synthetic` runs: the experiments, their sizes, and the three modes.

* ``full``: sized to finish in about 40 minutes on 2 shared CPU cores (the committed results in
  docs/results/synthetic/). The paper's relation-composition runs (40k examples, many epochs,
  m up to 10) are far beyond that; :data:`PAPER_RELATIONS` records them for the report.
* ``quick``: a few minutes (``iha demo`` / ``make demo``): tiny sizes, one learning rate.
* ``tiny``: seconds, for the test suite; exercises every code path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from torch import nn

from iha.reproduce.models import OneLayerTagger, make_attention
from iha.tasks import CPM3Task, PolynomialTask, RelationCompositionTask, SyntheticTask
from iha.theory.polynomial import PolynomialFilterNet

MODES = ("tiny", "quick", "full")

# The paper's appendix D settings (PAPER.md), for the report's "ours vs paper" table.
PAPER_RELATIONS = {
    "binary": {"hops": 2, "m": "6..10", "p": 0.325, "splits": "40,000 / 5,000 / 5,000"},
    "ternary": {"hops": 3, "m": "5..8", "p": 0.264, "splits": "40,000 / 5,000 / 5,000"},
}


@dataclass(frozen=True)
class Job:
    """One training run: an experiment, a model, its heads, a learning rate and a seed."""

    experiment: str  # "relations/binary", "heads/cpm3", ...
    kind: str  # "mha" | "iha"
    n_heads: int
    n_pseudo: int
    lr: float
    seed: int

    @property
    def key(self) -> str:
        heads = f"H{self.n_heads}/P{self.n_pseudo}"
        return f"{self.experiment}/{self.kind}/{heads}/lr{self.lr:g}/s{self.seed}"


@dataclass(frozen=True)
class RelationsExperiment:
    """Relation composition (paper appendix D): 1 layer, H heads, MHA vs IHA (P pseudo-heads)."""

    name: str  # "binary" | "ternary"
    hops: int
    m_min: int
    m_max: int
    p: float
    train: int
    val: int
    test: int
    lrs: tuple[float, ...]
    batch_size: int
    max_epochs: int
    patience: int
    d_model: int = 64
    n_heads: int = 8
    n_pseudo: int = 8
    models: tuple[str, ...] = ("mha", "iha")

    @property
    def key(self) -> str:
        return f"relations/{self.name}"

    def make_task(self, seed: int) -> RelationCompositionTask:
        return RelationCompositionTask(
            self.hops,
            self.m_min,
            self.m_max,
            self.p,
            seed=seed,
            split_sizes={"train": self.train, "val": self.val, "test": self.test},
        )

    def make_model(self, job: Job, task: SyntheticTask) -> nn.Module:
        attn = make_attention(job.kind, self.d_model, job.n_heads, job.n_pseudo)
        return OneLayerTagger(attn, task.seq_len, 1, vocab_size=task.vocab_size)

    def jobs(self, seeds: tuple[int, ...]) -> list[Job]:
        return [
            Job(self.key, kind, self.n_heads, self.n_pseudo if kind == "iha" else 1, lr, seed)
            for kind in self.models
            for lr in self.lrs
            for seed in seeds
        ]


@dataclass(frozen=True)
class HeadSweep:
    """Test metric vs number of heads H for MHA and IHA (P = H, the paper's choice).

    Attributes:
        name: "cpm3" or "polynomial".
        mha_heads, iha_heads: the head counts tried for each model.
        task_args: keyword arguments of the task (as (name, value) pairs).
        d_model: model width for CPM-3 (fixed across H, head_dim = d_model / H); None for the
            polynomial task, whose layer is sized like the paper's construction.
        metric: "pos_acc" (CPM-3, higher is better) or "nmse_max" (polynomial, lower is better).
        solved: the metric level that counts as "solved" when reading off heads needed.
    """

    name: str
    mha_heads: tuple[int, ...]
    iha_heads: tuple[int, ...]
    task_args: tuple[tuple[str, object], ...]
    lr: float
    batch_size: int
    steps_per_epoch: int
    max_epochs: int
    patience: int
    val: int
    test: int
    metric: str
    solved: float
    d_model: int | None = None

    @property
    def key(self) -> str:
        return f"heads/{self.name}"

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "nmse_max"

    def paper_heads(self) -> tuple[int, int]:
        """Heads the paper's constructions need: (MHA, IHA)."""
        args = dict(self.task_args)
        if self.name == "cpm3":
            n = int(args["n_max"])
            return n, math.isqrt(n - 1) + 1
        k = int(args["k"])
        return k, math.isqrt(k - 1) + 1

    def make_task(self, seed: int) -> SyntheticTask:
        sizes = {"train": None, "val": self.val, "test": self.test}
        cls = CPM3Task if self.name == "cpm3" else PolynomialTask
        return cls(**dict(self.task_args), seed=seed, split_sizes=sizes)

    def make_model(self, job: Job, task: SyntheticTask) -> nn.Module:
        if self.name == "cpm3":
            attn = make_attention(job.kind, self.d_model, job.n_heads, job.n_pseudo)
            return OneLayerTagger(attn, task.seq_len, task.num_classes, vocab_size=task.vocab_size)
        # The paper's setting: one linear-attention layer on X_hat = [X, I_N], sized like the
        # construction in iha.theory.polynomial (head_dim >= N for a full-rank score matrix).
        n, d, k = task.n_tokens, task.d, task.k
        attn = make_attention(
            job.kind,
            max(d + n, k * d),
            job.n_heads,
            job.n_pseudo,
            head_dim=max(n, job.n_heads * d),
            kernel="linear",
        )
        return PolynomialFilterNet(attn, d + n, k * d)

    def jobs(self, seeds: tuple[int, ...]) -> list[Job]:
        out = []
        for kind, heads in (("mha", self.mha_heads), ("iha", self.iha_heads)):
            for h in heads:
                for seed in seeds:
                    out.append(Job(self.key, kind, h, h if kind == "iha" else 1, self.lr, seed))
        return out


@dataclass(frozen=True)
class SyntheticPlan:
    """Everything one `iha reproduce synthetic` invocation runs."""

    mode: str
    seeds: tuple[int, ...]
    relations: tuple[RelationsExperiment, ...]
    sweeps: tuple[HeadSweep, ...]

    def experiments(self) -> dict[str, RelationsExperiment | HeadSweep]:
        return {e.key: e for e in (*self.relations, *self.sweeps)}

    def jobs(self) -> list[Job]:
        return [j for e in self.experiments().values() for j in e.jobs(self.seeds)]


def _cpm3_args(n_max: int) -> tuple[tuple[str, object], ...]:
    # M = 5, G = 3: gcd(G - 1, M) = 1, so the count is order sensitive (PAPER.md)
    return (("n_max", n_max), ("modulus", 5), ("g", 3))


def _poly_args(n_tokens: int, d: int, k: int) -> tuple[tuple[str, object], ...]:
    return (("n_tokens", n_tokens), ("d", d), ("k", k))


def full_plan() -> SyntheticPlan:
    """~40 minutes on 2 shared CPU cores (see docs/results/synthetic/report.md for the sizes)."""
    common = dict(lrs=(1e-3, 1e-4), batch_size=32, max_epochs=5, patience=2, val=300, test=1000)
    return SyntheticPlan(
        mode="full",
        seeds=(0, 1, 2),
        relations=(
            RelationsExperiment("binary", 2, 4, 5, 0.325, train=1500, **common),
            RelationsExperiment("ternary", 3, 3, 5, 0.264, train=1500, **common),
        ),
        sweeps=(
            HeadSweep("cpm3", (1, 2, 3, 4, 6, 9), (1, 2, 3, 4), _cpm3_args(9), lr=3e-3,
                      batch_size=64, steps_per_epoch=100, max_epochs=8, patience=2, val=500,
                      test=1000, metric="pos_acc", solved=0.95, d_model=72),
            HeadSweep("polynomial", (1, 2, 3, 4, 6, 8), (1, 2, 3, 4), _poly_args(12, 2, 9),
                      lr=1e-2, batch_size=64, steps_per_epoch=100, max_epochs=25, patience=4,
                      val=500, test=1000, metric="nmse_max", solved=0.05),
        ),
    )  # fmt: skip


def quick_plan() -> SyntheticPlan:
    """A few minutes on 2 CPU cores: small relations, one learning rate, small sweeps."""
    common = dict(lrs=(1e-3,), batch_size=32, max_epochs=4, patience=2, val=200, test=500)
    return SyntheticPlan(
        mode="quick",
        seeds=(0, 1),
        relations=(
            RelationsExperiment("binary", 2, 3, 5, 0.325, train=600, **common),
            RelationsExperiment("ternary", 3, 3, 4, 0.264, train=600, **common),
        ),
        sweeps=(
            HeadSweep("cpm3", (1, 2, 4), (1, 2), _cpm3_args(4), lr=3e-3, batch_size=64,
                      steps_per_epoch=100, max_epochs=5, patience=2, val=300, test=300,
                      metric="pos_acc", solved=0.95, d_model=32),
            HeadSweep("polynomial", (1, 2, 4), (1, 2), _poly_args(8, 2, 4), lr=1e-2,
                      batch_size=64, steps_per_epoch=100, max_epochs=8, patience=3, val=300,
                      test=300, metric="nmse_max", solved=0.05),
        ),
    )  # fmt: skip


def tiny_plan() -> SyntheticPlan:
    """Seconds: every code path (two seeds, two LRs, both sweeps), sizes far too small to learn."""
    rel = dict(lrs=(1e-3, 1e-4), batch_size=16, max_epochs=2, patience=1, val=16, test=16,
               d_model=16, n_heads=4, n_pseudo=4)  # fmt: skip
    sweep = dict(lr=3e-3, batch_size=16, steps_per_epoch=2, max_epochs=2, patience=1, val=16,
                 test=16)  # fmt: skip
    return SyntheticPlan(
        mode="tiny",
        seeds=(0, 1),
        relations=(
            RelationsExperiment("binary", 2, 2, 3, 0.325, train=32, **rel),
            RelationsExperiment("ternary", 3, 2, 3, 0.264, train=32, **rel),
        ),
        sweeps=(
            HeadSweep("cpm3", (1, 2), (1, 2), _cpm3_args(4), metric="pos_acc", solved=0.95,
                      d_model=8, **sweep),
            HeadSweep("polynomial", (1, 2), (1, 2), _poly_args(4, 1, 4), metric="nmse_max",
                      solved=0.05, **sweep),
        ),
    )  # fmt: skip


def get_plan(mode: str, seeds: int | None = None) -> SyntheticPlan:
    """The plan of ``mode`` (one of :data:`MODES`), optionally with seeds 0..seeds-1."""
    builders = {"tiny": tiny_plan, "quick": quick_plan, "full": full_plan}
    if mode not in builders:
        raise ValueError(f"mode={mode!r}: accepted values are {MODES}")
    plan = builders[mode]()
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"seeds={seeds!r} must be an integer >= 1")
        plan = replace(plan, seeds=tuple(range(seeds)))
    return plan
