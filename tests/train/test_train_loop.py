"""The training loop: exact resume, stopping on signals and on non-finite losses."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from iha_train_stub import tiny_config, write_corpus

from iha.models import DecoderLM, ModelConfig
from iha.train import ConfigError, train
from iha.train import checkpoint as ckpt

SECTIONS = {
    "train": {"max_steps": 6, "batch_size": 4, "micro_batch_size": 2, "val_every": 2},
    "checkpoint": {"every": 0, "keep": 2},
}


def train_lines(run_dir):
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("time"), r.pop("tokens_per_s", None)
        out.append(r)
    return out


def final_weights(run_dir):
    return ckpt.load_checkpoint(ckpt.resolve_checkpoint(run_dir))[0]


def test_resume_gives_the_uninterrupted_loss_trajectory(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    straight = train(tiny_config(tmp_path / "a", corpus, **SECTIONS))
    first = train(tiny_config(tmp_path / "b", corpus, **SECTIONS), stop_at=3)
    assert first.reason == "stopped" and first.step == 3
    second = train(tiny_config(tmp_path / "b", corpus, **SECTIONS), resume=True)
    assert sorted(second.losses) == [4, 5, 6]
    # exact equality: same data position, optimiser moments, schedule and RNG after the resume
    assert {**first.losses, **second.losses} == straight.losses
    assert {**first.val_losses, **second.val_losses} == straight.val_losses
    assert train_lines(tmp_path / "b") == train_lines(tmp_path / "a")
    wa, wb = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    cfg = tiny_config(tmp_path / "r", corpus, train={"max_steps": 2})
    result = train(cfg, resume=True)
    assert sorted(result.losses) == [1, 2]


def test_existing_run_dir_needs_resume(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    cfg = tiny_config(tmp_path / "r", corpus, train={"max_steps": 2})
    train(cfg)
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="already holds checkpoints; pass --resume"):
        train(cfg)
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before


class _Trap(DecoderLM):
    """The model, but its forward does something at a given call (counting training forwards)."""

    def __init__(self, at_call, action, model_cfg):
        super().__init__(ModelConfig.from_dict(model_cfg))
        self.at_call, self.action, self.calls = at_call, action, 0

    def forward(self, input_ids, attention_mask=None):
        logits = super().forward(input_ids, attention_mask)
        if self.training:
            self.calls += 1
            if self.calls == self.at_call:
                if self.action == "nan":
                    return logits * float("nan")
                os.kill(os.getpid(), signal.SIGTERM)
        return logits


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    cfg = tiny_config(tmp_path / "r", corpus, checkpoint={"every": 2})
    result = train(cfg, model_factory=lambda m: _Trap(5, "nan", m))  # step 5 (batch 4, micro 4)
    assert result.reason == "nonfinite" and result.exit_code == 3 and result.step == 4
    assert "non-finite loss (nan) at step 5" in capsys.readouterr().err
    latest = ckpt.latest_checkpoint(tmp_path / "r" / "checkpoints")
    assert latest.name == "step_00000004"
    weights = ckpt.load_checkpoint(latest)[0]
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    assert max(json.loads(x)["step"] for x in (tmp_path / "r" / "metrics.jsonl").open()) == 4


def test_sigterm_finishes_the_step_saves_and_resumes_exactly(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    straight = train(tiny_config(tmp_path / "a", corpus))
    cfg = tiny_config(tmp_path / "b", corpus)
    stopped = train(cfg, model_factory=lambda m: _Trap(3, "sigterm", m))
    assert stopped.reason == "signal" and stopped.exit_code == 128 + signal.SIGTERM
    assert stopped.step == 3 and sorted(stopped.losses) == [1, 2, 3]
    assert ckpt.latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step_00000003"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    resumed = train(cfg, resume=True)
    assert {**stopped.losses, **resumed.losses} == straight.losses


def test_masked_loss_sum_matches_a_float64_brute_force():
    from iha.train.trainer import masked_loss_sum

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    targets = torch.randint(0, 7, (2, 5), generator=g)
    mask = torch.rand(2, 5, generator=g) < 0.6
    want = 0.0
    for b in range(2):
        for n in range(5):
            if mask[b, n]:
                row = logits[b, n].double()
                want += float(torch.log(torch.exp(row).sum()) - row[targets[b, n]])
    assert float(masked_loss_sum(logits, targets, mask)) == pytest.approx(want, rel=1e-6)


def test_trains_on_a_synthetic_task_with_its_own_sequence_length(tmp_path):
    cfg = tiny_config(
        tmp_path / "r",
        tmp_path / "unused.txt",
        data={"source": "synthetic", "task": "mqar",
              "task_args": {"num_pairs": 3, "num_keys": 8, "num_values": 8}},
        train={"max_steps": 3},
    )  # fmt: skip
    result = train(cfg)
    assert result.reason == "done" and sorted(result.losses) == [1, 2, 3]
    assert 3 in result.val_losses
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").open()]
    assert rows[0]["tokens"] == 4 * 9  # batch 4 x (2 * 3 pairs + 3 queries)


def test_bf16_autocast_runs_where_supported(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    cfg = tiny_config(tmp_path / "r", corpus, train={"max_steps": 2, "precision": "bf16"})
    result = train(cfg)
    assert result.reason == "done" and all(v == v for v in result.losses.values())
    weights = ckpt.load_checkpoint(ckpt.resolve_checkpoint(tmp_path / "r"))[0]
    assert all(w.dtype == torch.float32 for w in weights.values())  # master weights stay fp32


def test_tensorboard_on_without_the_package_is_a_config_error(tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorboard is installed: 'on' is valid here")
    write_corpus(tmp_path / "c.txt")
    cfg = tiny_config(tmp_path / "r", tmp_path / "c.txt", logging={"tensorboard": "on"})
    with pytest.raises(ConfigError, match="tensorboard"):
        train(cfg)
    assert not (tmp_path / "r").exists()
