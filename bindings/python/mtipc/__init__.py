"""mtipc: the coordination library for multi-tenant hosts, for Python.

Everything here comes from the Rust extension ``mtipc._mtipc``, which binds
the mtipc core library directly (not its C ABI):

- ``Domain(path=None)``: an open domain (the directory the cooperating
  processes of a host share) and its notification semaphore; a context
  manager.
- ``advertise(domain, tenant, handler, protocols=None)``: advertise a tenant
  whose ``handler(conn)`` is called with each attached connection; returns
  an ``Advertisement`` (a context manager that withdraws it).
- ``attach(domain, tenant, timeout=5.0, start_at=None, duration=None,
  protocol=None)``: attach to a tenant through the domain's ``mtipcd``;
  returns a ``Conn`` (whole messages over TLS 1.3; a context manager,
  iterable over received messages).
- ``list_tenants(domain)``: the live advertisements, as ``TenantInfo`` objects.
- ``SessionTable.create(domain, name, ...)`` / ``.open`` / ``.open_or_create``:
  a session table and its request area (sessions of tenants, looked up as
  ``SessionInfo``; ``submit`` a request for a session to a worker group,
  getting a ``Ticket``); ``register_worker(group)`` gives a ``Worker``, whose
  ``next()`` yields ``Request`` objects to ``respond()`` to.
- ``publish_closure(domain, name, value)``: publish an immutable value (bytes,
  or nested dict/list/str/int/float) as the new version of a shared closure;
  ``open_closure(domain, name)``: map its current version read-only, as a
  ``Closure`` (``.version``, ``.value``: ``ClosureMap``/``ClosureList`` views,
  ``memoryview`` for bytes; a context manager).
- ``Domain.create_volume(name, dir, max_transfers=0, lease_ms=None,
  etcd=None)`` records a gateway volume, ``Domain.volumes()`` lists them;
  ``Domain.permit(volume, path, mode, timeout=None)`` asks for a permit to
  transfer one file of a volume (``mode``: ``PERMIT_READ`` = ``"read"`` or
  ``PERMIT_WRITE`` = ``"write"``), granted in a fair order, as a ``Permit``
  (``token``, ``renew()``, ``put(src)``, ``get(dst)``, ``release()``; a
  context manager that releases it); ``Domain.permit_status(volume)``: the
  holders, the queue, grants and reclaimed permits of a volume.
- ``Error`` and one subclass per status kind (``InvalidError``,
  ``TimeoutError``, ...), each with the class attributes ``status`` (the C
  ``mt_status`` code) and ``status_name`` (``"MT_ERR_..."``).
- ``version()`` and ``__version__``: the library's version.
- ``mtipc.ha``: the HA hooks of a process that ``mtipc-ha`` supervises
  (``ready()``, ``heartbeat()``, ``set_health(fn)``, ``on_role(fn)``,
  ``role()``, ``supervised()``, ``Role``); no-ops outside supervision.

The library's events (a stale advertisement removed, a bad file skipped, a
panic inside the library) go to the ``logging`` logger ``mtipc``; nothing
is printed. See ``mtipc._log``.
"""

from ._mtipc import (
    Advertisement,
    ClosedError,
    Closure,
    ClosureList,
    ClosureMap,
    Conn,
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
    Permit,
    PERMIT_READ,
    PERMIT_WRITE,
    Request,
    SessionInfo,
    SessionTable,
    TenantInfo,
    Ticket,
    TimeoutError,
    UnavailableError,
    FencedError,
    VersionError,
    Worker,
    __version__,
    advertise,
    attach,
    list_tenants,
    open_closure,
    publish_closure,
    version,
)

__all__ = [
    "Advertisement",
    "ClosedError",
    "Closure",
    "ClosureList",
    "ClosureMap",
    "Conn",
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
    "Permit",
    "PERMIT_READ",
    "PERMIT_WRITE",
    "Request",
    "SessionInfo",
    "SessionTable",
    "TenantInfo",
    "Ticket",
    "TimeoutError",
    "UnavailableError",
    "FencedError",
    "VersionError",
    "Worker",
    "__version__",
    "advertise",
    "attach",
    "list_tenants",
    "open_closure",
    "publish_closure",
    "version",
    "ha",
]

from . import _log, ha

_log.start()
