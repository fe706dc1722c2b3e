"""Reading benchmark records: local JSONL files, or a Hugging Face hub dataset via ``datasets``.

Every loader in ``iha.eval`` accepts a local path first (offline, reproducible) and only reaches
for the hub when no path is given. ``datasets`` is an optional dependency: it is imported here,
on demand, and its absence is reported with the offline alternative.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from iha.validate import check_int


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (blank lines skipped); each must hold the ``required`` keys."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path={str(path)!r} is not a file (expected a .jsonl file)")
    records = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(rec, dict):
                raise ValueError(f"{p}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in required if k not in rec]
            if missing:
                raise ValueError(f"{p}:{lineno}: missing field(s) {missing}; need {list(required)}")
            records.append(rec)
    return records


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records as JSON lines (UTF-8, one object per line)."""
    with Path(path).open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def load_hub_dataset(
    name: str, split: str, config: str | None = None, required: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Records of a hub dataset split via ``datasets.load_dataset`` (may download).

    Raises RuntimeError naming the offline alternative (``--data PATH``) when ``datasets`` is
    not installed or the hub cannot be reached.
    """
    try:
        import datasets
    except ImportError as e:
        raise RuntimeError(
            f"loading {name!r} from the hub needs the 'datasets' package (pip install datasets); "
            "or pass a local JSONL file (--data PATH / path=...)"
        ) from e
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # network errors, missing splits: all reported the same way
        raise RuntimeError(
            f"could not load {name!r} (config={config!r}, split={split!r}) from the hub: {e}; "
            "pass a local JSONL file instead (--data PATH / path=...)"
        ) from e
    records = [dict(r) for r in ds]
    for i, rec in enumerate(records[:1]):
        missing = [k for k in required if k not in rec]
        if missing:
            raise ValueError(f"{name} record {i}: missing field(s) {missing}")
    return records


def check_limit(limit: int | None) -> None:
    """``limit`` is None (everything) or a positive int."""
    check_int("limit", limit, 1, allow_none=True)
