"""mtipc.ha, the HA hooks: outside supervision every call does nothing;
under supervision, with this test as a fake HA Monitor (a SOCK_SEQPACKET
socket speaking the protocol of docs/ha.md) and the application a real
Python process: the role at registration and on change, ready, heartbeats,
health polled and answered by the callback (an exception is unhealthy),
the Monitor going away (UnavailableError, the role kept) and a new Monitor
at the same path (reconnection, ready said again)."""

from __future__ import annotations

import os
import queue
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import mtipc
import mtipc.ha as ha

APP = textwrap.dedent(
    """
    import os, sys, time
    import mtipc, mtipc.ha as ha

    d = sys.argv[1]
    def out(s):
        print(s, flush=True)

    def health():
        if os.path.exists(os.path.join(d, "raise")):
            raise RuntimeError("the check itself failed")
        return not os.path.exists(os.path.join(d, "sick"))

    sys.unraisablehook = lambda u: out(f"unraisable {type(u.exc_value).__name__}")
    out(f"supervised {ha.supervised()}")
    ha.on_role(lambda r, e: out(f"role {r.name} {e} {type(r).__name__}"))
    ha.set_health(health)
    ha.ready()
    out("ready ok")
    last = None
    while not os.path.exists(os.path.join(d, "stop")):
        try:
            ha.heartbeat()
            now = "ok"
        except mtipc.UnavailableError:
            now = "unavailable"
        if now != last:
            r, e = ha.role()
            out(f"heartbeat {now} ({r.name} {e})")
            last = now
        time.sleep(0.01)
    out("done")
    """
)


def test_outside_supervision_does_nothing() -> None:
    code = textwrap.dedent(
        """
        import mtipc.ha as ha
        calls = []
        assert not ha.supervised()
        ha.on_role(lambda r, e: calls.append((r, e)))
        ha.set_health(lambda: False)
        ha.ready()
        ha.heartbeat()
        ha.on_role(None)
        ha.set_health(None)
        assert ha.role() == (ha.Role.NONE, 0), ha.role()
        assert calls == [], calls
        print("outside ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "MTIPC_HA_SOCKET"}
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "outside ok\n"


def test_role_values_match_c() -> None:
    assert [int(r) for r in ha.Role] == [0, 1, 2]
    assert ha.Role(1) is ha.Role.ACTIVE
    assert mtipc.ha is ha


class App:
    """The application process and its stdout lines."""

    def __init__(self, sock: Path, d: Path) -> None:
        env = dict(os.environ, MTIPC_HA_SOCKET=str(sock))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", APP, str(d)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        out = self.proc.stdout

        def read() -> None:
            for line in out:
                self.lines.put(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()

    def wait_for(self, line: str) -> None:
        while line not in self.seen:
            try:
                self.seen.append(self.lines.get(timeout=10))
            except queue.Empty:
                raise AssertionError(f"no {line!r} in 10 s; the app said {self.seen}")


def listen(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(str(path))
    s.listen(4)
    s.settimeout(10)
    return s


def accept(srv: socket.socket, pid: int, role: bytes) -> socket.socket:
    """Accepts the app, checks its hello and credentials, answers `role`."""
    conn, _ = srv.accept()
    conn.settimeout(10)
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    assert struct.unpack("3i", creds)[0] == pid
    hello = conn.recv(128).decode()
    assert hello.startswith(f"hello 1 {pid} "), hello
    conn.send(role)
    return conn


def recv_skipping_heartbeats(conn: socket.socket) -> bytes:
    while True:
        m = conn.recv(128)
        if m != b"heartbeat":
            return m


def test_hooks_under_a_fake_monitor(tmp_path: Path) -> None:
    sock = tmp_path / "ha.sock"
    srv = listen(sock)
    app = App(sock, tmp_path)
    try:
        conn = accept(srv, app.proc.pid, b"role active 1")
        # set_health says the Monitor may poll it; then ready.
        assert conn.recv(128) == b"polls on"
        assert conn.recv(128) == b"ready"
        app.wait_for("supervised True")
        app.wait_for("role ACTIVE 1 Role")
        app.wait_for("ready ok")
        app.wait_for("heartbeat ok (ACTIVE 1)")

        conn.send(b"health? 1")
        assert recv_skipping_heartbeats(conn) == b"health 1 ok"
        (tmp_path / "sick").touch()
        conn.send(b"health? 2")
        assert recv_skipping_heartbeats(conn) == b"health 2 fail"
        (tmp_path / "raise").touch()
        conn.send(b"health? 3")
        assert recv_skipping_heartbeats(conn) == b"health 3 fail"
        app.wait_for("unraisable RuntimeError")
        (tmp_path / "raise").unlink()
        (tmp_path / "sick").unlink()

        conn.send(b"role standby 2")
        app.wait_for("role STANDBY 2 Role")

        # The Monitor goes away: heartbeats fail, the role stays.
        conn.close()
        srv.close()
        sock.unlink()
        app.wait_for("heartbeat unavailable (STANDBY 2)")

        # A new Monitor at the same path: the app reconnects by itself and
        # says ready again; the same role is not delivered twice.
        srv = listen(sock)
        conn = accept(srv, app.proc.pid, b"role standby 2")
        assert recv_skipping_heartbeats(conn) == b"ready"
        assert recv_skipping_heartbeats(conn) == b"polls on"
        app.wait_for("heartbeat ok (STANDBY 2)")
        conn.send(b"health? 4")
        assert recv_skipping_heartbeats(conn) == b"health 4 ok"
        conn.send(b"role active 3")
        app.wait_for("role ACTIVE 3 Role")
        (tmp_path / "stop").touch()
        app.wait_for("done")
        assert app.proc.wait(timeout=10) == 0
        roles = [line for line in app.seen if line.startswith("role ")]
        assert roles == ["role ACTIVE 1 Role", "role STANDBY 2 Role", "role ACTIVE 3 Role"]
    finally:
        app.proc.kill()
        app.proc.wait()
        srv.close()


def test_no_monitor_is_unavailable(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import mtipc, mtipc.ha as ha
        assert ha.supervised()
        for call in (ha.ready, ha.heartbeat, ha.role):
            try:
                call()
            except mtipc.UnavailableError as e:
                print("unavailable", e.status_name)
        """
    )
    env = dict(os.environ, MTIPC_HA_SOCKET=str(tmp_path / "missing.sock"))
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "unavailable MT_ERR_UNAVAILABLE\n" * 3
