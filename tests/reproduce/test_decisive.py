"""The decisive plan: learning-rate ladder and bracketing, the plan's settings against the full
plans, the stage runner on a scripted score surface, and the interim report's tests."""

import math
from dataclasses import replace
from pathlib import Path

import pytest

from iha.reproduce import decisive as dec
from iha.reproduce import lm_plans, plans
from iha.reproduce.stats import mcnemar_exact


def test_next_rate_walks_the_one_three_ladder():
    assert [dec.next_rate(x, True) for x in (1e-3, 3e-3, 1e-2, 0.3)] == [3e-3, 1e-2, 3e-2, 1.0]
    assert [dec.next_rate(x, False) for x in (1e-3, 3e-3, 1e-2)] == [3e-4, 1e-3, 3e-3]
    with pytest.raises(ValueError, match="lr"):
        dec.next_rate(0.0, True)


def test_bracket_extends_at_an_edge_and_stops_inside():
    assert dec.bracket({3e-3: 0.5, 1e-2: 0.7}) == (1e-2, 3e-2)  # best at the top: go up
    assert dec.bracket({3e-3: 0.9, 1e-2: 0.7}) == (3e-3, 1e-3)  # best at the bottom: go down
    assert dec.bracket({3e-3: 0.5, 1e-2: 0.7, 3e-2: 0.6}) == (1e-2, None)
    assert dec.bracket({1e-3: math.nan, 3e-3: 0.1, 1e-2: 0.2}) == (1e-2, 3e-2)
    assert dec.bracket({0.3: 0.1, 1.0: 0.9}) == (1.0, None)  # ladder leaves [LR_MIN, LR_MAX]


def test_plan_keeps_the_full_settings_and_has_ten_seeds():
    plan = dec.decisive_plan()
    full = {e.key: e for e in plans.full_plan().relations}
    for e in plan.relations:
        f = full[e.key]
        assert replace(e, converge_window=None, ablations=f.ablations,
                       ablation_lr=f.ablation_lr) == f  # fmt: skip
        assert e.converge_window == 10
    full_lm = {e.name: e for e in lm_plans.full_plan().experiments}
    for e in plan.lm:
        if e.task == "mqar":
            assert replace(e, variants=full_lm[e.name].variants) == full_lm[e.name]
        else:
            base = full_lm["text/d64-n64"]
            assert e.budget_steps == 10 * base.budget_steps
            assert e.variants == ("global", "global_local", "iha", "iha_global")
    for c in plan.comparisons:
        for e in c.experiments:
            assert len(plan.seeds_of(e)) >= 10
    assert [c.test for c in plan.comparisons].count("mcnemar") == 2
    assert plan.stages[0] == ("relations/binary",)


def _scripted(monkeypatch, peak: float):
    """Replace training by a score surface peaked at ``peak``; returns the store of runs."""
    store: dict = {}

    def fake_run_one(plan, out, arm, lr, seed, log=print):
        score = 1.0 - (math.log10(lr) - math.log10(peak)) ** 2 / 10 + 0.001 * seed
        rec = {"key": f"{arm.name}/{lr:g}/{seed}", "val": {"loss": 1 - score, "pos_acc": score},
               "test": {"pos_acc": score + (0.01 if arm.variant == "iha" else 0.0)},
               "seconds": 1.0, "history": [{"loss": 1 - score}] * 3}  # fmt: skip
        store[(arm.name, lr, seed)] = rec
        return rec

    monkeypatch.setattr(dec, "run_one", fake_run_one)
    monkeypatch.setattr(dec, "read_record",
                        lambda plan, out, arm, lr, s: store.get((arm.name, lr, s)))  # fmt: skip
    monkeypatch.setattr(dec, "_rates_on_disk",
                        lambda plan, out, arm, s: [k[1] for k in store if k[0] == arm.name
                                                   and k[2] == s])  # fmt: skip
    return store


def test_run_stage_brackets_then_runs_every_seed_at_the_chosen_rate(monkeypatch):
    store = _scripted(monkeypatch, peak=0.1)
    plan = dec.decisive_plan(4, tiny=True)
    dec.run_stage(plan, Path("unused"), ("relations/binary",), log=lambda s: None)
    for arm in plan.arms("relations/binary"):
        lr, ok = dec.chosen_rate(plan, Path("unused"), arm)
        assert lr == pytest.approx(0.1) and ok
        rates = sorted({k[1] for k in store if k[0] == arm.name})
        assert rates == pytest.approx([1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3])
        assert {k[2] for k in store if k[0] == arm.name and k[1] == lr} == {0, 1, 2, 3}
    res = dec.compare(plan, Path("unused"), plan.comparisons[0])
    assert res["pairs"] == 4 and res["diff"].mean == pytest.approx(0.01)
    assert res["p"] == 0.0  # constant difference
    lines = dec.interim_report(plan, Path("unused"))
    assert any("binary: iha vs mha" in line and "4 / 4" in line for line in lines)


def test_compare_pools_mcnemar_over_configurations(monkeypatch):
    plan = dec.decisive_plan(3, tiny=True)
    comp = next(c for c in plan.comparisons if c.test == "mcnemar")
    solved = {"iha": True, "global": False}

    def runs(plan_, out, arm):
        return 3e-3, True, {s: {"test": {"2": {"pos_acc": 1.0 if solved[arm.variant] else 0.3}}}
                            for s in plan_.seeds}  # fmt: skip

    monkeypatch.setattr(dec, "arm_runs", runs)
    res = dec.compare(plan, Path("unused"), comp)
    n = 3 * len(comp.experiments)
    assert (res["only_a"], res["only_b"], res["pairs"]) == (n, 0, n)
    assert res["p"] == mcnemar_exact(n, 0)


def test_holm_adjustment():
    assert dec.holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])


def test_publish_copies_records_not_checkpoints_and_writes_the_report(tmp_path):
    plan = dec.decisive_plan(2, tiny=True)
    out, docs = tmp_path / "out", tmp_path / "docs"
    job = out / "synthetic" / "jobs" / "relations__binary__mha__H4__P1__lr0.001__s0"
    job.mkdir(parents=True)
    record = {"key": "relations/binary/mha/H4/P1/lr0.001/s0", "seconds": 3.0,
              "history": [{"loss": 1.0}] * 3, "val": {"loss": 1.0, "pos_acc": 0.5},
              "test": {"pos_acc": 0.5}}  # fmt: skip
    (job / "record.json").write_text(dec.json.dumps(record))
    (job / "checkpoint.pt").write_bytes(b"x")
    (out / "synthetic" / "runs.jsonl").write_text(dec.json.dumps(record) + "\n")
    assert dec.publish(plan, out, docs, header=["# Decisive runs"]) == 1
    copied = docs / "synthetic" / "jobs" / job.name
    assert (copied / "record.json").is_file() and not (copied / "checkpoint.pt").exists()
    text = (docs / "README.md").read_text()
    assert text.startswith("# Decisive runs") and "| relations/binary | 1 |" in text
    # the published folder is itself readable by the report
    assert dec.read_record(plan, docs, plan.arms("relations/binary")[0], 1e-3, 0) == record


def _text_record(variant: str, seed: int, slope: float) -> dict:
    """An LM record: 10 validation losses with the given slope per evaluation (plus a fixed
    zig-zag), test loss by variant."""
    vals = {str(100 * (i + 1)): 2.0 + slope * i + (0.01 if i % 2 else -0.01) for i in range(10)}
    loss = 1.5 + (0.01 * seed if variant == "iha" else 0.05)
    return {"experiment": "text/tiny", "val_losses": vals, "test": {"all": {"loss": loss}}}


@pytest.mark.parametrize("slope", [-0.05, 0.0])
def test_text_flag_follows_the_rule_on_the_chosen_rate_runs(monkeypatch, slope):
    plan = dec.decisive_plan(3, tiny=True)
    text = next(c for c in plan.comparisons if c.name.startswith("text"))

    def runs(plan_, out, arm):
        if arm.experiment.startswith("text"):
            return 3e-3, True, {s: _text_record(arm.variant, s, slope) for s in plan_.seeds}
        return None, False, {}

    monkeypatch.setattr(dec, "arm_runs", runs)
    verdicts = dec.chosen_rate_verdicts(plan, Path("unused"), text)
    expected = "improving" if slope < 0 else "converged"
    assert verdicts == {"iha": {expected: 3}, "global": {expected: 3}}
    flagged = dec.flags(plan, Path("unused"))
    assert bool(flagged) == (slope < 0)
    if flagged:
        assert "`global` 3 of 3" in flagged[0] and "not at convergence" in flagged[0]
    # only the text comparison has its runs: the plan is not complete, the header says interim
    assert not dec.plan_complete(plan, Path("unused"))
    assert dec.default_header(Path("x"))[0] == "# Decisive comparisons: interim report"
    assert dec.default_header(Path("x"), complete=True)[0] == "# Decisive comparisons: results"
    lines = dec.interim_report(plan, Path("unused"))
    assert any(f"`global` {expected} 3" in line for line in lines)


def test_plan_is_complete_only_with_every_planned_pair(monkeypatch):
    plan = dec.decisive_plan(3, tiny=True)
    missing = {"seed": None}

    def runs(plan_, out, arm):
        seeds = [s for s in plan_.seeds_of(arm.experiment) if s != missing["seed"]]
        if arm.experiment.startswith("text"):
            return 3e-3, True, {s: _text_record(arm.variant, s, 0.0) for s in seeds}
        if arm.experiment.startswith("mqar"):
            return 3e-3, True, {s: {"test": {"2": {"pos_acc": 1.0}}} for s in seeds}
        return 3e-3, True, {s: {"test": {"pos_acc": 0.5 + 0.01 * s}} for s in seeds}

    monkeypatch.setattr(dec, "arm_runs", runs)
    assert dec.plan_complete(plan, Path("unused"))
    missing["seed"] = 1
    assert not dec.plan_complete(plan, Path("unused"))
