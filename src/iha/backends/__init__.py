"""Interchangeable implementations of the attention step (SPEC.md steps 4-5).

Every backend takes pseudo queries (B, H, Nq*P, d) and pseudo keys/values (B, G, Nk*P, d) that
are already mixed, interleaved and rotated, plus a ``MaskSpec``, and returns (B, H, Nq*P, d).
They all agree with ``reference`` (the test oracle).
"""

from iha.backends.reference import attend_reference
from iha.backends.sdpa import attend_sdpa

BACKENDS = {"reference": attend_reference, "sdpa": attend_sdpa}

__all__ = ["BACKENDS", "attend_reference", "attend_sdpa"]
