"""Seeded synthetic tasks with one interface (see :mod:`iha.tasks.base`).

Every task object exposes ``vocab_size`` (or ``input_dim``), ``seq_len``, ``output``,
``num_classes``, ``split(name)`` and ``batches(split, batch_size, seed)``, and yields
:class:`TaskBatch` (``inputs``, ``targets``, ``loss_mask``). :func:`make_task` builds one by name.
"""

from __future__ import annotations

from iha.tasks.base import SPLITS, SyntheticTask, TaskBatch, derive_seed, split_of
from iha.tasks.cpm3 import CPM3Task, cpm3_targets
from iha.tasks.induction import KHopInductionTask, khop_targets
from iha.tasks.mqar import MQARTask
from iha.tasks.niah import MultiKeyNIAHTask
from iha.tasks.polynomial import PolynomialTask, filter_bank, random_full_rank
from iha.tasks.relations import (
    RelationCompositionTask,
    binary_relations,
    compose,
    ternary_relations,
)
from iha.validate import check_choice

TASKS: dict[str, type[SyntheticTask]] = {
    "cpm3": CPM3Task,
    "polynomial": PolynomialTask,
    "relations": RelationCompositionTask,
    "mqar": MQARTask,
    "khop": KHopInductionTask,
    "niah": MultiKeyNIAHTask,
}


def make_task(name: str, **kwargs: object) -> SyntheticTask:
    """Build the task called ``name`` (a key of :data:`TASKS`) with its keyword arguments."""
    check_choice("name", name, sorted(TASKS))
    return TASKS[name](**kwargs)


__all__ = [
    "SPLITS",
    "TASKS",
    "CPM3Task",
    "KHopInductionTask",
    "MQARTask",
    "MultiKeyNIAHTask",
    "PolynomialTask",
    "RelationCompositionTask",
    "SyntheticTask",
    "TaskBatch",
    "binary_relations",
    "compose",
    "cpm3_targets",
    "derive_seed",
    "filter_bank",
    "khop_targets",
    "make_task",
    "random_full_rank",
    "split_of",
    "ternary_relations",
]
