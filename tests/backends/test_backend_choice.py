"""``choose_backend``: what backend="auto" resolves to (measured in docs/benchmarks.md)."""

from __future__ import annotations

import pytest
import torch

from iha.functional import choose_backend
from iha.masks import MaskSpec

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
PAD = torch.ones(1, 4, dtype=torch.bool)


@pytest.mark.parametrize(
    "spec,padding,device,expected",
    [
        (MaskSpec("flat", 4, 8, 8), None, None, "sdpa"),  # is_causal, the floor itself
        (MaskSpec("none", 4, 8, 8), None, CPU, "sdpa"),
        (MaskSpec("flat", 4, 8, 8), PAD, CPU, "blocked"),
        (MaskSpec("token", 4, 8, 8), None, CPU, "blocked"),
        (MaskSpec("flat", 4, 8, 8, window=2), None, None, "band"),  # compiled band kernel
        (MaskSpec("token", 4, 8, 8, window=2), PAD, CPU, "band"),
        (MaskSpec("flat", 4, 1, 8, q_start=7, window=3), None, CPU, "band"),  # windowed decoding
        (MaskSpec("token", 4, 1, 8, q_start=7), None, CPU, "blocked"),  # decoding
        (MaskSpec("flat", 4, 8, 8), None, CUDA, "sdpa"),  # flash kernel
        (MaskSpec("token", 4, 32, 32, window=2), None, CUDA, "flex"),
        (MaskSpec("flat", 4, 32, 40, q_start=8), PAD, CUDA, "flex"),
        (MaskSpec("flat", 4, 1, 8, q_start=7), PAD, CUDA, "sdpa"),  # decoding: tiny dense mask
    ],
)
def test_auto_picks_the_measured_fastest_exact_backend(spec, padding, device, expected):
    assert choose_backend("auto", spec, "softmax", padding, device) == expected


def test_auto_uses_reference_for_the_linear_kernel_and_keeps_explicit_choices():
    spec = MaskSpec("flat", 2, 3, 3)
    assert choose_backend("auto", spec, "linear", None) == "reference"
    assert choose_backend("sdpa", MaskSpec("token", 2, 3, 3), "softmax", None) == "sdpa"
