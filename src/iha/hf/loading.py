"""One way to load any model path: ``load_any(path) -> LoadedModel(model, tokenizer, kind, ...)``.

Every command that runs a model (``iha generate``, ``iha eval``, ``iha export``, ``iha lm-eval``)
loads it here, so an ``iha train`` run, a run fine-tuned from a converted Hugging Face model and
a plain Hugging Face directory are read by the same code. ``path`` is:

- an ``iha train`` run directory, its ``checkpoints`` directory or one checkpoint directory of a
  native model (``[model]`` names a preset or ``ModelConfig`` keys): ``kind == "iha"``, the
  model an :class:`iha.models.DecoderLM` (decode it with :func:`iha.models.generate`);
- the same for a run whose ``[model]`` table names a ``factory`` that builds a ``transformers``
  model (``iha.hf.convert:sft_model_factory``: fine-tuning a converted checkpoint):
  ``kind == "hf"``, the model the ``transformers`` causal LM with the checkpoint's weights;
- anything else: a Hugging Face model directory or hub id, loaded with
  ``AutoModelForCausalLM.from_pretrained`` after :mod:`iha.hf` has registered its model types
  (``iha``, ``iha_llama``, ... ; no ``trust_remote_code`` needed): ``kind == "hf"``.

The tokenizer (an :mod:`iha.tokenizers` tokenizer) is ``tokenizer`` when given, else the run's
``data.tokenizer``, else the model directory's own.

Run directories also load with ``AutoModelForCausalLM.from_pretrained(RUN_DIR)`` after
``import iha.hf``: ``iha train`` writes ``model_type = "iha_run"`` into the run's
``config.json``, and :class:`IHARunForCausalLM` (registered for it) returns the run's latest
checkpoint as a ``transformers`` model (:class:`iha.hf.IHAForCausalLM` for a native model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

RUN_MODEL_TYPE = "iha_run"
KINDS = ("iha", "hf")


@dataclass
class LoadedModel:
    """What :func:`load_any` returns.

    Attributes:
        model: in eval mode on the device; an ``iha.models.DecoderLM`` (``kind`` "iha") or a
            ``transformers`` causal LM (``kind`` "hf").
        tokenizer: an :mod:`iha.tokenizers` tokenizer (``.hf`` is the ``transformers`` one).
        kind: "iha" or "hf".
        description: ``"iha:<checkpoint>"``, ``"hf-run:<checkpoint>"`` or ``"hf:<path>"``.
        checkpoint: the checkpoint directory of a run, else None.
        run_config: the run's config dict, else None.
    """

    model: nn.Module
    tokenizer: Any
    kind: str
    description: str
    checkpoint: Path | None = None
    run_config: dict[str, Any] | None = None


def _run_checkpoint(path: Path) -> Path | None:
    """The checkpoint directory of an ``iha train`` run / checkpoint path, else None.

    Raises FileNotFoundError for a run directory without a checkpoint (it would otherwise be
    read as a Hugging Face directory and fail with a confusing message)."""
    from iha.train.checkpoint import resolve_checkpoint

    try:
        return resolve_checkpoint(path)
    except FileNotFoundError:
        if is_run_dir(path):
            raise FileNotFoundError(
                f"{str(path)!r} is an iha train run directory without a checkpoint yet"
            ) from None
        return None


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is an ``iha train`` run directory (its ``config.json`` is a run config)."""
    config = Path(path) / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and (
        data.get("model_type") == RUN_MODEL_TYPE or {"run_dir", "train", "model"} <= data.keys()
    )


def _unwrap_hf(model: nn.Module) -> PreTrainedModel | None:
    """The ``transformers`` model inside a factory's module (itself, or its ``.model``)."""
    if isinstance(model, PreTrainedModel):
        return model
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, PreTrainedModel) else None


def load_any(
    path: str | Path,
    device: str | torch.device = "cpu",
    tokenizer: str | None = None,
) -> LoadedModel:
    """Load the model and tokenizer of any model path (module docstring).

    Args:
        path: a run / checkpoint directory, a Hugging Face model directory or a hub id.
        device: where the model goes.
        tokenizer: "byte" or a tokenizer directory / name; default the run's or the model's.

    Raises:
        FileNotFoundError: a path (starting with ``/``, ``.`` or ``~``) that does not exist, or
            a run directory without a checkpoint.
        ValueError: a run whose factory builds neither an iha nor a ``transformers`` model.
    """
    from iha.models import DecoderLM
    from iha.tokenizers import load_tokenizer

    spec = str(path)
    local = Path(spec).expanduser()
    if spec.startswith(("/", ".", "~")) and not local.exists():
        raise FileNotFoundError(f"model path {spec!r} does not exist")
    found = _run_checkpoint(local) if local.exists() else None
    if found is not None:
        from iha.train.trainer import load_trained_model

        model, config, found = load_trained_model(found, device)
        tok = load_tokenizer(tokenizer or _run_tokenizer(config))
        if isinstance(model, DecoderLM):
            return LoadedModel(model, tok, "iha", f"iha:{found}", found, config)
        hf = _unwrap_hf(model)
        if hf is None:
            raise ValueError(
                f"run {str(found)!r}: its model factory {config['model'].get('factory')!r} "
                f"built a {type(model).__name__}, neither an iha DecoderLM nor a transformers "
                "model (or a module holding one as .model)"
            )
        return LoadedModel(hf.eval(), tok, "hf", f"hf-run:{found}", found, config)
    from transformers import AutoModelForCausalLM  # iha.hf (imported first) registered its types

    tok = load_tokenizer(tokenizer or spec)
    model = AutoModelForCausalLM.from_pretrained(spec).to(device).eval()
    return LoadedModel(model, tok, "hf", f"hf:{spec}")


def _run_tokenizer(config: dict[str, Any]) -> str:
    """The run's ``data.tokenizer``; for a factory run trained with the default byte tokenizer
    on a Hugging Face model with its own tokenizer (``model.hf_path``), that directory's."""
    name = config.get("data", {}).get("tokenizer", "byte")
    hf_path = config.get("model", {}).get("hf_path")
    if name == "byte" and hf_path and (Path(hf_path) / "tokenizer_config.json").is_file():
        return str(hf_path)
    return name


def native_to_hf(model: nn.Module, model_config: dict[str, Any], hf_tokenizer: Any) -> Any:
    """An :class:`iha.hf.IHAForCausalLM` holding a native ``DecoderLM``'s weights.

    ``model_config`` is the run's ``[model]`` table; the token ids of ``hf_tokenizer`` (a
    ``transformers`` tokenizer) become the config's bos / eos / pad ids."""
    from iha.hf.configuration import IHAConfig
    from iha.hf.modeling import IHAForCausalLM
    from iha.models import ModelConfig

    pad = hf_tokenizer.pad_token_id
    hf_cfg = IHAConfig.from_model_config(
        ModelConfig.from_dict(model_config),
        bos_token_id=hf_tokenizer.bos_token_id,
        eos_token_id=hf_tokenizer.eos_token_id,
        pad_token_id=hf_tokenizer.eos_token_id if pad is None else pad,
    )
    hf_model = IHAForCausalLM(hf_cfg)
    hf_model.model.load_state_dict(model.state_dict())
    return hf_model.eval()


def hf_tokenizer_of(tokenizer: Any) -> Any:
    """The ``transformers`` tokenizer of an :mod:`iha.tokenizers` tokenizer (the byte one as
    its equivalent ``PreTrainedTokenizerFast``)."""
    from iha.tokenizers import hf_byte_tokenizer

    inner = getattr(tokenizer, "hf", None)
    return inner if inner is not None else hf_byte_tokenizer()


class IHARunConfig(PretrainedConfig):
    """The ``config.json`` of an ``iha train`` run directory, read by ``AutoConfig``.

    The run's sections (``model``, ``data``, ``train``, ...) are kept under ``run``; loading the
    model goes through :class:`IHARunForCausalLM`."""

    model_type = RUN_MODEL_TYPE

    def __init__(self, run: dict[str, Any] | None = None, **kwargs: Any) -> None:
        from iha.train.config import RunConfig

        sections = {f for f in RunConfig.__dataclass_fields__ if f in kwargs}
        self.run = {**(run or {}), **{name: kwargs.pop(name) for name in sections}}
        super().__init__(**kwargs)


class IHARunForCausalLM(PreTrainedModel):
    """``AutoModelForCausalLM.from_pretrained(RUN_DIR)``: the run's latest checkpoint.

    Never instantiated itself: ``from_pretrained`` returns the run's model as a ``transformers``
    model (:class:`iha.hf.IHAForCausalLM` for a native run, the converted model class for a run
    fine-tuned from a converted checkpoint). ``dtype`` / ``torch_dtype`` and ``device_map`` (a
    single device) are applied; other loading options do not apply to a run directory."""

    config_class = IHARunConfig

    def __init__(self, config: IHARunConfig, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "IHARunForCausalLM only loads run directories: "
            "AutoModelForCausalLM.from_pretrained(RUN_DIR)"
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        loaded = load_any(pretrained_model_name_or_path, "cpu")
        model = loaded.model
        if loaded.kind == "iha":
            hf_tok = hf_tokenizer_of(loaded.tokenizer)
            model = native_to_hf(model, loaded.run_config["model"], hf_tok)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        if isinstance(dtype, torch.dtype):
            model = model.to(dtype)
        device = kwargs.get("device_map")
        if isinstance(device, (str, torch.device)) and str(device) != "auto":
            model = model.to(device)
        return model.eval()


def register() -> None:
    """Register ``model_type = "iha_run"`` with ``AutoConfig`` / ``AutoModelForCausalLM``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoConfig.register(RUN_MODEL_TYPE, IHARunConfig, exist_ok=True)
    AutoModelForCausalLM.register(IHARunConfig, IHARunForCausalLM, exist_ok=True)
