"""An application supervised by mtipc-ha, in Python: mtipc.ha. It reports
its role, answers health polls, says ready after INIT_MS, heartbeats
every 200 ms and stops on SIGTERM.

    python py_ha_app.py NAME [INIT_MS]

Outside supervision every call does nothing. `make demo` runs it under
`mtipc-ha up`.
"""

import os
import signal
import sys
import time

import mtipc
import mtipc.ha


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: py_ha_app.py NAME [INIT_MS]", file=sys.stderr)
        return 2
    name = sys.argv[1]
    init_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    print(f"{name}: Python application, pid {os.getpid()}, "
          f"supervised: {'yes' if mtipc.ha.supervised() else 'no'}", flush=True)
    mtipc.ha.on_role(lambda role, epoch: print(f"{name}: role {role.name.lower()}, epoch {epoch}", flush=True))
    mtipc.ha.set_health(lambda: True)
    time.sleep(init_ms / 1000)
    mtipc.ha.ready()
    print(f"{name}: ready", flush=True)
    while not stop:
        try:
            mtipc.ha.heartbeat()
        except mtipc.Error:
            pass  # unavailable while the Monitor restarts: it reconnects
        time.sleep(0.2)
    print(f"{name}: SIGTERM, stopping", flush=True)
    mtipc.ha.on_role(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
