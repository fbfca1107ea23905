"""Permits for gateway volumes: Domain.create_volume / volumes / permit /
permit_status and the Permit class (DESIGN.md section 3).

Volumes are kept in this host's shared memory (the etcd backend is only
checked to be refused or unreachable here). A holder process is this
Python run as a subprocess, killed with SIGKILL.
"""

from __future__ import annotations

import os
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

# A process that takes a write permit on argv[2] of volume "gw" of domain
# argv[1], says "held <token>", and sleeps until killed.
HOLDER = textwrap.dedent(
    """
    import sys, time
    import mtipc

    d = mtipc.Domain(sys.argv[1])
    p = d.permit("gw", sys.argv[2], "write", timeout=10)
    print("held", p.token, flush=True)
    time.sleep(120)
    """
)


@pytest.fixture
def vol(tmp_path: Path) -> Path:
    """A volume directory (mode 0700)."""
    v = tmp_path / "vol"
    v.mkdir(mode=0o700)
    return v


@pytest.fixture
def gw(dom: mtipc.Domain, vol: Path) -> mtipc.Domain:
    """The domain with volume "gw" on `vol` (default lease, no cap)."""
    dom.create_volume("gw", vol)
    return dom


def arbiter_maps(dom_path: Path) -> int:
    """How many mappings of volume gw's arbiter region of the domain at
    `dom_path` this process has."""
    region = str(dom_path / "volumes" / "gw.arbiter")
    return sum(1 for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(region))


class Holder:
    """A subprocess holding a write permit (see HOLDER)."""

    def __init__(self, dom_path: Path, path: str, cwd: Path) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(dom_path), path],
            cwd=cwd,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.p.stdout is not None
        line = self.p.stdout.readline().split()
        assert line[:1] == ["held"], f"holder did not start: {line}"
        self.token = int(line[1])

    def kill9(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def close(self) -> None:
        if self.p.poll() is None:
            self.kill9()
        if self.p.stdout is not None:
            self.p.stdout.close()


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[Holder]]:
    made: list[Holder] = []
    try:
        yield made
    finally:
        for h in made:
            h.close()


# ---------------------------------------------------------------------------
# Volumes


def test_create_and_list_volumes(dom: mtipc.Domain, vol: Path, tmp_path: Path) -> None:
    rec = dom.create_volume("gw", vol, max_transfers=4, lease_ms=1500)
    assert rec == {
        "name": "gw",
        "dir": str(vol),
        "max_transfers": 4,
        "lease_ms": 1500,
        "etcd": None,
    }
    # A relative directory is taken from the current one; a pathlib.Path,
    # str or bytes will do.
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        remote = dom.create_volume("remote", b"vol", etcd="http://127.0.0.1:2379")
    finally:
        os.chdir(cwd)
    assert remote["dir"] == str(vol)
    assert remote["lease_ms"] == 30000 and remote["max_transfers"] == 0
    assert remote["etcd"] == "http://127.0.0.1:2379"
    assert dom.volumes() == [rec, remote]
    assert (Path(dom.path) / "volumes" / "gw.volume").is_file()


def test_bad_volumes_are_refused(dom: mtipc.Domain, vol: Path, tmp_path: Path) -> None:
    dom.create_volume("gw", vol)
    with pytest.raises(mtipc.ExistsError, match="exists already"):
        dom.create_volume("gw", vol)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(mtipc.DeniedError, match="mode 0777"):
        dom.create_volume("open", open_dir)
    with pytest.raises(mtipc.InvalidError):
        dom.create_volume("v", vol, lease_ms=1)
    with pytest.raises(mtipc.InvalidError):
        dom.create_volume("v", vol, max_transfers=-1)
    with pytest.raises(mtipc.InvalidError):
        dom.create_volume("v", vol, max_transfers=5000)
    with pytest.raises(mtipc.InvalidError):
        dom.create_volume("v", vol, etcd="ftp://host:1")
    with pytest.raises(mtipc.InvalidError):
        dom.create_volume("bad name", vol)
    with pytest.raises(mtipc.NotFoundError):
        dom.create_volume("v", tmp_path / "missing")
    with pytest.raises(TypeError):
        dom.create_volume("v", vol, lease_ms="soon")  # type: ignore[arg-type]
    assert [v["name"] for v in dom.volumes()] == ["gw"]


def test_unknown_volume_and_closed_domain(dom_path: Path, vol: Path) -> None:
    d = mtipc.Domain(dom_path)
    with pytest.raises(mtipc.NotFoundError, match="no volume nope"):
        d.permit("nope", "x", "write", timeout=0)
    with pytest.raises(mtipc.NotFoundError):
        d.permit_status("nope")
    d.create_volume("gw", vol)
    p = d.permit("gw", "x", "write", timeout=0)
    d.close()
    for call in (
        lambda: d.permit("gw", "y", "write", timeout=0),
        lambda: d.permit_status("gw"),
        lambda: d.volumes(),
        lambda: d.create_volume("v2", vol),
    ):
        with pytest.raises(mtipc.InvalidError, match="closed"):
            call()
    # A permit outlives its domain object.
    p.renew()
    assert not p.released
    p.release()


# ---------------------------------------------------------------------------
# Requests


def test_grant_and_release_with_with(gw: mtipc.Domain) -> None:
    with gw.permit("gw", "a/b.txt", "write", timeout=0) as p:
        assert isinstance(p, mtipc.Permit)
        assert (p.token, p.volume, p.path, p.mode) == (1, "gw", "a/b.txt", "write")
        assert p.lease_ms == 30000
        assert not p.released
        assert "token=1" in repr(p)
        st = gw.permit_status("gw")
        assert [(h["path"], h["token"], h["mode"]) for h in st["holders"]] == [
            ("a/b.txt", 1, "write")
        ]
        assert st["holders"][0]["instance"]["pid"] == os.getpid()
    assert p.released and "(released)" in repr(p)
    assert gw.permit_status("gw")["holders"] == []
    # Released: every use is InvalidError; release again does nothing.
    for call in (p.renew, lambda: p.put("/dev/null"), lambda: p.get("x")):
        with pytest.raises(mtipc.InvalidError, match="released"):
            call()
    p.release()
    with pytest.raises(mtipc.InvalidError):
        with p:
            pass
    # The token is kept; the next grant has a larger one.
    with gw.permit("gw", "a/b.txt", mtipc.PERMIT_READ, timeout=0) as r:
        assert r.token == 2 and r.mode == "read"
    # An exception in the block propagates, and the permit is released.
    with pytest.raises(RuntimeError):
        with gw.permit("gw", "a/b.txt", mtipc.PERMIT_WRITE) as w:
            raise RuntimeError("boom")
    assert w.released


def test_reads_share_and_writes_exclude(gw: mtipc.Domain) -> None:
    r1 = gw.permit("gw", "f", "read", timeout=0)
    r2 = gw.permit("gw", "f", "read", timeout=0)
    assert r1.token < r2.token
    with pytest.raises(mtipc.DeferredError) as e:
        gw.permit("gw", "f", "write", timeout=0)
    assert e.value.status_name == "MT_ERR_DEFERRED"
    other = gw.permit("gw", "g", "write", timeout=0)
    r1.release()
    r2.release()
    w = gw.permit("gw", "f", "write", timeout=0)
    assert w.token > other.token
    w.release()
    other.release()


def test_deferred_and_timeout_leave_no_trace(gw: mtipc.Domain) -> None:
    held = gw.permit("gw", "x", "write", timeout=0)
    with pytest.raises(mtipc.DeferredError):
        gw.permit("gw", "x", "write", timeout=0)
    for timeout in (0.05, 0.3):  # inline, and on a thread of its own
        t = time.monotonic()
        with pytest.raises(mtipc.TimeoutError):
            gw.permit("gw", "x", "read", timeout=timeout)
        assert time.monotonic() - t >= timeout
        assert gw.permit_status("gw")["queue"] == []
    held.release()
    with pytest.raises(mtipc.InvalidError, match="timeout"):
        gw.permit("gw", "x", "write", timeout=-1)


def test_a_waiter_is_granted_on_release_with_the_gil_released(gw: mtipc.Domain) -> None:
    held = gw.permit("gw", "x", "write", timeout=0)
    got: list[int] = []

    def wait() -> None:
        with gw.permit("gw", "x", "write", timeout=10) as p:
            got.append(p.token)

    t = threading.Thread(target=wait)
    t.start()
    deadline = time.monotonic() + 10
    # This thread runs while the other waits: the GIL is released.
    while not gw.permit_status("gw")["queue"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    q = gw.permit_status("gw")["queue"]
    assert [(w["path"], w["mode"], w["instance"]["pid"]) for w in q] == [
        ("x", "write", os.getpid())
    ]
    held.release()
    t.join(10)
    assert got == [held.token + 1]


def test_the_queue_is_shown_in_grant_order(gw: mtipc.Domain, vol: Path) -> None:
    gw.create_volume("one", vol, max_transfers=1)
    gate = gw.permit("one", "gate", "write", timeout=0)
    threads = []
    for k in range(3):
        t = threading.Thread(target=lambda k=k: gw.permit("one", f"a-{k}", "write", timeout=10).release())
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 10
        while len(gw.permit_status("one")["queue"]) < k + 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    st = gw.permit_status("one")
    assert [w["path"] for w in st["queue"]] == ["a-0", "a-1", "a-2"]
    gate.release()
    for t in threads:
        t.join(10)
    st = gw.permit_status("one")
    assert st["queue"] == [] and st["last_token"] == 4
    assert [(g["instance"]["pid"], g["grants"]) for g in st["grants"]] == [(os.getpid(), 4)]


def test_bad_paths_and_modes_are_invalid(gw: mtipc.Domain) -> None:
    for bad in ("/etc/passwd", "../x", "a/../../x", "", "a//b", "x" * 401):
        with pytest.raises(mtipc.InvalidError):
            gw.permit("gw", bad, "write", timeout=0)
    for mode in ("append", "READ", ""):
        with pytest.raises(mtipc.InvalidError, match="mode"):
            gw.permit("gw", "x", mode, timeout=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        gw.permit("gw", "x", 2, timeout=0)  # type: ignore[arg-type]
    assert gw.permit_status("gw")["last_token"] == 0


def test_an_interrupted_wait_gives_the_request_up(gw: mtipc.Domain) -> None:
    held = gw.permit("gw", "x", "write", timeout=0)

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.start()
        t = time.monotonic()
        with pytest.raises(Interrupted):
            gw.permit("gw", "x", "write", timeout=30)
        assert time.monotonic() - t < 5
        timer.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    # The request still waits on its thread; granted, it is released at
    # once, so the path is free again for the next request.
    held.release()
    with gw.permit("gw", "x", "write", timeout=10) as p:
        assert p.token == held.token + 2
    st = gw.permit_status("gw")
    assert st["holders"] == [] and st["queue"] == []


def test_one_volume_is_opened_once_per_domain_object(gw: mtipc.Domain, dom_path: Path) -> None:
    assert arbiter_maps(dom_path) == 0
    for _ in range(5):
        gw.permit("gw", "x", "write", timeout=0).release()
        gw.permit_status("gw")
    assert arbiter_maps(dom_path) == 1
    with mtipc.Domain(dom_path) as other:
        other.permit("gw", "x", "read", timeout=0).release()
        assert arbiter_maps(dom_path) == 2
    assert arbiter_maps(dom_path) == 1
    gw.close()
    assert arbiter_maps(dom_path) == 0


# ---------------------------------------------------------------------------
# Transfers


def test_put_and_get_copy_whole_files(gw: mtipc.Domain, vol: Path, tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    with gw.permit("gw", "rec/2026/call.wav", "write", timeout=0) as p:
        assert p.put(src) == len(data)
        assert (vol / "rec/2026/call.wav").read_bytes() == data
        back = tmp_path / "back.bin"
        assert p.get(str(back)) == len(data)
        assert back.read_bytes() == data
    with gw.permit("gw", "rec/2026/call.wav", "read", timeout=0) as r:
        again = tmp_path / "again.bin"
        assert r.get(os.fsencode(again)) == len(data)
        assert again.read_bytes() == data
        # A put needs a write permit: nothing is written.
        src.write_bytes(b"other")
        with pytest.raises(mtipc.InvalidError, match="write permit"):
            r.put(src)
        assert (vol / "rec/2026/call.wav").read_bytes() == data
    # A missing source, a get of a missing file.
    with gw.permit("gw", "none", "write", timeout=0) as p:
        with pytest.raises(mtipc.NotFoundError):
            p.put(tmp_path / "missing")
        with pytest.raises(mtipc.NotFoundError):
            p.get(tmp_path / "out")
    assert sorted(n for n in os.listdir(vol / "rec/2026")) == ["call.wav"]


def test_a_permit_whose_lease_ran_out_is_fenced(dom: mtipc.Domain, vol: Path, tmp_path: Path) -> None:
    dom.create_volume("gw", vol, lease_ms=100)
    src = tmp_path / "src"
    src.write_bytes(b"first")
    p = dom.permit("gw", "f", "write", timeout=0)
    assert p.lease_ms == 100
    assert p.put(src) == 5
    p.renew()
    time.sleep(0.3)
    src.write_bytes(b"late bytes")
    with pytest.raises(mtipc.FencedError) as e:
        p.put(src)
    assert (e.value.status, e.value.status_name) == (14, "MT_ERR_FENCED")
    with pytest.raises(mtipc.FencedError):
        p.renew()
    with pytest.raises(mtipc.FencedError):
        p.get(tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    assert (vol / "f").read_bytes() == b"first"
    assert os.listdir(vol) == ["f"], "no temporary file left"
    st = dom.permit_status("gw")
    assert st["holders"] == []
    assert [(r["token"], r["path"], r["reason"]) for r in st["reclaimed"]] == [(p.token, "f", "expired")]
    assert st["reclaimed"][0]["instance"]["pid"] == os.getpid()
    # Someone else may write it now; releasing the lost permit is harmless.
    with dom.permit("gw", "f", "write", timeout=0) as q:
        assert q.token > p.token
    p.release()


# ---------------------------------------------------------------------------
# Processes


def test_a_killed_holder_is_reclaimed(
    gw: mtipc.Domain, dom_path: Path, tmp_path: Path, holders: list[Holder]
) -> None:
    h = Holder(dom_path, "rec/x.wav", tmp_path)
    holders.append(h)
    st = gw.permit_status("gw")
    assert [(x["instance"]["pid"], x["token"], x["path"]) for x in st["holders"]] == [
        (h.p.pid, h.token, "rec/x.wav")
    ]
    with pytest.raises(mtipc.DeferredError):
        gw.permit("gw", "rec/x.wav", "write", timeout=0)
    h.kill9()
    t = time.monotonic()
    with gw.permit("gw", "rec/x.wav", "write", timeout=0) as p:
        assert p.token == h.token + 1
    assert time.monotonic() - t < 1
    st = gw.permit_status("gw")
    assert len(st["reclaimed"]) == 1
    r = st["reclaimed"][0]
    assert (r["instance"]["pid"], r["token"], r["path"], r["reason"]) == (
        h.p.pid,
        h.token,
        "rec/x.wav",
        "dead",
    )
    assert r["instance"]["start"] > 0 and r["instance"]["host"] == ""


def test_a_waiter_gets_the_permit_of_a_killed_holder(
    gw: mtipc.Domain, dom_path: Path, tmp_path: Path, holders: list[Holder]
) -> None:
    h = Holder(dom_path, "x", tmp_path)
    holders.append(h)
    timer = threading.Timer(0.2, h.kill9)
    timer.start()
    t = time.monotonic()
    with gw.permit("gw", "x", "write", timeout=10) as p:
        assert p.token == h.token + 1
    timer.join()
    assert time.monotonic() - t < 5


def test_an_etcd_volume_is_unavailable_without_a_server(dom: mtipc.Domain, vol: Path) -> None:
    # Port 1 on loopback: nothing listens (and this build may have no etcd
    # backend at all); either way the request fails at once.
    dom.create_volume("remote", vol, etcd="http://127.0.0.1:1")
    t = time.monotonic()
    with pytest.raises(mtipc.UnavailableError):
        dom.permit("remote", "x", "write", timeout=0)
    assert time.monotonic() - t < 5


def test_the_mode_constants() -> None:
    assert (mtipc.PERMIT_READ, mtipc.PERMIT_WRITE) == ("read", "write")
