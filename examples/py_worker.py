"""A Python worker of an mtipc session table: serves requests until SIGTERM.

    python examples/py_worker.py DOMAIN TABLE [GROUP] [--delay SECONDS]

Opens the domain and the session table TABLE (waiting up to 10 s for the
connection manager to create it), registers as a worker of GROUP (default
1, the Python group of the demo) and answers every request with

    <pid> g<group>: <the request text, upper-cased>

printing one line per request. Requests of a session come back to the same
worker (sticky sessions) while it lives. --delay makes each request take
that long, so that a worker killed mid-load dies holding one: its request
and its sessions then move to another worker of the group.

SIGTERM or Ctrl-C ends it after the request in hand is answered; it then
unregisters, and requests still queued to it go to the other workers.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import mtipc


def open_table(domain: mtipc.Domain, name: str, wait: float) -> mtipc.SessionTable:
    """The table `name`, once the manager has created it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return mtipc.SessionTable.open(domain, name)
        except mtipc.NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("domain", help="the mtipc domain directory")
    ap.add_argument("table", help="the session table's name")
    ap.add_argument("group", type=int, nargs="?", default=1, help="worker group (default 1)")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds each request takes")
    args = ap.parse_args()

    pid = os.getpid()
    domain = mtipc.Domain(args.domain)
    table = open_table(domain, args.table, wait=10.0)
    worker = table.register_worker(args.group)
    print(f"{pid} g{args.group}: worker {worker.id:#x} ready", flush=True)

    # SIGTERM: stop after the request in hand. While waiting for one, the
    # handler runs inside worker's wait (between its 100 ms slices) and
    # closing the worker ends the `for` loop below.
    busy = False
    stopping = False
    served = 0

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if not busy:
            worker.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    with worker:
        for req in worker:
            busy = True
            text = bytes(req.data).decode("utf-8", "replace")  # copy: data is gone after respond
            if args.delay:
                time.sleep(args.delay)
            answer = f"{pid} g{args.group}: {text.upper()}"
            req.respond(answer.encode())
            print(f"{pid} g{args.group}: session {req.session:#x} {text!r} -> {answer!r}", flush=True)
            served += 1
            busy = False
            if stopping:
                break
        print(f"{pid} g{args.group}: stopping after {served} requests", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
