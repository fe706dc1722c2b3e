"""``iha eval {ruler,gsm8k,math500} MODEL``: evaluate an ``iha`` checkpoint or a Hugging Face LM.

MODEL is an ``iha train`` run directory / checkpoint (loaded with
``iha.train.trainer.load_trained_model``, decoded with ``iha.models.generate``), or else a Hugging
Face causal LM directory or hub name (``transformers.AutoModelForCausalLM``). The tokenizer is the
run's ``data.tokenizer`` or the model's own, unless ``--tokenizer`` names one (``byte`` for the
built-in byte tokenizer).

Examples::

    iha eval gsm8k runs/sft --data gsm8k_test.jsonl --n-samples 16 --temperature 0.6
    iha eval math500 runs/sft --limit 50
    iha eval ruler runs/long --lengths 4096 8192 16384 --limit 100

Writes ``OUT/{benchmark}.json`` (settings and metrics), ``OUT/{benchmark}.md`` (the table, also
printed) and ``OUT/{benchmark}.samples.jsonl`` (every completion).

Other benchmarks: ``python -m iha.eval.lm_eval_bridge`` runs lm-evaluation-harness tasks on the
same models (docs/eval.md).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path
from typing import Any

BENCHMARKS = ("ruler", "gsm8k", "math500")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=BENCHMARKS)
    parser.add_argument("model", help="iha run dir / checkpoint, or a Hugging Face model dir/name")
    parser.add_argument("--tokenizer", help="'byte' or a tokenizer dir/name (default: the model's)")
    parser.add_argument(
        "--data",
        help="local JSONL file (gsm8k, math500) or directory of .txt haystack files (ruler); "
        "default: the hub dataset (gsm8k, math500) or the built-in essay (ruler)",
    )
    parser.add_argument("--split", default="test", help="hub split (default test)")
    parser.add_argument(
        "--limit",
        type=int,
        help="first N problems (gsm8k, math500) or samples per task and "
        "length (ruler; default 100)",
    )
    parser.add_argument(
        "--n-samples", type=int, help="samples per problem (default 16; 1 when --temperature 0)"
    )
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = greedy (default 0.6)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="generation budget (default 1024 for gsm8k/math500, 128 for ruler)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    parser.add_argument(
        "--prompt-style",
        choices=("chat", "fewshot"),
        default="chat",
        help="chat template (fine-tuned models) or 5-shot (base models); default chat",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=[4096, 8192, 16384],
        help="ruler context lengths in tokens",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["niah_multikey_1", "niah_multikey_2", "niah_multikey_3"],
        help="ruler tasks",
    )
    parser.add_argument("--out", default="results/eval", help="output directory")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def load_generator(spec: str, tokenizer_name: str | None, device: Any) -> tuple[Any, Any, str]:
    """``(generator, tokenizer, description)`` for an iha checkpoint or a Hugging Face model."""
    from iha.eval.runner import HFGenerator, ModelGenerator
    from iha.tokenizers import load_tokenizer

    found = None
    if spec.startswith(("/", ".", "~")) and not Path(spec).expanduser().exists():
        raise ValueError(f"model path {spec!r} does not exist")
    if Path(spec).exists():
        from iha.train.checkpoint import resolve_checkpoint

        with contextlib.suppress(FileNotFoundError):
            found = resolve_checkpoint(spec)
    if found is not None:
        from iha.train.trainer import load_trained_model

        model, config, found = load_trained_model(found, device)
        tokenizer = load_tokenizer(tokenizer_name or config["data"]["tokenizer"])
        return ModelGenerator(model, tokenizer.pad_token_id, device), tokenizer, f"iha:{found}"
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        raise ImportError(
            f"{spec!r} is not an iha checkpoint; loading it as a Hugging Face "
            "model needs transformers (pip install 'iha[eval]')"
        ) from e
    with contextlib.suppress(ImportError):
        import iha.hf  # noqa: F401  registers the iha model classes with transformers, if present
    tokenizer = load_tokenizer(tokenizer_name or spec)
    model = AutoModelForCausalLM.from_pretrained(spec).to(device).eval()
    return HFGenerator(model, tokenizer.pad_token_id, device), tokenizer, f"hf:{spec}"


def _progress(done: int, total: int) -> None:
    print(f"\r{done}/{total} generations", end="" if done < total else "\n", file=sys.stderr)


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    print(f"iha eval: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # one plain line, not the source line
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from iha.eval import runner
    from iha.train.distributed import pick_device

    try:
        n_samples = args.n_samples or (1 if args.temperature == 0 else 16)
        device = pick_device(args.device)
        generator, tokenizer, described = load_generator(args.model, args.tokenizer, device)
        extra = {"model": described, "tokenizer": repr(tokenizer)}
        if args.benchmark == "ruler":
            from iha.eval import ruler

            max_new = args.max_new_tokens or 128
            samples = [
                s
                for task in args.tasks
                for s in ruler.generate_samples(
                    task,
                    tokenizer,
                    lengths=args.lengths,
                    num_samples=args.limit or 100,
                    seed=args.seed,
                    tokens_to_generate=max_new,
                    haystack_dir=args.data,
                )
            ]
            result: Any = runner.run_ruler_eval(
                samples,
                generator,
                tokenizer,
                max_new_tokens=max_new,
                batch_size=args.batch_size,
                progress=_progress,
            )
        else:
            if args.benchmark == "gsm8k":
                from iha.eval.gsm8k import load_gsm8k as load
            else:
                from iha.eval.math import load_math500 as load
            problems = load(args.data, split=args.split, limit=args.limit)
            params = runner.SamplingParams(
                max_new_tokens=args.max_new_tokens or 1024,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                seed=args.seed,
            )
            result = runner.run_sampled_eval(
                args.benchmark,
                problems,
                generator,
                tokenizer,
                n_samples=n_samples,
                params=params,
                batch_size=args.batch_size,
                prompt_style=args.prompt_style,
                progress=_progress,
            )
    except (ValueError, RuntimeError, FileNotFoundError, ImportError, OSError) as e:
        print(f"iha eval: error: {e}", file=sys.stderr)
        return 2
    paths = runner.write_results(args.out, args.benchmark, result, extra=extra)
    print(result.markdown())
    print(f"\nwrote {paths['json']}, {paths['markdown']}, {paths['samples']}", file=sys.stderr)
    return 0
