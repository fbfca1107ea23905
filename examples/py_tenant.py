"""A tenant in Python: advertises itself in an mtipc domain and answers every
message of every attacher with "py-tenant: <message>".

Usage: python examples/py_tenant.py DOMAIN_DIR [TENANT_ID]   (stop it with Ctrl-C or SIGTERM)
Try it: mtipcd --domain DOMAIN_DIR, then mtipc --domain DOMAIN_DIR attach py-tenant
"""

import signal
import sys
import threading

import mtipc


def main(path: str, tenant: str) -> None:
    def serve(conn: mtipc.Conn) -> None:
        # Called on a thread of its own for each attacher; owns the connection.
        print(f"{tenant}: attached", flush=True)
        with conn:
            for message in conn:  # until the attacher closes, or its time is up
                conn.send(b"py-tenant: " + message)
        print(f"{tenant}: connection closed", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    with mtipc.Domain(path) as d, mtipc.advertise(d, tenant, serve):
        print(f"{tenant}: advertised, waiting for attachers", flush=True)
        stop.wait()
    # Withdrawn: no new attacher finds us. Connections still open are closed
    # when the interpreter exits.
    print(f"{tenant}: withdrawn", flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print("usage: python examples/py_tenant.py DOMAIN_DIR [TENANT_ID]", file=sys.stderr)
        sys.exit(2)
    tenant = sys.argv[2] if len(sys.argv) > 2 else "py-tenant"
    try:
        main(sys.argv[1], tenant)
    except mtipc.Error as e:  # every mtipc error; one subclass per status
        print(f"{tenant}: {e.status_name}: {e}", file=sys.stderr)
        sys.exit(1)
