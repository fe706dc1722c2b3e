"""The shared split machinery: determinism under a seed, disjoint splits, epochs and streams."""

from __future__ import annotations

import pytest
import torch

from iha.tasks import (
    SPLITS,
    TASKS,
    CPM3Task,
    SyntheticTask,
    TaskBatch,
    derive_seed,
    make_task,
)

SMALL = {"train": 40, "val": 12, "test": 12}

SMALL_TASKS: dict[str, dict] = {
    "cpm3": {"n_max": 4, "modulus": 5, "g": 2},
    "polynomial": {"n_tokens": 4, "d": 2, "k": 3},
    "relations": {"hops": 2, "m_min": 2, "m_max": 4, "p": 0.4},
    "mqar": {"num_pairs": 3, "num_keys": 6, "num_values": 4},
    "khop": {"vocab_size": 4, "seq_len": 8, "hops": 2},
    "niah": {"seq_len": 16, "num_needles": 2, "num_queries": 1},
}


def build(name: str, seed: int = 0, sizes: dict | None = None) -> SyntheticTask:
    return make_task(
        name, seed=seed, split_sizes=dict(SMALL if sizes is None else sizes), **SMALL_TASKS[name]
    )


def rows(batch: TaskBatch) -> set[bytes]:
    flat = batch.inputs.reshape(len(batch), -1).contiguous()
    return {r.numpy().tobytes() for r in flat}


def same(a: TaskBatch, b: TaskBatch) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in ((a.inputs, b.inputs), (a.targets, b.targets), (a.loss_mask, b.loss_mask))
    )


def test_every_registered_task_is_covered() -> None:
    assert set(SMALL_TASKS) == set(TASKS)


@pytest.mark.parametrize("name", sorted(SMALL_TASKS))
def test_interface_shapes_and_dtypes(name: str) -> None:
    task = build(name)
    batch = task.split("val")
    n = task.seq_len
    assert len(batch) == SMALL["val"] and batch.loss_mask.shape == (12, n)
    assert batch.loss_mask.dtype == torch.bool and bool(batch.loss_mask.any())
    if task.input_kind == "tokens":
        assert batch.inputs.dtype == torch.long and batch.inputs.shape == (12, n)
        assert 0 <= int(batch.inputs.min()) and int(batch.inputs.max()) < task.vocab_size
    else:
        assert batch.inputs.shape == (12, n, task.input_dim)
    if task.output == "classification":
        assert batch.targets.dtype == torch.long
        assert int(batch.targets.max()) < task.num_classes
    elif task.output == "binary":
        assert batch.targets.is_floating_point() and task.num_classes == 1
        assert set(batch.targets.unique().tolist()) <= {0.0, 1.0}
    else:
        assert batch.targets.shape == (12, n, task.num_classes)


@pytest.mark.parametrize("name", sorted(SMALL_TASKS))
def test_same_seed_same_examples_other_seed_other_examples(name: str) -> None:
    a, b, c = build(name, 0), build(name, 0), build(name, 1)
    for split in SPLITS:
        assert same(a.split(split), b.split(split))
        assert not torch.equal(a.split(split).inputs, c.split(split).inputs)
    assert same(next(a.batches("train", 5, seed=3)), next(b.batches("train", 5, seed=3)))


@pytest.mark.parametrize("name", sorted(SMALL_TASKS))
def test_splits_are_disjoint(name: str) -> None:
    task = build(name)
    train, val, test = (rows(task.split(s)) for s in SPLITS)
    assert not (train & val) and not (train & test) and not (val & test)


def test_splits_are_disjoint_even_when_the_input_space_is_tiny() -> None:
    # 3^3 = 27 possible inputs: independent draws would collide; hash partitioning cannot.
    task = CPM3Task(
        n_max=3, modulus=3, g=2, seed=0, split_sizes={"train": 200, "val": 50, "test": 50}
    )
    train, val, test = (rows(task.split(s)) for s in SPLITS)
    assert len(train | val | test) == 27
    assert not (train & val) and not (train & test) and not (val & test)
    streamed = rows(
        next(
            CPM3Task(n_max=3, modulus=3, g=2, seed=0, split_sizes={"train": None}).batches(
                "train", 300
            )
        )
    )
    assert streamed <= train


def test_a_smaller_split_is_a_prefix_of_a_larger_one() -> None:
    small = build("mqar", sizes={"train": 10, "val": 5, "test": 5})
    large = build("mqar", sizes={"train": 3000, "val": 5, "test": 5})
    assert same(small.split("train"), large.split("train")[:10])


def test_fixed_split_batches_are_one_shuffled_epoch() -> None:
    task = build("khop")
    data = task.split("train")
    batches = list(task.batches("train", 16, seed=7))
    assert [len(b) for b in batches] == [16, 16, 8]
    epoch = TaskBatch.cat(batches)
    assert sorted(rows(epoch)) == sorted(rows(data)) and len(epoch) == len(data)
    assert not torch.equal(epoch.inputs, data.inputs)  # shuffled
    assert same(epoch, TaskBatch.cat(list(task.batches("train", 16, seed=7))))
    assert not torch.equal(epoch.inputs, TaskBatch.cat(list(task.batches("train", 16, 8))).inputs)
    assert same(TaskBatch.cat(list(task.batches("train", 16, seed=None))), data)


def test_streaming_split_is_endless_and_seeded() -> None:
    task = build("relations", sizes={"train": None, "val": 4, "test": 4})
    stream = task.batches("train", 700, seed=0)  # several generator chunks
    first = [next(stream) for _ in range(3)]
    assert all(len(b) == 700 for b in first)
    again = task.batches("train", 700, seed=0)
    assert all(same(b, next(again)) for b in first)
    other = next(task.batches("train", 700, seed=1))
    assert not torch.equal(first[0].inputs, other.inputs)
    with pytest.raises(ValueError, match="stream"):
        task.split("train")


def test_derive_seed_is_stable_and_part_sensitive() -> None:
    assert derive_seed(0, "train", 1) == derive_seed(0, "train", 1)
    assert len({derive_seed(0, s, 1) for s in SPLITS}) == 3
    assert 0 <= derive_seed("x") < 2**63


def test_split_arguments_are_validated() -> None:
    task = build("cpm3")
    with pytest.raises(ValueError, match="split="):
        task.split("dev")
    with pytest.raises(ValueError, match="batch_size"):
        next(task.batches("val", 0))
    with pytest.raises(ValueError, match="split_sizes"):
        build("cpm3", sizes={"training": 3})
    with pytest.raises(ValueError, match="name="):
        make_task("copy")
