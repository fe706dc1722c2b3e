"""Early stopping: the counter, and the training loop's stop and best-epoch restore."""

import math

import pytest
import torch

from iha.reproduce import train as train_mod
from iha.reproduce.early_stopping import EarlyStopping
from iha.reproduce.models import OneLayerTagger, make_attention
from iha.reproduce.train import TrainSettings, train_run
from iha.tasks import RelationCompositionTask


def test_stops_after_patience_evaluations_without_a_new_best():
    stopper = EarlyStopping(patience=2)
    improved = [stopper.update(v) for v in (1.0, 0.8, 0.9)]
    assert improved == [True, True, False] and not stopper.should_stop
    assert not stopper.update(0.85)
    assert stopper.should_stop
    assert (stopper.best, stopper.best_index, stopper.n_updates) == (0.8, 1, 4)


def test_a_new_best_resets_the_patience_counter():
    stopper = EarlyStopping(patience=2)
    for v in (1.0, 1.1, 0.9, 1.2):
        stopper.update(v)
    assert not stopper.should_stop and stopper.best_index == 2


def test_max_mode_and_min_delta():
    stopper = EarlyStopping(patience=1, mode="max", min_delta=0.05)
    assert stopper.update(0.50)
    assert not stopper.update(0.54)  # better, but by less than min_delta
    assert stopper.should_stop and stopper.best == 0.50


def test_non_finite_values_never_count_as_improvement():
    stopper = EarlyStopping(patience=3)
    assert not stopper.update(math.nan)
    assert stopper.best is None
    assert stopper.update(5.0)
    assert not stopper.update(-math.inf)
    assert stopper.best == 5.0


@pytest.mark.parametrize("kwargs", [{"patience": 0}, {"patience": 1, "mode": "up"},
                                    {"patience": 1, "min_delta": -1.0}])  # fmt: skip
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs.keys() - {"patience"}), "patience")):
        EarlyStopping(**kwargs)


def _tiny():
    task = RelationCompositionTask(2, 2, 3, 0.4, seed=0,
                                   split_sizes={"train": 16, "val": 8, "test": 8})  # fmt: skip
    torch.manual_seed(0)
    model = OneLayerTagger(make_attention("iha", 8, 2, 2), task.seq_len, 1, vocab_size=3)
    return task, model


def test_train_run_stops_at_patience_and_tests_the_best_epoch(monkeypatch):
    """Scripted validation losses: best at epoch 2, then two worse epochs -> stop after 4."""
    task, model = _tiny()
    losses = iter([0.5, 0.3, 0.4, 0.45, 0.0])  # 4 validation calls, then the test call
    snapshots = []

    def fake_evaluate(m, data, output, batch_size=256):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"loss": next(losses), "pos_acc": 0.0, "example_acc": 0.0}

    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)
    settings = TrainSettings(lr=1e-2, batch_size=8, max_epochs=10, patience=2)
    result = train_run(model, task, settings, seed=0)
    assert result["epochs"] == 4 and result["best_epoch"] == 2
    assert result["val"]["loss"] == 0.3
    tested, best, last = snapshots[-1], snapshots[1], snapshots[3]
    assert all(torch.equal(tested[k], best[k]) for k in best)  # restored to epoch 2's weights
    assert any(not torch.equal(best[k], last[k]) for k in best)  # training did move them


def test_train_run_without_improvement_stops_after_one_plus_patience_epochs():
    task, model = _tiny()
    settings = TrainSettings(lr=0.0, batch_size=8, max_epochs=10, patience=3, warmup_steps=1)
    result = train_run(model, task, settings, seed=0)  # lr 0: the val loss never improves
    assert result["epochs"] == 4 and result["best_epoch"] == 1
    assert result["train_examples"] == 4 * len(task.split("train"))
