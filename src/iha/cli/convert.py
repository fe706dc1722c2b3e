"""``iha convert SRC_DIR DST_DIR``: convert a Hugging Face checkpoint on disk to IHA.

Loads SRC_DIR with ``AutoModelForCausalLM.from_pretrained``, converts it with
:func:`iha.hf.convert`, checks the result on random tokens (max |logit difference|; 0 up to
rounding in mode "exact", the drift in mode "paper"), writes DST_DIR with ``save_pretrained`` and
copies the tokenizer files. Load the result with :func:`iha.hf.load_converted`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers={text!r} must be comma-separated layer indices, e.g. 0,1,2"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="HF checkpoint directory to convert")
    parser.add_argument("dst", metavar="DST", help="where to write the converted checkpoint")
    parser.add_argument(
        "--num-pseudo-heads", type=int, default=None, help="P (default: the number of heads)"
    )
    parser.add_argument(
        "--layers", type=_layers, default=None, help="comma-separated layers (default: all)"
    )
    parser.add_argument(
        "--mode",
        choices=("exact", "paper"),
        default="exact",
        help="exact: token mask and positions, the same function as SRC; paper: flat mask, "
        "virtual positions n*P + p (not exact; fine-tune after)",
    )
    parser.add_argument(
        "--collapse",
        choices=("global", "per_head"),
        default="global",
        help="collapse weights: global (H, H*P), the paper's parameter count, or per_head (H, P)",
    )
    parser.add_argument(
        "--init-noise", type=float, default=0.0, help="symmetry-breaking noise (0: exact init)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --init-noise and the check")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="load/save dtype")
    parser.add_argument(
        "--check-tokens", type=int, default=32, help="random tokens of the logit check (0: skip)"
    )
    parser.add_argument("--force", action="store_true", help="write into a non-empty DST")


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


def _source_problem(src: Path) -> str | None:
    """Why SRC_DIR is not a Hugging Face checkpoint this command can read, or None."""
    if not src.is_dir():
        return f"SRC_DIR {str(src)!r} is not a directory"
    config = src / "config.json"
    if not config.is_file():
        return f"SRC_DIR {str(src)!r} has no config.json (is it a Hugging Face checkpoint?)"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{str(config)!r} is not valid JSON ({e})"
    if not isinstance(data, dict):
        return f"{str(config)!r} must hold a JSON object"
    if {"run_dir", "train", "model"} <= data.keys() or (src / "checkpoints").is_dir():
        return (
            f"SRC_DIR {str(src)!r} is an `iha train` run directory: its model is IHA already. "
            "Use it directly (iha generate / iha eval), or export it to a Hugging Face "
            "directory with iha.eval.hf_export.export_hf; iha convert takes a Hugging Face "
            "checkpoint of a Llama-family model"
        )
    if "model_type" not in data:
        return f"{str(config)!r} has no model_type: not a Hugging Face model config"
    if not any(next(src.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        return (
            f"SRC_DIR {str(src)!r} holds no weights (looked for {', '.join(WEIGHT_PATTERNS)})"
        )
    return None


def _weights_problem(src: Path) -> str | None:
    """Why SRC_DIR's model type or safetensors files cannot be converted, or None (reads the
    config and each file's header only; run after :func:`_source_problem`)."""
    from iha.hf.convert import SUPPORTED_MODEL_TYPES, original_model_type

    config = src / "config.json"
    model_type = json.loads(config.read_text(encoding="utf-8"))["model_type"]
    if original_model_type(model_type) not in SUPPORTED_MODEL_TYPES:
        return (
            f"{str(config)!r} has model_type {model_type!r}; iha convert reads "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    from safetensors import safe_open

    for path in sorted(src.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error type
            return f"{str(path)!r} is not a readable safetensors file, truncated or damaged ({e})"
    return None


def _destination_problem(src: Path, dst: Path) -> str | None:
    """Why writing DST_DIR could destroy SRC_DIR, or None."""
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real == src_real:
        return f"DST_DIR {str(dst)!r} is SRC_DIR: it would overwrite the model it reads"
    if src_real in dst_real.parents:
        return f"DST_DIR {str(dst)!r} is inside SRC_DIR {str(src)!r}; choose a folder outside it"
    return None


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    from iha.hf.convert import CONFIG_KEY, convert

    src, dst = Path(args.src), Path(args.dst)
    problem = _source_problem(src) or _weights_problem(src) or _destination_problem(src, dst)
    if problem:
        print(f"iha convert: {problem}", file=sys.stderr)
        return 2
    if CONFIG_KEY in json.loads((src / "config.json").read_text()):
        print(
            f"iha convert: {str(src)!r} is already converted ({CONFIG_KEY} in config.json); "
            "each layer can be converted only once",
            file=sys.stderr,
        )
        return 2
    if dst.exists() and any(dst.iterdir()) and not args.force:
        print(f"iha convert: {str(dst)!r} is not empty (pass --force)", file=sys.stderr)
        return 2
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype).eval()
    generator = torch.Generator().manual_seed(args.seed)
    ids = None
    if args.check_tokens > 0:
        ids = torch.randint(
            0, model.config.vocab_size, (1, args.check_tokens), generator=generator
        ).to(model.device)
        with torch.no_grad():
            before = model(input_ids=ids, use_cache=False).logits.float()
    try:
        convert(
            model,
            num_pseudo_heads=args.num_pseudo_heads,
            layers=args.layers,
            mode=args.mode,
            collapse=args.collapse,
            init_noise=args.init_noise,
            generator=generator,
        )
    except ValueError as e:
        print(f"iha convert: {e}", file=sys.stderr)
        return 2
    if ids is not None:
        with torch.no_grad():
            after = model(input_ids=ids, use_cache=False).logits.float()
        drift = (after - before).abs().max().item()
        print(f"max |logit difference| on {args.check_tokens} random tokens: {drift:.3g}")
    record = model.config.iha_conversion["layers"]
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    print(
        f"converted {len(record)} layer(s) of {type(model).__name__} "
        f"(num_pseudo_heads={record[0]['num_pseudo_heads']}, mode={args.mode!r}, "
        f"collapse={args.collapse!r}) -> {dst}"
        + (f"; copied {', '.join(copied)}" if copied else "")
    )
    return 0
