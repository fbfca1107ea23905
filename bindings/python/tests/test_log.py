"""The library's events reach the ``logging`` logger ``mtipc``, filtered by
its level; nothing is printed by the library itself."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mtipc


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def wait_for(records: list[logging.LogRecord], needle: str, timeout: float = 10.0) -> logging.LogRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in list(records):
            if needle in r.getMessage():
                return r
        time.sleep(0.02)
    raise AssertionError(f"no event with {needle!r}: {[r.getMessage() for r in records]}")


@pytest.fixture
def kept() -> "Kept":
    logger = logging.getLogger("mtipc")
    h = Kept()
    old = logger.level
    logger.addHandler(h)
    try:
        yield h
    finally:
        logger.removeHandler(h)
        logger.setLevel(old)


def test_debug_event_reaches_the_mtipc_logger(dom_path: Path, kept: Kept) -> None:
    logging.getLogger("mtipc").setLevel(logging.DEBUG)
    time.sleep(1.5)  # the delivery thread re-reads the level at least once a second
    with mtipc.Domain(dom_path) as d:
        mtipc.publish_closure(d, "cfg", b"x")
    r = wait_for(kept.records, "published closure")
    assert r.name == "mtipc"
    assert r.levelno == logging.DEBUG
    assert "closure=cfg" in r.getMessage()
    assert getattr(r, "mtipc_target") == "mtipc::closure::store"


def test_warning_event_and_level_filter(dom_path: Path, kept: Kept) -> None:
    logging.getLogger("mtipc").setLevel(logging.WARNING)
    time.sleep(1.5)
    with mtipc.Domain(dom_path) as d:
        (dom_path / "adverts").mkdir(mode=0o700, exist_ok=True)
        (dom_path / "adverts" / "junk-file").write_bytes(b"junk")
        mtipc.list_tenants(d)
        mtipc.publish_closure(d, "cfg", b"x")  # a debug event: filtered out
    r = wait_for(kept.records, "junk-file")
    assert r.levelno == logging.WARNING
    time.sleep(0.3)
    assert not [x for x in kept.records if "published closure" in x.getMessage()]


def test_the_library_prints_nothing(dom_path: Path) -> None:
    # A process with no logging configured: Python's last-resort handler
    # would print warnings to stderr; the library itself prints nothing, so
    # with the mtipc logger silenced the output is empty.
    code = textwrap.dedent(
        f"""
        import logging, os
        import mtipc
        logging.getLogger("mtipc").disabled = True
        os.makedirs({str(dom_path / "adverts")!r}, mode=0o700, exist_ok=True)
        d = mtipc.Domain({str(dom_path)!r})
        open({str(dom_path / "adverts" / "junk")!r}, "w").write("x")
        mtipc.list_tenants(d)
        mtipc.publish_closure(d, "cfg", b"x")
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and p.stderr == "", (p.stdout, p.stderr)
