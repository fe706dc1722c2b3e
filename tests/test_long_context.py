"""The CPU rehearsal's pieces: its training documents and its argument checks."""

from __future__ import annotations

import json

from iha.eval import ruler
from iha.long_context import main, write_documents
from iha.tokenizers import ByteTokenizer


def test_training_documents_are_ruler_prompts_answered_within_the_length(tmp_path):
    path = tmp_path / "docs.jsonl"
    write_documents(path, ["niah_multikey_2", "niah_multikey_3"], 512, 6, seed=7)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 6
    tokenizer = ByteTokenizer()
    for record in records:
        prompt, answer = record["prompt"], record["response"].strip()
        assert prompt.startswith("<|bos|>") and "special magic" in prompt
        assert f"is: {answer}." in prompt  # the needle holding the answer is in the haystack
        assert len(tokenizer.encode(prompt + record["response"])) <= 512
    evaluation = ruler.generate_sample("niah_multikey_2", tokenizer, 512, index=0, seed=0)[0]
    assert evaluation.input not in {r["prompt"][len("<|bos|>"):] for r in records}


def test_bad_arguments_exit_2_naming_them(capsys):
    assert main(["--short", "512", "--long", "256"]) == 2
    assert "--long" in capsys.readouterr().err
    assert main(["--tasks", "niah_multikey_9"]) == 2
    assert "niah_multikey_9" in capsys.readouterr().err
