"""Every bad domain is refused with the exception of its kind, a message that
names the problem, and the domain left as it was."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

import mtipc
from conftest import domain_files, private_write


def make_domain(path: Path) -> Path:
    mtipc.Domain(path).close()
    return path


def region(magic: bytes = b"MTIPCSEM", version: int = 1, total: int = 128, length: int = 128) -> bytes:
    """A notify.sem image: the 64-byte region header, then zeros."""
    header = magic + struct.pack("<IIQ", version, 64, total)
    return (header + bytes(128))[:length]


def refused(path: object, cls: type[mtipc.Error], match: str) -> mtipc.Error:
    with pytest.raises(cls, match=match) as info:
        mtipc.Domain(path)  # type: ignore[arg-type]
    assert type(info.value) is cls
    return info.value


def test_path_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"x")
    e = refused(f, mtipc.InvalidError, "not a directory")
    assert str(f) in str(e)
    assert f.read_bytes() == b"x"


def test_symlink_to_a_domain(tmp_path: Path) -> None:
    real = make_domain(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    refused(link, mtipc.DeniedError, "symbolic link")


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_group_or_world_writable_dir(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "dom"
    d.mkdir()
    d.chmod(mode)
    refused(d, mtipc.DeniedError, "writable")
    assert list(d.iterdir()) == []


def test_layout_of_another_version(tmp_path: Path) -> None:
    d = make_domain(tmp_path / "dom")
    private_write(d / "layout", b"mtipc domain\nlayout 2\n")
    before = domain_files(d)
    e = refused(d, mtipc.VersionError, "layout version 2")
    assert e.status == 5 and e.status_name == "MT_ERR_VERSION"
    assert domain_files(d) == before


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"mtipc domain\n",
        b"mtipc domain\nlayout 1",
        b"mtipc domain\nlayout 01\n",
        b"garbage\x00\xff",
        b"x" * 300,
    ],
    ids=["empty", "no-version", "no-newline", "leading-zero", "garbage", "oversized"],
)
def test_truncated_or_garbage_layout(tmp_path: Path, content: bytes) -> None:
    d = make_domain(tmp_path / "dom")
    private_write(d / "layout", content)
    before = domain_files(d)
    e = refused(d, mtipc.CorruptError, "layout")
    assert str(d / "layout") in str(e)
    assert domain_files(d) == before


@pytest.mark.parametrize(
    "content, cls, match",
    [
        (b"", mtipc.CorruptError, "truncated"),
        (region()[:40], mtipc.CorruptError, "truncated"),
        (region(length=100), mtipc.CorruptError, "100 bytes"),
        (region(magic=b"NOTOURS!"), mtipc.CorruptError, "magic"),
        (region(total=256), mtipc.CorruptError, "size"),
        (region(version=9), mtipc.VersionError, "layout version 9"),
    ],
    ids=["empty", "truncated-header", "truncated-region", "bad-magic", "bad-size", "other-version"],
)
def test_bad_notify_sem(tmp_path: Path, content: bytes, cls: type[mtipc.Error], match: str) -> None:
    d = make_domain(tmp_path / "dom")
    private_write(d / "notify.sem", content)
    before = domain_files(d)
    e = refused(d, cls, match)
    assert "notify.sem" in str(e)
    assert domain_files(d) == before


@pytest.mark.parametrize("name", ["layout", "notify.sem"])
def test_file_others_may_read(tmp_path: Path, name: str) -> None:
    d = make_domain(tmp_path / "dom")
    (d / name).chmod(0o644)
    refused(d, mtipc.DeniedError, "owner-only")


@pytest.mark.parametrize("name", ["layout", "notify.sem"])
def test_file_is_a_symlink(tmp_path: Path, name: str) -> None:
    d = make_domain(tmp_path / "dom")
    target = tmp_path / "elsewhere"
    os.replace(d / name, target)
    (d / name).symlink_to(target)
    refused(d, mtipc.DeniedError, "symbolic link")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another uid")
def test_domain_of_another_user(tmp_path: Path) -> None:
    d = make_domain(tmp_path / "dom")
    os.chown(d, 65534, -1)
    refused(d, mtipc.DeniedError, "owned by uid 65534")


def test_empty_path() -> None:
    refused("", mtipc.InvalidError, "empty")
    refused(b"", mtipc.InvalidError, "empty")


def test_path_with_nul(tmp_path: Path) -> None:
    refused(f"{tmp_path}/a\0b", mtipc.InvalidError, "NUL")
    refused(os.fsencode(tmp_path) + b"/a\0b", mtipc.InvalidError, "NUL")
    assert list(tmp_path.iterdir()) == []


def test_oversized_path() -> None:
    refused("/tmp/" + "x" * 5000, mtipc.InvalidError, "at most")


def test_missing_parent(tmp_path: Path) -> None:
    refused(tmp_path / "no" / "dom", mtipc.NotFoundError, "parent")
