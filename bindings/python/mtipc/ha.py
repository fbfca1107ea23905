"""The HA hooks: how an application supervised by ``mtipc-ha`` takes part.

The HA Spawner starts each process with ``MTIPC_HA_SOCKET`` naming the HA
Monitor's socket. Through it the application says that it is ready
(``ready()``, for ``ready = "notify"``) and alive (``heartbeat()``, for
``watchdog_ms``), answers the Monitor's health polls with its own check
(``set_health(fn)``), and learns its node's role (``on_role(fn)``,
``role()``)::

    import mtipc.ha

    mtipc.ha.on_role(lambda role, epoch: serve(role == mtipc.ha.Role.ACTIVE))
    mtipc.ha.set_health(lambda: queue_depth() < 1000)
    mtipc.ha.ready()
    while True:
        work()
        mtipc.ha.heartbeat()

Outside supervision (``supervised()`` is False) every call does nothing
and ``role()`` is ``(Role.NONE, 0)``; no callback is ever called.

Under supervision the first call connects to the Monitor; a thread of the
library then answers health polls and delivers role changes (the
callbacks run on it, holding the GIL; an exception in one goes to
``sys.unraisablehook``, and counts as unhealthy for the health callback).
While no Monitor is connected, ``ready()``, ``heartbeat()`` and
``set_health()`` raise ``mtipc.UnavailableError`` (the library reconnects
by itself, and tells a new Monitor that the application is ready);
``role()`` keeps the role learned last. See docs/ha.md.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from . import _mtipc

__all__ = ["Role", "supervised", "ready", "heartbeat", "set_health", "on_role", "role"]


class Role(enum.IntEnum):
    """The role of the node (the C ``mt_ha_role``)."""

    NONE = 0
    """No role: outside supervision, or a node that has not taken one."""
    ACTIVE = 1
    """The active node (a node that is not paired is active, epoch 1)."""
    STANDBY = 2
    """The standby node of a duplex pair."""


def supervised() -> bool:
    """Whether this process runs under the HA supervisor."""
    return _mtipc._ha_supervised()


def ready() -> None:
    """Tells the Monitor that the application is ready (kept, and told
    again to a Monitor that restarts). Returns once it is sent, without
    waiting for the Monitor, and starts no thread (only a callback of
    ``set_health`` or ``on_role`` does). A process the HA Spawner started
    with its connection already made (``MTIPC_HA_FD``) sends on that one.
    Raises ``UnavailableError`` while no Monitor is connected."""
    _mtipc._ha_ready()


def heartbeat() -> None:
    """Tells the Monitor that the application is alive. Raises
    ``UnavailableError`` while no Monitor is connected."""
    _mtipc._ha_heartbeat()


def set_health(fn: Callable[[], bool] | None) -> None:
    """Registers the health check the Monitor polls (every ``monitor_ms``):
    it returns True when healthy, and is called on a thread of the library
    (started by the first registration). ``None`` removes it (the Monitor
    stops polling). Raises
    ``UnavailableError`` while no Monitor is connected (the check is kept
    all the same)."""
    _mtipc._ha_set_health(fn)


def on_role(fn: Callable[[Role, int], None] | None) -> None:
    """Registers the role callback: called at once with the current role
    and epoch, then on every change. ``None`` removes it. Raises
    ``UnavailableError`` if no Monitor has ever answered (the callback is
    kept and called once one does), ``InvalidError`` from inside a role
    callback."""
    if fn is None:
        _mtipc._ha_on_role(None)
        return
    callback = fn

    def deliver(role: int, epoch: int) -> None:
        callback(Role(role), epoch)

    _mtipc._ha_on_role(deliver)


def role() -> tuple[Role, int]:
    """The node's role and epoch as the Monitor last said them;
    ``(Role.NONE, 0)`` outside supervision. Raises ``UnavailableError`` if
    no Monitor has ever answered."""
    r, epoch = _mtipc._ha_role()
    return Role(r), epoch
