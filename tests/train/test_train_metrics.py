"""Progress output: a redrawn bar on a terminal, periodic plain lines elsewhere."""

from __future__ import annotations

import io

from iha.train.metrics import Progress, format_count, format_duration


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_shows_loss_lr_speed_and_eta():
    out = _Tty()
    p = Progress(total=10, start=0, mode="auto", stream=out)
    p.update(10, loss=1.23456, lr=3e-4, tokens_per_s=12345.0)
    p.close()
    text = out.getvalue()
    assert text.startswith("\r[########################]")
    for part in ("step 10/10", "loss 1.2346", "lr 3.00e-04", "12.3k tok/s", "ETA 0:00:00"):
        assert part in text


def test_plain_lines_every_n_steps_when_not_a_terminal():
    out = io.StringIO()
    p = Progress(total=6, start=0, mode="auto", every=3, stream=out)
    for step in range(1, 7):
        p.update(step, loss=2.0, lr=1e-3, tokens_per_s=10.0)
    lines = out.getvalue().splitlines()
    assert [x.split()[1] for x in lines] == ["3/6", "6/6"]
    assert "\r" not in out.getvalue()


def test_number_formats():
    assert format_count(1_234_567) == "1.23M" and format_count(12) == "12"
    assert format_duration(3725) == "1:02:05"
