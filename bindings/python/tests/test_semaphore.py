"""The domain's notification semaphore within one process: counting, timeouts,
argument checks, and the GIL released while sem_wait blocks."""

from __future__ import annotations

import math
import threading
import time

import pytest

import mtipc
from conftest import thread_waiting, wait_until

MAX_COUNT = 2**31 - 1


def test_post_wait_reset_value(dom: mtipc.Domain) -> None:
    assert dom.sem_value() == 0
    dom.sem_post()
    dom.sem_post(4)
    assert dom.sem_value() == 5
    dom.sem_wait()
    dom.sem_wait(timeout=0)
    dom.sem_wait(timeout=1.5)
    assert dom.sem_try_wait()
    assert dom.sem_value() == 1
    assert dom.sem_reset() == 1
    assert dom.sem_value() == 0
    assert not dom.sem_try_wait()
    assert dom.sem_reset() == 0
    dom.sem_post(0)
    assert dom.sem_value() == 0


def test_timeout_raises_timeout_error(dom: mtipc.Domain) -> None:
    start = time.monotonic()
    with pytest.raises(mtipc.TimeoutError, match="within 200ms"):
        dom.sem_wait(timeout=0.2)
    assert 0.19 <= time.monotonic() - start < 5
    with pytest.raises(mtipc.TimeoutError):
        dom.sem_wait(timeout=0)
    with pytest.raises(mtipc.TimeoutError):
        dom.sem_wait(0)  # positional, an int
    assert dom.sem_value() == 0


def test_unlimited_timeouts_take_a_posted_unit(dom: mtipc.Domain) -> None:
    for timeout in (None, math.inf, 1e300):
        dom.sem_post()
        dom.sem_wait(timeout=timeout)
    assert dom.sem_value() == 0


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, -math.inf])
def test_bad_timeout_is_invalid(dom: mtipc.Domain, timeout: float) -> None:
    dom.sem_post()
    with pytest.raises(mtipc.InvalidError, match="timeout"):
        dom.sem_wait(timeout=timeout)
    assert dom.sem_value() == 1  # nothing was taken


@pytest.mark.parametrize("timeout", ["1", [1]])
def test_timeout_of_another_type_is_a_type_error(dom: mtipc.Domain, timeout: object) -> None:
    with pytest.raises(TypeError):
        dom.sem_wait(timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [-1, 2**32, 2**64, -(2**70)])
def test_post_out_of_range_is_invalid(dom: mtipc.Domain, n: int) -> None:
    with pytest.raises(mtipc.InvalidError, match="out of range"):
        dom.sem_post(n)
    assert dom.sem_value() == 0


@pytest.mark.parametrize("n", [1.0, "1", None])
def test_post_of_another_type_is_a_type_error(dom: mtipc.Domain, n: object) -> None:
    with pytest.raises(TypeError):
        dom.sem_post(n)  # type: ignore[arg-type]
    assert dom.sem_value() == 0


def test_post_past_the_limit_is_refused_and_keeps_the_count(dom: mtipc.Domain) -> None:
    dom.sem_post(MAX_COUNT - 1)
    with pytest.raises(mtipc.InvalidError, match="overflow"):
        dom.sem_post(2)
    with pytest.raises(mtipc.InvalidError, match="overflow"):
        dom.sem_post(2**32 - 1)
    assert dom.sem_value() == MAX_COUNT - 1
    dom.sem_post(1)
    assert dom.sem_value() == MAX_COUNT
    assert dom.sem_reset() == MAX_COUNT


def test_gil_is_released_while_sem_wait_blocks(dom: mtipc.Domain) -> None:
    """A Python thread keeps counting while the main thread blocks in sem_wait.
    With the GIL held, it could not run at all during the wait."""
    stop = threading.Event()
    counter = [0]

    def count() -> None:
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=count)
    t.start()
    try:
        wait_until(lambda: counter[0] > 0, what="the counting thread")
        # Its pace while this thread sleeps (time.sleep releases the GIL).
        before = counter[0]
        time.sleep(0.25)
        pace = counter[0] - before
        before = counter[0]
        with pytest.raises(mtipc.TimeoutError):
            dom.sem_wait(timeout=0.5)
        during = counter[0] - before
    finally:
        stop.set()
        t.join()
    # Held, the GIL would let it run for a switch interval (5 ms) at most.
    assert during > pace / 2, f"counted {during} in a 0.5 s sem_wait, {pace} in a 0.25 s sleep"


def test_threads_blocked_in_sem_wait_are_woken_by_post(dom: mtipc.Domain) -> None:
    """post(n) from the main thread wakes exactly n of the blocked threads,
    and the main thread runs while they block."""
    woke: list[int] = []
    lock = threading.Lock()

    def wait(i: int) -> None:
        try:
            dom.sem_wait(timeout=1.5)
        except mtipc.TimeoutError:
            return
        with lock:
            woke.append(i)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: all(thread_waiting(t) for t in threads), what="threads to block")
    dom.sem_post(3)
    for t in threads:
        t.join()
    assert len(woke) == 3
    assert dom.sem_value() == 0
