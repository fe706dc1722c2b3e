"""``choose_backend``: what backend="auto" resolves to (measured in docs/benchmarks.md)."""

from __future__ import annotations

import pytest
import torch

from iha.functional import attend, choose_backend
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
        # global masks over more than 64 query rows: "band" while a block's scores fit in cache
        (MaskSpec("token", 4, 17, 17), None, CPU, "band"),
        (MaskSpec("token", 4, 1024, 1024), None, CPU, "band"),  # 4096 interleaved keys
        (MaskSpec("token", 4, 1025, 1025), None, CPU, "blocked"),
        (MaskSpec("token", 2, 40, 1000, q_start=960), PAD, CPU, "band"),  # chunk after a prefix
        (MaskSpec("flat", 4, 512, 512), PAD, CPU, "band"),  # 2048 interleaved keys
        (MaskSpec("flat", 4, 513, 513), PAD, CPU, "blocked"),
        (MaskSpec("flat", 2, 40, 100, q_start=60), None, CPU, "band"),  # cached prefix
        (MaskSpec("none", 4, 64, 64), PAD, CPU, "blocked"),
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


@pytest.fixture
def fake_cuda_backends(monkeypatch):
    """Fake CUDA tensors (no GPU needed) and backends that record which one ``auto`` called."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from iha.backends import BACKENDS

    called: list[tuple[str, int]] = []  # (backend, pseudo query rows)

    def recorder(name):
        def attend_fake(qt, kt, vt, spec, **kwargs):
            assert qt.device.type == "cuda"
            called.append((name, qt.shape[2]))
            return qt.new_empty(*qt.shape[:3], vt.shape[-1])  # (B, H, Nq*P, d_v)

        return attend_fake

    for name in list(BACKENDS):
        monkeypatch.setitem(BACKENDS, name, recorder(name))
    with FakeTensorMode():
        yield called


def test_auto_on_cuda_dispatches_from_the_tensors_device(fake_cuda_backends):
    """``attend`` on (fake) CUDA tensors: which backend each call of a model's life reaches."""
    called = fake_cuda_backends
    P, B, H, G, d = 4, 2, 4, 2, 8

    def call(spec, padding=False, kernel="softmax"):
        qt = torch.empty(B, H, spec.n_q * P, d, device="cuda")
        kt = torch.empty(B, G, spec.n_k * P, d, device="cuda")
        kpm = torch.ones(B, spec.n_k, dtype=torch.bool, device="cuda") if padding else None
        attend(qt, kt, kt, spec, scale=d**-0.5, attention_mask=kpm, kernel=kernel)

    call(MaskSpec("flat", P, 40, 40))  # training, flat mask: the flash kernel with is_causal
    call(MaskSpec("none", P, 40, 40))
    call(MaskSpec("token", P, 40, 40))  # no fused kernel has the token mask
    call(MaskSpec("flat", P, 40, 40, window=8))
    call(MaskSpec("flat", P, 40, 40), padding=True)
    call(MaskSpec("none", P, 40, 40), padding=True)
    call(MaskSpec("flat", P, 40, 40), kernel="linear")
    call(MaskSpec("token", P, 20, 20))  # prefill of a token-mask model
    call(MaskSpec("token", P, 16, 36, q_start=20))  # a 16-token chunk: 64 rows, the limit
    call(MaskSpec("token", P, 1, 37, q_start=36))  # decoding: 4 rows, a tiny dense mask
    call(MaskSpec("flat", P, 17, 37, q_start=20))  # 17 tokens against a longer cache: 68 rows
    call(MaskSpec("flat", P, 1, 38, q_start=37, window=8), padding=True)  # padded decoding
    assert called == [("sdpa", 160), ("sdpa", 160), ("flex", 160), ("flex", 160),
                      ("flex", 160), ("flex", 160), ("reference", 160), ("flex", 80),
                      ("sdpa", 64), ("sdpa", 4), ("flex", 68), ("sdpa", 4)]
