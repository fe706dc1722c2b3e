"""Checkpoints: weights round trip, pruning, the latest pointer, and a writer killed mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from iha_train_stub import TINY_MODEL, tiny_config, write_corpus

from iha.models import DecoderLM, ModelConfig
from iha.train import checkpoint as ckpt
from iha.train import train

HERE = Path(__file__).resolve().parent


def test_weights_round_trip_with_tied_tensors(tmp_path):
    model = DecoderLM(ModelConfig.from_dict({**TINY_MODEL, "tie_word_embeddings": True}))
    ckpt.save_model_weights(tmp_path / "m.safetensors", model.state_dict())
    state = ckpt.load_model_weights(tmp_path / "m.safetensors")
    for name, t in model.state_dict().items():
        assert torch.equal(state[name], t), name
    assert state["lm_head.weight"].data_ptr() == state["embed_tokens.weight"].data_ptr()


def _save(root, step, keep=2):
    w = {"w": torch.full((2,), float(step))}
    return ckpt.save_checkpoint(root, step, w, {"x": step}, {"data": {"n": step}}, keep=keep)


def test_keeps_the_newest_k_and_points_latest_at_the_newest(tmp_path):
    root = tmp_path / "checkpoints"
    stale = root / ".tmp-step_00000009-999999"
    stale.mkdir(parents=True)
    for step in range(1, 6):
        _save(root, step)
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000004", "step_00000005"]
    assert (root / "latest").read_text().strip() == "step_00000005"
    assert not stale.exists()
    model, state, meta = ckpt.load_checkpoint(ckpt.latest_checkpoint(root))
    assert model["w"].tolist() == [5.0, 5.0] and state == {"x": 5}
    assert meta["step"] == 5 and meta["data"] == {"n": 5}


def test_saving_the_same_step_again_replaces_it(tmp_path):
    root = tmp_path / "c"
    _save(root, 3)
    ckpt.save_checkpoint(root, 3, {"w": torch.zeros(1)}, {}, {}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000003"]
    assert ckpt.load_checkpoint(root / "step_00000003")[0]["w"].tolist() == [0.0]


def test_a_broken_latest_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    _save(root, 1)
    _save(root, 2)
    (root / "latest").write_text("step_00000077\n")
    assert ckpt.latest_checkpoint(root).name == "step_00000002"
    assert ckpt.resolve_checkpoint(tmp_path).name == "step_00000002"  # from the run dir


SCRIPT = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from iha_train_stub import tiny_config
    from iha.train import checkpoint, train
    real = checkpoint.save_model_weights

    def slow_save(path, state):  # fault injection: the step-4 writer stalls after the weights
        real(path, state)
        if "step_00000004" in str(path):
            time.sleep(120)

    checkpoint.save_model_weights = slow_save
    cfg = tiny_config(Path({run!r}), Path({corpus!r}), checkpoint={{"every": 2, "keep": 3}})
    train(cfg)
    """
)


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    script = SCRIPT.format(here=str(HERE), run=str(run), corpus=str(corpus))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    root = run / "checkpoints"
    try:
        deadline = time.monotonic() + 240  # generous: a loaded machine starts torch slowly
        while time.monotonic() < deadline:  # wait until the step-4 writer is mid-write
            partial = list(root.glob(".tmp-step_00000004-*/model.safetensors"))
            if partial:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            raise AssertionError("the checkpoint writer never reached the pause")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (root / "step_00000004").exists()
    latest = ckpt.latest_checkpoint(root)
    assert latest.name == "step_00000002"
    model_state, train_state, meta = ckpt.load_checkpoint(latest)
    DecoderLM(ModelConfig.from_dict(meta["config"]["model"])).load_state_dict(model_state)
    assert meta["step"] == 2 and "optimizer" in train_state
    # the run resumes from that checkpoint, and the next save clears the half-written one
    cfg = tiny_config(run, corpus, checkpoint={"every": 2, "keep": 3})
    result = train(cfg, resume=True)
    assert min(result.losses) == 3 and result.step == 6
    assert not list(root.glob(".tmp-*"))
