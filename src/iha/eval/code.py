"""Running generated code: a sandboxed Python process per program.

:func:`run_program` runs one program (say a completion followed by its test asserts) and tells
whether it ran to its end. Each program gets

- its own process (the running interpreter, ``-I``: isolated from the user's environment and
  site directory), in a new session, so the whole process group is killed afterwards;
- a wall-clock timeout (then the process group is killed with SIGKILL) and a CPU-time limit;
- resource limits set with ``resource.setrlimit`` before the program runs: address space
  (``memory_bytes``, default 4 GiB: a 20 GB allocation raises MemoryError), CPU seconds, file
  size (64 MiB), no core dumps, and no new processes (``RLIMIT_NPROC`` = 0; the kernel does not
  apply it to root, for whom the guard below and the process-group kill remain);
- a fresh, empty temporary working directory (removed afterwards), ``HOME`` and ``TMPDIR``
  pointing into it, a minimal environment, no stdin (``/dev/null``), output discarded;
- the reference HumanEval harness's ``reliability_guard``: file removal and renaming
  (``os.remove``, ``os.unlink``, ``os.rmdir``, ``os.rename``, ``shutil.rmtree``, ``shutil.move``
  ...), permission and ownership changes, process creation and signalling (``os.fork``,
  ``os.system``, ``os.kill``, ``subprocess.Popen``, ...), ``os.chdir`` / ``os.getcwd``,
  ``builtins.exit`` / ``quit`` disabled; we also disable ``os.posix_spawn*``, ``os.exec*``,
  ``os.spawn*``, ``os.popen``, ``os.setsid`` / ``os.setpgid`` and ``os._exit``.

A program passes when it runs to its end without an exception; any exception, ``SystemExit``
included (as in the reference harness), a timeout or a killed process fails it.

Like the reference harness, the guard is not a security boundary: Python code that means to
can undo it. It stops the accidents that generated code makes (infinite loops, fork bombs, huge
allocations, deleting files); run untrusted code in a container or VM as well.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from iha.validate import check_int, check_positive_number

DEFAULT_MEMORY_BYTES = 4 * 1024**3
MAX_FILE_BYTES = 64 * 1024**2
_STDERR_TAIL = 2000

# Runs in the sandbox process: limits, the guard, then the program. argv: program path,
# address-space bytes, CPU seconds, file-size bytes.
_BOOTSTRAP = r"""
import builtins, faulthandler, os, resource, shutil, subprocess, sys, traceback

path, memory, cpu, fsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with open(path, encoding="utf-8") as f:
    source = f.read()
for limit, value in (
    (resource.RLIMIT_AS, memory),
    (resource.RLIMIT_DATA, memory),
    (resource.RLIMIT_CPU, cpu),
    (resource.RLIMIT_FSIZE, fsize),
    (resource.RLIMIT_CORE, 0),
    (resource.RLIMIT_NPROC, 0),
):
    resource.setrlimit(limit, (value, value))
code = compile(source, "program.py", "exec")
leave = os._exit
faulthandler.disable()
builtins.exit = None
builtins.quit = None
builtins.help = None
os.environ["OMP_NUM_THREADS"] = "1"
for name in (
    "kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
    "fork", "forkpty", "rename", "renames", "truncate", "replace", "unlink", "fchmod",
    "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir",
    "posix_spawn", "posix_spawnp", "execv", "execve", "execl", "execle", "execlp", "execlpe",
    "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve",
    "spawnvp", "spawnvpe", "popen", "setsid", "setpgid", "_exit", "abort",
):
    if hasattr(os, name):
        setattr(os, name, None)
shutil.rmtree = None
shutil.move = None
shutil.chown = None
subprocess.Popen = None
for name in ("ipdb", "joblib", "resource", "psutil", "tkinter", "_posixsubprocess", "ctypes"):
    sys.modules[name] = None
try:
    exec(code, {"__name__": "__main__", "__builtins__": builtins})
except BaseException:
    try:
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        leave(1)
try:
    sys.stdout.flush()
    sys.stderr.flush()
finally:
    leave(0)
"""


@dataclass(frozen=True)
class ExecutionResult:
    """How one program ended: ``status`` is ``"passed"``, ``"failed"`` or ``"timed out"``;
    ``stderr`` is the tail of what it wrote there (a traceback, when it failed)."""

    passed: bool
    status: str
    seconds: float
    stderr: str = ""


def execute(
    source: str,
    timeout: float = 10.0,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> ExecutionResult:
    """Run ``source`` in the sandbox (module docstring) and report how it ended."""
    if not isinstance(source, str):
        raise ValueError(f"source must be a str, got {type(source).__name__}")
    check_positive_number("timeout", timeout)  # seconds
    check_int("memory_bytes", memory_bytes, 1)
    with tempfile.TemporaryDirectory(prefix="iha-sandbox-") as root:
        work = Path(root) / "work"
        work.mkdir()
        program = Path(root) / "program.py"
        program.write_text(source, encoding="utf-8")
        stderr_path = Path(root) / "stderr.txt"
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(work),
            "TMPDIR": str(work),
            "OMP_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }
        cpu = math.ceil(timeout) + 1
        args = [sys.executable, "-I", "-c", _BOOTSTRAP, str(program), str(memory_bytes)]
        args += [str(cpu), str(MAX_FILE_BYTES)]
        start = time.monotonic()
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                args,
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
            try:
                code = proc.wait(timeout=timeout)
                status = "passed" if code == 0 else "failed"
            except subprocess.TimeoutExpired:
                status = "timed out"
            finally:
                _kill_group(proc)
        seconds = time.monotonic() - start
        with stderr_path.open("rb") as f:
            f.seek(max(0, stderr_path.stat().st_size - _STDERR_TAIL))
            tail = f.read().decode("utf-8", errors="replace")
    return ExecutionResult(status == "passed", status, seconds, tail)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's whole process group (anything it spawned), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_program(source: str, timeout: float = 10.0) -> bool:
    """True iff ``source`` runs to its end without an exception within ``timeout`` seconds
    (wall clock) in the sandbox: its own process, resource limits, a fresh temporary working
    directory, no stdin, destructive functions disabled (module docstring)."""
    return execute(source, timeout=timeout).passed


def run_programs(
    sources: Sequence[str],
    timeout: float = 10.0,
    workers: int = 1,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> list[ExecutionResult]:
    """:func:`execute` every program, ``workers`` sandbox processes at a time, in order."""
    check_int("workers", workers, 1)
    results: list[ExecutionResult | None] = [None] * len(sources)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(execute, s, timeout, memory_bytes) for s in sources]
        for i, fut in enumerate(futures):
            results[i] = fut.result()
            if progress is not None:
                progress(i + 1, len(sources))
    return [r for r in results if r is not None]
