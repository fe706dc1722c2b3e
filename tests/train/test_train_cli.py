"""The `iha train` / `iha plot` commands: errors before any write, outputs of a finished run."""

from __future__ import annotations

from pathlib import Path

import pytest
from iha_train_stub import tiny_config, write_corpus

from iha.cli import main
from iha.train import train
from iha.train.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    "override, named",
    [
        ("train.max_stepz=3", "'train.max_stepz'"),
        ("optim.lr=fast", "'optim.lr' must be float"),
        ("train.precision=fp16", "'train.precision' must be one of"),
        ("checkpoint.keep=0", "'checkpoint.keep' must be > 0"),
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
