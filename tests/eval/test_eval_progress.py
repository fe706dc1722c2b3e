"""``iha eval``'s progress lines: count, elapsed time and the time left at the rate of the
generation this process ran (work resumed from a progress file arrives at once and is left out
of the rate); one line per update in a log, one rewritten line on a terminal."""

from __future__ import annotations

import io

import pytest

from iha.cli.eval import _duration, _Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_duration_spells_minutes_and_hours():
    assert [_duration(x) for x in (0, 59.6, 61, 3599, 3600, 5 * 3600 + 7 * 60 + 30)] == [
        "0m00s", "1m00s", "1m01s", "59m59s", "1h00m", "5h07m",
    ]  # fmt: skip


def test_time_left_comes_from_the_rate_of_this_process_not_from_resumed_work():
    clock, out = Clock(), io.StringIO()
    progress = _Progress(out, clock)
    clock.now += 0.01
    progress(40, 200)  # resumed: arrives at once
    clock.now += 0.01
    progress(48, 200)  # resumed too
    clock.now += 100.0
    progress(56, 200)  # 8 generated in 100 s: 144 left at 0.08 per s = 1800 s
    clock.now += 100.0
    progress(64, 200)  # 16 in 200 s: 136 left = 1700 s
    clock.now += 50.0
    progress(200, 200)
    lines = out.getvalue().splitlines()
    assert lines == [
        "40/200 generations, 0m00s elapsed",
        "48/200 generations, 0m00s elapsed",
        "56/200 generations, 1m40s elapsed, about 30m00s left",
        "64/200 generations, 3m20s elapsed, about 28m20s left",
        "200/200 generations, 4m10s elapsed",
    ]


def test_a_fresh_run_counts_from_the_start_and_a_terminal_gets_one_rewritten_line():
    clock, out = Clock(), Tty()
    progress = _Progress(out, clock)
    clock.now += 30.0
    progress(8, 32)  # 8 in 30 s: 24 left = 90 s
    clock.now += 30.0
    progress(32, 32)
    assert out.getvalue() == (
        "\r8/32 generations, 0m30s elapsed, about 1m30s left\r32/32 generations, 1m00s elapsed\n"
    )


@pytest.mark.parametrize("stream", [io.StringIO(), Tty()])
def test_every_update_is_flushed(stream, monkeypatch):
    flushed = []
    monkeypatch.setattr(stream, "flush", lambda: flushed.append(True))
    _Progress(stream, Clock())(1, 2)
    assert flushed
