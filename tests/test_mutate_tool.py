"""The mutation-testing tool itself: every catalogue snippet applies exactly once to the current
sources, and one cheap mutant is killed end to end (the full catalogue is not run here)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mutate  # noqa: E402


def test_every_mutant_applies_to_exactly_one_place():
    assert mutate.check_catalogue() == []
    assert {m.area for m in mutate.CATALOGUE} >= {
        "core", "cache", "backends", "generation", "metrics", "checkpoint", "trainer"
    }  # fmt: skip


def test_a_mutant_runs_on_a_copy_is_killed_and_leaves_the_tree_alone(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(mutate.SRC, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    mutant = next(m for m in mutate.CATALOGUE if m.id == "metrics-flops-long-window")
    before = (mutate.SRC / "iha" / mutant.path).read_text()
    path, original = mutate.apply(mutant, src)
    assert mutant.new in path.read_text() and original == before
    verdict, _ = mutate.run_tests(
        (mutate.T_GUARD_CG + "::test_attention_pairs_for_any_window_including_longer_than_the"
         "_sequence",),
        src, timeout=300,
    )  # fmt: skip
    assert verdict == "killed"
    path.write_text(original)
    verdict, _ = mutate.run_tests(
        (
            mutate.T_GUARD_CG + "::test_paper_cost_with_a_window_longer"
            "_than_the_sequence_is_the_global_cost",
        ),
        src,
        timeout=300,
    )
    assert verdict == "survived"  # unmutated: the same tests pass
    assert (mutate.SRC / "iha" / mutant.path).read_text() == before


def test_an_unknown_mutant_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        mutate.main(["--only", "no-such-mutant"])
    assert exc.value.code == 2 and "unknown mutant" in capsys.readouterr().err
