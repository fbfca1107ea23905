"""The notification semaphore across real processes: Python processes block
in sem_wait, a post of n wakes exactly n, and a waiter killed with SIGKILL
while blocked takes nothing and leaves nothing stuck."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import mtipc
from conftest import Waiters, exited, wait_until, waiting_on_sem, wake_sleepers

# Longer than the core's recheck period (250 ms): a waiter that was going to
# wake wrongly would have done so by then.
SETTLE = 0.6


def test_post_n_wakes_exactly_n_processes(dom: mtipc.Domain, dom_path: Path, waiters: Waiters) -> None:
    procs = waiters.start(dom_path, 5)
    dom.sem_post(3)
    wait_until(lambda: len(exited(procs)) >= 3, what="3 waiters to wake")
    time.sleep(SETTLE)
    done = exited(procs)
    assert len(done) == 3
    assert [p.returncode for p in done] == [0, 0, 0]
    assert dom.sem_value() == 0

    dom.sem_post(2)
    for p in procs:
        assert p.wait(timeout=10) == 0
    assert dom.sem_value() == 0


def test_units_posted_before_the_waiters_arrive_are_kept(
    dom: mtipc.Domain, dom_path: Path, tmp_path: Path
) -> None:
    dom.sem_post(2)
    # Two processes take the two units without blocking; a third times out.
    script = "import sys, mtipc; mtipc.Domain(sys.argv[1]).sem_wait(timeout=0.3)"
    results = [
        subprocess.run(
            [sys.executable, "-c", script, str(dom_path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        for _ in range(3)
    ]
    assert [r.returncode for r in results[:2]] == [0, 0]
    assert results[2].returncode == 1
    assert "mtipc.TimeoutError" in results[2].stderr
    assert dom.sem_value() == 0


def test_another_process_wakes_this_one(dom: mtipc.Domain, dom_path: Path, tmp_path: Path) -> None:
    script = "import sys, time, mtipc; time.sleep(0.3); mtipc.Domain(sys.argv[1]).sem_post(1)"
    poster = subprocess.Popen([sys.executable, "-c", script, str(dom_path)], cwd=tmp_path)
    try:
        dom.sem_wait(timeout=20)
    finally:
        assert poster.wait(timeout=20) == 0
    assert dom.sem_value() == 0


def test_sigkilled_waiter_takes_nothing_and_leaves_nothing_stuck(
    dom: mtipc.Domain, dom_path: Path, waiters: Waiters
) -> None:
    procs = waiters.start(dom_path, 3)
    victim, survivors = procs[0], procs[1:]
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert dom.sem_value() == 0

    dom.sem_post(2)
    for p in survivors:
        assert p.wait(timeout=10) == 0
    assert dom.sem_value() == 0

    # The dead waiter consumed nothing: a post with nobody waiting stays.
    dom.sem_post(1)
    time.sleep(SETTLE)
    assert dom.sem_value() == 1
    assert dom.sem_try_wait()

    # And new waiters still block and wake as usual.
    again = waiters.start(dom_path, 2)
    dom.sem_post(2)
    for p in again:
        assert p.wait(timeout=10) == 0
    assert dom.sem_value() == 0


def sleepers_with(dom_path: Path, p: subprocess.Popen[str]) -> int:
    """`wake_sleepers` once `p` is blocked on the semaphore; a waiter leaves
    the kernel's queue for a moment between its wait slices, which a probe
    may hit (it then finds nobody and tries again). Returns the first
    nonzero count, or 0 if ten probes found nobody."""
    for _ in range(10):
        wait_until(lambda: waiting_on_sem(p.pid), what=f"waiter {p.pid} to block")
        n = wake_sleepers(dom_path)
        if n > 0:
            return n
    return 0


def test_repeated_kills_during_rounds(dom: mtipc.Domain, dom_path: Path, waiters: Waiters) -> None:
    """Round after round, one waiter of two is killed while blocked: it dies
    of the SIGKILL, the kernel's queue then holds the survivor alone, and
    post(1)'s own wake reaches it (the queue is empty right after the post:
    a wake-up lost and rescued by the waiter's 250 ms re-check would leave
    it queued). The count ends at zero each time."""
    for _ in range(3):
        victim, survivor = waiters.start(dom_path, 2)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert sleepers_with(dom_path, survivor) == 1, "the dead waiter is still queued"
        wait_until(lambda: waiting_on_sem(survivor.pid), what="the survivor to block again")
        dom.sem_post(1)
        assert wake_sleepers(dom_path) == 0, "post(1) returned with the survivor still asleep"
        assert survivor.wait(timeout=10) == 0
        assert dom.sem_value() == 0


def test_ctrl_c_interrupts_a_wait_without_a_timeout(dom_path: Path, tmp_path: Path) -> None:
    # SIGINT to a process blocked in sem_wait() with no timeout raises
    # KeyboardInterrupt there (the GIL is taken back between wait slices).
    script = (
        "import sys, mtipc\n"
        "d = mtipc.Domain(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    d.sem_wait()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    sys.exit(7)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", script, str(dom_path)], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        assert p.poll() is None, "the waiter returned without a post"
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=10) == 7
        assert p.stdout.read().strip() == "interrupted"
    finally:
        p.kill()
        p.wait()
    with mtipc.Domain(dom_path) as d:
        assert d.sem_value() == 0
