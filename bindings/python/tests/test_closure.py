"""Shared closures from Python: publish_closure / open_closure, read-only
views (Mapping, Sequence, memoryview with no copy), versions held by readers
in other processes while new ones are published, refusals."""

from __future__ import annotations

import collections.abc
import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mtipc

TREE = {
    "name": "routing",
    "id": -42,
    "ratio": 0.25,
    "tags": ["a", "b", ["nested", 1]],
    "raw": b"\x00\x01\xff",
    "empty": {},
    "": "empty key",
}


def version_file(dom_path: Path, name: str, v: int) -> Path:
    return dom_path / "closures" / name / f"v{v}"


def test_tree_round_trip(dom: mtipc.Domain) -> None:
    assert mtipc.publish_closure(dom, "cfg", TREE) == 1
    with mtipc.open_closure(dom, "cfg") as c:
        assert c.version == 1
        assert c.name == "cfg"
        v = c.value
        assert isinstance(v, mtipc.ClosureMap)
        assert isinstance(v, collections.abc.Mapping)
        assert v == TREE
        assert len(v) == len(TREE)
        assert list(v) == sorted(TREE)
        assert v["name"] == "routing" and isinstance(v["name"], str)
        assert v["id"] == -42
        assert v["ratio"] == 0.25
        assert "tags" in v and "nope" not in v and 3 not in v
        assert v.get("nope") is None and v.get("nope", 7) == 7
        assert dict(v.items())["id"] == -42
        assert set(v.keys()) == set(TREE)
        tags = v["tags"]
        assert isinstance(tags, mtipc.ClosureList)
        assert isinstance(tags, collections.abc.Sequence)
        assert tags == ["a", "b", ["nested", 1]]
        assert tags == ("a", "b", ("nested", 1))
        assert tags[-1][0] == "nested"
        assert tags[0:2] == ["a", "b"]
        assert tags[::-1][0] == ["nested", 1]
        assert "b" in tags and "z" not in tags
        assert list(iter(tags))[1] == "b"
        with pytest.raises(IndexError):
            tags[3]
        with pytest.raises(KeyError):
            v["nope"]
        raw = v["raw"]
        assert isinstance(raw, memoryview)
        assert raw.readonly
        assert bytes(raw) == b"\x00\x01\xff"
        with pytest.raises(TypeError):
            raw[0] = 1  # type: ignore[index]
        assert "ClosureMap(" in repr(v)
    assert c.closed
    with pytest.raises(mtipc.InvalidError, match="closed"):
        c.value


def test_bytes_are_a_zero_copy_memoryview(dom: mtipc.Domain, dom_path: Path) -> None:
    data = os.urandom(1 << 20)
    assert mtipc.publish_closure(dom, "blob", data) == 1
    c = mtipc.open_closure(dom, "blob")
    mv = c.value
    assert isinstance(mv, memoryview) and mv.readonly and mv.nbytes == len(data)
    assert mv == data
    # Zero copy: the memoryview is a window on a mapping of the version file
    # (its mmap), not a bytes object of its own.
    assert isinstance(mv.obj, __import__("mmap").mmap)
    assert len(mv.obj) == os.path.getsize(version_file(dom_path, "blob", 1))
    # bytearray and memoryview are published as bytes too.
    assert mtipc.publish_closure(dom, "blob", bytearray(b"two")) == 2
    assert mtipc.publish_closure(dom, "blob", memoryview(b"three")) == 3
    with mtipc.open_closure(dom, "blob") as c3:
        assert bytes(c3.value) == b"three"  # type: ignore[arg-type]
    # The memoryview keeps v1 open, even after its Closure is closed.
    c.close()
    assert version_file(dom_path, "blob", 1).exists()
    assert bytes(mv[:16]) == data[:16]
    del mv
    gc.collect()
    # Nobody holds v1 now: the next publish removes it.
    mtipc.publish_closure(dom, "blob", b"four")
    assert not version_file(dom_path, "blob", 1).exists()
    assert not version_file(dom_path, "blob", 2).exists()


def test_views_keep_the_version_after_close(dom: mtipc.Domain, dom_path: Path) -> None:
    mtipc.publish_closure(dom, "k", {"l": [1, 2, 3]})
    with mtipc.open_closure(dom, "k") as c:
        inner = c.value["l"]  # type: ignore[index]
    mtipc.publish_closure(dom, "k", {"l": []})
    assert version_file(dom_path, "k", 1).exists()
    assert inner == [1, 2, 3]
    del inner
    gc.collect()
    # The last view let go of a superseded version: it was removed.
    assert not version_file(dom_path, "k", 1).exists()


# Opens the closure, prints its version and value, then waits for a line on
# stdin, prints the value again, lets go (the views first, then the
# Closure) and exits.
READER = textwrap.dedent(
    """
    import sys
    import mtipc

    d = mtipc.Domain(sys.argv[1])
    c = mtipc.open_closure(d, sys.argv[2])
    v = c.value
    print(c.version, bytes(v["data"]).hex(), v["seq"], flush=True)
    sys.stdin.readline()
    print(c.version, bytes(v["data"]).hex(), v["seq"], flush=True)
    del v
    c.close()
    """
)


def test_reader_in_another_process_keeps_its_version(dom: mtipc.Domain, dom_path: Path) -> None:
    mtipc.publish_closure(dom, "shared", {"seq": 1, "data": b"first"})
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(dom_path), "shared"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for r in readers:
            assert r.stdout is not None
            assert r.stdout.readline().split() == ["1", b"first".hex(), "1"]
        assert mtipc.publish_closure(dom, "shared", {"seq": 2, "data": b"second"}) == 2
        with mtipc.open_closure(dom, "shared") as c:
            assert c.version == 2 and c.value == {"seq": 2, "data": b"second"}
        assert version_file(dom_path, "shared", 1).exists()
        for i, r in enumerate(readers):
            out, _ = r.communicate("go\n", timeout=30)
            assert out.split() == ["1", b"first".hex(), "1"], "still exactly version 1"
            assert r.returncode == 0
            assert version_file(dom_path, "shared", 1).exists() == (i < len(readers) - 1)
    finally:
        for r in readers:
            r.kill()
            r.wait()


def test_killed_reader_is_collected_by_the_next_publish(dom: mtipc.Domain, dom_path: Path) -> None:
    mtipc.publish_closure(dom, "k", {"seq": 1, "data": b"one"})
    r = subprocess.Popen(
        [sys.executable, "-c", READER, str(dom_path), "k"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert r.stdout is not None
        assert r.stdout.readline().split()[0] == "1"
        mtipc.publish_closure(dom, "k", {"seq": 2, "data": b"two"})
        assert version_file(dom_path, "k", 1).exists()
        r.kill()
        r.wait()
        assert version_file(dom_path, "k", 1).exists()  # nobody let go of it
        mtipc.publish_closure(dom, "k", {"seq": 3, "data": b"three"})
        assert not version_file(dom_path, "k", 1).exists()
    finally:
        r.kill()
        r.wait()


def test_refusals(dom: mtipc.Domain, dom_path: Path) -> None:
    with pytest.raises(mtipc.NotFoundError):
        mtipc.open_closure(dom, "never")
    for bad in ["", ".x", "a/b", "x" * 65]:
        with pytest.raises(mtipc.InvalidError, match="closure name"):
            mtipc.publish_closure(dom, bad, b"x")
        with pytest.raises(mtipc.InvalidError):
            mtipc.open_closure(dom, bad)
    with pytest.raises(TypeError, match="bool"):
        mtipc.publish_closure(dom, "x", {"flag": True})
    with pytest.raises(TypeError, match="NoneType"):
        mtipc.publish_closure(dom, "x", [None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="keys must be str"):
        mtipc.publish_closure(dom, "x", {1: 2})  # type: ignore[dict-item]
    with pytest.raises(mtipc.InvalidError, match="out of range"):
        mtipc.publish_closure(dom, "x", 2**63)
    deep: list[object] = []
    for _ in range(70):
        deep = [deep]
    with pytest.raises(mtipc.InvalidError, match="at most 64"):
        mtipc.publish_closure(dom, "x", deep)  # type: ignore[arg-type]
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(mtipc.InvalidError, match="at most 64"):
        mtipc.publish_closure(dom, "x", cyclic)  # type: ignore[arg-type]
    assert not (dom_path / "closures" / "x").exists()
    # A corrupt version file.
    mtipc.publish_closure(dom, "c", {"a": 1})
    f = version_file(dom_path, "c", 1)
    b = bytearray(f.read_bytes())
    b[64] = 0x7F
    f.chmod(0o600)
    f.write_bytes(bytes(b))
    f.chmod(0o400)
    with pytest.raises(mtipc.CorruptError, match="bad kind"):
        mtipc.open_closure(dom, "c")
    f.chmod(0o600)
    with pytest.raises(mtipc.DeniedError, match="writable"):
        mtipc.open_closure(dom, "c")


def test_oversized_is_invalid_with_the_limit(dom: mtipc.Domain) -> None:
    # bytes(n) is calloc'ed: its pages are never touched, the size is
    # refused first.
    with pytest.raises(mtipc.InvalidError, match="at most 1073741824 bytes"):
        mtipc.publish_closure(dom, "big", bytes(1 << 30))


def test_example(dom_path: Path) -> None:
    """examples/py_closure.py (quoted in the README) runs and says what it should."""
    example = Path(__file__).resolve().parents[3] / "examples" / "py_closure.py"
    r = subprocess.run([sys.executable, str(example), str(dom_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "routing v1: queue billing, weight 3, blob 0001\n"
