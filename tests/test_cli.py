"""The one command line: every subcommand is a module of iha.cli, the library never loads them."""

from __future__ import annotations

import argparse
import importlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


# -- one grammar: help on every option, examples that parse, the same names for the same things

POSITIONAL_NAMES = {"MODEL", "RUN", "CONFIG", "SRC", "DST", "BENCHMARK", "SUITE"}


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """``iha`` itself and each subcommand's parser with its options added."""
    parsers = {"iha": cli.build_parser()}
    for name in cli.SUBCOMMANDS:
        if name in cli.PASSTHROUGH:  # its options are another tool's
            continue
        parser = cli.build_parser(only=name)
        (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parsers[name] = sub.choices[name]
    return parsers


def test_every_option_of_every_command_has_help_that_states_its_default():
    missing, no_default = [], []
    for name, parser in command_parsers().items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            label = f"iha {name} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                missing.append(label)
                continue
            takes_value = action.option_strings and action.nargs != 0
            repeatable = isinstance(action, argparse._AppendAction)  # default: none given
            if takes_value and not action.required and not repeatable:
                shown = formatter._expand_help(action)
                if "default" not in shown.lower():
                    no_default.append(f"{label}: {shown!r}")
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help does not state the default: {no_default}"


def test_positional_arguments_follow_one_naming_scheme():
    for name, parser in command_parsers().items():
        for action in parser._actions:
            if action.option_strings or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.metavar in POSITIONAL_NAMES, (name, action.dest, action.metavar)


def example_lines(epilog: str) -> list[list[str]]:
    """The ``iha ...`` commands of an epilog's examples, as argument lists after ``iha``."""
    found, lines = [], epilog.split("examples:\n", 1)[-1].split("\n\n", 1)[0]
    for line in lines.splitlines():
        words = shlex.split(line, comments=True)
        if "iha" in words and (words[0] == "iha" or words[words.index("iha") - 1] == "-m"):
            found.append(words[words.index("iha") + 1 :])
    return found


def test_every_command_has_examples_that_parse_and_its_exit_codes():
    for name, parser in command_parsers().items():
        epilog = parser.epilog or ""
        assert "examples:" in epilog and "exit codes:" in epilog, name
        examples = example_lines(epilog)
        if name != "iha":
            assert examples and all(words[0] == name for words in examples), (name, examples)
        for words in examples:
            if words[0] in cli.PASSTHROUGH:
                continue
            try:
                args = cli.build_parser(only=words[0]).parse_args(words)
            except SystemExit:
                pytest.fail(f"the example 'iha {shlex.join(words)}' of 'iha {name} --help' "
                            "does not parse")  # fmt: skip
            assert args.command == words[0]


def test_help_output_shows_examples_defaults_and_the_scheme(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "MODEL" in out and "examples:" in out and "exit codes:" in out
    assert "tokens sampled per prompt (default: 64)" in " ".join(out.split())
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "CONFIG" in out and "iha COMMAND --help" in out


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"iha {version('iha')}\n"


def test_help_formatter_appends_a_default_only_where_one_is_worth_showing():
    from iha.cli._common import HelpFormatter

    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--n", type=int, default=3, help="count")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10], help="k values")
    parser.add_argument("--pct", default="5%", help="share")
    parser.add_argument("--said", default=7, help="seven (default 7)")
    parser.add_argument("--none", help="nothing given")
    parser.add_argument("--zero", type=int, default=0, help="zero")
    parser.add_argument("--flag", action="store_true", help="a switch")
    text = " ".join(parser.format_help().split())
    for expected in ("count (default: 3)", "k values (default: 1 10)", "share (default: 5%)",
                     "seven (default 7) ", "nothing given ", "zero (default: 0)", "a switch"):
        assert expected in text + " ", expected  # fmt: skip
    assert text.count("default") == 5  # not after --none or --flag, once after --said


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))
    from iha_train_stub import tiny_config, write_corpus

    from iha.train import train

    root = tmp_path_factory.mktemp("generate")
    train(tiny_config(root / "run", write_corpus(root / "corpus.txt"), train={"max_steps": 2}))
    return root / "run"


def test_each_prompt_is_sampled_with_its_own_seed_under_its_own_header(tiny_run, capsys):
    from iha.models import generate
    from iha.tokenizers import ByteTokenizer
    from iha.train.trainer import load_trained_model

    prompts = ["the cat", "the cat", "a dog"]  # the same prompt twice: two different draws
    argv = ["generate", str(tiny_run), "--max-new-tokens", "12", "--temperature", "1"]
    assert cli.main([*argv, "--seed", "5", *(x for p in prompts for x in ("--prompt", p))]) == 0
    out = capsys.readouterr().out

    model, _, _ = load_trained_model(tiny_run)  # the reference: the library's sampler, seed 5 + i
    tok = ByteTokenizer()
    texts = []
    for i, prompt in enumerate(prompts):
        new = generate(model, torch.tensor([tok.encode(prompt)]), max_new_tokens=12,
                       temperature=1.0, stop_token_ids=[tok.eos_token_id], seed=5 + i)  # fmt: skip
        text = prompt + tok.decode(new[0].tolist())
        texts.append(f"### prompt {i + 1}/3 (seed {5 + i})\n{text}\n")
    assert out == "\n".join(texts)
    assert texts[0].split("\n", 1)[1] != texts[1].split("\n", 1)[1]  # same prompt, other seed

    # one prompt: no header, and the output of prompt i alone with --seed 5 + i is the same
    assert cli.main([*argv, "--seed", "7", "--prompt", "a dog"]) == 0
    assert capsys.readouterr().out == texts[2].split("\n", 1)[1]


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_describe_accepts_every_name_it_advertises(capsys):
    # --list (current model presets) and the presets of configs/ that the help names
    assert cli.main(["describe", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    from iha.models.presets import PRESET_ALIASES

    assert listed and not set(listed) & set(PRESET_ALIASES)  # no deprecated name offered
    for name in [*listed, *sorted(p.stem for p in CONFIGS.glob("*.toml"))]:
        assert cli.main(["describe", name, "--json"]) == 0, name
        assert capsys.readouterr().err == "", name  # no deprecation note, no error


def test_describe_of_a_config_name_reads_that_config(tmp_path, monkeypatch, capsys):
    # configs/paper-2.4b.toml (the 2.4B recipe), not the deprecated model preset of that name
    assert cli.main(["describe", "paper-2.4b"]) == 0
    by_name = capsys.readouterr()
    assert cli.main(["describe", str(CONFIGS / "paper-2.4b.toml")]) == 0
    assert by_name.out == capsys.readouterr().out and "deprecated" not in by_name.err
    assert "our reading of the paper's 2.4B model" in by_name.out  # its preset's assumptions
    # a config of that name whose model differs from the alias's (./configs comes first)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "paper-2.4b.toml").write_text(
        '[model]\npreset = "paper-2.4b-swiglu"\nnum_pseudo_heads = 4\n'
    )
    monkeypatch.chdir(tmp_path)
    assert cli.main(["describe", "paper-2.4b", "--json"]) == 0
    mine = capsys.readouterr().out
    assert cli.main(["describe", "paper-2.4b-swiglu", "--set", "model.num_pseudo_heads=4",
                     "--json"]) == 0  # fmt: skip
    assert mine == capsys.readouterr().out
    assert cli.main(["describe", "paper-2.4b-swiglu", "--json"]) == 0
    assert mine != capsys.readouterr().out


def test_describe_without_that_config_reads_the_deprecated_alias_as_both_readings(
    monkeypatch, capsys
):
    import iha.train.config

    def no_config(name):
        raise iha.train.config.ConfigError(f"no config {name!r}")

    monkeypatch.setattr(iha.train.config, "find_config", no_config)  # as outside the repository
    assert cli.main(["describe", "paper-2.4b-swiglu", "paper-2.4b-mlp"]) == 0
    both = capsys.readouterr().out
    assert cli.main(["describe", "paper-2.4b"]) == 0
    alias = capsys.readouterr()
    assert alias.out == both and "deprecated" in alias.err
    assert cli.main(["describe", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "'no-such-model'" in err and "tiny" in err  # names what is accepted


def test_every_iha_command_of_the_readme_parses():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("\n", 1)[1] for b in readme.split("```bash")[1:]]
    commands = [w for block in blocks for w in example_lines(block.split("```")[0])]
    assert len(commands) >= 15
    for words in commands:
        if words[0] in cli.PASSTHROUGH:
            continue
        try:
            cli.build_parser(only=words[0]).parse_args(words)
        except SystemExit:
            pytest.fail(f"README: 'iha {shlex.join(words)}' does not parse")
