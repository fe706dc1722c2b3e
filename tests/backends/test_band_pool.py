"""The band kernel's pool of freed outputs (``iha.backends.band.pool_limit``): a freed buffer
serves the next output of its size, live outputs never share memory, the limit holds, pooled
tensors behave as tensors after the pool lets go of them, and bad input is named."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch

from iha.backends import band, fused_core
from iha.functional import interleaved_head_attention

pytestmark = pytest.mark.skipif(
    os.environ.get("IHA_BAND_KERNEL") == "0", reason="IHA_BAND_KERNEL=0: kernel not built"
)

MIB = 2**20


@pytest.fixture(autouse=True)
def _fresh_pool():
    if not band.kernel_available():
        pytest.skip(f"band kernel unavailable: {band.unavailable_reason()}")
    band.empty_pool()
    old = band.pool_limit()
    yield
    band.pool_limit(old)
    band.empty_pool()


def _spread_reference(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """out[b, h, n*P + p] = sum_m alpha[m, h, p] x[b, m, n], in float64."""
    B, M, N, d = x.shape
    H, P = alpha.shape[1], alpha.shape[2]
    out = torch.einsum("mhp,bmnd->bhnpd", alpha.double(), x.double())
    return out.reshape(B, H, N * P, d)


def _spread(x, alpha):
    return torch.ops.iha_band.spread(x, alpha, None, None)


def _inputs(n_tokens: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    # (1, 4, N, 64) mixed to (1, 4, 4N, 64): 4N * 1 KiB per output, >= 1 MiB from N = 256
    return torch.randn(1, 4, n_tokens, 64, generator=gen), torch.randn(4, 4, 4, generator=gen)


def test_a_freed_output_serves_the_next_one_of_its_size():
    x, a = _inputs(256, 0)
    first = _spread(x, a)
    assert first.numel() * 4 >= MIB  # pooled size
    address = first.data_ptr()
    del first
    assert band.pool_cached_bytes() == 4 * 256 * 4 * 64 * 4
    x2, a2 = _inputs(256, 1)
    second = _spread(x2, a2)
    assert second.data_ptr() == address
    assert band.pool_cached_bytes() == 0
    torch.testing.assert_close(second.double(), _spread_reference(x2, a2), rtol=1e-5, atol=1e-5)


def test_live_outputs_never_share_memory_and_keep_their_values():
    x, a = _inputs(256, 0)
    kept = [_spread(*_inputs(256, s)) for s in range(3)]
    dropped = _spread(x, a)
    del dropped  # back to the pool: the next output takes it, the kept ones stay intact
    again = _spread(*_inputs(256, 7))
    addresses = {t.data_ptr() for t in [*kept, again]}
    assert len(addresses) == 4
    for s, t in enumerate(kept):
        torch.testing.assert_close(t.double(), _spread_reference(*_inputs(256, s)), rtol=1e-5,
                                   atol=1e-5)


def test_small_outputs_are_not_pooled():
    out = _spread(*_inputs(8, 0))  # 32 KiB
    del out
    assert band.pool_cached_bytes() == 0


def test_the_limit_holds_and_the_oldest_buffers_go_first():
    size = 4 * 256 * 4 * 64 * 4  # 1 MiB: one output of N = 256
    band.pool_limit(2 * size + size // 2)  # room for two 1 MiB buffers
    outs = [_spread(*_inputs(256, s)) for s in range(3)]
    addresses = [t.data_ptr() for t in outs]
    for i in range(3):  # freed in order 0, 1, 2: buffer 0 is dropped when 2 arrives
        outs[i] = None
    assert band.pool_cached_bytes() == 2 * size
    reused = [_spread(*_inputs(256, s)) for s in range(2)]
    assert {t.data_ptr() for t in reused} == set(addresses[1:])  # most recent first
    assert band.pool_cached_bytes() == 0
    bigger = _spread(*_inputs(512, 0))
    del bigger
    assert band.pool_cached_bytes() == 2 * size  # 2 MiB fits; nothing else was kept
    band.pool_limit(size)  # lowering the limit frees what no longer fits
    assert band.pool_cached_bytes() == 0


def test_limit_zero_turns_pooling_off_and_empty_pool_keeps_the_limit():
    band.pool_limit(64 * MIB)
    out = _spread(*_inputs(256, 0))
    del out
    assert band.pool_cached_bytes() > 0
    band.empty_pool()
    assert band.pool_cached_bytes() == 0 and band.pool_limit() == 64 * MIB
    assert band.pool_limit(0) == 64 * MIB
    out = _spread(*_inputs(256, 0))
    del out
    assert band.pool_cached_bytes() == 0


def test_a_pooled_tensor_outlives_empty_pool_and_works_as_a_tensor():
    x, a = _inputs(256, 0)
    out = _spread(x, a)
    band.empty_pool()
    band.pool_limit(0)
    expected = _spread_reference(x, a)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    out.mul_(2.0)  # in place, views, copies and autograd leaves work as on any tensor
    torch.testing.assert_close(out[0, 1].double(), 2 * expected[0, 1], rtol=1e-5, atol=1e-5)
    leaf = out.detach().requires_grad_()
    (leaf * leaf).sum().backward()
    torch.testing.assert_close(leaf.grad, 2 * out)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1GB"])
def test_pool_limit_names_bad_input(bad):
    with pytest.raises(ValueError, match="limit_bytes"):
        band.pool_limit(bad)


def test_outputs_alive_at_interpreter_exit_are_freed_without_a_crash():
    child = (
        "import torch\n"
        "from iha.backends import band\n"
        "assert band.kernel_available()\n"
        "x = torch.randn(1, 4, 256, 64); a = torch.randn(4, 4, 4)\n"
        "KEPT = [torch.ops.iha_band.spread(x, a, None, None) for _ in range(3)]\n"
        "del KEPT[0]\n"  # one in the pool, two alive at exit
        "print(band.pool_cached_bytes())\n"
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == 4 * 256 * 4 * 64 * 4


def _poison_pool(shapes, copies: int = 6) -> None:
    """Fill the pool with NaN buffers of these (B, H, rows, d) sizes: an output that reads its
    memory before writing it then shows NaN."""
    held = []
    for B, H, rows, d in shapes:
        for _ in range(copies):
            t = _spread(torch.zeros(B, H, rows, d), torch.zeros(H, H, 1))
            t.fill_(float("nan"))
            held.append(t)
    held.clear()


def _core_step(seed: int, fused: bool, padding: bool):
    """One forward + backward of the IHA core with a sliding window on the band kernel (the fused
    core, or the band attention between separate mixing passes): output and gradients."""
    gen = torch.Generator().manual_seed(seed)
    B, H, N, d, P = 1, 4, 1024, 64, 4  # interleaved tensors 4 MiB, per-token ones 1 MiB
    q, k, v = (torch.randn(B, H, N, d, generator=gen).requires_grad_() for _ in range(3))
    eye = torch.eye(H)[:, :, None].expand(H, H, P)
    alphas = [(eye + 0.1 * torch.randn(H, H, P, generator=gen)).requires_grad_() for _ in range(3)]
    collapse = (torch.randn(H, H * P, generator=gen) / 6).requires_grad_()
    mask = None
    if padding:
        mask = torch.ones(B, N, dtype=torch.bool)
        mask[:, :100] = False
    with contextlib.nullcontext() if fused else fused_core.disabled():
        y = interleaved_head_attention(q, k, v, *alphas, collapse, mask="flat", window=16,
                                       rope_theta=10000.0, attention_mask=mask, backend="band")
    y.backward(torch.randn(y.shape, generator=gen))
    return [y.detach(), *(t.grad for t in (q, k, v, *alphas, collapse))]


@pytest.mark.parametrize("fused", [True, False], ids=["fused core", "band attention"])
@pytest.mark.parametrize("padding", [False, True], ids=["no padding", "left padding"])
def test_results_do_not_depend_on_what_a_reused_buffer_held(fused, padding):
    # Fresh pages from the OS are zero; a reused buffer holds the last output's values. Every
    # output of the kernels must be written before it is read: with the pool full of NaN
    # buffers of every size the step allocates, forward and gradients equal, bit for bit, the
    # same step with the pool off (fresh memory).
    band.pool_limit(0)
    expected = _core_step(3, fused, padding)
    band.pool_limit(1 << 30)
    _poison_pool([(1, 4, 4096, 64), (1, 4, 1024, 64)])
    assert band.pool_cached_bytes() > 0
    got = _core_step(3, fused, padding)
    for e, g in zip(expected, got, strict=True):
        assert torch.isfinite(g).all()
        assert torch.equal(e, g)
