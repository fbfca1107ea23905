"""The stubs (mtipc/_mtipc.pyi) match the built module, and a typed program
using the package type-checks with them (py.typed is in the wheel)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (make venv installs it)")


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
    assert "in 2 modules" in r.stdout, r.stdout  # mtipc and mtipc._mtipc


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
