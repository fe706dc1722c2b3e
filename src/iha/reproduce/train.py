"""One training run of a synthetic experiment: AdamW, epochs, early stopping, test metrics.

The loop knows the task only through :class:`iha.tasks.TaskBatch` and the task's ``output``
kind; it knows the model only as ``inputs -> (B, N, out)``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from iha.optim import param_groups
from iha.reproduce.early_stopping import EarlyStopping
from iha.tasks import SyntheticTask, TaskBatch


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation and stopping settings of one run.

    Attributes:
        lr: AdamW learning rate (constant after a linear warmup of ``warmup_steps``).
        batch_size: training examples per step.
        max_epochs: upper bound on epochs.
        patience: epochs without a better validation loss before stopping.
        steps_per_epoch: steps per epoch; None = one pass over a fixed-size train split
            (required for a streaming train split).
        weight_decay: AdamW weight decay on weight matrices (not on mixing weights or norms).
        grad_clip: max global gradient norm.
        warmup_steps: linear warmup length.
        eval_batch: batch size of evaluation.
    """

    lr: float
    batch_size: int
    max_epochs: int
    patience: int
    steps_per_epoch: int | None = None
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 20
    eval_batch: int = 256


def loss_fn(output: str, logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Mean loss over ``batch.loss_mask`` positions: BCE (binary), CE (classification), MSE.

    Args:
        output: the task's ``output`` kind.
        logits: (B, N, out) model outputs.
        batch: targets (B, N) or (B, N, T) and loss_mask (B, N).
    """
    mask = batch.loss_mask
    if output == "binary":
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1)[mask], batch.targets[mask])
    if output == "classification":
        return F.cross_entropy(logits[mask], batch.targets[mask])
    if output == "regression":
        return F.mse_loss(logits[mask], batch.targets[mask])
    raise ValueError(f"output={output!r}: accepted values are binary, classification, regression")


@torch.no_grad()
def evaluate(model: nn.Module, data: TaskBatch, output: str, batch_size: int = 256) -> dict:
    """Metrics of ``model`` on a whole split.

    Returns a dict with ``loss`` and, for binary/classification, ``pos_acc`` (fraction of valid
    positions right) and ``example_acc`` (fraction of examples with every valid position right);
    for regression, ``nmse``: squared error over the valid positions divided by the targets'
    total variance around their per-channel mean (1 - R^2; 0 is perfect, 1 is "predict the mean"),
    and ``nmse_max``: the same ratio for the worst single output channel.
    """
    was_training = model.training
    model.eval()
    loss_sum, n_pos, correct, whole = 0.0, 0, 0, 0
    sq_err, y_sum, y_sq = 0.0, 0.0, 0.0  # per output channel for regression
    for start in range(0, len(data), batch_size):
        b = data[start : start + batch_size]
        logits = model(b.inputs)
        mask = b.loss_mask
        k = int(mask.sum())
        loss_sum += float(loss_fn(output, logits, b)) * k
        n_pos += k
        if output == "regression":
            pred, y = logits[mask].double(), b.targets[mask].double()  # (k, T)
            sq_err = sq_err + ((pred - y) ** 2).sum(0)  # (T,)
            y_sum = y_sum + y.sum(0)
            y_sq = y_sq + (y**2).sum(0)
            continue
        if output == "binary":
            ok = (logits.squeeze(-1) > 0) == b.targets.bool()
        else:
            ok = logits.argmax(-1) == b.targets
        ok = ok | ~mask  # (B, N)
        correct += int(ok[mask].sum())
        whole += int(ok.all(dim=1).sum())
    model.train(was_training)
    out = {"loss": loss_sum / max(n_pos, 1)}
    if output == "regression":
        channel_var = y_sq - y_sum**2 / n_pos  # (T,) n_pos times each channel's variance
        out["nmse"] = float(sq_err.sum() / channel_var.sum())
        out["nmse_max"] = float((sq_err / channel_var).max())
    else:
        out["pos_acc"] = correct / max(n_pos, 1)
        out["example_acc"] = whole / max(len(data), 1)
    return out


def _epoch_batches(
    task: SyntheticTask, settings: TrainSettings, seed: int, epoch: int, stream: Iterator | None
) -> Iterator[TaskBatch]:
    if stream is not None:
        for _ in range(settings.steps_per_epoch or 0):
            yield next(stream)
        return
    for i, b in enumerate(task.batches("train", settings.batch_size, seed=seed * 100_003 + epoch)):
        if settings.steps_per_epoch is not None and i >= settings.steps_per_epoch:
            return
        yield b


def train_run(
    model: nn.Module,
    task: SyntheticTask,
    settings: TrainSettings,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``model`` on ``task`` with early stopping on validation loss; test the best epoch.

    Args:
        model: maps ``TaskBatch.inputs`` to (B, N, out).
        task: a task with fixed-size ``val`` and ``test`` splits; ``train`` fixed or streaming
            (streaming needs ``settings.steps_per_epoch``).
        settings: see :class:`TrainSettings`.
        seed: seeds the data order (the caller seeds the model's initialisation).
        log: called with one line per epoch (e.g. ``print``), or None.

    Returns:
        JSON-ready dict: ``epochs`` run, ``best_epoch`` (1-based), ``history`` (per epoch: train
        loss, val metrics), ``val`` and ``test`` metrics of the best epoch's weights,
        ``train_examples`` seen, ``seconds`` of wall time.
    """
    streaming = task.split_sizes["train"] is None
    if streaming and settings.steps_per_epoch is None:
        raise ValueError("settings.steps_per_epoch is required when the train split is streaming")
    output = task.output
    val, test = task.split("val"), task.split("test")
    opt = torch.optim.AdamW(
        param_groups(model, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.98)
    )
    warmup = max(1, settings.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    stopper = EarlyStopping(settings.patience, mode="min")
    stream = task.batches("train", settings.batch_size, seed=seed) if streaming else None
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict] = []
    seen = 0
    start = time.perf_counter()
    model.train()
    for epoch in range(1, settings.max_epochs + 1):
        loss_sum, steps = 0.0, 0
        for b in _epoch_batches(task, settings, seed, epoch, stream):
            loss = loss_fn(output, model(b.inputs), b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            steps += 1
            seen += len(b)
        metrics = evaluate(model, val, output, settings.eval_batch)
        history.append({"epoch": epoch, "train_loss": loss_sum / max(steps, 1), **metrics})
        if stopper.update(metrics["loss"]):
            best_state = copy.deepcopy(model.state_dict())
        if log is not None:
            extra = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            star = "  *" if stopper.best_index == epoch - 1 else ""
            log(
                f"epoch {epoch:3d}  train_loss {loss_sum / max(steps, 1):.4f}  val {extra}  "
                f"{time.perf_counter() - start:6.1f}s{star}"
            )
        if stopper.should_stop:
            break
    model.load_state_dict(best_state)
    best = stopper.best_index
    return {
        "epochs": len(history),
        "best_epoch": None if best is None else best + 1,
        "history": history,
        "val": None
        if best is None
        else {k: v for k, v in history[best].items() if k not in ("epoch", "train_loss")},
        "test": evaluate(model, test, output, settings.eval_batch),
        "train_examples": seen,
        "seconds": time.perf_counter() - start,
        "settings": asdict(settings),
    }
