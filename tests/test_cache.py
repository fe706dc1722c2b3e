"""iha.cache.RowBuffer: appended rows equal torch.cat of them, through growth and compaction."""

from __future__ import annotations

import pytest
import torch

from iha.cache import RowBuffer


def test_rows_equal_the_concatenation_through_growth_and_trimming():
    g = torch.Generator().manual_seed(0)
    buf, ref = RowBuffer(), torch.empty(2, 3, 0, 4)
    sizes = [5, 1, 1, 7, 1, 1, 1, 20, 1, 3, 1, 1, 1, 1, 40, 1]
    allocations = set()
    for i, n in enumerate(sizes):
        x = torch.randn(2, 3, n, 4, generator=g)
        ref = torch.cat([ref, x], dim=2)
        got = buf.append(x)
        allocations.add(buf.data.data_ptr())
        assert torch.equal(got, ref)
        if i % 3 == 2:  # a sliding window: keep the last 6 rows
            buf.keep_last(6)
            ref = ref[:, :, -6:]
            assert torch.equal(buf.rows(), ref)
    assert len(allocations) < len(sizes) // 2  # most appends reuse the buffer


def test_single_row_appends_reuse_one_buffer_until_it_is_full():
    buf = RowBuffer()
    buf.append(torch.zeros(1, 1, 8, 2))  # capacity 16
    first = buf.data.data_ptr()
    for _ in range(8):
        buf.append(torch.ones(1, 1, 1, 2))
        assert buf.data.data_ptr() == first
    buf.append(torch.ones(1, 1, 1, 2))
    assert buf.data.data_ptr() != first and len(buf) == 17


def test_select_and_errors():
    buf = RowBuffer()
    with pytest.raises(ValueError, match="empty"):
        buf.rows()
    x = torch.arange(24.0).view(2, 3, 2, 2)
    buf.append(x)
    buf.select(torch.tensor([1, 0]))
    assert torch.equal(buf.rows(), x.flip(0))
    with pytest.raises(ValueError, match="do not match"):
        buf.append(torch.zeros(2, 4, 1, 2))
