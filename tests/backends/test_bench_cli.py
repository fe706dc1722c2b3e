"""``iha bench`` and benchmarks/gpu_check.py at smoke sizes: they run and report what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from iha.bench import Case, peak_memory_mb
from iha.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


def test_iha_bench_writes_json_and_markdown_with_ratios_and_targets(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    rc = cli_main(["bench", "--smoke", "--suite", "core", "window", "accuracy", "--repeats", "1",
                   "--json", str(out_json), "--markdown", str(out_md)])
    assert rc == 0
    report = json.loads(out_json.read_text())
    assert set(report["suites"]) == {"core", "window", "accuracy"}
    core = report["suites"]["core"]
    assert {"floor", "iha_flat", "iha_token", "naive_token", "mha", "mha_module"} <= set(
        core["times_ms"]
    )
    by_name = {r["name"]: r for r in core["ratios"]}
    flat = by_name["IHA core (flat) / SDPA floor"]
    expected = core["times_ms"]["iha_flat"]["median"] / core["times_ms"]["floor"]["median"]
    assert flat["value"] == expected and flat["target"] == 1.15
    assert flat["met"] == (flat["value"] <= 1.15)
    window = {r["name"]: r for r in report["suites"]["window"]["ratios"]}
    assert window["sliding-window IHA (flat) / global causal MHA"]["target"] == 1.3
    for row in report["suites"]["accuracy"]["extra"]["rows"]:
        assert row["blocked err"] <= 2 * row["reference err"]
    md = out_md.read_text()
    assert "IHA core token / flat" in md and "| variant | median ms |" in md


def test_peak_memory_is_measured_in_a_subprocess_and_grows_with_the_problem():
    small = peak_memory_mb(Case("floor", 1, 2, 64, 16, 2), torch.device("cpu"), 1)
    big = peak_memory_mb(Case("floor", 1, 2, 2048, 16, 4), torch.device("cpu"), 1)
    assert 0 <= small < big


def test_gpu_check_exits_cleanly_without_cuda_and_its_cpu_dry_run_passes():
    script = str(ROOT / "benchmarks" / "gpu_check.py")
    if not torch.cuda.is_available():
        plain = subprocess.run([sys.executable, script], capture_output=True, text=True)
        assert plain.returncode == 0 and "CUDA is not available" in plain.stdout
    dry = subprocess.run([sys.executable, script, "--cpu-dry-run"], capture_output=True,
                         text=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "correctness:" in dry.stdout
