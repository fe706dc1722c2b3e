"""`iha reproduce lm`: equal-FLOP step counts, learning-rate choice, paired tables, end to end."""

import json
import math

import pytest

from iha.cli import main
from iha.models import DecoderLM, ModelConfig
from iha.reproduce.lm import (
    RESULT_FILE,
    chosen_lr,
    flop_accounting,
    summarise_experiment,
    verdicts,
)
from iha.reproduce.lm_plans import get_lm_plan


def test_every_variant_gets_the_global_models_training_flops():
    plan = get_lm_plan("full")
    for exp in plan.experiments:
        table = flop_accounting(exp)
        tokens = exp.batch_size * exp.seq_len
        budget = None
        for variant, row in table.items():
            # independent of the accounting: the built model's own counter, times 3 for training
            cfg = ModelConfig.from_dict(exp.model_config(variant, row_vocab(exp)))
            per_step = 3 * DecoderLM(cfg).flops_per_token(exp.seq_len) * tokens
            if variant == "global":
                budget = per_step * exp.budget_steps
            assert abs(row["steps"] * per_step - budget) <= per_step / 2 + 1e-6
        assert table["iha"]["schedule"].startswith("IIIIG")
        assert table["global_local"]["schedule"].startswith("LLLLG")
        # P = 2 and W = N / (2 P^2): the paper's formula charges the schedule 3/5 of global
        if exp.seq_len % (2 * exp.num_pseudo**2) == 0:
            assert table["iha"]["paper_attn_vs_global"] == pytest.approx(0.6)


def row_vocab(exp):
    from iha.reproduce.lm import vocab_size

    return vocab_size(exp)


def _record(exp, variant, lr, seed, acc, val_acc=None):
    return {"experiment": exp.name, "variant": variant, "lr": lr, "seed": seed,
            "steps": 1, "train_flops": 1.0, "run_dir": f"{variant}{seed}",
            "val_losses": {"1": 2.0, "2": 1.0},
            "val": {"loss": 1.0, "pos_acc": acc if val_acc is None else val_acc},
            "test": {str(p): {"pos_acc": acc, "loss": 1.0} for p in exp.test_points}}  # fmt: skip


def test_learning_rate_is_chosen_on_seed_zero_validation_only():
    exp = get_lm_plan("tiny").experiments[0]
    records = [
        _record(exp, "iha", 1e-3, 0, acc=0.9, val_acc=0.2),
        _record(exp, "iha", 3e-3, 0, acc=0.1, val_acc=0.6),
        _record(exp, "iha", 1e-3, 1, acc=0.9, val_acc=0.99),  # another seed: ignored
    ]
    assert chosen_lr(exp, records, "iha") == 3e-3
    assert chosen_lr(exp, records, "global") is None


def test_paired_differences_and_verdicts_follow_the_seeds():
    exp = get_lm_plan("tiny").experiments[0]
    records = []
    for seed, (g, i) in enumerate([(0.30, 0.50), (0.40, 0.61), (0.35, 0.54)]):
        records += [_record(exp, "global", 1e-3, seed, g), _record(exp, "iha", 1e-3, seed, i)]
    s = summarise_experiment(exp, records, (0, 1, 2))
    point = str(exp.test_points[0])
    diff = s["rows"]["iha"]["vs_global"][point]
    assert diff.n == 3 and diff.mean == pytest.approx((0.2 + 0.21 + 0.19) / 3)
    # t(0.975, 2) = 4.303; sample std of (0.20, 0.21, 0.19) is 0.01
    assert diff.half_width == pytest.approx(4.3027 * 0.01 / math.sqrt(3), rel=1e-3)
    assert s["rows"]["global"]["test"][point].mean == pytest.approx(0.35)
    assert "iha better than global" in verdicts([s])[0]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    assert main(["reproduce", "lm", "--tiny", "--out", str(out)]) == 0
    return out


def test_tiny_plan_writes_one_run_directory_per_job_and_a_report(tiny_lm):
    plan = get_lm_plan("tiny")
    results = sorted(tiny_lm.glob(f"runs/**/{RESULT_FILE}"))
    per_exp = len(plan.experiments[0].variants) * (len(plan.experiments[0].lrs) + 1)
    assert len(results) == per_exp * len(plan.experiments)
    for path in results:
        record = json.loads(path.read_text())
        run = path.parent
        assert (run / "metrics.jsonl").is_file() and (run / "config.toml").is_file()
        assert record["reason"] == "done" and record["steps"] >= 1
        assert record["train_flops"] > 0 and record["test"]
    report = (tiny_lm / "report.md").read_text()
    assert f"`iha reproduce lm --tiny --out {tiny_lm}`" in report
    assert "paper's formula" in report and "causal count" in report and "## Outcome" in report
    for exp in plan.experiments:
        png = tiny_lm / "plots" / exp.name.replace("/", "_") / "loss_vs_flops.png"
        assert png.read_bytes().startswith(b"\x89PNG")


def test_rerun_needs_resume_and_then_trains_nothing(tiny_lm, capsys):
    capsys.readouterr()
    assert main(["reproduce", "lm", "--tiny", "--out", str(tiny_lm)]) == 2
    assert "--resume" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in tiny_lm.glob(f"runs/**/{RESULT_FILE}")}
    assert main(["reproduce", "lm", "--tiny", "--out", str(tiny_lm), "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert main(["reproduce", "lm", "--tiny", "--out", str(tiny_lm), "--report-only"]) == 0


def test_bad_options_exit_2_naming_them(tmp_path, capsys):
    assert main(["reproduce", "lm", "--tiny", "--workers", "0", "--out", str(tmp_path)]) == 2
    assert "--workers" in capsys.readouterr().out
    assert main(["reproduce", "lm", "--mode", "paper", "--out", str(tmp_path)]) == 2
    assert "mode" in capsys.readouterr().out


def test_old_criterion_compares_a_whole_interval_back():
    from iha.reproduce.audit import convergence

    # an extra evaluation one step after the last interval must not count as flat
    still_falling = {40: 3.0, 80: 2.8, 120: 2.6, 160: 2.5, 195: 2.4, 196: 2.4}
    assert convergence(still_falling)["converged"] is False
    assert convergence(still_falling)["last_improvement"] == pytest.approx(0.1 / 2.5)
    flat = {"50": 2.0, "100": 1.5, "150": 1.499}
    assert convergence(flat)["converged"] is True
    assert convergence({10: 1.0})["converged"] is None
    # a solved recall task: a large relative but negligible absolute gain counts as flat
    solved = {50: 0.9, 100: 0.004, 150: 0.002}
    assert convergence(solved)["converged"] is True
    assert convergence({50: 0.9, 100: 0.5, 150: 0.2})["converged"] is False


def test_quick_and_full_plans_cover_every_variant_task_and_longer_niah_contexts():
    from iha.models.config import VARIANTS

    for mode in ("quick", "full"):
        plan = get_lm_plan(mode)
        assert len(plan.seeds) >= 3
        assert {e.task for e in plan.experiments} == {"mqar", "niah", "text"}
        for exp in plan.experiments:
            assert set(exp.variants) == set(VARIANTS)
            if exp.task == "niah":
                assert exp.test_points[0] == exp.seq_len and max(exp.test_points) > exp.seq_len
        names = [e.name for e in plan.experiments]
        assert len(names) == len(set(names))
    full = get_lm_plan("full")
    assert all(len(e.lrs) >= 2 for e in full.experiments)
    assert len([e for e in full.experiments if e.task == "mqar"]) >= 2


def test_quick_mode_runs_end_to_end(tmp_path):
    # The whole --quick plan (54 runs; 2 min 40 s on one thread of a quiet 2-core machine).
    out = tmp_path / "quick"
    assert main(["reproduce", "lm", "--quick", "--workers", "2", "--out", str(out)]) == 0
    plan = get_lm_plan("quick")
    jobs = sum(len(e.variants) * (len(e.lrs) + len(plan.seeds) - 1) for e in plan.experiments)
    assert len(list(out.glob(f"runs/**/{RESULT_FILE}"))) == jobs
    summary = json.loads((out / "summary.json").read_text())
    for s in summary:
        assert all(row["n_seeds"] == len(plan.seeds) for row in s["rows"].values())
