"""The "flex" backend's forward on CPU (this torch runs FlexAttention backward on GPU only).

The GPU path (compiled kernel, gradients, bf16) is checked by benchmarks/gpu_check.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from test_functional import configs, make_inputs

from iha.backends.flex import mask_mod_for
from iha.functional import interleaved_head_attention
from iha.masks import MaskSpec, expand_key_padding

flex_attention = pytest.importorskip("torch.nn.attention.flex_attention")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile"
        yield


@pytest.mark.parametrize(
    "mode,window,n_q,n_k,padding",
    [("flat", None, 5, 5, False), ("flat", 2, 3, 7, True), ("token", None, 4, 6, True),
     ("token", 3, 6, 6, False), ("none", None, 4, 4, True)],
)
def test_flex_mask_mod_equals_mask_spec(mode, window, n_q, n_k, padding):
    P, B = 3, 2
    spec = MaskSpec(mode, P, n_q, n_k, q_start=n_k - n_q + 1, k_start=1, window=window)
    kpm = torch.rand(B, n_k, generator=torch.Generator().manual_seed(0)) > 0.4 if padding else None
    got = flex_attention.create_mask(mask_mod_for(spec, kpm), B, 1, n_q * P, n_k * P, "cpu")
    want = spec.allowed()[None, None].expand(B, 1, n_q * P, n_k * P)
    if kpm is not None:
        want = want & expand_key_padding(kpm, P)[:, None, None, :]
    assert torch.equal(got, want)


@settings(max_examples=6, deadline=None)
@given(configs(max_tokens=5))
def test_flex_forward_matches_reference_float64(c):
    args, kw = make_inputs(c)
    want = interleaved_head_attention(*args, **kw, backend="reference")
    got = interleaved_head_attention(*args, **kw, backend="flex")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
