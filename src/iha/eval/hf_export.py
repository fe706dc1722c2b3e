"""Export an ``iha train`` checkpoint as a Hugging Face model directory.

The directory holds ``config.json`` (an :class:`iha.hf.IHAConfig`), ``model.safetensors`` (the
same ``DecoderLM`` weights under ``model.*``) and the run's tokenizer, so any ``transformers``
tool can load it once ``iha.hf`` is imported (it registers ``model_type="iha"``). It also holds
two three-line shim modules and an ``auto_map`` entry in ``config.json``, so that tools which do
not import ``iha`` (the plain ``lm_eval`` command, ``AutoModelForCausalLM.from_pretrained`` in
a fresh process) load it with ``trust_remote_code=True``: the shims only import the classes
from the installed ``iha`` package, no model code is copied.

The run's byte tokenizer (``data.tokenizer = "byte"``) is written as an equivalent
``PreTrainedTokenizerFast`` (:func:`iha.tokenizers.hf_byte_tokenizer`): the same ids for every
text, the same special tokens and the same chat template as :class:`iha.tokenizers.ByteTokenizer`.

Command line: ``iha export RUN_DIR_OR_CHECKPOINT OUT_DIR`` (``iha.cli.export``).
"""

from __future__ import annotations

import json
from pathlib import Path

from iha.tokenizers import hf_byte_tokenizer  # noqa: F401  (imported from here by callers)

AUTO_MAP = {
    "AutoConfig": "configuration_iha.IHAConfig",
    "AutoModelForCausalLM": "modeling_iha.IHAForCausalLM",
}
_SHIMS = {
    "configuration_iha.py": (
        '"""Loads the installed iha package\'s IHAConfig (trust_remote_code shim)."""\n'
        "from iha.hf.configuration import IHAConfig\n\n"
        '__all__ = ["IHAConfig"]\n'
    ),
    "modeling_iha.py": (
        '"""Loads the installed iha package\'s IHAForCausalLM (trust_remote_code shim)."""\n'
        "from iha.hf.modeling import IHAForCausalLM\n\n"
        '__all__ = ["IHAForCausalLM"]\n'
    ),
}

def export_hf(
    checkpoint: str | Path,
    out_dir: str | Path,
    tokenizer: str | None = None,
    remote_code: bool = True,
) -> Path:
    """Write the model of an ``iha train`` run / checkpoint as a Hugging Face model directory.

    Args:
        checkpoint: a run directory, its ``checkpoints`` directory or one checkpoint directory.
        out_dir: created if needed; existing files of the same names are replaced.
        tokenizer: ``"byte"`` or a Hugging Face tokenizer name / directory; default: the run's
            ``data.tokenizer``.
        remote_code: also write the ``trust_remote_code`` shims and ``auto_map``.

    Returns:
        ``out_dir`` as a Path.
    """
    from iha.hf.loading import hf_tokenizer_of, load_any, native_to_hf

    loaded = load_any(checkpoint, "cpu", tokenizer)
    found = loaded.checkpoint or checkpoint
    name = tokenizer or (
        str(checkpoint) if loaded.run_config is None else loaded.run_config["data"]["tokenizer"]
    )
    hf_tok = hf_tokenizer_of(loaded.tokenizer)
    if loaded.kind == "hf":  # a run fine-tuned from a transformers model, or a HF directory
        hf_model = loaded.model  # its own save_pretrained (converted models: their auto_map)
    else:
        hf_model = native_to_hf(loaded.model, loaded.run_config["model"], hf_tok)
        if remote_code:
            hf_model.config.auto_map = dict(AUTO_MAP)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_model.eval().save_pretrained(out)
    hf_tok.save_pretrained(out)
    if remote_code and loaded.kind == "iha":
        for file, text in _SHIMS.items():
            (out / file).write_text(text, encoding="utf-8")
    (out / "iha_export.json").write_text(
        json.dumps({"checkpoint": str(found), "tokenizer": name}, indent=1) + "\n",
        encoding="utf-8",
    )
    return out
