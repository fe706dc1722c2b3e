"""Atomic, crash-safe checkpoints.

Layout of ``RUN_DIR/checkpoints``::

    step_00000100/model.safetensors   model weights (full, unsharded; shared tensors stored once)
    step_00000100/state.pt            optimizer, scheduler, RNG states (torch.save, weights only)
    step_00000100/meta.json           step, data position, counters, the resolved config
    step_00000100/manifest.json       size and SHA-256 of the three files above (written last)
    latest                            the name of the newest complete checkpoint

A checkpoint is written into a temporary directory next to its final place; every file and the
directory are fsync'ed, then the directory is renamed into place (``os.replace``, atomic), then
``latest`` is rewritten the same way (temporary file, fsync, rename). A process killed at any
moment therefore leaves either the old or the new ``latest``, each naming a complete checkpoint;
leftover temporary directories are ignored and removed by the next save. Only the newest
``keep`` checkpoints are kept.

Files can still be damaged after the fact (a full disk, a copy cut short, a bad sector).
:func:`verify_checkpoint` compares every file with the manifest, and :func:`find_intact_checkpoint`
walks back from the newest checkpoint to the newest one that verifies, reporting the ones it
skipped and why.

:class:`CheckpointManager` saves and restores a set of named :class:`Stateful` parts (model,
optimizer, scheduler, data position, counters, RNG states) through these files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from iha.validate import check_int

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
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


class CheckpointError(ValueError):
    """A checkpoint (or every checkpoint of a directory) is damaged or missing."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a quota, an I/O error); its temporary
    directory has been removed and the previous checkpoints are as they were."""


def _disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)  # safetensors reports the OS error in its own exception type
    return "No space left on device" in text or "os error 28" in text or "quota" in text.lower()


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(folder: Path, names: list[str]) -> None:
    files = {n: {"bytes": (folder / n).stat().st_size, "sha256": file_digest(folder / n)}
             for n in names}  # fmt: skip
    with open(folder / MANIFEST_FILE, "w", encoding="utf-8") as fh:
        json.dump({"files": files}, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())


def verify_checkpoint(ckpt: str | Path) -> None:
    """Check every file of a checkpoint against its manifest.

    Raises:
        CheckpointError: naming the first file that is missing, of the wrong size or content,
            or the manifest itself when it is missing or unreadable.
    """
    ckpt = Path(ckpt)
    manifest = ckpt / MANIFEST_FILE
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        expected = {str(n): (int(f["bytes"]), str(f["sha256"])) for n, f in files.items()}
    except FileNotFoundError:
        raise CheckpointError(f"{str(manifest)!r} is missing (an incomplete checkpoint)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{str(manifest)!r} is unreadable ({e})") from e
    for name in (MODEL_FILE, STATE_FILE, META_FILE):
        if name not in expected:
            raise CheckpointError(f"{str(manifest)!r} does not list {name}")
    for name, (size, sha) in expected.items():
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError(f"{str(path)!r} is missing")
        if path.stat().st_size != size:
            raise CheckpointError(
                f"{str(path)!r} has {path.stat().st_size} bytes, the manifest says {size}"
            )
        if file_digest(path) != sha:
            raise CheckpointError(f"{str(path)!r} does not match its SHA-256 in the manifest")


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
    check_int("keep", keep, 1)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    final = root / name
    _remove_stale(root)  # what dead processes left frees room for this one
    tmp = root / f".tmp-{name}-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_model_weights(tmp / MODEL_FILE, model_state)
        _fsync_file(tmp / MODEL_FILE)
        with open(tmp / STATE_FILE, "wb") as fh:
            torch.save(train_state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        with open(tmp / META_FILE, "w", encoding="utf-8") as fh:
            json.dump({**meta, "step": step}, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        _write_manifest(tmp, [MODEL_FILE, STATE_FILE, META_FILE])  # last: vouches for the rest
        _fsync_dir(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, Exception):
            raise  # KeyboardInterrupt, SystemExit: cleaned up, passed on
        what = "the disk is full" if _disk_full(e) else f"{type(e).__name__}: {e}"
        previous = latest_checkpoint(root)
        raise CheckpointWriteError(
            f"could not write checkpoint {name} in {str(root)!r} ({what}); its temporary files "
            f"were removed; the newest saved checkpoint is "
            f"{str(previous) if previous else 'none'}"
        ) from e
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
    _remove_stale(root)


def _remove_stale(root: Path) -> None:
    """Remove the temporary files and directories other processes left in ``root``."""
    mine = str(os.getpid())
    for p in root.iterdir():
        stale = p.name.startswith((".tmp-", ".old-", f".{LATEST}.tmp-"))
        if stale and p.name.rsplit("-", 1)[-1] != mine:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _pointed(root: Path) -> Path | None:
    """The checkpoint the ``latest`` file names, if it names one (a damaged pointer: None)."""
    try:
        name = (root / LATEST).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not _STEP_DIR.match(name) or not (root / name / META_FILE).is_file():
        return None
    return root / name


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint ``latest`` names, or the newest complete one, or None if there is none."""
    root = Path(root)
    target = _pointed(root)
    if target is not None:
        return target
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def find_intact_checkpoint(root: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint under ``root`` that passes :func:`verify_checkpoint`.

    Candidates are the one ``latest`` names, then the others newest first.

    Returns:
        ``(checkpoint or None when root holds none, reasons the newer ones were skipped)``.

    Raises:
        CheckpointError: when checkpoints exist but none is intact (naming each damaged file).
    """
    root = Path(root)
    candidates = list(reversed(list_checkpoints(root)))
    pointed = _pointed(root)
    if pointed is not None:
        candidates = [pointed] + [c for c in candidates if c.name != pointed.name]
    skipped: list[str] = []
    for candidate in candidates:
        try:
            verify_checkpoint(candidate)
        except CheckpointError as e:
            skipped.append(str(e))
            continue
        return candidate, skipped
    if skipped:
        raise CheckpointError(f"no intact checkpoint in {str(root)!r}: " + "; ".join(skipped))
    return None, []


def resolve_checkpoint(path: str | Path, verify: bool = True) -> Path:
    """A checkpoint directory from a checkpoint dir, a checkpoints dir or a run dir (there: the
    one ``latest`` names, else the newest).

    With ``verify`` (the default; every reader of checkpoints uses it) the checkpoint is checked
    against its manifest (:func:`verify_checkpoint`) before it is returned.

    Raises:
        FileNotFoundError: when ``path`` holds no checkpoint.
        CheckpointError: when the checkpoint found fails its manifest; it names the file and,
            for a run or checkpoints dir, the newest intact checkpoint to pass instead.
    """
    path = Path(path)
    found = path if (path / META_FILE).is_file() else None
    for root in () if found is not None else (path, path / "checkpoints"):
        found = latest_checkpoint(root)
        if found is not None:
            break
    if found is None:
        raise FileNotFoundError(f"no checkpoint found in {str(path)!r}")
    if verify:
        try:
            _verify_once(found)
        except CheckpointError as e:
            hint = ""
            if found != path:
                try:
                    intact, _ = find_intact_checkpoint(found.parent)
                    hint = f"; the newest intact checkpoint is {str(intact)!r}"
                except CheckpointError:
                    hint = "; no checkpoint there is intact"
            raise CheckpointError(f"checkpoint {str(found)!r} is damaged: {e}{hint}") from e
    return found


_verified: dict[str, tuple] = {}  # checkpoint dir -> the file states it verified with


def _verify_once(ckpt: Path) -> None:
    """:func:`verify_checkpoint`, skipped when the files are unchanged since the last pass in
    this process (size, mtime and inode of each: a loader resolves the same checkpoint twice)."""
    try:
        stamp = tuple(
            (p.name, st.st_size, st.st_mtime_ns, st.st_ino)
            for p in sorted(ckpt.iterdir())
            for st in [p.stat()]
        )
    except OSError:
        stamp = None
    key = str(ckpt.resolve())
    if stamp is not None and _verified.get(key) == stamp:
        return
    verify_checkpoint(ckpt)
    if stamp is not None:
        _verified[key] = stamp


def read_meta(ckpt: str | Path) -> dict[str, Any]:
    """The metadata (step, data position, config, ...) of a checkpoint directory."""
    path = Path(ckpt) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{str(path)!r} must hold a JSON object")
    return meta


def load_checkpoint(ckpt: str | Path) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """``(model_state, train_state, meta)`` of a checkpoint directory (all on the CPU).

    Raises:
        CheckpointError: naming the file that cannot be read.
    """
    ckpt = Path(ckpt)
    try:
        model_state = load_model_weights(ckpt / MODEL_FILE)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{str(ckpt / MODEL_FILE)!r} cannot be read ({e})") from e
    try:
        train_state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors for damaged files
        raise CheckpointError(f"{str(ckpt / STATE_FILE)!r} cannot be read ({e})") from e
    return model_state, train_state, read_meta(ckpt)


# ---------------------------------------------------------------------------------------------
# the manager: named Stateful parts in and out of checkpoints


class Stateful(Protocol):
    """Anything with ``state_dict()`` and ``load_state_dict(state)`` (torch modules, optimizers,
    schedulers, data streams, the small adapters in :mod:`iha.train.trainer`)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CheckpointManager:
    """Saves and restores named :class:`Stateful` parts as one checkpoint.

    The part called ``model`` goes to ``model.safetensors``; parts listed in ``json_parts`` go
    to ``meta.json`` (small, human-readable: data position, counters); all others to
    ``state.pt``. ``state_dict()`` is called on every process (it may be collective); only the
    process with ``writer=True`` writes.

    Args:
        root: the checkpoints directory.
        parts: name -> Stateful, saved and restored in this order.
        keep: number of newest checkpoints to keep.
        json_parts: names of the parts stored in ``meta.json``.
        writer: whether this process writes files.
    """

    def __init__(
        self,
        root: str | Path,
        parts: dict[str, Stateful],
        keep: int,
        json_parts: tuple[str, ...] = (),
        writer: bool = True,
    ) -> None:
        if "model" not in parts:
            raise ValueError("parts must hold a 'model' part")
        self.root, self.parts, self.keep = Path(root), parts, keep
        self.json_parts, self.writer = json_parts, writer

    def save(self, step: int, extra_meta: dict[str, Any] | None = None) -> Path | None:
        """Checkpoint every part at ``step``; returns the directory (None when not the writer)."""
        states = {name: part.state_dict() for name, part in self.parts.items()}
        if not self.writer:
            return None
        model_state = states.pop("model")
        meta = {**(extra_meta or {}), **{n: states.pop(n) for n in self.json_parts}}
        return save_checkpoint(self.root, step, model_state, states, meta, self.keep)

    def load(self, path: Path) -> dict[str, Any]:
        """Restore every part from checkpoint ``path``; returns its ``meta.json``.

        Raises:
            CheckpointError: a file cannot be read or a part is missing from it.
        """
        model_state, tensor_states, meta = load_checkpoint(path)
        for name, part in self.parts.items():
            if name == "model":
                state = model_state
            elif name in self.json_parts:
                state = meta.get(name)
            else:
                state = tensor_states.get(name) if isinstance(tensor_states, dict) else None
            if state is None:
                raise CheckpointError(f"checkpoint {str(path)!r} holds no {name!r} state")
            part.load_state_dict(state)
        return meta
