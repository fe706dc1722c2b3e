"""Run ``iha`` models under EleutherAI's lm-evaluation-harness (``lm_eval``).

``lm_eval``'s ``hf`` model (``HFLM``) loads through ``transformers.AutoModelForCausalLM``, which
knows ``model_type="iha"`` only after ``import iha.hf``. This module is a thin entry point that
registers first and then hands its arguments to ``lm_eval``'s own command line unchanged; the
command is ``iha lm-eval`` (``iha.cli.lm_eval``)::

    iha lm-eval --model iha --model_args pretrained=runs/sft \\
        --tasks gsm8k --num_fewshot 5 --batch_size 8 --device cuda

Model names, inside this entry point:

- ``iha``: ``HFLM`` whose ``pretrained`` is an ``iha train`` run directory / checkpoint
  (exported on the fly to a temporary Hugging Face directory with
  :func:`iha.eval.hf_export.export_hf`, tokenizer included) or a Hugging Face directory / hub
  name of an ``IHAForCausalLM``; the backend is always causal.
- ``hf``: ``lm_eval``'s own, for ``IHAForCausalLM`` directories (and any other HF model).

Without this entry point, the plain ``lm_eval`` command works on a directory written by
``iha export RUN OUT`` with ``trust_remote_code=True`` (its ``auto_map``
points at shims that import the installed ``iha``)::

    lm_eval --model hf --model_args pretrained=OUT,trust_remote_code=True --tasks gsm8k

Needs ``pip install 'iha[eval]'`` (``lm-eval[hf]``; about 600 MB of dependencies).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

MODEL_NAME = "iha"
_registered: type | None = None


def resolve_pretrained(pretrained: str) -> str:
    """A Hugging Face model directory / name for ``pretrained``.

    An ``iha train`` run directory or checkpoint is exported to a temporary directory (removed
    when the process exits); anything else is returned unchanged.
    """
    if not Path(pretrained).exists():
        return pretrained
    from iha.train.checkpoint import resolve_checkpoint

    try:
        checkpoint = resolve_checkpoint(pretrained)
    except FileNotFoundError:
        return pretrained  # not an iha run: a Hugging Face directory
    from iha.eval.hf_export import export_hf

    out = tempfile.mkdtemp(prefix="iha-lm-eval-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    return str(export_hf(checkpoint, out))


def register() -> type:
    """Register ``model_type="iha"`` with ``transformers`` and the ``lm_eval`` model ``"iha"``.

    Idempotent; returns the ``lm_eval`` model class. Raises ImportError naming the extra when
    ``lm_eval`` (with its ``hf`` dependencies) is not installed.
    """
    global _registered
    if _registered is not None:
        return _registered
    try:
        from lm_eval.api.registry import register_model
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        raise ImportError(
            f"the lm-evaluation-harness bridge needs lm-eval with its hf extra ({e}); "
            "pip install 'iha[eval]' (or 'lm-eval[hf]')"
        ) from e
    import iha.hf  # noqa: F401  registers IHAConfig / IHAForCausalLM with the Auto classes

    class IHALM(HFLM):
        """``lm_eval``'s ``HFLM`` for ``IHAForCausalLM``; ``pretrained`` may be an iha run."""

        def __init__(self, pretrained: Any, **kwargs: Any) -> None:
            if isinstance(pretrained, str):
                pretrained = resolve_pretrained(pretrained)
            kwargs.setdefault("backend", "causal")
            super().__init__(pretrained=pretrained, **kwargs)

    register_model(MODEL_NAME)(IHALM)
    _registered = IHALM
    return IHALM


def main(argv: list[str] | None = None) -> int:
    """``lm_eval``'s command line (same arguments) after :func:`register`; returns its status."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        register()
    except ImportError as e:
        print(f"iha lm_eval bridge: error: {e}", file=sys.stderr)
        return 2
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm_eval", *args]  # lm_eval parses sys.argv itself
    try:
        cli_evaluate()
    except SystemExit as e:
        with contextlib.suppress(TypeError, ValueError):
            return int(e.code or 0)
        print(e.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0

