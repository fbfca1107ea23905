"""examples/py_domain.py (quoted in the README) runs and says what it should."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "py_domain.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=60)


def test_example_on_a_fresh_domain(tmp_path: Path) -> None:
    r = run(str(tmp_path / "dom"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"domain {tmp_path / 'dom'}: layout 1, owner uid {os.geteuid()}"
    assert lines[1:4] == ["after post 2: 2", "after one wait: 1", "reset cleared 1"]
    assert lines[4].startswith("nothing left: MT_ERR_TIMEOUT: no post on ")
    assert (tmp_path / "dom" / "notify.sem").is_file()


def test_example_with_a_temporary_domain() -> None:
    r = run()
    assert r.returncode == 0, r.stderr
    assert "after one wait: 1" in r.stdout


def test_example_reports_a_refused_domain(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("not a domain")
    r = run(str(f))
    assert r.returncode == 1
    assert r.stderr.strip() == f"mtipc: MT_ERR_INVALID: domain {f} exists and is not a directory"
