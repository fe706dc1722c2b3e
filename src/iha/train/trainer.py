"""The training loop: wires config, data, model, optimiser, checkpoints and logs together.

It knows nothing about attention: the model is any module called as
``model(input_ids) -> logits (B, N, V)``; the loss is the token-mean cross entropy over the
positions of ``loss_mask`` in the whole global batch (all micro-batches, all processes), so
gradient accumulation and N processes give the gradient of the same objective as one big batch.

Usage::

    from iha.train import load_config, train
    result = train(load_config("configs/cpu-demo.toml", ["train.max_steps=20"]))

Two phases: :meth:`Trainer.prepare` checks everything that can be wrong with the config and the
data, then takes the run directory's lock (creating the directory; nothing else is written);
:meth:`Trainer.run` writes the run files and trains.

Checkpoints hold named :class:`~iha.train.checkpoint.Stateful` parts (model, optimizer,
scheduler, data position, counters, RNG states) saved and restored by a
:class:`~iha.train.checkpoint.CheckpointManager`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iha.models.compile import compile_model
from iha.train import checkpoint as ckpt
from iha.train import distributed as D
from iha.train.config import ConfigError, RunConfig, batch_geometry, dump_toml
from iha.train.data import Batch, TrainData, build_data, import_object, shard_rows
from iha.train.lock import RunDirLocked, RunLock
from iha.train.metrics import MetricsWriter, Progress
from iha.train.optim import build_optimizer

EXIT_OK = 0
RUN_MODEL_TYPE = "iha_run"  # config.json's model_type, registered by iha.hf.loading
EXIT_NONFINITE = 3
EXIT_NOSAVE = 4  # a checkpoint could not be written (a full disk)

ModelFactory = Callable[[dict[str, Any]], nn.Module]


def build_model(model_cfg: dict[str, Any]) -> nn.Module:
    """``iha.models.DecoderLM`` from a resolved ``[model]`` table, or the model of its
    ``factory = "package.module:function"`` called with the table's other keys."""
    from iha.models import DecoderLM, ModelConfig

    if "factory" in model_cfg:
        rest = {k: v for k, v in model_cfg.items() if k != "factory"}
        return import_object(model_cfg["factory"])(rest)
    return DecoderLM(ModelConfig.from_dict(model_cfg))


def forward_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """The model's own forward FLOP count per token, else the 2 * parameters estimate."""
    counter = getattr(model, "flops_per_token", None)
    if callable(counter):
        return float(counter(seq_len))
    return 2.0 * sum(p.numel() for p in model.parameters())


def masked_loss_sum(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Sum of token cross entropies over ``mask``.

    Args:
        logits: (B, N, V).
        targets: (B, N) int64.
        mask: (B, N) bool.

    Returns:
        0-dim float32 tensor.
    """
    targets = targets.masked_fill(~mask, -100)  # (B, N); ignored positions
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
    )


@dataclass
class TrainResult:
    """What a run did: ``reason`` is "done", "stopped" (``stop_at``), "signal", "nonfinite" or
    "nosave" (a checkpoint could not be written: a full disk)."""

    run_dir: Path
    step: int
    reason: str
    exit_code: int
    losses: dict[int, float] = field(default_factory=dict)  # step -> train loss (this process)
    val_losses: dict[int, float] = field(default_factory=dict)
    checkpoint: Path | None = None


# ---------------------------------------------------------------------------------------------
# the Stateful parts of a checkpoint


class _ModelState:
    """The full (unsharded) model state; collective under FSDP."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return D.full_model_state(self.model)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        D.load_full_model_state(self.model, state)


# hyperparameters that come from the config, not from the checkpoint, when a run resumes
_CONFIGURED = ("lr", "initial_lr", "betas", "eps", "weight_decay")


class _OptimizerState:
    """Optimizer moments keyed by parameter name; on load the configured hyperparameters
    (learning rates, betas, eps, weight decay) replace the saved ones."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        return D.full_optimizer_state(self.model, self.optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        configured = [{k: g[k] for k in _CONFIGURED if k in g} for g in self.optimizer.param_groups]
        D.load_full_optimizer_state(self.model, self.optimizer, state)
        for group, values in zip(self.optimizer.param_groups, configured):
            group.update(values)


class _ScheduleState:
    """The scheduler's position only: its shape (peak, warmup, total steps) is re-derived from
    the config, so a resumed run follows the schedule its config describes."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
        self.scheduler = scheduler

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.scheduler.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sched = self.scheduler
        sched.last_epoch = int(state["last_epoch"])
        lrs = [base * f(sched.last_epoch) for base, f in zip(sched.base_lrs, sched.lr_lambdas)]
        for group, lr in zip(sched.optimizer.param_groups, lrs):
            group["lr"] = lr
        sched._last_lr = lrs


class _RNGState:
    """Python and torch (and CUDA) generator states of every process; collective."""

    def __init__(self, info: D.DistInfo) -> None:
        self.info = info

    def state_dict(self) -> dict[str, Any]:
        rng = {
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.info.device)
            if self.info.device.type == "cuda"
            else None,
        }
        return {"per_rank": D.gather_objects(rng, self.info)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rngs = state["per_rank"]
        rng = rngs[self.info.rank] if len(rngs) == self.info.world_size else rngs[0]
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available() and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.info.device)


class _Counters:
    """Steps, tokens and FLOPs done so far (the trainer's own position)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        t = self.trainer
        return {"step": t.step, "tokens": t.tokens, "flops": t.flops}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        t = self.trainer
        t.step, t.tokens, t.flops = int(state["step"]), int(state["tokens"]), state["flops"]


# config keys a resumed run may not change: they define the model, the data stream and its
# position, or the batches drawn from it; every other key applies from the resumed step on
FROZEN_ON_RESUME = ("model.", "data.", "train.batch_size", "train.seed")


def resume_changes(saved: dict[str, Any], now: dict[str, Any], step: int) -> list[str]:
    """``"key: old -> new"`` for each config key that differs from the checkpoint's.

    Raises:
        ConfigError: when a key of :data:`FROZEN_ON_RESUME` differs (naming every such key), or
            ``train.max_steps`` is below the checkpoint's step.
    """
    changed = sorted(_diff(saved, now))
    frozen = [k for k in changed if k.startswith(FROZEN_ON_RESUME) or k in FROZEN_ON_RESUME]
    if frozen:
        raise ConfigError(
            "cannot resume: the config differs from the checkpoint's in "
            + ", ".join(f"'{k}' ({_lookup(saved, k)!r} -> {_lookup(now, k)!r})" for k in frozen)
            + "; these keys define the model, the data or the batches and must stay the same "
            "(start a new run_dir, or use train.init_from to start from these weights)"
        )
    max_steps = now.get("train", {}).get("max_steps")
    if isinstance(max_steps, int) and max_steps < step:
        raise ConfigError(
            f"config key 'train.max_steps'={max_steps} is below the checkpoint's step {step}"
        )
    return [f"{k}: {_lookup(saved, k)!r} -> {_lookup(now, k)!r}" for k in changed]


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


class _StopSignals:
    """SIGINT/SIGTERM set a flag (the step finishes, a checkpoint is saved); a second one aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second signal: give up at once
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


class Trainer:
    """One training run. ``model_factory`` builds the model from ``cfg.model`` (default:
    :func:`build_model`); tests pass a small stand-in."""

    def __init__(
        self,
        cfg: RunConfig,
        resume: bool = False,
        model_factory: ModelFactory | None = None,
        stop_at: int | None = None,
    ) -> None:
        self.cfg, self.resume, self.stop_at = cfg, resume, stop_at
        self.model_factory = model_factory or build_model
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.lock = RunLock(self.run_dir)
        self.notes: list[str] = []  # said once the run starts (data warnings, skipped files)
        self.prepared = False

    # ---------------------------------------------------------------------------------------
    # phase 1: build everything, write nothing

    def prepare(self) -> None:
        """Check the config, set up processes, data, model and optimiser, lock the run
        directory and, with ``resume``, load its newest intact checkpoint.

        Raises:
            ConfigError: a bad config, or a resume that would change a frozen key.
            RunDirLocked: another process trains in this run directory.
            CheckpointError: checkpoints exist but none is intact.
        """
        cfg, t = self.cfg, self.cfg.train
        if self.stop_at is not None and self.stop_at < 1:
            raise ConfigError(f"stop_at={self.stop_at} must be >= 1")
        self.info = D.setup(t.device, cfg.distributed.backend, cfg.distributed.timeout_s)
        self.micro_batch, self.accum = batch_geometry(cfg, self.info.world_size)
        if not self.resume and ckpt.list_checkpoints(self.ckpt_root):
            raise ConfigError(
                f"run_dir {str(self.run_dir)!r} already holds checkpoints; pass --resume to "
                "continue it or choose another run_dir"
            )
        if cfg.logging.tensorboard == "on":
            try:
                importlib.import_module("torch.utils.tensorboard")
            except ImportError as e:
                raise ConfigError(
                    "config key 'logging.tensorboard' = 'on' needs the tensorboard package "
                    "(pip install tensorboard), or set it to 'auto'"
                ) from e
        random.seed(t.seed)
        torch.manual_seed(t.seed)
        tokenizer = None
        if cfg.data.source != "synthetic":
            from iha.tokenizers import load_tokenizer

            tokenizer = load_tokenizer(cfg.data.tokenizer)
        self.tokenizer = tokenizer
        self.data: TrainData = build_data(cfg.data, tokenizer, t.batch_size, t.seed, t.val_batches)
        self.notes.extend(self.data.notes)
        model_vocab = cfg.model.get("vocab_size")
        if isinstance(model_vocab, int) and model_vocab < self.data.vocab_size:
            raise ConfigError(
                f"config key 'model.vocab_size'={model_vocab} is smaller than the data's "
                f"vocabulary ({self.data.vocab_size} ids)"
            )
        context = cfg.model.get("max_position_embeddings")
        if isinstance(context, int) and context < self.data.seq_len:
            raise ConfigError(
                f"config key 'model.max_position_embeddings'={context} is shorter than the "
                f"training sequences ({self.data.seq_len} tokens)"
            )
        with torch.device(self.info.device):  # parameters created where they train
            model = self.model_factory(cfg.model)
        if t.activation_checkpointing:
            enable = getattr(model, "gradient_checkpointing_enable", None)
            if not callable(enable):
                raise ConfigError(
                    "config key 'train.activation_checkpointing' = true needs a model with a "
                    f"gradient_checkpointing_enable() method; {type(model).__name__} has none"
                )
            enable()
        self.n_params = sum(p.numel() for p in model.parameters())
        self.flops_per_token = 3.0 * forward_flops_per_token(model, self.data.seq_len)
        if t.init_from:
            state = ckpt.load_model_weights(ckpt.resolve_checkpoint(t.init_from) / ckpt.MODEL_FILE)
            model.load_state_dict(state)
        self.model = model
        self.train_model = D.wrap_model(model, cfg.distributed.strategy, self.info)
        self.optimizer, self.scheduler = build_optimizer(model, cfg.optim, t.max_steps)
        self.forward = compile_model(self.train_model, t.compile) if t.compile else self.train_model
        dev = self.info.device
        if t.precision == "auto":
            self.bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        else:
            self.bf16 = t.precision == "bf16"
        self.step, self.tokens, self.flops = 0, 0, 0.0
        self.resumed_from: Path | None = None
        self.config_changes: list[str] = []
        self.checkpoints = ckpt.CheckpointManager(
            self.ckpt_root,
            {
                "model": _ModelState(model),
                "optimizer": _OptimizerState(model, self.optimizer),
                "scheduler": _ScheduleState(self.scheduler),
                "data": self.data.train,
                "train": _Counters(self),
                "rng": _RNGState(self.info),
            },
            keep=cfg.checkpoint.keep,
            json_parts=("data", "train"),
            writer=self.info.is_main,
        )
        self._lock()
        try:
            if self.resume:
                self._resume()
        except BaseException:
            self.lock.release()
            raise
        self.prepared = True

    def _resume(self) -> None:
        """Load the newest intact checkpoint, if any, after checking the config changes."""
        found, skipped = ckpt.find_intact_checkpoint(self.ckpt_root)
        self.notes.extend(f"skipped a damaged checkpoint: {reason}" for reason in skipped)
        if found is None:
            return
        if skipped:
            self.notes.append(f"falling back to the newest intact checkpoint, {found}")
        meta = ckpt.read_meta(found)
        now = json.loads(json.dumps(self.cfg.to_dict()))
        self.config_changes = resume_changes(meta.get("config", {}), now, int(meta["step"]))
        self.checkpoints.load(found)
        self.resumed_from = found

    def _lock(self) -> None:
        """Rank 0 locks the run directory; every rank fails when it could not."""
        error: RunDirLocked | None = None
        if self.info.is_main:
            try:
                self.lock.acquire()
            except RunDirLocked as e:
                error = e
        failed = torch.tensor(float(error is not None), device=self.info.device)
        if int(D.all_reduce_max(failed, self.info)):
            raise error or RunDirLocked(f"run directory {str(self.run_dir)!r} is in use")

    # ---------------------------------------------------------------------------------------
    # phase 2: train

    def _micro_batches(self, batch: Batch) -> Iterator[Batch]:
        local = shard_rows(batch, self.info.rank, self.info.world_size)
        for i in range(self.accum):
            yield local.rows(i * self.micro_batch, (i + 1) * self.micro_batch).to(self.info.device)

    def _sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Reduce gradients across ranks only on the last micro-batch of a step."""
        if not self.info.distributed:
            return contextlib.nullcontext()
        if isinstance(self.train_model, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext() if last else self.train_model.no_sync()
        setter = getattr(self.train_model, "set_requires_gradient_sync", None)
        if setter is not None:  # FSDP2
            setter(last)
        return contextlib.nullcontext()

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.info.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def train_step(self, batch: Batch) -> tuple[float, float]:
        """One optimiser step on a global batch: ``(loss, grad_norm)`` (loss is global)."""
        self.train_model.train()
        n_loss = float(batch.loss_mask.sum())  # same on every rank: each holds the global batch
        world = self.info.world_size
        total = torch.zeros((), device=self.info.device)
        for i, mb in enumerate(self._micro_batches(batch)):
            with self._sync(last=i == self.accum - 1):
                with self._autocast():
                    logits = self.forward(mb.inputs)  # (b, N, V)
                loss_sum = masked_loss_sum(logits, mb.targets, mb.loss_mask)
                # DDP/FSDP average gradients over ranks: scale so the result is sum / n_loss
                (loss_sum * (world / max(n_loss, 1.0))).backward()
            total += loss_sum.detach()
        loss = float(D.all_reduce_sum(total, self.info)) / max(n_loss, 1.0)
        clip = self.cfg.optim.grad_clip or math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if hasattr(norm, "full_tensor"):  # DTensor under FSDP
            norm = norm.full_tensor()
        return loss, float(norm)

    @torch.no_grad()
    def validate(self) -> float | None:
        """Token-mean loss over the fixed validation batches (None without validation data)."""
        if not self.data.val:
            return None
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.info.device)
        for batch in self.data.val:
            for mb in self._micro_batches(batch):
                with self._autocast():
                    logits = self.model(mb.inputs)
                total[0] += masked_loss_sum(logits, mb.targets, mb.loss_mask).double()
                total[1] += mb.loss_mask.sum()
        D.all_reduce_sum(total, self.info)
        return float(total[0] / total[1].clamp_min(1))

    def save(self) -> Path | None:
        """Checkpoint the current step (collective; rank 0 writes). Returns the directory."""
        extra = {
            "world_size": self.info.world_size,
            "config": self.cfg.to_dict(),
            "saved_at": time.time(),
        }
        failure: ckpt.CheckpointWriteError | None = None
        try:
            path = self.checkpoints.save(self.step, extra)
        except ckpt.CheckpointWriteError as e:
            failure, path = e, None
        # every rank learns of a failed write (no rank waits for a save that will not come)
        flag = torch.tensor(float(failure is not None), device=self.info.device)
        if float(D.all_reduce_max(flag, self.info)):
            raise failure or ckpt.CheckpointWriteError(
                f"checkpoint of step {self.step} could not be written by rank 0"
            )
        D.barrier(self.info)
        return path

    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg_dict = self.cfg.to_dict()
        header = "# resolved configuration of this run (written by iha train)\n"
        (self.run_dir / "config.toml").write_text(header + dump_toml(cfg_dict), encoding="utf-8")
        # model_type: AutoModelForCausalLM.from_pretrained(run_dir) after `import iha.hf`
        # (iha.hf.loading); readers of the run config drop it (iha.cli._common.read_raw_config)
        hf_view = {"model_type": RUN_MODEL_TYPE, **cfg_dict}
        (self.run_dir / "config.json").write_text(json.dumps(hf_view, indent=1), encoding="utf-8")

    def _open_outputs(self) -> tuple[MetricsWriter | None, Progress]:
        cfg, main = self.cfg, self.info.is_main
        writer = None
        if main:
            self._write_run_files()
            writer = MetricsWriter(self.run_dir, cfg.logging.tensorboard)
            if self.resumed_from is not None:
                note = writer.truncate_after(self.step)
                if note:
                    self.notes.append(note)
            else:
                writer.reset()
        mode = cfg.logging.progress if main else "none"
        return writer, Progress(cfg.train.max_steps, self.step, mode, cfg.train.log_every)

    def _announce(self, say: Callable[[str], None]) -> None:
        t, info = self.cfg.train, self.info
        for note in self.notes:
            say(note)
        if self.resumed_from is not None:
            say(f"resumed from {self.resumed_from} at step {self.step}")
            if self.config_changes:
                say(
                    "applied config changes from this step on (learning-rate schedule "
                    "re-derived from the new values): " + "; ".join(self.config_changes)
                )
        elif self.resume:
            say(f"no checkpoint in {self.ckpt_root}; starting from scratch")
        say(
            f"model {self.n_params / 1e6:.2f}M params, "
            f"{self.flops_per_token:.3g} train FLOPs/token; "
            f"{info.world_size} process(es) on {info.device}, {'bf16' if self.bf16 else 'fp32'}; "
            f"batch {t.batch_size} x {self.data.seq_len} tokens = micro {self.micro_batch} "
            f"x accum {self.accum} x world {info.world_size}"
        )

    def run(self) -> TrainResult:
        """Train until ``max_steps`` (or ``stop_at``, a signal, a non-finite loss)."""
        if not self.prepared:
            self.prepare()
        cfg, t, info = self.cfg, self.cfg.train, self.info
        writer, progress = self._open_outputs()
        say = progress.message if info.is_main else (lambda _text: None)
        self._announce(say)
        end = min(t.max_steps, self.stop_at) if self.stop_at is not None else t.max_steps
        result = TrainResult(self.run_dir, self.step, "done", EXIT_OK)
        last_ckpt: Path | None = self.resumed_from
        signals = _StopSignals()
        signals.install()
        try:
            while self.step < end:
                t0 = time.perf_counter()
                batch = self.data.train.next_batch()
                loss, norm = self.train_step(batch)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    self.optimizer.zero_grad(set_to_none=True)
                    what, value = ("loss", loss) if not math.isfinite(loss) else ("grad norm", norm)
                    say(
                        f"stopping: non-finite {what} ({value}) at step {self.step + 1}; the "
                        f"update was not applied. Last good checkpoint: {last_ckpt or 'none'}"
                    )
                    result.reason, result.exit_code = "nonfinite", EXIT_NONFINITE
                    break
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.step += 1
                self.tokens += batch.inputs.numel()
                self.flops += self.flops_per_token * batch.inputs.numel()
                result.losses[self.step] = loss
                speed = batch.inputs.numel() / (time.perf_counter() - t0)
                if writer is not None and (self.step % t.log_every == 0 or self.step == end):
                    writer.write(
                        {"split": "train", "step": self.step, "loss": loss, "lr": lr,
                         "grad_norm": norm, "tokens": self.tokens, "flops": self.flops,
                         "tokens_per_s": speed, "time": time.time()}
                    )  # fmt: skip
                progress.update(self.step, loss, lr, speed)
                if (t.val_every and self.step % t.val_every == 0) or self.step == t.max_steps:
                    val = self.validate()
                    if val is not None:
                        result.val_losses[self.step] = val
                        say(f"step {self.step}: val loss {val:.4f}")
                        if writer is not None:
                            writer.write(
                                {"split": "val", "step": self.step, "loss": val,
                                 "tokens": self.tokens, "flops": self.flops, "time": time.time()}
                            )  # fmt: skip
                # every rank must agree to stop at the same step
                flag = torch.tensor(float(signals.signum or 0), device=info.device)
                stop_signal = int(D.all_reduce_max(flag, info))
                every = cfg.checkpoint.every
                if self.step >= end or stop_signal or (every and self.step % every == 0):
                    try:
                        last_ckpt = self.save()
                    except ckpt.CheckpointWriteError as e:
                        say(f"stopping at step {self.step}: {e}")
                        result.reason, result.exit_code = "nosave", EXIT_NOSAVE
                        break
                    if last_ckpt is not None:
                        say(f"saved checkpoint {last_ckpt}")
                if stop_signal:
                    say(f"received signal {stop_signal}: saved step {self.step} and stopped")
                    result.reason, result.exit_code = "signal", 128 + stop_signal
                    break
            else:
                if self.step < t.max_steps:
                    result.reason = "stopped"
        finally:
            signals.restore()
            progress.close()
            if writer is not None:
                writer.close()
        result.step, result.checkpoint = self.step, last_ckpt
        if info.is_main and cfg.logging.plots and result.reason != "nonfinite":
            self._plot(say)
        return result

    def _plot(self, say: Callable[[str], None]) -> None:
        try:
            from iha.train.plot import plot_runs
        except ImportError as e:  # matplotlib missing
            say(f"no plots: {e}")
            return
        try:
            files = plot_runs([self.run_dir], self.run_dir / "plots")
        except ImportError as e:
            say(f"no plots: {e}")
            return
        say(f"plots: {', '.join(str(f) for f in files)}")

    def close(self) -> None:
        """Release the run directory and leave the process group."""
        self.lock.release()
        D.teardown(self.info)


def _diff(a: Any, b: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _diff(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


def train(
    cfg: RunConfig,
    resume: bool = False,
    model_factory: ModelFactory | None = None,
    stop_at: int | None = None,
) -> TrainResult:
    """Run (or resume) training as configured; see :class:`Trainer`."""
    trainer = Trainer(cfg, resume=resume, model_factory=model_factory, stop_at=stop_at)
    try:
        trainer.prepare()
        return trainer.run()
    finally:
        if hasattr(trainer, "info"):
            trainer.close()


def load_trained_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    model_factory: ModelFactory | None = None,
) -> tuple[nn.Module, dict[str, Any], Path]:
    """The model of a checkpoint (a run dir, its checkpoints dir or one checkpoint dir).

    Returns ``(model in eval mode on device, the run's config dict, the checkpoint dir)``.
    """
    found = ckpt.resolve_checkpoint(path)
    meta = ckpt.read_meta(found)
    config = meta["config"]
    model = (model_factory or build_model)(config["model"])
    try:
        weights = ckpt.load_model_weights(found / ckpt.MODEL_FILE)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ckpt.CheckpointError(f"{str(found / ckpt.MODEL_FILE)!r} cannot be read ({e})") from e
    model.load_state_dict(weights)
    return model.to(device).eval(), config, found
