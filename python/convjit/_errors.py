"""The exceptions convjit raises: one class per convjit::ErrorCode, all under Error.

Pure Python, imported before the extension: the extension's exception translator
builds its exceptions through from_code(), and convjit.torch raises the same classes.
"""

from __future__ import annotations

import importlib


class Error(RuntimeError):
    """Every error convjit raises. `.code` is the convjit.ErrorCode it reports."""

    code_name = "internal"

    def __init__(self, message: str, code=None):
        super().__init__(message)
        if code is None:
            # Raised from Python: the class names the code.
            code = importlib.import_module("convjit._convjit").ErrorCode.__members__[self.code_name]
        self.code = code


class InvalidArgument(Error, ValueError):
    """A descriptor field, pointer, tensor or option is out of range."""

    code_name = "invalid_argument"


class Unsupported(Error, NotImplementedError):
    """A valid request this version cannot run (a layout, a device, a missing tool)."""

    code_name = "unsupported"


class NoDriver(Error):
    """libcuda.so.1 could not be loaded (no GPU driver on this machine)."""

    code_name = "no_driver"


class NoDevice(Error):
    """The driver loaded but the requested device is absent."""

    code_name = "no_device"


class DriverError(Error):
    """A CUDA Driver API call failed."""

    code_name = "driver"


class ContextLost(Error):
    """The CUDA context hit a sticky error (a kernel faulted): nothing more runs in it."""

    code_name = "context_lost"


class CompileError(Error):
    """NVRTC failed; the message carries the log and the options."""

    code_name = "compile"


class CublasError(Error):
    """A cuBLAS call failed."""

    code_name = "cublas"


class CacheError(Error):
    """The on-disk cache cannot be used."""

    code_name = "cache"


class IoError(Error):
    """A file could not be read or written, or a tool could not be run."""

    code_name = "io"


class InternalError(Error):
    """A broken invariant inside convjit."""

    code_name = "internal"


_BY_CODE = {
    cls.code_name: cls
    for cls in (
        InvalidArgument,
        Unsupported,
        NoDriver,
        NoDevice,
        DriverError,
        ContextLost,
        CompileError,
        CublasError,
        CacheError,
        IoError,
        InternalError,
    )
}


def from_code(code, message: str) -> Error:
    """The exception for a convjit::Error: its class picked by the code's name."""
    return _BY_CODE.get(code.name, Error)(message, code)
