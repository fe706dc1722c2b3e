"""Each task generator against a brute-force, loop-based reference on small cases."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

from iha.tasks import (
    CPM3Task,
    KHopInductionTask,
    MQARTask,
    MultiKeyNIAHTask,
    PolynomialTask,
    RelationCompositionTask,
    binary_relations,
    compose,
    cpm3_targets,
    filter_bank,
    khop_targets,
    random_full_rank,
    ternary_relations,
)


def brute_cpm3(xs: list[int], modulus: int, g: int) -> list[int]:
    n = len(xs)
    return [
        sum(
            1
            for j1, j2 in itertools.product(range(n), repeat=2)
            if (xi + g * xs[j1] + xs[j2]) % modulus == 0
        )
        for xi in xs
    ]


def test_cpm3_paper_example_gives_three_threes() -> None:
    assert cpm3_targets(torch.tensor([1, 2, 3]), 3, 10).tolist() == [3, 3, 3]


@pytest.mark.parametrize("modulus,g", [(3, 10), (5, 3), (7, 2), (4, 0), (6, -5)])
def test_cpm3_targets_match_brute_force_1d_and_batched(modulus: int, g: int) -> None:
    gen = torch.Generator().manual_seed(modulus * 100 + g)
    x = torch.randint(0, 20, (6, 5), generator=gen)
    batched = cpm3_targets(x, modulus, g)
    for row, out in zip(x, batched):
        expect = brute_cpm3(row.tolist(), modulus, g)
        assert out.tolist() == expect
        assert cpm3_targets(row, modulus, g).tolist() == expect


def test_cpm3_valid_mask_counts_only_real_positions() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 9, (5, 6), generator=gen)
    lengths = [1, 3, 6, 4, 2]
    valid = torch.arange(6) < torch.tensor(lengths)[:, None]
    out = cpm3_targets(x, 5, 3, valid)
    for row, length, got in zip(x, lengths, out):
        expect = brute_cpm3(row[:length].tolist(), 5, 3) + [0] * (6 - length)
        assert got.tolist() == expect


def test_cpm3_task_warns_when_g_is_one_mod_m() -> None:
    with pytest.warns(UserWarning, match="g mod modulus == 1"):
        CPM3Task(n_max=3, modulus=3, g=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CPM3Task(n_max=3, modulus=7, g=3)


def test_cpm3_task_batches_match_brute_force_with_padding() -> None:
    task = CPM3Task(n_max=6, modulus=5, g=2, n_values=9, min_len=2, seed=3)
    assert task.pad_id == 9 and task.vocab_size == 10 and task.num_classes == 37
    batch = next(task.batches("train", 32, seed=0))
    for inp, tgt, mask in zip(batch.inputs, batch.targets, batch.loss_mask):
        length = int(mask.sum())
        assert 2 <= length <= 6 and bool(mask[:length].all())
        assert bool((inp[length:] == 9).all()) and bool((inp[:length] < 9).all())
        assert tgt[:length].tolist() == brute_cpm3(inp[:length].tolist(), 5, 2)


def test_filter_bank_matches_matrix_powers() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, 5, generator=gen, dtype=torch.float64)
    x = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    out = filter_bank(a, x, 4)
    assert out.shape == (3, 5, 8)
    for j in range(4):
        ref = torch.stack([torch.linalg.matrix_power(a[b], j) @ x[b] for b in range(3)])
        torch.testing.assert_close(out[..., 2 * j : 2 * j + 2], ref, rtol=1e-12, atol=1e-12)


def test_random_full_rank_is_full_rank_with_unit_spectral_norm() -> None:
    a = random_full_rank(16, 6, torch.Generator().manual_seed(0))
    sv = torch.linalg.svdvals(a)
    torch.testing.assert_close(sv[:, 0], torch.ones(16, dtype=torch.float64))
    assert bool((sv[:, -1] > 1e-6).all())
    assert int(torch.linalg.matrix_rank(a).min()) == 6


@pytest.mark.parametrize("operator", ["fixed", "per_example"])
def test_polynomial_task_targets_are_the_filter_bank_of_its_features(operator: str) -> None:
    n, d, k = 5, 3, 4
    task = PolynomialTask(n, d, k, operator=operator, dtype=torch.float64, seed=1)
    batch = next(task.batches("train", 7))
    feats = batch.inputs
    assert feats.shape == (7, n, task.input_dim) and batch.targets.shape == (7, n, k * d)
    x = feats[..., :d]
    torch.testing.assert_close(feats[..., -n:], torch.eye(n, dtype=torch.float64).expand(7, n, n))
    a = task.operator.expand(7, n, n) if operator == "fixed" else feats[..., d : d + n]
    for b in range(7):
        assert int(torch.linalg.matrix_rank(a[b])) == n
        for j in range(k):
            ref = torch.linalg.matrix_power(a[b], j) @ x[b]
            torch.testing.assert_close(batch.targets[b, :, j * d : (j + 1) * d], ref)
    assert bool(batch.loss_mask.all())


def brute_compose(r: list[list[bool]], hops: int) -> list[list[bool]]:
    m = len(r)
    out = r
    for _ in range(hops - 1):
        out = [[any(out[i][k] and r[k][j] for k in range(m)) for j in range(m)] for i in range(m)]
    return out


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_compose_matches_existential_brute_force(hops: int) -> None:
    gen = torch.Generator().manual_seed(hops)
    r = torch.rand(6, 5, 5, generator=gen) < 0.3
    batched = compose(r, hops)
    for b in range(6):
        expect = brute_compose(r[b].tolist(), hops)
        assert batched[b].tolist() == expect
        assert compose(r[b], hops).tolist() == expect


@pytest.mark.parametrize("hops,m_min,m_max,p", [(2, 2, 4, 0.4), (3, 3, 5, 0.3)])
def test_relation_task_layout_and_labels(hops: int, m_min: int, m_max: int, p: float) -> None:
    task = RelationCompositionTask(
        hops, m_min, m_max, p, seed=0, split_sizes={"train": 64, "val": 8, "test": 8}
    )
    assert task.seq_len == m_max * m_max and task.output == "binary" and task.pad_id == 2
    data = task.split("train")
    seen_m = set()
    for inp, tgt, mask in zip(data.inputs, data.targets, data.loss_mask):
        size = int(mask.sum())
        m = math.isqrt(size)
        assert m * m == size and m_min <= m <= m_max and bool(mask[:size].all())
        seen_m.add(m)
        assert bool((inp[size:] == 2).all()) and bool((tgt[size:] == 0).all())
        r = [[bool(inp[i * m + j]) for j in range(m)] for i in range(m)]  # row-major
        expect = brute_compose(r, hops)
        assert tgt[:size].tolist() == [float(expect[i][j]) for i in range(m) for j in range(m)]
    assert seen_m == set(range(m_min, m_max + 1))


def test_relation_presets_have_the_papers_parameters() -> None:
    binary, ternary = binary_relations(), ternary_relations()
    assert (binary.hops, binary.m_min, binary.m_max, binary.p) == (2, 6, 10, 0.325)
    assert (ternary.hops, ternary.m_min, ternary.m_max, ternary.p) == (3, 5, 8, 0.264)
    for task in (binary, ternary):
        assert task.split_sizes == {"train": 40_000, "val": 5_000, "test": 5_000}
    small = binary_relations(split_sizes={"train": 3000, "val": 10, "test": 10})
    data = small.split("train")
    rate = data.inputs[data.loss_mask].float().mean().item()
    assert abs(rate - 0.325) < 0.01  # ~240k Bernoulli draws: std ~0.001


def test_mqar_targets_match_lookup() -> None:
    task = MQARTask(num_pairs=5, num_keys=8, num_values=6, num_queries=3, seed=2)
    batch = next(task.batches("train", 50))
    assert task.seq_len == 13 and task.vocab_size == 14
    for inp, tgt, mask in zip(batch.inputs.tolist(), batch.targets.tolist(), batch.loss_mask):
        keys, values = inp[0:10:2], inp[1:10:2]
        assert len(set(keys)) == 5 and all(k < 8 for k in keys)
        assert all(8 <= v < 14 for v in values)
        queries = inp[10:]
        assert len(set(queries)) == 3 and mask.tolist() == [False] * 10 + [True] * 3
        for pos, key in enumerate(queries, start=10):
            assert tgt[pos] == values[keys.index(key)]


def brute_khop(xs: list[int], hops: int, none_id: int) -> list[int]:
    out = []
    for i in range(len(xs)):
        pos = i
        for _ in range(hops):
            earlier = [j for j in range(pos) if xs[j] == xs[pos]]
            if not earlier:
                pos = None
                break
            pos = earlier[-1] + 1
        out.append(none_id if pos is None else xs[pos])
    return out


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_khop_targets_match_brute_force(hops: int) -> None:
    x = torch.randint(0, 4, (20, 15), generator=torch.Generator().manual_seed(hops))
    out = khop_targets(x, hops, none_id=4)
    for row, got in zip(x.tolist(), out.tolist()):
        assert got == brute_khop(row, hops, 4)


def test_khop_task_loss_mask_modes() -> None:
    every = KHopInductionTask(5, 12, 2, seed=0)
    defined = KHopInductionTask(5, 12, 2, loss_on="defined", seed=0)
    a, b = next(every.batches("train", 30)), next(defined.batches("train", 30))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert bool(a.loss_mask.all())
    assert torch.equal(b.loss_mask, a.targets != 5) and a.targets.max() <= 5


def test_niah_needles_and_targets_match_lookup() -> None:
    task = MultiKeyNIAHTask(
        seq_len=20, num_needles=4, num_queries=2, num_filler=3, num_keys=6, num_values=5, seed=0
    )
    f, nk, hay = 3, 6, task.haystack_len
    batch = next(task.batches("train", 60))
    for inp, tgt, mask in zip(batch.inputs.tolist(), batch.targets.tolist(), batch.loss_mask):
        key_pos = [i for i in range(hay) if f <= inp[i] < f + nk]
        assert len(key_pos) == 4 and len({inp[i] for i in key_pos}) == 4
        assert all(f + nk <= inp[i + 1] < f + nk + 5 for i in key_pos)
        value_pos = {i + 1 for i in key_pos}
        assert all(inp[i] < f for i in range(hay) if i not in value_pos and i not in key_pos)
        assert inp[hay] == task.query_id
        assert mask.tolist() == [False] * (hay + 1) + [True] * 2
        for pos in (hay + 1, hay + 2):
            needle = next(i for i in key_pos if inp[i] == inp[pos])
            assert tgt[pos] == inp[needle + 1]


def test_niah_needle_placements_cover_the_whole_haystack() -> None:
    task = MultiKeyNIAHTask(seq_len=12, num_needles=2, num_filler=2, num_keys=2, seed=0)
    data = next(task.batches("train", 2000))
    hay = task.haystack_len
    is_key = (data.inputs[:, :hay] >= 2) & (data.inputs[:, :hay] < 4)
    # every start position from 0 to hay - 2 is used by some needle
    assert bool(is_key.any(0)[: hay - 1].all()) and not bool(is_key[:, hay - 1].any())


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"n_max": 0}, "n_max"),
        ({"min_len": 9}, "min_len"),
        ({"modulus": 0}, "modulus"),
    ],
)
def test_cpm3_bad_arguments_raise_value_error(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CPM3Task(**kwargs)


def test_bad_arguments_raise_value_error_naming_them() -> None:
    with pytest.raises(ValueError, match="operator"):
        PolynomialTask(operator="random")
    with pytest.raises(ValueError, match="hops"):
        compose(torch.zeros(3, 3, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="dtype"):
        compose(torch.zeros(3, 3), 2)
    with pytest.raises(ValueError, match="num_queries"):
        MQARTask(num_pairs=2, num_queries=3)
    with pytest.raises(ValueError, match="seq_len"):
        MultiKeyNIAHTask(seq_len=8, num_needles=4)
    with pytest.raises(ValueError, match="loss_on"):
        KHopInductionTask(loss_on="last")
    with pytest.raises(ValueError, match="x has dtype"):
        cpm3_targets(torch.zeros(3), 3, 2)
