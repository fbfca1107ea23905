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
    assert "in 3 modules" in r.stdout, r.stdout  # mtipc, mtipc._mtipc, mtipc._log


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


def test_the_examples_check_strictly(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "py_tenant.py"
    r = run_mypy(tmp_path, "mypy", "--strict", str(example))
    assert r.returncode == 0, r.stdout + r.stderr
