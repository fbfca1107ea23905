"""mtipc: the coordination library for multi-tenant hosts, for Python.

Everything here comes from the Rust extension ``mtipc._mtipc``, which binds
the mtipc core library directly (not its C ABI):

- ``Domain(path=None)``: an open domain (the directory the cooperating
  processes of a host share) and its notification semaphore; a context
  manager.
- ``Error`` and one subclass per status kind (``InvalidError``,
  ``TimeoutError``, ...), each with the class attributes ``status`` (the C
  ``mt_status`` code) and ``status_name`` (``"MT_ERR_..."``).
- ``version()`` and ``__version__``: the library's version.
"""

from ._mtipc import (
    ClosedError,
    CorruptError,
    DeferredError,
    DeniedError,
    Domain,
    Error,
    ExistsError,
    FullError,
    InvalidError,
    IoError,
    NotFoundError,
    PanicError,
    TimeoutError,
    UnavailableError,
    VersionError,
    __version__,
    version,
)

__all__ = [
    "ClosedError",
    "CorruptError",
    "DeferredError",
    "DeniedError",
    "Domain",
    "Error",
    "ExistsError",
    "FullError",
    "InvalidError",
    "IoError",
    "NotFoundError",
    "PanicError",
    "TimeoutError",
    "UnavailableError",
    "VersionError",
    "__version__",
    "version",
]
