"""Backend ``"band"``: a compiled C++ kernel for masks whose keys form one range per query row.

Every mask of docs/spec.md on the interleaved sequence lets query row i see one contiguous range
of key rows (minus padded keys); with a sliding window that range is W*P rows long. The kernel
(``csrc/band_attention.cpp``) cuts the query rows into blocks, computes each block's scores
against just the keys its rows can reach, and runs an exact one-pass softmax: forward and
backward cost the band's FLOPs plus a block-sized edge, with no mask tensor, no log-sum-exp
merges and no per-piece buffers. Matrix products go to the BLAS torch links; threads follow
``torch.set_num_threads``.

The kernel is compiled at first use with ``torch.utils.cpp_extension`` (g++ and ninja) and cached
under ``$IHA_EXTENSIONS_DIR`` (default ``~/.cache/iha/extensions``), keyed by the source, the
torch version and the CPU. When it cannot be built or loaded (no compiler, no ninja, a torch
whose BLAS does not export ``sgemm_``), or when ``IHA_BAND_KERNEL=0``, ``"band"`` runs the
pure-PyTorch ``"blocked"`` backend instead and says so once (a warning). It serves float32 and
float64 CPU tensors without dropout; everything else also goes to ``"blocked"``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import threading
import time
import warnings
from pathlib import Path

import torch

from iha.backends.blocked import attend_blocked
from iha.masks import MaskSpec, expand_key_padding

SOURCE = Path(__file__).with_name("csrc") / "band_attention.cpp"
MODES = {"flat": 0, "token": 1, "none": 2}
# Query rows per block: a block computes rows x (W*P + rows) scores of which rows x W*P are
# used, and its products are (rows x d) by (d x keys). At N=2048, P=4, W=64 blocks of 32, 64 and
# 128 rows measured within 20% of each other on a loaded host; 64 had the fastest forward
# (docs/benchmarks.md).
BLOCK_ROWS = 64
_DTYPES = (torch.float32, torch.float64)

_lock = threading.Lock()
_state: dict[str, object] = {}


def _cpu_signature() -> str:
    """The CPU's feature flags (the kernel is compiled for the host's instruction set)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build_name() -> str:
    # The torch installation is part of the key: every environment builds into its own folder
    # (its include paths differ, and environments sharing one folder would rebuild in turn).
    key = "\n".join([SOURCE.read_text(), torch.__version__, str(Path(torch.__file__).parent),
                     _cpu_signature(), platform.python_version()])
    return "iha_band_" + hashlib.sha256(key.encode()).hexdigest()[:16]


# torch.utils.cpp_extension builds under a lock file that a process killed mid-build leaves
# behind, after which every later load waits forever; a build takes well under this long.
STALE_LOCK_SECONDS = 900


def _remove_stale_lock(build_dir: Path) -> None:
    lock = build_dir / "lock"
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink()
    except FileNotFoundError:
        pass


def extensions_dir() -> Path:
    """Where compiled kernels are cached (``$IHA_EXTENSIONS_DIR`` or ~/.cache/iha/extensions)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iha" / "extensions"
    return Path(os.environ.get("IHA_EXTENSIONS_DIR", default))


def _compile() -> None:
    from torch.utils import cpp_extension

    name = _build_name()
    build_dir = extensions_dir() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_lock(build_dir)
    env_path = os.environ.get("PATH", "")
    if shutil.which("ninja") is None:  # the PyPI ninja wheel, when the venv is not activated
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + env_path
        except ImportError:
            pass
    try:
        cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-march=native", "-fopenmp", "-fno-math-errno"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
    finally:
        os.environ["PATH"] = env_path


def kernel_available() -> bool:
    """Build (first call only) and load the C++ band kernel; False when that is impossible."""
    if "ok" in _state:
        return bool(_state["ok"])
    with _lock:
        if "ok" not in _state:
            if os.environ.get("IHA_BAND_KERNEL", "1") == "0":
                _state.update(ok=False, reason="disabled by IHA_BAND_KERNEL=0")
            else:
                try:
                    _compile()
                    _register_fake_kernels()
                    _state.update(ok=hasattr(torch.ops.iha_band, "forward"), reason="")
                except Exception as exc:  # no compiler/ninja/BLAS symbol: use the fallback
                    _state.update(ok=False, reason=f"{type(exc).__name__}: {exc}".strip())
    return bool(_state["ok"])


def _register_fake_kernels() -> None:
    """Output shapes of the library's ops, so that ``torch.compile`` can trace through them."""

    @torch.library.register_fake("iha_band::forward")
    def _(q, k, v, key_valid, mode, P, window, scale, block):
        return q.new_empty(*q.shape[:3], v.shape[3]), q.new_empty(q.shape[:3])

    @torch.library.register_fake("iha_band::backward")
    def _(grad, q, k, v, out, lse, key_valid, mode, P, window, scale, block):
        per_head = (q.shape[0], q.shape[1], k.shape[2])
        return torch.empty_like(q), k.new_empty(*per_head, k.shape[3]), v.new_empty(
            *per_head, v.shape[3]
        )

    @torch.library.register_fake("iha_band::spread")
    def _(x, alpha, cos, sin):
        B, _, N, d = x.shape
        return x.new_empty(B, alpha.shape[1], N * alpha.shape[2], d)

    @torch.library.register_fake("iha_band::gather")
    def _(g, alpha, x, cos, sin, want_gx=True):
        B, _, L, d = g.shape
        M, H, P = alpha.shape
        gx = g.new_empty(B, M, L // P, d) if want_gx else g.new_empty(0)
        return gx, alpha.new_empty(M, H, P)

    @torch.library.register_fake("iha_band::fused_forward")
    def _(xq, alpha_q, cos, sin, kt, vt, key_valid, R, mode, P, window, scale, block):
        B, _, N, _ = xq.shape
        H, dv = alpha_q.shape[1], vt.shape[3]
        return xq.new_empty(B, H, N, dv), xq.new_empty(B, H, N * P, dv), xq.new_empty(B, H, N * P)

    @torch.library.register_fake("iha_band::fused_backward")
    def _(grad, xq, alpha_q, cos, sin, kt, vt, o, lse, key_valid, R, mode, P, window, scale,
          block):
        B, H = xq.shape[0], alpha_q.shape[1]
        per_head = (B, H, kt.shape[2])
        return (torch.empty_like(xq), torch.empty_like(alpha_q),
                kt.new_empty(*per_head, kt.shape[3]), vt.new_empty(*per_head, vt.shape[3]),
                torch.empty_like(R))


def unavailable_reason() -> str:
    """Why the kernel is not used ('' when it is)."""
    kernel_available()
    return str(_state.get("reason", ""))


def supports(q: torch.Tensor, v: torch.Tensor, dropout_p: float, kernel: str) -> bool:
    """Whether the compiled kernel serves these inputs (else ``"band"`` runs ``"blocked"``)."""
    return (
        kernel == "softmax"
        and dropout_p == 0.0
        and q.device.type == "cpu"
        and q.dtype in _DTYPES
        and v.dtype == q.dtype
        and kernel_available()
    )


class _BandAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_valid, mode, P, window, scale, block):
        out, lse = torch.ops.iha_band.forward(q, k, v, key_valid, mode, P, window, scale, block)
        ctx.save_for_backward(q, k, v, out, lse, key_valid)
        ctx.options = (mode, P, window, scale, block)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse, key_valid = ctx.saved_tensors
        dq, dk, dv = torch.ops.iha_band.backward(
            grad.contiguous(), q, k, v, out, lse, key_valid, *ctx.options
        )  # dk, dv per query head: (B, H, Lk, d)
        B, H, G = q.shape[0], q.shape[1], k.shape[1]
        if G != H:
            dk = dk.view(B, G, H // G, *dk.shape[2:]).sum(2)
            dv = dv.view(B, G, H // G, *dv.shape[2:]).sum(2)
        return dq, dk, dv, None, None, None, None, None, None


def band_attention(
    qt: torch.Tensor,  # (B, H, Lq, d)
    kt: torch.Tensor,  # (B, G, Lk, d)
    vt: torch.Tensor,  # (B, G, Lk, dv)
    spec: MaskSpec,
    scale: float,
    key_valid: torch.Tensor | None = None,  # (B, Lk) bool virtual key padding, True = real
    block: int = BLOCK_ROWS,
) -> torch.Tensor:
    """The compiled kernel on already-interleaved tensors (keys bottom-right aligned)."""
    if not kernel_available():
        raise RuntimeError(f"the compiled band kernel is unavailable: {unavailable_reason()}")
    window = 0 if spec.window is None else spec.window
    q, k, v = (x.contiguous() for x in (qt, kt, vt))
    if key_valid is not None:
        key_valid = key_valid.contiguous()
    return _BandAttention.apply(
        q, k, v, key_valid, MODES[spec.mode], spec.n_pseudo, window, float(scale), block
    )


def attend_band(
    qt: torch.Tensor,  # (B, H, Nq*P, d)
    kt: torch.Tensor,  # (B, G, Nk*P, d)
    vt: torch.Tensor,  # (B, G, Nk*P, d)
    spec: MaskSpec,
    *,
    scale: float,
    key_padding_mask: torch.Tensor | None = None,  # (B, Nk) bool, True = real
    kernel: str = "softmax",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Backend ``"band"``: the compiled band kernel, or ``"blocked"`` where it does not serve."""
    if not supports(qt, vt, dropout_p, kernel):
        if kernel == "softmax" and dropout_p == 0.0 and not kernel_available():
            _warn_once()
        return attend_blocked(
            qt, kt, vt, spec, scale=scale, key_padding_mask=key_padding_mask, kernel=kernel,
            dropout_p=dropout_p,
        )
    keys = None
    if key_padding_mask is not None:
        keys = expand_key_padding(key_padding_mask, spec.n_pseudo)  # (B, Nk*P)
    return band_attention(qt, kt, vt, spec, scale, keys)


def _warn_once() -> None:
    if not _state.get("warned"):
        _state["warned"] = True
        warnings.warn(
            f"iha: the compiled band kernel is unavailable ({unavailable_reason()}); backend "
            f"'band' runs the pure-PyTorch 'blocked' backend instead",
            RuntimeWarning,
            stacklevel=3,
        )
