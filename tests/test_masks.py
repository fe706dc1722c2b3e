"""The mask rule (``MaskSpec.mask_mod``) and the forms evaluated from it, against a loop over
(query, key) pairs written from docs/spec.md step 4."""

from __future__ import annotations

import pytest
import torch

from iha.masks import MaskSpec


def mask_by_loops(spec: MaskSpec, attention_mask: torch.Tensor | None, batch: int):
    """(B, n_q*P, n_k*P) bool from the definition, one pair at a time."""
    P = spec.n_pseudo
    out = torch.zeros(batch, spec.n_q * P, spec.n_k * P, dtype=torch.bool)
    for b in range(batch):
        for i in range(spec.n_q * P):
            for j in range(spec.n_k * P):
                q_token, k_token = spec.q_start + i // P, spec.k_start + j // P
                q_virtual, k_virtual = q_token * P + i % P, k_token * P + j % P
                if spec.mode == "flat":
                    ok = k_virtual <= q_virtual
                    ok = ok and (spec.window is None or q_virtual - k_virtual < spec.window * P)
                elif spec.mode == "token":
                    ok = k_token <= q_token
                    ok = ok and (spec.window is None or q_token - k_token < spec.window)
                else:
                    ok = True
                if attention_mask is not None and not attention_mask[b, j // P]:
                    ok = False
                out[b, i, j] = ok
    return out


SPECS = [  # mode, P, n_q, n_k, q_start, k_start, window
    ("flat", 3, 5, 5, 0, 0, None), ("flat", 3, 3, 7, 5, 1, 2), ("flat", 2, 1, 9, 8, 0, 3),
    ("token", 3, 4, 6, 3, 1, None), ("token", 3, 6, 6, 0, 0, 3), ("token", 2, 2, 8, 10, 4, 1),
    ("none", 3, 4, 4, 0, 0, None), ("flat", 1, 4, 6, 2, 0, 2), ("token", 4, 3, 3, 7, 7, 2),
]


@pytest.mark.parametrize("fields", SPECS)
def test_dense_mask_follows_the_definition(fields):
    spec = MaskSpec(*fields)
    assert torch.equal(spec.allowed(), mask_by_loops(spec, None, 1)[0])


@pytest.mark.parametrize("fields", SPECS)
def test_mask_mod_elementwise_with_key_padding_follows_the_definition(fields):
    """Evaluated one (b, h, q, k) at a time, as FlexAttention evaluates it, with padding."""
    flex_attention = pytest.importorskip("torch.nn.attention.flex_attention")
    spec, B = MaskSpec(*fields), 2
    kpm = torch.rand(B, spec.n_k, generator=torch.Generator().manual_seed(0)) > 0.4
    P = spec.n_pseudo
    got = flex_attention.create_mask(spec.mask_mod(kpm), B, 1, spec.n_q * P, spec.n_k * P, "cpu")
    assert torch.equal(got[:, 0], mask_by_loops(spec, kpm, B))


def test_block_mask_covers_exactly_the_allowed_blocks():
    """A (128, 128) block of scores is listed iff some pair in it is allowed, and listed as
    full (no mask evaluated) iff every pair in it is."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    spec = MaskSpec("token", 4, 100, 160, q_start=60, window=20)  # (400, 640) pseudo pairs
    dense, block_mask = spec.allowed(), spec.block_mask()
    n_q_blocks, n_k_blocks = 4, 5
    listed = block_mask.to_dense()[0, 0].bool()  # (q blocks, k blocks): partial or full
    full = torch.zeros(n_q_blocks, n_k_blocks, dtype=torch.bool)
    counts, indices = block_mask.full_kv_num_blocks[0, 0], block_mask.full_kv_indices[0, 0]
    for row in range(n_q_blocks):
        full[row, indices[row, : counts[row]]] = True
    for row in range(n_q_blocks):
        for col in range(n_k_blocks):
            pairs = dense[row * 128 : (row + 1) * 128, col * 128 : (col + 1) * 128]
            assert listed[row, col] == pairs.any(), (row, col)
            assert full[row, col] == pairs.all(), (row, col)


# --------------------------------------------------------------------- attention_mask convention
def test_check_attention_mask_accepts_bool_and_integer_zero_one():
    from iha.masks import check_attention_mask

    want = torch.tensor([[False, True, True]])
    assert torch.equal(check_attention_mask(want), want)
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.int8):
        got = check_attention_mask(torch.tensor([[0, 1, 1]], dtype=dtype))
        assert got.dtype == torch.bool and torch.equal(got, want)
    assert check_attention_mask(None) is None


@pytest.mark.parametrize(
    "mask, match",
    [
        (torch.tensor([[0.0, 1.0]]), "float"),  # a 0/1 float mask
        (torch.tensor([[0.0, float("-inf")]]), "float"),  # an additive mask
        (torch.tensor([[0, 2]]), "only 0 and 1"),
        (torch.tensor([[-1, 1]]), "only 0 and 1"),
        ([[1, 1]], "tensor"),
    ],
)
def test_check_attention_mask_refuses_other_conventions_naming_the_expected_one(mask, match):
    from iha.masks import check_attention_mask

    with pytest.raises(ValueError, match=match) as err:
        check_attention_mask(mask)
    assert "1/True = real token, 0/False = padding" in str(err.value)


def test_reject_key_padding_mask_names_the_new_argument():
    from iha.masks import reject_key_padding_mask

    reject_key_padding_mask(None)
    with pytest.raises(TypeError, match="attention_mask"):
        reject_key_padding_mask(torch.ones(1, 2, dtype=torch.bool))
