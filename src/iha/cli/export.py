"""``iha export RUN_DIR_OR_CHECKPOINT OUT_DIR``: an ``iha train`` model as a Hugging Face directory.

Writes ``config.json``, ``model.safetensors``, the tokenizer and (unless ``--no-remote-code``) the
``trust_remote_code`` shims; see :func:`iha.eval.hf_export.export_hf`. The run may also be one
fine-tuned from a converted Hugging Face model (``model.factory``): it is written with its own
``save_pretrained`` (model type ``iha_llama`` / ``iha_qwen2`` / ``iha_mistral``). The model is
loaded by :func:`iha.hf.loading.load_any`, like every other command's.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        metavar="MODEL",
        help="iha run dir, its checkpoints dir or a checkpoint dir (native, or fine-tuned from a "
        "converted model)",
    )
    parser.add_argument("out_dir", metavar="DST", help="output directory")
    parser.add_argument("--tokenizer", help="'byte' or a HF tokenizer (default: the run's)")
    parser.add_argument(
        "--no-remote-code",
        action="store_true",
        help="omit the trust_remote_code shims (then load it after 'import iha.hf')",
    )


def run(args: argparse.Namespace) -> int:
    from iha.eval.hf_export import export_hf

    try:
        out = export_hf(
            args.checkpoint, args.out_dir, args.tokenizer, remote_code=not args.no_remote_code
        )
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"iha export: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
