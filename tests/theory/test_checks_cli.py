"""The theory table and the ``iha theory`` command."""

from __future__ import annotations

import pytest

from iha import cli
from iha.theory import checks
from iha.theory.checks import CheckResult, format_table, run_all_checks


def test_small_run_has_no_failures_and_flags_the_papers_slips() -> None:
    rows = run_all_checks(polynomial_k=(4,), cpm3_n_max=(4, 5), n_sequences=16)
    assert rows and all(r.status in checks.STATUSES for r in rows)
    assert not [r for r in rows if r.failed]
    differs = [r.claim for r in rows if r.status == "DIFFERS"]
    assert len(differs) == 2  # G > 2M order sensitivity; alpha_V = (I, I) strictness example
    table = format_table(rows)
    assert table.count("\n") == len(rows) + 1 and "| claim | paper | ours | status |" in table


def test_polynomial_cannot_row_only_where_the_claim_applies() -> None:
    claims = [r.claim for r in checks.polynomial_checks(k=3, n_tokens=6)]
    assert not any("cannot" in c for c in claims)
    claims = [r.claim for r in checks.polynomial_checks(k=5, n_tokens=8)]
    assert any("cannot" in c for c in claims)


def test_cli_theory_is_registered_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.SUBCOMMANDS["theory"][0] == "iha.cli.theory"
    code = cli.main(["theory", "--polynomial-k", "4", "--cpm3-n-max", "3", "--sequences", "4"])
    out = capsys.readouterr().out
    assert code == 0 and "| claim | paper | ours | status |" in out and "0 failed" in out


def test_cli_theory_exits_nonzero_when_a_check_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(checks, "run_all_checks", lambda **kw: [CheckResult("c", "p", "o", "FAIL")])
    assert cli.main(["theory"]) == 1
    assert "1 failed" in capsys.readouterr().out
