"""Sessions and request dispatch from Python: SessionTable, Worker, Request,
Ticket; workers in other processes, sticky sessions, workers killed with
SIGKILL mid-request, the GIL released while waiting, Ctrl-C, and the demo's
examples (py_manager.py, py_worker.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import mtipc

from conftest import private_write, require_module, wait_until

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

# A worker process: opens the table, registers in a group, says
# "ready <worker id>", then answers each request with b"<pid>:<request>".
# Mode "hang" (or a request b"hang"): says "took <session>" and never
# answers (to be killed mid-request).
WORKER = textwrap.dedent(
    """
    import os, sys, time
    import mtipc

    dom, name, group, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    table = mtipc.SessionTable.open(mtipc.Domain(dom), name)
    worker = table.register_worker(group)
    print("ready", worker.id, flush=True)
    for req in worker:
        data = bytes(req.data)
        if mode == "hang" or data == b"hang":
            print("took", req.session, flush=True)
            time.sleep(3600)
        req.respond(str(os.getpid()).encode() + b":" + data)
    """
)


class Procs:
    """Worker processes started by a test; killed at its end."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd  # not the source tree: the installed wheel is imported
        self.all: list[subprocess.Popen[str]] = []

    def start(self, *argv: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, *argv], cwd=self.cwd, stdout=subprocess.PIPE, text=True
        )
        self.all.append(p)
        return p

    def worker(self, dom: Path, name: str, group: int, mode: str = "serve") -> tuple[subprocess.Popen[str], int]:
        """A WORKER process, once registered; returns it and its worker id."""
        p = self.start("-c", WORKER, str(dom), name, str(group), mode)
        assert p.stdout is not None
        line = p.stdout.readline().split()
        assert line[:1] == ["ready"], f"worker did not start: {line}"
        return p, int(line[1])

    def cleanup(self) -> None:
        for p in self.all:
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def table(dom: mtipc.Domain) -> Iterator[mtipc.SessionTable]:
    with mtipc.SessionTable.create(dom, "t", capacity=16, max_message=64) as t:
        yield t


# ---------------------------------------------------------------------------
# The table


def test_create_open_and_refusals(dom: mtipc.Domain, dom_path: Path) -> None:
    t = mtipc.SessionTable.create(dom, "t", capacity=2, groups=3, slots=8, max_message=16, workers=4)
    assert (t.name, t.capacity, t.groups, t.slots, t.max_message, t.worker_records) == ("t", 2, 3, 8, 16, 4)
    assert (dom_path / "sessions" / "t.table").is_file()
    assert (dom_path / "sessions" / "t.requests").is_file()
    with pytest.raises(mtipc.ExistsError):
        mtipc.SessionTable.create(dom, "t")
    with pytest.raises(mtipc.NotFoundError):
        mtipc.SessionTable.open(dom, "missing")
    # An existing set keeps its capacities.
    again = mtipc.SessionTable.open_or_create(dom, "t", capacity=99)
    assert (again.capacity, again.groups) == (2, 3)
    # A session made through one handle is seen through another.
    sid = t.create_session("acme")
    assert mtipc.SessionTable.open(dom, "t").lookup(sid).tenant == "acme"

    for bad in ("", "../x", ".hidden", "a/b", "x" * 65):
        with pytest.raises(mtipc.InvalidError):
            mtipc.SessionTable.create(dom, bad)
    with pytest.raises(mtipc.InvalidError, match="2 to 64"):
        mtipc.SessionTable.create(dom, "g", groups=1)
    with pytest.raises(mtipc.InvalidError, match="out of range"):
        mtipc.SessionTable.create(dom, "c", capacity=-1)
    with pytest.raises(mtipc.InvalidError, match="out of range"):
        mtipc.SessionTable.create(dom, "c", capacity=2**40)
    with pytest.raises(mtipc.InvalidError, match="16777215"):
        mtipc.SessionTable.create(dom, "c", capacity=2**24)
    with pytest.raises(TypeError):
        mtipc.SessionTable.create(dom, "c", capacity="10")  # type: ignore[arg-type]

    with again:
        assert not again.closed
    assert again.closed
    with pytest.raises(mtipc.InvalidError, match="closed"):
        again.lookup(sid)
    again.close()  # again: nothing


def test_create_refused_by_a_symlinked_request_area_leaves_nothing(dom: mtipc.Domain, dom_path: Path) -> None:
    # The first table makes the sessions directory; then a symbolic link
    # where the second set's request area goes.
    mtipc.SessionTable.create(dom, "first").close()
    sessions = dom_path / "sessions"
    (sessions / "second.requests").symlink_to(dom_path / "elsewhere")
    with pytest.raises(mtipc.DeniedError, match="symbolic link"):
        mtipc.SessionTable.create(dom, "second")
    assert not (sessions / "second.table").exists(), "the refused create left its table"
    assert not (dom_path / "elsewhere").exists(), "the link was followed"
    # A request area that exists already: Exists, and still no table.
    (sessions / "second.requests").unlink()
    (sessions / "second.requests").write_bytes(b"x")
    with pytest.raises(mtipc.ExistsError):
        mtipc.SessionTable.create(dom, "second")
    assert not (sessions / "second.table").exists()


def test_session_operations(table: mtipc.SessionTable) -> None:
    before = time.time_ns()
    sid = table.create_session("acme", 7, b"user data")
    s = table.lookup(sid)
    assert (s.id, s.tenant, s.state, s.worker, s.in_flight, s.user) == (sid, "acme", 7, None, 0, b"user data")
    assert before <= s.created_ns == s.updated_ns <= time.time_ns()
    assert sid != 0 and table.lookup(sid) == s

    table.update(sid, 8)  # the user data stays
    s2 = table.lookup(sid)
    assert (s2.state, s2.user) == (8, b"user data") and s2.updated_ns >= s.updated_ns
    table.update(sid, 9, bytearray(b"new"))
    assert (table.lookup(sid).state, table.lookup(sid).user) == (9, b"new")
    table.update(sid, 9, b"")
    assert table.lookup(sid).user == b""

    table.bind(sid, 0x500000002)
    assert table.lookup(sid).worker == 0x500000002
    table.unbind(sid)
    assert table.lookup(sid).worker is None
    with table.register_worker(0) as w:
        table.bind(sid, w)
        assert table.lookup(sid).worker == w.id
    with pytest.raises(mtipc.InvalidError, match="unbind"):
        table.bind(sid, 0)

    other = table.create_session("globex", user=memoryview(b"m"))
    assert sorted(x.id for x in table.sessions()) == sorted([sid, other])
    assert {x.id: x for x in table.sessions()}[other] == table.lookup(other)

    with pytest.raises(AttributeError):
        s.state = 3  # type: ignore[misc]

    table.end(sid)
    for op in (table.lookup, table.end, table.unbind, lambda i: table.update(i, 1)):
        with pytest.raises(mtipc.NotFoundError):
            op(sid)
    assert [x.id for x in table.sessions()] == [other]
    for bad in (-1, 2**64):
        with pytest.raises(mtipc.InvalidError, match="out of range"):
            table.lookup(bad)
    with pytest.raises(mtipc.NotFoundError):
        table.lookup(0)
    for tenant in ("", "a b", "x" * 65):
        with pytest.raises(mtipc.InvalidError):
            table.create_session(tenant)


def test_full_table_and_stale_ids(dom: mtipc.Domain) -> None:
    t = mtipc.SessionTable.create(dom, "small", capacity=3)
    ids = [t.create_session(f"t{i}") for i in range(3)]
    with pytest.raises(mtipc.FullError):
        t.create_session("t3")
    t.end(ids[1])
    new = t.create_session("t3")
    # The same slot, another generation: the old id never resolves again.
    assert new & 0xFFFFFFFF == ids[1] & 0xFFFFFFFF and new != ids[1]
    with pytest.raises(mtipc.NotFoundError):
        t.lookup(ids[1])
    with pytest.raises(mtipc.NotFoundError):
        t.submit(ids[1], 0, b"x")
    assert t.lookup(new).tenant == "t3"
    with pytest.raises(mtipc.FullError):
        t.create_session("t4")


def test_oversized_data_is_refused_with_the_limit(table: mtipc.SessionTable) -> None:
    sid = table.create_session("acme")
    with pytest.raises(mtipc.InvalidError, match=r"\b64\b"):
        table.create_session("acme", user=b"u" * 65)
    with pytest.raises(mtipc.InvalidError, match=r"\b64\b"):
        table.update(sid, 1, b"u" * 65)
    table.create_session("acme", user=b"u" * 64)  # the limit itself is fine

    assert table.max_message == 64
    with pytest.raises(mtipc.InvalidError, match=r"\b64\b"):
        table.submit(sid, 0, b"r" * 65)
    with pytest.raises(mtipc.InvalidError, match="group 2"):
        table.submit(sid, 2, b"r")
    with table.register_worker(0) as w:
        ticket = table.submit(sid, 0, b"r" * 64)
        req = w.next(timeout=5)
        assert req is not None
        with pytest.raises(mtipc.InvalidError, match=r"\b64\b"):
            req.respond(b"a" * 65)
        # Still held: a shorter answer goes through.
        assert not req.answered and bytes(req.data) == b"r" * 64
        req.respond(b"a" * 64)
        assert ticket.wait(5) == b"a" * 64
    with pytest.raises(TypeError):
        table.submit(sid, 0, "text")  # type: ignore[arg-type]


def test_corrupt_and_truncated_files_are_refused(dom: mtipc.Domain, dom_path: Path) -> None:
    mtipc.SessionTable.create(dom, "a").close()
    table_file = dom_path / "sessions" / "a.table"
    size = table_file.stat().st_size
    private_write(table_file, b"\xa5" * 4096)
    with pytest.raises(mtipc.CorruptError):
        mtipc.SessionTable.open(dom, "a")
    private_write(table_file, b"")
    with pytest.raises(mtipc.CorruptError):
        mtipc.SessionTable.open(dom, "a")
    assert size > 4096

    mtipc.SessionTable.create(dom, "b").close()
    requests = dom_path / "sessions" / "b.requests"
    data = requests.read_bytes()
    private_write(requests, data[: len(data) // 2])
    with pytest.raises(mtipc.CorruptError):
        mtipc.SessionTable.open(dom, "b")
    # A header whose slot count (area header offset 8) disagrees with the
    # file's geometry.
    private_write(requests, data[:72] + (999).to_bytes(4, "little") + data[76:])
    with pytest.raises(mtipc.CorruptError):
        mtipc.SessionTable.open(dom, "b")
    private_write(requests, b"MTIPCREQ" + b"\xff" * 200)
    with pytest.raises(mtipc.VersionError):
        mtipc.SessionTable.open(dom, "b")


# ---------------------------------------------------------------------------
# Workers and tickets in one process


def test_request_round_trip_in_place(table: mtipc.SessionTable) -> None:
    sid = table.create_session("acme")
    w = table.register_worker(1)
    assert w.group == 1 and w.id != 0 and not w.closed
    assert w.try_next() is None
    ticket = table.submit(sid, 1, b"hello")
    assert (ticket.session, ticket.group) == (sid, 1)
    assert ticket.poll() is None
    assert table.lookup(sid).in_flight == 1

    req = w.try_next()
    assert req is not None and req.session == sid
    view = req.data
    assert isinstance(view, memoryview) and view.readonly and bytes(view) == b"hello"
    with pytest.raises(TypeError):
        view[0] = 0  # type: ignore[index]
    with pytest.raises(mtipc.InvalidError, match="unanswered"):
        w.next(timeout=0)
    req.respond(bytes(view).upper())
    assert req.answered
    with pytest.raises(ValueError, match="released"):
        bytes(view)
    with pytest.raises(mtipc.InvalidError, match="answered"):
        req.data
    with pytest.raises(mtipc.InvalidError, match="answered already"):
        req.respond(b"twice")

    assert ticket.poll() == b"HELLO"
    with pytest.raises(mtipc.InvalidError):
        ticket.wait(0)
    s = table.lookup(sid)
    assert (s.worker, s.in_flight) == (w.id, 0)
    assert w.served == 1
    assert w.next(timeout=0.05) is None
    assert table.audit() == []

    snap = table.snapshot()
    (me,) = snap["groups"][1]["workers"]
    assert (me["id"], me["pid"], me["alive"], me["served"]) == (w.id, os.getpid(), True, 1)
    assert snap["groups"][0]["workers"] == [] and snap["groups"][1]["submitted"] == 1
    assert snap["slots"]["free"] == table.slots and snap["max_message"] == 64

    w.close()
    assert w.closed and w.served == 0
    with pytest.raises(mtipc.InvalidError, match="closed"):
        w.next()
    assert list(w) == []  # iterating a closed worker ends at once
    assert table.lookup(sid).worker is None  # unregistering unbinds


def test_unanswered_requests_fail(table: mtipc.SessionTable) -> None:
    sid = table.create_session("acme")
    a = table.register_worker(0)

    # A request object dropped without an answer fails.
    ticket = table.submit(sid, 0, b"one")
    req = a.next(timeout=5)
    assert req is not None
    del req
    with pytest.raises(mtipc.UnavailableError):
        ticket.wait(5)
    assert table.lookup(sid).in_flight == 0

    # A worker closed while it holds a request (docs/session.md, "Closing a
    # worker with an open request", as mt_worker_free in C): the request
    # stays answerable, and the worker stays registered until it is
    # answered or dropped; a request of its session queued meanwhile waits.
    b = table.register_worker(0)
    ticket = table.submit(sid, 0, b"two")
    req = a.next(timeout=5) or b.next(timeout=5)
    assert req is not None
    holder, other = (a, b) if table.lookup(sid).worker == a.id else (b, a)
    holder.close()
    assert holder.closed and table.lookup(sid).worker == holder.id
    with pytest.raises(mtipc.InvalidError, match="closed"):
        holder.next(timeout=0)
    waiting = table.submit(sid, 0, b"meanwhile")
    assert other.try_next() is None  # queued to the holder, still registered
    assert bytes(req.data) == b"two"
    req.respond(b"late")
    assert ticket.wait(5) == b"late"
    # Answered: the holder is unregistered, its session unbound, and the
    # request that waited goes to the other worker.
    assert table.lookup(sid).worker is None
    moved = other.next(timeout=5)
    assert moved is not None and bytes(moved.data) == b"meanwhile"
    moved.respond(b"from the other")
    assert waiting.wait(5) == b"from the other"
    assert table.lookup(sid).worker == other.id

    # ... dropped unanswered after its worker was closed, it fails, and so
    # do the requests queued to that worker, with nobody left in the group.
    ticket = table.submit(sid, 0, b"three")
    req = other.next(timeout=5)
    assert req is not None
    other.close()
    queued = table.submit(sid, 0, b"four")
    del req
    with pytest.raises(mtipc.UnavailableError):
        ticket.wait(5)
    with pytest.raises(mtipc.UnavailableError):
        queued.wait(5)
    assert table.audit() == [] and table.lookup(sid).in_flight == 0
    assert table.snapshot()["groups"][0]["workers"] == []


def test_the_request_area_is_mapped_once_and_views_keep_it(dom: mtipc.Domain) -> None:
    # The binding reads requests where the core's mapping has them: the
    # process maps the request area once (the core's mapping), and a view
    # kept past everything else keeps that mapping alive.
    t = mtipc.SessionTable.create(dom, "once", max_message=64)
    path = os.path.realpath(os.path.join(dom.path, "sessions", "once.requests"))

    def mappings() -> int:
        return sum(line.rstrip().endswith(path) for line in Path("/proc/self/maps").read_text().splitlines())

    assert mappings() == 1
    sid = t.create_session("acme")
    w = t.register_worker(0)
    ticket = t.submit(sid, 0, b"kept in place")
    req = w.next(timeout=5)
    assert req is not None
    assert mappings() == 1
    part = req.data[5:]  # a slice lives on after respond releases req.data
    req.respond(b"ok")
    assert ticket.wait(5) == b"ok"
    w.close()
    t.close()
    del req, ticket, w, t
    assert bytes(part) == b"in place"
    assert mappings() == 1  # kept by the view alone
    del part
    assert mappings() == 0


def test_a_dropped_ticket_withdraws_its_request(table: mtipc.SessionTable) -> None:
    sid = table.create_session("acme")
    with table.register_worker(0) as w:
        t = table.submit(sid, 0, b"x")
        assert table.lookup(sid).in_flight == 1
        del t
        assert w.next(timeout=0.3) is None
        assert table.lookup(sid).in_flight == 0
        assert table.snapshot()["slots"]["free"] == table.slots


# ---------------------------------------------------------------------------
# Threads and signals


def thread_sleeping(t: threading.Thread) -> bool:
    """Whether thread `t` of this process sleeps in the kernel (state S),
    not running Python code."""
    stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "S"


def test_the_gil_is_released_while_a_worker_waits(table: mtipc.SessionTable) -> None:
    sid = table.create_session("acme")
    w = table.register_worker(0)
    got: list[bytes] = []

    def serve() -> None:
        req = w.next(timeout=20)
        assert req is not None
        got.append(bytes(req.data))
        req.respond(b"served by the thread")

    t = threading.Thread(target=serve)
    start = time.monotonic()
    t.start()
    # This thread runs Python while the other waits in next(): it would be
    # stuck until next() returned (20 s) if the wait held the GIL.
    wait_until(lambda: thread_sleeping(t), what="the worker thread to sleep")
    n, spin = 0, time.monotonic()
    while time.monotonic() - spin < 0.3:
        n += 1
    assert n > 1000 and t.is_alive() and not got
    assert table.submit(sid, 0, b"from main").wait(10) == b"served by the thread"
    t.join(10)
    assert got == [b"from main"] and time.monotonic() - start < 10


def test_the_gil_is_released_while_a_ticket_waits(table: mtipc.SessionTable) -> None:
    sid = table.create_session("acme")
    w = table.register_worker(0)
    ticket = table.submit(sid, 0, b"q")
    answers: list[bytes] = []
    t = threading.Thread(target=lambda: answers.append(ticket.wait(20)))
    t.start()
    wait_until(lambda: thread_sleeping(t), what="the waiting thread to sleep")
    time.sleep(0.3)
    req = w.next(timeout=5)  # this thread serves meanwhile
    assert req is not None and t.is_alive() and not answers
    req.respond(b"a")
    t.join(10)
    assert answers == [b"a"]


@pytest.fixture
def sigint_in() -> Iterator[object]:
    """Sends this process SIGINT after a delay, with Python's default
    handler (KeyboardInterrupt) in place."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timers: list[threading.Timer] = []

    def arm(delay: float) -> None:
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
        timers.append(timer)
        timer.start()

    try:
        yield arm
    finally:
        for timer in timers:
            timer.join()
        signal.signal(signal.SIGINT, old)


def test_ctrl_c_interrupts_worker_next_and_ticket_wait(table: mtipc.SessionTable, sigint_in) -> None:  # type: ignore[no-untyped-def]
    sid = table.create_session("acme")
    w = table.register_worker(0)

    start = time.monotonic()
    sigint_in(0.3)
    with pytest.raises(KeyboardInterrupt):
        w.next()
    assert 0.25 < time.monotonic() - start < 2

    # Queued for this process's worker, which does not take it: the ticket
    # waits (the group has a live worker) until Ctrl-C ...
    ticket = table.submit(sid, 0, b"q")
    start = time.monotonic()
    sigint_in(0.3)
    with pytest.raises(KeyboardInterrupt):
        ticket.wait()
    assert 0.25 < time.monotonic() - start < 2
    # ... and neither the worker nor the ticket lost anything.
    req = w.next(timeout=5)
    assert req is not None and bytes(req.data) == b"q"
    req.respond(b"after ctrl-c")
    assert ticket.wait(5) == b"after ctrl-c"


# ---------------------------------------------------------------------------
# Workers in other processes


def test_workers_in_other_processes_and_sticky_sessions(dom: mtipc.Domain, dom_path: Path, procs: Procs) -> None:
    t = mtipc.SessionTable.create(dom, "t")
    g1 = [procs.worker(dom_path, "t", 1) for _ in range(2)]
    g0 = [procs.worker(dom_path, "t", 0)]
    ids = {1: {i for _, i in g1}, 0: {i for _, i in g0}}
    pids = {1: {p.pid for p, _ in g1}, 0: {p.pid for p, _ in g0}}
    sessions = [(t.create_session(f"tenant{i}"), i % 2) for i in range(6)]

    served: dict[int, set[int]] = {s: set() for s, _ in sessions}
    for rnd in range(8):
        tickets = [(s, t.submit(s, g, f"r{rnd}".encode())) for s, g in sessions]
        for s, tk in tickets:
            pid, _, body = tk.wait(10).partition(b":")
            assert body == f"r{rnd}".encode()
            served[s].add(int(pid))
    for s, g in sessions:
        # Every request of a session went to one worker of its group, the
        # one the session is bound to.
        assert len(served[s]) == 1 and served[s] <= pids[g], (s, served[s])
        info = t.lookup(s)
        assert info.worker in ids[g] and info.in_flight == 0
    assert t.audit() == []
    snap = t.snapshot()
    assert {w["pid"] for w in snap["groups"][1]["workers"]} == pids[1]
    assert sum(w["served"] for w in snap["groups"][0]["workers"]) == 3 * 8


def test_a_worker_killed_mid_request_is_replaced_by_its_group(dom: mtipc.Domain, dom_path: Path, procs: Procs) -> None:
    t = mtipc.SessionTable.create(dom, "t")
    hanger, hang_id = procs.worker(dom_path, "t", 1, "hang")
    survivor, survivor_id = procs.worker(dom_path, "t", 1)
    sid = t.create_session("acme")
    t.bind(sid, hang_id)  # so that the request goes to the worker that hangs
    ticket = t.submit(sid, 1, b"work")
    assert hanger.stdout is not None
    assert hanger.stdout.readline().split() == ["took", str(sid)]
    assert t.lookup(sid).in_flight == 1
    hanger.kill()
    hanger.wait()

    assert ticket.wait(10) == f"{survivor.pid}:work".encode()
    s = t.lookup(sid)
    assert (s.worker, s.in_flight) == (survivor_id, 0)
    assert t.audit() == []
    snap = t.snapshot()
    assert [w["id"] for w in snap["groups"][1]["workers"]] == [survivor_id]
    assert snap["groups"][1]["requeued"] == 1 and snap["slots"]["free"] == t.slots
    # The session stays with the survivor.
    assert t.submit(sid, 1, b"next").wait(10) == f"{survivor.pid}:next".encode()


def test_a_worker_killed_mid_request_with_no_other_fails_it(dom: mtipc.Domain, dom_path: Path, procs: Procs) -> None:
    t = mtipc.SessionTable.create(dom, "t")
    hanger, _ = procs.worker(dom_path, "t", 1, "hang")
    sid = t.create_session("acme")
    ticket = t.submit(sid, 1, b"work")
    assert hanger.stdout is not None
    assert hanger.stdout.readline().split() == ["took", str(sid)]
    hanger.kill()
    hanger.wait()
    start = time.monotonic()
    with pytest.raises(mtipc.UnavailableError, match="no live worker"):
        ticket.wait(10)
    assert time.monotonic() - start < 3
    assert t.lookup(sid).in_flight == 0 and t.lookup(sid).worker is None
    assert t.audit() == []
    snap = t.snapshot()
    assert snap["groups"][1]["failed"] == 1 and snap["slots"]["free"] == t.slots
    # A later request for an empty group fails the same way.
    with pytest.raises(mtipc.UnavailableError):
        t.submit(sid, 1, b"again").wait(10)


# ---------------------------------------------------------------------------
# The demo's examples


def test_manager_and_python_workers_with_one_killed_mid_load(dom_path: Path, procs: Procs) -> None:
    mtipc.SessionTable.create(mtipc.Domain(dom_path), "demo").close()
    workers = [
        procs.start(str(EXAMPLES / "py_worker.py"), str(dom_path), "demo", "1", "--delay", "0.005") for _ in range(3)
    ]
    for w in workers:
        assert w.stdout is not None and "ready" in w.stdout.readline()
    manager = procs.start(
        str(EXAMPLES / "py_manager.py"), str(dom_path), "demo",
        "--groups", "1", "--sessions", "6", "--requests", "300", "--pace", "0.005", "--strict",
    )  # fmt: skip
    assert manager.stdout is not None
    # Kill the worker that serves the first session, once it has.
    lines = []
    for line in manager.stdout:
        lines.append(line)
        m = re.search(r"served by worker pid (\d+)", line)
        if m:
            victim = next(w for w in workers if w.pid == int(m.group(1)))
            victim.kill()
            break
    out = "".join(lines) + manager.stdout.read()
    assert manager.wait(60) == 0, out
    assert "answered 300, failed 0, lost 0, wrong 0" in out, out
    assert f"MOVED from pid {victim.pid} to pid" in out, out
    # The survivors stop on SIGTERM, saying how many they served.
    for w in workers:
        if w is not victim:
            w.send_signal(signal.SIGTERM)
            assert w.wait(10) == 0
            assert w.stdout is not None
            assert re.search(r"stopping after \d+ requests", w.stdout.read())


def test_manager_reports_requests_no_worker_took(dom_path: Path) -> None:
    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(EXAMPLES / "py_manager.py"), str(dom_path), "empty", "--requests", "3", *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "answered 0, failed 3, lost 0, wrong 0" in r.stdout
    assert r.stdout.count("UnavailableError") == 3
    r = run("--strict")
    assert r.returncode == 1 and "failed 3" in r.stdout


def test_the_session_examples_check_strictly(tmp_path: Path) -> None:
    require_module("mypy", "make venv installs it")
    env = dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / ".mypy_cache"))
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(EXAMPLES / "py_worker.py"), str(EXAMPLES / "py_manager.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
