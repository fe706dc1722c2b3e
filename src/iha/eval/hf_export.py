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

from iha.tokenizers import hf_byte_tokenizer

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
    import iha.hf  # noqa: F401  registers model_type "iha"
    from iha.hf import IHAConfig, IHAForCausalLM
    from iha.models import ModelConfig
    from iha.train.trainer import load_trained_model

    model, config, found = load_trained_model(checkpoint, "cpu")
    name = tokenizer or config.get("data", {}).get("tokenizer", "byte")
    if name == "byte":
        hf_tok = hf_byte_tokenizer()
    else:
        from transformers import AutoTokenizer

        hf_tok = AutoTokenizer.from_pretrained(name)
    model_cfg = ModelConfig.from_dict(config["model"])
    pad = hf_tok.pad_token_id if hf_tok.pad_token_id is not None else hf_tok.eos_token_id
    hf_cfg = IHAConfig.from_model_config(
        model_cfg,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=pad,
    )
    if remote_code:
        hf_cfg.auto_map = dict(AUTO_MAP)
    hf_model = IHAForCausalLM(hf_cfg)
    hf_model.model.load_state_dict(model.state_dict())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_model.eval().save_pretrained(out)
    hf_tok.save_pretrained(out)
    if remote_code:
        for file, text in _SHIMS.items():
            (out / file).write_text(text, encoding="utf-8")
    (out / "iha_export.json").write_text(
        json.dumps({"checkpoint": str(found), "tokenizer": name}, indent=1) + "\n",
        encoding="utf-8",
    )
    return out
