"""One training run of a synthetic experiment: AdamW, epochs, early stopping, test metrics.

The loop knows the task only through :class:`iha.tasks.TaskBatch` and the task's ``output``
kind; it knows the model only as ``inputs -> (B, N, out)``.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from iha.optim import param_groups
from iha.reproduce.early_stopping import EarlyStopping
from iha.tasks import SyntheticTask, TaskBatch
from iha.validate import check_choice


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
        mixing_lr_scale: learning rate of the IHA mixing weights (alphas, collapse) over ``lr``.
        converge_window: None (stop on patience alone) or K: stop only when, in addition, the
            convergence rule sees no significant downward slope of the validation loss over the
            last K epochs (:class:`iha.reproduce.early_stopping.EarlyStopping`).
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
    mixing_lr_scale: float = 1.0
    converge_window: int | None = None


def loss_fn(output: str, logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Mean loss over ``batch.loss_mask`` positions: BCE (binary), CE (classification), MSE.

    Args:
        output: the task's ``output`` kind.
        logits: (B, N, out) model outputs.
        batch: targets (B, N) or (B, N, T) and loss_mask (B, N).
    """
    check_choice("output", output, ("binary", "classification", "regression"))
    mask = batch.loss_mask
    if output == "binary":
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1)[mask], batch.targets[mask])
    if output == "classification":
        return F.cross_entropy(logits[mask], batch.targets[mask])
    return F.mse_loss(logits[mask], batch.targets[mask])  # regression


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
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for start in range(0, len(data), batch_size):
        b = data[start : start + batch_size].to(device)
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


def save_atomic(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_run(
    model: nn.Module,
    task: SyntheticTask,
    settings: TrainSettings,
    seed: int,
    log: Callable[[str], None] | None = None,
    checkpoint: Path | None = None,
) -> dict:
    """Train ``model`` on ``task`` with early stopping on validation loss; test the best epoch.

    Args:
        model: maps ``TaskBatch.inputs`` to (B, N, out); trained on the device it is on.
        task: a task with fixed-size ``val`` and ``test`` splits; ``train`` fixed or streaming
            (streaming needs ``settings.steps_per_epoch``).
        settings: see :class:`TrainSettings`.
        seed: seeds the data order (the caller seeds the model's initialisation).
        log: called with one line per epoch (e.g. ``print``), or None.
        checkpoint: a file the state is saved to (atomically) after every epoch, and resumed
            from when it exists; None: no checkpoint. The data order of an epoch depends only on
            the seed and the epoch, so a resumed run sees what an uninterrupted one would.
            Streaming train splits are not resumable (``checkpoint`` must be None).

    Returns:
        JSON-ready dict: ``epochs`` run, ``best_epoch`` (1-based), ``history`` (per epoch: train
        loss, val metrics), ``val`` and ``test`` metrics of the best epoch's weights,
        ``train_examples`` seen, ``seconds`` of wall time and ``cpu_seconds`` of this process's
        CPU time (what the run costs on a quiet machine with one thread, when others load it).
    """
    streaming = task.split_sizes["train"] is None
    if streaming and settings.steps_per_epoch is None:
        raise ValueError("settings.steps_per_epoch is required when the train split is streaming")
    if streaming and checkpoint is not None:
        raise ValueError("checkpoint must be None when the train split is streaming")
    output = task.output
    device = next(model.parameters()).device
    val, test = task.split("val"), task.split("test")
    mixing_lr = None if settings.mixing_lr_scale == 1.0 else settings.lr * settings.mixing_lr_scale
    opt = torch.optim.AdamW(
        param_groups(model, settings.weight_decay, mixing_lr=mixing_lr),
        lr=settings.lr,
        betas=(0.9, 0.98),
    )
    warmup = max(1, settings.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    stopper = EarlyStopping(settings.patience, mode="min", window=settings.converge_window)
    stream = task.batches("train", settings.batch_size, seed=seed) if streaming else None
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict] = []
    seen, done_before, cpu_before, first_epoch = 0, 0.0, 0.0, 1
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        stopper.__dict__.update(state["stopper"])
        best_state, history, seen = state["best_model"], state["history"], state["seen"]
        done_before, first_epoch = state["seconds"], len(history) + 1
        cpu_before = state.get("cpu_seconds", 0.0)
        if log is not None:
            log(f"resumed after epoch {len(history)} from {checkpoint}")
    start = time.perf_counter() - done_before
    cpu_start = time.process_time() - cpu_before
    model.train()
    for epoch in range(first_epoch, settings.max_epochs + 1):
        if stopper.should_stop:
            break
        loss_sum, steps = 0.0, 0
        for b in _epoch_batches(task, settings, seed, epoch, stream):
            b = b.to(device)
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
                f"epoch {epoch:3d}/{settings.max_epochs}  train_loss "
                f"{loss_sum / max(steps, 1):.4f}  val {extra}  "
                f"{time.perf_counter() - start:6.1f}s{star}"
            )
        if checkpoint is not None:
            save_atomic({
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "stopper": dict(stopper.__dict__),
                "best_model": best_state,
                "history": history,
                "seen": seen,
                "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu_start,
            }, checkpoint)  # fmt: skip
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
        "cpu_seconds": time.process_time() - cpu_start,
        "settings": asdict(settings),
    }
