"""Loading and building the compiled band kernel: the build lock cannot outlive its holder.

Fault injection, as elsewhere in the suite, lives in the child processes these tests start: the
child replaces ``band._build_library`` (the one call to ``torch.utils.cpp_extension``) by a stub
that writes an already-built copy of the library slowly, in pieces, into the builder's private
folder, so that a SIGKILL lands while the build lock is held and the library half-written,
without paying the minute of a real compile. ``IHA_SLOW_TESTS=1`` adds the same kills during
real compiles. Each child uses its own ``IHA_EXTENSIONS_DIR`` under ``tmp_path``.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from iha.backends import band

SRC = str(Path(band.__file__).resolve().parents[2])
DISABLED = os.environ.get("IHA_BAND_KERNEL") == "0"
pytestmark = pytest.mark.skipif(DISABLED, reason="IHA_BAND_KERNEL=0: kernel not built")

# The child: optionally a stub build, a SIGTERM handler like the trainer's, then one attention
# call on the "band" backend checked against "blocked" (the pure-PyTorch backend).
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time, warnings
    from pathlib import Path
    import torch
    from iha.backends import band
    from iha.functional import interleaved_head_attention

    real, piece_delay, flag = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    if real != "-":
        def stub_build(name, work):
            print("stub: building", flush=True)
            data = Path(real).read_bytes()
            out = work / (name + ".so")
            step = len(data) // 4 + 1
            with open(out, "wb") as f:
                for i in range(0, len(data), step):
                    f.write(data[i : i + step])
                    f.flush()
                    time.sleep(piece_delay)
            torch.ops.load_library(str(out))
            return out
        band._build_library = stub_build
    got = []
    if flag == "trainer":  # first signal: a flag, as iha train's handler
        signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    print("stub: attention", flush=True)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 24, 8, dtype=torch.float64) for _ in range(3))
    a = torch.randn(2, 2, 2, dtype=torch.float64)
    R = torch.randn(2, 4, dtype=torch.float64)
    kw = dict(mask="flat", window=3, rope_theta=10000.0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = interleaved_head_attention(q, k, v, a, a, a, R, backend="band", **kw)
    ref = interleaved_head_attention(q, k, v, a, a, a, R, backend="blocked", **kw)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    print("kernel", band.kernel_available(), "signals", got, flush=True)
    for x in w:
        print("warning:", x.message, flush=True)
    """
)


@pytest.fixture(scope="module")
def real_library() -> Path:
    """The library built for this machine (``make test`` builds it at setup)."""
    if not band.kernel_available():
        pytest.skip(f"band kernel unavailable: {band.unavailable_reason()}")
    return band.library_path()


def _env(ext_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("IHA_KERNEL_BUILD_WAIT",)}
    env.update(PYTHONPATH=SRC, IHA_EXTENSIONS_DIR=str(ext_dir), OMP_NUM_THREADS="1", **extra)
    return env


def _start(ext_dir: Path, real: Path | str, piece_delay: float = 0.25, flag: str = "-", **env):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(real), str(piece_delay), flag],
        env=_env(ext_dir, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(proc: subprocess.Popen, stream: str, text: str, timeout: float) -> str:
    """Read ``stream`` of ``proc`` until a line holding ``text``; fails after ``timeout`` s."""
    pipe = getattr(proc, stream)
    deadline = time.monotonic() + timeout
    seen = []
    os.set_blocking(pipe.fileno(), False)
    while time.monotonic() < deadline:
        line = pipe.readline()
        if line:
            seen.append(line)
            if text in line:
                return "".join(seen)
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise AssertionError(f"no line with {text!r} within {timeout} s; got {''.join(seen)!r}")


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    for pipe in (proc.stdout, proc.stderr):
        os.set_blocking(pipe.fileno(), True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout} s: {out!r} {err!r}") from None
    return out, err


def _build_dir(ext_dir: Path) -> Path:
    return ext_dir / band.library_path().parent.name


def test_killed_builders_leave_no_lock_and_the_next_process_runs_attention(tmp_path, real_library):
    """Three children are killed (SIGKILL) at random points of a build that holds the lock; each
    next child must get the lock at once, and the last one runs attention on the kernel."""
    ext = tmp_path / "ext"
    rng = random.Random(int(os.environ.get("IHA_KILL_SEED", "0")))
    # the stub writes 4 pieces 0.25 s apart: 0-0.3 s lock held and nothing written, 0.3-0.9 s
    # the library half-written, ~1 s the library moved into place
    points = [rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.9), rng.uniform(0.9, 1.2)]
    for point in points:
        start = time.monotonic()
        child = _start(ext, real_library)
        _wait_for_line(child, "stdout", "stub: building", timeout=60)  # no wait on a lock
        assert time.monotonic() - start < 60
        time.sleep(point)
        child.send_signal(signal.SIGKILL)
        child.wait()
    start = time.monotonic()
    out, err = _finish(_start(ext, real_library), timeout=60)
    assert time.monotonic() - start < 60
    assert "kernel True" in out, (points, out, err)
    assert "waiting" not in err
    assert err.count(band.BUILD_MESSAGE) <= 1
    build_dir = _build_dir(ext)
    assert (build_dir / real_library.name).read_bytes() == real_library.read_bytes()
    assert not list(build_dir.glob(".build-*"))  # what the killed builders left is gone
    assert not (build_dir / "lock").exists()  # torch's own lock is never taken here


def test_what_a_killed_process_left_in_the_cache_does_not_hold_up_the_next(tmp_path, real_library):
    """A fresh ``lock`` file (``torch.utils.cpp_extension``'s, which a process killed while
    loading the kernel leaves behind) and a killed builder's folder next to a built library:
    the next process runs attention at once, without waiting."""
    ext = tmp_path / "ext"
    build_dir = _build_dir(ext)
    build_dir.mkdir(parents=True)
    lib = build_dir / real_library.name
    lib.write_bytes(real_library.read_bytes())
    digest = real_library.with_name(real_library.name + ".sha256")
    (build_dir / digest.name).write_bytes(digest.read_bytes())
    (build_dir / "lock").touch()
    (build_dir / ".build-killed").mkdir()
    start = time.monotonic()
    out, err = _finish(_start(ext, "-"), timeout=60)
    assert time.monotonic() - start < 60
    assert "kernel True" in out and band.BUILD_MESSAGE not in err, (out, err)


def test_a_build_prints_one_line_and_a_damaged_library_is_rebuilt(tmp_path, real_library):
    ext = tmp_path / "ext"
    build_dir = _build_dir(ext)
    build_dir.mkdir(parents=True)
    (build_dir / real_library.name).write_bytes(real_library.read_bytes()[:1000])  # cut short
    digest = real_library.with_name(real_library.name + ".sha256")  # the whole library's
    (build_dir / digest.name).write_bytes(digest.read_bytes())
    out, err = _finish(_start(ext, real_library, piece_delay=0.0), timeout=60)
    assert "kernel True" in out, (out, err)
    assert err.count(band.BUILD_MESSAGE) == 1, err
    assert (build_dir / real_library.name).read_bytes() == real_library.read_bytes()


def _hold_lock(ext: Path) -> int:
    build_dir = _build_dir(ext)
    build_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(build_dir / "build.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, str(os.getpid()).encode())
    return fd


def test_a_waiting_process_says_what_it_waits_for_and_falls_back_after_the_limit(
    tmp_path, real_library
):
    ext = tmp_path / "ext"
    fd = _hold_lock(ext)  # a live builder: this test process
    try:
        start = time.monotonic()
        child = _start(ext, real_library, IHA_KERNEL_BUILD_WAIT="3")
        out, err = _finish(child, timeout=60)
        elapsed = time.monotonic() - start
    finally:
        os.close(fd)
    assert child.returncode == 0, err
    assert f"waiting for process {os.getpid()}" in err and "build.lock" in err, err
    assert "kernel False" in out and "gave up after 3 s" in out, out  # ran "blocked", said why
    assert elapsed < 45


@pytest.mark.parametrize("handler", ["trainer", "default"])
def test_sigterm_while_waiting_is_not_held_up(tmp_path, real_library, handler):
    """A trainer's handler (first SIGTERM = finish the step) sees the signal and the step runs
    at once on "blocked"; without a handler the process terminates at once."""
    ext = tmp_path / "ext"
    fd = _hold_lock(ext)
    try:
        child = _start(ext, real_library, flag=handler)
        _wait_for_line(child, "stderr", "waiting for process", timeout=60)
        sent = time.monotonic()
        child.send_signal(signal.SIGTERM)
        out, err = _finish(child, timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        os.close(fd)
    assert elapsed < 15
    if handler == "trainer":
        assert child.returncode == 0, err
        assert "kernel False" in out and f"signals [{int(signal.SIGTERM)}]" in out, out
        assert "interrupted by signal" in out, out
    else:
        assert child.returncode == -signal.SIGTERM


@pytest.mark.skipif(
    os.environ.get("IHA_SLOW_TESTS") != "1",
    reason="three real compiles of the kernel (~1 min each); set IHA_SLOW_TESTS=1 to run",
)
def test_killed_real_compiles_leave_nothing_that_blocks_the_next_build(tmp_path):
    ext = tmp_path / "ext"
    rng = random.Random(int(os.environ.get("IHA_KILL_SEED", "0")))
    for point in (rng.uniform(0, 2), rng.uniform(5, 15), rng.uniform(15, 30)):
        child = _start(ext, "-")
        _wait_for_line(child, "stderr", band.BUILD_MESSAGE, timeout=60)
        time.sleep(point)
        child.send_signal(signal.SIGKILL)
        child.wait()
    out, err = _finish(_start(ext, "-"), timeout=600)
    assert "kernel True" in out and "waiting" not in err, (out, err)


def test_in_process_the_wait_is_bounded_and_a_signal_reaches_the_handler_then_ends_it(
    tmp_path, monkeypatch, capsys
):
    """The same checks without child processes: a second open file description of the lock
    conflicts with the first one even within one process."""
    import threading

    fd = _hold_lock(tmp_path / "ext")
    build_dir = _build_dir(tmp_path / "ext")
    try:
        monkeypatch.setenv("IHA_KERNEL_BUILD_WAIT", "1.5")
        start = time.monotonic()
        with pytest.raises(band.KernelBuildError, match="gave up after 2 s"):
            with band._build_lock(build_dir):
                pass
        assert 1.5 <= time.monotonic() - start < 10
        assert f"waiting for process {os.getpid()}" in capsys.readouterr().err
        monkeypatch.setenv("IHA_KERNEL_BUILD_WAIT", "60")
        got = []

        def flag(signum, frame):
            got.append(signum)

        previous = signal.signal(signal.SIGTERM, flag)
        try:
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
            start = time.monotonic()
            with pytest.raises(band.KernelBuildError, match="interrupted by signal"):
                with band._build_lock(build_dir):
                    pass
            assert time.monotonic() - start < 10 and got == [signal.SIGTERM]
            assert signal.getsignal(signal.SIGTERM) is flag  # the handler is back
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        os.close(fd)
    with band._build_lock(build_dir):  # released: taken at once
        assert (build_dir / "build.lock").read_text() == str(os.getpid())
