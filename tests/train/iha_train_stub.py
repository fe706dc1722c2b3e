"""Helpers for the training-engine tests: a tiny stand-in LM, a text corpus and a config."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iha.train.config import RunConfig, config_from_dict


class _Block(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mix = nn.Linear(2 * hidden, hidden)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm(h)
        prev = F.pad(x, (0, 0, 1, 0))[:, :-1]  # (B, N, D): the previous token, causal
        return h + torch.tanh(self.mix(torch.cat([x, prev], dim=-1)))


class TinyLM(nn.Module):
    """A causal stand-in with the LM call signature ``model(input_ids, attention_mask=None)``."""

    def __init__(self, vocab_size: int = 259, hidden_size: int = 16, num_layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.layers = nn.ModuleList(_Block(hidden_size) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        h = self.embed(input_ids)
        for layer in self.layers:
            h = layer(h)
        return self.lm_head(self.norm(h))


def tiny_factory(model_cfg: dict[str, Any]) -> nn.Module:
    return TinyLM(**model_cfg)


WORDS = "the cat sat on a mat while dogs ran far away from home under blue skies".split()


def write_corpus(path: Path, n_docs: int = 40, seed: int = 0) -> Path:
    """Blank-line separated paragraphs of random words."""
    rng = random.Random(seed)
    paras = []
    for _ in range(n_docs):
        lines = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
            for _ in range(rng.randint(1, 3))
        ]
        paras.append("\n".join(lines))
    path.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    return path


def tiny_config(run_dir: Path, corpus: Path, **sections: dict[str, Any]) -> RunConfig:
    """A fast CPU config on the stand-in model; ``sections`` update single tables."""
    raw: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model": {"vocab_size": 259, "hidden_size": 16},
        "data": {"source": "text", "path": str(corpus), "seq_len": 16, "val_fraction": 0.1},
        "optim": {"lr": 3e-2, "warmup_steps": 2},
        "train": {
            "max_steps": 6,
            "batch_size": 4,
            "log_every": 1,
            "val_batches": 1,
            "device": "cpu",
            "precision": "fp32",
        },
        "checkpoint": {"every": 0, "keep": 2},
        "logging": {"progress": "none", "tensorboard": "off", "plots": False},
    }
    for name, table in sections.items():
        raw[name] = {**raw.get(name, {}), **table}
    return config_from_dict(raw, resolve_model=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_worker(rank: int, world_size: int, port: int, cfg_dict: dict[str, Any]) -> None:
    """One torchrun-like process (env:// rendezvous on localhost) training the stand-in model."""
    import os

    from iha.train import train

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    cfg = config_from_dict(cfg_dict, resolve_model=False)
    result = train(cfg, model_factory=tiny_factory)
    if result.exit_code != 0:
        raise RuntimeError(f"rank {rank} ended with {result.reason}")
