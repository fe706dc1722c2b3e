"""Interchangeable implementations of the attention step (docs/spec.md steps 4-5).

Every backend takes pseudo queries (B, H, Nq*P, d) and pseudo keys/values (B, G, Nk*P, d) that
are already mixed, interleaved and rotated, plus a ``MaskSpec``, and returns (B, H, Nq*P, d).
They all agree with ``reference`` (the test oracle).

- ``reference``: einsum + dense mask + softmax (the oracle).
- ``sdpa``: ``F.scaled_dot_product_attention``; ``is_causal`` for the plain flat mask, else a
  dense mask.
- ``blocked``: no dense mask for any mode; windows in O(N*P * W*P) (``banded``), token-causal as
  flat-causal plus a (P, P) within-token piece, cached prefixes as an unmasked piece.
- ``flex``: ``torch.nn.attention.flex_attention`` with a block mask (GPU; forward-only on CPU).
- ``band``: a compiled C++ kernel (CPU, float32/float64): every query row against its one range
  of keys, query blocks with an exact one-pass softmax; falls back to ``blocked`` where it cannot
  be built or does not serve the inputs.

``fused_core`` (``iha.backends.fused``) is not a backend but the whole IHA core on the ``band``
kernel: the query mixing + RoPE and the collapse fused into the attention (``iha.functional``
uses it where ``band`` would run).

``keep_freed_memory`` (``cpu_memory``) is an opt-in process setting for CPU runs: glibc keeps
freed blocks for reuse instead of page-faulting fresh ones each step. The band kernel keeps its
own large outputs' freed buffers for reuse by default (``band_pool_limit``, ``band_empty_pool``,
``band_pool_cached_bytes``).
"""

from iha.backends import fused as fused_core
from iha.backends import mixing as fused_mixing
from iha.backends.band import attend_band
from iha.backends.band import empty_pool as band_empty_pool
from iha.backends.band import kernel_available as band_kernel_available
from iha.backends.band import pool_cached_bytes as band_pool_cached_bytes
from iha.backends.band import pool_limit as band_pool_limit
from iha.backends.blocked import attend_blocked
from iha.backends.cpu_memory import keep_freed_memory
from iha.backends.flex import attend_flex
from iha.backends.reference import attend_reference
from iha.backends.sdpa import attend_sdpa, expand_kv

BACKENDS = {
    "reference": attend_reference,
    "sdpa": attend_sdpa,
    "blocked": attend_blocked,
    "flex": attend_flex,
    "band": attend_band,
}

__all__ = [
    "BACKENDS",
    "attend_band",
    "attend_blocked",
    "attend_flex",
    "attend_reference",
    "attend_sdpa",
    "band_empty_pool",
    "band_kernel_available",
    "band_pool_cached_bytes",
    "band_pool_limit",
    "expand_kv",
    "fused_core",
    "fused_mixing",
    "keep_freed_memory",
]
