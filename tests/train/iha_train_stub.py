"""Helpers for the training-engine tests: a tiny real model config, a text corpus, workers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from iha.train.config import RunConfig, config_from_dict

# a real iha.models.DecoderLM, small enough for a step in milliseconds: IHA in both layers
TINY_MODEL = {
    "vocab_size": 259,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 16,
    "attention_variant": "iha_global",
    "num_pseudo_heads": 2,
}

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
    """A fast CPU config on the tiny model; ``sections`` update single tables."""
    raw: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model": dict(TINY_MODEL),
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
    return config_from_dict(raw)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_worker(
    rank: int, world_size: int, ports: list[int], cfg_dicts: list[dict[str, Any]]
) -> None:
    """One torchrun-like process (env:// rendezvous on localhost) running the given runs.

    Each run joins and leaves its own process group, with a fresh rendezvous port.
    """
    import os

    from iha.train import train

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
    )
    for port, cfg_dict in zip(ports, cfg_dicts):
        os.environ["MASTER_PORT"] = str(port)
        result = train(config_from_dict(cfg_dict))
        if result.exit_code != 0:
            raise RuntimeError(f"rank {rank} ended with {result.reason}")


def plugin_source(cfg: Any, tokenizer: Any, split: str, seed: int) -> Any:
    """A ``data.source = "iha_train_stub:plugin_source"`` plugin: fixed in-memory documents."""
    from iha.train.data import IndexedDocuments

    class Docs(IndexedDocuments):
        def __init__(self, texts: list[str]) -> None:
            self.texts = texts

        def __len__(self) -> int:
            return len(self.texts)

        def read(self, index: int) -> tuple[list[int], list[bool] | None]:
            ids = tokenizer.encode(self.texts[index]) + [tokenizer.eos_token_id]
            return ids, [i % 2 == 0 for i in range(len(ids))]

    if split == "val":
        return None
    return Docs([f"{split} document {i}" for i in range(5)])
