"""Open an mtipc domain, show it, post to its semaphore and take a unit back.

Usage: python examples/py_domain.py [DOMAIN_DIR]   (default: a temporary one)
"""

import sys
import tempfile

import mtipc


def main(path: str) -> None:
    with mtipc.Domain(path) as d:  # created owner-only if missing
        info = d.info()
        print(f"domain {info['path']}: layout {info['layout_version']}, owner uid {info['owner_uid']}")
        d.sem_post(2)
        print("after post 2:", d.sem_value())
        d.sem_wait(timeout=1.0)  # seconds; None waits forever
        print("after one wait:", d.sem_value())
        print("reset cleared", d.sem_reset())
        try:
            d.sem_wait(timeout=0.05)
        except mtipc.TimeoutError as e:
            print(f"nothing left: {e.status_name}: {e}")


if __name__ == "__main__":
    try:
        if len(sys.argv) > 1:
            main(sys.argv[1])
        else:
            with tempfile.TemporaryDirectory() as tmp:
                main(tmp + "/domain")
    except mtipc.Error as e:  # every mtipc error; one subclass per status
        print(f"mtipc: {e.status_name}: {e}", file=sys.stderr)
        sys.exit(1)
