"""Multi-process training on CPU (gloo): DDP and FSDP2 match one process with the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from iha_train_stub import (
    distributed_worker,
    free_port,
    tiny_config,
    write_corpus,
)

from iha.models import DecoderLM, ModelConfig
from iha.train import checkpoint as ckpt
from iha.train import train

SECTIONS = {
    # global batch 8 = micro 2 x accum 2 x world 2 (and micro 2 x accum 4 in one process)
    "train": {"max_steps": 4, "batch_size": 8, "micro_batch_size": 2, "val_every": 2},
    "checkpoint": {"every": 2, "keep": 2},
}


def losses(run_dir, split="train"):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["split"] == split}


STRATEGIES = ("ddp", "fsdp")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One single-process run and, in one pair of spawned processes, a DDP and an FSDP2 run."""
    tmp = tmp_path_factory.mktemp("dist")
    corpus = write_corpus(tmp / "corpus.txt")
    train(tiny_config(tmp / "single", corpus, **SECTIONS))
    cfgs = [
        tiny_config(tmp / s, corpus, distributed={"strategy": s}, **SECTIONS) for s in STRATEGIES
    ]
    args = (2, [free_port() for _ in cfgs], [c.to_dict() for c in cfgs])
    mp.spawn(distributed_worker, args=args, nprocs=2, join=True)
    return tmp, cfgs[0].model


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_process_run_matches_one_process_with_the_same_global_batch(runs, strategy):
    tmp, model_cfg = runs
    run, single_dir = tmp / strategy, tmp / "single"
    want, got = losses(single_dir), losses(run)
    assert sorted(got) == [1, 2, 3, 4]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-6), step
    assert losses(run, "val") == pytest.approx(losses(single_dir, "val"), rel=1e-5)
    # one consistent, full (unsharded) checkpoint, loadable into a plain model
    multi = ckpt.load_checkpoint(ckpt.resolve_checkpoint(run))
    one = ckpt.load_checkpoint(ckpt.resolve_checkpoint(single_dir))
    assert multi[2]["step"] == 4 and multi[2]["world_size"] == 2
    assert multi[2]["data"] == one[2]["data"]
    DecoderLM(ModelConfig.from_dict(model_cfg)).load_state_dict(multi[0])
    for name, w in one[0].items():
        torch.testing.assert_close(multi[0][name], w, rtol=1e-4, atol=1e-5)
    assert set(multi[1]["optimizer"]["state"]) == set(one[1]["optimizer"]["state"])


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("IHA_SLOW_TESTS") != "1",
    reason="launches torchrun with 2 workers (~15 s of CPU); set IHA_SLOW_TESTS=1 to run",
)
def test_torchrun_launches_iha_train_with_ddp(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "iha", "train", "cpu-demo", "--run-dir", str(run)]  # fmt: skip
    for item in ("train.max_steps=2", "train.batch_size=4", "train.log_every=1",
                 "train.val_batches=1", "logging.plots=false"):  # fmt: skip
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    assert ckpt.read_meta(ckpt.resolve_checkpoint(run))["world_size"] == 2
    assert sorted(losses(run)) == [1, 2]
