"""The `iha train` / `iha plot` commands: errors before any write, outputs of a finished run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from iha_train_stub import tiny_config, write_corpus

from iha.cli import main
from iha.train import checkpoint as ckpt
from iha.train import train
from iha.train.config import load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    "override, named",
    [
        ("train.max_stepz=3", "'train.max_stepz'"),
        ("optim.lr=fast", "'optim.lr' must be float"),
        ("train.precision=fp16", "'train.precision' must be one of"),
        ("checkpoint.keep=0", "'checkpoint.keep'=0 must be an int >= 1"),
    ],
)
def test_bad_config_exits_nonzero_naming_the_key_and_writes_nothing(
    tmp_path, capsys, override, named
):
    run_dir = tmp_path / "run"
    rc = main(
        ["train", str(CONFIGS / "cpu-demo.toml"), "--run-dir", str(run_dir), "--set", override]
    )
    assert rc == 2
    assert named in capsys.readouterr().err
    assert not run_dir.exists()


def test_missing_config_file_exits_nonzero(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_configs_parse(path):
    cfg = load_config(path, resolve_model=False)
    assert cfg.train.max_steps > 0


def test_plot_overlays_several_runs_into_pngs(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    for name, lr in (("a", 1e-2), ("b", 3e-2)):
        cfg = tiny_config(tmp_path / name, corpus, optim={"lr": lr}, train={"max_steps": 3})
        train(cfg)
    out = tmp_path / "compare"
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    for name in ("loss_vs_tokens.png", "loss_vs_flops.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert main(["plot", str(tmp_path / "missing")]) == 2


def test_cpu_preset_trains_writes_metrics_checkpoint_plots_and_resumes(tmp_path, capsys):
    run = tmp_path / "demo"
    quick = []
    for item in ("train.max_steps=4", "train.batch_size=4", "train.log_every=1",
                 "train.val_every=2", "train.val_batches=1", "checkpoint.every=2"):  # fmt: skip
        quick += ["--set", item]
    first = ["train", "cpu-demo", "--run-dir", str(run), "--stop-at", "2"]
    first += ["--set", "logging.plots=false"]  # plots come from the resumed run
    assert main([*first, *quick]) == 0
    assert main(["train", str(run), "--resume", "--set", "logging.plots=true"]) == 0
    err = capsys.readouterr().err
    assert "resumed from" in err and "step_00000002" in err
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert all(r["tokens"] > 0 and r["flops"] > 0 for r in train_rows)
    assert [r["step"] for r in rows if r["split"] == "val"] == [2, 4]
    assert ckpt.latest_checkpoint(run / "checkpoints").name == "step_00000004"
    assert {p.name for p in (run / "plots").iterdir()} == {
        "loss_vs_tokens.png",
        "loss_vs_flops.png",
    }
    saved = load_config(run / "config.toml")  # the resolved config, loadable as a config
    assert saved.model["attention_variant"] == "iha_global" and saved.run_dir == str(run)


def test_generate_samples_from_a_trained_run(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    train(tiny_config(tmp_path / "r", corpus, train={"max_steps": 2}))
    capsys.readouterr()
    args = ["generate", str(tmp_path / "r"), "--prompt", "the cat", "--max-new-tokens", "5"]
    assert main([*args, "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the cat") and len(out.rstrip("\n")) >= len("the cat")
    assert main(["generate", str(tmp_path / "nothing"), "--prompt", "x"]) == 2


def test_describe_prints_the_variant_table_and_rejects_bad_keys(capsys):
    assert main(["describe", "tiny", "--set", "model.num_pseudo_heads=2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| variant |") and "| iha |" in out
    assert main(["describe", "tiny", "--set", "model.heads=2"]) == 2
    assert "'model.heads'" in capsys.readouterr().err


def test_print_config_shows_the_resolved_config_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "x"
    args = ["train", "cpu-demo", "--run-dir", str(run), "--set", "optim.lr=1e-3", "--print-config"]
    assert main(args) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 1e-3 and printed["run_dir"] == str(run)
    assert printed["model"]["num_pseudo_heads"] == 2 and "rope_theta" in printed["model"]
    assert not run.exists()


def test_keep_freed_memory_flag_applies_the_setting_before_training(tmp_path, monkeypatch):
    import iha.backends

    calls = []
    monkeypatch.setattr(iha.backends, "keep_freed_memory", lambda: calls.append("kept") or True)
    run = tmp_path / "kept"
    args = ["train", "cpu-demo", "--run-dir", str(run), "--keep-freed-memory"]
    for item in ("train.max_steps=1", "train.batch_size=2", "train.val_every=1",
                 "train.val_batches=1", "logging.plots=false"):  # fmt: skip
        args += ["--set", item]
    assert main(args) == 0
    assert calls == ["kept"]
    assert ckpt.latest_checkpoint(run / "checkpoints") is not None
    calls.clear()
    assert main(["train", str(run), "--resume"]) == 0  # without the flag: not applied
    assert calls == []
