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
    parser.add_argument("src", metavar="SRC_DIR", help="HF checkpoint directory to convert")
    parser.add_argument("dst", metavar="DST_DIR", help="where to write the converted checkpoint")
    parser.add_argument(
        "--num-pseudo-heads", type=int, default=None, help="P (default: the number of heads)"
    )
    parser.add_argument(
        "--layers", type=_layers, default=None, help="comma-separated layers (default: all)"
    )
    parser.add_argument("--mode", choices=("exact", "paper"), default="exact")
    parser.add_argument("--collapse", choices=("global", "per_head"), default="global")
    parser.add_argument(
        "--init-noise", type=float, default=0.0, help="symmetry-breaking noise (0: exact init)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --init-noise and the check")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="load/save dtype")
    parser.add_argument(
        "--check-tokens", type=int, default=32, help="random tokens of the logit check (0: skip)"
    )
    parser.add_argument("--force", action="store_true", help="write into a non-empty DST_DIR")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    from iha.hf.convert import CONFIG_KEY, convert

    src, dst = Path(args.src), Path(args.dst)
    if not (src / "config.json").exists():
        print(f"iha convert: {str(src)!r} has no config.json", file=sys.stderr)
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
