"""``iha bench --suite decode`` at --quick sizes: the report's structure, and FLOP ratios equal to
an independent per-token count (timings are not checked: numbers at these sizes mean nothing)."""

from __future__ import annotations

import json

import pytest

from iha.cli import main as cli_main

pytest.importorskip("transformers")


def _iha_layer(t: int, D: int, H: int, G: int, d: int, P: int, W: int | None) -> int:
    """Per-token FLOPs of an IHA layer (flat mask, global collapse) for the token at t."""
    keys = sum(min(t * P + p + 1, (W or t + 1) * P) for p in range(P))  # flat mask, window W
    return (2 * D * d * (2 * H + 2 * G) + 2 * d * P * (H * H + 2 * G * G) + 2 * d * H * P * H
            + 4 * d * H * keys)


def _mha_layer(t: int, D: int, H: int, G: int, d: int) -> int:
    return 2 * D * d * (2 * H + 2 * G) + 4 * d * H * (t + 1)


def _converted_layer(t: int, D: int, H: int, G: int, d: int, P: int) -> int:
    """Exact conversion: token mask, every pseudo query sees all P pseudo keys of t+1 tokens."""
    return (2 * D * d * (2 * H + 2 * G) + 2 * d * P * (H * H + 2 * G * G) + 2 * d * H * P * H
            + 4 * d * H * P * P * (t + 1))


def _model(layers, t: int, D: int, F: int, V: int) -> int:
    """One token at position t through the layers, a SwiGLU MLP each, no LM head."""
    return sum(layer(t) for layer in layers) + len(layers) * 6 * D * F


def _ratios(num, den, prompt: int, steps: int, D: int, F: int, V: int):
    """(prefill, decode) FLOP ratios; prefill's LM head covers the last token only."""
    def prefill(layers):
        return sum(_model(layers, t, D, F, V) for t in range(prompt)) + 2 * D * V

    def decode(layers):  # after prefill and one untimed step: tokens prompt+1 ...
        return sum(_model(layers, t, D, F, V) + 2 * D * V
                   for t in range(prompt + 1, prompt + 1 + steps))

    return prefill(num) / prefill(den), decode(num) / decode(den)


def test_decode_suite_reports_time_and_flop_ratios(tmp_path):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--quick", "--suite", "decode", "--repeats", "1",
                     "--json", str(out)]) == 0
    suite = json.loads(out.read_text())["suites"]["decode"]
    rows = {r["model"]: r for r in suite["extra"]["rows"]}
    assert set(rows) == {"iha / global", "iha_global / global", "converted / original"}
    prompt, steps = suite["config"]["prompt"], suite["config"]["steps"]
    for row in rows.values():
        assert row["prompt"] == prompt and row["steps"] == steps
        assert row["prefill time ratio"] == pytest.approx(
            row["baseline prefill tok/s"] / row["prefill tok/s"])
        assert row["decode time ratio"] == pytest.approx(
            row["baseline decode tok/s"] / row["decode tok/s"])
        assert row["faults/token"] >= 0 and row["baseline faults/token"] >= 0
    # the --quick native models: D 32, H 2, G 1, d 16, FFN 64, 259 tokens, P 2, IHA window 8
    n = suite["config"]["native"]
    assert (n["hidden"], n["heads"], n["kv_heads"], n["head_dim"], n["P"], n["iha_window"]) == (
        32, 2, 1, 16, 2, 8)
    D, H, G, d, F, V, P, W = 32, 2, 1, 16, 64, 259, 2, 8

    def mha(t):
        return _mha_layer(t, D, H, G, d)

    def local(t):
        return _iha_layer(t, D, H, G, d, P, W)

    def glob(t):
        return _iha_layer(t, D, H, G, d, P, None)

    cases = {
        "iha / global": ([local] * 4 + [mha], [mha] * 5),
        "iha_global / global": ([glob] * 5, [mha] * 5),
    }
    for name, (num, den) in cases.items():
        pf, df = _ratios(num, den, prompt, steps, D, F, V)
        assert rows[name]["prefill FLOP ratio"] == pytest.approx(pf, rel=1e-12)
        assert rows[name]["decode FLOP ratio"] == pytest.approx(df, rel=1e-12)
    # the --quick random Llama: D 64, H 4, G 2, d 16, FFN 128, vocab 128, 2 layers, P 2
    D, H, G, d, F, V = 64, 4, 2, 16, 128, 128

    def conv(t):
        return _converted_layer(t, D, H, G, d, 2)

    def orig(t):
        return _mha_layer(t, D, H, G, d)

    pf, df = _ratios([conv] * 2, [orig] * 2, prompt, steps, D, F, V)
    assert rows["converted / original"]["prefill FLOP ratio"] == pytest.approx(pf, rel=1e-12)
    assert rows["converted / original"]["decode FLOP ratio"] == pytest.approx(df, rel=1e-12)
    ratios = {r["name"]: r for r in suite["ratios"]}
    assert len(ratios) == 6
    for name, row in rows.items():
        for what in ("prefill", "decode"):
            r = ratios[f"{name} {what}: time ratio / FLOP ratio"]
            assert r["value"] == pytest.approx(
                row[f"{what} time ratio"] / row[f"{what} FLOP ratio"])
            assert r["target"] == 1.1 and r["met"] == (r["value"] <= 1.1)


def test_decode_suite_wants_both_model_directories(capsys):
    assert cli_main(["bench", "--quick", "--suite", "decode", "--model", "x"]) == 2
    assert "both --model DIR and --converted DIR" in capsys.readouterr().err
    assert cli_main(["bench", "--quick", "--suite", "decode", "--steps", "0"]) == 2
