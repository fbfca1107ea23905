"""The connection manager of the mtipc session demo.

    python examples/py_manager.py DOMAIN TABLE [--sessions 6] [--requests 120]
        [--tenants acme,globex,initech] [--groups 0,1] [--in-flight 4]
        [--pace SECONDS] [--timeout SECONDS] [--strict] [--keep]

Creates the session table TABLE in DOMAIN if needed, creates --sessions
sessions for a few tenants, each belonging to one worker group (taken in
turn from --groups: in the demo group 0 is served by C workers and group 1
by Python workers), then submits --requests requests round-robin over the
sessions, keeping up to --in-flight of them waiting at once.

Workers answer a request with "<pid> g<group>: <the request text,
upper-cased or reversed>" (py_worker.py and c_worker.c upper-case). The
manager checks each answer against its request and prints, per session,
which worker process served it: the first time, and every time the
session moves to another worker (when a worker is killed, its sessions
move to the survivors of its group). At the end it prints, per
session, the workers that served it, and a summary:

    answered   requests answered with their own text
    failed     requests reported failed (UnavailableError: no live worker)
    lost       requests neither answered nor failed within --timeout
    wrong      answers that do not match their request (or came twice)

Exit status: 0 when nothing was lost or wrong (with --strict, also nothing
failed), 1 otherwise; so it doubles as a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from dataclasses import dataclass, field

import mtipc


@dataclass
class Session:
    """A session of the demo and what the manager saw of it."""

    id: int
    tenant: str
    group: int
    served_by: list[int] = field(default_factory=list)  # pid per answered request


@dataclass
class Pending:
    """A request waiting for its response."""

    number: int
    session: Session
    text: str
    ticket: mtipc.Ticket


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("domain", help="the mtipc domain directory")
    ap.add_argument("table", help="the session table's name")
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--tenants", default="acme,globex,initech")
    ap.add_argument("--groups", default="0,1", help="worker groups, comma-separated")
    ap.add_argument("--in-flight", type=int, default=4, help="requests waiting at once")
    ap.add_argument("--pace", type=float, default=0.0, help="seconds between two submissions")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for one answer")
    ap.add_argument(
        "--wait-workers",
        type=int,
        default=0,
        help="first wait (at most --timeout s) until each group has this many idle workers",
    )
    ap.add_argument("--strict", action="store_true", help="a failed request is an error too")
    ap.add_argument("--keep", action="store_true", help="do not end the sessions at the end")
    args = ap.parse_args()
    tenants = args.tenants.split(",")
    groups = [int(g) for g in args.groups.split(",")]

    domain = mtipc.Domain(args.domain)
    table = mtipc.SessionTable.open_or_create(domain, args.table, groups=max(2, max(groups) + 1))
    print(f"manager {os.getpid()}: table {args.table!r}, capacity {table.capacity}, {table.groups} groups", flush=True)

    if args.wait_workers:
        # A new session's first request goes to an idle worker of its group;
        # workers that have not registered yet cannot be given any.
        deadline = time.monotonic() + args.timeout
        while True:
            snap = table.snapshot()
            idle = {g["group"]: sum(w["idle"] for w in g["workers"]) for g in snap["groups"]}
            if all(idle.get(g, 0) >= args.wait_workers for g in groups):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"manager: fewer than {args.wait_workers} idle workers per group: {idle}")
            time.sleep(0.01)
        print(f"workers idle per group: {', '.join(f'{g}: {idle[g]}' for g in groups)}", flush=True)

    sessions = []
    for i in range(args.sessions):
        tenant, group = tenants[i % len(tenants)], groups[i % len(groups)]
        sid = table.create_session(tenant, state=1, user=f"demo session {i}".encode())
        sessions.append(Session(sid, tenant, group))
        print(f"session {sid:#x}: tenant {tenant}, group {group}", flush=True)

    answered = failed = lost = wrong = 0
    seen: set[int] = set()  # request numbers answered
    pending: collections.deque[Pending] = collections.deque()

    def collect(p: Pending) -> None:
        """Waits for one request's answer and checks it."""
        nonlocal answered, failed, lost, wrong
        s = p.session
        try:
            answer = p.ticket.wait(timeout=args.timeout).decode("utf-8", "replace")
        except mtipc.TimeoutError:
            lost += 1
            print(f"request {p.number} of session {s.id:#x}: LOST (no answer in {args.timeout} s)", flush=True)
            return
        except mtipc.Error as e:
            failed += 1
            print(f"request {p.number} of session {s.id:#x}: failed: {type(e).__name__}: {e}", flush=True)
            return
        head, _, body = answer.partition(": ")
        words = head.split()
        if body not in (p.text.upper(), p.text[::-1]) or len(words) != 2 or not words[0].isdigit() or p.number in seen:
            wrong += 1
            print(f"request {p.number} of session {s.id:#x}: WRONG answer {answer!r}", flush=True)
            return
        seen.add(p.number)
        answered += 1
        pid = int(words[0])
        if not s.served_by:
            print(f"session {s.id:#x} ({s.tenant}, group {s.group}): served by worker pid {pid}", flush=True)
        elif s.served_by[-1] != pid:
            print(
                f"session {s.id:#x} ({s.tenant}, group {s.group}): MOVED from pid {s.served_by[-1]} to pid {pid}",
                flush=True,
            )
        s.served_by.append(pid)

    for n in range(args.requests):
        s = sessions[n % len(sessions)]
        text = f"request {n} of {s.tenant} session {s.id:#x}"
        while True:
            try:
                ticket = table.submit(s.id, s.group, text.encode())
                break
            except mtipc.FullError:  # every request slot in use: make room
                if not pending:
                    raise
                collect(pending.popleft())
        pending.append(Pending(n, s, text, ticket))
        if len(pending) >= args.in_flight:
            collect(pending.popleft())
        if args.pace:
            time.sleep(args.pace)
    while pending:
        collect(pending.popleft())

    print("per session:", flush=True)
    for s in sessions:
        runs: list[list[int]] = []  # [pid, count] of consecutive requests served by one worker
        for pid in s.served_by:
            if runs and runs[-1][0] == pid:
                runs[-1][1] += 1
            else:
                runs.append([pid, 1])
        by = ", then ".join(f"pid {pid} x{count}" for pid, count in runs) or "nobody"
        print(f"  session {s.id:#x} {s.tenant:8} group {s.group}: {by}", flush=True)

    # Every request is collected: no session may count one in flight.
    inconsistent = table.audit()
    inconsistent += [(s.id, n, 0) for s in sessions if (n := table.lookup(s.id).in_flight)]
    if inconsistent:
        wrong += len(inconsistent)
        print(f"in_flight counts off: {inconsistent}", flush=True)
    if not args.keep:
        for s in sessions:
            table.end(s.id)

    print(
        f"summary: {args.requests} requests, answered {answered}, failed {failed}, lost {lost}, wrong {wrong}",
        flush=True,
    )
    ok = lost == 0 and wrong == 0 and answered + failed == args.requests and (failed == 0 or not args.strict)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
