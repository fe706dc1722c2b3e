"""Atomic, crash-safe checkpoints.

Layout of ``RUN_DIR/checkpoints``::

    step_00000100/model.safetensors   model weights (full, unsharded; shared tensors stored once)
    step_00000100/state.pt            optimizer, scheduler, RNG states (torch.save, weights only)
    step_00000100/meta.json           step, data position, counters, the resolved config
    latest                            the name of the newest complete checkpoint

A checkpoint is written into a temporary directory next to its final place; every file and the
directory are fsync'ed, then the directory is renamed into place (``os.replace``, atomic), then
``latest`` is rewritten the same way (temporary file, fsync, rename). A process killed at any
moment therefore leaves either the old or the new ``latest``, each naming a complete checkpoint;
leftover temporary directories are ignored and removed by the next save. Only the newest
``keep`` checkpoints are kept.

For tests, the environment variable ``IHA_CHECKPOINT_PAUSE="STEP:SECONDS"`` makes the writer of
the checkpoint of step STEP sleep for SECONDS half-way through (after the weights are written).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _maybe_pause(step: int) -> None:
    spec = os.environ.get("IHA_CHECKPOINT_PAUSE")
    if not spec:
        return
    at, _, seconds = spec.partition(":")
    if int(at) == step:
        time.sleep(float(seconds or 60))


def save_model_weights(path: Path, state: dict[str, Tensor]) -> None:
    """Write a state dict with safetensors; tensors sharing storage (tied weights) stored once."""
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    for name, t in state.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.contiguous()
    save_file(tensors, str(path), metadata={"aliases": json.dumps(aliases)})


def load_model_weights(path: Path) -> dict[str, Tensor]:
    """Read weights written by :func:`save_model_weights` (aliases restored as shared tensors)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    state = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        aliases = json.loads((fh.metadata() or {}).get("aliases", "{}"))
    for name, target in aliases.items():
        state[name] = state[target]
    return state


def save_checkpoint(
    root: str | Path,
    step: int,
    model_state: dict[str, Tensor],
    train_state: dict[str, Any],
    meta: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, keep the newest ``keep``.

    Args:
        root: the checkpoints directory (created if missing).
        step: optimiser steps completed.
        model_state: full (unsharded) model state dict.
        train_state: optimizer / scheduler / RNG states (tensors and plain Python values).
        meta: JSON-serialisable metadata (data position, counters, config).
        keep: number of newest checkpoints to keep (>= 1).

    Returns:
        The directory of the new checkpoint.
    """
    if keep < 1:
        raise ValueError(f"keep={keep} must be >= 1")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model_weights(tmp / MODEL_FILE, model_state)
    _fsync_file(tmp / MODEL_FILE)
    _maybe_pause(step)
    with open(tmp / STATE_FILE, "wb") as fh:
        torch.save(train_state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    with open(tmp / META_FILE, "w", encoding="utf-8") as fh:
        json.dump({**meta, "step": step}, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():  # a checkpoint of the same step (e.g. saved again after a resume)
        old = root / f".old-{name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    _write_atomic_text(root / LATEST, name + "\n")
    prune(root, keep, protect=name)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / META_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def prune(root: Path, keep: int, protect: str) -> None:
    """Delete all but the newest ``keep`` checkpoints (never ``protect``) and stale temp dirs."""
    ckpts = list_checkpoints(root)
    for p in ckpts[: max(0, len(ckpts) - keep)]:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)
    mine = str(os.getpid())
    for p in root.iterdir():
        stale = p.name.startswith((".tmp-", ".old-", f".{LATEST}.tmp-"))
        if stale and p.name.rsplit("-", 1)[-1] != mine:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint ``latest`` names, or the newest complete one, or None if there is none."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text(encoding="utf-8").strip()
        if (target / META_FILE).is_file():
            return target
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint dir, a checkpoints dir or a run dir."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    for root in (path, path / "checkpoints"):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise FileNotFoundError(f"no checkpoint found in {str(path)!r}")


def read_meta(ckpt: str | Path) -> dict[str, Any]:
    """The metadata (step, data position, config, ...) of a checkpoint directory."""
    return json.loads((Path(ckpt) / META_FILE).read_text(encoding="utf-8"))


def load_checkpoint(ckpt: str | Path) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """``(model_state, train_state, meta)`` of a checkpoint directory (all on the CPU)."""
    ckpt = Path(ckpt)
    model_state = load_model_weights(ckpt / MODEL_FILE)
    train_state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    return model_state, train_state, read_meta(ckpt)
