"""Backend ``"band"``: a compiled C++ kernel for masks whose keys form one range per query row.

Every mask of docs/spec.md on the interleaved sequence lets query row i see one contiguous range
of key rows (minus padded keys); with a sliding window that range is W*P rows long. The kernel
(``csrc/band_attention.cpp``) cuts the query rows into blocks, computes each block's scores
against just the keys its rows can reach, and runs an exact one-pass softmax: forward and
backward cost the band's FLOPs plus a block-sized edge, with no mask tensor, no log-sum-exp
merges and no per-piece buffers. Matrix products go to the BLAS torch links (the fused sliding-
window path has its own, see ``iha.backends.fused``); threads follow
``torch.set_num_threads``. Outputs of 1 MiB or more reuse the buffers of freed ones of the same
size (``pool_limit``; on by default, at most 1 GiB kept), so a training step does not
page-fault its large interleaved tensors in afresh.

The kernel is compiled with ``torch.utils.cpp_extension`` (g++ and ninja) and cached under
``$IHA_EXTENSIONS_DIR`` (default ``~/.cache/iha/extensions``), keyed by the source, the torch
installation and the CPU. ``make test`` / ``make demo`` build it once at setup
(``python -m iha.backends.build``); otherwise the first call that needs it builds it, printing
one line to stderr (about a minute). Builds are serialised by an ``fcntl`` lock that the
operating system releases when its holder exits, however it exits; the builder works in a
private folder and moves the finished library into place in one rename, so a process killed
at any point leaves nothing half-built and no lock behind. A process waiting for another's build
says so, and gives up after ``$IHA_KERNEL_BUILD_WAIT`` seconds (default 600) or on SIGINT/SIGTERM.
When the kernel cannot be built or loaded (no compiler, no ninja, a torch whose BLAS does not
export ``sgemm_``, a wait given up), or when ``IHA_BAND_KERNEL=0``, ``"band"`` runs the
pure-PyTorch ``"blocked"`` backend instead and says so once (a warning). It serves float32 and
float64 CPU tensors without dropout; everything else also goes to ``"blocked"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from iha.backends.blocked import attend_blocked
from iha.masks import MaskSpec, expand_key_padding
from iha.validate import check_int

try:
    import fcntl
except ImportError:  # not a POSIX system: the kernel is not built there ("blocked" runs)
    fcntl = None

SOURCE = Path(__file__).with_name("csrc") / "band_attention.cpp"
MODES = {"flat": 0, "token": 1, "none": 2}
# Query rows per block: a block computes rows x (W*P + rows) scores of which rows x W*P are
# used, and its products are (rows x d) by (d x keys). At N=2048, P=4, W=64, 1 thread, quiet
# (benchmarks/band_block_rows.py, before the output pool): the window core / MHA ratio was
# 1.27-1.30 for 32 to 96 rows, 1.33 at 16, 1.39 at 128 and 1.58 at 192 (docs/benchmarks.md).
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


BUILD_LAYOUT = "private build folder, renamed into place with a sha256 record"


def _build_name() -> str:
    # The torch installation is part of the key: every environment builds into its own folder
    # (its include paths differ, and environments sharing one folder would rebuild in turn).
    # So is the folder layout (BUILD_LAYOUT): a loader that built in place with
    # torch.utils.cpp_extension's own lock never shares a folder with this one.
    key = "\n".join([SOURCE.read_text(), torch.__version__, str(Path(torch.__file__).parent),
                     _cpu_signature(), platform.python_version(), BUILD_LAYOUT])
    return "iha_band_" + hashlib.sha256(key.encode()).hexdigest()[:16]


BUILD_MESSAGE = "iha: compiling the band attention kernel (once, ~1 min)..."
# How long a process waits for another one that is building the kernel before it gives up and
# runs "blocked" instead ($IHA_KERNEL_BUILD_WAIT seconds); a build takes about a minute.
BUILD_WAIT_SECONDS = 600.0
_WAIT_POLL_SECONDS = 0.2
_WAIT_NOTICE_SECONDS = 1.0


class KernelBuildError(RuntimeError):
    """The kernel could not be built or loaded (then "band" runs "blocked")."""


def extensions_dir() -> Path:
    """Where compiled kernels are cached (``$IHA_EXTENSIONS_DIR`` or ~/.cache/iha/extensions)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iha" / "extensions"
    return Path(os.environ.get("IHA_EXTENSIONS_DIR", default))


def library_path() -> Path:
    """The compiled library of this source, torch and CPU: ``extensions_dir()/NAME/NAME.so``."""
    name = _build_name()
    return extensions_dir() / name / f"{name}.so"


def _wait_seconds() -> float:
    raw = os.environ.get("IHA_KERNEL_BUILD_WAIT")
    if raw is None:
        return BUILD_WAIT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise KernelBuildError(f"IHA_KERNEL_BUILD_WAIT={raw!r} must be a number of seconds >= 0")
    return value


class _SignalWatch:
    """While waiting for the lock in the main thread: a SIGINT/SIGTERM goes to the handler that
    was installed (a trainer's "stop after this step" flag, the default termination, ...) and
    then ends the wait, so a waiting process never sits on a signal."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> _SignalWatch:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                if signal.getsignal(s) is not None:  # None: set outside Python, left alone
                    self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        old = self._old.get(signum)
        if callable(old):
            old(signum, frame)
        elif old != signal.SIG_IGN:  # the default action (terminate): restore it, deliver again
            self.__exit__()
            signal.raise_signal(signum)

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            if signal.getsignal(s) == self._handle:  # else the chained handler replaced it
                signal.signal(s, h)
        self._old.clear()


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """Hold ``build_dir/build.lock`` exclusively (``fcntl.flock``, which the operating system
    releases when its holder exits, however it exits: nothing stale is ever left behind).

    A waiting process says once what it waits for, and raises ``KernelBuildError`` after
    ``$IHA_KERNEL_BUILD_WAIT`` seconds (default ``BUILD_WAIT_SECONDS``) or when it receives
    SIGINT/SIGTERM (after the handler installed for that signal ran).
    """
    if fcntl is None:
        raise KernelBuildError("no fcntl on this platform to serialise builds")
    path = build_dir / "build.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_flock(fd):
            _wait_for_flock(fd, path)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())  # for the waiting processes' notice
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _wait_for_flock(fd: int, path: Path) -> None:
    limit = _wait_seconds()
    start = time.monotonic()
    told = False
    with _SignalWatch() as watch:
        while not _try_flock(fd):
            waited = time.monotonic() - start
            holder = _lock_holder(path)
            if watch.received is not None:
                raise KernelBuildError(
                    f"interrupted by signal {watch.received} while waiting for {holder} to finish "
                    f"compiling the band kernel (lock {path})"
                )
            if waited >= limit:
                raise KernelBuildError(
                    f"gave up after {limit:.0f} s waiting for {holder} to finish compiling the "
                    f"band kernel (lock {path}; IHA_KERNEL_BUILD_WAIT sets the limit)"
                )
            if not told and waited >= min(_WAIT_NOTICE_SECONDS, limit):
                print(
                    f"iha: waiting for {holder} to finish compiling the band attention kernel "
                    f"(lock {path}; giving up after {limit:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                told = True
            time.sleep(_WAIT_POLL_SECONDS)


def _lock_holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def _build_library(name: str, build_dir: Path) -> Path:
    """Compile the library with ``torch.utils.cpp_extension`` (g++, ninja) in ``build_dir`` and
    load it; returns the path of the built library."""
    from torch.utils import cpp_extension

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
    return build_dir / f"{name}.so"


def _digest_path(lib: Path) -> Path:
    return lib.with_name(lib.name + ".sha256")


def _intact(lib: Path) -> bool:
    """Whether ``lib`` is the whole library its builder wrote: its SHA-256 is the one recorded
    next to it. (Loading a truncated library is not an error but a SIGBUS that kills the
    process, so nothing unverified is loaded: a library without its record is built again.)"""
    try:
        want = _digest_path(lib).read_text().strip()
        return hashlib.sha256(lib.read_bytes()).hexdigest() == want
    except OSError:
        return False


def _build(name: str, build_dir: Path, lib: Path) -> None:
    """Build into a private folder, load, and move the library into place by renames (the
    digest record first, the library last: a process killed at any point leaves no library, a
    whole one, or one that fails its digest and is built again). Call it holding
    ``_build_lock``: then no other process builds, and what a killed builder left is removed."""
    for stale in build_dir.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=build_dir))
    try:
        print(BUILD_MESSAGE, file=sys.stderr, flush=True)
        built = _build_library(name, work)
        digest = work / "digest"
        digest.write_text(hashlib.sha256(built.read_bytes()).hexdigest() + "\n")
        os.replace(digest, _digest_path(lib))
        os.replace(built, lib)  # the loaded mapping stays valid: the file is moved, not copied
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _compile() -> None:
    """Load the compiled library, building it first when it is not in the cache."""
    name = _build_name()
    build_dir = extensions_dir() / name
    lib = build_dir / f"{name}.so"
    build_dir.mkdir(parents=True, exist_ok=True)
    if not _intact(lib):
        with _build_lock(build_dir):
            if not _intact(lib):  # else another process built it while this one waited
                _build(name, build_dir, lib)
                return  # _build loaded it
    torch.ops.load_library(str(lib))


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

    @torch.library.register_fake("iha_band::fused_window_forward")
    def _(xq, alpha_q, xk, alpha_k, xv, alpha_v, cos, sin, key_valid, R, mode, P, window, scale,
          block):
        B, _, N, _ = xq.shape
        H, dv = alpha_q.shape[1], xv.shape[3]
        return xq.new_empty(B, H, N, dv), xq.new_empty(B, H, N * P, dv), xq.new_empty(B, H, N * P)

    @torch.library.register_fake("iha_band::fused_window_backward")
    def _(grad, xq, alpha_q, xk, alpha_k, xv, alpha_v, cos, sin, o, lse, key_valid, R, mode, P,
          window, scale, block):
        return (torch.empty_like(xq), torch.empty_like(alpha_q), torch.empty_like(xk),
                torch.empty_like(alpha_k), torch.empty_like(xv), torch.empty_like(alpha_v),
                torch.empty_like(R))


def unavailable_reason() -> str:
    """Why the kernel is not used ('' when it is)."""
    kernel_available()
    return str(_state.get("reason", ""))


def pool_limit(limit_bytes: int | None = None) -> int:
    """Read (no argument) or set how many bytes of freed kernel outputs are kept for reuse.

    The kernel's outputs of 1 MiB or more (interleaved queries, keys, values and their
    gradients) come from a pool of freed buffers of the same size, as PyTorch's CUDA caching
    allocator does on the GPU: without it every training step page-faults each of them in
    afresh (docs/benchmarks.md). The pool keeps at most this many bytes (default 1 GiB), the
    least recently freed going first; the process's resident memory stays that much above what
    is live. ``0`` turns pooling off and frees what is kept. Returns the previous limit.
    Process-wide. Pooled tensors cannot be resized in place to a larger size."""
    if limit_bytes is not None:
        check_int("limit_bytes", limit_bytes, 0)
    if not kernel_available():
        raise RuntimeError(f"the compiled band kernel is unavailable: {unavailable_reason()}")
    return int(torch.ops.iha_band.pool_limit(-1 if limit_bytes is None else limit_bytes))


def pool_cached_bytes() -> int:
    """Bytes of freed kernel outputs the pool keeps now (0 where the kernel is unavailable)."""
    if not kernel_available():
        return 0
    return int(torch.ops.iha_band.pool_cached())


def empty_pool() -> None:
    """Free the buffers the pool keeps (like ``torch.cuda.empty_cache``); the limit stays."""
    if kernel_available():
        torch.ops.iha_band.pool_limit(torch.ops.iha_band.pool_limit(0))


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


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records a call on these tensors (else the compiled ops are called
    directly: an ``autograd.Function`` costs several microseconds a call, a noticeable share of
    a decoding step of a small model)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
    options = (MODES[spec.mode], spec.n_pseudo, window, float(scale), block)
    if not needs_grad(q, k, v):
        return torch.ops.iha_band.forward(q, k, v, key_valid, *options)[0]  # no graph to record
    return _BandAttention.apply(q, k, v, key_valid, *options)


def attend_band(
    qt: torch.Tensor,  # (B, H, Nq*P, d)
    kt: torch.Tensor,  # (B, G, Nk*P, d)
    vt: torch.Tensor,  # (B, G, Nk*P, d)
    spec: MaskSpec,
    *,
    scale: float,
    attention_mask: torch.Tensor | None = None,  # (B, Nk) bool, True = real
    kernel: str = "softmax",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Backend ``"band"``: the compiled band kernel, or ``"blocked"`` where it does not serve."""
    if not supports(qt, vt, dropout_p, kernel):
        if kernel == "softmax" and dropout_p == 0.0 and not kernel_available():
            _warn_once()
        return attend_blocked(
            qt, kt, vt, spec, scale=scale, attention_mask=attention_mask, kernel=kernel,
            dropout_p=dropout_p,
        )
    keys = None
    if attention_mask is not None:
        keys = expand_key_padding(attention_mask, spec.n_pseudo)  # (B, Nk*P)
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
