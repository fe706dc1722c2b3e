"""Running generated code: a sandboxed Python process per program.

:func:`run_program` runs one program (say a completion followed by its test asserts) and tells
whether it ran to its end. Each program gets

- its own interpreter process (``python -I``), started by ``unshare`` in new user, mount, PID
  and network namespaces (``isolate=True``, the default):

  - the whole file system is read-only (a recursive read-only remount of ``/`` inside the
    mount namespace); the only writable place is a fresh, size-limited ``tmpfs`` at ``/tmp``
    (the working directory, ``HOME`` and ``TMPDIR``), gone when the program ends; ``/run``,
    ``/var/tmp`` and ``/dev/shm`` are hidden under empty read-only ``tmpfs`` mounts;
  - no network but a loopback interface that is down (the host's 127.0.0.1 is unreachable);
  - its own ``/proc``: the evaluator and every other host process are invisible and cannot be
    signalled; the program is process 1 of its PID namespace, so when it ends (or is killed on
    timeout) the kernel kills every process left in the namespace;
  - all capabilities dropped (bounding set emptied, ``no_new_privs``), so the mounts above
    cannot be undone, and a seccomp filter that refuses new processes (``fork``, ``vfork``,
    ``clone`` without ``CLONE_THREAD``, ``clone3``, ``unshare``): threads work, processes do
    not, whatever Python function is used (``RLIMIT_NPROC`` does not bind root, whose user
    ID the namespace maps to);
- a wall-clock timeout (then everything is killed with SIGKILL) and resource limits
  (``resource.setrlimit``): address space (``memory_bytes``, default 4 GiB), CPU seconds, file
  size (64 MiB), no core dumps, no new processes;
- the reference HumanEval harness's ``reliability_guard`` on top (file removal, process
  creation, ``chdir``, ``exit`` ... disabled in ``os``, ``shutil``, ``subprocess``);
- a minimal environment, no stdin (``/dev/null``), output discarded;
- a verdict it cannot forge by exiting early: the harness reads a random token from a pipe
  only after the program has returned normally and writes it back to the evaluator; the
  program passes only when that token arrives. ``os._exit(0)`` / ``posix._exit(0)`` before a
  failing assert, a killed harness or a timeout all fail.

A program passes when it runs to its end without an exception; any exception, ``SystemExit``
included (as in the reference harness), a timeout or a killed process fails it.

What is not guaranteed: the program runs in the harness's own interpreter, so code written to
attack the harness can read the harness's token pipe and forge a pass (it cannot reach the host
to do harm). Isolation needs the ``unshare`` command (util-linux) and a kernel that lets the
evaluating user create user namespaces (and ``mount_setattr``, Linux >= 5.12), and a base
Python installation outside the hidden folders (isolated programs run on it, not on a virtual
environment's interpreter, which may live under ``/tmp``); without them
:func:`execute` raises :class:`SandboxUnavailable` saying what is missing. ``isolate=False``
(``iha eval --no-isolation``) opts out: the program then runs with only the resource limits,
the guard and a temporary working directory, which protect against accidents but not against
code that means harm, and a warning says so.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from iha.validate import check_int, check_positive_number

DEFAULT_MEMORY_BYTES = 4 * 1024**3
MAX_FILE_BYTES = 64 * 1024**2
_STDERR_TAIL = 2000
_READY = b"R"  # written by the harness once isolated, before the program runs
_UNSHARE = (
    "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child",
    "--mount-proc",
)  # fmt: skip

# Runs in the sandbox process (process 1 of its namespaces when isolated): isolation, limits,
# the guard, the program, then the token. The program's source comes on stdin. argv: isolate
# (0/1), address-space bytes, CPU seconds, file-size bytes, token read fd, result write fd.
_BOOTSTRAP = r"""
import builtins, faulthandler, os, resource, shutil, subprocess, sys, traceback

isolate, memory, cpu, fsize, token_fd, result_fd = (int(a) for a in sys.argv[1:7])
source = sys.stdin.read()
null = os.open("/dev/null", os.O_RDONLY)
os.dup2(null, 0)
os.close(null)


def isolate_process():
    import ctypes, struct

    libc = ctypes.CDLL(None, use_errno=True)

    def check(result, what):
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    arch = os.uname().machine
    if arch == "x86_64":
        audit, nr_mount_setattr = 0xC000003E, 442
        deny = {57: 11, 58: 11, 272: 1, 435: 38}  # fork, vfork, unshare, clone3 -> errno
        clone = 56
    elif arch == "aarch64":
        audit, nr_mount_setattr = 0xC00000B7, 442
        deny = {97: 1, 435: 38}  # unshare, clone3
        clone = 220
    else:
        raise OSError(0, f"no seccomp filter for machine {arch}")
    libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG: SIGKILL when unshare dies
    homes = {os.path.realpath(p) + "/" for p in (sys.prefix, sys.base_prefix, sys.executable)}
    for hidden in ("/tmp/", "/run/", "/var/tmp/", "/dev/shm/"):
        if any(h.startswith(hidden) for h in homes):
            raise OSError(0, f"the Python interpreter lives under {hidden}, which is hidden")
    # everything read-only: MOUNT_ATTR_RDONLY | NOSUID | NODEV on / and every mount under it
    attr = struct.pack("QQQQ", 0x1 | 0x2 | 0x4, 0, 0, 0)
    check(libc.syscall(nr_mount_setattr, -100, b"/", 0x8000, attr, len(attr)), "mount_setattr /")
    options = f"size={fsize},nr_inodes=4096,mode=0700".encode()
    check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0x2 | 0x4, options), "mount tmpfs /tmp")
    for hidden in (b"/run", b"/var/tmp", b"/dev/shm"):
        if os.path.isdir(hidden) and not os.path.islink(hidden):
            flags = 0x1 | 0x2 | 0x4 | 0x8  # read-only, nosuid, nodev, noexec
            check(libc.mount(b"tmpfs", hidden, b"tmpfs", flags, b"size=4k,mode=0555"), "hide")
    os.chdir("/tmp")
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        check(libc.prctl(24, cap, 0, 0, 0), "PR_CAPBSET_DROP")
    header = struct.pack("Ii", 0x20080522, 0)
    check(libc.capset(header, bytes(24)), "capset")
    check(libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    # seccomp: wrong architecture -> kill; denied calls -> errno; clone only for threads
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    errno_of = lambda e: 0x00050000 | e  # noqa: E731
    denied = sorted(deny)
    n = len(denied)
    # layout: 0 ld arch, 1 jeq, 2 kill, 3 ld nr, 4 jge x32, 5..5+n-1 jeq denied,
    # 5+n jeq clone, 6+n allow, 7+n ld arg0, 8+n jset thread, 9+n allow, 10+n eagain,
    # 11+n.. one return per denied call
    code = [(ld, 0, 0, 4), (jeq, 1, 0, audit), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    code.append((jge, 10 + n - 5 - 1, 0, 0x40000000))
    for i, nr in enumerate(denied):
        here = 5 + i
        code.append((jeq, 11 + n + i - here - 1, 0, nr))
    code += [(jeq, 1, 0, clone), (ret, 0, 0, allow), (ld, 0, 0, 16), (jset, 0, 1, 0x10000)]
    code += [(ret, 0, 0, allow), (ret, 0, 0, errno_of(11))]
    code += [(ret, 0, 0, errno_of(deny[nr])) for nr in denied]
    program = b"".join(struct.pack("HBBI", *op) for op in code)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxQ", len(code), ctypes.addressof(buffer))
    check(libc.prctl(22, 2, fprog, 0, 0), "seccomp")


if isolate:
    try:
        isolate_process()
    except BaseException as e:
        print(f"iha sandbox: could not isolate the program: {e}", file=sys.stderr, flush=True)
        os._exit(3)
os.write(result_fd, b"R")
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
leave, read, write, flush = os._exit, os.read, os.write, sys.stdout.flush
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
    flush()
    sys.stderr.flush()
finally:
    write(result_fd, read(token_fd, 64))
    leave(0)
"""


class SandboxUnavailable(RuntimeError):
    """The sandbox could not isolate a program (no ``unshare``, no user namespaces ...)."""


@dataclass(frozen=True)
class ExecutionResult:
    """How one program ended: ``status`` is ``"passed"``, ``"failed"`` or ``"timed out"``;
    ``stderr`` is the tail of what it wrote there (a traceback, when it failed)."""

    passed: bool
    status: str
    seconds: float
    stderr: str = ""


_warned_unisolated = False


def _isolated_interpreter() -> str:
    """The interpreter of isolated programs: the base installation's, not a virtual
    environment's. A venv may live in a folder the sandbox hides (a checkout under ``/tmp``),
    and the programs and the harness need only the standard library."""
    base = getattr(sys, "_base_executable", None)
    return base if base and os.path.isfile(base) else sys.executable


def execute(
    source: str,
    timeout: float = 10.0,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    isolate: bool = True,
) -> ExecutionResult:
    """Run ``source`` in the sandbox (module docstring) and report how it ended.

    Raises :class:`SandboxUnavailable` when ``isolate`` is true and the program could not be
    isolated; ``isolate=False`` runs it without namespaces (unsafe for untrusted code)."""
    global _warned_unisolated
    if not isinstance(source, str):
        raise ValueError(f"source must be a str, got {type(source).__name__}")
    check_positive_number("timeout", timeout)  # seconds
    check_int("memory_bytes", memory_bytes, 1)
    if not isinstance(isolate, bool):
        raise ValueError(f"isolate must be True or False, got {isolate!r}")
    cpu = math.ceil(timeout) + 1
    python = _isolated_interpreter() if isolate else sys.executable
    harness = [python, "-I", "-c", _BOOTSTRAP, str(int(isolate)), str(memory_bytes)]
    harness += [str(cpu), str(MAX_FILE_BYTES)]
    if isolate:
        unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
        if unshare is None:
            raise SandboxUnavailable(
                "the code sandbox needs the `unshare` command (util-linux) to run each program "
                "in its own user, mount, PID and network namespaces, and it is not installed; "
                "install util-linux, or opt out of isolation with isolate=False "
                "(iha eval --no-isolation), which does not protect the host from the programs"
            )
        prefix, work_dir = [unshare, *_UNSHARE], None
    else:
        if not _warned_unisolated:
            _warned_unisolated = True
            warnings.warn(
                "running generated programs without isolation (isolate=False): they can "
                "read, write and delete your files and reach the network",
                RuntimeWarning,
                stacklevel=2,
            )
        prefix, work_dir = [], tempfile.mkdtemp(prefix="iha-sandbox-")
    token = secrets.token_hex(16).encode()
    token_r, token_w = os.pipe()
    result_r, result_w = os.pipe()
    os.write(token_w, token)
    os.close(token_w)
    home = "/tmp" if isolate else work_dir
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    args = [*prefix, *harness, str(token_r), str(result_w)]
    try:
        with tempfile.TemporaryFile() as program, tempfile.TemporaryFile() as err:
            program.write(source.encode("utf-8", errors="surrogateescape"))
            program.seek(0)
            start = time.monotonic()
            proc = subprocess.Popen(
                args,
                cwd=work_dir or "/",
                env=env,
                stdin=program,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                pass_fds=(token_r, result_w),
            )
            os.close(result_w)
            result_w = -1
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
            seconds = time.monotonic() - start
            report = _read_all(result_r)
            err.seek(max(0, err.seek(0, os.SEEK_END) - _STDERR_TAIL))
            tail = err.read().decode("utf-8", errors="replace")
    finally:
        for fd in (token_r, result_r, result_w):
            if fd >= 0:
                os.close(fd)
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)
    if isolate and not report.startswith(_READY) and not timed_out:
        raise SandboxUnavailable(
                "the code sandbox could not isolate the program (it needs `unshare` and a "
                "kernel that lets this user create user, mount, PID and network namespaces, "
                f"and mount_setattr, Linux >= 5.12): {tail.strip()}; opt out of isolation "
                "with isolate=False (iha eval --no-isolation) only if you trust the programs"
            )
    passed = report == _READY + token and proc.returncode == 0 and not timed_out
    status = "passed" if passed else "timed out" if timed_out else "failed"
    return ExecutionResult(passed, status, seconds, tail)


def _read_all(fd: int) -> bytes:
    """Everything in the pipe ``fd`` now (its writers are gone or dead), at most 4 KiB."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while (chunk := os.read(fd, 4096)) and sum(map(len, chunks)) < 4096:
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's process group, then reap it. With isolation, ``unshare``'s death
    kills the namespace's process 1 and, with it, every process in the namespace."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_program(source: str, timeout: float = 10.0, isolate: bool = True) -> bool:
    """True iff ``source`` runs to its end without an exception within ``timeout`` seconds
    (wall clock) in the sandbox (module docstring)."""
    return execute(source, timeout=timeout, isolate=isolate).passed


def run_programs(
    sources: Sequence[str],
    timeout: float = 10.0,
    workers: int = 1,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    progress: Callable[[int, int], None] | None = None,
    isolate: bool = True,
) -> list[ExecutionResult]:
    """:func:`execute` every program, ``workers`` sandbox processes at a time, in order."""
    check_int("workers", workers, 1)
    results: list[ExecutionResult | None] = [None] * len(sources)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(execute, s, timeout, memory_bytes, isolate) for s in sources]
        for i, fut in enumerate(futures):
            results[i] = fut.result()
            if progress is not None:
                progress(i + 1, len(sources))
    return [r for r in results if r is not None]
