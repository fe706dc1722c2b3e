"""``iha bench --suite decode``: prefill and decoding of whole models, time ratios beside FLOP
ratios, page faults per decoded token.

Two comparisons, each timed round-robin in one process (prefill of a ``prompt``-token prompt,
then ``steps`` greedy tokens with a KV cache, one warm-up step not timed), medians over
``--repeats``:

- native models: ``iha`` (IIIIG) and ``iha_global`` (H) against ``global`` (G), same sizes (a
  small preset: 5 layers, head dim 64, the 259-token byte vocabulary), KV cache policy
  "pseudo" (the mixed, rotated pseudo keys are cached: nothing is recomputed);
- a converted model against its original: ``--model DIR --converted DIR`` (e.g. a Hugging Face
  Llama and its ``iha convert`` output), or else a small random Llama built here and converted
  with :func:`iha.hf.convert` (P = 2, exact).

Each time ratio is printed beside the FLOP ratio of the same work (:func:`decode_flops`,
:func:`prefill_flops`: projections, head mixing and collapse, attention over the keys each
token sees, MLP, LM head; built on :mod:`iha.flops`), and checked against the target: time
ratio at most 1.1x the FLOP ratio. Prefill computes the logits of the last token only, as
generation does. Page faults are the process's minor faults (``resource.getrusage``) during the
timed decoding steps, per token.
"""

from __future__ import annotations

import copy
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from iha import flops
from iha.models import DecoderLM
from iha.models.presets import get_preset

TARGET = 1.1  # time ratio / FLOP ratio
NATIVE_VARIANTS = ("global", "iha", "iha_global")


@dataclass(frozen=True)
class Arch:
    """What the FLOP count needs of a model: sizes and, per layer, its attention.

    ``layers`` holds one (P, mask, window, collapse) per layer: ``mask`` "flat" or "token",
    ``window`` in tokens or None, ``collapse`` "global" / "per_head" for IHA layers and None
    for plain attention (P = 1, no mixing).
    """

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    mlp_matrices: int
    vocab: int
    layers: tuple[tuple[int, str, int | None, str | None], ...]


def _layer_step_flops(arch: Arch, layer, n_tokens: int) -> int:
    """Forward FLOPs of one layer's attention block over the first ``n_tokens`` tokens."""
    P, mask, window, collapse = layer
    return flops.layer_flops(
        arch.hidden, arch.heads, n_tokens, n_pseudo=P, n_kv_heads=arch.kv_heads,
        head_dim=arch.head_dim, collapse=collapse, mask=mask, window=window,
    ).total


def _dense_flops(arch: Arch) -> int:
    """MLP FLOPs of one token over all layers."""
    return len(arch.layers) * 2 * arch.mlp_matrices * arch.hidden * arch.ffn


def decode_flops(arch: Arch, context: int, steps: int) -> int:
    """FLOPs of decoding tokens ``context .. context+steps-1`` (0-based positions) with a cache.

    A token's attention block costs the difference of the whole-sequence counts of
    :func:`iha.flops.layer_flops` with and without it: its projections and mixing, its
    (pseudo) queries against the keys the mask lets them see; plus MLP and LM head.
    """
    total = 0
    for layer in arch.layers:
        total += _layer_step_flops(arch, layer, context + steps) - _layer_step_flops(
            arch, layer, context
        )
    return total + steps * (_dense_flops(arch) + 2 * arch.hidden * arch.vocab)


def prefill_flops(arch: Arch, prompt: int) -> int:
    """FLOPs of the forward pass over a ``prompt``-token prompt, logits of the last token only."""
    attention = sum(_layer_step_flops(arch, layer, prompt) for layer in arch.layers)
    return attention + prompt * _dense_flops(arch) + 2 * arch.hidden * arch.vocab


def native_arch(model: DecoderLM) -> Arch:
    cfg = model.config
    layers = []
    for kind in cfg.layer_kinds():
        window = cfg.layer_window(kind)
        if kind.startswith("iha"):
            layers.append((cfg.n_pseudo, cfg.iha_mask, window, cfg.iha_collapse))
        elif kind in ("global", "local"):
            layers.append((1, "flat", window, None))
        else:
            raise ValueError(f"the decode suite counts global, local and IHA layers, not {kind!r}")
    return Arch(cfg.hidden_size, cfg.num_attention_heads, cfg.n_kv_heads, cfg.head_dim,
                cfg.ffn_size, 2 if cfg.mlp_type == "gelu" else 3, cfg.vocab_size, tuple(layers))


def hf_arch(model) -> Arch:
    """The count for a HF Llama-family model, converted layers included (token mask)."""
    from iha.hf.convert import _backbone, converted_layers

    cfg = model.config
    converted = converted_layers(model)
    layers = []
    for i, layer in enumerate(_backbone(model).layers):
        window = getattr(layer.self_attn, "sliding_window", None)
        if i in converted:
            a = converted[i]
            if a.mode != "exact":
                raise ValueError("the decode suite counts converted layers of mode 'exact' only")
            layers.append((a.n_pseudo, "token", window, a.collapse_mode))
        else:
            layers.append((1, "flat", window, None))
    H = cfg.num_attention_heads
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    G = getattr(cfg, "num_key_value_heads", None) or H
    return Arch(cfg.hidden_size, H, G, d, cfg.intermediate_size, 3, cfg.vocab_size, tuple(layers))


# ----------------------------------------------------------------------------------------------
# Runs


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@torch.no_grad()
def _run_native(model: DecoderLM, ids: torch.Tensor, steps: int) -> tuple[float, float, float]:
    """(prefill s, decode s per token, minor faults per decoded token) of one run."""
    t0 = time.perf_counter()
    cache = model.make_cache(1, "pseudo")
    h = model.hidden_states(ids, cache=cache)
    nxt = model.lm_head(h[:, -1]).argmax(-1)
    prefill = time.perf_counter() - t0
    nxt = model(nxt[:, None], cache=cache)[:, -1].argmax(-1)  # warm-up step
    f0, t0 = _faults(), time.perf_counter()
    for _ in range(steps):
        nxt = model(nxt[:, None], cache=cache)[:, -1].argmax(-1)
    decode = (time.perf_counter() - t0) / steps
    return prefill, decode, (_faults() - f0) / steps


@torch.no_grad()
def _run_hf(model, ids: torch.Tensor, steps: int) -> tuple[float, float, float]:
    from transformers import DynamicCache

    t0 = time.perf_counter()
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    prefill = time.perf_counter() - t0
    out = model(input_ids=nxt, cache=cache, use_cache=True)  # warm-up step
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    f0, t0 = _faults(), time.perf_counter()
    for _ in range(steps):
        nxt = model(input_ids=nxt, cache=cache, use_cache=True).logits[:, -1].argmax(
            -1, keepdim=True
        )
    decode = (time.perf_counter() - t0) / steps
    return prefill, decode, (_faults() - f0) / steps


def _round_robin(runs: dict, repeats: int) -> dict[str, dict[str, float]]:
    """Median prefill s, decode s/token and faults/token of each run, timed in turn."""
    for run in runs.values():  # warm-up
        run()
    got: dict[str, list] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            got[name].append(run())
    return {
        name: {key: statistics.median(r[i] for r in rs)
               for i, key in enumerate(("prefill_s", "decode_s", "faults"))}
        for name, rs in got.items()
    }


def _rows(measured, baseline: str, archs: dict[str, Arch], prompt: int, steps: int, label):
    rows, ratios = [], []
    base = measured[baseline]
    for name, m in measured.items():
        if name == baseline:
            continue
        pf = prefill_flops(archs[name], prompt) / prefill_flops(archs[baseline], prompt)
        df = decode_flops(archs[name], prompt + 1, steps) / decode_flops(
            archs[baseline], prompt + 1, steps
        )
        pt = m["prefill_s"] / base["prefill_s"]
        dt = m["decode_s"] / base["decode_s"]
        rows.append({
            "model": f"{label(name)} / {label(baseline)}", "prompt": prompt, "steps": steps,
            "prefill tok/s": prompt / m["prefill_s"],
            "baseline prefill tok/s": prompt / base["prefill_s"],
            "prefill time ratio": pt, "prefill FLOP ratio": pf,
            "decode tok/s": 1 / m["decode_s"], "baseline decode tok/s": 1 / base["decode_s"],
            "decode time ratio": dt, "decode FLOP ratio": df,
            "faults/token": m["faults"], "baseline faults/token": base["faults"],
        })
        for what, t, f in (("prefill", pt, pf), ("decode", dt, df)):
            value = t / f
            ratios.append({
                "name": f"{label(name)} / {label(baseline)} {what}: time ratio / FLOP ratio",
                "value": value, "target": TARGET, "met": value <= TARGET,
                "note": f"time ratio {t:.3f}, FLOP ratio {f:.3f}",
            })
    return rows, ratios


def native_models(smoke: bool) -> dict[str, DecoderLM]:
    """global, iha and iha_global models of one small size (seeded)."""
    sizes = (
        dict(hidden_size=32, num_hidden_layers=5, num_attention_heads=2, num_key_value_heads=1,
             max_position_embeddings=64, num_pseudo_heads=2, intermediate_size=64)
        if smoke else
        dict(hidden_size=256, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=2048, num_pseudo_heads=2, intermediate_size=768)
    )
    models = {}
    for variant in NATIVE_VARIANTS:
        torch.manual_seed(0)
        models[variant] = DecoderLM(get_preset("small", attention_variant=variant, **sizes)).eval()
    return models


def random_llama(smoke: bool):
    """A small random Llama (SmolLM2's head layout: 9 heads of 64, 3 key/value heads) and its
    exact P = 2 conversion."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from iha.hf import convert

    kw = (
        dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16)
        if smoke else
        dict(vocab_size=2048, hidden_size=576, intermediate_size=1536, num_hidden_layers=4,
             num_attention_heads=9, num_key_value_heads=3, head_dim=64)
    )
    torch.manual_seed(0)
    original = LlamaForCausalLM(
        LlamaConfig(max_position_embeddings=4096, attn_implementation="sdpa", **kw)
    ).eval()
    converted = convert(copy.deepcopy(original), num_pseudo_heads=2, mode="exact").eval()
    return original, converted


def load_pair(model_dir: str, converted_dir: str):
    from transformers import AutoModelForCausalLM

    from iha.hf import load_converted

    for flag, path in (("--model", model_dir), ("--converted", converted_dir)):
        if not (Path(path) / "config.json").is_file():
            raise ValueError(f"{flag} {path!r} is not a model directory (no config.json)")
    original = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    converted = load_converted(converted_dir, dtype=torch.float32, attn_implementation="sdpa")
    return original, converted.eval()


def run_suite(args, res) -> None:
    """Fill ``res`` (an ``iha.cli.bench.SuiteResult``) with the decode suite."""
    smoke = args.smoke
    prompt = 24 if smoke else args.prompt
    steps = 3 if smoke else args.steps
    gen = torch.Generator().manual_seed(0)
    rows, ratios = [], []
    res.config.update({"prompt": prompt, "steps": steps, "dtype": "float32", "batch": 1,
                       "native cache policy": "pseudo"})

    models = native_models(smoke)
    ids = torch.randint(0, 256, (1, prompt), generator=gen)
    measured = _round_robin(
        {name: (lambda m=m: _run_native(m, ids, steps)) for name, m in models.items()},
        args.repeats,
    )
    archs = {name: native_arch(m) for name, m in models.items()}
    r, q = _rows(measured, "global", archs, prompt, steps, lambda n: n)
    rows += r
    ratios += q
    cfg = models["iha"].config
    res.config["native"] = {
        "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers,
        "heads": cfg.num_attention_heads, "kv_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
        "P": cfg.n_pseudo, "iha_window": cfg.iha_window_tokens, "vocab": cfg.vocab_size,
    }

    try:
        import transformers  # noqa: F401
    except ImportError:
        res.extra["converted"] = "skipped: transformers is not installed"
    else:
        if args.model or args.converted:
            if not (args.model and args.converted):
                raise ValueError("pass both --model DIR and --converted DIR, or neither")
            original, converted = load_pair(args.model, args.converted)
            source = {"model": args.model, "converted": args.converted}
        else:
            original, converted = random_llama(smoke)
            source = {"model": "random Llama (SmolLM2 head layout)", "converted": "P=2 exact"}
        vocab = original.config.vocab_size
        ids = torch.randint(0, vocab, (1, prompt), generator=gen)
        pair = {"original": original, "converted": converted}
        measured = _round_robin(
            {name: (lambda m=m: _run_hf(m, ids, steps)) for name, m in pair.items()},
            args.repeats,
        )
        archs = {name: hf_arch(m) for name, m in pair.items()}
        r, q = _rows(measured, "original", archs, prompt, steps, lambda n: n)
        rows += r
        ratios += q
        res.config["converted"] = source
    res.extra["rows"] = rows
    res.ratios += ratios
