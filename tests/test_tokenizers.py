import pytest

from iha.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer

UNICODE_TEXT = "Grüße, 世界! naïve café — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∑x² 🙂\n\ttabs"


def test_byte_tokenizer_round_trips_unicode_text():
    tok = ByteTokenizer()
    ids = tok.encode(UNICODE_TEXT)
    assert ids == list(UNICODE_TEXT.encode("utf-8"))  # Python's own UTF-8 is the reference
    assert tok.decode(ids) == UNICODE_TEXT


def test_byte_tokenizer_special_ids_distinct_and_outside_bytes():
    tok = ByteTokenizer()
    specials = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    assert len(specials) == 3
    assert all(256 <= s < tok.vocab_size for s in specials)
    assert tok.vocab_size == 259
    assert tok.uses_bos
    assert isinstance(tok, Tokenizer)


def test_byte_tokenizer_bos_eos_and_skip_special():
    tok = ByteTokenizer()
    ids = tok.encode("hi", add_bos=True, add_eos=True)
    assert ids == [tok.bos_token_id, ord("h"), ord("i"), tok.eos_token_id]
    assert tok.decode(ids) == "hi"
    assert tok.decode(ids, skip_special_tokens=False) == "<|bos|>hi<|eos|>"
    # special strings in text become special ids, and decode back to the same text
    assert tok.encode("a<|eos|>b") == [ord("a"), tok.eos_token_id, ord("b")]
    assert tok.decode(tok.encode("a<|pad|>b"), skip_special_tokens=False) == "a<|pad|>b"


def test_byte_tokenizer_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="outside"):
        ByteTokenizer().decode([300])


def test_byte_chat_template_format_and_generation_prompt():
    tok = ByteTokenizer()
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    text = tok.apply_chat_template(msgs)
    assert text == "<|system|>\nBe brief.\n<|user|>\n2+2?\n<|assistant|>\n4<|eos|>"
    prompt = tok.apply_chat_template(msgs[:2], add_generation_prompt=True)
    assert prompt == "<|system|>\nBe brief.\n<|user|>\n2+2?\n<|assistant|>\n"
    assert text.startswith(prompt)
    assert tok.encode(text)[-1] == tok.eos_token_id


def test_chat_template_rejects_unknown_role():
    with pytest.raises(ValueError, match="role"):
        ByteTokenizer().apply_chat_template([{"role": "tool", "content": "x"}])


def test_load_tokenizer_byte_and_bad_name():
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    with pytest.raises(ValueError, match="name_or_path"):
        load_tokenizer("")


def test_load_local_hf_tokenizer_built_offline(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    model = tokenizers.models.WordLevel(unk_token="[UNK]")
    raw = tokenizers.Tokenizer(model)
    raw.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]", "<s>", "</s>"])
    raw.train_from_iterator(["the cat sat on the mat", "a dog sat too"], trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(tmp_path)

    tok = load_tokenizer(str(tmp_path))
    assert isinstance(tok, HFTokenizer)
    assert isinstance(tok, Tokenizer)
    ids = tok.encode("the cat sat", add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert len(ids) == 5 and len(set(ids[1:4])) == 3
    assert tok.decode(ids) == "the cat sat"
    assert tok.pad_token_id == tok.eos_token_id  # no pad token: falls back to eos
    assert tok.uses_bos
    # no chat template of its own: the plain template ends assistant turns with eos text
    text = tok.apply_chat_template([{"role": "assistant", "content": "x"}])
    assert text.endswith("</s>")
