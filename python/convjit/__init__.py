"""convjit: JIT-compiled GPU convolutions (NVRTC, an on-disk kernel cache, the CUDA
Driver API loaded at run time).

Everything here but launching works without a GPU:

    import convjit
    desc = convjit.Conv2dDesc(n=8, c=64, h=512, w=256, k=128, r=5, s=7, dtype="bf16")
    rt = convjit.Runtime(cache_dir="/tmp/cj")
    rt.prewarm([desc], arch="sm_90")            # compile into the cache
    info = rt.inspect(desc, arch="sm_90")       # .source .ptx .sass() .resources ...
    rt.stats().as_dict()

PyTorch: `import convjit.torch` (convjit.torch.conv2d, convert, prewarm); see
docs/python.md.
"""

from __future__ import annotations

import importlib
import threading

from convjit._errors import (
    CacheError,
    CompileError,
    ContextLost,
    CublasError,
    DriverError,
    Error,
    InternalError,
    InvalidArgument,
    IoError,
    NoDevice,
    NoDriver,
    Unsupported,
)

# The extension is loaded at first use, not by `import convjit`: it links the CUDA
# toolkit's libnvrtc and libcublas, and in a process with PyTorch those sonames must be
# the ones torch loaded (its wheels ship newer ones), so torch has to load first.
# `import convjit.torch` imports torch before it touches the extension.
_EXTENSION_NAMES = frozenset(
    {
        "Activation",
        "AlignmentNeeds",
        "Algorithm",
        "CacheStats",
        "Conv2dDesc",
        "Conv2dPlan",
        "DiskCacheMode",
        "DType",
        "ErrorCode",
        "KernelInfo",
        "Layout",
        "LogLevel",
        "MathMode",
        "PrewarmResult",
        "ResourceUsage",
        "Runtime",
        "default_cache_dir",
        "disassembler_search_path",
        "find_disassembler",
        "size_of",
        "why_unsupported",
    }
)

__version__ = "0.1.0"

def _extension():
    """convjit._convjit, imported now if it was not yet."""
    try:
        # import_module, not `from convjit import _convjit`: that form asks this module's
        # __getattr__ first, which comes back here.
        _convjit = importlib.import_module("convjit._convjit")
    except ImportError as e:  # pragma: no cover - depends on the machine
        if any(lib in str(e) for lib in ("libnvrtc", "libcublas")):
            raise ImportError(
                f"convjit's extension could not load the CUDA toolkit's libraries ({e}). The package links "
                "NVRTC and cuBLAS from the toolkit it was built against (its lib directory is in the "
                "extension's RPATH); install that toolkit, or put its lib64 directory on LD_LIBRARY_PATH."
            ) from e
        raise
    return _convjit


__all__ = [
    "Activation",
    "AlignmentNeeds",
    "Algorithm",
    "CacheError",
    "CacheStats",
    "CompileError",
    "ContextLost",
    "Conv2dDesc",
    "Conv2dPlan",
    "CublasError",
    "DType",
    "DiskCacheMode",
    "DriverError",
    "Error",
    "ErrorCode",
    "InternalError",
    "InvalidArgument",
    "IoError",
    "KernelInfo",
    "Layout",
    "LogLevel",
    "MathMode",
    "NoDevice",
    "NoDriver",
    "PrewarmResult",
    "ResourceUsage",
    "Runtime",
    "Unsupported",
    "__version__",
    "default_cache_dir",
    "default_runtime",
    "disassembler_search_path",
    "find_disassembler",
    "inspect",
    "prewarm",
    "size_of",
    "stats",
    "why_unsupported",
]

_default_runtime = None
_default_runtime_lock = threading.Lock()


def default_runtime() -> "Runtime":
    """The process's Runtime (made at first use from the environment: CONVJIT_CACHE_DIR, ...).

    convjit.torch and the functions below share it, so a process compiles and loads
    each kernel once.
    """
    global _default_runtime
    if _default_runtime is None:
        with _default_runtime_lock:
            if _default_runtime is None:
                _default_runtime = _extension().Runtime()
    return _default_runtime


def prewarm(descs, arch: str | None = None) -> "PrewarmResult":
    """default_runtime().prewarm(descs, arch): with `arch` (e.g. "sm_90") no GPU is needed."""
    return default_runtime().prewarm(list(descs), arch)


def inspect(desc: "Conv2dDesc", arch: str | None = None, *, algorithm="auto") -> "KernelInfo":
    """default_runtime().inspect(desc, arch): source, PTX, CUBIN (.sass()), resources."""
    return default_runtime().inspect(desc, arch, algorithm=algorithm)


def stats() -> "CacheStats":
    """The default runtime's cache counters."""
    return default_runtime().stats()


def __getattr__(name: str):
    if name == "_convjit":
        return _extension()
    if name in _EXTENSION_NAMES:
        value = getattr(_extension(), name)
        globals()[name] = value  # later lookups skip this function
        return value
    # `convjit.torch` without an explicit `import convjit.torch`: imported on first use,
    # so that `import convjit` itself never needs PyTorch.
    if name == "torch":
        return importlib.import_module("convjit.torch")
    raise AttributeError(f"module 'convjit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _EXTENSION_NAMES)
