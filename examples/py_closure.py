"""Publish a shared closure, then map its current version and read it in
place (what any other process of the domain would do).

Usage: python examples/py_closure.py [DOMAIN_DIR]   (default: the default domain)
"""

import sys

import mtipc

with mtipc.Domain(sys.argv[1] if len(sys.argv) > 1 else None) as d:
    version = mtipc.publish_closure(d, "routing", {"queue": "billing", "weight": 3, "blob": b"\x00\x01"})
    with mtipc.open_closure(d, "routing") as c:  # holds this version until the block ends
        routing = c.value  # a read-only Mapping over the mapped file
        assert isinstance(routing, mtipc.ClosureMap)
        blob = routing["blob"]  # a read-only memoryview: no copy
        assert isinstance(blob, memoryview)
        print(f"routing v{version}: queue {routing['queue']}, weight {routing['weight']}, blob {blob.hex()}")
        del blob  # views keep the version open: let go of them too
