"""Mutation testing of the test suite: one small semantic change at a time, the tests run.

Each mutant of the catalogue below replaces one exact snippet of one source file (the change a
plausible bug would make: a flipped comparison, a dropped term, a skipped step) and names the
tests that guard that behaviour. A mutant is *killed* when those tests fail (or crash, or time
out) and *survives* when they pass: a surviving mutant is a behaviour no test checks.

The sources are copied to a temporary folder and mutated there; the tests run against the copy
(``PYTHONPATH`` puts it before the installed package, bytecode caching is off), so the working
tree is never modified, even when a run is interrupted.

Usage (from the repository root; CPU-heavy: run it niced, not in ``make test``)::

    nice -n 10 .venv/bin/python tests/mutate.py                 # the whole catalogue
    .venv/bin/python tests/mutate.py --list                     # ids, areas, what changes
    .venv/bin/python tests/mutate.py --area checkpoint trainer  # some areas only
    .venv/bin/python tests/mutate.py --only cache-pad-ones      # one mutant
    .venv/bin/python tests/mutate.py --check                    # every snippet applies once

It prints one line per mutant and the score (killed / total); ``--json FILE`` writes the
results. Exit code 0 when the score reaches ``--target`` (default 0.9), else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


@dataclass(frozen=True)
class Mutant:
    """Replace ``old`` (which must occur exactly once in ``path``) by ``new``; ``tests`` are
    pytest arguments (files, node ids, ``-k`` expressions) that must fail."""

    id: str
    area: str
    path: str  # relative to src/iha
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


T_FUNC = "tests/test_functional.py"
T_ATT = "tests/test_attention.py"
T_PIPE = "tests/test_pipeline.py"
T_BACK = "tests/backends"
T_GUARD_BK = "tests/guards/test_backend_convert_guards.py"
T_GUARD_CG = "tests/guards/test_cache_generate_flops.py"
T_GUARD_EV = "tests/guards/test_eval_metrics_guards.py"
T_MODEL = "tests/models/test_model.py"
T_MREL = "tests/models/test_model_reliability.py"
T_CKPT = "tests/train/test_train_checkpoint.py"
T_REL = "tests/train/test_train_reliability.py"
T_LOOP = "tests/train/test_train_loop.py"
T_DATA = "tests/train/test_train_data.py"
T_CLI = "tests/test_cli.py"
T_SANDBOX = "tests/eval/test_code_sandbox.py"
T_CONV = "tests/reproduce/test_convergence.py"
T_STATS = "tests/reproduce/test_stats.py"
T_DEC = "tests/reproduce/test_decisive.py"

CATALOGUE: tuple[Mutant, ...] = (
    # ------------------------------------------------------------------ core
    Mutant("core-mix-transpose", "core", "functional.py",
           '"bmnd,mhp->bhnpd", x, alpha', '"bmnd,hmp->bhnpd", x, alpha',
           (T_FUNC,), "mixing reads alpha[target, source] instead of alpha[source, target]"),
    Mutant("core-virtual-start", "core", "functional.py",
           "torch.arange(start * n_pseudo, (start + n_tokens) * n_pseudo, device=device)",
           "torch.arange(start, start + n_tokens * n_pseudo, device=device)",
           (T_FUNC, T_ATT), "virtual positions ignore the token offset's factor P"),
    Mutant("core-token-positions", "core", "functional.py",
           "tokens.repeat_interleave(n_pseudo)", "tokens.repeat(n_pseudo)",
           (T_FUNC,), "token positions tiled instead of repeated per pseudo head"),
    Mutant("core-collapse-global", "core", "functional.py",
           '"bknpd,hkp->bhnd"', '"bknpd,khp->bhnd"',
           (T_FUNC,), "global collapse transposed"),
    Mutant("core-key-start", "core", "functional.py",
           "k_start = position_offset + Nq - Nk", "k_start = position_offset",
           (T_FUNC, T_ATT), "keys of a longer cache placed at the queries' positions"),
    Mutant("core-scale", "core", "functional.py",
           "scale = 1.0 / math.sqrt(d) if scale is None else scale",
           "scale = 1.0 / d if scale is None else scale",
           (T_FUNC,), "softmax scale 1/d instead of 1/sqrt(d)"),
    Mutant("core-pseudo-cache-rope", "core", "functional.py",
           "kt, vt = rope(k, alpha_k, position_offset), mix_heads(v, alpha_v)",
           "kt, vt = mix_heads(k, alpha_k), mix_heads(v, alpha_v)",
           (T_ATT,), "the pseudo cache stores un-rotated keys"),
    Mutant("core-dropout-in-eval", "core", "attention.py",
           "dropout_p=self.dropout if self.training else 0.0,", "dropout_p=self.dropout,",
           (T_GUARD_BK + "::test_dropout_is_off_in_eval_and_applied_unbiased_in_training",),
           "attention dropout also in eval mode"),
    Mutant("core-empty-call", "core", "attention.py",
           "if N == 0:  # nothing new", "if N < 0:  # nothing new",
           (T_MREL + "::test_zero_new_tokens_on_a_filled_cache_is_an_empty_result",),
           "zero new tokens reach the backends"),
    Mutant("core-init-collapse", "core", "attention.py",
           "collapse[:, P - 1] = 1.0", "collapse[:, 0] = 1.0",
           (T_GUARD_BK + "::test_conversion_starts_from_identity_mixing_and_a_collapse_onto"
            "_the_last_copy",), "per-head collapse init selects copy 0, not P-1"),
    Mutant("core-mask-flat-window", "core", "masks.py",
           "ok = ok & (dist < reach)", "ok = ok & (dist <= reach)",
           (T_FUNC, T_BACK), "window one pseudo token (flat) or token (token mask) too wide"),
    Mutant("core-mask-token-causal", "core", "masks.py",
           "dist = (q_idx + shift) // P - kv_idx // P  # token distance",
           "dist = (q_idx + shift) // P - kv_idx // P - 1  # token distance",
           (T_FUNC, T_BACK), "token mask hides the query's own token"),
    Mutant("core-mask-float-accepted", "core", "masks.py",
           "if mask.is_floating_point() or mask.is_complex():", "if mask.is_complex():",
           ("tests/test_masks.py", T_ATT, T_FUNC, T_MODEL),
           "float attention masks accepted (an additive 0/-inf mask read as keep/drop)"),
    Mutant("core-mask-int-values", "core", "masks.py",
           "bad = (mask != 0) & (mask != 1)", "bad = mask < 0",
           ("tests/test_masks.py", T_ATT, T_FUNC, T_MODEL),
           "integer attention masks with values above 1 accepted"),
    Mutant("core-mask-old-keyword", "core", "masks.py",
           "    if value is not None:\n        raise TypeError(",
           "    if value is not None and False:\n        raise TypeError(",
           (T_ATT, T_FUNC), "the removed key_padding_mask keyword silently ignored"),
    # ------------------------------------------------------------------ cache
    Mutant("cache-pad-ones", "cache", "cache.py",
           "old = torch.ones(B, self._held, dtype=torch.bool, device=keys.device)",
           "old = torch.zeros(B, self._held, dtype=torch.bool, device=keys.device)",
           (T_GUARD_CG,), "an unpadded prefix counted as padding when padding arrives"),
    Mutant("cache-reorder-mask", "cache", "cache.py",
           "self.attention_mask = self.attention_mask[index]",
           "self.attention_mask = self.attention_mask",
           (T_GUARD_CG,), "beam reordering leaves the padding rows behind"),
    Mutant("cache-window-unbounded", "cache", "cache.py",
           "keep = held if self.max_tokens is None else min(held, self.max_tokens)",
           "keep = held",
           (T_ATT, T_MODEL), "sliding-window caches keep every token"),
    Mutant("cache-offset", "cache", "cache.py",
           "self.offset = start + n_new", "self.offset = keep",
           (T_ATT, T_MODEL), "the offset stops at the window size"),
    Mutant("cache-nbytes", "cache", "cache.py",
           "self.keys.numel() * self.keys.element_size() * 2",
           "self.keys.numel() * self.keys.element_size()",
           (T_GUARD_CG, T_ATT), "cache bytes forget the values"),
    Mutant("cache-rowbuffer-compact", "cache", "cache.py",
           "self.data[:, :, :held] = self.data[:, :, self.start : self.end].clone()",
           "self.data[:, :, :held] = self.data[:, :, :held].clone()",
           ("tests/test_cache.py",), "a full buffer keeps its oldest rows, not the held ones"),
    Mutant("cache-rowbuffer-keep-last", "cache", "cache.py",
           "self.start = max(self.start, self.end - n)", "self.start = self.start",
           ("tests/test_cache.py", T_ATT), "the buffer never drops rows a window no longer needs"),
    Mutant("cache-converted-kept-identity", "cache", "hf/convert.py",
           "and state[0] is held_before", "and True",
           ("tests/hf/test_converted_decode.py",),
           "converted layers serve kept pseudo keys after the HF cache was reordered"),
    Mutant("cache-converted-window", "cache", "hf/convert.py",
           '"token", 1, N, n_k, q_start=n_k - N, k_start=0, window=window',
           '"token", 1, N, n_k, q_start=n_k - N, k_start=0, window=None',
           ("tests/hf/test_converted_decode.py",),
           "cached converted layers forget the sliding window among several new tokens"),
    Mutant("cache-bench-decode-lm-head", "cache", "cli/bench_decode.py",
           "return total + steps * (_dense_flops(arch) + 2 * arch.hidden * arch.vocab)",
           "return total + steps * _dense_flops(arch)",
           ("tests/backends/test_bench_decode.py",),
           "the decode suite's FLOP count leaves out the LM head"),
    # ------------------------------------------------------------------ backends
    Mutant("backends-band-digest-unchecked", "backends", "backends/band.py",
           "return hashlib.sha256(lib.read_bytes()).hexdigest() == want",
           "return lib.exists()",
           ("tests/backends/test_band_loader.py",),
           "a damaged (cut short) compiled library is loaded instead of rebuilt"),
    Mutant("backends-band-wait-unbounded", "backends", "backends/band.py",
           "            if waited >= limit:", "            if False:",
           ("tests/backends/test_band_loader.py::test_a_waiting_process_says_what_it_waits_for"
            "_and_falls_back_after_the_limit",),
           "a process waiting for another's kernel build never gives up"),
    Mutant("backends-band-wait-ignores-signals", "backends", "backends/band.py",
           "            if watch.received is not None:", "            if False:",
           ("tests/backends/test_band_loader.py::test_sigterm_while_waiting_is_not_held_up",),
           "SIGTERM reaches the trainer's handler but the wait for the kernel build goes on"),
    Mutant("backend-linear-mask", "backends", "backends/reference.py",
           "weights = scores * allowed", "weights = scores",
           (T_GUARD_BK + "::test_linear_kernel_respects_the_mask_and_padding",),
           "linear kernel ignores the mask"),
    Mutant("backend-reference-dropout", "backends", "backends/reference.py",
           "weights = torch.nn.functional.dropout(weights, p=dropout_p)",
           "weights = weights * (1.0 - dropout_p)",
           (T_GUARD_BK,), "reference dropout replaced by a constant scaling"),
    Mutant("backend-reference-dead-rows", "backends", "backends/reference.py",
           "weights = torch.softmax(scores, dim=-1) * alive",
           "weights = torch.softmax(scores, dim=-1)",
           (T_BACK, T_FUNC), "queries with no key attend uniformly instead of giving zeros"),
    Mutant("backend-sdpa-dead-rows", "backends", "backends/sdpa.py",
           "return out if alive is None else out * alive", "return out",
           (T_BACK, T_FUNC), "sdpa: queries with no key not zeroed"),
    Mutant("backend-sdpa-causal", "backends", "backends/sdpa.py",
           "qt, kt, vt, is_causal=True, scale=scale, dropout_p=dropout_p",
           "qt, kt, vt, is_causal=False, scale=scale, dropout_p=dropout_p",
           (T_BACK, T_FUNC), "sdpa fast path without the causal mask"),
    Mutant("backend-blocked-dropout", "backends", "backends/blocked.py",
           "if dropout_p > 0.0:", "if dropout_p > 1.0:",
           (T_GUARD_BK + "::test_dropout_is_off_in_eval_and_applied_unbiased_in_training",),
           "blocked backend drops the dropout"),
    Mutant("backend-blocked-grouped-dead-rows", "backends", "backends/blocked.py",
           "return out * alive  # (B|1, 1, Lq, 1) over every head", "return out",
           (T_BACK, T_FUNC), "few-row blocked attention: queries with no key not zeroed"),
    Mutant("backend-blocked-grouped-heads", "backends", "backends/blocked.py",
           "q = qt.reshape(B, G, H // G * Lq, d)",
           "q = qt.transpose(1, 2).reshape(B, G, H // G * Lq, d)",
           (T_BACK, T_FUNC), "few-row blocked attention pairs query heads with the wrong group"),
    Mutant("backend-flex-dropout", "backends", "backends/flex.py",
           "if dropout_p > 0.0:", "if dropout_p > 1.0:",
           (T_GUARD_BK + "::test_dropout_is_off_in_eval_and_applied_unbiased_in_training",),
           "flex backend drops the dropout"),
    Mutant("backend-padding-expand", "backends", "masks.py",
           "return attention_mask.repeat_interleave(n_pseudo, dim=-1)",
           "return attention_mask.repeat(1, n_pseudo)",
           (T_BACK, T_FUNC), "padding of token n applied to the wrong pseudo keys"),
    Mutant("backend-gather-tile-sum", "backends", "backends/csrc/band_attention.cpp",
           "for (int64_t i = 0; i < M * HP; ++i) partial[i] += tile[i];",
           "for (int64_t i = 0; i < M * HP; ++i) partial[i] = tile[i];",
           (T_BACK + "/test_mixing.py",),
           "compiled gather's mixing-weight gradient keeps only a thread's last token tile"),
    Mutant("backend-gather-rope-forward", "backends", "backends/csrc/band_attention.cpp",
           "cp, sp, row, d, true);", "cp, sp, row, d, false);",
           (T_BACK + "/test_mixing.py",),
           "compiled gather rotates gradients by RoPE instead of its transpose"),
    Mutant("backend-fused-dr-head", "backends", "backends/csrc/band_attention.cpp",
           "partial[(h2 * H + h) * P + p] += tile[h2 * P + p];",
           "partial[(h * H + h2) * P + p] += tile[h2 * P + p];",
           (T_BACK + "/test_fused.py",),
           "fused backward's collapse gradient transposes the two head indices"),
    Mutant("backend-fused-grouped-pseudo", "backends", "backends/csrc/band_attention.cpp",
           "grouped + p * stride + t * n, cp, sp,", "grouped + t * n, cp, sp,",
           (T_BACK + "/test_fused.py",),
           "fused core gives every pseudo row of a block pseudo-head 0's mixed query / gradient"),
    Mutant("backend-fused-rows-grouped", "backends", "backends/csrc/band_attention.cpp",
           "n, grouped + p * stride + t * n);", "n, grouped + t * n);",
           (T_BACK + "/test_fused.py",),
           "fused core collapses every pseudo row of a block with pseudo-head 0's weights"),
    Mutant("backend-band-unnormalised", "backends", "backends/csrc/band_attention.cpp",
           "inv_out[r] = scalar_t(1) / sum;", "inv_out[r] = scalar_t(1);",
           (T_BACK + "/test_backend_band.py",),
           "band kernel's forward leaves the output rows unnormalised"),
    Mutant("backend-band-key-width", "backends", "backends/csrc/band_attention.cpp",
           "k1 = k0 + width;", "k1 = k0 + width - 16;",
           (T_BACK + "/test_backend_band.py",),
           "band kernel's widened key range drops the block's last 16 keys"),
    Mutant("backend-band-overwrite-grads", "backends", "backends/csrc/band_attention.cpp",
           "const int64_t split = std::min(std::max(filled, k0), k1);",
           "const int64_t split = k0;",
           (T_BACK + "/test_backend_band.py",),
           "band kernel's backward overwrites key/value gradient rows an earlier block wrote"),
    Mutant("backend-band-task-order", "backends", "backends/csrc/band_attention.cpp",
           "return t % 2 == 0 ? t / 2 : n - 1 - t / 2;", "return t % 2 == 0 ? t / 2 : n - 1 - t;",
           (T_BACK + "/test_backend_band.py", T_BACK + "/test_fused.py"),
           "band kernel's balanced task order skips some query blocks and repeats others"),
    Mutant("backend-window-no-halo", "backends", "backends/csrc/band_attention.cpp",
           "if (halo.b >= 0) halos.push_back(std::move(halo));", "(void)halo;",
           (T_BACK + "/test_fused.py",),
           "fused window backward drops the key gradients a thread adds to the tokens of the "
           "thread before it"),
    Mutant("backend-window-gather-early", "backends", "backends/csrc/band_attention.cpp",
           "gather_keys(c.first);  // no later block",
           "gather_keys(c.first + 1);  // no later block",
           (T_BACK + "/test_fused.py",),
           "fused window backward gathers a key token's gradient before the last block that "
           "reads it"),
    Mutant("backend-panel-last-partial", "backends", "backends/csrc/band_attention.cpp",
           "c1 = std::min<int64_t>(K, (b + 15) / 16 * 16);",
           "c1 = std::min<int64_t>(K, b / 16 * 16);",
           (T_BACK + "/test_fused.py",),
           "window path's packed score product skips a row group's last, partly seen panel"),
    Mutant("backend-panel-tail-mask", "backends", "backends/csrc/band_attention.cpp",
           ": (w > 16 ? __mmask16((1u << (w - 16)) - 1) : __mmask16(0));",
           ": (w > 16 ? __mmask16((1u << (w - 17)) - 1) : __mmask16(0));",
           (T_BACK + "/test_fused.py",),
           "AVX-512 score tile stores one column too few of a partial second panel"),
    Mutant("backend-panel-start-unaligned", "backends", "backends/csrc/band_attention.cpp",
           "const int64_t start = pan.first + (k0 - pan.first) / 16 * 16;",
           "const int64_t start = k0;",
           (T_BACK + "/test_fused.py",),
           "window path reads a block's keys from panels as if its first key started one"),
    Mutant("backend-panel-group-rows", "backends", "backends/csrc/band_attention.cpp",
           "b = std::max<int64_t>(std::min<int64_t>(band.hi(i + rb - 1) - K0 + 1, K), a);",
           "b = std::max<int64_t>(std::min<int64_t>(band.hi(i) - K0 + 1, K), a);",
           (T_BACK + "/test_fused.py",),
           "window path's band products take a row group's keys from its first row only"),
    Mutant("backend-band-add-rows-last-key", "backends", "backends/csrc/band_attention.cpp",
           "while (rb < R && band.lo(i0 + rb) - K0 <= j + kb - 1) ++rb;",
           "while (rb < R && band.lo(i0 + rb) - K0 < j + kb - 1) ++rb;",
           (T_BACK + "/test_fused.py",),
           "key gradient rows of a 4-key group skip the rows that see only its last key"),
    Mutant("backend-band-add-rows-overwrite", "backends", "backends/csrc/band_attention.cpp",
           "const __m512 base = ADD ? _mm512_maskz_loadu_ps(m[v], o) : _mm512_setzero_ps();",
           "const __m512 base = _mm512_setzero_ps();",
           (T_BACK + "/test_fused.py",),
           "AVX-512 key gradient tile overwrites the ring's rows instead of adding to them"),
    Mutant("backend-band-product-alpha", "backends", "backends/csrc/band_attention.cpp",
           "band_product(dPm, R, K, kb, d, k0, band, i0, scale, dqb);",
           "band_product(dPm, R, K, kb, d, k0, band, i0, scalar_t(1), dqb);",
           (T_BACK + "/test_fused.py",),
           "window path's query gradient drops the softmax scale"),
    Mutant("backend-window-chunk-dq-column", "backends", "backends/csrc/band_attention.cpp",
           "dqbuf.data() + (h * P + p) * wq + (n0 - c.n0 + t) * d,",
           "dqbuf.data() + (h * P + p) * wq + t * d,",
           (T_BACK + "/test_fused.py",),
           "fused window backward puts every block's query gradient rows at its chunk's first "
           "tokens"),
    Mutant("backend-window-chunk-collapse", "backends", "backends/csrc/band_attention.cpp",
           "// omix (HP, chunk tokens * dv): the output rows grouped by (head, p)\n"
           "            rows_to_grouped(ob, omix.data() + h * P * wc + (n0 - c.n0) * dv,",
           "// omix (HP, chunk tokens * dv): the output rows grouped by (head, p)\n"
           "            rows_to_grouped(ob, omix.data() + h * P * wc,",
           (T_BACK + "/test_fused.py",),
           "fused window forward collapses every block's output rows into its chunk's first "
           "tokens"),
    Mutant("backend-window-grads-not-zeroed", "backends", "backends/csrc/band_attention.cpp",
           "for (int64_t h = 0; h < heads && with_grads; ++h) {",
           "for (int64_t h = 0; h < heads && with_grads && false; ++h) {",
           (T_BACK + "/test_fused.py",),
           "fused window backward accumulates key gradients onto a ring's stale rows"),
    Mutant("backend-window-mix-row-lane", "backends", "backends/csrc/band_attention.cpp",
           "_mm512_loadu_ps(xm + 48), s3);\n    }\n    _mm512_storeu_ps(out + i0, s0);",
           "_mm512_loadu_ps(xm + 32), s3);\n    }\n    _mm512_storeu_ps(out + i0, s0);",
           (T_BACK + "/test_fused.py",),
           "AVX-512 row mixing reads the wrong quarter of a 64-wide chunk"),
    Mutant("backend-window-rope-sign", "backends", "backends/csrc/band_attention.cpp",
           "_mm512_storeu_ps(out, _mm512_fnmadd_ps(s2,",
           "_mm512_storeu_ps(out, _mm512_fmadd_ps(s2,",
           (T_BACK + "/test_fused.py",),
           "AVX-512 mixing with RoPE in registers rotates the first half the wrong way"),
    Mutant("fused-window-prefix", "backends", "backends/fused.py",
           "and spec.n_q == spec.n_k\n        and spec.q_start == spec.k_start\n", "\n",
           (T_BACK + "/test_fused.py",),
           "the fused window path takes calls whose keys include a cached prefix"),
    Mutant("fused-window-ring-limit", "backends", "backends/fused.py",
           "<= MAX_RING_BYTES)", "<= MAX_RING_BYTES or True)",
           (T_BACK + "/test_fused.py",),
           "the fused window path takes windows whose per-thread rings exceed the limit"),
    Mutant("backend-pool-double-serve", "backends", "backends/csrc/band_attention.cpp",
           "free_.erase(std::next(it).base());", "(void)0;",
           (T_BACK + "/test_band_pool.py",),
           "band kernel's pool hands a kept buffer out without removing it (two live outputs "
           "would share memory)"),
    Mutant("backend-pool-no-limit", "backends", "backends/csrc/band_attention.cpp",
           "trim(release);\n    }\n    for (void* p : release)",
           "}\n    for (void* p : release)",
           (T_BACK + "/test_band_pool.py",),
           "band kernel's pool keeps freed buffers beyond its limit"),
    Mutant("bench-memory-pool-on", "backends", "cli/bench.py",
           "band_pool_limit(0)  # no kept buffers", "pass  # no kept buffers",
           (T_BACK + "/test_bench_cli.py::test_peak_memory_counts_the_kernels_pooled_outputs",),
           "memory suite measures with the kernel's pool on: the warm-up's buffers hide the peak"),
    Mutant("bench-processes-mean", "backends", "cli/bench.py",
           "value = statistics.median(values)", "value = statistics.mean(values)",
           (T_BACK + "/test_bench_cli.py::test_processes_are_merged_into_medians_with_every_value"
            "_and_the_count_that_met_the_target",),
           "--processes judges a target on the processes' mean: one slow process drags it"),
    Mutant("bench-processes-threads-dropped", "backends", "cli/bench.py",
           '"--threads",\n            *map(str, args.threads',
           '"--threads",\n            *map(str, [1]',
           (T_BACK + "/test_bench_cli.py::test_processes_run_the_benchmark_in_fresh_processes_and"
            "_report_each",),
           "a --processes run's children run at the default thread count, not the requested ones"),
    Mutant("backend-exp-degree-6", "backends", "backends/csrc/band_attention.cpp",
           "__m512 p = _mm512_set1_ps(1.0f / 5040);", "__m512 p = _mm512_set1_ps(0.0f);",
           (T_BACK + "/test_backend_band.py::"
            "test_softmax_exp_is_as_accurate_as_torch_exp_and_exact_at_the_edges",),
           "band kernel's exp drops its degree-7 term (2 eps relative error)"),
    Mutant("backend-band-grads-read-unwritten", "backends", "backends/csrc/band_attention.cpp",
           "A + (split - k0), K, Bm, n, scalar_t(0),", "A + (split - k0), K, Bm, n, scalar_t(1),",
           (T_BACK + "/test_band_pool.py",),
           "band kernel's backward adds to gradient rows no block has written yet (right only "
           "on zeroed memory: a reused buffer holds old values)"),
    Mutant("backend-mixing-no-graph", "backends", "backends/band.py",
           "return torch.is_grad_enabled() and any(", "return False and any(",
           (T_BACK + "/test_mixing.py", T_BACK + "/test_fused.py"),
           "compiled mixing / fused core skip autograd even when a gradient is wanted"),
    Mutant("backend-choice-band-keys", "backends", "functional.py",
           "and keys <= limit:", "and keys < limit:",
           (T_BACK + "/test_backend_choice.py",),
           "auto sends a global mask reaching exactly BAND_MAX_KEYS keys to blocked"),
    Mutant("backend-keep-memory-none", "backends", "backends/cpu_memory.py",
           "return mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and ", "return ",
           (T_BACK + "/test_cpu_memory.py",),
           "keep_freed_memory leaves the mmap threshold: large tensors stay fresh mmaps"),
    # ------------------------------------------------------------------ generation
    Mutant("gen-temperature", "generation", "models/generate.py",
           "logits = filter_logits(logits / temperature,",
           "logits = filter_logits(logits,",
           (T_GUARD_CG,), "sampling ignores the temperature"),
    Mutant("gen-early-stop", "generation", "models/generate.py",
           "if t == max_new_tokens - 1 or bool(done.all()):",
           "if t == max_new_tokens - 1:",
           (T_GUARD_CG,), "generation runs on after every row has stopped"),
    Mutant("gen-fill-finished", "generation", "models/generate.py",
           "        if bool(done.any()):\n            keep =",
           "        if False:\n            keep =",
           (T_MODEL, "tests/eval/test_hf_decode.py"),
           "finished rows stay in the batch and keep generating"),
    Mutant("gen-top-k", "generation", "models/generate.py",
           "logits.masked_fill(logits < kth,", "logits.masked_fill(logits <= kth,",
           (T_MODEL,), "top-k drops the k-th token itself"),
    Mutant("gen-top-p", "generation", "models/generate.py",
           "drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p",
           "drop_sorted = probs.cumsum(dim=-1) >= top_p",
           (T_MODEL,), "the nucleus loses the token that crosses top_p"),
    Mutant("gen-top-p-check", "generation", "models/generate.py",
           "if not 0 < top_p <= 1:", "if not 0 <= top_p <= 1:",
           (T_MODEL, "tests/guards"), "top_p = 0 accepted"),
    Mutant("gen-stop-string-tail", "generation", "models/generate.py",
           "start = max(0, self.seen[r] - self.longest + 1)", "start = max(0, self.seen[r])",
           ("tests/eval/test_generate_stop.py",),
           "a long stop string split across tokens is searched only in the newest characters"),
    Mutant("gen-stop-string-fill", "generation", "models/generate.py",
           "out[r, t + 1 :] = pad", "out[r, t + 1 :] = nxt[i]",
           ("tests/eval/test_generate_stop.py",),
           "a row finished by a stop string repeats its last token instead of padding"),
    Mutant("gen-stop-string-ignored", "generation", "eval/runner.py",
           "            **strings,\n        )  # (B, new)", "        )  # (B, new)",
           ("tests/eval/test_generate_stop.py",),
           "the iha generator of the runners never stops at the stop strings"),
    Mutant("hf-decode-positions", "generation", "eval/hf_decode.py",
           "        state[\"next\"] = state[\"next\"] + 1\n", "",
           ("tests/eval/test_hf_decode.py",),
           "the compact decoder gives every new token the same position"),
    Mutant("eval-decoder-unrecorded", "metrics", "eval/runner.py",
           "        settings[\"decoder\"] = decoder\n", "",
           ("tests/eval/test_hf_decode.py",),
           "a progress file does not say which decoder sampled it (a resume mixes two)"),
    Mutant("eval-old-header-decoder", "metrics", "eval/runner.py",
           'written = {**written, "decoder": "hf"}', "written = written",
           ("tests/eval/test_hf_decode.py",),
           "a run written before the decoder choice cannot be resumed"),
    Mutant("decisive-text-flag", "reproduce", "reproduce/decisive.py",
           "        if any(improving.values()):", "        if False:",
           ("tests/reproduce/test_decisive.py",),
           "text runs still improving at the end of their budget are reported unflagged"),
    Mutant("eval-bos-rule", "metrics", "eval/runner.py",
           "        add = tokenizer_adds_bos(tokenizer)",
           "        add = bool(getattr(tokenizer, \"uses_bos\", True))",
           ("tests/eval/test_humaneval_chat.py",),
           "HF models get a BOS their tokenizer never adds (SmolLM2's <|im_start|>)"),
    Mutant("eval-chat-body-indent", "metrics", "eval/humaneval.py",
           "if first and not first[0].isspace():", "if False:",
           ("tests/eval/test_humaneval_chat.py",),
           "an unindented function body from a chat answer is not indented"),
    Mutant("eval-resume-redoes", "metrics", "eval/runner.py",
           "todo = [i for i in chunk if problems[i].task_id not in done]",
           "todo = list(chunk)",
           ("tests/eval/test_humaneval_chat.py",),
           "a resumed evaluation generates the finished problems again"),
    Mutant("gen-vocab-check", "generation", "models/model.py",
           "if low < 0 or high >= self.config.vocab_size:",
           "if low < 0 or high > self.config.vocab_size:",
           (T_MREL,), "token id == vocab_size accepted"),
    Mutant("gen-checkpointing-in-eval", "generation", "models/model.py",
           "self.gradient_checkpointing and self.training and torch.is_grad_enabled()",
           "self.gradient_checkpointing and torch.is_grad_enabled()",
           (T_MREL,), "activation checkpointing also in eval mode"),
    # ------------------------------------------------------------------ metrics
    Mutant("metrics-torn-anywhere", "metrics", "train/metrics.py",
           "if k == len(numbered) - 1:", "if True:",
           (T_REL,), "any unreadable metrics line silently dropped"),
    Mutant("metrics-truncate", "metrics", "train/metrics.py",
           'keep = [r for r in records if r.get("step", 0) <= step]',
           'keep = [r for r in records if r.get("step", 0) < step]',
           (T_LOOP,), "a resumed run loses the record of its checkpoint step"),
    # ------------------------------------------------------------------ sandbox
    Mutant("sandbox-verdict-exit-status", "sandbox", "eval/code.py",
           "passed = report == _READY + token and proc.returncode == 0 and not timed_out",
           "passed = proc.returncode == 0 and not timed_out",
           (T_SANDBOX + "::test_exiting_with_status_zero_before_a_failing_assert_fails",),
           "the verdict trusts the exit status: _exit(0) before a failing assert passes"),
    Mutant("sandbox-writable-host", "sandbox", "eval/code.py",
           'attr = struct.pack("QQQQ", 0x1 | 0x2 | 0x4, 0, 0, 0)',
           'attr = struct.pack("QQQQ", 0x2 | 0x4, 0, 0, 0)',
           (T_SANDBOX + "::test_files_outside_the_sandbox_cannot_be_overwritten_or_deleted",),
           "the host file system stays writable inside the sandbox"),
    Mutant("sandbox-fork-allowed", "sandbox", "eval/code.py",
           "(jset, 0, 1, 0x10000)", "(jset, 0, 0, 0x10000)",
           (T_SANDBOX + "::test_fork_through_posix_is_refused_at_once",),
           "the seccomp filter lets clone make processes, not only threads"),
    Mutant("sandbox-host-network", "sandbox", "eval/code.py",
           '"--map-root-user", "--net", "--mount",', '"--map-root-user", "--mount",',
           (T_SANDBOX + "::test_the_host_network_is_unreachable",),
           "no network namespace: the program reaches the host's 127.0.0.1"),
    Mutant("metrics-bootstrap-low", "metrics", "eval/metrics.py",
           "max(0, math.floor(alpha * n_resamples))", "max(0, math.ceil(alpha * n_resamples))",
           (T_GUARD_EV,), "lower bootstrap bound one order statistic too high"),
    Mutant("metrics-bootstrap-high", "metrics", "eval/metrics.py",
           "math.ceil((1.0 - alpha) * n_resamples) - 1)", "math.ceil((1.0 - alpha) * n_resamples))",
           (T_GUARD_EV,), "upper bootstrap bound one order statistic too high"),
    Mutant("metrics-pass-at-k", "metrics", "eval/metrics.py",
           "for i in range(n - c + 1, n + 1):", "for i in range(n - c, n + 1):",
           ("tests/eval/test_eval_metrics.py",), "pass@k product over one term too many"),
    Mutant("metrics-math-tolerance", "metrics", "eval/math.py",
           "abs(val) <= 1e-9 * max(1.0, abs(ref))", "abs(val) <= 1e-4 * max(1.0, abs(ref))",
           (T_GUARD_EV,), "MATH numeric tolerance loose enough for near misses"),
    Mutant("metrics-ruler-bos", "metrics", "eval/ruler.py",
           "budget = length - ttg - 1", "budget = length - ttg",
           (T_GUARD_EV,), "RULER prompts leave no room for BOS"),
    Mutant("metrics-flops-long-window", "metrics", "flops.py",
           "if window is None or window >= n_tokens:", "if window is None:",
           (T_GUARD_CG,), "a window longer than the sequence counts negative pairs"),
    Mutant("metrics-paper-cost-window", "metrics", "flops.py",
           "keys = seq_len * n_pseudo if window is None else min(window, seq_len) * n_pseudo",
           "keys = seq_len * n_pseudo if window is None else window * n_pseudo",
           (T_GUARD_CG,), "paper cost charges a window longer than the sequence"),
    # ------------------------------------------------------------------ checkpoint
    Mutant("ckpt-no-manifest", "checkpoint", "train/checkpoint.py",
           "    _write_manifest(tmp, [MODEL_FILE, STATE_FILE, META_FILE])", "",
           (T_CKPT, T_REL), "checkpoints written without a manifest"),
    Mutant("ckpt-readers-unverified", "checkpoint", "train/checkpoint.py",
           "def resolve_checkpoint(path: str | Path, verify: bool = True) -> Path:",
           "def resolve_checkpoint(path: str | Path, verify: bool = False) -> Path:",
           (T_REL + "::test_every_reader_refuses_a_checkpoint_that_fails_its_manifest",),
           "generate / export / eval / init_from load a checkpoint that fails its manifest"),
    Mutant("ckpt-failed-write-left", "checkpoint", "train/checkpoint.py",
           "shutil.rmtree(tmp, ignore_errors=True)\n        if not isinstance(e, Exception):",
           "if not isinstance(e, Exception):",
           (T_REL + "::test_a_full_disk_during_a_checkpoint_stops_cleanly_and_leaves_no_temp_files",
            ),
           "a checkpoint that failed to write leaves its temporary directory behind"),
    Mutant("trainer-surrogate-accepted", "trainer", "train/data.py",
           'record[f].encode("utf-8")', 'record[f].encode("utf-8", "surrogatepass")',
           (T_REL + "::test_a_record_that_parses_but_cannot_be_used_is_refused_at_start_up",),
           "a lone surrogate passes the start-up check (and crashes training later)"),
    Mutant("ckpt-sha-ignored", "checkpoint", "train/checkpoint.py",
           "if file_digest(path) != sha:", "if False:",
           (T_REL,), "same-size damage not detected"),
    Mutant("ckpt-size-ignored", "checkpoint", "train/checkpoint.py",
           "if path.stat().st_size != size:", "if False:",
           (T_REL,), "size check skipped (the hash still catches it)"),
    Mutant("ckpt-latest-first", "checkpoint", "train/checkpoint.py",
           "    else:\n        os.replace(tmp, final)\n    _fsync_dir(root)\n"
           "    _write_atomic_text(root / LATEST, name + \"\\n\")",
           "    else:\n        _write_atomic_text(root / LATEST, name + \"\\n\")\n"
           "        os.replace(tmp, final)\n    _fsync_dir(root)",
           (T_REL, T_CKPT), "latest moves before the checkpoint is in place"),
    Mutant("ckpt-prune-one-more", "checkpoint", "train/checkpoint.py",
           "ckpts[: max(0, len(ckpts) - keep)]", "ckpts[: max(0, len(ckpts) - keep + 1)]",
           (T_CKPT,), "keeps one checkpoint fewer than asked"),
    Mutant("ckpt-binary-latest", "checkpoint", "train/checkpoint.py",
           "except (OSError, UnicodeDecodeError):\n        return None",
           "except OSError:\n        return None",
           (T_REL,), "a binary latest pointer crashes the lookup"),
    Mutant("ckpt-no-fallback", "checkpoint", "train/checkpoint.py",
           "            skipped.append(str(e))\n            continue",
           "            raise",
           (T_REL,), "no fallback to an older intact checkpoint"),
    Mutant("ckpt-lock-shared", "checkpoint", "train/lock.py",
           "fcntl.LOCK_EX | fcntl.LOCK_NB", "fcntl.LOCK_SH | fcntl.LOCK_NB",
           (T_REL,), "the run-directory lock is shared, not exclusive"),
    Mutant("ckpt-lock-kept", "checkpoint", "train/trainer.py",
           '        """Release the run directory and leave the process group."""\n'
           "        self.lock.release()",
           '        """Release the run directory and leave the process group."""',
           (T_REL,), "the lock is never released"),
    # ------------------------------------------------------------------ trainer
    Mutant("trainer-no-clip", "trainer", "train/trainer.py",
           "clip = self.cfg.optim.grad_clip or math.inf", "clip = math.inf",
           (T_REL,), "gradient clipping off"),
    Mutant("trainer-no-schedule", "trainer", "train/trainer.py",
           "                self.scheduler.step()\n", "",
           (T_REL,), "the learning rate never follows the schedule"),
    Mutant("trainer-schedule-not-restored", "trainer", "train/trainer.py",
           '            group["lr"] = lr\n', "",
           (T_LOOP, T_REL), "a resumed run starts at the peak learning rate"),
    Mutant("trainer-rng-not-restored", "trainer", "train/trainer.py",
           '        torch.set_rng_state(rng["torch"])\n', "",
           (T_REL,), "the torch RNG is not restored on resume"),
    Mutant("trainer-saved-hyperparameters", "trainer", "train/trainer.py",
           "            group.update(values)\n", "",
           (T_REL,), "a resumed run keeps the saved optimizer hyperparameters"),
    Mutant("trainer-data-change-allowed", "trainer", "train/trainer.py",
           'FROZEN_ON_RESUME = ("model.", "data.", "train.batch_size", "train.seed")',
           'FROZEN_ON_RESUME = ("model.", "train.batch_size", "train.seed")',
           (T_REL,), "resume accepts a changed data config"),
    Mutant("trainer-max-steps-below", "trainer", "train/trainer.py",
           "if isinstance(max_steps, int) and max_steps < step:",
           "if isinstance(max_steps, int) and max_steps < 0:",
           (T_REL,), "resume accepts max_steps below the saved step"),
    Mutant("trainer-loss-mask", "trainer", "train/trainer.py",
           "targets = targets.masked_fill(~mask, -100)", "targets = targets",
           (T_LOOP,), "the loss also covers masked positions"),
    Mutant("trainer-loss-normalisation", "trainer", "train/trainer.py",
           "(loss_sum * (world / max(n_loss, 1.0))).backward()", "loss_sum.backward()",
           (T_REL, T_LOOP), "gradients of the token sum, not the token mean"),
    Mutant("trainer-jsonl-not-checked", "trainer", "train/data.py",
           '                        self._check_record(text, f"{file} line {number}")\n', "",
           (T_REL, T_DATA), "a bad JSONL line found only when training reaches it"),
    Mutant("trainer-bad-bytes-uncounted", "trainer", "train/data.py",
           "                    bad_lines += 1\n", "",
           (T_REL,), "non-UTF-8 bytes replaced silently"),
    Mutant("trainer-packing-carry", "trainer", "train/data.py",
           "self.carry = (ids[-1], mask[-1])", "self.carry = None",
           (T_DATA, T_LOOP), "packed windows do not share their boundary token"),
    Mutant("trainer-glob-no-braces", "trainer", "train/data.py",
           "for pattern in expand_braces(path))", "for pattern in [path])",
           (T_DATA,), "a glob's {a,b} group matches nothing (cpu-text's data/*.{txt,md})"),
    Mutant("cli-generate-one-seed", "cli", "cli/generate.py",
           "seed = args.seed + index", "seed = args.seed",
           (f"{T_CLI}::test_each_prompt_is_sampled_with_its_own_seed_under_its_own_header",),
           "every --prompt sampled with the same seed"),
    Mutant("cli-help-no-default", "cli", "cli/_common.py",
           "return f\"{text} (default: {shown.replace('%', '%%')})\"", "return action.help",
           (f"{T_CLI}::test_every_option_of_every_command_has_help_that_states_its_default",),
           "option help without its default"),
    Mutant("cli-describe-alias-before-config", "cli", "cli/describe.py",
           "if source in list_presets() and source not in PRESET_ALIASES:",
           "if source in list_presets():",
           (f"{T_CLI}::test_describe_of_a_config_name_reads_that_config",),
           "iha describe paper-2.4b reads the deprecated alias, not configs/paper-2.4b.toml"),
    Mutant("cli-eval-progress-counts-resumed", "cli", "cli/eval.py",
           "            self.base = (now, done)\n", "            pass\n",
           ("tests/eval/test_eval_progress.py",),
           "iha eval's time left counts resumed problems as generated (far too optimistic)"),
    Mutant("cli-eval-no-out-lock", "cli", "cli/eval.py",
           "        lock.acquire()  # two evaluations", "        pass  # two evaluations",
           ("tests/eval/test_eval_out_lock.py",),
           "two iha eval processes append to one output directory's progress file"),
    Mutant("trainer-convert-2d-mask", "trainer", "hf/convert.py",
           "                    f\"{n_k} keys of batch {B}\"\n                )\n"
           "            return None if bool(keys.all()) else keys",
           "                    f\"{n_k} keys of batch {B}\"\n                )\n"
           "            return None",
           (T_GUARD_BK,), "converted layers drop a 2-D padding mask"),
    # ------------------------------------------------------------------ reproduce
    Mutant("reproduce-slope-two-sided", "reproduce", "reproduce/convergence.py",
           "    p = tail if t < 0 else 1.0 - tail\n", "    p = 2.0 * tail\n",
           (T_CONV,), "the convergence rule's slope test is two-sided (a rising loss counts as "
           "still improving)"),
    Mutant("reproduce-slope-residual-df", "reproduce", "reproduce/convergence.py",
           "    df = n - 2\n", "    df = n - 1\n",
           (T_CONV,), "the slope's t-test uses n - 1 degrees of freedom"),
    Mutant("reproduce-stop-ignores-rule", "reproduce", "reproduce/early_stopping.py",
           "        if self.window is None:\n            return True\n",
           "        return True\n",
           (T_CONV,), "early stopping ignores the convergence rule (patience alone)"),
    Mutant("reproduce-mcnemar-one-sided", "reproduce", "reproduce/stats.py",
           "    return min(1.0, 2.0 * tail)", "    return min(1.0, tail)",
           (T_STATS,), "exact McNemar p-value one-sided"),
    Mutant("reproduce-bracket-edge", "reproduce", "reproduce/decisive.py",
           "    if i == len(lrs) - 1:\n", "    if False:\n",
           (T_DEC,), "a best learning rate at the top of the grid counts as bracketed"),
    Mutant("hf-factory-run-as-iha", "hf", "hf/loading.py",
           'LoadedModel(hf.eval(), tok, "hf", f"hf-run:{found}", found, config)',
           'LoadedModel(model, tok, "iha", f"hf-run:{found}", found, config)',
           ("tests/hf/test_loading.py",), "a fine-tuned converted run is taken for a native one"),
    Mutant("hf-run-no-model-type", "hf", "train/trainer.py",
           'hf_view = {"model_type": RUN_MODEL_TYPE, **cfg_dict}', "hf_view = cfg_dict",
           ("tests/hf/test_loading.py",), "a run directory does not load with from_pretrained"),
    Mutant("hf-cost-not-causal", "hf", "hf/cost.py",
           'mask="token" if layer_mode == "exact" else "flat"',
           'mask="none" if layer_mode == "exact" else "flat"',
           ("tests/hf/test_cost.py",), "the FLOP cost counts every (query, key) pair"),
    Mutant("hf-gguf-keeps-quantization", "hf", "hf/sources.py",
           "    model.hf_quantizer = None\n    model.is_quantized = False",
           "    pass",
           ("tests/realmodel/test_smollm2_exact.py",),
           "a model loaded from GGUF cannot be saved (save_pretrained refuses it)"),
)

AREAS = sorted({m.area for m in CATALOGUE})


def apply(mutant: Mutant, src_root: Path) -> tuple[Path, str]:
    """Write the mutated file under ``src_root``; returns (path, original text)."""
    path = src_root / "iha" / mutant.path
    text = path.read_text(encoding="utf-8")
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"{mutant.id}: the snippet occurs {count} times in {mutant.path}")
    path.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")
    return path, text


def check_catalogue(src_root: Path = SRC) -> list[str]:
    """Problems of the catalogue against ``src_root`` (empty when every snippet applies once)."""
    problems = []
    ids = [m.id for m in CATALOGUE]
    problems += [f"duplicate id {i}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    for m in CATALOGUE:
        path = src_root / "iha" / m.path
        if not path.is_file():
            problems.append(f"{m.id}: no file {m.path}")
            continue
        count = path.read_text(encoding="utf-8").count(m.old)
        if count != 1:
            problems.append(f"{m.id}: the snippet occurs {count} times in {m.path}")
        if m.old == m.new:
            problems.append(f"{m.id}: the mutant changes nothing")
    return problems


def run_tests(tests: tuple[str, ...], src_root: Path, timeout: float) -> tuple[str, float]:
    """``("killed" | "survived" | "timeout", seconds)`` of one pytest run against ``src_root``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src_root), os.environ.get("PYTHONPATH", "")]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
    }
    args = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
            "--no-header", *tests]  # fmt: skip
    t0 = time.perf_counter()
    try:
        out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    return ("survived" if out.returncode == 0 else "killed"), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.add_argument("--check", action="store_true", help="check every snippet applies once")
    parser.add_argument("--area", nargs="+", choices=AREAS, help="only these areas")
    parser.add_argument("--only", nargs="+", metavar="ID", help="only these mutants")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    parser.add_argument("--target", type=float, default=0.9, help="score needed for exit 0")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    chosen = [m for m in CATALOGUE if (not args.area or m.area in args.area)]
    if args.only:
        unknown = sorted(set(args.only) - {m.id for m in CATALOGUE})
        if unknown:
            parser.error(f"--only: unknown mutant(s) {', '.join(unknown)}; see --list")
        chosen = [m for m in chosen if m.id in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.id:34s} {m.area:10s} {m.path:24s} {m.what}")
        return 0
    if args.check:
        problems = check_catalogue()
        for p in problems:
            print(p)
        print(f"{len(CATALOGUE)} mutants, {len(problems)} problem(s)")
        return 1 if problems else 0
    if not chosen:
        parser.error("no mutant selected")

    results = []
    with tempfile.TemporaryDirectory(prefix="iha-mutate-") as tmp:
        src_root = Path(tmp) / "src"
        shutil.copytree(SRC, src_root, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for i, m in enumerate(chosen, start=1):
            path, original = apply(m, src_root)
            try:
                verdict, seconds = run_tests(m.tests, src_root, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            results.append({"id": m.id, "area": m.area, "verdict": verdict,
                            "seconds": round(seconds, 1), "what": m.what})  # fmt: skip
            print(f"[{i}/{len(chosen)}] {verdict:8s} {m.id} ({seconds:.0f}s): {m.what}",
                  flush=True)  # fmt: skip
    killed = sum(r["verdict"] != "survived" for r in results)
    score = killed / len(results)
    print(f"score: {killed}/{len(results)} mutants killed ({100 * score:.1f}%)")
    for area in AREAS:
        mine = [r for r in results if r["area"] == area]
        if mine:
            k = sum(r["verdict"] != "survived" for r in mine)
            print(f"  {area:10s} {k}/{len(mine)}")
    survivors = [r["id"] for r in results if r["verdict"] == "survived"]
    if survivors:
        print("survived: " + ", ".join(survivors))
    if args.json:
        Path(args.json).write_text(json.dumps({"score": score, "results": results}, indent=1))
    return 0 if score >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
