"""A processing instance in Python that uploads and downloads files through
a gateway volume, asking for a permit before each transfer:

    python examples/py_gateway.py DOMAIN VOLUME NAME SECONDS [--size BYTES] [--hold]

For SECONDS it loops: a write permit on ``NAME/upload.dat`` and a put of a
local file there (BYTES long, 256 KiB by default), or a read permit on a
file another instance uploaded and a get; each permit is held for the
transfer plus 5 ms. At the end it prints one line:

    py_gateway NAME pid 4242: 37 grants (25 puts, 12 gets), 0 fenced, tokens 3..290

With --hold it takes one write permit on ``NAME/big.dat``, says
``putting`` and puts a large file (BYTES) there, then sleeps: the demo
kills it with SIGKILL in the middle of that put, and shows that the permit
is reclaimed and that no half-written file appears under the final name.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import mtipc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("domain")
    ap.add_argument("volume")
    ap.add_argument("name")
    ap.add_argument("seconds", type=float)
    ap.add_argument("--size", type=int, default=256 * 1024)
    ap.add_argument("--hold", action="store_true")
    a = ap.parse_args()
    with mtipc.Domain(a.domain) as d, tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        with open(src, "wb") as f:
            f.write(bytes((i * 7) % 251 for i in range(min(a.size, 1 << 20))))
            if a.size > 1 << 20:
                f.truncate(a.size)
        if a.hold:
            with d.permit(a.volume, f"{a.name}/big.dat", "write", timeout=5) as p:
                print(f"py_gateway {a.name} pid {os.getpid()}: holding token {p.token}, putting", flush=True)
                p.put(src)
                time.sleep(600)
            return 0
        dst = os.path.join(tmp, "dst")
        grants = puts = gets = fenced = 0
        first, last = None, 0
        n = 0
        until = time.monotonic() + a.seconds
        while time.monotonic() < until:
            n += 1
            # Own file, a shared file (others read it), or a read of one.
            kind = n % 3
            upload = kind != 2
            path = f"{a.name}/upload.dat" if kind == 0 else f"shared/common-{(n // 3) % 4}.dat"
            with d.permit(a.volume, path, "write" if upload else "read", timeout=5) as p:
                if time.monotonic() >= until:
                    break  # granted after the run's end: not counted
                try:
                    if upload:
                        p.put(src)
                        puts += 1
                    else:
                        p.get(dst)
                        gets += 1
                except mtipc.NotFoundError:
                    pass  # nobody uploaded that file yet
                except mtipc.FencedError:
                    fenced += 1
                time.sleep(0.005)
                grants += 1
                first = p.token if first is None else min(first, p.token)
                last = max(last, p.token)
        print(
            f"py_gateway {a.name} pid {os.getpid()}: {grants} grants ({puts} puts, {gets} gets), "
            f"{fenced} fenced, tokens {first}..{last}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
