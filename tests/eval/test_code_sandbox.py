"""The code sandbox: each hazard fails its sample and harms nothing. Limits are small so the
tests are fast and safe on a shared machine."""

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from iha.eval import code
from iha.eval.code import execute, run_program, run_programs

SMALL_MEMORY = 256 * 1024**2


def test_correct_program_passes_and_wrong_one_fails():
    assert run_program("def f(x):\n    return x + 1\nassert f(1) == 2\n", timeout=5)
    assert not run_program("def f(x):\n    return x\nassert f(1) == 2\n", timeout=5)
    assert not run_program("def f(:\n", timeout=5)  # syntax error
    res = execute("raise ValueError('boom')", timeout=5)
    assert res.status == "failed" and "ValueError: boom" in res.stderr


def test_exit_counts_as_failure_as_in_the_reference_harness():
    assert not run_program("import sys\nsys.exit(0)\n", timeout=5)
    assert not run_program("exit()\n", timeout=5)
    assert not run_program("import os\nos._exit(0)\n", timeout=5)


def test_infinite_loop_times_out_on_the_wall_clock():
    start = time.monotonic()
    res = execute("while True:\n    pass\n", timeout=1.0)
    assert res.status == "timed out" and not res.passed
    assert time.monotonic() - start < 5
    # sleeping uses no CPU: only the wall-clock timeout stops it
    res = execute("import time\ntime.sleep(60)\n", timeout=1.0)
    assert res.status == "timed out" and res.seconds < 5


def test_fork_bomb_fails_and_leaves_no_process():
    # bounded bombs (at most 8 processes), so that a broken guard cannot hurt the machine: it
    # would show as a slow (timed out) run instead of an immediate failure
    bombs = [
        "import os, time\nfor _ in range(3):\n    os.fork()\ntime.sleep(30)\n",
        "import subprocess\nfor _ in range(3):\n    subprocess.Popen(['sleep', '30'])\n",
        "import os\nos.system('sleep 30 &')\n",
        "import multiprocessing, time\nfor _ in range(3):\n"
        "    multiprocessing.Process(target=time.sleep, args=(30,)).start()\n",
        "import os\nos.posix_spawn('/bin/sleep', ['sleep', '30'], {})\n",
    ]
    before = _sleepers()
    for source in bombs:
        start = time.monotonic()
        assert not run_program(source, timeout=3), source
        assert time.monotonic() - start < 3, source  # refused at once, not timed out
    assert _sleepers() <= before


def _sleepers(seconds: str = "30") -> int:
    """How many 'sleep <seconds>' processes run on the machine."""
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    count += f.read() == b"sleep\x00" + seconds.encode() + b"\x00"
            except OSError:
                pass
    return count


def test_huge_allocation_fails_with_memory_error():
    # 20 GB: refused by the address-space limit (bytearray only reserves pages, so even
    # without the limit this would not touch the machine's memory)
    res = execute("x = bytearray(20 * 1024**3)\n", timeout=5, memory_bytes=SMALL_MEMORY)
    assert res.status == "failed" and "MemoryError" in res.stderr
    # a smaller allocation that really writes its pages is stopped by the same limit
    res = execute("x = b'x' * (512 * 1024**2)\n", timeout=5, memory_bytes=SMALL_MEMORY)
    assert res.status == "failed" and "MemoryError" in res.stderr
    assert run_program("x = b'x' * (16 * 1024**2)\n", timeout=5)  # within the default limit


def test_deleting_files_outside_the_temp_dir_fails_and_deletes_nothing(tmp_path):
    victim_dir = tmp_path / "keep"
    victim_dir.mkdir()
    victim = victim_dir / "precious.txt"
    victim.write_text("do not delete")
    attempts = [
        f"import os\nos.remove({str(victim)!r})\n",
        f"import os\nos.unlink({str(victim)!r})\n",
        f"import pathlib\npathlib.Path({str(victim)!r}).unlink()\n",
        f"import shutil\nshutil.rmtree({str(victim_dir)!r})\n",
        f"import os\nos.rename({str(victim)!r}, {str(victim) + '.moved'!r})\n",
        f"import shutil\nshutil.move({str(victim)!r}, '/tmp')\n",
        f"import os\nos.chmod({str(victim)!r}, 0)\n",
    ]
    for source in attempts:
        assert not run_program(source, timeout=5), source
        assert victim.read_text() == "do not delete"
        assert oct(victim.stat().st_mode & 0o777) != "0o0"


def test_fresh_working_directory_no_stdin_and_cleanup():
    name = f"scratch-{uuid.uuid4().hex}.txt"
    source = textwrap.dedent(
        f"""
        import os, sys
        assert os.listdir(".") == []
        open({name!r}, "w").write("x")
        assert os.listdir(".") == [{name!r}]
        print(os.readlink("/proc/self/cwd"), file=sys.stderr)
        """
    )
    first = execute(source, timeout=5)
    assert first.passed, first.stderr
    second = execute(source, timeout=5)  # the scratch file of the first run is not there
    assert second.passed, second.stderr
    cwd = first.stderr.strip()
    assert not os.path.exists(os.path.join(cwd, name))  # nothing left on the host
    assert not run_program("input()\n", timeout=5)  # EOF: stdin is /dev/null
    assert run_program("import sys\nassert sys.stdin.read() == ''\n", timeout=5)


def test_run_programs_keeps_order_and_bad_arguments():
    sources = ["assert True", "assert False", "while True: pass", "x = 1"]
    results = run_programs(sources, timeout=1.0, workers=2)
    assert [r.status for r in results] == ["passed", "failed", "timed out", "passed"]
    with pytest.raises(ValueError, match="timeout"):
        run_program("x = 1", timeout=0)
    with pytest.raises(ValueError, match="workers"):
        run_programs(sources, workers=0)


# Escapes that the in-process guard alone does not stop when the evaluator runs as root:
# each program below passed, or harmed the host, with a sandbox made of a process, resource
# limits and the guard. The evaluator-side ones run the sandbox in a child process, so that a
# broken sandbox kills that child, not pytest.


def _evaluate_in_child(source: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``execute(source)`` in a fresh evaluator process; it prints the status."""
    script = (
        "import sys\nfrom iha.eval.code import execute\n"
        "print(execute(sys.stdin.read(), timeout=5).status, flush=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        input=source,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("where", ["tmp", "beside_the_tests"])
def test_files_outside_the_sandbox_cannot_be_overwritten_or_deleted(tmp_path, where):
    # /tmp is hidden under the sandbox's own tmpfs; a folder beside this file is not hidden,
    # only read-only
    base = tmp_path if where == "tmp" else Path(__file__).parent
    with tempfile.TemporaryDirectory(prefix="sandbox-victim-", dir=base) as folder:
        folder = Path(folder)
        victim = folder / "precious.txt"
        victim.write_text("do not touch")
        attempts = [
            f"open({str(victim)!r}, 'w').write('overwritten')\n",
            f"import posix\nposix.unlink({str(victim)!r})\n",
            f"import posix\nposix.rename({str(victim)!r}, {str(victim) + '.x'!r})\n",
            f"import posix\nposix.chmod({str(victim)!r}, 0)\n",
            f"open({str(folder / 'new.txt')!r}, 'w').write('x')\n",
        ]
        for source in attempts:
            assert not run_program(source, timeout=5), source
            assert victim.read_text() == "do not touch", source
            assert victim.stat().st_mode & 0o777 != 0, source
        assert sorted(p.name for p in folder.iterdir()) == ["precious.txt"]


def test_the_host_network_is_unreachable():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        source = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'hello')\n"
        )
        assert not run_program(source, timeout=5)
        with pytest.raises(TimeoutError):
            server.accept()  # nobody connected


def test_the_evaluators_environment_is_invisible():
    secret = uuid.uuid4().hex
    source = textwrap.dedent(
        f"""
        import os
        found = False
        for pid in [str(os.getppid())] + os.listdir("/proc"):
            try:
                found |= {secret!r}.encode() in open(f"/proc/{{pid}}/environ", "rb").read()
            except OSError:
                pass
        assert found
        """
    )
    done = _evaluate_in_child(source, {"IHA_TEST_SECRET": secret})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["failed"]


def test_the_evaluator_cannot_be_killed():
    done = _evaluate_in_child("import os, posix\nposix.kill(os.getppid(), 9)\n")
    assert done.returncode == 0, (done.returncode, done.stderr)  # the evaluator lived on
    assert done.stdout.split() in (["failed"], ["passed"])


def test_a_setsid_child_does_not_outlive_the_call():
    marker = str(31 + uuid.uuid4().int % 1000)
    source = textwrap.dedent(
        f"""
        import posix
        if posix.fork() == 0:
            posix.setsid()
            posix.execv("/bin/sleep", ["sleep", {marker!r}])
        """
    )
    run_program(source, timeout=5)
    time.sleep(0.2)
    assert _sleepers(marker) == 0


def test_fork_through_posix_is_refused_at_once():
    # bounded (8 processes at most) so that a broken sandbox cannot hurt the machine
    source = "import posix, time\nfor _ in range(3):\n    posix.fork()\ntime.sleep(30)\n"
    start = time.monotonic()
    res = execute(source, timeout=3)
    assert res.status == "failed" and time.monotonic() - start < 3, res


def test_exiting_with_status_zero_before_a_failing_assert_fails():
    for source in (
        "import posix\nposix._exit(0)\nassert False\n",
        "import os, posix\nposix.kill(os.getpid(), 9)\nassert False\n",
        "import signal, posix\nposix.kill(posix.getpid(), signal.SIGTERM)\nassert False\n",
        "import sys\nsys.stdout.flush()\nimport posix\nposix._exit(0)\n",
    ):
        res = execute(source, timeout=5)
        assert res.status == "failed", (source, res)


def test_threads_still_work_in_the_sandbox():
    source = textwrap.dedent(
        """
        import threading
        from concurrent.futures import ThreadPoolExecutor
        out = []
        t = threading.Thread(target=out.append, args=(1,))
        t.start(); t.join()
        with ThreadPoolExecutor(4) as pool:
            assert sum(pool.map(abs, range(-10, 0))) == 55
        assert out == [1]
        """
    )
    res = execute(source, timeout=10)
    assert res.passed, res.stderr


def test_missing_isolation_is_a_clear_error_and_opting_out_says_so(monkeypatch):
    monkeypatch.setattr(code.shutil, "which", lambda *a, **k: None)
    with pytest.raises(code.SandboxUnavailable, match="unshare.*isolate=False"):
        run_program("x = 1", timeout=5)
    monkeypatch.setattr(code, "_warned_unisolated", False)
    with pytest.warns(RuntimeWarning, match="without isolation"):
        assert run_program("x = 1", timeout=5, isolate=False)
    # the verdict still needs the harness's token
    assert not run_program("import posix\nposix._exit(0)\nassert False\n", 5, isolate=False)
    with pytest.raises(ValueError, match="isolate"):
        execute("x = 1", isolate="no")


def test_failed_isolation_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(code, "_UNSHARE", (*code._UNSHARE, "--no-such-option"))
    with pytest.raises(code.SandboxUnavailable, match="could not isolate.*unshare"):
        run_program("x = 1", timeout=5)


def test_isolation_works_for_an_evaluator_whose_venv_lives_under_tmp():
    # a checkout (and its .venv) under /tmp, which the sandbox hides: programs still run there
    # (on the base interpreter), and a failing one still fails
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        src = Path(code.__file__).resolve().parents[2]
        probe = (
            "from iha.eval.code import run_program\n"
            "print(run_program('assert sum([1, 2]) == 3', timeout=20),"
            " run_program('assert 1 == 2', timeout=20))"
        )
        import site

        paths = [str(src), *site.getsitepackages()]  # this environment's packages (torch)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == ["True", "False"]
