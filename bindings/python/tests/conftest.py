"""Shared fixtures: a fresh domain path, and waiter processes.

The tests import the installed ``mtipc`` (the wheel that ``make python`` puts
into .venv), never the source tree: run them from the repository root.

Skips are never silent: every skipped test is also written to the file
``$MTIPC_SKIP_LOG`` when it is set (``make test`` lists it in its summary),
and with ``MTIPC_TEST_STRICT=1`` (set by make) a test that lacks a tool it
needs fails instead (``require_module``).
"""

from __future__ import annotations

import ctypes
import importlib
import mmap
import os
import platform
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest

import mtipc

# A process that opens the domain, says "ready", then blocks in sem_wait.
# Exit status: 0 woken by a post, 3 timed out.
WAITER = textwrap.dedent(
    """
    import sys
    import mtipc

    d = mtipc.Domain(sys.argv[1])
    print("ready", flush=True)
    try:
        d.sem_wait(timeout=float(sys.argv[2]))
    except mtipc.TimeoutError:
        sys.exit(3)
    """
)

# futex(2)'s number, to see in /proc/PID/syscall that a process is blocked.
FUTEX_SYSCALL = {"x86_64": 202, "aarch64": 98}.get(platform.machine())


STRICT = os.environ.get("MTIPC_TEST_STRICT") == "1"


def require_module(name: str, why: str) -> ModuleType:
    """Imports module `name`, which a test needs. Missing, it skips the test
    (or the whole file, called at module level), or under make
    (MTIPC_TEST_STRICT=1) fails it: there a missing tool is a broken
    setup, not a reason to test less."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        msg = f"{name} is not installed ({why}): {e}"
        if STRICT:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg, allow_module_level=True)


def _log_skip(nodeid: str, longrepr: object) -> None:
    path = os.environ.get("MTIPC_SKIP_LOG")
    if not path:
        return
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    reason = str(reason).removeprefix("Skipped: ")
    with open(path, "a") as f:
        f.write(f"python {nodeid}: {reason}\n")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _log_skip(report.nodeid, report.longrepr)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        _log_skip(report.nodeid, report.longrepr)


# The futex(2) operation that wakes sleepers; the semaphore's count sits 64
# bytes into notify.sem.
FUTEX_WAKE = 1
SEM_COUNT_OFFSET = 64


def wake_sleepers(dom_path: Path) -> int:
    """Wakes every process asleep on the domain's semaphore word and returns
    how many the kernel woke, i.e. how many sleepers its queue held. A
    sleeper woken so finds the count as it was and sleeps again (to it, one
    more spurious wake-up). Right after a post that must wake them this is
    0: a sleeper the post missed stays queued until its 250 ms re-check,
    which a timing check could not tell apart on a loaded machine."""
    assert FUTEX_SYSCALL is not None, f"futex(2) number unknown on {platform.machine()}"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    with open(dom_path / "notify.sem", "r+b") as f, mmap.mmap(f.fileno(), 128) as m:
        buf = (ctypes.c_char * 128).from_buffer(m)
        try:
            addr = ctypes.addressof(buf) + SEM_COUNT_OFFSET
            n = libc.syscall(
                ctypes.c_long(FUTEX_SYSCALL),
                ctypes.c_void_p(addr),
                ctypes.c_int(FUTEX_WAKE),
                ctypes.c_int(0x7FFFFFFF),
                None,
                None,
                ctypes.c_int(0),
            )
        finally:
            del buf
    assert n >= 0, f"futex wake: errno {ctypes.get_errno()}"
    return int(n)


@pytest.fixture
def dom_path(tmp_path: Path) -> Path:
    """Where a fresh domain may be created (the directory does not exist yet)."""
    return tmp_path / "dom"


@pytest.fixture
def dom(dom_path: Path) -> Iterator[mtipc.Domain]:
    """A freshly created, open domain."""
    with mtipc.Domain(dom_path) as d:
        yield d


def sem_words(pid: int) -> set[int]:
    """Addresses of the semaphore words in the process's mappings of a
    notify.sem (the count sits 64 bytes into the region)."""
    words = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].endswith("/notify.sem"):
            words.add(int(fields[0].split("-")[0], 16) + 64)
    return words


def waiting_on_sem(pid: int, tid: int | None = None) -> bool:
    """Whether the process (or its thread `tid`) is blocked in futex(2) on a
    domain semaphore, as /proc tells (not merely waiting for the GIL).
    Where /proc/PID/syscall cannot be read, a sleeping state must do."""
    proc = Path(f"/proc/{pid}") if tid is None else Path(f"/proc/{pid}/task/{tid}")
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] != "S":
        return False
    try:
        call = (proc / "syscall").read_text().split()
    except OSError:
        call = []
    if FUTEX_SYSCALL is None or len(call) < 2:
        return True
    return call[0] == str(FUTEX_SYSCALL) and int(call[1], 16) in sem_words(pid)


def thread_waiting(t: threading.Thread) -> bool:
    """Whether thread `t` of this process is blocked on a domain semaphore."""
    assert t.native_id is not None
    return waiting_on_sem(os.getpid(), t.native_id)


class Waiters:
    """Starts waiter processes on a domain and cleans up after the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path  # not the source tree, so the wheel is imported
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, path: Path, count: int, timeout: float = 30.0) -> list[subprocess.Popen[str]]:
        """Starts `count` waiters and returns once every one is blocked."""
        started = [
            subprocess.Popen(
                [sys.executable, "-c", WAITER, str(path), str(timeout)],
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]
        self.procs += started
        for p in started:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", "a waiter failed to start"
        deadline = time.monotonic() + 10
        while not all(waiting_on_sem(p.pid) for p in started):
            assert time.monotonic() < deadline, "waiters never blocked in sem_wait"
            time.sleep(0.01)
        return started

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


@pytest.fixture
def waiters(tmp_path: Path) -> Iterator[Waiters]:
    w = Waiters(tmp_path)
    try:
        yield w
    finally:
        w.cleanup()


def exited(procs: list[subprocess.Popen[str]]) -> list[subprocess.Popen[str]]:
    return [p for p in procs if p.poll() is not None]


def wait_until(cond, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def domain_files(path: Path) -> dict[str, bytes]:
    """The domain's files and contents (to check that a refusal left it alone)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def private_write(path: Path, data: bytes) -> None:
    """Replaces `path` with an owner-only file holding `data`."""
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
