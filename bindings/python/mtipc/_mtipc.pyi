"""Stubs of the Rust extension ``mtipc._mtipc`` (bindings/python/src/lib.rs).

``mypy.stubtest`` checks them against the built module
(bindings/python/tests/test_stubs.py).
"""

import os
from types import TracebackType
from typing import ClassVar, TypedDict, Union, final

__all__ = [
    "__version__",
    "version",
    "Domain",
    "Error",
    "InvalidError",
    "NotFoundError",
    "ExistsError",
    "DeniedError",
    "VersionError",
    "CorruptError",
    "TimeoutError",
    "FullError",
    "ClosedError",
    "DeferredError",
    "IoError",
    "PanicError",
    "UnavailableError",
]

__version__: str

def version() -> str:
    """The version of the mtipc library this module was built from."""

_Path = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

class _DomainInfo(TypedDict):
    path: str
    layout_version: int
    owner_uid: int
    semaphore_value: int

@final
class Domain:
    """An open mtipc domain and its notification semaphore.

    ``Domain(path=None)`` opens the domain at ``path``, creating it (mode
    0700) if it is missing; ``None`` means ``$MTIPC_DOMAIN``, else
    ``$XDG_RUNTIME_DIR/mtipc``, else ``/tmp/mtipc-<uid>``. A context manager:
    leaving the ``with`` block closes it, as does ``close()``; any use of a
    closed domain raises ``InvalidError``. Safe to use from several threads.

    Raises ``InvalidError`` (empty path, NUL byte, not a directory),
    ``DeniedError`` (symbolic link, another owner, group- or world-writable,
    files others may read), ``VersionError`` (another layout version),
    ``CorruptError`` (damaged ``layout`` or ``notify.sem``), ``NotFoundError``
    (missing parent directory).
    """

    def __new__(cls, path: _Path | None = None) -> "Domain": ...
    def __enter__(self) -> "Domain": ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    def close(self) -> None:
        """Releases the domain. Calling it again does nothing."""

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""

    @property
    def path(self) -> str:
        """The domain directory."""

    @property
    def layout_version(self) -> int:
        """The domain's layout version."""

    @property
    def owner_uid(self) -> int:
        """The uid that owns the domain directory."""

    def info(self) -> _DomainInfo:
        """A snapshot: ``path``, ``layout_version``, ``owner_uid``, ``semaphore_value``."""

    def sem_post(self, n: int = 1) -> None:
        """Adds ``n`` to the notification semaphore and wakes up to ``n`` waiters.

        ``InvalidError`` if ``n`` is negative or the count would pass 2**31 - 1.
        """

    def sem_wait(self, timeout: float | None = None) -> None:
        """Takes one unit, waiting (GIL released) while the count is zero.

        ``timeout`` is in seconds; ``None`` (or more than 2**32 - 1 seconds)
        waits without limit. Raises ``TimeoutError`` when it passes and
        ``InvalidError`` if it is negative or NaN.
        """

    def sem_try_wait(self) -> bool:
        """Takes one unit if there is one, without blocking; returns whether it did."""

    def sem_reset(self) -> int:
        """Sets the count to zero and returns the count it had."""

    def sem_value(self) -> int:
        """The current count (a snapshot)."""

class Error(Exception):
    """Base class of every error mtipc raises.

    mtipc raises only its subclasses, one per status kind; each defines
    ``status`` and ``status_name`` (the base class itself does not).
    """

    status: ClassVar[int]
    """The C ``mt_status`` code of the error's kind."""
    status_name: ClassVar[str]
    """Its name in the C header, such as ``"MT_ERR_TIMEOUT"``."""

class InvalidError(Error): ...
class NotFoundError(Error): ...
class ExistsError(Error): ...
class DeniedError(Error): ...
class VersionError(Error): ...
class CorruptError(Error): ...
class TimeoutError(Error): ...
class FullError(Error): ...
class ClosedError(Error): ...
class DeferredError(Error): ...
class IoError(Error): ...
class PanicError(Error): ...
class UnavailableError(Error): ...
