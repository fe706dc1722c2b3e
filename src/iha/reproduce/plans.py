"""What `iha reproduce synthetic` runs: the experiments, their sizes, and the four modes.

* ``paper``: the paper's appendix-D settings for both relation tasks (m 6..10 / 5..8,
  40,000 / 5,000 / 5,000 examples, 1 layer, H = 8, P = 8, lr 1e-3 and 1e-4, early stopping with
  patience 10) for MHA, 2-simplicial attention and IHA; meant for a GPU (weeks on a CPU).
* ``full``: sized so that early stopping ends the runs on 2 CPU cores (the committed results in
  docs/results/synthetic/), with the IHA ablations (mixing init, mixing learning rate, P) and
  the head-count sweeps. :data:`PAPER_RELATIONS` records the paper's sizes for the report.
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
from iha.validate import check_choice, check_int

MODES = ("tiny", "quick", "full", "paper")

# The paper's appendix D settings (PAPER.md), for the report's "ours vs paper" table.
PAPER_RELATIONS = {
    "binary": {"hops": 2, "m": "6..10", "p": 0.325, "splits": "40,000 / 5,000 / 5,000"},
    "ternary": {"hops": 3, "m": "5..8", "p": 0.264, "splits": "40,000 / 5,000 / 5,000"},
}


@dataclass(frozen=True)
class Job:
    """One training run: an experiment, a model, its heads, a learning rate and a seed.

    ``variant`` names an IHA ablation (:class:`Ablation`) or is empty for the main runs.
    """

    experiment: str  # "relations/binary", "heads/cpm3", ...
    kind: str  # "mha" | "iha" | "simplicial"
    n_heads: int
    n_pseudo: int
    lr: float
    seed: int
    variant: str = ""

    @property
    def key(self) -> str:
        heads = f"H{self.n_heads}/P{self.n_pseudo}"
        kind = f"{self.kind}-{self.variant}" if self.variant else self.kind
        return f"{self.experiment}/{kind}/{heads}/lr{self.lr:g}/s{self.seed}"


@dataclass(frozen=True)
class Ablation:
    """One IHA variant of the ablations, compared paired by seed with the main IHA runs.

    Attributes:
        name: short tag used in job keys ("P2", "init_random", "mixing_lr_x10", ...).
        description: what it changes, for the report.
        n_pseudo: P.
        mixing_init: start of the mixing weights (``iha.reproduce.models.MIXING_INITS``).
        mixing_lr_scale: learning rate of the mixing weights over the model's.
    """

    name: str
    description: str
    n_pseudo: int = 8
    mixing_init: str = "near_mha"
    mixing_lr_scale: float = 1.0


def standard_ablations(n_pseudo: int) -> tuple[Ablation, ...]:
    """The IHA ablations: mixing init, mixing learning rate x10, and smaller P."""
    smaller = [p for p in (2, 4) if p < n_pseudo]
    return (
        Ablation("init_random", "random mixing init (alphas N(0, 1/H), collapse N(0, 1/(HP)))",
                 n_pseudo, mixing_init="random"),
        Ablation("init_noise_0.2", "exact-MHA init + noise 0.2 (10x the default)", n_pseudo,
                 mixing_init="near_mha_noise_0.2"),
        Ablation("mixing_lr_x10", "mixing weights at 10x the learning rate", n_pseudo,
                 mixing_lr_scale=10.0),
        *(Ablation(f"P{p}", f"P = {p} pseudo-heads", p) for p in smaller),
    )  # fmt: skip


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
    models: tuple[str, ...] = ("mha", "simplicial", "iha")
    ablations: tuple[Ablation, ...] = ()
    ablation_lr: float | None = None  # the one learning rate the ablations run at
    converge_window: int | None = None  # None: patience alone stops (see TrainSettings)

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

    def ablation(self, job: Job) -> Ablation | None:
        """The ablation a job runs (None for the main runs)."""
        if not job.variant:
            return None
        for a in self.ablations:
            if a.name == job.variant:
                return a
        raise ValueError(f"variant={job.variant!r} is not an ablation of {self.key}")

    def mixing_lr_scale(self, job: Job) -> float:
        ablation = self.ablation(job)
        return 1.0 if ablation is None else ablation.mixing_lr_scale

    def make_model(self, job: Job, task: SyntheticTask) -> nn.Module:
        ablation = self.ablation(job)
        init = "near_mha" if ablation is None else ablation.mixing_init
        attn = make_attention(job.kind, self.d_model, job.n_heads, job.n_pseudo,
                              mixing_init=init, seed=job.seed)  # fmt: skip
        return OneLayerTagger(attn, task.seq_len, 1, vocab_size=task.vocab_size)

    def jobs(self, seeds: tuple[int, ...]) -> list[Job]:
        main = [
            Job(self.key, kind, self.n_heads, self.n_pseudo if kind == "iha" else 1, lr, seed)
            for kind in self.models
            for lr in self.lrs
            for seed in seeds
        ]
        lr = self.ablation_lr if self.ablation_lr is not None else self.lrs[0]
        return main + [
            Job(self.key, "iha", self.n_heads, a.n_pseudo, lr, seed, variant=a.name)
            for a in self.ablations
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
    simplicial_heads: tuple[int, ...] = ()  # CPM-3 only (softmax attention)
    converge_window: int | None = None  # None: patience alone stops (see TrainSettings)

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
        kinds = (("mha", self.mha_heads), ("iha", self.iha_heads),
                 ("simplicial", self.simplicial_heads))  # fmt: skip
        for kind, heads in kinds:
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
    kinds: tuple[str, ...] = ()  # run only these models ("mha", "iha", ...); () = all
    main_only: bool = False  # skip the ablations

    def experiments(self) -> dict[str, RelationsExperiment | HeadSweep]:
        return {e.key: e for e in (*self.relations, *self.sweeps)}

    def jobs(self) -> list[Job]:
        return [j for e in self.experiments().values() for j in e.jobs(self.seeds)
                if (not self.kinds or j.kind in self.kinds)
                and not (self.main_only and j.variant)]  # fmt: skip


def _cpm3_args(n_max: int) -> tuple[tuple[str, object], ...]:
    # M = 5, G = 3: gcd(G - 1, M) = 1, so the count is order sensitive (PAPER.md)
    return (("n_max", n_max), ("modulus", 5), ("g", 3))


def _poly_args(n_tokens: int, d: int, k: int) -> tuple[tuple[str, object], ...]:
    return (("n_tokens", n_tokens), ("d", d), ("k", k))


def full_plan() -> SyntheticPlan:
    """Roughly 1-2 hours on 2 quiet CPU cores, sized so that early stopping ends the runs.

    Relations: the paper's tasks at m <= 5 (25 tokens) with 800 training examples, so that the
    models overfit and validation loss turns within the epoch cap; learning rates 3e-3 and
    1e-2 (at 3e-3 the binary runs already need about 100 of the 120 epochs; an MHA run at 1e-3
    on 1,200 examples was still improving after 60 epochs, and the paper's 1e-4 would need about
    ten times the epochs of 1e-3); patience 6, cap 120 epochs. The
    IHA ablations run on binary composition at lr 3e-3. Jobs run in the order of
    :func:`job_priority`, so that a partial run holds complete comparisons.
    """
    common = dict(lrs=(3e-3, 1e-2), batch_size=32, max_epochs=120, patience=6, val=500,
                  test=1000, train=800)  # fmt: skip
    return SyntheticPlan(
        mode="full",
        seeds=(0, 1, 2),
        relations=(
            RelationsExperiment("binary", 2, 4, 5, 0.325, ablations=standard_ablations(8),
                                ablation_lr=3e-3, **common),
            RelationsExperiment("ternary", 3, 3, 5, 0.264, **common),
        ),
        sweeps=(
            HeadSweep("cpm3", (1, 2, 3, 4, 6, 9), (1, 2, 3, 4), _cpm3_args(9), lr=3e-3,
                      batch_size=64, steps_per_epoch=100, max_epochs=60, patience=3, val=500,
                      test=1000, metric="pos_acc", solved=0.95, d_model=72,
                      simplicial_heads=(1, 2, 3)),
            HeadSweep("polynomial", (1, 2, 3, 4, 6, 8), (1, 2, 3, 4), _poly_args(12, 2, 9),
                      lr=1e-2, batch_size=64, steps_per_epoch=100, max_epochs=80, patience=4,
                      val=500, test=1000, metric="nmse_max", solved=0.05),
        ),
    )  # fmt: skip


def paper_plan() -> SyntheticPlan:
    """The paper's appendix-D settings (PAPER.md); meant for a GPU.

    m 6..10 (binary) and 5..8 (ternary), 40,000 / 5,000 / 5,000 examples, 1 layer, H = 8,
    P = 8, learning rates 1e-3 and 1e-4, early stopping with patience 10 on validation loss.
    Not given by the paper, chosen here: d_model 64 (head_dim 8), batch 64, AdamW, an epoch cap
    of 200, 3 seeds. No ablations and no head sweeps (the paper has neither).
    """
    common = dict(lrs=(1e-3, 1e-4), batch_size=64, max_epochs=200, patience=10, train=40_000,
                  val=5_000, test=5_000)  # fmt: skip
    return SyntheticPlan(
        mode="paper",
        seeds=(0, 1, 2),
        relations=(
            RelationsExperiment("binary", 2, 6, 10, 0.325, **common),
            RelationsExperiment("ternary", 3, 5, 8, 0.264, **common),
        ),
        sweeps=(),
    )


def quick_plan() -> SyntheticPlan:
    """A few minutes on 2 CPU cores: small relations, one learning rate, small sweeps."""
    common = dict(lrs=(1e-3,), batch_size=32, max_epochs=4, patience=2, val=200, test=500,
                  models=("mha", "iha"))  # fmt: skip
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
            RelationsExperiment("binary", 2, 2, 3, 0.325, train=32, ablation_lr=1e-3,
                                ablations=standard_ablations(4)[:1], **rel),  # fmt: skip
            RelationsExperiment("ternary", 3, 2, 3, 0.264, train=32, **rel),
        ),
        sweeps=(
            HeadSweep("cpm3", (1, 2), (1, 2), _cpm3_args(4), metric="pos_acc", solved=0.95,
                      d_model=8, simplicial_heads=(1,), **sweep),
            HeadSweep("polynomial", (1, 2), (1, 2), _poly_args(4, 1, 4), metric="nmse_max",
                      solved=0.05, **sweep),
        ),
    )  # fmt: skip


def demo_plan(plan: SyntheticPlan) -> SyntheticPlan:
    """What ``iha demo`` runs of ``plan``: relation composition only, MHA and IHA, no ablations
    (the experiments themselves unchanged, so finished runs of ``plan`` are reused)."""
    return replace(plan, sweeps=(), kinds=("mha", "iha"), main_only=True)


def get_plan(mode: str, seeds: int | None = None) -> SyntheticPlan:
    """The plan of ``mode`` (one of :data:`MODES`), optionally with seeds 0..seeds-1."""
    builders = {"tiny": tiny_plan, "quick": quick_plan, "full": full_plan, "paper": paper_plan}
    check_choice("mode", mode, MODES)
    check_int("seeds", seeds, 1, allow_none=True)
    plan = builders[mode]()
    if seeds is not None:
        plan = replace(plan, seeds=tuple(range(seeds)))
    return plan


def job_priority(plan: SyntheticPlan, job: Job) -> tuple:
    """Run order: main relation runs at the first learning rate, the ablations, the relation
    runs at the other learning rates, then the head sweeps; seed by seed within each group, so
    that a partial run holds complete paired comparisons."""
    exps = plan.experiments()
    exp = exps[job.experiment]
    if isinstance(exp, RelationsExperiment):
        if job.variant:
            group = 1
        else:
            group = 0 if job.lr == exp.lrs[0] else 2
        order = list(exps).index(job.experiment) if group != 1 else 0
        return (group, job.seed, order, job.kind, job.variant, job.lr)
    return (3, job.seed, list(exps).index(job.experiment), job.kind, job.n_heads)
