"""``iha eval``'s output directory: one evaluation at a time (a lock held from loading to the
last write), and results written whole, so that an error leaves earlier results as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from iha.cli import main
from iha.eval import runner
from iha.train.lock import RunLock

from .conftest import FIXTURES


def _gsm8k(run, out) -> list[str]:
    return [
        "eval", "gsm8k", str(run), "--data", str(FIXTURES / "gsm8k_tiny.jsonl"), "--limit", "1",
        "--temperature", "0", "--max-new-tokens", "2", "--out", str(out), "--device", "cpu",
    ]  # fmt: skip


def test_a_second_evaluation_of_the_same_out_is_refused_and_writes_nothing(
    tiny_run, tmp_path, capsys
):
    out = tmp_path / "out"
    holder = subprocess.Popen(  # another process holds the directory's lock
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from iha.train.lock import RunLock
            RunLock({str(out)!r}, user="evaluation", option="--out").acquire()
            print("held", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_gsm8k(tiny_run, out)) == 2
        err = capsys.readouterr().err
        assert f"output directory {str(out)!r} is in use by another evaluation process" in err
        assert f"pid {holder.pid}" in err and "choose another --out" in err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing else written
    finally:
        holder.kill()
        holder.wait()
    assert main(_gsm8k(tiny_run, out)) == 0  # the holder gone, the same command runs
    assert (out / "gsm8k.json").is_file()
    assert main(_gsm8k(tiny_run, out)) == 0  # and the lock was given back after the run
    lock = RunLock(out)
    lock.acquire()  # free now for anyone
    lock.release()


def test_a_failing_write_leaves_the_earlier_results_as_they_were(tmp_path, monkeypatch):
    class Result(runner.SampledResult):
        def __init__(self, metric: float, broken: bool = False) -> None:
            self.metric, self.broken, self.problems = metric, broken, [{"i": 1}, {"i": 2}]

        def summary(self):
            return {"metric": self.metric}

        def markdown(self):
            if self.broken:
                raise RuntimeError("the table cannot be written")
            return f"metric {self.metric}"

    paths = runner.write_results(tmp_path, "x", Result(0.5))
    before = {k: p.read_text() for k, p in paths.items()}
    assert json.loads(before["json"]) == {"metric": 0.5} and before["markdown"] == "metric 0.5\n"
    with pytest.raises(RuntimeError, match="cannot be written"):
        runner.write_results(tmp_path, "x", Result(0.9, broken=True))
    assert {k: p.read_text() for k, p in paths.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.md", "x.samples.jsonl"]
