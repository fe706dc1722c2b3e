"""Interleaved Head Attention (arXiv:2602.21371) for PyTorch."""

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
