"""Decoder-LM benchmark: the FLOP-matched ``iha`` schedule against ``global`` attention.

1. Training step time (forward + backward + AdamW step, one sequence of N tokens) of ``iha`` and
   ``global`` on the same config, and their ratio (the paper claims FLOP parity; target <= 1.3x).
   IHA layers run on each backend named by ``--backends``.
2. Decoding: prefill a prompt, then greedy steps with a KV cache; tokens/s of ``global`` and of
   ``iha`` with the "raw" and "pseudo" cache policies, and the cache bytes per cached token.

    python benchmarks/models.py                       # CPU, small width, N = 1024
    python benchmarks/models.py --device cuda --hidden-size 1024 --layers 10

Prints markdown tables. Times are medians over ``--repeats`` after one warm-up; training steps
of the models are timed round-robin so that load drift on a shared host hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from iha.cli.bench import time_round_robin
from iha.models import DecoderLM, ModelConfig, model_flops


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_config(args: argparse.Namespace, variant: str, backend: str = "auto") -> ModelConfig:
    return ModelConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.seq_len,
        num_pseudo_heads=args.pseudo,
        attention_variant=variant,
        attention_backend=backend,
    )


def train_step(cfg: ModelConfig, args: argparse.Namespace, device: torch.device):
    """A closure running one training step of a fresh model of ``cfg``."""
    torch.manual_seed(0)
    model = DecoderLM(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (args.batch_size, args.seq_len + 1), device=device)

    def step() -> None:
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


@torch.no_grad()
def decode(cfg: ModelConfig, policy: str, args: argparse.Namespace, device: torch.device):
    """(prefill seconds, decode tokens/s, cache bytes per cached token, cache bytes)."""
    torch.manual_seed(0)
    model = DecoderLM(cfg).to(device).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt_len), device=device)

    def run() -> tuple[float, float, int, int]:
        cache = model.make_cache(1, policy)
        t0 = time.perf_counter()
        nxt = model(prompt, cache=cache)[:, -1].argmax(-1)
        sync(device)
        t1 = time.perf_counter()
        for _ in range(args.new_tokens):
            nxt = model(nxt[:, None], cache=cache)[:, -1].argmax(-1)
        sync(device)
        t2 = time.perf_counter()
        return t1 - t0, args.new_tokens / (t2 - t1), cache.nbytes(), cache.offset

    run()  # warm-up
    runs = [run() for _ in range(args.repeats)]
    prefill = statistics.median(r[0] for r in runs)
    tok_s = statistics.median(r[1] for r in runs)
    nbytes, offset = runs[-1][2], runs[-1][3]
    return prefill, tok_s, nbytes / offset, nbytes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-len", type=int, default=1024, help="training context N")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=5, help="5 = one IIIIG group")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--pseudo", type=int, default=4, help="P of the IHA layers")
    p.add_argument("--vocab-size", type=int, default=259)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--backends", default="auto", help="comma list of IHA backends to time")
    p.add_argument(
        "--decode-backend",
        default=None,
        help="IHA backend for decoding (default: the last of --backends)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    base = make_config(args, "global")
    iha = make_config(args, "iha")
    print(
        f"# device={device} threads={torch.get_num_threads()} N={args.seq_len} "
        f"D={args.hidden_size} layers={args.layers} H={args.heads} G={args.kv_heads} "
        f"P={args.pseudo} iha_window={iha.iha_window_tokens} schedule={iha.schedule_string()} "
        f"torch={torch.__version__}"
    )
    f_g, f_i = model_flops(base), model_flops(iha)
    print(
        f"# forward FLOPs/token: global {f_g['total'] / args.seq_len:.4g}, "
        f"iha {f_i['total'] / args.seq_len:.4g} (ratio {f_i['total'] / f_g['total']:.3f}); "
        f"attention only: ratio {f_i['attention'] / f_g['attention']:.3f}\n"
    )

    print("## Training step (forward + backward + AdamW), one sequence of N tokens\n")
    print("| model | backend | step time (s) | vs global |")
    print("|---|---|---|---|")
    steps = {"global": train_step(base, args, device)}
    for backend in backends:
        steps[backend] = train_step(make_config(args, "iha", backend), args, device)
    # round-robin (A B C A B C ...) after one warm-up each: load drift hits every model alike
    times = {k: t["median"] / 1e3 for k, t in time_round_robin(steps, args.repeats, device).items()}
    print(f"| global | auto | {times['global']:.3f} | 1.00 |")
    for backend in backends:
        print(
            f"| iha | {backend} | {times[backend]:.3f} | {times[backend] / times['global']:.2f} |"
        )

    dec = args.decode_backend or backends[-1]
    print(
        f"\n## Decoding: prompt {args.prompt_len} tokens, then {args.new_tokens} greedy steps "
        f"(IHA layers on backend {dec!r})\n"
    )
    print(
        "| model | cache policy | prefill (s) | decode tokens/s | cache bytes/token | cache MiB |"
    )
    print("|---|---|---|---|---|---|")
    rows = [("global", base, "raw")] + [
        ("iha", make_config(args, "iha", dec), pol) for pol in ("raw", "pseudo")
    ]
    for name, cfg, policy in rows:
        prefill, tok_s, per_token, nbytes = decode(cfg, policy, args, device)
        print(
            f"| {name} | {policy} | {prefill:.3f} | {tok_s:.1f} | {per_token:.0f} | "
            f"{nbytes / 2**20:.2f} |"
        )


if __name__ == "__main__":
    main()
