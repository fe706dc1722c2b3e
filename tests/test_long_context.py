"""The CPU rehearsal `iha long-context`: its training documents, its argument checks, and the
deprecated `python -m iha.long_context` that forwards to it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from iha import cli
from iha.cli import main as iha_main
from iha.cli.long_context import write_documents
from iha.eval import ruler
from iha.tokenizers import ByteTokenizer


def main(argv: list[str]) -> int:
    return iha_main(["long-context", *argv])


def test_training_documents_are_ruler_prompts_answered_within_the_length(tmp_path):
    path = tmp_path / "docs.jsonl"
    write_documents(path, ["niah_multikey_2", "niah_multikey_3"], 512, 6, seed=7)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 6
    tokenizer = ByteTokenizer()
    for record in records:
        prompt, answer = record["prompt"], record["response"].strip()
        assert prompt.startswith("<|bos|>") and "special magic" in prompt
        assert f"is: {answer}." in prompt  # the needle holding the answer is in the haystack
        assert len(tokenizer.encode(prompt + record["response"])) <= 512
    evaluation = ruler.generate_sample("niah_multikey_2", tokenizer, 512, index=0, seed=0)[0]
    assert evaluation.input not in {r["prompt"][len("<|bos|>"):] for r in records}


def test_bad_arguments_exit_2_naming_them(capsys):
    assert main(["--short", "512", "--long", "256"]) == 2
    assert "--long" in capsys.readouterr().err
    assert main(["--tasks", "niah_multikey_9"]) == 2
    assert "niah_multikey_9" in capsys.readouterr().err


def test_long_context_is_an_iha_subcommand_with_help(capsys):
    assert cli.SUBCOMMANDS["long-context"][0] == "iha.cli.long_context"
    with pytest.raises(SystemExit) as exit_info:
        iha_main(["long-context", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: iha long-context" in out and "--extend-steps" in out


def test_the_deprecated_module_form_warns_and_forwards_its_arguments(capsys):
    import iha.long_context as alias

    assert alias.main(["--short", "512", "--long", "256"]) == 2
    err = capsys.readouterr().err
    assert "DeprecationWarning" in err and "iha long-context" in err
    assert "iha long-context: error: --long" in err  # the subcommand ran, with these arguments
    with pytest.warns(DeprecationWarning, match="iha.cli.long_context.write_documents"):
        assert alias.write_documents is write_documents


def test_python_dash_m_of_the_old_module_still_runs():
    done = subprocess.run([sys.executable, "-m", "iha.long_context", "--tasks", "no_such_task"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert "deprecated" in done.stderr and "no_such_task" in done.stderr
