from pathlib import Path

import pytest
import torch

from iha.eval.sft_data import (
    encode_chat,
    load_sft_records,
    pack,
    record_to_messages,
)
from iha.tokenizers import ByteTokenizer, HFTokenizer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"
EOS = 257  # ByteTokenizer's eos id

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _expected_byte_encoding(messages):
    """ids and mask built by hand from the documented byte template (not via the code)."""
    ids, mask = [256], [False]  # BOS
    for m in messages:
        header = f"<|{m['role']}|>\n".encode()
        ids += list(header)
        mask += [False] * len(header)
        body = list(m["content"].encode())
        if m["role"] == "assistant":
            ids += body + [EOS]
            mask += [True] * (len(body) + 1)
        else:
            ids += body + [ord("\n")]
            mask += [False] * (len(body) + 1)
    return ids, mask


def test_record_schemas_to_messages():
    recs = load_sft_records(FIXTURES / "openthoughts_tiny.jsonl")
    assert [m["role"] for m in recs[0]] == ["system", "user", "assistant"]
    assert [m["role"] for m in recs[1]] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]  # empty system
    assert recs[2][1] == {"role": "assistant", "content": "Bonjour ! Ça va ?"}
    assert len(load_sft_records(FIXTURES / "openthoughts_tiny.jsonl", limit=1)) == 1


@pytest.mark.parametrize(
    "record, match",
    [
        ({"conversations": [{"from": "tool", "value": "x"}]}, "role"),
        ({"conversations": [{"from": "user", "value": "only a question"}]}, "no assistant"),
        ({"conversations": [{"from": "assistant", "value": 3}]}, "string"),
        ({"text": "plain"}, "conversations"),
    ],
)
def test_bad_records_raise(record, match):
    with pytest.raises(ValueError, match=match):
        record_to_messages(record)


def test_byte_mask_covers_exactly_assistant_tokens():
    tok = ByteTokenizer()
    for messages in load_sft_records(FIXTURES / "openthoughts_tiny.jsonl"):
        ids, mask = encode_chat(tok, messages)
        assert (ids, mask) == _expected_byte_encoding(messages)
        # and read back: the masked tokens are the assistant texts, each ending in eos
        masked = tok.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)
        expected = "".join(m["content"] + "<|eos|>" for m in messages if m["role"] == "assistant")
        assert masked == expected


def _chatml_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    raw = tokenizers.Tokenizer(tokenizers.models.BPE())
    raw.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(["user assistant system prime number is 11 23 the product"], trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", chat_template=CHATML
    )
    fast.save_pretrained(tmp_path)
    return HFTokenizer.from_pretrained(str(tmp_path))


def test_hf_chat_template_mask_covers_exactly_assistant_tokens(tmp_path):
    tok = _chatml_tokenizer(tmp_path)
    assert not tok.uses_bos  # no bos token: nothing is prepended
    for messages in load_sft_records(FIXTURES / "openthoughts_tiny.jsonl"):
        ids, mask = encode_chat(tok, messages)
        masked = tok.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)
        unmasked = tok.decode([t for t, m in zip(ids, mask) if not m], skip_special_tokens=False)
        assistant = [m["content"] for m in messages if m["role"] == "assistant"]
        assert masked == "".join(a + "<|im_end|>\n" for a in assistant)
        others = "".join(
            f"<|im_start|>{m['role']}\n"
            + ("" if m["role"] == "assistant" else m["content"] + "<|im_end|>\n")
            for m in messages
        )
        assert unmasked == others
        assert tok.decode(ids, skip_special_tokens=False) == tok.apply_chat_template(messages)


def test_non_prefix_stable_template_is_rejected():
    class Reversed(ByteTokenizer):
        def apply_chat_template(self, messages, add_generation_prompt=False):
            return super().apply_chat_template(messages[::-1], add_generation_prompt)

    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(ValueError, match="prefix-stable"):
        encode_chat(Reversed(), msgs)


def test_pack_carries_mask_and_cuts_fixed_length():
    docs = [([1, 2, 3], [False, True, True]), ([4, 5], [False, True]), ([6, 7, 8, 9], [True] * 4)]
    packed = pack(docs, seq_len=4)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]  # 9 dropped
    assert packed.loss_mask.tolist() == [[False, True, True, False], [True, True, True, True]]
    padded = pack(docs, seq_len=4, pad_token_id=0)
    assert padded.input_ids.tolist()[-1] == [9, 0, 0, 0]
    assert padded.loss_mask.tolist()[-1] == [True, False, False, False]
    assert packed.input_ids.dtype == torch.long and packed.loss_mask.dtype == torch.bool
    with pytest.raises(ValueError, match="loss-mask"):
        pack([([1, 2], [True])], seq_len=2)
    with pytest.raises(ValueError, match="seq_len"):
        pack(docs, seq_len=0)


def test_packed_chat_mask_matches_per_document_masks():
    tok = ByteTokenizer()
    docs = [encode_chat(tok, m) for m in load_sft_records(FIXTURES / "openthoughts_tiny.jsonl")]
    packed = pack(docs, seq_len=64, pad_token_id=tok.pad_token_id)
    flat_ids = [t for d, _ in docs for t in d]
    flat_mask = [m for _, ms in docs for m in ms]
    n = len(flat_ids)
    assert packed.input_ids.flatten()[:n].tolist() == flat_ids
    assert packed.loss_mask.flatten()[:n].tolist() == flat_mask
    assert not packed.loss_mask.flatten()[n:].any()


def test_sft_source_runs_through_the_training_data_pipeline():
    train_data = pytest.importorskip("iha.train.data")
    from iha.train.config import DataConfig

    tok = ByteTokenizer()
    cfg = DataConfig(
        source="iha.eval.sft_data:sft_source",
        path=str(FIXTURES / "openthoughts_tiny.jsonl"),
        val_fraction=0.0,
        seq_len=16,
        shuffle=False,
    )
    data = train_data.build_data(cfg, tok, batch_size=2, seed=0, val_batches=0)
    docs = [encode_chat(tok, m) for m in load_sft_records(FIXTURES / "openthoughts_tiny.jsonl")]
    flat_ids = [t for d, _ in docs for t in d]
    flat_mask = [m for _, ms in docs for m in ms]
    batch = data.train.next_batch()
    # the engine predicts token t+1 from tokens <= t: targets and their mask are shifted by one
    assert batch.inputs.flatten().tolist()[:16] == flat_ids[:16]
    assert batch.targets[0].tolist() == flat_ids[1:17]
    assert batch.loss_mask[0].tolist() == flat_mask[1:17]
    assert batch.loss_mask[1].tolist() == flat_mask[17:33]
