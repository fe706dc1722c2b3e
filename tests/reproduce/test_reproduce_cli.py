"""`iha reproduce synthetic --tiny` and `iha demo --tiny` end to end, and the plans."""

import json
from dataclasses import replace

import pytest
import torch

from iha.cli import main
from iha.reproduce.plans import MODES, get_plan, job_priority
from iha.reproduce.synthetic import load_records
from iha.reproduce.train import TrainSettings, train_run

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
    assert "| task | seeds | MHA | IHA | IHA - MHA (paired by seed) | paired t |" in out
    assert "| heads H |" not in out  # the demo runs what it says: MHA vs IHA, relations only
    table = [ln for ln in out.splitlines() if ln.startswith("| binary") or
             ln.startswith("| ternary")]  # fmt: skip
    assert len(table) == 2
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "2"  # seeds, not runs
        assert "p = " in cells[5] and ("not significant" in cells[5] or "significant" in cells[5])
    report = (tiny_run / "report.md").read_text()
    assert "`iha demo --tiny --workers 1" in report
    assert "simplicial" not in report.split("## Outcome")[1].split("\n")[2]


def test_demo_plan_keeps_the_experiments_and_runs_mha_and_iha_only():
    from iha.reproduce.plans import demo_plan

    plan = get_plan("quick", seeds=5)
    demo = demo_plan(plan)
    assert demo.experiments().keys() == {e.key for e in plan.relations}
    assert {j.kind for j in demo.jobs()} == {"mha", "iha"}
    assert not any(j.variant for j in demo.jobs())
    assert len(demo.jobs()) == 2 * 2 * 5
    assert set(demo.jobs()) <= set(plan.jobs())


def test_bad_worker_count_exits_2_and_names_the_option(tmp_path, capsys):
    assert main(["reproduce", "synthetic", "--tiny", "--workers", "0", "--out", str(tmp_path)]) == 2
    assert "--workers" in capsys.readouterr().out
    assert not (tmp_path / "runs.jsonl").exists()


def test_plans_follow_the_paper_where_they_can():
    paper = get_plan("paper")
    got = {(e.hops, e.m_min, e.m_max, e.p, e.train, e.val, e.test) for e in paper.relations}
    assert got == {(2, 6, 10, 0.325, 40_000, 5_000, 5_000), (3, 5, 8, 0.264, 40_000, 5_000, 5_000)}
    for exp in paper.relations:
        assert (exp.n_heads, exp.n_pseudo, exp.lrs, exp.patience) == (8, 8, (1e-3, 1e-4), 10)
        assert set(exp.models) == {"mha", "simplicial", "iha"}
    full = get_plan("full")
    assert len(full.seeds) >= 3
    for exp in full.relations:
        assert (exp.n_heads, exp.n_pseudo) == (8, 8)
        assert set(exp.models) == {"mha", "simplicial", "iha"}
    assert {(e.hops, e.p) for e in full.relations} == {(2, 0.325), (3, 0.264)}
    variants = {j.variant for j in full.jobs()}
    assert {"init_random", "mixing_lr_x10", "P2", "P4"} <= variants
    for mode in MODES:
        keys = [j.key for j in get_plan(mode).jobs()]
        assert len(keys) == len(set(keys))
    assert get_plan("quick", seeds=3).seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="mode"):
        get_plan("huge")
    with pytest.raises(ValueError, match="seeds"):
        get_plan("tiny", seeds=0)


def test_quick_is_the_default_mode_and_full_is_asked_for():
    import argparse

    from iha.cli.reproduce import add_arguments, command_line, mode_of
    from iha.cli.reproduce_lm import lm_command_line, lm_mode

    p = argparse.ArgumentParser()
    add_arguments(p)
    plain, full = p.parse_args(["synthetic"]), p.parse_args(["lm", "--full"])
    assert (mode_of(plain), lm_mode(plain)) == ("quick", "quick")
    assert (mode_of(full), lm_mode(full)) == ("full", "full")
    assert "--full" in command_line(full) and lm_command_line(full).startswith(
        "iha reproduce lm --full")
    assert mode_of(p.parse_args(["synthetic", "--tiny"])) == "tiny"
    with pytest.raises(SystemExit):
        p.parse_args(["synthetic", "--full", "--quick"])


def test_paper_mode_is_documented_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "synthetic", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("paper", "40,000 / 5,000 / 5,000", "patience 10", "--resume", "--device"):
        assert phrase in text


def test_jobs_run_main_comparisons_first_then_ablations_then_sweeps():
    plan = get_plan("full")
    order = sorted(plan.jobs(), key=lambda j: job_priority(plan, j))
    first = order[: 2 * 3]  # seed 0 at the first lr: both tasks, all three models
    assert {(j.experiment, j.kind, j.seed, j.lr) for j in first} == {
        (e, k, 0, 3e-3) for e in ("relations/binary", "relations/ternary")
        for k in ("mha", "simplicial", "iha")
    }  # fmt: skip
    groups = [job_priority(plan, j)[0] for j in order]
    assert groups == sorted(groups)
    assert order[-1].experiment.startswith("heads/")


def test_interrupted_job_resumes_from_its_checkpoint_to_the_same_result(tmp_path):
    exp = get_plan("tiny").relations[0]
    job = next(j for j in exp.jobs((0,)) if j.kind == "iha")
    exp = replace(exp, max_epochs=4, patience=4)

    class Interrupt(Exception):
        pass

    def stop_at_epoch_3(line: str) -> None:
        if line.startswith("epoch   3"):
            raise Interrupt

    task = exp.make_task(0)
    settings = TrainSettings(lr=1e-3, batch_size=16, max_epochs=4, patience=4)
    torch.manual_seed(0)
    straight = train_run(exp.make_model(job, task), task, settings, 0)
    ckpt = tmp_path / "checkpoint.pt"
    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        train_run(exp.make_model(job, task), task, settings, 0, log=stop_at_epoch_3,
                  checkpoint=ckpt)  # fmt: skip
    assert torch.load(ckpt, weights_only=False)["history"][-1]["epoch"] == 2
    torch.manual_seed(1)  # a different init: the checkpoint must override it
    resumed = train_run(exp.make_model(job, task), task, settings, 0, checkpoint=ckpt)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in straight["history"]], rel=1e-6)
    assert resumed["test"]["loss"] == pytest.approx(straight["test"]["loss"], rel=1e-6)


def test_resume_skips_finished_jobs_from_their_folders(tiny_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    (out / "runs.jsonl").unlink()  # only the per-job folders are left
    assert main(["reproduce", "synthetic", "--tiny", "--out", str(out), "--resume"]) == 0
    assert "0 jobs to run" in capsys.readouterr().out
    assert len(load_records(out / "runs.jsonl")) == len(get_plan("tiny").jobs())


def test_report_only_reports_finished_jobs_and_lists_the_missing_ones(tiny_run, tmp_path):
    import shutil

    out = tmp_path / "partial"
    shutil.copytree(tiny_run, out)
    (out / "runs.jsonl").unlink()
    gone = sorted((out / "jobs").glob("relations__ternary__simplicial*"))
    for folder in gone:
        (folder / "record.json").unlink()
    assert main(["reproduce", "synthetic", "--tiny", "--out", str(out), "--report-only"]) == 0
    report = (out / "report.md").read_text()
    total = len(get_plan("tiny").jobs())
    assert f"{len(gone)} of {total} jobs of this plan have not finished" in report
    assert "relations/ternary/simplicial" in report.split("## Not run yet")[1]
    assert not (out / "runs.jsonl").exists()  # nothing was trained


def test_busy_time_is_the_union_of_spans_and_their_peak_overlap():
    import random

    from iha.reproduce.report import busy_time

    rng = random.Random(0)
    for _ in range(50):
        spans = []
        for _ in range(rng.randint(0, 6)):
            start = rng.randint(0, 40)
            spans.append((float(start), float(start + rng.randint(0, 10))))
        # reference: unit grid cells covered by at least one span, and the most spans over a cell
        cells = [sum(s <= t and t + 1 <= f for s, f in spans) for t in range(60)]
        total, most = busy_time(spans)
        assert total == sum(c > 0 for c in cells)
        assert most >= max(cells, default=0)
        assert most <= len(spans)
    assert busy_time([(0.0, 10.0), (100.0, 110.0)]) == (20.0, 1)  # a pause does not count
    assert busy_time([(0.0, 10.0), (5.0, 8.0)]) == (10.0, 2)
