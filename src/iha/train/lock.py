"""An exclusive lock on a run directory, so that two training processes never share one (and
an output directory of ``iha eval``, so that two evaluations never write one).

The lock is ``flock`` on ``RUN_DIR/.lock``: the kernel releases it when the holding process
exits in any way (including ``kill -9``), so a lock left by a dead process is never in force;
the file's text (pid, host, start time) only names the holder in the error message.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".lock"


class RunDirLocked(ValueError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """Holds ``RUN_DIR/.lock`` from :meth:`acquire` until :meth:`release` (or process exit)."""

    def __init__(
        self,
        run_dir: str | Path,
        user: str = "training",
        option: str = "run_dir",
        what: str = "run directory",
    ) -> None:
        """``what``, ``user`` and ``option`` name, in the error, the directory, what holds such
        directories and the setting that picks another one (``iha eval``: "output directory",
        "evaluation", "--out")."""
        self.path = Path(run_dir) / LOCK_FILE
        self.user, self.option, self.what = user, option, what
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, creating the run directory if needed.

        Raises:
            RunDirLocked: naming the holder (pid, host, start time) when another process holds
                it; nothing is written then.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirLocked(
                f"{self.what} {str(self.path.parent)!r} is in use by another {self.user} "
                f"process ({holder}); wait for it to finish, stop it, or choose another "
                f"{self.option}"
            ) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays; an unlocked file means a free directory)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
