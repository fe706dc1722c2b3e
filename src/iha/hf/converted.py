"""Converted checkpoints as model types of their own: ``iha_llama``, ``iha_qwen2``, ``iha_mistral``.

A model converted by :func:`iha.hf.convert` becomes an instance of a subclass of its original
class (``LlamaForCausalLM`` -> :class:`IHALlamaForCausalLM`, whose config class only changes
``model_type``), so that ``save_pretrained`` writes a self-describing directory:

- ``config.json`` with ``model_type = "iha_llama"`` (or qwen2 / mistral), the original fields,
  ``iha_conversion`` (the per-layer settings) and an ``auto_map`` pointing at
  ``iha_converted.py``, a shim that imports these classes from the installed ``iha``;
- the weights, mixing parameters included, under their usual names.

Loading it: ``AutoModelForCausalLM.from_pretrained(dir)`` after ``import iha.hf`` (which
registers the three types), or with ``trust_remote_code=True`` in a process that never imports
``iha`` (the plain ``lm_eval --model hf`` command). A loader that knows neither fails loudly
(transformers does not know ``model_type="iha_llama"``) instead of building the original
architecture and dropping the mixing weights; a checkpoint that lacks a converted layer's mixing
parameters raises ValueError instead of running with uninitialised ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from iha.hf.convert import CONFIG_KEY, apply_conversion

SHIM_MODULE = "iha_converted"
SHIM_SOURCE = (
    '"""Loads the installed iha package\'s converted-model classes (trust_remote_code shim)."""\n'
    "from iha.hf.converted import (  # noqa: F401\n"
    "    IHALlamaConfig,\n"
    "    IHALlamaForCausalLM,\n"
    "    IHAMistralConfig,\n"
    "    IHAMistralForCausalLM,\n"
    "    IHAQwen2Config,\n"
    "    IHAQwen2ForCausalLM,\n"
    ")\n"
)


class IHALlamaConfig(LlamaConfig):
    """``LlamaConfig`` of a converted model (``iha_conversion`` holds the IHA layers)."""

    model_type = "iha_llama"


class IHAQwen2Config(Qwen2Config):
    """``Qwen2Config`` of a converted model (``iha_conversion`` holds the IHA layers)."""

    model_type = "iha_qwen2"


class IHAMistralConfig(MistralConfig):
    """``MistralConfig`` of a converted model (``iha_conversion`` holds the IHA layers)."""

    model_type = "iha_mistral"


class _Converted:
    """Mixin of the converted causal LMs: converts at construction, checks what it loads."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        settings = getattr(config, CONFIG_KEY, None)
        if not settings:
            raise ValueError(
                f"{type(self).__name__} needs config.{CONFIG_KEY} (the converted layers); "
                "build converted models with iha.hf.convert"
            )
        apply_conversion(self, settings)  # the exact-MHA init; weights come from the checkpoint

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """``from_pretrained`` that raises when a converted layer's mixing weights are missing."""
        from iha.optim import is_mixing_parameter

        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = set(info.get("missing_keys", ()))
        mixing = {name for name, p in model.named_parameters() if is_mixing_parameter(name, p)}
        if missing & mixing:
            raise ValueError(
                f"checkpoint {args[0] if args else ''!s} lacks the IHA mixing parameters "
                f"{sorted(missing & mixing)} of its converted layers; refusing to run them "
                "uninitialised"
            )
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> None:
        """``save_pretrained`` plus the ``trust_remote_code`` shim named by ``auto_map``."""
        config_class = type(self.config)
        self.config.auto_map = {
            "AutoConfig": f"{SHIM_MODULE}.{config_class.__name__}",
            "AutoModelForCausalLM": f"{SHIM_MODULE}.{type(self).__name__}",
        }
        super().save_pretrained(save_directory, *args, **kwargs)
        (Path(save_directory) / f"{SHIM_MODULE}.py").write_text(SHIM_SOURCE, encoding="utf-8")


class IHALlamaForCausalLM(_Converted, LlamaForCausalLM):
    """A ``LlamaForCausalLM`` with IHA layers (see :func:`iha.hf.convert`)."""

    config_class = IHALlamaConfig


class IHAQwen2ForCausalLM(_Converted, Qwen2ForCausalLM):
    """A ``Qwen2ForCausalLM`` with IHA layers (see :func:`iha.hf.convert`)."""

    config_class = IHAQwen2Config


class IHAMistralForCausalLM(_Converted, MistralForCausalLM):
    """A ``MistralForCausalLM`` with IHA layers (see :func:`iha.hf.convert`)."""

    config_class = IHAMistralConfig


# original model_type -> (converted config class, original causal LM class, converted class);
# iha.hf.convert finds the converted classes through the Auto classes these are registered with
CONVERTED = {
    "llama": (IHALlamaConfig, LlamaForCausalLM, IHALlamaForCausalLM),
    "qwen2": (IHAQwen2Config, Qwen2ForCausalLM, IHAQwen2ForCausalLM),
    "mistral": (IHAMistralConfig, MistralForCausalLM, IHAMistralForCausalLM),
}
def register() -> None:
    """Register the converted types with ``AutoConfig`` / ``AutoModelForCausalLM`` (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    for config_class, _, model_class in CONVERTED.values():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)
