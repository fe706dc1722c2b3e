"""Nothing lost, nothing silently wrong: run-directory lock, damaged checkpoints and metrics,
config changes on resume, bad data found before training, clipping, schedule and RNG state."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from iha_train_stub import TINY_MODEL, tiny_config, write_corpus

from iha.cli import main
from iha.models import DecoderLM, ModelConfig
from iha.train import ConfigError, Trainer, train
from iha.train import checkpoint as ckpt
from iha.train.lock import RunDirLocked, RunLock
from iha.train.metrics import read_metrics

HERE = Path(__file__).resolve().parent
CKPT = {"every": 2, "keep": 3}


def tree(path: Path, lock: bool = False) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (to prove nothing was written); the lock file
    (rewritten by each process that takes the lock) only with ``lock``."""
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and (lock or p.name != ".lock")]
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


# ---------------------------------------------------------------------------------------------
# one process per run directory


HOLD = textwrap.dedent(
    """
    import sys, time
    from iha.train.lock import RunLock
    lock = RunLock(sys.argv[1]); lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_a_second_process_on_a_locked_run_dir_exits_2_naming_the_holder(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    train(tiny_config(run, corpus, train={"max_steps": 2}))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = tree(run, lock=True)  # the holder wrote its pid into the lock file
        rc = main(["train", str(run), "--resume", "--set", "train.max_steps=4"])
        assert rc == 2
        err = capsys.readouterr().err
        assert "in use by another training process" in err and f"pid {holder.pid}" in err
        assert tree(run, lock=True) == before  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: the kernel dropped its lock, training goes on
    result = train(tiny_config(run, corpus, train={"max_steps": 4}), resume=True)
    assert result.step == 4 and f"pid {holder.pid}" not in (run / ".lock").read_text()


def test_the_lock_is_exclusive_within_a_process_and_released_after_a_run(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    lock = RunLock(run)
    lock.acquire()
    with pytest.raises(RunDirLocked, match=f"pid {os.getpid()}"):
        train(tiny_config(run, corpus, train={"max_steps": 1}))
    assert not (run / "checkpoints").exists()
    lock.release()
    train(tiny_config(run, corpus, train={"max_steps": 1}))
    again = RunLock(run)
    again.acquire()  # the finished run released it
    again.release()


# ---------------------------------------------------------------------------------------------
# damaged checkpoints: verified, the newest intact one used, the damage named


def _three_checkpoints(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    train(tiny_config(run, corpus, checkpoint=CKPT))  # steps 2, 4, 6
    return corpus, run, run / "checkpoints"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0x01  # inside the tensor data: same size, other content
    path.write_bytes(bytes(data))


DAMAGE = {  # what is done to the newest checkpoint, and how the skip note names it
    "truncated weights": (lambda c: _truncate(c / "model.safetensors"), "bytes, the manifest says"),
    "one flipped bit in the weights": (
        lambda c: _flip_a_byte(c / "model.safetensors"),
        "does not match its SHA-256",
    ),
    "garbage optimizer state": (
        lambda c: (c / "state.pt").write_bytes(b"\x00garbage" * 50),
        "state.pt' has 400 bytes",
    ),
    "truncated meta.json": (lambda c: _truncate(c / "meta.json"), "meta.json' has"),
    "missing manifest": (lambda c: (c / "manifest.json").unlink(), "manifest.json' is missing"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_falls_back_to_the_newest_intact_checkpoint_and_says_which(tmp_path, capsys, damage):
    corpus, run, root = _three_checkpoints(tmp_path)
    make_damage, named = DAMAGE[damage]
    make_damage(root / "step_00000006")
    cfg = tiny_config(run, corpus, checkpoint=CKPT, train={"max_steps": 8})
    trainer = Trainer(cfg, resume=True)
    try:
        trainer.prepare()
        assert trainer.resumed_from == root / "step_00000004" and trainer.step == 4
        assert any("step_00000006" in n and named in n for n in trainer.notes), trainer.notes
        assert any("newest intact checkpoint" in n and "step_00000004" in n for n in trainer.notes)
    finally:
        trainer.close()


def test_a_binary_latest_pointer_is_ignored(tmp_path):
    _, _, root = _three_checkpoints(tmp_path)
    (root / "latest").write_bytes(b"\xff\xfe\x00\x01")
    assert ckpt.find_intact_checkpoint(root) == (root / "step_00000006", [])


def test_when_no_checkpoint_is_intact_the_cli_exits_2_naming_the_files(tmp_path, capsys):
    _, run, root = _three_checkpoints(tmp_path)
    for c in ckpt.list_checkpoints(root):
        _truncate(c / "model.safetensors")
    before = tree(run)
    assert main(["train", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no intact checkpoint" in err
    for step in (2, 4, 6):
        assert f"step_0000000{step}/model.safetensors" in err
    assert tree(run) == before


def test_every_reader_refuses_a_checkpoint_that_fails_its_manifest(tmp_path, capsys):
    """generate, export / eval (load_trained_model), the lm-eval bridge and train.init_from all
    check the manifest: one flipped byte in the weights is an error naming the file."""
    from iha.eval.lm_eval_bridge import resolve_pretrained
    from iha.train.trainer import load_trained_model

    corpus, run, root = _three_checkpoints(tmp_path)
    _flip_a_byte(root / "step_00000006" / "model.safetensors")
    damaged = "step_00000006/model.safetensors' does not match its SHA-256"
    for path in (run, root, root / "step_00000006"):
        with pytest.raises(ckpt.CheckpointError, match=damaged):
            load_trained_model(path)
    with pytest.raises(ckpt.CheckpointError, match="newest intact checkpoint is .*step_00000004"):
        load_trained_model(run)
    with pytest.raises(ckpt.CheckpointError, match=damaged):
        resolve_pretrained(str(run))
    load_trained_model(root / "step_00000004")  # an intact one still loads
    assert main(["generate", str(run), "--prompt", "ab", "--max-new-tokens", "2"]) == 2
    assert damaged in capsys.readouterr().err
    for init in (run, root / "step_00000006"):
        with pytest.raises(ConfigError, match="train.init_from.*" + damaged):
            train(tiny_config(tmp_path / "fine", corpus, train={"init_from": str(init)}))
        assert not (tmp_path / "fine" / "checkpoints").exists()


@pytest.mark.parametrize("error", ["ENOSPC", "safetensors"])
def test_a_full_disk_during_a_checkpoint_stops_cleanly_and_leaves_no_temp_files(
    tmp_path, capsys, monkeypatch, error
):
    corpus, run, root = _three_checkpoints(tmp_path)  # steps 2, 4, 6
    stale = root / ".tmp-step_00000002-999999999"  # left by a process that died mid-write
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 100)
    real_save = ckpt.save_model_weights

    def full_disk(path, state):
        real_save(path, state)  # a partly written directory, then the disk is full
        if error == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device")
        from safetensors import SafetensorError

        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: "
                              "StorageFull, message: \"No space left on device\" })")

    monkeypatch.setattr(ckpt, "save_model_weights", full_disk)
    before = tree(root)
    cfg = tiny_config(run, corpus, checkpoint=CKPT, train={"max_steps": 8})
    result = train(cfg, resume=True)
    assert (result.reason, result.exit_code, result.step) == ("nosave", 4, 8)
    err = capsys.readouterr().err
    assert "could not write checkpoint step_00000008" in err and "the disk is full" in err
    assert "newest saved checkpoint is " + str(root / "step_00000006") in err
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no temp files
    del before[str(stale.relative_to(root) / "model.safetensors")]
    assert tree(root) == before  # the saved checkpoints are untouched
    assert ckpt.find_intact_checkpoint(root) == (root / "step_00000006", [])


def test_checkpoint_files_and_latest_are_written_in_a_crash_safe_order(tmp_path, monkeypatch):
    """The manifest is written after the files it vouches for, the directory is renamed into
    place after everything in it is written, and ``latest`` moves only after that."""
    events: list[str] = []
    real_replace, real_manifest = os.replace, ckpt._write_manifest

    def replace(src, dst):
        events.append(f"rename {Path(dst).name}")
        return real_replace(src, dst)

    def manifest(folder, names):
        assert all((folder / n).is_file() for n in names)
        events.append("manifest")
        return real_manifest(folder, names)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    monkeypatch.setattr(ckpt, "_write_manifest", manifest)
    ckpt.save_checkpoint(tmp_path, 5, {"w": torch.ones(2)}, {"x": 1}, {"m": 1}, keep=2)
    assert events == ["manifest", "rename step_00000005", "rename latest"]
    ckpt.verify_checkpoint(tmp_path / "step_00000005")


# ---------------------------------------------------------------------------------------------
# metrics.jsonl torn by a crash


def test_a_torn_final_metrics_line_is_dropped_on_resume_and_by_plot(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    train(tiny_config(run, corpus, checkpoint=CKPT), stop_at=4)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"split": "train", "step": 5, "lo')  # the crash
    with pytest.warns(UserWarning, match="torn final line"):
        assert max(r["step"] for r in read_metrics(run)) == 4
    result = train(tiny_config(run, corpus, checkpoint=CKPT), resume=True)
    assert result.step == 6 and "torn final line" in capsys.readouterr().err
    steps = [r["step"] for r in read_metrics(run) if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_torn_middle_metrics_line_is_dropped_on_resume_and_the_file_kept(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    train(tiny_config(run, corpus, checkpoint=CKPT), stop_at=4)
    path = run / "metrics.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][: len(lines[1]) // 2]  # torn in the middle of the file
    lines[2] = b"\xff\xfe not utf-8"
    damaged = b"\n".join(lines)
    path.write_bytes(damaged)
    assert main(["train", str(run), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "dropped 2 unreadable line(s) (2, 3)" in err and "metrics.jsonl.damaged-1" in err
    assert (run / "metrics.jsonl.damaged-1").read_bytes() == damaged
    steps = [r["step"] for r in read_metrics(run) if r["split"] == "train"]
    assert steps == sorted(steps) and steps[-1] == 6 and 5 in steps


def test_a_bad_line_inside_metrics_names_the_file_and_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl' line 2 is not valid JSON"):
        read_metrics(tmp_path)


# ---------------------------------------------------------------------------------------------
# config changes on resume: applied (schedule re-derived) or refused


def reference_lr(step: int, peak: float, warmup: int, total: int, floor: float) -> float:
    """Linear warmup then cosine to ``floor * peak``, the documented recipe, written out."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def logged_lrs(run: Path) -> dict[int, float]:
    return {r["step"]: r["lr"] for r in read_metrics(run) if r["split"] == "train"}


def test_the_logged_lr_of_every_step_is_the_schedule(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    train(tiny_config(run, corpus, train={"max_steps": 8}, optim={"warmup_steps": 3}))
    want = {s + 1: reference_lr(s, 3e-2, 3, 8, 0.01) for s in range(8)}
    assert logged_lrs(run) == pytest.approx(want, rel=1e-12)


def test_the_lr_is_what_the_optimizer_applies(tmp_path):
    """An SGD-like check on AdamW's first step: |update| = lr for every touched weight."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    cfg = tiny_config(tmp_path / "r", corpus, optim={"weight_decay": 0.0, "warmup_steps": 4})
    trainer = Trainer(cfg)
    try:
        trainer.prepare()
        w = trainer.model.lm_head.weight
        before = w.detach().clone()
        trainer.train_step(trainer.data.train.next_batch())
        trainer.optimizer.step()
        step = (w.detach() - before).abs()
        moved = step[step > 0]
        # first Adam step: m / sqrt(v + eps) ~ sign(g): a weight moves by at most lr, and by lr
        # unless its gradient is as small as eps; lr is the warmup's first value, peak / 4
        lr = 3e-2 / 4
        assert float(moved.max()) == pytest.approx(lr, rel=1e-5)
        assert float(moved.median()) == pytest.approx(lr, rel=1e-2)
    finally:
        trainer.close()


def test_resume_applies_a_new_lr_and_max_steps_with_the_schedule_re_derived(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    train(tiny_config(run, corpus, checkpoint=CKPT), stop_at=4)
    cfg = tiny_config(run, corpus, checkpoint=CKPT, optim={"lr": 1e-2}, train={"max_steps": 10})
    result = train(cfg, resume=True)
    assert result.step == 10
    err = capsys.readouterr().err
    assert "applied config changes" in err and "optim.lr: 0.03 -> 0.01" in err
    assert "train.max_steps: 6 -> 10" in err
    lrs = logged_lrs(run)
    for s in range(5, 11):
        assert lrs[s] == pytest.approx(reference_lr(s - 1, 1e-2, 2, 10, 0.01), rel=1e-12), s
    saved = json.loads((run / "config.json").read_text())
    assert saved["optim"]["lr"] == 1e-2 and saved["train"]["max_steps"] == 10


def test_resume_applies_new_optimizer_hyperparameters(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    train(tiny_config(run, corpus, checkpoint=CKPT), stop_at=4)
    new = {"weight_decay": 0.02, "betas": [0.8, 0.9], "eps": 1e-6}
    trainer = Trainer(tiny_config(run, corpus, checkpoint=CKPT, optim=new), resume=True)
    try:
        trainer.prepare()
        assert trainer.step == 4
        groups = trainer.optimizer.param_groups
        assert {g["weight_decay"] for g in groups} == {0.0, 0.02}  # norms/mixing: no decay
        assert all(g["betas"] == (0.8, 0.9) and g["eps"] == 1e-6 for g in groups)
        assert trainer.optimizer.state  # the moments themselves were restored
    finally:
        trainer.close()


@pytest.mark.parametrize(
    "change, named",
    [
        ({"model": {**TINY_MODEL, "hidden_size": 32}}, "'model.hidden_size' (16 -> 32)"),
        ({"data": {"seq_len": 8}}, "'data.seq_len' (16 -> 8)"),
        ({"train": {"batch_size": 8}}, "'train.batch_size' (4 -> 8)"),
        ({"train": {"max_steps": 3}}, "'train.max_steps'=3 is below the checkpoint's step 4"),
    ],
)
def test_resume_refuses_changes_to_the_model_data_or_batches(tmp_path, capsys, change, named):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    train(tiny_config(run, corpus, checkpoint=CKPT), stop_at=4)
    before = tree(run)
    overrides = [f"{table}.{k}={json.dumps(v)}" for table, kv in change.items()
                 for k, v in kv.items() if TINY_MODEL.get(k) != v]  # fmt: skip
    assert main(["train", str(run), "--resume", *(a for o in overrides for a in ("--set", o))]) == 2
    assert named in capsys.readouterr().err
    assert tree(run) == before
    with pytest.raises(ConfigError):
        train(tiny_config(run, corpus, checkpoint=CKPT, **change), resume=True)


# ---------------------------------------------------------------------------------------------
# gradient clipping, RNG state, activation checkpointing


def test_gradient_clipping_is_applied_and_zero_disables_it(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    for clip in (1e-3, 0.0):
        trainer = Trainer(tiny_config(tmp_path / f"r{clip}", corpus, optim={"grad_clip": clip}))
        try:
            trainer.prepare()
            _, norm = trainer.train_step(trainer.data.train.next_batch())
            after = torch.sqrt(
                sum((p.grad.double() ** 2).sum() for p in trainer.model.parameters())
            )
            if clip:
                assert norm > 10 * clip and float(after) == pytest.approx(clip, rel=1e-4)
            else:
                assert float(after) == pytest.approx(norm, rel=1e-5)
        finally:
            trainer.close()


def _dropout_model(model_cfg):
    model = DecoderLM(ModelConfig.from_dict(model_cfg))
    for layer in model.layers:
        layer.self_attn.dropout = 0.3
    return model


def test_a_run_with_dropout_resumes_bit_exactly(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    straight = train(tiny_config(tmp_path / "a", corpus), model_factory=_dropout_model)
    first = train(tiny_config(tmp_path / "b", corpus), model_factory=_dropout_model, stop_at=3)
    torch.manual_seed(12345)  # a resumed process starts with some other RNG state
    second = train(tiny_config(tmp_path / "b", corpus), model_factory=_dropout_model, resume=True)
    assert {**first.losses, **second.losses} == straight.losses
    # and the dropout does act: without it the losses differ
    plain = train(tiny_config(tmp_path / "c", corpus))
    assert plain.losses != straight.losses


def test_activation_checkpointing_trains_to_the_same_weights(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    plain = train(tiny_config(tmp_path / "a", corpus, train={"max_steps": 3}))
    cfg = tiny_config(
        tmp_path / "b", corpus, train={"max_steps": 3, "activation_checkpointing": True}
    )
    trainer = Trainer(cfg)
    try:
        trainer.prepare()
        assert trainer.model.gradient_checkpointing
    finally:
        trainer.close()
    recomputed = train(cfg)
    assert recomputed.losses == pytest.approx(plain.losses, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# data problems found before training starts


def test_a_bad_jsonl_line_anywhere_is_an_error_before_anything_is_written(tmp_path, capsys):
    lines = [json.dumps({"text": f"document {i} " * 5}) for i in range(300)]
    lines[260] = '{"text": "cut short'
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    rc = main(["train", "cpu-demo", "--run-dir", str(run), "--set", "data.source=jsonl",
               "--set", f"data.path={json.dumps(str(data))}"])  # fmt: skip
    assert rc == 2
    assert f"{data} line 261 is not valid JSON" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize(
    "bad,named",
    [
        ('{"text": "lone \\ud800 surrogate"}', "holds a lone surrogate '\\ud800' in field 'text' "
         "(character 5), which is not text and cannot be tokenized"),
        ('{"text": "x", "deep": ' + "[" * 200_000 + "]" * 200_000 + "}",
         "nests arrays or objects too deeply to be parsed"),
    ],
    ids=["lone surrogate", "200000 deep"],
)
def test_a_record_that_parses_but_cannot_be_used_is_refused_at_start_up(tmp_path, capsys, bad,
                                                                        named):
    lines = [json.dumps({"text": f"document {i} " * 5}) for i in range(300)]
    lines[250] = bad
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    rc = main(["train", "cpu-demo", "--run-dir", str(run), "--set", "data.source=jsonl",
               "--set", f"data.path={json.dumps(str(data))}"])  # fmt: skip
    assert rc == 2
    assert f"{data} line 251 {named}" in capsys.readouterr().err
    assert not run.exists()


def test_non_utf8_bytes_are_counted_and_reported_with_the_file(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    raw = corpus.read_bytes().split(b"\n")
    raw[3] += b" caf\xe9"
    raw[7] += b" \xff\xfe"
    corpus.write_bytes(b"\n".join(raw))
    train(tiny_config(tmp_path / "r", corpus, train={"max_steps": 1}))
    err = capsys.readouterr().err
    assert f"data file {str(corpus)!r}: 2 line(s) hold bytes that are not UTF-8" in err
    assert "first at line 4" in err


def test_malformed_yaml_config_exits_2_naming_the_file(tmp_path, capsys):
    pytest.importorskip("yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: [1, 2\n")
    assert main(["train", str(bad), "--run-dir", str(tmp_path / "run")]) == 2
    assert f"config file {str(bad)!r} is not valid YAML" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_gradient_is_that_of_the_token_mean_loss_of_the_whole_batch(tmp_path):
    """Two accumulated micro-batches give the gradient of one mean over all masked tokens."""
    import copy

    corpus = write_corpus(tmp_path / "corpus.txt")
    cfg = tiny_config(
        tmp_path / "r", corpus, optim={"grad_clip": 0.0}, train={"micro_batch_size": 2}
    )
    trainer = Trainer(cfg)
    try:
        trainer.prepare()
        assert trainer.accum == 2
        reference = copy.deepcopy(trainer.model)
        batch = trainer.data.train.next_batch()
        trainer.train_step(batch)
        logits = reference(batch.inputs).double()  # (B, N, V), the whole batch at once
        keep = batch.loss_mask
        loss = torch.nn.functional.cross_entropy(logits[keep], batch.targets[keep])
        loss.backward()
        for p, q in zip(trainer.model.parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad.double(), q.grad.double(), rtol=1e-4, atol=1e-7)
    finally:
        trainer.close()
