"""Interleaved Head Attention (arXiv:2602.21371) for PyTorch."""

import os

# OpenMP worker threads that wait for the next parallel region by spinning (libgomp's default)
# steal the cores of the threads they wait for when the machine runs anything else: with two
# threads on a busy 2-core host, decoding ran 7-60x slower than with one (docs/benchmarks.md).
# Sleeping waiters cost microseconds per region. libgomp reads this when torch is first imported,
# so it applies when iha is imported first (the ``iha`` command); a value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from iha import flops
from iha.attention import InterleavedHeadAttention
from iha.cache import KVCache
from iha.functional import interleaved_head_attention
from iha.optim import param_groups

__version__ = "0.1.0"

__all__ = [
    "InterleavedHeadAttention",
    "KVCache",
    "flops",
    "interleaved_head_attention",
    "param_groups",
]
