"""Build and load the fused float32 CPU kernels (``*.c`` beside this file), compiled on
first use and cached.

PyTorch has no fused op for RAA, and a chain of tensor ops over a (64, 65, 768) activation
makes several passes over memory where a stock GELU makes one; ARR's sequential memory
update is a few dozen small tensor ops, each costing more in dispatch than in arithmetic.
The kernels (``raa_cpu.c``, ``arr_cpu.c``) are plain C (no PyTorch headers), so building
them takes about a second with the system C compiler; the shared library is cached per
source, compiler and CPU under ``$DNRT_CACHE_DIR`` (default ``~/.cache/dnrt``) and loaded
with :mod:`ctypes`.

When no compiler is found, the build fails, or ``DNRT_CPU_KERNELS=0`` is set, every caller
uses its tensor-op path instead (same results up to float rounding); :func:`status` says
which is in use and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import is_fake
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

__all__ = [
    "build",
    "can_run_opaque_code",
    "capturing_graph",
    "compiler",
    "enabled",
    "library_for",
    "load",
    "open_library",
    "set_enabled",
    "status",
]

_SOURCES = ("raa_cpu.c", "arr_cpu.c")
_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-std=c11"]
if platform.machine().lower() in ("x86_64", "amd64"):
    _FLAGS.append("-mprefer-vector-width=512")  # use the AVX-512 registers where there are any
#: OpenMP threads and simd; without its runtime (e.g. Apple clang) simd only; else neither
_OPENMP_CHOICES = (["-fopenmp"], ["-fopenmp-simd"], [])
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_state: str = "not built yet"
_tried = False
_enabled_override: bool | None = None


def enabled() -> bool:
    """Whether callers should try the kernels (``DNRT_CPU_KERNELS=0`` or
    :func:`set_enabled` (False) turn them off)."""
    if _enabled_override is not None:
        return _enabled_override
    return os.environ.get("DNRT_CPU_KERNELS", "1").strip().lower() not in ("0", "false", "no")


def set_enabled(flag: bool | None) -> None:
    """Force the kernels on (True) or off (False); ``None`` goes back to the environment."""
    global _enabled_override
    _enabled_override = flag


def can_run_opaque_code() -> bool:
    """False while torch.compile or torch.jit.trace records the ops, or a dispatch mode
    (FLOP counter, fake tensors, export) watches them: they must see the tensor-op path,
    not a foreign call."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return not is_in_torch_dispatch_mode()


def capturing_graph(*tensors: torch.Tensor) -> bool:
    """True while a graph is recorded to run elsewhere: ``torch.export`` (and the ONNX dynamo
    exporter built on it), ``torch.jit.trace`` and the TorchScript ONNX exporter, or when
    ``tensors`` are fake (shape-only). Such a graph must hold plain functional tensor ops: no
    foreign call, no ``out=`` op, no custom autograd Function. ``torch.compile`` is not
    included: it traces the fused autograd Functions itself."""
    if _is_exporting():
        return True
    if torch.compiler.is_compiling():  # Dynamo: a constant, and no graph break on what follows
        return False
    if torch.jit.is_tracing() or torch._C._get_tracing_state() is not None:
        return True
    return any(is_fake(t) for t in tensors)


def _is_exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return bool(is_exporting is not None and is_exporting())


def _cache_dir() -> Path:
    root = os.environ.get("DNRT_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dnrt"


def _cpu_signature() -> str:
    """The CPU's model and feature flags (``-march=native`` code is only valid on them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("flags", "model name"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def compiler() -> str | None:
    """Path of the C compiler: ``$CC`` if set, else the first of cc, gcc, clang on PATH."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def build(cc: str, extra_flags: tuple[str, ...] = (), cache_dir: Path | None = None) -> Path:
    """Compile the kernel sources with ``cc`` (cached: a second call with the same source, flags,
    compiler and CPU returns the existing file) and return the shared library's path."""
    flags = [*_FLAGS, *extra_flags]
    src_dir = Path(__file__).parent
    sources = [src_dir / name for name in _SOURCES]
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
    digest = hashlib.sha256()
    for part in (
        *(p.read_bytes() for p in sources),
        " ".join(flags).encode(),
        version.stdout.encode(),
        _cpu_signature().encode(),
    ):
        digest.update(part)
    name = f"dnrt_cpu_{digest.hexdigest()[:16]}.so"
    target = (cache_dir or _cache_dir()) / name
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: a per-user folder in the temp dir instead
        target = Path(tempfile.gettempdir()) / f"dnrt-{os.getuid()}" / name
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
    # build to a private name, then rename: concurrent processes never load a partial file
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        for openmp in _OPENMP_CHOICES:
            cmd = [cc, *flags, *openmp, *map(str, sources), "-o", tmp, "-lm"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                break
        else:
            lines = proc.stderr.strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"{cc} exited with {proc.returncode}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


#: argument codes of the C entry points: i int, f float, l int64_t, p pointer (data_ptr()),
#: d double* (an out-parameter)
_CTYPES = {
    "i": ctypes.c_int,
    "f": ctypes.c_float,
    "l": ctypes.c_int64,
    "p": ctypes.c_void_p,
    "d": ctypes.POINTER(ctypes.c_double),
}
_SIGNATURES = {
    # base, x, w, b, y, s, A, d, C, threads
    "dnrt_raa_forward": ("ippfppllli", None),
    # base, x, s, g, w, grad_x, grad_s, grad_w partials, A, d, C, threads
    "dnrt_raa_backward": ("ipppppppllli", None),
    # x, y, memory, initialized, diff, B, d, momentum, after, abs_sum -> labelled count
    "dnrt_arr_update": ("pppppllfid", ctypes.c_int64),
}


def open_library(path: Path) -> ctypes.CDLL:
    """Load a built library and declare its functions' signatures."""
    lib = ctypes.CDLL(str(path))
    for name, (codes, result) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes = [_CTYPES[c] for c in codes]
        function.restype = result
    return lib


def load() -> ctypes.CDLL | None:
    """The kernel library, building it on the first call; ``None`` when unavailable."""
    global _library, _state, _tried
    if not enabled():
        return None
    if _tried:
        return _library
    with _lock:
        if _tried:
            return _library
        cc = compiler()
        if cc is None:
            _state = "no C compiler found (set CC or install gcc/clang)"
        else:
            try:
                _library = open_library(build(cc))
                _state = f"built with {Path(cc).name}"
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                _state = f"build failed: {err}"
        if _library is None:
            warnings.warn(
                f"dnrt: fused CPU kernels unavailable ({_state}); RAA and ARR use their "
                "slower tensor-op paths",
                RuntimeWarning,
                stacklevel=3,
            )
        _tried = True
    return _library


def library_for(*tensors: torch.Tensor) -> ctypes.CDLL | None:
    """The kernel library when the kernels apply to ``tensors`` (all float32 on CPU, real
    data, not seen through a tracer or a dispatch mode such as the FLOP counter), else
    ``None`` (the caller takes its tensor-op path)."""
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != torch.float32:
            return None
    if not can_run_opaque_code():
        return None
    return load()


def status() -> str:
    """One line: whether the kernels are in use, and why not if they are not."""
    if not enabled():
        return "off (DNRT_CPU_KERNELS=0 or set_enabled(False))"
    load()
    return ("on, " if _library is not None else "off, ") + _state
