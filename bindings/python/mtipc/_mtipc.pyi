"""Stubs of the Rust extension ``mtipc._mtipc`` (bindings/python/src/lib.rs).

``mypy.stubtest`` checks them against the built module
(bindings/python/tests/test_stubs.py).
"""

import datetime
import os
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, Sequence, ValuesView
from types import TracebackType
from typing import ClassVar, Final, Literal, TypedDict, TypeVar, Union, final, overload

from typing_extensions import Buffer

__all__ = [
    "__version__",
    "version",
    "Domain",
    "Advertisement",
    "Conn",
    "TenantInfo",
    "SessionTable",
    "SessionInfo",
    "Worker",
    "Request",
    "Ticket",
    "advertise",
    "attach",
    "list_tenants",
    "Closure",
    "ClosureMap",
    "ClosureList",
    "publish_closure",
    "open_closure",
    "Permit",
    "PERMIT_READ",
    "PERMIT_WRITE",
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
    "FencedError",
    "_ha_supervised",
    "_ha_ready",
    "_ha_heartbeat",
    "_ha_set_health",
    "_ha_on_role",
    "_ha_role",
    "_log_level",
    "_log_take",
    "_log_stop",
]

__version__: str

def version() -> str:
    """The version of the mtipc library this module was built from."""

def _ha_supervised() -> bool:
    """Whether $MTIPC_HA_SOCKET names a Monitor (mtipc.ha.supervised)."""

def _ha_ready() -> None:
    """mt_ha_ready (mtipc.ha.ready)."""

def _ha_heartbeat() -> None:
    """mt_ha_heartbeat (mtipc.ha.heartbeat)."""

def _ha_set_health(callback: Callable[[], object] | None) -> None:
    """mt_ha_set_health (mtipc.ha.set_health)."""

def _ha_on_role(callback: Callable[[int, int], object] | None) -> None:
    """mt_ha_on_role with the role as an int (mtipc.ha.on_role)."""

def _ha_role() -> tuple[int, int]:
    """mt_ha_role_get: (role as an int, epoch) (mtipc.ha.role)."""

def _log_level(level: int) -> None:
    """Delivers the core's events up to this ``logging`` level (above 40: none)."""

def _log_take(timeout: float) -> list[tuple[int, str, str]] | None:
    """Queued events as (logging level, target, message); None once stopped."""

def _log_stop() -> None:
    """Stops the delivery (at exit)."""

_Path = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

class _DomainInfo(TypedDict):
    path: str
    layout_version: int
    owner_uid: int
    semaphore_value: int

_PermitMode = Literal["read", "write"]

PERMIT_READ: Final = "read"
"""The mode of a permit to read a file of a volume (``Domain.permit``)."""
PERMIT_WRITE: Final = "write"
"""The mode of a permit to write one (a write conflicts with every other
transfer of the same path)."""

class _VolumeInfo(TypedDict):
    name: str
    dir: str
    max_transfers: int
    lease_ms: int
    etcd: str | None

class _Instance(TypedDict):
    host: str
    pid: int
    start: int

class _Holding(TypedDict):
    instance: _Instance
    mode: _PermitMode
    path: str
    token: int
    lease_left_ms: int

class _Waiting(TypedDict):
    instance: _Instance
    mode: _PermitMode
    path: str

class _Grants(TypedDict):
    instance: _Instance
    grants: int

class _Reclaimed(TypedDict):
    instance: _Instance
    path: str
    token: int
    reason: Literal["dead", "expired"]

class _PermitStatus(TypedDict):
    holders: list[_Holding]
    queue: list[_Waiting]
    grants: list[_Grants]
    reclaimed: list[_Reclaimed]
    last_token: int
    lease_ms: int

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

    def create_volume(
        self,
        name: str,
        dir: _Path,
        max_transfers: int = 0,
        lease_ms: int | None = None,
        etcd: str | None = None,
    ) -> _VolumeInfo:
        """Records the gateway volume ``name``: its directory (relative to the
        current one if not absolute; owned by this uid, writable by nobody
        else), its cap on concurrent transfers (0: no cap), the lease of its
        permits in milliseconds (``None``: 30000) and the etcd endpoints
        that keep its permits (``"http://host:port,..."``; ``None``: this
        host's shared memory). Returns the record.

        Raises ``ExistsError`` (the name is taken), ``DeniedError`` (a
        directory others could change), ``InvalidError`` (bad name, lease,
        cap or endpoints), ``NotFoundError`` (no such directory).
        """

    def volumes(self) -> list[_VolumeInfo]:
        """The gateway volumes of the domain, sorted by name (a record that
        cannot be read is left out, with a warning to the ``mtipc`` logger)."""

    def permit(
        self,
        volume: str,
        path: str,
        mode: _PermitMode,
        timeout: float | None = None,
    ) -> Permit:
        """Asks for a permit to transfer ``path`` (relative, inside the
        volume) in ``mode`` (``PERMIT_READ`` or ``PERMIT_WRITE``).

        A request that conflicts with a transfer in flight, finds the
        volume's cap reached or earlier requests waiting, waits (GIL
        released) at most ``timeout`` seconds (``None``: no limit) and is
        granted in a fair order (round robin over processes, first come
        first served within one). ``timeout=0`` raises ``DeferredError`` at
        once instead of waiting; ``TimeoutError`` when the timeout passes.
        Signal handlers run at least every 100 ms (Ctrl-C gives the request
        up). Also ``NotFoundError`` (no such volume), ``InvalidError`` (bad
        path or mode), ``UnavailableError`` (the backend is unreachable).
        """

    def permit_status(self, volume: str) -> _PermitStatus:
        """What the volume's arbiter holds and queues now (permits of dead
        holders and run-out leases are reclaimed first): ``holders``,
        ``queue`` (in grant order), ``grants`` (per process), ``reclaimed``
        (oldest first), ``last_token``, ``lease_ms``."""

@final
class Conn:
    """An attached connection: whole messages (``bytes``, at most 1 MiB each),
    both ways, over TLS 1.3 relayed by the domain's mtipcd.

    ``attach()`` returns one to the attacher; a tenant's handler receives the
    other end. A context manager: leaving the ``with`` block closes it, as
    does ``close()`` or dropping the last reference. Iterating over it yields
    the received messages until the other end closes. One thread may send
    while another receives. Not constructible directly.
    """

    def __enter__(self) -> "Conn": ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    def send(self, data: Buffer) -> None:
        """Sends one whole message: a bytes-like object of at most 1 MiB.

        Waits (GIL released) while the peer's buffers are full. Raises
        ``InvalidError`` if the message is too large, ``ClosedError`` if the
        peer is gone or ``close()`` ran.
        """

    def recv(self, timeout: float | None = None) -> bytes:
        """Receives one whole message, waiting (GIL released) at most
        ``timeout`` seconds (``None``: no limit).

        ``TimeoutError`` when nothing complete arrived in time (nothing is
        lost); ``ClosedError`` once the other end closed (after every message
        it sent before), the connection's duration is over, or ``close()``
        ran here; ``CorruptError`` if the stream broke inside a message.
        Signal handlers run at least every 100 ms: Ctrl-C interrupts a wait.
        """

    def close(self) -> None:
        """Closes the connection; the peer's receives raise ``ClosedError``.

        A ``recv`` blocked on another thread returns at once with
        ``ClosedError``. Calling it again does nothing.
        """

    @property
    def protocol(self) -> str:
        """The application protocol the attacher asked for (one of those the
        tenant advertised); the same on both ends."""

    @property
    def tls_version(self) -> str:
        """The negotiated TLS version, as OpenSSL names it: always ``"TLSv1.3"``."""

    def __iter__(self) -> "Conn": ...
    def __next__(self) -> bytes:
        """The next message, waiting without limit; the iteration stops when
        the connection is closed. Other errors propagate."""

@final
class Advertisement:
    """A live advertisement of a tenant, made by ``advertise()``.

    A context manager: leaving the ``with`` block withdraws it, as does
    ``withdraw()`` (or ``close()``) or dropping the last reference. Once
    withdrawn, no attacher finds the tenant and the handler is not called
    again; connections already handed to the handler live on. Not
    constructible directly.
    """

    def __enter__(self) -> "Advertisement": ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    def withdraw(self) -> None:
        """Withdraws it: stops the waiter thread (within about 100 ms, or at
        the end of a round in progress; GIL released) and removes its files.

        Safe from inside a handler and while handlers run. Calling it again
        does nothing.
        """

    def close(self) -> None:
        """The same as ``withdraw()``."""

    @property
    def withdrawn(self) -> bool:
        """Whether it was withdrawn."""

    @property
    def tenant(self) -> str:
        """The tenant id."""

    @property
    def fingerprint(self) -> str:
        """The tenant's raw X25519 public key (what attachers pin), 64 lowercase hex digits."""

@final
class TenantInfo:
    """A live advertisement, as ``list_tenants()`` reports it.

    Read-only; instances compare equal when every field does. Not
    constructible directly.
    """

    @property
    def id(self) -> str:
        """The tenant id (``"@mtipcd"`` for the daemon)."""

    @property
    def role(self) -> str:
        """``"tenant"`` or ``"daemon"``."""

    @property
    def pid(self) -> int:
        """The advertising process."""

    @property
    def uid(self) -> int:
        """Its uid."""

    @property
    def protocols(self) -> tuple[str, ...]:
        """The protocols it accepts, in its order of preference."""

    @property
    def since(self) -> float:
        """When it advertised: Unix time in seconds."""

    @property
    def fingerprint(self) -> str | None:
        """Its raw X25519 public key (what attachers pin), 64 lowercase hex digits; ``None`` for the daemon."""

class _WorkerSnapshot(TypedDict):
    id: int
    index: int
    gen: int
    pid: int
    start: int
    state: str
    alive: bool
    idle: bool
    served: int

class _GroupSnapshot(TypedDict):
    group: int
    workers: list[_WorkerSnapshot]
    submitted: int
    requeued: int
    failed: int

class _SlotCounts(TypedDict):
    free: int
    filling: int
    queued: int
    taken: int
    done: int
    failed: int
    abandoned: int
    damaged: int

class _DispatchSnapshot(TypedDict):
    groups: list[_GroupSnapshot]
    slots: _SlotCounts
    max_message: int
    worker_records: int

@final
class SessionInfo:
    """A consistent snapshot of one session, as ``SessionTable.lookup`` and
    ``SessionTable.sessions`` return it.

    Read-only; instances compare equal when every field does. Not
    constructible directly.
    """

    @property
    def id(self) -> int:
        """The session id."""

    @property
    def tenant(self) -> str:
        """The tenant the session belongs to."""

    @property
    def state(self) -> int:
        """The application's state number (opaque to mtipc)."""

    @property
    def worker(self) -> int | None:
        """The ``id`` of the worker the session is bound to, or ``None``."""

    @property
    def in_flight(self) -> int:
        """Requests of the session queued or being served."""

    @property
    def created_ns(self) -> int:
        """Creation time, nanoseconds since the Unix epoch."""

    @property
    def updated_ns(self) -> int:
        """Time of the last create or update, nanoseconds since the Unix epoch."""

    @property
    def user(self) -> bytes:
        """The user data (at most 64 bytes)."""

@final
class SessionTable:
    """A session table and its request area (``<domain>/sessions/<name>.table``
    and ``.requests``): sessions of tenants, worker groups, and requests
    dispatched to them.

    Made by ``create``, ``open`` or ``open_or_create``. A context manager:
    leaving the ``with`` block closes this handle, as does ``close()``
    (workers and tickets made from it keep the files open until they go).
    Safe to use from several threads. Session ids are ``int``s (never 0)
    tagged with a generation: an ended session's id never resolves again.
    """

    @staticmethod
    def create(
        domain: Domain,
        name: str,
        capacity: int = 4096,
        groups: int = 2,
        slots: int = 256,
        max_message: int = 65536,
        workers: int = 64,
    ) -> SessionTable:
        """Creates the session set ``name`` in ``domain`` and opens it.

        ``capacity`` sessions, ``groups`` worker groups (2 to 64), ``slots``
        requests queued or served at once, requests and responses of at most
        ``max_message`` bytes, ``workers`` workers registered at once. Raises
        ``ExistsError`` if it exists, ``InvalidError`` for a bad name or a
        value out of range (the message gives the limit).
        """

    @staticmethod
    def open(domain: Domain, name: str) -> SessionTable:
        """Opens the existing session set ``name``.

        Raises ``NotFoundError`` if it does not exist; ``CorruptError``,
        ``VersionError`` or ``DeniedError`` for files that are not valid ones.
        """

    @staticmethod
    def open_or_create(
        domain: Domain,
        name: str,
        capacity: int = 4096,
        groups: int = 2,
        slots: int = 256,
        max_message: int = 65536,
        workers: int = 64,
    ) -> SessionTable:
        """Opens the session set ``name``, creating it (or whichever of its
        files is missing) with these capacities; an existing one keeps its own."""

    def __enter__(self) -> SessionTable: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    def close(self) -> None:
        """Lets go of this handle (its workers and tickets keep theirs). Calling it again does nothing."""

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""

    @property
    def name(self) -> str:
        """The set's name."""

    @property
    def capacity(self) -> int:
        """How many sessions the table holds."""

    @property
    def groups(self) -> int:
        """The number of worker groups (numbered from 0)."""

    @property
    def slots(self) -> int:
        """The number of request slots (requests queued or served at once)."""

    @property
    def max_message(self) -> int:
        """The largest request or response, in bytes."""

    @property
    def worker_records(self) -> int:
        """The number of workers that may be registered at once."""

    def create_session(self, tenant: str, state: int = 0, user: Buffer = b"") -> int:
        """Creates a session for ``tenant`` (1 to 64 bytes of ``[A-Za-z0-9_.-]``)
        with the application state ``state`` and at most 64 bytes of user data;
        returns its id.

        Raises ``FullError`` when every slot holds a live session,
        ``InvalidError`` for a bad tenant id or user data over 64 bytes.
        """

    def lookup(self, id: int) -> SessionInfo:
        """The session now (a consistent snapshot, read without a lock).

        Raises ``NotFoundError`` for an ended, stale or malformed id.
        """

    def update(self, id: int, state: int, user: Buffer | None = None) -> None:
        """Sets the session's state, and its user data unless ``user`` is ``None``.

        Raises ``NotFoundError``, ``InvalidError`` (user data over 64 bytes),
        ``TimeoutError`` (its entry stayed locked 5 s).
        """

    def bind(self, id: int, worker: Worker | int) -> None:
        """Binds the session to ``worker`` (a ``Worker`` or its ``id``): its
        next requests go to that worker while it lives and serves their group."""

    def unbind(self, id: int) -> None:
        """Removes the session's binding, if any."""

    def end(self, id: int) -> None:
        """Ends the session; its id never resolves again. ``NotFoundError`` if ended already."""

    def sessions(self) -> Iterator[SessionInfo]:
        """An iterator over every live session, in slot order (the table is
        read once, when called: for tools and checks, not a hot path)."""

    def set_spin(self, n: int) -> None:
        """Sets how many times ``Ticket.wait`` and ``Worker.next`` look again
        before they sleep (0, the default: sleep at once)."""

    def register_worker(self, group: int) -> Worker:
        """Registers a worker of group ``group`` in this process.

        Raises ``InvalidError`` for a group that does not exist, ``FullError``
        when every worker record is held by a live worker.
        """

    def submit(self, session: int, group: int, data: Buffer) -> Ticket:
        """Submits ``data`` for ``session`` to worker group ``group``; returns
        the ``Ticket`` to wait for the response with.

        The request goes to the worker the session is bound to, else to any
        worker of the group (which then binds the session). Raises
        ``InvalidError`` (request over ``max_message``, the message gives the
        limit; bad group), ``NotFoundError`` (no such session), ``FullError``
        (every slot in use). A group without a live worker is reported by
        ``Ticket.wait`` (``UnavailableError``).
        """

    def snapshot(self) -> _DispatchSnapshot:
        """A snapshot of the request area: workers by group (``id``, ``pid``,
        liveness, ``served``...), slots counted by state, ``max_message`` and
        ``worker_records``."""

    def reap_dead(self) -> int:
        """Reaps every dead worker now; returns how many."""

    def reclaim(self) -> int:
        """Frees the request slots of dead submitters; returns how many."""

    def audit(self) -> list[tuple[int, int, int]]:
        """The sessions whose ``in_flight`` differs from their requests queued
        or being served, as ``(id, in_flight, requests)``; empty when consistent."""

@final
class Worker:
    """A registered worker of one group (``SessionTable.register_worker``).

    ``next()`` waits for a request (GIL released, Ctrl-C interrupts),
    ``try_next()`` takes one without waiting; iterating serves until the
    worker is closed. It holds one request at a time: ``respond`` to it
    before taking the next. A context manager: leaving the block closes it,
    as does ``close()``: requests queued to it go to another worker of the
    group (or fail when there is none); a request it holds stays
    answerable, and the worker is unregistered once that request is
    answered or dropped (as ``mt_worker_free`` in C). Not constructible
    directly.
    """

    @property
    def id(self) -> int:
        """The worker's id, as ``SessionInfo.worker`` names it."""

    @property
    def group(self) -> int:
        """The worker's group."""

    @property
    def served(self) -> int:
        """Requests this worker has answered (0 once closed)."""

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""

    def next(self, timeout: float | None = None) -> Request | None:
        """The next request, waiting at most ``timeout`` seconds (``None``: no
        limit) with the GIL released; ``None`` when the timeout passes or the
        worker is closed meanwhile.

        Ctrl-C interrupts the wait (no request is lost). Raises
        ``InvalidError`` if the worker holds an unanswered request or is closed.
        """

    def try_next(self) -> Request | None:
        """The next request if one is queued for this worker, else ``None``; never waits."""

    def close(self) -> None:
        """Unregisters the worker: requests queued to it go to another worker
        of the group, or fail. A request it holds unanswered stays answerable;
        the worker is unregistered once that request is answered or dropped.
        Calling it again does nothing."""

    def __enter__(self) -> Worker: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    def __iter__(self) -> Worker: ...
    def __next__(self) -> Request:
        """The next request, waiting without limit; the iteration stops when the worker is closed."""

@final
class Request:
    """A request taken by a ``Worker``. Not constructible directly.

    ``data`` is a read-only ``memoryview`` onto the shared slot (no copy),
    valid until ``respond()``, which releases it (``bytes(req.data)`` keeps
    a copy). A request whose object goes away unanswered fails
    (``UnavailableError`` for its submitter). It stays answerable after its
    worker is closed.
    """

    @property
    def session(self) -> int:
        """The id of the session the request belongs to."""

    @property
    def slot(self) -> int:
        """The request slot (for diagnostics)."""

    @property
    def data(self) -> memoryview:
        """The request bytes, read-only, in place; ``InvalidError`` once answered."""

    @property
    def answered(self) -> bool:
        """Whether ``respond()`` succeeded."""

    def respond(self, data: Buffer) -> None:
        """Writes ``data`` into the slot as the response and wakes the submitter.

        Raises ``InvalidError`` for a response over ``max_message`` (the
        request stays held: answer again) or a request answered already.
        """

@final
class Ticket:
    """A submitted request (``SessionTable.submit``). Dropping a ticket whose
    response was not read withdraws the request. Not constructible directly."""

    @property
    def session(self) -> int:
        """The id of the session the request belongs to."""

    @property
    def group(self) -> int:
        """The worker group it was submitted to."""

    @property
    def slot(self) -> int:
        """The request slot it occupies (for diagnostics)."""

    def wait(self, timeout: float | None = None) -> bytes:
        """The response, waiting at most ``timeout`` seconds (``None``: no
        limit) with the GIL released; Ctrl-C interrupts (the ticket stays valid).

        Raises ``TimeoutError`` (wait again), ``UnavailableError`` (the group
        has no live worker to serve it), ``InvalidError`` (already read).
        """

    def poll(self) -> bytes | None:
        """The response if it is there, else ``None``; never waits."""

@final
class Permit:
    """A permit: the right to transfer one path of a gateway volume in one
    mode, until released, its lease runs out, or the process dies.

    Made by ``Domain.permit``; not constructible directly. A context
    manager: leaving the ``with`` block releases it, as does ``release()``.
    ``put`` and ``get`` copy through a temporary name and rename into place
    only while the permit is current. Once its lease ran out it is lost:
    ``renew``, ``put`` and ``get`` raise ``FencedError`` and change nothing.
    Any use of a released permit raises ``InvalidError``.
    """

    def __enter__(self) -> "Permit": ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    @property
    def token(self) -> int:
        """The fencing token: strictly increasing per volume."""

    @property
    def volume(self) -> str:
        """The volume's name."""

    @property
    def path(self) -> str:
        """The path inside the volume."""

    @property
    def mode(self) -> _PermitMode:
        """``"read"`` or ``"write"``."""

    @property
    def lease_ms(self) -> int:
        """The lease as granted, in milliseconds."""

    @property
    def released(self) -> bool:
        """Whether it was released."""

    def renew(self) -> None:
        """Extends the lease by its length from now; ``FencedError`` if lost."""

    def put(self, src: _Path) -> int:
        """Copies the local file ``src`` to the permit's path in the volume;
        returns the bytes copied. ``InvalidError`` with a read permit,
        ``FencedError`` if lost (the volume is then unchanged)."""

    def get(self, dst: _Path) -> int:
        """Copies the permit's path in the volume to the local file ``dst``;
        returns the bytes copied."""

    def release(self) -> None:
        """Gives the permit back. Calling it again does nothing."""

def advertise(
    domain: Domain,
    tenant: str,
    handler: Callable[[Conn], object],
    protocols: Sequence[str] | None = None,
) -> Advertisement:
    """Advertises ``tenant`` in the domain and calls ``handler(conn)`` with
    each attached connection.

    ``protocols``: 1 to 16 names of ``[a-z0-9_.-]`` (``None``: ``["msg"]``).
    The handler runs on a thread of its own per connection, with the
    scheduling policy the waiter thread started with (the calling
    thread's), and owns the connection (closed when dropped). The
    advertisement's waiter thread runs as ``SCHED_BATCH`` when it starts
    under ``SCHED_OTHER``. If it raises, the exception is
    reported through ``sys.unraisablehook`` (by default on stderr) and the
    connection is closed. Raises ``InvalidError`` (bad tenant id or
    protocols), ``ExistsError`` (a live tenant of that id exists).
    """

def attach(
    domain: Domain,
    tenant: str,
    timeout: float | None = 5.0,
    start_at: float | datetime.datetime | None = None,
    duration: float | None = None,
    protocol: str | None = None,
) -> Conn:
    """Attaches to ``tenant`` through the domain's mtipcd; returns the ``Conn``.

    ``timeout``: seconds for the round (``None``: no limit); ``start_at``:
    when the connection opens, Unix seconds or an aware ``datetime``
    (``None``: at once); ``duration``: seconds it stays open from then
    (``None``: until an end closes); ``protocol``: one the tenant
    advertises (``None``: its first). The GIL is released; Ctrl-C
    interrupts. Raises ``NotFoundError`` (no such live tenant, or protocol
    not accepted), ``UnavailableError`` (no mtipcd), ``TimeoutError``,
    ``DeniedError`` (key or credential mismatch), ``InvalidError``.
    """

def list_tenants(domain: Domain) -> list[TenantInfo]:
    """The live advertisements (tenants and the daemon ``"@mtipcd"``), sorted
    by id; stale ones are cleaned up on the way."""

_T = TypeVar("_T")

_ClosureValue = Union["ClosureMap", "ClosureList", memoryview, str, int, float]
"""What a closure holds, as read: views for maps and lists, a read-only
``memoryview`` for bytes (zero copy), ``str``, ``int`` or ``float``."""

_PublishValue = Union[
    Buffer, str, int, float, Mapping[str, "_PublishValue"], Sequence["_PublishValue"]
]
"""What ``publish_closure`` takes: bytes-like objects, ``str``, ``int``
(64-bit), ``float``, and ``dict``s (``str`` keys) and ``list``s/``tuple``s of
them (at most 64 levels deep). ``bool`` is refused."""

@final
class ClosureMap(Mapping[str, _ClosureValue]):
    """A read-only map inside an open closure (``str`` keys, sorted); a
    ``collections.abc.Mapping``. Keeps its version open while it lives."""

    def __len__(self) -> int: ...
    def __getitem__(self, key: str, /) -> _ClosureValue: ...
    def __iter__(self) -> Iterator[str]: ...
    def __contains__(self, key: object, /) -> bool: ...
    @overload
    def get(self, key: str, default: None = None, /) -> _ClosureValue | None: ...
    @overload
    def get(self, key: str, default: _ClosureValue, /) -> _ClosureValue: ...
    @overload
    def get(self, key: str, default: _T, /) -> _ClosureValue | _T: ...
    def keys(self) -> KeysView[str]: ...
    def values(self) -> ValuesView[_ClosureValue]: ...
    def items(self) -> ItemsView[str, _ClosureValue]: ...
    def __eq__(self, other: object, /) -> bool: ...

@final
class ClosureList(Sequence[_ClosureValue]):
    """A read-only list inside an open closure; a
    ``collections.abc.Sequence`` (a slice gives a ``list``). Keeps its
    version open while it lives."""

    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int, /) -> _ClosureValue: ...
    @overload
    def __getitem__(self, index: slice, /) -> list[_ClosureValue]: ...
    def __iter__(self) -> Iterator[_ClosureValue]: ...
    def __contains__(self, value: object, /) -> bool: ...
    def __eq__(self, other: object, /) -> bool: ...

@final
class Closure:
    """One open version of a shared closure (``open_closure``), mapped
    read-only with no copy. A context manager: leaving the block (or
    ``close()``) lets go of the version; views taken from ``value`` keep it
    until they are gone too."""

    @property
    def version(self) -> int:
        """The version number."""
    @property
    def name(self) -> str:
        """The closure's name."""
    @property
    def value(self) -> _ClosureValue:
        """The value; ``InvalidError`` once closed."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def close(self) -> None:
        """Lets go of the version. Calling it again does nothing."""
    def __enter__(self) -> Closure: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

def publish_closure(domain: Domain, name: str, value: _PublishValue) -> int:
    """Publishes ``value`` as the new current version of closure ``name``;
    returns its version number (1, 2, ...). ``InvalidError`` for a bad name,
    an integer out of range, nesting past 64 levels or more than 1 GiB;
    ``TypeError`` for a value of another type."""

def open_closure(domain: Domain, name: str) -> Closure:
    """Opens the current version of closure ``name`` (``NotFoundError`` if it
    was never published)."""

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
class FencedError(Error): ...
