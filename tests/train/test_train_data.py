"""Data: packing order, exact resume of the stream position, loss masks, held-out documents."""

from __future__ import annotations

import json

import pytest
import torch

from iha.tokenizers import ByteTokenizer
from iha.train.config import DataConfig
from iha.train.data import (
    LocalFiles,
    PackedStream,
    TaskStream,
    build_data,
    build_task,
    expand_braces,
    shard_rows,
)

TOK = ByteTokenizer()


def corpus(path, n=12):
    docs = [f"doc{i} " + "abc " * (i % 5) + f"line\nsecond line of doc{i}" for i in range(n)]
    path.write_text("\n\n".join(docs) + "\n")
    return docs


def reference_stream(docs):
    """Document tokens + eos, concatenated: encoded independently of the data module."""
    out = []
    for d in docs:
        out.extend(list(d.encode("utf-8")) + [TOK.eos_token_id])
    return out


def test_packed_sequences_tile_the_document_stream_in_order(tmp_path):
    docs = corpus(tmp_path / "c.txt")
    cfg = DataConfig(path=str(tmp_path / "c.txt"), seq_len=16)
    stream = PackedStream(LocalFiles(cfg.path, "text", TOK, cfg), 16, 3, shuffle=False, seed=0)
    ref = reference_stream(docs)
    ref = ref * (1 + 40 * 16 // len(ref) + 1)  # later epochs repeat the same order
    for k in range(12):  # crosses at least one epoch boundary
        b = stream.next_batch()
        for r in range(3):
            i = (3 * k + r) * 16
            assert b.inputs[r].tolist() == ref[i : i + 16]
            assert b.targets[r].tolist() == ref[i + 1 : i + 17]
        assert bool(b.loss_mask.all())
    assert stream.epoch >= 1


@pytest.mark.parametrize("stop_after", [1, 4, 7])
def test_stream_resumed_from_its_state_continues_identically(tmp_path, stop_after):
    corpus(tmp_path / "c.txt")
    cfg = DataConfig(path=str(tmp_path / "c.txt"), seq_len=8)

    def make():
        return PackedStream(LocalFiles(cfg.path, "text", TOK, cfg), 8, 5, shuffle=True, seed=3)

    a = make()
    for _ in range(stop_after):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # what a checkpoint stores
    expected = [a.next_batch() for _ in range(6)]
    b = make()
    b.load_state_dict(state)
    for want in expected:
        got = b.next_batch()
        assert torch.equal(got.inputs, want.inputs) and torch.equal(got.targets, want.targets)


def test_shuffle_is_seeded_and_differs_between_epochs(tmp_path):
    corpus(tmp_path / "c.txt", n=30)
    cfg = DataConfig(path=str(tmp_path / "c.txt"))
    docs = LocalFiles(cfg.path, "text", TOK, cfg)

    def order(epoch, seed):
        return [TOK.decode(d[0]).split()[0] for d in docs.documents(epoch, 0, True, seed)]

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(1, 1)
    assert order(0, 1) != order(0, 2)
    assert sorted(order(0, 1)) == sorted(f"doc{i}" for i in range(30))


def test_jsonl_prompt_response_masks_exactly_the_response(tmp_path):
    path = tmp_path / "sft.jsonl"
    records = [{"q": "Q1?", "a": "yes"}, {"q": "Question two", "a": "no!"}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    cfg = DataConfig(source="jsonl", path=str(path), prompt_field="q", response_field="a")
    docs = LocalFiles(cfg.path, "jsonl", TOK, cfg)
    ids, mask = [], []
    for r in records:  # reference: prompt tokens unmasked, response + eos masked
        p, a = list(r["q"].encode()), list(r["a"].encode()) + [TOK.eos_token_id]
        ids += p + a
        mask += [False] * len(p) + [True] * len(a)
    n = len(ids) - 1
    batch = PackedStream(docs, n, 1, shuffle=False, seed=0).next_batch()
    assert batch.inputs[0].tolist() == ids[:-1]
    assert batch.targets[0].tolist() == ids[1:]
    assert batch.loss_mask[0].tolist() == mask[1:]


def test_jsonl_missing_field_names_file_and_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"body": "x"}\n')
    cfg = DataConfig(source="jsonl", path=str(path))
    with pytest.raises(ValueError, match="d.jsonl.*'text'"):
        LocalFiles(cfg.path, "jsonl", TOK, cfg).read(0)


def test_missing_data_path_is_an_error_naming_it(tmp_path):
    cfg = DataConfig(path=str(tmp_path / "missing" / "*.txt"))
    with pytest.raises(ValueError, match="missing"):
        build_data(cfg, TOK, 2, 0, 1)


def test_validation_documents_are_held_out_from_training(tmp_path):
    corpus(tmp_path / "c.txt", n=40)
    cfg = DataConfig(path=str(tmp_path / "c.txt"), seq_len=32, val_fraction=0.25)
    data = build_data(cfg, TOK, batch_size=2, seed=0, val_batches=3)

    def doc_names(batches):
        ids = torch.cat([b.inputs.flatten() for b in batches]).tolist()  # contiguous stream
        words = TOK.decode(ids, skip_special_tokens=False).replace("<|eos|>", " ").split()
        return {w for w in words if w.startswith("doc") and w[3:].isdigit()}

    val_docs = doc_names(data.val)
    train_docs = doc_names([data.train.next_batch() for _ in range(40)])
    assert val_docs and train_docs
    assert not val_docs & train_docs
    assert len(train_docs) == 30  # 40 documents, a quarter held out


def test_synthetic_task_stream_resumes_and_shards_rows():
    task = build_task("cpm3", {"n_max": 6, "modulus": 5, "g": 2}, seed=0)
    a = TaskStream(task, "train", 4, seed=1)
    first = [a.next_batch() for _ in range(3)]
    state = a.state_dict()
    want = a.next_batch()
    b = TaskStream(task, "train", 4, seed=1)
    b.load_state_dict(state)
    got = b.next_batch()
    assert torch.equal(got.inputs, want.inputs) and torch.equal(got.targets, want.targets)
    assert not torch.equal(first[0].inputs, first[1].inputs)
    halves = [shard_rows(want, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([h.inputs for h in halves]), want.inputs)


def test_plugin_source_serves_its_documents_and_masks():
    cfg = DataConfig(source="iha_train_stub:plugin_source", seq_len=8, shuffle=False)
    data = build_data(cfg, TOK, batch_size=2, seed=0, val_batches=2)
    assert data.val == []  # the plugin has no val split
    ref, mask = [], []
    for i in range(5):
        ids = list(f"train document {i}".encode()) + [TOK.eos_token_id]
        ref += ids
        mask += [j % 2 == 0 for j in range(len(ids))]
    b = data.train.next_batch()
    assert b.inputs.flatten().tolist() == ref[:16]
    assert b.loss_mask.flatten().tolist() == mask[1:17]


def test_a_glob_with_a_brace_group_reads_every_alternative_once(tmp_path):
    # the cpu-text preset's default, data/*.{txt,md}: shell brace expansion, compared against
    # the files written here (plain glob.glob would match none of them)
    (tmp_path / "a.txt").write_text("text file\n")
    (tmp_path / "b.md").write_text("# markdown\n\nsecond paragraph\n")
    (tmp_path / "c.json").write_text("{}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.md").write_text("deeper\n")
    source = LocalFiles(f"{tmp_path}/*.{{txt,md}}", "text", ByteTokenizer(), DataConfig())
    assert source.files == [tmp_path / "a.txt", tmp_path / "b.md"]
    assert len(source) == 3  # documents: one paragraph, then two
    both = f"{tmp_path}/{{*.txt,*.txt,sub/*.md}}"  # overlapping alternatives: each file once
    assert LocalFiles(both, "text", ByteTokenizer(), DataConfig()).files == [
        tmp_path / "a.txt",
        tmp_path / "sub" / "d.md",
    ]
    with pytest.raises(ValueError, match=r"matches no files"):
        LocalFiles(f"{tmp_path}/*.{{rst,tex}}", "text", ByteTokenizer(), DataConfig())


def test_brace_expansion_follows_the_shell():
    assert expand_braces("data/*.{txt,md}") == ["data/*.txt", "data/*.md"]
    assert expand_braces("{a,b}/{1,2}") == ["a/1", "a/2", "b/1", "b/2"]  # left group first
    assert expand_braces("x{,y}") == ["x", "xy"]
    for literal in ("a{b}c", "a{", "a}b", "plain/*.txt"):  # no comma, no pair: as written
        assert expand_braces(literal) == [literal]


def test_the_cpu_text_preset_reads_the_txt_and_md_files_of_data(tmp_path, monkeypatch):
    from iha.train.config import find_config, load_config

    cfg = load_config(find_config("cpu-text")).data
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for name in ("notes.md", "book.txt", "table.csv"):
        (tmp_path / "data" / name).write_text(f"{name}\n")
    source = LocalFiles(cfg.path, cfg.source, TOK, cfg)
    assert [f.name for f in source.files] == ["book.txt", "notes.md"]
