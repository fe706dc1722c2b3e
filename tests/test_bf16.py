"""bfloat16: every attention backend within the 2x rule, and a model trained under autocast.

The rule (flash-attention's): a backend's bf16 error against the float64 result on the same
(bf16-rounded) inputs may be at most twice the error of the plain reference computed in bf16,
plus a floor of one bf16 ulp of the output's magnitude (on small problems the reference's own
error is a single sample, so twice it alone is noise). Gradients likewise, for the backends
with a CPU backward (FlexAttention has none on CPU: forward only).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from iha.functional import attend, interleaved_head_attention
from iha.masks import MaskSpec
from iha.models.config import ModelConfig
from iha.models.model import DecoderLM

BF16_EPS = torch.finfo(torch.bfloat16).eps

CONFIGS = {  # mask, window, padding, query tokens, key tokens, kv heads
    # above blocked's one-piece threshold (64 query rows, 2^16 scores): its pieces are merged
    "flat": ("flat", None, False, 160, 160, 4),
    "token-gqa": ("token", None, False, 160, 160, 2),
    "flat-window-padding": ("flat", 20, True, 160, 160, 4),
    "token-window-cached-prefix": ("token", 24, False, 100, 180, 2),
    "token-padding-decode": ("token", None, True, 1, 180, 2),
}
BACKWARD = {"reference": True, "sdpa": True, "blocked": True, "band": True, "flex": False,
            "auto": True}  # band: float32/float64 only, runs "blocked" for bf16
H, P, D = 4, 2, 16


def bf16_inputs(mask, window, padding, Nq, Nk, G, seed=0):
    """Pseudo queries/keys/values (float64 holding bf16 values) and ``attend``'s arguments."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).bfloat16().double()

    tensors = [r(2, H, Nq * P, D), r(2, G, Nk * P, D), r(2, G, Nk * P, D)]
    kpm = None
    if padding:
        kpm = torch.rand(2, Nk, generator=gen) > 0.3
        kpm[0, :3] = False
    spec = MaskSpec(mask, P, Nq, Nk, q_start=Nk - Nq, window=window)
    return tensors, dict(spec=spec, scale=D**-0.5, attention_mask=kpm)


def output_and_grads(tensors, kw, backend, dtype, grad):
    """The attention step (``iha.functional.attend``) and the gradients of a weighted sum."""
    tensors = [t.detach().to(dtype).requires_grad_(grad) for t in tensors]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex: "called without torch.compile"
        out = attend(*tensors, **kw, backend=backend)
    if not grad:
        return [out.detach().double()]
    weight = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)
    grads = torch.autograd.grad((out.double() * weight).sum(), tensors)
    return [out.detach().double()] + [g.double() for g in grads]


@pytest.fixture(scope="module", params=list(CONFIGS))
def exact_and_reference(request):
    """For one config: inputs, float64 results and the bf16 reference's error per tensor."""
    tensors, kw = bf16_inputs(*CONFIGS[request.param])
    exact = output_and_grads(tensors, kw, "reference", torch.float64, grad=True)
    ref = output_and_grads(tensors, kw, "reference", torch.bfloat16, grad=True)
    ref_err = [(r - e).abs().max().item() for r, e in zip(ref, exact)]
    return tensors, kw, exact, ref_err


@pytest.mark.parametrize("backend", list(BACKWARD))
def test_bf16_attention_backend_within_2x_of_the_bf16_reference(exact_and_reference, backend):
    tensors, kw, exact, ref_err = exact_and_reference
    got = output_and_grads(tensors, kw, backend, torch.bfloat16, grad=BACKWARD[backend])
    assert len(got) == (4 if BACKWARD[backend] else 1)
    for name, g, e, r in zip(["output", "dq", "dk", "dv"], got, exact, ref_err):
        err = (g - e).abs().max().item()
        bound = 2 * r + BF16_EPS / 2 * e.abs().max().item()
        assert err <= bound, (name, err, r)


def test_bf16_whole_functional_within_2x_of_its_bf16_reference():
    """Mixing, RoPE and collapse in bf16 too (shared by every backend): token mask, window."""
    gen = torch.Generator().manual_seed(3)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).bfloat16().double()

    args = [r(2, H, 24, D), r(2, 2, 24, D), r(2, 2, 24, D), r(H, H, P), r(2, 2, P), r(2, 2, P),
            r(H, H * P) / (H * P) ** 0.5]
    kw = dict(mask="token", window=6, rope_theta=10000.0)
    exact = interleaved_head_attention(*args, **kw, backend="reference")
    low = [a.bfloat16() for a in args]
    ref_err = (interleaved_head_attention(*low, **kw, backend="reference").double() - exact)
    got = interleaved_head_attention(*low, **kw, backend="auto")
    assert got.dtype == torch.bfloat16
    err = (got.double() - exact).abs().max().item()
    assert err <= 2 * ref_err.abs().max().item() + BF16_EPS * exact.abs().max().item()


def test_model_trains_under_bf16_autocast_with_finite_decreasing_loss():
    """A 2-layer IHA model (token mask, window, GQA: the "blocked" backend) overfits one batch."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=32, hidden_size=32, num_attention_heads=4,
                      num_key_value_heads=2, num_pseudo_heads=2, max_position_embeddings=24,
                      attention_variant="iha", iha_mask="token", iha_window=4)
    model = DecoderLM(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, cfg.vocab_size, (4, 25), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(8):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(tokens[:, :-1])
            assert logits.dtype == torch.bfloat16  # autocast really ran the model in bf16
            loss = torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), tokens[:, 1:].flatten()
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert all(p.dtype == torch.float32 for p in model.parameters())
