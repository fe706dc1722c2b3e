"""``torch.compile`` for the decoder LMs: the whole model, or each repeated block (regional).

Whole-model compilation traces every layer into one graph, so its first compile grows with the
depth (minutes on CPU for the tiny ``iha`` preset, docs/benchmarks.md). Regional compilation
compiles each ``DecoderLayer`` in place; layers of the same kind and shape share one compiled
graph (their parameters are graph inputs), so the first compile costs one graph per distinct
layer kind (IHA window, global MHA) whatever the depth. Embedding, final norm and LM head stay
eager.
"""

from __future__ import annotations

import torch
from torch import nn

from iha.backends import band_kernel_available

COMPILE_MODES = ("full", "regional")


def compile_model(model: nn.Module, mode: str | bool = "regional", **options) -> nn.Module:
    """Compile ``model`` (returns what to call): ``"full"`` (or True) or ``"regional"``.

    ``"regional"`` compiles ``model.layers`` (a ``ModuleList`` of blocks; also found under a
    ``module`` attribute, as in DDP wrappers) in place and returns ``model`` itself.
    ``options`` go to ``torch.compile`` (e.g. ``backend="eager"``).
    """
    band_kernel_available()  # build/load the CPU kernels now, not while dynamo traces
    if mode is True or mode == "full":
        return torch.compile(model, **options)
    if mode != "regional":
        raise ValueError(f"compile mode={mode!r} is not supported; expected one of "
                         f"{list(COMPILE_MODES)} or True")
    inner = getattr(model, "module", model)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(
            f"regional compilation needs a model with a non-empty ModuleList 'layers', got "
            f"{type(inner).__name__}"
        )
    for layer in layers:
        layer.compile(**options)
    return model
