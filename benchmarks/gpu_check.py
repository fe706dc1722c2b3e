"""Validate the GPU attention paths against the reference, then print bf16 speed ratios.

    python benchmarks/gpu_check.py                 # on a CUDA machine
    python benchmarks/gpu_check.py --json out.json

Without CUDA it says so and exits 0 (the CPU test suite covers the CPU paths);
``--cpu-dry-run`` runs the forward checks on CPU (FlexAttention has no CPU backward) to exercise
this script where no GPU is available.

1. Correctness, for each backend (flex, sdpa, blocked, auto), each mask (flat, token, windows,
   key padding, a query block against a longer cache) and dtype (bfloat16, float32): output and
   gradients of ``interleaved_head_attention`` against the float64 reference; the error must be
   within 2x the reference's own error in the same dtype (the flash-attention rule), plus a
   small floor for bf16 rounding of the inputs.
2. ``torch.compile`` of ``InterleavedHeadAttention`` (token mask, window): forward + backward run
   and match eager.
3. Timing, bf16 forward + backward, medians: the IHA core per mask against its floor (SDPA flash
   ``is_causal`` on interleaved tensors) and against global causal MHA (flash) at the same N,
   a naive dense-mask implementation, and what backend="auto" gives against "flex".
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import torch

from iha.attention import InterleavedHeadAttention
from iha.cli.bench import Case, build, time_round_robin
from iha.functional import interleaved_head_attention

CONFIGS = [  # (name, mask, window, padding, query tokens, cached prefix tokens)
    ("flat", "flat", None, False, 64, 0),
    ("token", "token", None, False, 64, 0),
    ("flat-window", "flat", 8, False, 64, 0),
    ("token-window", "token", 4, False, 64, 0),
    ("flat-padding", "flat", None, True, 64, 0),
    ("token-window-padding", "token", 4, True, 64, 0),
    ("flat-prefill-with-cache", "flat", None, False, 64, 60),
    ("flat-decode", "flat", None, False, 1, 127),
    ("token-window-decode", "token", 8, False, 1, 127),
]
BACKENDS = ("flex", "sdpa", "blocked", "auto")


def _inputs(device, B=2, H=4, G=2, N=64, P=2, d=64, n_prefix=0, padding=False, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device)

    Nk = N + n_prefix
    args = [r(B, H, N, d), r(B, G, Nk, d), r(B, G, Nk, d), r(H, H, P), r(G, G, P), r(G, G, P),
            r(H, H * P) / (H * P) ** 0.5]
    kpm = None
    if padding:
        kpm = torch.ones(B, Nk, dtype=torch.bool, device=device)
        kpm[0, : Nk // 4] = False  # left padding
    return args, dict(key_padding_mask=kpm, position_offset=n_prefix, rope_theta=10000.0)


def _run(args, kw, backend, grad):
    args = [a.detach().requires_grad_(grad) for a in args]
    out = interleaved_head_attention(*args, **kw, backend=backend)
    if not grad:
        return out.detach(), []
    grads = torch.autograd.grad(out.float().square().sum(), args)
    return out.detach(), list(grads)


def check_correctness(device, dtypes, grad) -> list[dict]:
    rows = []
    for name, mask, window, padding, n_query, prefix in CONFIGS:
        args64, kw = _inputs(device, N=n_query, n_prefix=prefix, padding=padding)
        kw = {**kw, "mask": mask, "window": window}
        exact, exact_g = _run(args64, kw, "reference", grad)
        for dtype in dtypes:
            low = [a.to(dtype) for a in args64]
            ref, ref_g = _run(low, kw, "reference", grad)
            ref_err = [(ref.double() - exact).abs().max().item()] + [
                (a.double() - b).abs().max().item() for a, b in zip(ref_g, exact_g)
            ]
            for backend in BACKENDS:
                try:
                    out, out_g = _run(low, kw, backend, grad)
                except Exception as e:  # report, do not stop the other checks
                    rows.append({"config": name, "dtype": str(dtype), "backend": backend,
                                 "ok": False, "error": f"{type(e).__name__}: {e}"[:200]})
                    continue
                err = [(out.double() - exact).abs().max().item()] + [
                    (a.double() - b).abs().max().item() for a, b in zip(out_g, exact_g)
                ]
                slack = 1e-2 if dtype == torch.bfloat16 else 1e-5
                ok = all(e <= 2 * r + slack * max(1.0, r) for e, r in zip(err, ref_err))
                rows.append({"config": name, "dtype": str(dtype), "backend": backend, "ok": ok,
                             "err/ref (out, grads...)": [round(e / max(r, 1e-30), 2)
                                                         for e, r in zip(err, ref_err)]})
    return rows


def check_compile(device, grad) -> list[dict]:
    rows = []
    for mask, window, backend in (("token", None, "flex"), ("flat", 16, "flex"),
                                  ("token", 8, "auto"), ("flat", None, "auto")):
        torch.manual_seed(0)
        layer = InterleavedHeadAttention(
            256, 4, n_pseudo=4, mask=mask, window=window, backend=backend
        ).to(device)
        x = torch.randn(2, 128, 256, device=device, requires_grad=grad)
        eager = layer(x)
        try:
            compiled = torch.compile(layer)(x)
            err = (compiled - eager).abs().max().item()
            ok = err < 1e-3
            if grad:
                g_e = torch.autograd.grad(eager.sum(), x, retain_graph=True)[0]
                g_c = torch.autograd.grad(compiled.sum(), x)[0]
                ok = ok and (g_c - g_e).abs().max().item() < 1e-3
            rows.append({"mask": mask, "window": window, "backend": backend, "ok": ok,
                         "max |compiled - eager|": err})
        except Exception as e:
            rows.append({"mask": mask, "window": window, "backend": backend, "ok": False,
                         "error": f"{type(e).__name__}: {e}"[:300]})
    return rows


def timings(device, repeats) -> dict:
    B, H, d, N, P = 2, 8, 64, 2048, 4
    W = N // (2 * P * P)
    cases = {
        "floor (flash is_causal, interleaved)": Case("floor", B, H, N, d, P),
        "mha (flash, same N)": Case("mha", B, H, N, d),
        "iha flat": Case("iha", B, H, N, d, P, "flat"),
        "iha token": Case("iha", B, H, N, d, P, "token", backend="flex"),
        "iha flat window": Case("iha", B, H, N, d, P, "flat", W, backend="flex"),
        "iha token window": Case("iha", B, H, N, d, P, "token", W, backend="flex"),
        "iha token [auto]": Case("iha", B, H, N, d, P, "token"),
        "iha flat window [auto]": Case("iha", B, H, N, d, P, "flat", W),
        "naive token (dense mask)": Case("naive", B, H, N, d, P, "token"),
    }
    times = time_round_robin(
        {k: build(c, device, dtype=torch.bfloat16) for k, c in cases.items()}, repeats, device
    )
    med = {k: t["median"] for k, t in times.items()}
    floor, mha = med["floor (flash is_causal, interleaved)"], med["mha (flash, same N)"]
    return {
        "config": {"B": B, "H": H, "d": d, "N": N, "P": P, "window": W, "dtype": "bfloat16"},
        "median_ms": med,
        "ratios": {
            "iha flat / floor": med["iha flat"] / floor,
            "iha token / iha flat": med["iha token"] / med["iha flat"],
            "iha flat window / mha": med["iha flat window"] / mha,
            "iha token window / mha": med["iha token window"] / mha,
            "naive token / iha token": med["naive token (dense mask)"] / med["iha token"],
            "auto / flex (token)": med["iha token [auto]"] / med["iha token"],
            "auto / flex (flat window)": med["iha flat window [auto]"] / med["iha flat window"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="no GPU: run the forward checks on CPU to exercise this script")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.cpu_dry_run:
        device, grad, dtypes = torch.device("cpu"), False, (torch.float32,)
    elif not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; nothing to check here "
              "(the CPU paths are covered by the test suite).")
        return 0
    else:
        device, grad, dtypes = torch.device("cuda"), True, (torch.bfloat16, torch.float32)
    warnings.filterwarnings("ignore")
    report = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    print(f"gpu_check on {report.get('gpu', 'CPU (dry run)')}, torch {torch.__version__}")
    report["correctness"] = check_correctness(device, dtypes, grad)
    bad = [r for r in report["correctness"] if not r["ok"]]
    print(f"correctness: {len(report['correctness']) - len(bad)}/{len(report['correctness'])} ok")
    for r in bad:
        print("  FAILED", json.dumps(r))
    if device.type == "cuda":
        report["compile"] = check_compile(device, grad)
        for r in report["compile"]:
            print("compile", json.dumps(r))
        bad += [r for r in report["compile"] if not r["ok"]]
        report["timings"] = timings(device, args.repeats)
        print(json.dumps(report["timings"], indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
