"""The continued-training study of docs/results/real-model/finetune.py on a tiny Llama: the
stdlib split, the FLOP model against counted weights, and every arm through ``iha train``
(a smoke run of two steps each) and the held-out loss."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "results" / "real-model" / "finetune.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("finetune", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["finetune"] = module  # the factory "finetune:original_factory" imports it
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("finetune", None)


TINY = dict(
    vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    tie_word_embeddings=True,
)  # fmt: skip


def test_split_is_by_file_deterministic_and_skips_tests_and_site_packages(study, tmp_path):
    root = tmp_path / "lib"
    names = [f"pkg{i // 10}/mod{i}.py" for i in range(60)]
    names += ["site-packages/x.py", "test/test_a.py", "pkg0/tests/t.py"]
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_text(f"# {n}\nx = 1\n")
    summary = study.prepare(root, tmp_path / "data")
    seen = {}
    for split in ("train", "val", "test"):
        for line in (tmp_path / "data" / f"{split}.jsonl").open():
            d = json.loads(line)
            assert d["path"] not in seen  # each file in one split only
            seen[d["path"]] = split
            assert d["text"] == (root / d["path"]).read_text()
    assert set(seen) == set(names[:60])
    assert sum(summary[s]["files"] for s in ("train", "val", "test")) == 60
    assert all(v == study.split_of(k) for k, v in seen.items())
    assert {study.split_of(n) for n in names[:60]} == {"train", "val", "test"}


def test_flops_per_token_counts_the_models_own_weights(study):
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY))
    weights = sum(p.numel() for n, p in model.named_parameters() if "norm" not in n)
    # independent: 2 FLOPs per weight (tied embedding counted once: the output projection)
    # plus causal attention: scores and values over an average context of seq_len / 2
    hd, n = 32 // 4, 64
    attention = 2 * 4 * 4 * hd * (n / 2) / 2 * 2  # QK^T and AV, 2 FLOPs per multiply-add
    orig = study.flops_per_token("original", n, TINY)
    assert orig == pytest.approx(3 * (2 * weights + attention))
    conv = study.flops_per_token("iha-all", n, TINY)
    assert conv - orig == pytest.approx(3 * attention * 3)  # P = 2: attention x 4
    assert study.flops_per_token("iha-mixing", n, TINY) == pytest.approx(conv * 2 / 3)


def test_every_arm_trains_through_iha_train_and_scores_held_out_loss(study, tmp_path, monkeypatch):
    from iha.cli import main
    from iha.hf import convert

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY))
    model.save_pretrained(tmp_path / "orig")
    convert(model, num_pseudo_heads=2)
    model.save_pretrained(tmp_path / "conv")
    monkeypatch.setattr(study, "ORIGINAL", str(tmp_path / "orig"))
    monkeypatch.setattr(study, "CONVERTED", str(tmp_path / "conv"))
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val", "test"):
        with (data / f"{split}.jsonl").open("w") as f:
            for i in range(12):
                f.write(json.dumps({"text": f"def f{i}(x):\n    return x + {i}\n" * 3}) + "\n")
    budget = study.flops_per_token("original", 16) * 16 * 2 * 2  # two steps of the original
    losses = {}
    for arm in study.ARMS:
        run = tmp_path / arm
        got = study.write_config(arm, 1e-3, 0, budget, data, run, 16, 2, tokenizer="byte")
        assert got["steps"] == round(budget / (study.flops_per_token(arm, 16) * 32))
        cfg = run / "config.toml"
        assert main(["train", str(cfg), "--set", "train.val_batches=1"]) == 0
        losses[arm] = study.test_loss(run, data, 16, 256)["test_loss"]
        assert math.isfinite(losses[arm])
    assert (
        study.write_config("iha-mixing", 1e-3, 0, budget, data, tmp_path / "m", 16, 2)["steps"]
        > study.write_config("iha-all", 1e-3, 0, budget, data, tmp_path / "a", 16, 2)["steps"]
    )


def test_paired_interval_matches_the_t_distribution(study):
    scipy_stats = pytest.importorskip("scipy.stats")
    diffs = [0.1, -0.05, 0.2, 0.07]
    got = study.paired_interval(diffs)
    low, high = scipy_stats.t.interval(
        0.95, len(diffs) - 1, loc=sum(diffs) / 4, scale=scipy_stats.sem(diffs)
    )
    assert got["low"] == pytest.approx(low, abs=1e-3) and got["high"] == pytest.approx(
        high, abs=1e-3
    )
    for sample in (diffs, [0.01, 0.012, 0.009], [-0.3, 0.1, -0.2, -0.25, -0.1]):
        want = scipy_stats.ttest_1samp(sample, 0.0).pvalue
        assert study.paired_interval(sample)["p"] == pytest.approx(want, rel=1e-6)


def test_detectable_effect_has_the_asked_power_by_the_noncentral_t(study):
    scipy_stats = pytest.importorskip("scipy.stats")
    for sd, n in [(0.02, 3), (1.0, 5), (0.5, 10)]:
        effect = study.detectable_effect(sd, n)
        df, tc = n - 1, scipy_stats.t.ppf(0.975, n - 1)
        delta = effect * n**0.5 / sd
        power = scipy_stats.nct.sf(tc, df, delta) + scipy_stats.nct.cdf(-tc, df, delta)
        assert power == pytest.approx(0.8, abs=2e-3)


def test_report_pairs_runs_by_seed_and_puts_flops_on_the_curves(study, tmp_path, monkeypatch):
    original = tmp_path / "orig-model"  # the FLOP model reads the original's config.json
    original.mkdir()
    (original / "config.json").write_text(json.dumps(TINY))
    monkeypatch.setattr(study, "ORIGINAL", str(original))
    for arm, seed, loss in [("original", 0, 2.0), ("original", 1, 2.1), ("iha-all", 0, 1.9),
                            ("iha-all", 1, 2.05), ("iha-mixing", 0, 2.2)]:  # fmt: skip
        run = tmp_path / arm / f"lr1e-5-seed{seed}"
        run.mkdir(parents=True)
        rows = [
            {"split": "train", "step": 1, "loss": 3.0},
            {"split": "val", "step": 2, "loss": loss},
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "test.json").write_text(json.dumps({"test_loss": loss}))
    got = study.report(tmp_path, 64, 2)
    per_step = study.flops_per_token("iha-all", 64) * 64 * 2
    assert got["runs"]["iha-all/lr1e-5-seed0"]["val_curve"] == [[2 * per_step, 1.9]] or got["runs"][
        "iha-all/lr1e-5-seed0"
    ]["val_curve"] == [(2 * per_step, 1.9)]
    pair = got["paired_test_loss_differences"]["iha-all - original @ lr 1e-5"]
    assert pair["mean"] == pytest.approx(((1.9 - 2.0) + (2.05 - 2.1)) / 2)
    assert pair["n"] == 2
    mixing = got["paired_test_loss_differences"]["iha-mixing - original @ lr 1e-5"]
    assert mixing["mean"] == pytest.approx(0.2) and math.isnan(mixing["low"])


def _finished(run: Path, val_losses, test_loss=None, solved=None):
    """A finished run directory: metrics.jsonl with these validation losses, test.json and
    (``solved``: task -> bool) a greedy HumanEval result."""
    run.mkdir(parents=True)
    rows = [{"split": "val", "step": 10 * (i + 1), "loss": v} for i, v in enumerate(val_losses)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loss = val_losses[-1] if test_loss is None else test_loss
    (run / "test.json").write_text(json.dumps({"test_loss": loss}))
    if solved is not None:
        (run / "humaneval").mkdir()
        (run / "humaneval" / "humaneval.json").write_text("{}")
        lines = [json.dumps({"task_id": t, "correct": [ok]}) for t, ok in solved.items()]
        (run / "humaneval" / "humaneval.samples.jsonl").write_text("\n".join(lines) + "\n")


def test_rate_name_spells_rates_as_the_run_directories_do(study):
    assert [study.rate_name(x) for x in (1e-5, 3e-5, 1e-4, 3e-6)] == [
        "1e-5",
        "3e-5",
        "1e-4",
        "3e-6",
    ]
    assert all(float(study.rate_name(x)) == pytest.approx(x) for x in study.LADDER)


def test_choose_extends_the_grid_until_the_best_rate_is_bracketed(study, tmp_path):
    arm = tmp_path / "original"
    _finished(arm / "lr1e-5-seed0", [2.5, 2.4])
    _finished(arm / "lr3e-5-seed0", [2.5, 2.3])
    _finished(arm / "lr1e-4-seed0", [2.5, 2.2])  # best at the top edge
    _finished(arm / "lr1e-3-seed1", [2.5, 1.0])  # another seed: not part of the choice
    (arm / "lr3e-3-seed0").mkdir()  # unfinished (no test.json): not part of the choice
    got = study.choose(tmp_path, "original")
    assert got["next"] == "3e-4" and got["chosen"] is None
    _finished(arm / "lr3e-4-seed0", [2.5, 2.25])  # worse: 1e-4 now has a worse neighbour above
    got = study.choose(tmp_path, "original")
    assert got == {
        "arm": "original", "seed": 0, "chosen": "1e-4", "next": None, "bracketed": True,
        "tried": {"1e-5": 2.4, "3e-5": 2.3, "1e-4": 2.2, "3e-4": 2.25},
    }  # fmt: skip
    low = tmp_path / "iha-all"
    _finished(low / "lr3e-6-seed0", [2.0])
    _finished(low / "lr1e-5-seed0", [2.1])
    assert study.choose(tmp_path, "iha-all")["next"] == "1e-6"  # best at the bottom edge
    _finished(low / "lr1e-6-seed0", [1.9])  # still falling: the ladder ends there
    got = study.choose(tmp_path, "iha-all")
    assert got["chosen"] == "1e-6" and not got["bracketed"] and got["next"] is None
    assert study.choose(tmp_path, "iha-mixing")["chosen"] is None  # nothing finished
    with pytest.raises(ValueError, match="arm="):
        study.choose(tmp_path, "mixing")


def test_report_compares_each_arm_at_its_own_rate_with_humaneval_mcnemar(
    study, tmp_path, monkeypatch
):
    scipy_stats = pytest.importorskip("scipy.stats")
    original = tmp_path / "orig-model"
    original.mkdir()
    (original / "config.json").write_text(json.dumps(TINY))
    monkeypatch.setattr(study, "ORIGINAL", str(original))
    tasks = [f"HumanEval/{i}" for i in range(6)]
    base = {t: i < 2 for i, t in enumerate(tasks)}  # solves 0, 1
    mine = {t: i in (1, 2, 3, 4) for i, t in enumerate(tasks)}  # loses 0, gains 2 3 4
    for lr, loss in (("1e-5", 2.3), ("3e-5", 2.2), ("1e-4", 2.4)):  # original: 3e-5 chosen
        _finished(tmp_path / "original" / f"lr{lr}-seed0", [2.6, loss])
    for lr, loss in (("3e-5", 2.3), ("1e-4", 2.1), ("3e-4", 2.35)):  # iha-all: 1e-4 chosen
        _finished(tmp_path / "iha-all" / f"lr{lr}-seed0", [2.6, loss])
    _finished(tmp_path / "original" / "lr3e-5-seed0-x", [9.0])  # not a run of the pattern
    for seed, (b, m) in enumerate([(2.2, 2.1), (2.25, 2.2), (2.3, 2.15)]):
        for arm, lr, loss, solved in (("original", "3e-5", b, base), ("iha-all", "1e-4", m, mine)):
            run = tmp_path / arm / f"lr{lr}-seed{seed}"
            if seed == 0:
                (run / "test.json").write_text(json.dumps({"test_loss": loss}))
                (run / "humaneval").mkdir()
                (run / "humaneval" / "humaneval.json").write_text("{}")
                lines = [json.dumps({"task_id": t, "correct": [ok]}) for t, ok in solved.items()]
                (run / "humaneval" / "humaneval.samples.jsonl").write_text("\n".join(lines))
            else:
                _finished(run, [2.6, 2.5, 2.4], loss, solved)
    got = study.report(tmp_path, 64, 1)
    primary = got["primary"]["iha-all (lr 1e-4) - original (lr 3e-5)"]
    diffs = [2.1 - 2.2, 2.2 - 2.25, 2.15 - 2.3]
    assert primary["seeds"] == [0, 1, 2]
    assert primary["test_loss_difference"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert primary["humaneval_pairs"] == 18
    assert primary["humaneval_solved_only_by"] == {"iha-all": 9, "original": 3}
    # exact McNemar: two-sided binomial test of 9 vs 3 discordant pairs at 1/2
    expect = scipy_stats.binomtest(9, 12, 0.5).pvalue
    assert primary["humaneval_mcnemar_p"] == pytest.approx(expect)
    assert got["runs"]["iha-all/lr1e-4-seed1"]["humaneval_solved"] == [4, 6]
    assert got["learning_rates"]["iha-all"]["bracketed"] is True
    assert "iha-mixing (lr" not in " ".join(got["primary"])  # no runs: no comparison


def test_publish_copies_records_but_never_weights_or_data(study, tmp_path):
    out, dest = tmp_path / "out", tmp_path / "dest"
    run = out / "iha-all" / "lr1e-4-seed0"
    _finished(run, [2.5, 2.4], solved={"HumanEval/0": True})
    (run / "config.toml").write_text("x = 1\n")
    (run / "checkpoints" / "step_00000010").mkdir(parents=True)
    (run / "checkpoints" / "step_00000010" / "model.safetensors").write_bytes(b"w")
    (out / "data").mkdir()
    for name in ("split.json", "train.jsonl"):
        (out / "data" / name).write_text("{}\n")
    (out / "untrained-original.json").write_text("{}")
    (out / "report.json").write_text("{}")
    (out / "iha-all" / "notes").mkdir()  # not a run directory
    (out / "iha-all" / "notes" / "test.json").write_text("{}")
    copied = study.publish(out, dest)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == sorted(copied) == sorted([
        "data/split.json", "report.json", "untrained-original.json",
        "iha-all/lr1e-4-seed0/config.toml", "iha-all/lr1e-4-seed0/metrics.jsonl",
        "iha-all/lr1e-4-seed0/test.json", "iha-all/lr1e-4-seed0/humaneval/humaneval.json",
        "iha-all/lr1e-4-seed0/humaneval/humaneval.samples.jsonl",
    ])  # fmt: skip
    assert (dest / "iha-all/lr1e-4-seed0/test.json").read_text() == (run / "test.json").read_text()
    assert study.publish(out, dest) == copied  # again: the same files, overwritten whole
