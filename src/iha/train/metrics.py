"""Run outputs for people and tools: ``metrics.jsonl``, TensorBoard, a progress bar or log lines.

``metrics.jsonl`` holds one JSON object per line. Training lines have ``"split": "train"`` and
``step``, ``loss``, ``lr``, ``grad_norm``, ``tokens`` (tokens seen so far, all processes),
``flops`` (cumulative training FLOPs, 3x the model's forward FLOPs per token), ``tokens_per_s``
and ``elapsed_s``; validation lines have ``"split": "val"``, ``step``, ``loss``, ``tokens`` and
``flops``. ``iha plot`` reads them.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Appends metric records to ``RUN_DIR/metrics.jsonl`` (and TensorBoard when available)."""

    def __init__(self, run_dir: Path, tensorboard: str = "auto") -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._fh: IO[str] | None = None
        self._tb: Any = None
        if tensorboard != "off":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                if tensorboard == "on":
                    raise ImportError(
                        "logging.tensorboard = 'on' needs the tensorboard package"
                    ) from e
            else:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> str | None:
        """Drop records past ``step`` (a resumed run rewrites the steps it repeats).

        Returns a note when a torn final line (a crash mid-write) was dropped, else None.
        """
        if not self.path.is_file():
            return None
        try:
            records, note = parse_metrics(self.path)
        except ValueError:  # damaged inside: keep the file as it was, go on with what reads
            records, note = self._salvage()
        keep = [r for r in records if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
        return note

    def _salvage(self) -> tuple[list[dict[str, Any]], str]:
        """The readable records of a metrics file damaged before its last line, with a note;
        the file as it was is copied next to it first (nothing the run wrote is lost)."""
        raw = self.path.read_bytes()
        n = 1
        while (backup := self.path.with_name(f"{self.path.name}.damaged-{n}")).exists():
            n += 1
        backup.write_bytes(raw)
        records, dropped = [], []
        for number, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                dropped.append(str(number))
        shown = ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else "")
        note = (
            f"{str(self.path)!r}: dropped {len(dropped)} unreadable line(s) ({shown}); the file "
            f"as it was is kept as {str(backup)!r}"
        )
        return records, note

    def reset(self) -> None:
        """Start an empty metrics file (a fresh run in an existing directory)."""
        self.path.write_text("", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self._tb is not None:
            split = record.get("split", "train")
            step = record["step"]
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def parse_metrics(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Records of a metrics file and a note when its torn final line was dropped.

    A final line that is not valid JSON is what a crash in the middle of a write leaves: it is
    dropped (the note says so). Any other unreadable line raises ``ValueError`` naming the file
    and the line.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{str(path)!r} is not UTF-8 text ({e})") from e
    numbered = [(i, x) for i, x in enumerate(lines, start=1) if x.strip()]
    records: list[dict[str, Any]] = []
    note = None
    for k, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if k == len(numbered) - 1:
                note = f"{str(path)!r}: dropped a torn final line {number} (an interrupted write)"
                break
            raise ValueError(f"{str(path)!r} line {number} is not valid JSON: {e}") from e
        if not isinstance(record, dict):
            raise ValueError(f"{str(path)!r} line {number} is not a JSON object")
        records.append(record)
    return records, note


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of ``RUN_DIR/metrics.jsonl`` (a torn final line is dropped with a warning)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist (is {str(run_dir)!r} a run dir?)")
    records, note = parse_metrics(path)
    if note:
        warnings.warn(note, stacklevel=2)
    return records


def format_count(x: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def format_duration(seconds: float) -> str:
    """3725 -> '1:02:05'."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """A one-line progress bar on a terminal, plain log lines elsewhere.

    ``mode``: ``"bar"``, ``"lines"``, ``"none"`` or ``"auto"`` (bar when ``stream`` is a TTY).
    Log lines are printed every ``every`` steps; the bar is redrawn at most 10 times a second.
    Ours rather than tqdm: the core install needs torch only, and a redirected run (a log file,
    a cluster job) gets one plain line every ``every`` steps instead of carriage returns.
    """

    def __init__(
        self,
        total: int,
        start: int,
        mode: str = "auto",
        every: int = 10,
        stream: IO[str] | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode, self.total, self.every = mode, total, every
        self.start_step, self.t0, self._last_draw = start, time.perf_counter(), 0.0

    def eta(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.t0) / done * (self.total - step)

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        if self.mode == "none":
            return
        eta = self.eta(step)
        eta_s = format_duration(eta) if eta == eta else "?"
        text = (
            f"step {step}/{self.total} loss {loss:.4f} lr {lr:.2e} "
            f"{format_count(tokens_per_s)} tok/s ETA {eta_s}"
        )
        if self.mode == "lines":
            if step % self.every == 0 or step == self.total:
                print(text, file=self.stream, flush=True)
            return
        now = time.perf_counter()
        if now - self._last_draw < 0.1 and step != self.total:
            return
        self._last_draw = now
        width = 24
        filled = int(width * step / max(1, self.total))
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r[{bar}] {text}\033[K")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line that does not get overwritten by the bar."""
        if self.mode == "bar":
            self.stream.write("\r\033[K")
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.mode == "bar":
            self.stream.write("\n")
            self.stream.flush()
