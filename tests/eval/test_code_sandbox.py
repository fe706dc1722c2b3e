"""The code sandbox: each hazard fails its sample and harms nothing. Limits are small so the
tests are fast and safe on a shared machine."""

import os
import textwrap
import time

import pytest

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


def _sleepers() -> int:
    """How many 'sleep 30' processes run on the machine."""
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    count += f.read() == b"sleep\x0030\x00"
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


def test_fresh_working_directory_no_stdin_and_cleanup(tmp_path):
    report = tmp_path / "cwd.txt"
    source = textwrap.dedent(
        f"""
        import os
        assert os.listdir(".") == []
        open("scratch.txt", "w").write("x")
        with open({str(report)!r}, "w") as f:
            f.write(os.readlink("/proc/self/cwd"))
        """
    )
    assert run_program(source, timeout=5)
    first = report.read_text()
    assert run_program(source, timeout=5)  # the scratch file of the first run is not there
    second = report.read_text()
    assert first != second
    assert not os.path.exists(first) and not os.path.exists(second)  # removed afterwards
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
