"""The stubs (mtipc/_mtipc.pyi) match the built module, and a typed program
using the package type-checks with them (py.typed is in the wheel)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import require_module

require_module("mypy", "make venv installs it")


def run_mypy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Outside the source tree, so that the installed package is checked; the
    # cache goes to the test's temporary directory.
    env = dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / ".mypy_cache"))
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_stubtest(tmp_path: Path) -> None:
    r = run_mypy(tmp_path, "mypy.stubtest", "mtipc")
    assert r.returncode == 0, r.stdout + r.stderr
    # mtipc, mtipc._mtipc, mtipc._log, mtipc.ha
    assert "in 4 modules" in r.stdout, r.stdout


def test_a_typed_program_checks_strictly(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(
        textwrap.dedent(
            """
            import pathlib
            import mtipc

            def take(path: pathlib.Path) -> int:
                with mtipc.Domain(path) as d:
                    d.sem_post(2)
                    try:
                        d.sem_wait(timeout=0.5)
                    except mtipc.TimeoutError as e:
                        code: int = e.status
                        name: str = e.status_name
                        print(code, name)
                    ok: bool = d.sem_try_wait()
                    info = d.info()
                    value: int = info["semaphore_value"]
                    where: str = d.path
                    print(ok, value, where, mtipc.version(), mtipc.__version__)
                    return d.sem_reset() + d.sem_value() + d.layout_version + d.owner_uid
            """
        )
    )
    r = run_mypy(tmp_path, "mypy", "--strict", "good.py")
    assert r.returncode == 0, r.stdout + r.stderr

    (tmp_path / "bad.py").write_text(
        textwrap.dedent(
            """
            import mtipc
            d = mtipc.Domain(42)
            d.sem_post("1")
            d.sem_wait(timeout="soon")
            x: str = d.sem_value()
            """
        )
    )
    r = run_mypy(tmp_path, "mypy", "--strict", "bad.py")
    assert r.returncode == 1
    assert "Found 4 errors" in r.stdout, r.stdout


def test_the_attach_api_checks_strictly(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(
        textwrap.dedent(
            """
            import datetime
            import mtipc

            def handler(conn: mtipc.Conn) -> None:
                with conn:
                    for m in conn:
                        conn.send(b"> " + m)
                        conn.send(memoryview(m))
                        conn.send(bytearray(m))

            def run(d: mtipc.Domain) -> list[bytes]:
                with mtipc.advertise(d, "t", handler, protocols=("msg", "json")) as ad:
                    fp: str = ad.fingerprint
                    tenant: str = ad.tenant
                    gone: bool = ad.withdrawn
                    print(fp, tenant, gone)
                    for t in mtipc.list_tenants(d):
                        since: float = t.since
                        key: str | None = t.fingerprint
                        protocols: tuple[str, ...] = t.protocols
                        print(t.id, t.role, t.pid + t.uid, since, key, protocols)
                    start = datetime.datetime.now(datetime.timezone.utc)
                    with mtipc.attach(d, "t", timeout=2.5, start_at=start, duration=10, protocol="json") as c:
                        c.send(b"hi")
                        version: str = c.tls_version
                        print(version)
                        return [c.recv(timeout=1.0), c.recv(), *c]
            """
        )
    )
    r = run_mypy(tmp_path, "mypy", "--strict", "good.py")
    assert r.returncode == 0, r.stdout + r.stderr

    (tmp_path / "bad.py").write_text(
        textwrap.dedent(
            """
            import mtipc
            d = mtipc.Domain()
            def wrong(n: int) -> None: ...
            mtipc.advertise(d, "t", wrong)
            c = mtipc.attach(d, "t", start_at="now")
            c.send("text")
            x: str = c.recv()
            mtipc.list_tenants(d)[0].pid = 1
            """
        )
    )
    r = run_mypy(tmp_path, "mypy", "--strict", "bad.py")
    assert r.returncode == 1
    assert r.stdout.count("error:") == 5 and "Found 5 errors" in r.stdout, r.stdout


def test_the_permit_api_checks_strictly(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(
        textwrap.dedent(
            """
            import pathlib
            import mtipc

            def upload(d: mtipc.Domain, vol: pathlib.Path, src: pathlib.Path) -> int:
                rec = d.create_volume("gw", vol, max_transfers=4, lease_ms=5000, etcd=None)
                cap: int = rec["max_transfers"]
                where: str = rec["dir"]
                names = [v["name"] for v in d.volumes()]
                print(cap, where, names)
                try:
                    d.permit("gw", "a.txt", mtipc.PERMIT_READ, timeout=0)
                except mtipc.DeferredError:
                    pass
                with d.permit("gw", "a.txt", "write", timeout=1.5) as p:
                    token: int = p.token
                    p.renew()
                    n: int = p.put(src) + p.get("out.txt")
                    mode: str = p.mode
                    print(token, mode, p.volume, p.path, p.lease_ms, p.released)
                p.release()
                st = d.permit_status("gw")
                for h in st["holders"]:
                    pid: int = h["instance"]["pid"]
                    left: int = h["lease_left_ms"]
                    print(pid, left, h["token"], h["path"], h["mode"])
                for w in st["queue"]:
                    print(w["instance"]["host"], w["path"])
                for g in st["grants"]:
                    print(g["instance"]["start"], g["grants"])
                for r in st["reclaimed"]:
                    reason: str = r["reason"]
                    print(reason, r["token"])
                return n + st["last_token"] + st["lease_ms"]
            """
        )
    )
    r = run_mypy(tmp_path, "mypy", "--strict", "good.py")
    assert r.returncode == 0, r.stdout + r.stderr

    (tmp_path / "bad.py").write_text(
        textwrap.dedent(
            """
            import mtipc
            d = mtipc.Domain()
            d.permit("gw", "a", "append")
            d.permit("gw", "a", "read", timeout="soon")
            p = d.permit("gw", "a", "read")
            x: str = p.token
            d.create_volume("gw", "/srv", lease_ms="long")
            d.permit_status("gw")["holder"]
            """
        )
    )
    r = run_mypy(tmp_path, "mypy", "--strict", "bad.py")
    assert r.returncode == 1
    assert r.stdout.count("error:") == 5 and "Found 5 errors" in r.stdout, r.stdout


def test_the_examples_check_strictly(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "py_tenant.py"
    r = run_mypy(tmp_path, "mypy", "--strict", str(example))
    assert r.returncode == 0, r.stdout + r.stderr
