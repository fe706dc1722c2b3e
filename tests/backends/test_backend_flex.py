"""The "flex" backend's eager forward on CPU (this torch runs FlexAttention backward on GPU only).

The mask rule itself is tested in tests/test_masks.py, the compiled kernel (the CUDA default) in
test_flex_compiled.py, bf16 in test_bf16.py; gradients need a GPU (benchmarks/gpu_check.py).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from test_functional import configs, make_inputs

from iha.backends import flex
from iha.functional import interleaved_head_attention
from iha.masks import MaskSpec

pytest.importorskip("torch.nn.attention.flex_attention")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile"
        yield


@settings(max_examples=6, deadline=None)
@given(configs(max_tokens=5))
def test_flex_forward_matches_reference_float64(c):
    args, kw = make_inputs(c)
    want = interleaved_head_attention(*args, **kw, backend="reference")
    got = interleaved_head_attention(*args, **kw, backend="flex")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_block_masks_without_padding_are_shared_per_equal_spec():
    cpu = torch.device("cpu")
    first = flex._shared_block_mask(MaskSpec("token", 2, 4, 4, window=2), cpu)
    assert flex._shared_block_mask(MaskSpec("token", 2, 4, 4, window=2), cpu) is first
    assert flex._shared_block_mask(MaskSpec("token", 2, 4, 4, window=3), cpu) is not first


def test_compile_policy_is_validated_and_decides_the_kernel():
    from torch.nn.attention.flex_attention import flex_attention

    with pytest.raises(ValueError, match="policy='sometimes'"):
        flex.set_compile_policy("sometimes")
    assert flex._flex_kernel(torch.device("cpu")) is flex_attention  # default: eager on CPU
    assert flex._flex_kernel(torch.device("cuda")) is flex._compiled_flex_attention()
    previous = flex.set_compile_policy("always")
    try:
        assert flex._flex_kernel(torch.device("cpu")) is flex._compiled_flex_attention()
        flex.set_compile_policy("never")
        assert flex._flex_kernel(torch.device("cuda")) is flex_attention
    finally:
        flex.set_compile_policy(previous)
