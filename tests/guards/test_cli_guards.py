"""Every bad command-line input is exit code 2 naming the argument, before anything is written
or any long work starts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from iha.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from iha_train_stub import TINY_MODEL, tiny_config, write_corpus  # noqa: E402


def files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("llama")
    transformers.LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def test_convert_refuses_the_source_as_destination_and_writes_nothing(hf_dir, capsys):
    before = files(hf_dir)
    assert main(["convert", str(hf_dir), str(hf_dir), "--force"]) == 2
    assert "is SRC" in capsys.readouterr().err
    assert main(["convert", str(hf_dir), str(hf_dir / "inside"), "--force"]) == 2
    assert "inside SRC" in capsys.readouterr().err
    assert main(["convert", str(hf_dir), str(hf_dir / ".." / hf_dir.name), "--force"]) == 2
    assert files(hf_dir) == before and not (hf_dir / "inside").exists()


def test_convert_names_a_junk_config_missing_weights_and_a_train_run(tmp_path, capsys):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "config.json").write_text('{"model_type": "llama", ')
    assert main(["convert", str(junk), str(tmp_path / "out")]) == 2
    assert "config.json' is not valid JSON" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert main(["convert", str(bare), str(tmp_path / "out")]) == 2
    assert "holds no weights" in capsys.readouterr().err
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    from iha.train import train

    train(tiny_config(run, corpus, train={"max_steps": 1}))
    assert main(["convert", str(run), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is an `iha train` run directory" in err and "iha generate" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "where, named",
    [("dir", "is a directory"), ("missing/out.json", "is in a folder that does not exist")],
)
def test_bench_checks_its_output_paths_before_running(tmp_path, capsys, where, named):
    (tmp_path / "dir").mkdir()
    target = tmp_path / where
    assert main(["bench", "--smoke", "--suite", "core", "--json", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"--json {str(target)!r} {named}" in err and "core ..." not in err


@pytest.mark.parametrize(
    "flag, value, named",
    [
        ("--max-new-tokens", "-1", "--max-new-tokens=-1 must be >= 0"),
        ("--temperature", "-0.5", "--temperature=-0.5 must be"),
        ("--temperature", "nan", "--temperature=nan must be"),
        ("--top-p", "0", "--top-p=0.0 must be in (0, 1]"),
        ("--top-p", "1.5", "--top-p=1.5 must be in (0, 1]"),
        ("--top-k", "-1", "--top-k=-1 must be >= 0"),
    ],
)
def test_generate_rejects_bad_sampling_arguments_before_loading(
    tmp_path, capsys, flag, value, named
):
    rc = main(["generate", str(tmp_path / "no-such-run"), "--prompt", "hi", flag, value])
    assert rc == 2
    assert named in capsys.readouterr().err


def test_generate_rejects_a_prompt_outside_the_model_vocabulary(tmp_path, capsys):
    run = tmp_path / "run"
    corpus = tmp_path / "unused.txt"
    cfg = tiny_config(
        run, corpus, model={**TINY_MODEL, "vocab_size": 40},
        data={"source": "synthetic", "task": "mqar",
              "task_args": {"num_pairs": 2, "num_keys": 8, "num_values": 8}},
        train={"max_steps": 1},
    )  # fmt: skip
    from iha.train import train

    train(cfg)
    assert main(["generate", str(run), "--prompt", "zebra", "--max-new-tokens", "2"]) == 2
    assert "outside the model's vocabulary of 40" in capsys.readouterr().err


def test_bench_refuses_fewer_than_one_process(capsys):
    assert main(["bench", "--smoke", "--suite", "core", "--processes", "0"]) == 2
    err = capsys.readouterr().err
    assert "--processes must be >= 1 (got 0)" in err and "core ..." not in err
