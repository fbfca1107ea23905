"""Delivers the library's events to the ``logging`` logger ``mtipc``.

The Rust core queues its events (it may emit them on threads that must not
take the GIL); a daemon thread started at import takes them from the queue
and logs them, with the record's ``name`` ``mtipc`` and the emitting
module (``mtipc::attach::relay``) in ``extra={"mtipc_target": ...}``. The
thread also re-reads the logger's effective level at least once a second
and tells the core, so events that no handler would keep are not even
formatted; a level set with ``logging.basicConfig`` after ``import mtipc``
applies within a second.
"""

from __future__ import annotations

import atexit
import logging
import threading

from . import _mtipc

logger = logging.getLogger("mtipc")

_POLL = 1.0  # seconds between level checks when no event comes


def _effective_level() -> int:
    if logger.disabled:
        return logging.CRITICAL + 1
    return logger.getEffectiveLevel()


def _run() -> None:
    level = _effective_level()
    _mtipc._log_level(level)
    while True:
        events = _mtipc._log_take(_POLL)
        if events is None:
            return  # stopped at exit
        for py_level, target, message in events:
            logger.log(py_level, "%s", message, extra={"mtipc_target": target})
        now = _effective_level()
        if now != level:
            level = now
            _mtipc._log_level(level)


def _stop(thread: threading.Thread) -> None:
    # atexit runs before the interpreter finalizes; a daemon thread still
    # inside the extension then would be killed in the middle of Rust code.
    _mtipc._log_stop()
    thread.join(timeout=5.0)


def start() -> None:
    """Starts the delivery thread (once; called at import) and stops it at exit."""
    _mtipc._log_level(_effective_level())
    thread = threading.Thread(target=_run, name="mtipc-log", daemon=True)
    thread.start()
    atexit.register(_stop, thread)
