"""The compiled FlexAttention path, run on CPU through the backend's own code.

``set_compile_policy("always")`` makes ``attend_flex`` take the branch CUDA takes by default:
``torch.compile(flex_attention)`` with the block mask of ``MaskSpec.block_mask``. Inductor then
builds its CPU FlexAttention kernel (the CUDA one is a Triton template: not run here). Forward
only (this torch has no FlexAttention backward on CPU), float32 against the float64 reference
under the 2x rule.

Compiling costs seconds per graph on two cores, so the module compiles few graphs: one family
of calls (flat mask, window, GQA, no padding) walks through training, evaluation, prefill and
decoding shapes and also holds the recompilation budget; token-mask and padded calls add one
static graph each.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from oracle import float32_error_bound

from iha.backends import flex
from iha.functional import interleaved_head_attention

pytest.importorskip("torch.nn.attention.flex_attention")
dynamo_counters = pytest.importorskip("torch._dynamo.utils").counters

P, H, G, D = 2, 4, 2, 16


@pytest.fixture(scope="module", autouse=True)
def compiled_flex():
    """Compile the flex kernel on CPU for this module only, from an empty dynamo cache."""
    torch.compiler.reset()
    previous = flex.set_compile_policy("always")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    flex.set_compile_policy(previous)
    torch.compiler.reset()


def graphs_compiled() -> int:
    return dynamo_counters["stats"]["unique_graphs"]


def inputs(B, Nq, Nk, *, heads=H, kv_heads=G, padding=False, seed=0):
    """float64 inputs of ``interleaved_head_attention``: Nq query tokens after a cached prefix of
    Nk - Nq tokens (key/value tokens Nk); left padding of a quarter of row 0's keys."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    args = [r(B, heads, Nq, D), r(B, kv_heads, Nk, D), r(B, kv_heads, Nk, D), r(heads, heads, P),
            r(kv_heads, kv_heads, P), r(kv_heads, kv_heads, P), r(heads, P)]
    kpm = None
    if padding:
        kpm = torch.rand(B, Nk, generator=gen) > 0.25
        kpm[0, : Nk // 4] = False
    return args, dict(position_offset=Nk - Nq, attention_mask=kpm, rope_theta=10000.0)


def check_compiled_flex_against_reference(args, kw):
    """float32 compiled flex against the float64 reference, within 2x the float32 reference."""
    with torch.no_grad():
        exact = interleaved_head_attention(*args, **kw, backend="reference")
        low = [a.float() for a in args]
        ref_err = (interleaved_head_attention(*low, **kw, backend="reference").double()
                   - exact).abs().max().item()
        got = interleaved_head_attention(*low, **kw, backend="flex")
    err = (got.double() - exact).abs().max().item()
    assert err <= float32_error_bound(ref_err, exact), (err, ref_err)


# One model's life on the flat mask with a window and GQA:
# (batch, query tokens, key tokens, window). Query tokens < key tokens = a cached prefix.
TRAINING = [(2, 128, 128, 8)] * 2
EVALUATION = [(2, 160, 160, 8), (2, 192, 192, 8), (2, 176, 176, 8)]
PREFILL = [(1, 150, 150, 8), (1, 136, 200, 8)]  # a prompt; a chunk after a 64-token prefix
DECODE = [(1, 1, 201, 8), (1, 1, 202, 8), (1, 3, 205, 8)]
OFFSETS_AND_WINDOWS = [(1, 1, 203, 8), (1, 1, 230, 8), (1, 1, 231, 5), (2, 160, 160, 3),
                       (2, 128, 200, 16), (1, 136, 300, 4)]
# Graphs: the static first one; one with dynamic lengths after the first new length; dynamo
# specialises sizes 0 and 1, so batch 1 and a single 128-row block of queries (short prompts,
# decoding) each take one more. Offsets and windows are captured as tensors: none of their own.
GRAPH_BUDGET = 4


def test_compiled_flex_recompiles_within_budget_and_matches_reference():
    start = graphs_compiled()
    for B, Nq, Nk, window in TRAINING + EVALUATION + PREFILL + DECODE:
        args, kw = inputs(B, Nq, Nk, seed=Nq + Nk)
        check_compiled_flex_against_reference(args, {**kw, "mask": "flat", "window": window})
    assert 2 <= graphs_compiled() - start <= GRAPH_BUDGET  # compiled, and within budget
    before = graphs_compiled()
    for B, Nq, Nk, window in OFFSETS_AND_WINDOWS:  # shapes seen before, new offsets/windows
        args, kw = inputs(B, Nq, Nk, seed=Nq + Nk)
        check_compiled_flex_against_reference(args, {**kw, "mask": "flat", "window": window})
    assert graphs_compiled() == before


def test_compiled_flex_token_mask_without_gqa():
    args, kw = inputs(2, 96, 96, kv_heads=H)
    before = graphs_compiled()
    check_compiled_flex_against_reference(args, {**kw, "mask": "token", "window": None})
    assert graphs_compiled() == before + 1


def test_compiled_flex_token_mask_window_key_padding_cached_prefix_and_decode():
    """From an empty dynamo cache, so that the padded calls start from a static graph: with
    dynamic key lengths, inductor's CPU flex template of this torch fails to build a mask that
    indexes a captured (B, Nk*P) tensor (C++ error "cur_qSplitSize1 was not declared"). Both
    calls have 100 key tokens; only the query length changes (a prefill chunk, then one token)."""
    torch.compiler.reset()
    for Nq in (70, 1):
        args, kw = inputs(2, Nq, 100, padding=True, seed=Nq)
        check_compiled_flex_against_reference(args, {**kw, "mask": "token", "window": 4})
