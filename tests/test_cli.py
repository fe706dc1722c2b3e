"""The one command line: every subcommand is a module of iha.cli, the library never loads them."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from iha import cli


def test_every_subcommand_is_a_module_of_iha_cli_with_add_arguments_and_run():
    for name, (module_name, help_text) in cli.SUBCOMMANDS.items():
        assert module_name.startswith("iha.cli."), name
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name
        assert help_text


def test_help_lists_every_subcommand(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.SUBCOMMANDS)


def test_unknown_options_exit_with_code_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["describe", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err


def test_lm_eval_hands_every_argument_to_the_bridge_unparsed(monkeypatch):
    from iha.eval import lm_eval_bridge

    seen = []
    monkeypatch.setattr(lm_eval_bridge, "main", lambda argv: seen.append(argv) or 7)
    argv = ["--model", "iha", "--tasks", "gsm8k", "--help"]
    assert cli.main(["lm-eval", *argv]) == 7
    assert seen == [argv]


def test_importing_the_library_loads_no_command_module():
    code = (
        "import sys, iha, iha.models, iha.train, iha.eval, iha.reproduce, iha.theory, iha.tasks\n"
        "print(sorted(m for m in sys.modules if m == 'iha.cli' or m.startswith('iha.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["train", "cpu-demo"], ["describe", "tiny"]])
@pytest.mark.parametrize("bad", ["optim.lr", "=3", "model..heads=2"])
def test_a_malformed_set_override_exits_2_naming_the_option(capsys, command, bad):
    # one --set rule for every command: no "=", an empty key or an empty key part
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--set", bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --set" in err and repr(bad) in err


def test_describe_reads_a_run_directory_like_train_does(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": {"preset": "tiny", "num_pseudo_heads": 3}}')
    assert cli.main(["describe", str(run), "--json"]) == 0
    from_run = capsys.readouterr().out
    assert cli.main(["describe", "tiny", "--set", "model.num_pseudo_heads=3", "--json"]) == 0
    assert from_run == capsys.readouterr().out
    assert cli.main(["describe", "tiny", "--json"]) == 0
    assert from_run != capsys.readouterr().out  # P = 3 is not the preset's P


def test_the_reproductions_print_their_outcome_one_bullet_per_experiment(capsys):
    from iha.cli._common import print_outcome

    print_outcome(["IHA beats MHA on x", "IHA does NOT beat MHA on y"])
    assert capsys.readouterr().out == (
        "\nOutcome:\n- IHA beats MHA on x\n- IHA does NOT beat MHA on y\n"
    )
