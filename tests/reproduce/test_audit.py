"""The convergence audit of committed runs, on hand-made records."""

import json

from iha.reproduce import audit


def _lm(key, losses, acc):
    exp = key.rsplit("/", 3)[0]
    variant, lr, seed = key.split("/")[-3:]
    return {"key": key, "experiment": exp, "variant": variant, "lr": float(lr[2:]),
            "seed": int(seed[1:]), "val": {"loss": losses[-1], "pos_acc": acc},
            "test": {"4": {"pos_acc": acc}},
            "val_losses": {str(50 * (i + 1)): v for i, v in enumerate(losses)}}  # fmt: skip


PLATEAU_THEN_DROP = [1.99, 1.37, 1.315, 1.292, 1.289, 1.284, 1.282, 1.263, 0.91, 0.53]
CREEPING_AT_CHANCE = [2.3, 1.5, 1.35, 1.31, 1.298, 1.29, 1.287, 1.285, 1.282, 1.281]


def test_old_criterion_calls_a_creeping_plateau_converged_the_rule_does_not():
    rec = _lm("mqar/d48-p4-n16/global/lr0.003/s1", CREEPING_AT_CHANCE, 0.33)
    assert audit.convergence(rec["val_losses"])["converged"] is True
    assert audit.lm_verdict(rec) == "improving"
    flat = _lm("mqar/d48-p4-n16/global/lr0.003/s2", [2.0, 1.5] + [1.3, 1.31] * 4, 0.33)
    assert audit.lm_verdict(flat) == "plateau"
    solved = _lm("mqar/d48-p4-n16/iha/lr0.003/s0", [2.0, 0.5] + [0.001] * 8, 1.0)
    assert audit.lm_verdict(solved) == "solved"


def test_backwards_reports_the_firing_and_the_later_drop():
    rec = _lm("mqar/d48-p4-n16/global/lr0.003/s0", PLATEAU_THEN_DROP, 0.75)
    i, dropped = audit.backwards(rec, "old")
    assert i is not None and dropped
    i_new, _ = audit.backwards(rec, "new")
    assert i_new is None or i_new >= 5  # the rule needs its K = 5 evaluations


def test_audit_lines_on_a_small_docs_tree(tmp_path):
    runs = tmp_path / "lm" / "runs"
    for rec in (_lm("mqar/d48-p4-n16/global/lr0.003/s0", CREEPING_AT_CHANCE, 0.33),
                _lm("mqar/d48-p4-n16/iha/lr0.003/s0", [2.0, 0.5] + [0.001] * 8, 1.0)):  # fmt: skip
        d = runs / rec["key"]
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(rec))
    syn = tmp_path / "synthetic"
    syn.mkdir()
    falling = [2.0 - 0.05 * i + 0.02 * (-1) ** i for i in range(24)]
    old = {"key": "heads/cpm3/mha/H1/P1/lr0.003/s1", "experiment": "heads/cpm3", "epochs": 20,
           "settings": {"max_epochs": 60}, "history": [{"loss": 9.0}] * 20,
           "test": {"pos_acc": 0.5}}  # fmt: skip
    new = dict(old, epochs=24, history=[{"loss": v} for v in falling], test={"pos_acc": 0.878})
    (syn / "runs.jsonl").write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    text = "\n".join(audit.audit_lines(tmp_path))
    assert "1 of them end at chance accuracy" in text
    assert "| heads/cpm3/mha/H1/P1/lr0.003/s1 | 24 |" in text  # the last record of the key
    assert "CPM-3: 1 of 1 early-stopped runs still had a significantly falling" in text


def test_committed_synthetic_runs_hold_one_record_per_run():
    """runs.jsonl: one record per key; the superseded records of re-run jobs live apart."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "docs" / "results" / "synthetic"
    keys = [json.loads(x)["key"] for x in (root / "runs.jsonl").read_text().splitlines() if x]
    assert len(keys) == len(set(keys)) == 120
    old = [json.loads(x)["key"] for x in (root / "superseded.jsonl").read_text().splitlines() if x]
    assert set(old) <= set(keys)


def test_majority_class_is_taken_once_per_seed():
    from iha.reproduce.synthetic import _per_seed_baseline

    runs = [{"seed": s, "baseline": 0.5 + 0.1 * s} for s in (0, 1) for _ in range(4)]
    assert _per_seed_baseline(runs) == [0.5, 0.6]
