"""The data of `iha reproduce lm`: mixed-pair MQAR layout and the pydoc_data text corpus."""

import pytest
import torch

from iha.reproduce.lm_tasks import (
    CORPUS_FRACTIONS,
    CorpusDocuments,
    MixedMQARTask,
    corpus_fingerprint,
    corpus_paragraphs,
    corpus_split_of,
    pydoc_corpus,
)
from iha.tokenizers import ByteTokenizer
from iha.train.config import DataConfig


def test_mixed_mqar_targets_are_the_values_bound_to_the_queried_keys():
    task = MixedMQARTask((1, 3, 5), num_keys=8, num_values=6, seed=3)
    batch = task.generate(200, torch.Generator().manual_seed(0))
    pad = task.pad_id
    seen_counts = set()
    for row, target, mask in zip(batch.inputs.tolist(), batch.targets.tolist(),
                                 batch.loss_mask.tolist()):  # fmt: skip
        real = [t for t in row if t != pad]
        d = len(real) // 3
        seen_counts.add(d)
        assert len(real) == 3 * d and row[3 * d :] == [pad] * (task.seq_len - 3 * d)
        context = dict(zip(real[0 : 2 * d : 2], real[1 : 2 * d : 2]))
        assert len(context) == d  # distinct keys
        assert all(k < 8 for k in context) and all(8 <= v < 14 for v in context.values())
        assert sorted(real[2 * d :]) == sorted(context)  # every key asked once
        for pos in range(task.seq_len):
            if 2 * d <= pos < 3 * d:
                assert mask[pos] and target[pos] == context[row[pos]]
            else:
                assert not mask[pos]
    assert seen_counts == {1, 3, 5}


def test_mixed_mqar_with_pairs_keeps_length_and_fixes_the_count():
    task = MixedMQARTask((2, 4), num_keys=8, num_values=8, seed=0)
    four = task.with_pairs(2)
    assert four.seq_len == task.seq_len == 12 and four.vocab_size == task.vocab_size
    assert (four.split("test").loss_mask.sum(1) == 2).all()


def test_mixed_mqar_padded_length_only_appends_padding():
    short = MixedMQARTask((4,), num_keys=8, num_values=8, seed=1)
    padded = MixedMQARTask((4,), num_keys=8, num_values=8, seq_len=16, seed=1)
    a = short.generate(50, torch.Generator().manual_seed(2))
    b = padded.generate(50, torch.Generator().manual_seed(2))
    assert b.inputs.shape == (50, 16) and padded.with_pairs(2).seq_len == 16
    assert torch.equal(b.inputs[:, :12], a.inputs) and (b.inputs[:, 12:] == padded.pad_id).all()
    assert torch.equal(b.targets[:, :12], a.targets) and not b.loss_mask[:, 12:].any()
    with pytest.raises(ValueError, match="seq_len"):
        MixedMQARTask((4,), 8, 8, seq_len=11)


def test_mixed_mqar_rejects_bad_arguments_by_name():
    with pytest.raises(ValueError, match="pair_counts"):
        MixedMQARTask((), 8, 8)
    with pytest.raises(ValueError, match="num_keys"):
        MixedMQARTask((4, 9), 8, 8)


def test_corpus_splits_partition_every_paragraph():
    paragraphs = corpus_paragraphs()
    assert len(paragraphs) > 500
    tok = ByteTokenizer()
    docs = {s: CorpusDocuments(s, tok, append_eos=False) for s in CORPUS_FRACTIONS}
    assert sum(len(d) for d in docs.values()) == len(paragraphs)
    texts = {s: set(d.texts) for s, d in docs.items()}
    # a paragraph's split depends on its place only; identical texts may recur across topics
    for topic, i, text in paragraphs[:200]:
        assert text in texts[corpus_split_of(topic, i)]
    sizes = corpus_fingerprint()["bytes"]
    assert sum(sizes.values()) == sum(len(t.encode()) for _, _, t in paragraphs)
    assert sizes["val"] > 10_000 and sizes["test"] > 10_000


def test_corpus_source_serves_byte_tokens_in_a_seeded_order():
    tok = ByteTokenizer()
    source = pydoc_corpus(DataConfig(), tok, "val", 0)
    first = [ids for ids, _ in source.documents(0, 0, False, 0)]
    assert tok.decode(first[0][:-1]) == source.texts[0] and first[0][-1] == tok.eos_token_id
    a = [ids for ids, _ in source.documents(1, 0, True, 5)]
    b = [ids for ids, _ in source.documents(1, 0, True, 5)]
    c = [ids for ids, _ in source.documents(2, 0, True, 5)]
    assert a == b and a != c and sorted(map(tuple, a)) == sorted(map(tuple, first))
    assert [ids for ids, _ in source.documents(1, 3, True, 5)] == a[3:]
    with pytest.raises(ValueError, match="split"):
        CorpusDocuments("dev", tok)
