"""Shared fixtures: one real ``iha train`` run on a tiny model, trained once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"

# the cpu-text preset shrunk to seconds: IHA (global, P = 2) in both layers of a 16-wide model
TINY_MODEL_OVERRIDES = {
    "model.hidden_size": 16,
    "model.num_hidden_layers": 2,
    "model.num_attention_heads": 2,
    "model.max_position_embeddings": 32,
}
QUIET = {
    "train.device": '"cpu"',
    "train.precision": '"fp32"',
    "logging.progress": '"none"',
    "logging.tensorboard": '"off"',
    "logging.plots": "false",
}


def set_args(values: dict[str, object]) -> list[str]:
    """``--set key=value`` arguments of ``iha train``."""
    out: list[str] = []
    for key, value in values.items():
        out += ["--set", f"{key}={value}"]
    return out


def model_overrides(run_dir: Path) -> dict[str, str]:
    """``--set`` values that make a config's ``[model]`` equal to the model of ``run_dir``."""
    model = json.loads((run_dir / "config.json").read_text())["model"]
    out = {"model.preset": "none"}
    out.update({f"model.{k}": json.dumps(v) for k, v in model.items() if v is not None})
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory of ``iha train cpu-text`` (3 steps, byte tokenizer) on a local corpus."""
    from iha.cli import main

    root = tmp_path_factory.mktemp("tiny_run")
    corpus = root / "corpus.txt"
    corpus.write_text(
        "\n\n".join(f"Question: what is {i} plus {i + 1}?\nAnswer: {2 * i + 1}." for i in range(40))
        + "\n",
        encoding="utf-8",
    )
    run_dir = root / "run"
    settings = {
        **TINY_MODEL_OVERRIDES,
        "data.path": json.dumps(str(corpus)),
        "data.seq_len": 32,
        "train.max_steps": 3,
        "train.batch_size": 2,
        "train.val_batches": 1,
        **QUIET,
    }
    rc = main(["train", "cpu-text", "--run-dir", str(run_dir), *set_args(settings)])
    assert rc == 0
    return run_dir


def greedy_reference(model, ids: list[int], max_new_tokens: int, eos: int | None) -> list[int]:
    """Greedy continuation by full forwards of the unpadded sequence, one token at a time.

    ``model(input_ids) -> (1, N, V)`` logits; stops after ``eos`` (not included).
    """
    ids = list(ids)
    new: list[int] = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            token = int(model(torch.tensor([ids]))[0, -1].argmax())
        if token == eos:
            break
        ids.append(token)
        new.append(token)
    return new
