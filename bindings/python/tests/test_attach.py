"""Discovery and attach from Python, with real processes: mtipcd (the
daemon, found through $MTIPCD or the repository's target/debug), tenants
(examples/py_tenant.py, small scripts, or this test process itself) and
attachers (this process, or scripts)."""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import mtipc

from conftest import wait_until

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "py_tenant.py"
# Time a round needs beyond its timeout (scheduling on a loaded machine).
SLACK = 3.0


def mtipcd_path() -> Path:
    """The mtipcd program: $MTIPCD, else the repository's debug build."""
    path = Path(os.environ.get("MTIPCD") or REPO / "target" / "debug" / "mtipcd")
    if not os.access(path, os.X_OK):
        pytest.fail(f"mtipcd not found at {path}: build it with `cargo build --bins` or set MTIPCD")
    return path


class Procs:
    """Processes a test starts; killed (if still running) and reaped after it."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd  # not the source tree, so the installed wheel is imported
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str | Path, stderr: int | None = None, stdin: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [str(a) for a in args],
            cwd=self.cwd,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self.procs.append(p)
        return p

    def python(
        self, script: str, *args: str | Path, stderr: int | None = None, stdin: int = subprocess.DEVNULL
    ) -> subprocess.Popen[str]:
        return self.start(sys.executable, "-c", textwrap.dedent(script), *args, stderr=stderr, stdin=stdin)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a stopped process dies only once continued
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


def line(p: subprocess.Popen[str]) -> str:
    """The process's next line of output (empty at its end)."""
    assert p.stdout is not None
    return p.stdout.readline().strip()


def ids(d: mtipc.Domain) -> list[str]:
    return [t.id for t in mtipc.list_tenants(d)]


@pytest.fixture
def daemon(dom: mtipc.Domain, procs: Procs) -> subprocess.Popen[str]:
    """mtipcd serving `dom`, once it is advertised."""
    p = procs.start(mtipcd_path(), "--domain", dom.path, "--log", "warn")
    wait_until(lambda: "@mtipcd" in ids(dom) or p.poll() is not None, what="mtipcd advertised")
    assert p.poll() is None, "mtipcd exited"
    return p


def start_tenant(procs: Procs, dom: mtipc.Domain, tenant: str = "py-tenant") -> subprocess.Popen[str]:
    """examples/py_tenant.py advertising `tenant` in `dom`."""
    p = procs.start(sys.executable, EXAMPLE, dom.path, tenant)
    assert line(p) == f"{tenant}: advertised, waiting for attachers"
    return p


@pytest.fixture
def tenant(dom: mtipc.Domain, daemon: subprocess.Popen[str], procs: Procs) -> subprocess.Popen[str]:
    """The example tenant, advertised as "py-tenant"."""
    return start_tenant(procs, dom)


def echo_handler(prefix: bytes, seen: list[int] | None = None) -> Callable[[mtipc.Conn], None]:
    """A handler answering every message with `prefix + message`; records
    the ids of the threads it ran on in `seen`."""

    def handler(conn: mtipc.Conn) -> None:
        if seen is not None:
            seen.append(threading.get_ident())
        with conn:
            for m in conn:
                conn.send(conn.protocol.encode() if m == b"proto?" else prefix + m)

    return handler


# ---------------------------------------------------------------------------
# With the example tenant


def test_echo_with_the_example_tenant(dom: mtipc.Domain, tenant: subprocess.Popen[str]) -> None:
    with mtipc.attach(dom, "py-tenant") as c:
        assert c.tls_version == "TLSv1.3"
        c.send(b"hello")
        assert c.recv(timeout=10) == b"py-tenant: hello"
        c.send(bytearray(b"two"))
        c.send(memoryview(b"xthreex")[1:-1])
        c.send(b"")
        assert [c.recv(timeout=10) for _ in range(3)] == [b"py-tenant: two", b"py-tenant: three", b"py-tenant: "]
    assert line(tenant) == "py-tenant: attached"
    assert line(tenant) == "py-tenant: connection closed"


def test_list_tenants(dom: mtipc.Domain, daemon: subprocess.Popen[str], tenant: subprocess.Popen[str]) -> None:
    listed = mtipc.list_tenants(dom)
    assert [t.id for t in listed] == ["@mtipcd", "py-tenant"]
    d, t = listed
    assert (d.role, d.pid, d.fingerprint) == ("daemon", daemon.pid, None)
    assert (t.role, t.pid, t.uid, t.protocols) == ("tenant", tenant.pid, os.geteuid(), ("msg",))
    assert t.fingerprint is not None and re.fullmatch("[0-9a-f]{64}", t.fingerprint)
    assert abs(t.since - time.time()) < 60
    assert t == mtipc.list_tenants(dom)[1]
    assert repr(t).startswith("TenantInfo(id='py-tenant', role='tenant', pid=")
    with pytest.raises(AttributeError):
        t.pid = 1  # type: ignore[misc]


def test_iteration_ends_when_the_duration_is_over(dom: mtipc.Domain, tenant: subprocess.Popen[str]) -> None:
    begun = time.monotonic()
    with mtipc.attach(dom, "py-tenant", duration=1.0) as c:
        for m in (b"a", b"b", b"c"):
            c.send(m)
        got = []
        for reply in c:  # ends with the connection (ClosedError)
            got.append(reply)
        assert got == [b"py-tenant: a", b"py-tenant: b", b"py-tenant: c"]
        assert 0.8 < time.monotonic() - begun < 1.0 + SLACK
        with pytest.raises(mtipc.ClosedError):
            c.recv(timeout=1)


def test_duration_closes_the_connection(dom: mtipc.Domain, tenant: subprocess.Popen[str]) -> None:
    c = mtipc.attach(dom, "py-tenant", duration=0.5)
    begun = time.monotonic()
    with pytest.raises(mtipc.ClosedError):
        c.recv(timeout=10)
    assert time.monotonic() - begun < 0.5 + SLACK


@pytest.mark.parametrize("aware", [True, False])
def test_start_at(dom: mtipc.Domain, tenant: subprocess.Popen[str], aware: bool) -> None:
    begun = time.monotonic()
    start: float | datetime.datetime = time.time() + 0.5
    if aware:
        start = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=0.5)
    with mtipc.attach(dom, "py-tenant", start_at=start) as c:
        # The relay passes nothing before the start: the handshake waits.
        c.send(b"late")
        assert c.recv(timeout=10) == b"py-tenant: late"
    assert time.monotonic() - begun >= 0.45


def test_timeout_when_the_tenant_is_stopped(dom: mtipc.Domain, tenant: subprocess.Popen[str]) -> None:
    tenant.send_signal(signal.SIGSTOP)
    try:
        begun = time.monotonic()
        with pytest.raises(mtipc.TimeoutError):
            mtipc.attach(dom, "py-tenant", timeout=1.0)
        assert time.monotonic() - begun < 1.0 + SLACK
    finally:
        tenant.send_signal(signal.SIGCONT)
    # The round was cleaned up: the next one works.
    with mtipc.attach(dom, "py-tenant", timeout=10) as c:
        c.send(b"again")
        assert c.recv(timeout=10) == b"py-tenant: again"


def test_not_found(dom: mtipc.Domain, tenant: subprocess.Popen[str]) -> None:
    with pytest.raises(mtipc.NotFoundError, match="nobody"):
        mtipc.attach(dom, "nobody")
    with pytest.raises(mtipc.NotFoundError, match="protocol"):
        mtipc.attach(dom, "py-tenant", protocol="json")
    with mtipc.attach(dom, "py-tenant", protocol="msg") as c:
        c.send(b"msg")
        assert c.recv(timeout=10) == b"py-tenant: msg"


def test_unavailable_without_daemon(dom: mtipc.Domain, procs: Procs) -> None:
    start_tenant(procs, dom)
    with pytest.raises(mtipc.UnavailableError, match="mtipcd is not running"):
        mtipc.attach(dom, "py-tenant")


def test_sigint_interrupts_a_blocked_recv(dom: mtipc.Domain, tenant: subprocess.Popen[str], procs: Procs) -> None:
    p = procs.python(
        """
        import sys, mtipc
        c = mtipc.attach(mtipc.Domain(sys.argv[1]), "py-tenant")
        print("attached", flush=True)
        try:
            c.recv()  # nothing comes
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """,
        dom.path,
    )
    assert line(p) == "attached"
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=SLACK) == 0
    assert line(p) == "interrupted"


def test_sigint_interrupts_a_blocked_attach(dom: mtipc.Domain, tenant: subprocess.Popen[str], procs: Procs) -> None:
    tenant.send_signal(signal.SIGSTOP)  # never answers
    p = procs.python(
        """
        import sys, mtipc
        d = mtipc.Domain(sys.argv[1])
        print("attaching", flush=True)
        try:
            mtipc.attach(d, "py-tenant", timeout=None)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """,
        dom.path,
    )
    assert line(p) == "attaching"
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=SLACK) == 0
    assert line(p) == "interrupted"


def test_example_stops_on_sigterm_with_a_connection_open(
    dom: mtipc.Domain, tenant: subprocess.Popen[str]
) -> None:
    with mtipc.attach(dom, "py-tenant") as c:
        c.send(b"x")
        assert c.recv(timeout=10) == b"py-tenant: x"
        tenant.send_signal(signal.SIGTERM)
        assert tenant.wait(timeout=10) == 0
        # The exit closed the connection its handler held.
        with pytest.raises(mtipc.ClosedError):
            c.recv(timeout=10)
    assert tenant.stdout is not None
    assert tenant.stdout.read().splitlines() == [
        "py-tenant: attached",
        "py-tenant: withdrawn",
        "py-tenant: connection closed",
    ]
    assert "py-tenant" not in ids(dom)


def test_example_usage() -> None:
    r = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("usage: python examples/py_tenant.py DOMAIN_DIR [TENANT_ID]")


# ---------------------------------------------------------------------------
# Handlers


def test_a_raising_handler_is_reported_and_its_connection_closed(
    dom: mtipc.Domain, daemon: subprocess.Popen[str], procs: Procs
) -> None:
    p = procs.python(
        """
        import signal, sys, mtipc

        def handler(conn):
            raise ValueError("handler failed on purpose")

        with mtipc.advertise(mtipc.Domain(sys.argv[1]), "raiser", handler):
            print("advertised", flush=True)
            signal.sigwait({signal.SIGTERM})
        """,
        dom.path,
        stderr=subprocess.PIPE,
    )
    assert line(p) == "advertised"
    for _ in range(2):  # the tenant lives on after a failed handler
        with mtipc.attach(dom, "raiser") as c:
            with pytest.raises(mtipc.ClosedError):
                c.recv(timeout=10)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == -signal.SIGTERM
    assert p.stderr is not None
    err = p.stderr.read()
    assert err.count("Exception ignored in: <function handler") == 2, err
    assert err.count("ValueError: handler failed on purpose") == 2, err


def test_exit_withdraws_and_closes_without_being_asked(
    dom: mtipc.Domain, daemon: subprocess.Popen[str], procs: Procs
) -> None:
    # The advertisement stays referenced (a global, and its handler refers to
    # it), and a connection is open in its handler: the exit still withdraws
    # it, closes the connection and lets the handler return.
    p = procs.python(
        """
        import sys, mtipc

        def handler(conn):
            assert not ad.withdrawn
            for m in conn:
                conn.send(m)
            print("handler returned", flush=True)

        ad = mtipc.advertise(mtipc.Domain(sys.argv[1]), "leaver", handler)
        print("advertised", flush=True)
        sys.stdin.readline()
        """,
        dom.path,
        stdin=subprocess.PIPE,
    )
    assert line(p) == "advertised"
    with mtipc.attach(dom, "leaver") as c:
        c.send(b"ping")
        assert c.recv(timeout=10) == b"ping"
        assert p.stdin is not None
        p.stdin.write("exit\n")
        p.stdin.flush()
        assert p.wait(timeout=10) == 0
        with pytest.raises(mtipc.ClosedError):
            c.recv(timeout=10)
    assert line(p) == "handler returned"
    assert not (Path(dom.path) / "adverts" / "leaver").exists()


def test_advertise_here_attach_from_another_process(dom: mtipc.Domain, daemon: subprocess.Popen[str], procs: Procs) -> None:
    seen: list[int] = []
    with mtipc.advertise(dom, "here", echo_handler(b"here: ", seen), protocols=["echo", "msg"]) as ad:
        assert ad.tenant == "here" and not ad.withdrawn
        assert re.fullmatch("[0-9a-f]{64}", ad.fingerprint)
        assert [t.fingerprint for t in mtipc.list_tenants(dom) if t.id == "here"] == [ad.fingerprint]
        assert [t.protocols for t in mtipc.list_tenants(dom) if t.id == "here"] == [("echo", "msg")]
        p = procs.python(
            """
            import sys, mtipc
            with mtipc.attach(mtipc.Domain(sys.argv[1]), "here") as c:
                for m in (b"one", b"two"):
                    c.send(m)
                    print(c.recv(timeout=10).decode(), flush=True)
                c.send(b"proto?")
                print(c.protocol, c.recv(timeout=10).decode(), flush=True)
            """,
            dom.path,
        )
        # This thread keeps running Python code while the handler, on the
        # connection thread, takes the GIL for each message.
        spins = 0
        while p.poll() is None:
            spins += 1
        assert p.returncode == 0
        assert p.stdout is not None
        assert p.stdout.read().splitlines() == ["here: one", "here: two", "echo echo"]
        assert spins > 1000
        assert len(seen) == 1 and seen[0] != threading.get_ident()
    assert ad.withdrawn
    assert "here" not in ids(dom)


def test_withdraw_while_a_connection_is_open(dom: mtipc.Domain, daemon: subprocess.Popen[str]) -> None:
    ad = mtipc.advertise(dom, "here", echo_handler(b"here: "))
    with mtipc.attach(dom, "here") as c:
        c.send(b"before")
        assert c.recv(timeout=10) == b"here: before"
        # The handler is blocked receiving (GIL released) meanwhile.
        begun = time.monotonic()
        ad.withdraw()
        assert time.monotonic() - begun < SLACK
        assert ad.withdrawn and repr(ad) == "<mtipc.Advertisement tenant='here' (withdrawn)>"
        ad.withdraw()  # again: nothing
        assert "here" not in ids(dom)
        with pytest.raises(mtipc.NotFoundError):
            mtipc.attach(dom, "here")
        # The connection lives on.
        c.send(b"after")
        assert c.recv(timeout=10) == b"here: after"


def test_withdraw_from_inside_the_handler(dom: mtipc.Domain, daemon: subprocess.Popen[str]) -> None:
    ads: list[mtipc.Advertisement] = []

    def handler(conn: mtipc.Conn) -> None:
        ads[0].withdraw()
        conn.send(b"withdrawn: " + str(ads[0].withdrawn).encode())

    ads.append(mtipc.advertise(dom, "self-withdrawing", handler))
    with mtipc.attach(dom, "self-withdrawing") as c:
        assert c.recv(timeout=10) == b"withdrawn: True"
    assert "self-withdrawing" not in ids(dom)


def test_conn_in_this_process_both_ends(dom: mtipc.Domain, daemon: subprocess.Popen[str]) -> None:
    with mtipc.advertise(dom, "here", echo_handler(b"> ")):
        with mtipc.attach(dom, "here") as c:
            assert repr(c) == "<mtipc.Conn TLSv1.3>"
            # A timeout loses nothing.
            with pytest.raises(mtipc.TimeoutError, match="no message within"):
                c.recv(timeout=0.2)
            big = bytes(range(256)) * 4096  # the 1 MiB limit
            c.send(big[: (1 << 20) - 2])
            assert c.recv(timeout=30) == b"> " + big[: (1 << 20) - 2]
            with pytest.raises(mtipc.InvalidError, match="over the channel's limit"):
                c.send(bytes((1 << 20) + 1))
            with pytest.raises(TypeError, match="bytes-like"):
                c.send("text")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="bytes-like"):
                c.send(3)  # type: ignore[arg-type]
            with pytest.raises(mtipc.InvalidError):
                c.recv(timeout=-1)
        with pytest.raises(mtipc.ClosedError):
            c.send(b"closed")
        with pytest.raises(mtipc.ClosedError):
            c.recv(timeout=1)
        c.close()  # again: nothing


def test_close_wakes_a_receiver_on_another_thread(dom: mtipc.Domain, daemon: subprocess.Popen[str]) -> None:
    with mtipc.advertise(dom, "here", echo_handler(b"> ")):
        c = mtipc.attach(dom, "here")
        errors: list[BaseException] = []

        def receive() -> None:
            try:
                c.recv()
            except mtipc.Error as e:
                errors.append(e)

        t = threading.Thread(target=receive)
        t.start()
        time.sleep(0.3)
        c.close()
        t.join(timeout=SLACK)
        assert not t.is_alive()
        assert [type(e) for e in errors] == [mtipc.ClosedError]


# ---------------------------------------------------------------------------
# Arguments


def test_bad_arguments(dom: mtipc.Domain, daemon: subprocess.Popen[str]) -> None:
    with pytest.raises(mtipc.InvalidError):
        mtipc.advertise(dom, "-bad", echo_handler(b""))
    with pytest.raises(mtipc.InvalidError):
        mtipc.advertise(dom, "ok", echo_handler(b""), protocols=[])
    with pytest.raises(mtipc.InvalidError):
        mtipc.advertise(dom, "ok", echo_handler(b""), protocols=["Not Valid"])
    with pytest.raises(TypeError, match="callable"):
        mtipc.advertise(dom, "ok", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        mtipc.advertise(dom, "ok", echo_handler(b""), protocols="msg")
    assert ids(dom) == ["@mtipcd"]
    with mtipc.advertise(dom, "taken", echo_handler(b"")):
        with pytest.raises(mtipc.ExistsError):
            mtipc.advertise(dom, "taken", echo_handler(b""))
        for kwargs in (
            {"timeout": -1.0},
            {"timeout": float("nan")},
            {"duration": 0.0},
            {"start_at": -5.0},
            {"start_at": datetime.datetime.now()},  # naive
        ):
            with pytest.raises(mtipc.InvalidError):
                mtipc.attach(dom, "taken", **kwargs)
        with pytest.raises(TypeError):
            mtipc.attach(dom, "taken", start_at="now")  # type: ignore[arg-type]
    dom2 = mtipc.Domain(dom.path)
    dom2.close()
    with pytest.raises(mtipc.InvalidError, match="closed"):
        mtipc.list_tenants(dom2)
