"""A step with no new tokens (``x[:, n:n]``) on a filled cache, on every attention backend and
through a converted Llama: an empty output of the right shape, the cache left as it was (the
next real step gives the output of a run without the empty step); the decoder LM refuses it
with a clear error and keeps its cache. The cases run in one child process that names each case
before it runs, so that a crash (a CPU kernel dividing by the number of query rows: SIGFPE)
fails the test, naming the case, instead of killing pytest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FUNCTIONAL = """
import torch
from iha.cache import KVCache
from iha.functional import interleaved_head_attention as iha
torch.manual_seed(0)
B, H, G, P, d, N = 2, 4, 2, 2, 8, 8
aq, ak, av = torch.randn(H, H, P), torch.randn(G, G, P), torch.randn(G, G, P)
col = torch.randn(H, P)
def qkv(n):
    return torch.randn(B, H, n, d), torch.randn(B, G, n, d), torch.randn(B, G, n, d)
first, last = qkv(N), qkv(1)
for backend, policy in [(b, p) for b in BACKENDS for p in ("raw", "pseudo")]:
    print("case", backend, policy, flush=True)
    kw = dict(rope_theta=10000.0, backend=backend)
    for empty in (False, True):
        cache = KVCache(policy)
        iha(*first, aq, ak, av, col, cache=cache, **kw)
        if empty:
            keys = cache.keys.clone()
            out = iha(*qkv(0), aq, ak, av, col, cache=cache, **kw)
            assert out.shape == (B, H, 0, d), out.shape
            assert cache.offset == N and torch.equal(cache.keys, keys)
            got = iha(*last, aq, ak, av, col, cache=cache, **kw)
        else:
            want = iha(*last, aq, ak, av, col, cache=cache, **kw)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    print("case", backend, "no cache", flush=True)
    q, _, _ = qkv(0)
    out = iha(q, *first[1:], aq, ak, av, col, position_offset=N, **kw)  # keys only
    assert out.shape == (B, H, 0, d), out.shape
"""

MODELS = """
import os
os.environ["HF_HUB_OFFLINE"] = "1"
import sys
sys.path.insert(0, os.path.join(ROOT, "tests", "hf"))
from test_convert import make_model
from iha.hf.convert import convert
from iha.models import DecoderLM, ModelConfig
print("case converted llama", flush=True)
ids = torch.randint(1, 32, (2, 9))

model = convert(make_model("llama"), num_pseudo_heads=2, init_noise=0.1).eval()
with torch.no_grad():
    full = model(ids, use_cache=False).logits
    cache = model(ids[:, :8], use_cache=True).past_key_values
    empty = model(ids[:, 8:8], past_key_values=cache, use_cache=True)
    assert empty.logits.shape == (2, 0, full.shape[-1]), empty.logits.shape
    assert cache.get_seq_length() == 8
    step = model(ids[:, 8:9], past_key_values=cache, use_cache=True).logits
torch.testing.assert_close(step[:, 0], full[:, 8], rtol=1e-5, atol=1e-5)

config = ModelConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, attention_variant="iha", num_pseudo_heads=2,
                     max_position_embeddings=64)
lm = DecoderLM(config).eval()
print("case decoder lm", flush=True)
with torch.no_grad():
    full = lm(ids)
    cache = lm.make_cache(2)
    lm(ids[:, :8], cache=cache)
    try:
        lm(ids[:, 8:8], cache=cache)
        raise AssertionError("an empty input was accepted")
    except ValueError as e:
        assert "no tokens" in str(e), e
    step = lm(ids[:, 8:9], cache=cache)
torch.testing.assert_close(step[:, 0], full[:, 8], rtol=1e-5, atol=1e-5)
print("ok")
"""


def _run(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip


def test_empty_step_on_every_backend_and_model():
    pytest.importorskip("transformers")
    backends = ["auto", "reference", "sdpa", "blocked", "flex", "band"]
    script = f"ROOT = {str(ROOT)!r}\nBACKENDS = {backends!r}\n" + FUNCTIONAL + MODELS
    done = _run(script)
    cases = [line for line in done.stdout.splitlines() if line.startswith("case")]
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "ok", (
        f"exit {done.returncode} in {cases[-1:]}: {done.stderr[-2000:]}"
    )
    assert len(cases) == 4 * len(backends) + 2  # (raw, pseudo) x (cached, no cache) + 2
