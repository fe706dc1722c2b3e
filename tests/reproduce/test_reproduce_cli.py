"""`iha reproduce synthetic --tiny` and `iha demo --tiny` end to end, and the plans."""

import json

import pytest

from iha.cli import main
from iha.reproduce.plans import MODES, get_plan
from iha.reproduce.synthetic import load_records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    assert main(["reproduce", "synthetic", "--tiny", "--out", str(out)]) == 0
    return out


def test_tiny_reproduction_writes_report_plots_and_one_record_per_job(tiny_run, capsys):
    plan = get_plan("tiny")
    records = load_records(tiny_run / "runs.jsonl")
    assert sorted(r["key"] for r in records) == sorted(j.key for j in plan.jobs())
    report = (tiny_run / "report.md").read_text()
    assert f"`iha reproduce synthetic --tiny --out {tiny_run}`" in report
    assert "Seeds: 0, 1" in report and "Wall time" in report and "Machine" in report
    assert "## Outcome" in report and report.count("does NOT") + report.count("beats") >= 2
    for name in ("relations.png", "heads_cpm3.png", "heads_polynomial.png"):
        data = (tiny_run / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert f"]({name})" in report
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert {s["experiment"]["name"] for s in summary["relations"]} == {"binary", "ternary"}


def test_every_relations_run_is_paired_by_seed_and_early_stopping_is_recorded(tiny_run):
    records = load_records(tiny_run / "runs.jsonl")
    rel = [r for r in records if r["experiment"].startswith("relations/")]
    by = {(r["experiment"], r["kind"], r["lr"], r["seed"]) for r in rel}
    for exp, kind, lr, seed in by:
        assert (exp, "mha" if kind == "iha" else "iha", lr, seed) in by
    for r in rel:
        assert 1 <= r["best_epoch"] <= r["epochs"] <= r["settings"]["max_epochs"]
        assert len(r["history"]) == r["epochs"]


def test_demo_resumes_the_tiny_run_and_prints_side_by_side_tables(tiny_run, capsys):
    capsys.readouterr()
    assert main(["demo", "--tiny", "--workers", "1", "--out", str(tiny_run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "0 jobs to run" in out  # everything was reused
    assert "| task | MHA | IHA | IHA - MHA (paired) |" in out
    assert "| heads H | MHA | IHA (P = H) |" in out
    assert "Outcome:" in out


def test_bad_worker_count_exits_2_and_names_the_option(tmp_path, capsys):
    assert main(["reproduce", "synthetic", "--tiny", "--workers", "0", "--out", str(tmp_path)]) == 2
    assert "--workers" in capsys.readouterr().out
    assert not (tmp_path / "runs.jsonl").exists()


def test_plans_follow_the_paper_where_they_can():
    full = get_plan("full")
    assert len(full.seeds) >= 3
    for exp in full.relations:
        assert (exp.n_heads, exp.n_pseudo, exp.lrs) == (8, 8, (1e-3, 1e-4))
    assert {(e.hops, e.p) for e in full.relations} == {(2, 0.325), (3, 0.264)}
    for mode in MODES:
        keys = [j.key for j in get_plan(mode).jobs()]
        assert len(keys) == len(set(keys))
    assert get_plan("quick", seeds=3).seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="mode"):
        get_plan("huge")
    with pytest.raises(ValueError, match="seeds"):
        get_plan("tiny", seeds=0)
