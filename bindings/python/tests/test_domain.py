"""mtipc.Domain: creation, reopening, properties, the context manager, and the
package's version and exception classes."""

from __future__ import annotations

import importlib.metadata
import os
import pickle
import stat
import threading
from pathlib import Path

import pytest

import mtipc
from conftest import thread_waiting, wait_until

# The exception classes and the C status codes they stand for (include/mtipc.h).
KINDS = [
    ("InvalidError", 1, "MT_ERR_INVALID"),
    ("NotFoundError", 2, "MT_ERR_NOT_FOUND"),
    ("ExistsError", 3, "MT_ERR_EXISTS"),
    ("DeniedError", 4, "MT_ERR_DENIED"),
    ("VersionError", 5, "MT_ERR_VERSION"),
    ("CorruptError", 6, "MT_ERR_CORRUPT"),
    ("TimeoutError", 7, "MT_ERR_TIMEOUT"),
    ("FullError", 8, "MT_ERR_FULL"),
    ("ClosedError", 9, "MT_ERR_CLOSED"),
    ("DeferredError", 10, "MT_ERR_DEFERRED"),
    ("IoError", 11, "MT_ERR_IO"),
    ("PanicError", 12, "MT_ERR_PANIC"),
    ("UnavailableError", 13, "MT_ERR_UNAVAILABLE"),
    ("FencedError", 14, "MT_ERR_FENCED"),
]


def test_creates_an_owner_only_domain(dom_path: Path) -> None:
    with mtipc.Domain(dom_path) as d:
        assert d.path == str(dom_path)
        assert d.layout_version == 1
        assert d.owner_uid == os.geteuid()
    st = dom_path.lstat()
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert sorted(p.name for p in dom_path.iterdir()) == ["layout", "notify.sem"]
    for name in ("layout", "notify.sem"):
        assert stat.S_IMODE((dom_path / name).lstat().st_mode) == 0o600
    assert (dom_path / "layout").read_bytes() == b"mtipc domain\nlayout 1\n"
    assert (dom_path / "notify.sem").stat().st_size == 128


def test_reopening_shares_the_semaphore(dom_path: Path) -> None:
    with mtipc.Domain(dom_path) as a, mtipc.Domain(str(dom_path)) as b:
        a.sem_post(2)
        assert b.sem_value() == 2
        assert b.sem_try_wait()
        assert a.sem_value() == 1


def test_info(dom: mtipc.Domain) -> None:
    dom.sem_post(3)
    assert dom.info() == {
        "path": dom.path,
        "layout_version": 1,
        "owner_uid": os.geteuid(),
        "semaphore_value": 3,
    }


@pytest.mark.parametrize(
    "convert",
    [str, Path, os.fsencode, lambda p: type("P", (), {"__fspath__": lambda self: str(p)})()],
    ids=["str", "pathlib", "bytes", "PathLike"],
)
def test_accepts_every_kind_of_path(dom_path: Path, convert) -> None:  # type: ignore[no-untyped-def]
    with mtipc.Domain(convert(dom_path)) as d:
        assert d.path == str(dom_path)


def test_non_utf8_path_round_trips(tmp_path: Path) -> None:
    name = os.fsdecode(b"dom-\xff")  # a surrogate escape, as os.listdir gives it
    with mtipc.Domain(os.path.join(tmp_path, name)) as d:
        assert d.path == os.path.join(tmp_path, name)
    assert os.listdir(os.fsencode(tmp_path)) == [b"dom-\xff"]


def test_wrong_path_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        mtipc.Domain(42)  # type: ignore[arg-type]


def test_default_path_comes_from_the_environment(
    dom_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTIPC_DOMAIN", str(dom_path))
    with mtipc.Domain() as d:
        assert d.path == str(dom_path)
    with mtipc.Domain(None) as d:
        assert d.path == str(dom_path)


def test_context_manager_closes(dom_path: Path) -> None:
    with mtipc.Domain(dom_path) as d:
        assert isinstance(d, mtipc.Domain)
        assert not d.closed
        assert "dom" in repr(d)
    assert d.closed
    assert repr(d) == "<mtipc.Domain (closed)>"


def test_context_manager_propagates_exceptions(dom_path: Path) -> None:
    with pytest.raises(KeyError):
        with mtipc.Domain(dom_path) as d:
            raise KeyError("x")
    assert d.closed


@pytest.mark.parametrize(
    "use",
    [
        lambda d: d.path,
        lambda d: d.layout_version,
        lambda d: d.owner_uid,
        lambda d: d.info(),
        lambda d: d.sem_post(),
        lambda d: d.sem_wait(0),
        lambda d: d.sem_try_wait(),
        lambda d: d.sem_reset(),
        lambda d: d.sem_value(),
        lambda d: d.__enter__(),
    ],
    ids=[
        "path",
        "layout_version",
        "owner_uid",
        "info",
        "sem_post",
        "sem_wait",
        "sem_try_wait",
        "sem_reset",
        "sem_value",
        "enter",
    ],
)
def test_a_closed_domain_refuses_use(dom_path: Path, use) -> None:  # type: ignore[no-untyped-def]
    d = mtipc.Domain(dom_path)
    d.close()
    with pytest.raises(mtipc.InvalidError, match="closed"):
        use(d)
    d.close()  # closing twice is fine
    d.__exit__(None, None, None)


def test_close_does_not_cut_short_a_wait_in_progress(dom_path: Path) -> None:
    """The waiting thread keeps the mapping alive; a post still wakes it."""
    d = mtipc.Domain(dom_path)
    result: list[object] = []

    def wait() -> None:
        try:
            d.sem_wait(timeout=10)
            result.append("woke")
        except Exception as e:  # pragma: no cover - reported below
            result.append(e)

    t = threading.Thread(target=wait)
    t.start()
    wait_until(lambda: thread_waiting(t), what="the thread to block in sem_wait")
    d.close()
    with mtipc.Domain(dom_path) as other:
        other.sem_post()
        t.join(timeout=10)
        assert result == ["woke"]
        assert other.sem_value() == 0


def test_version() -> None:
    assert mtipc.__version__ == mtipc.version()
    assert mtipc.__version__ == importlib.metadata.version("mtipc")


def test_extension_is_abi3() -> None:
    assert mtipc._mtipc.__file__ is not None
    assert mtipc._mtipc.__file__.endswith(".abi3.so")


def test_exception_hierarchy() -> None:
    assert issubclass(mtipc.Error, Exception)
    assert mtipc.Error.__module__ == "mtipc"
    for name, code, status_name in KINDS:
        cls = getattr(mtipc, name)
        assert issubclass(cls, mtipc.Error), name
        assert cls.__module__ == "mtipc"
        assert cls.status == code, name
        assert cls.status_name == status_name, name
        assert cls.__doc__ and status_name in cls.__doc__
    classes = {
        obj
        for obj in vars(mtipc).values()
        if isinstance(obj, type) and issubclass(obj, mtipc.Error) and obj is not mtipc.Error
    }
    assert len(classes) == len(KINDS), "one class per status kind, no more"
    assert mtipc.TimeoutError is not TimeoutError


def test_raised_errors_carry_status_and_message(dom: mtipc.Domain) -> None:
    with pytest.raises(mtipc.Error) as info:
        dom.sem_wait(timeout=0.01)
    e = info.value
    assert type(e) is mtipc.TimeoutError
    assert (e.status, e.status_name) == (7, "MT_ERR_TIMEOUT")
    assert "notify.sem" in str(e) and "within 10ms" in str(e)


def test_exceptions_pickle() -> None:
    e = pickle.loads(pickle.dumps(mtipc.CorruptError("bad magic")))
    assert type(e) is mtipc.CorruptError
    assert str(e) == "bad magic"


def test_all_is_complete() -> None:
    public = {n for n in dir(mtipc._mtipc) if not n.startswith("_")} | {"__version__"}
    # ... and the pure-Python submodules.
    public |= {"ha"}
    assert set(mtipc.__all__) == public
