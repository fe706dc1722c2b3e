"""A per-layer key/value cache for incremental decoding.

Two policies for IHA layers (they give the same outputs):
- ``"raw"``: store the projected, unmixed, un-rotated keys/values (B, G, L, d); the mixing and
  RoPE are recomputed over the cache at every step. 1/P of the memory of ``"pseudo"``.
- ``"pseudo"``: store the mixed, rotated pseudo keys/values (B, G, L*P, d); no recomputation.

``max_tokens`` bounds what is kept between steps (a sliding-window layer needs only its last
``window`` tokens), so decode memory of local layers does not grow with the length.
"""

from __future__ import annotations

import torch

from iha.validate import check_choice, check_int

CACHE_POLICIES = ("raw", "pseudo")


class KVCache:
    """Keys, values, padding mask and token offset of one attention layer (incremental decoding).

    Made by a layer's ``make_cache``; pass it as ``cache=`` to every call of that layer. Each
    call appends its new tokens and attends over everything held.

    Keys and values live in :class:`RowBuffer` s: a step appends its new rows without copying
    the cache (no allocation that grows with the context), and ``keys`` / ``values`` are views.

    Args:
        policy (str): what IHA layers store. ``"raw"`` (default): the projected, unmixed,
            un-rotated keys/values (B, G, L, d), mixed and rotated again at every step (1/P of
            the memory of ``"pseudo"``); ``"pseudo"``: the mixed, rotated pseudo keys/values
            (B, G, L*P, d). Both give the same outputs. The non-IHA layers of ``iha.models``
            always store rotated keys.
        max_tokens (int, optional): keep at most this many tokens between calls (a layer with
            a sliding window of W tokens needs only its last W). Default: ``None`` (all).

    Attributes:
        keys, values (Tensor or None): what is held, (B, G, L*U, d), U = P for ``"pseudo"``.
        attention_mask (Tensor or None): (B, L) bool, True = real token, None = no padding.
        offset (int): tokens seen so far (the absolute index of the next token).

    Example::

        >>> import torch
        >>> from iha import InterleavedHeadAttention, KVCache
        >>> layer = InterleavedHeadAttention(16, 2, n_pseudo=2, window=4)
        >>> cache = layer.make_cache("raw")  # KVCache(policy="raw", max_tokens=4)
        >>> _ = layer(torch.randn(1, 6, 16), cache=cache)
        >>> cache.offset, cache.n_tokens, isinstance(cache, KVCache)
        (6, 4, True)
    """

    def __init__(self, policy: str = "raw", max_tokens: int | None = None) -> None:
        check_choice("policy", policy, CACHE_POLICIES)
        check_int("max_tokens", max_tokens, 1, allow_none=True)
        self.policy = policy
        self.max_tokens = max_tokens
        self._keys = RowBuffer()  # (B, G, L*U, d); U = P for "pseudo", else 1
        self._values = RowBuffer()
        self.attention_mask: torch.Tensor | None = None  # (B, L) bool, True = real
        self.offset = 0  # tokens seen so far (absolute index of the next token)
        self._held = 0  # tokens currently held (<= offset when bounded)

    @property
    def keys(self) -> torch.Tensor | None:
        """The held keys (B, G, L*U, d) (a view), or None before the first update."""
        return None if self._keys.data is None else self._keys.rows()

    @property
    def values(self) -> torch.Tensor | None:
        """The held values (B, G, L*U, d) (a view), or None before the first update."""
        return None if self._values.data is None else self._values.rows()

    @property
    def n_tokens(self) -> int:
        """Tokens currently held (<= offset when bounded)."""
        return self._held

    def update(
        self,
        keys: torch.Tensor,  # (B, G, n*U, d)
        values: torch.Tensor,
        n_new: int,
        attention_mask: torch.Tensor | None = None,  # (B, n_new) bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """Append ``n_new`` tokens.

        Args:
            keys (Tensor): (B, G, n_new*U, d) keys of the new tokens (U = P under ``"pseudo"``).
            values (Tensor): like ``keys``.
            n_new (int): number of new tokens.
            attention_mask (Tensor, optional): (B, n_new) bool, True = real token.

        Returns:
            (keys, values, attention_mask, offset): the kept prefix plus the new tokens, and
            the absolute index of the first new token.
        """
        start = self.offset
        B = keys.shape[0]
        if self._keys.data is not None and self._keys.data.shape[0] != B:
            raise ValueError(f"cache holds batch {self._keys.data.shape[0]}, got batch {B}")
        all_k = self._keys.append(keys)
        all_v = self._values.append(values)
        if attention_mask is not None or self.attention_mask is not None:
            old = self.attention_mask
            if old is None:
                old = torch.ones(B, self._held, dtype=torch.bool, device=keys.device)
            new = attention_mask
            if new is None:
                new = torch.ones(B, n_new, dtype=torch.bool, device=keys.device)
            all_m = torch.cat([old, new], dim=1)
        else:
            all_m = None
        held = self._held + n_new
        per_token = all_k.shape[2] // held
        keep = held if self.max_tokens is None else min(held, self.max_tokens)
        self._keys.keep_last(keep * per_token)
        self._values.keep_last(keep * per_token)
        self.attention_mask = None if all_m is None else all_m[:, held - keep :]
        self._held = keep
        self.offset = start + n_new
        return all_k, all_v, all_m, start

    def nbytes(self) -> int:
        """Bytes held by the cached keys and values (spare capacity not counted)."""
        if self.keys is None:
            return 0
        return self.keys.numel() * self.keys.element_size() * 2

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search / dropping finished sequences)."""
        self._keys.select(index)
        self._values.select(index)
        if self.attention_mask is not None:
            self.attention_mask = self.attention_mask[index]


class RowBuffer:
    """Rows of (B, G, L, d) tensors appended along dim 2 without a new tensor at every step.

    ``torch.cat`` of a cache with one new token allocates and copies the whole cache at every
    step (and a large allocation is fresh pages: page faults that grow with the context). This
    buffer keeps spare capacity: an append copies only the new rows; when the capacity is
    reached the held rows move to the front (when they fill at most half of it) or to a buffer
    twice as large, so a step costs O(new rows) amortized and the allocations are O(log L).
    :meth:`rows` is a view of the held rows (strided over B and G, rows contiguous).
    """

    def __init__(self) -> None:
        self.data: torch.Tensor | None = None  # (B, G, capacity, d)
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def rows(self) -> torch.Tensor:
        """The held rows (B, G, len, d), a view."""
        if self.data is None:
            raise ValueError("RowBuffer is empty: append rows first")
        return self.data[:, :, self.start : self.end]

    def append(self, x: torch.Tensor) -> torch.Tensor:
        """Append rows x (B, G, n, d); returns :meth:`rows`."""
        n = x.shape[2]
        if self.data is None:
            self.data = x.new_empty(*x.shape[:2], max(2 * n, 16), x.shape[3])
        elif (
            self.data.shape[:2] != x.shape[:2]
            or self.data.shape[3] != x.shape[3]
            or self.data.dtype != x.dtype
            or self.data.device != x.device
        ):
            raise ValueError(
                f"rows {tuple(x.shape)} {x.dtype} do not match the buffer's "
                f"{tuple(self.data.shape)} {self.data.dtype}"
            )
        if self.end + n > self.data.shape[2]:
            held = self.end - self.start
            if 2 * (held + n) <= self.data.shape[2]:  # room enough: move the held rows first
                self.data[:, :, :held] = self.data[:, :, self.start : self.end].clone()
            else:
                grown = x.new_empty(*x.shape[:2], 2 * (held + n), x.shape[3])
                grown[:, :, :held] = self.data[:, :, self.start : self.end]
                self.data = grown
            self.start, self.end = 0, held
        self.data[:, :, self.end : self.end + n] = x
        self.end += n
        return self.rows()

    def keep_last(self, n: int) -> None:
        """Drop all but the last ``n`` held rows."""
        self.start = max(self.start, self.end - n)

    def select(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (beam search)."""
        if self.data is not None:
            self.data = self.data[index]

