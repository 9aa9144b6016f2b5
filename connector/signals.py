"""Stopping a one-shot sync cleanly on SIGTERM or SIGINT (Ctrl-C).

The first signal sets the run's stop event: the engine stops handing records to the
push pool, lets the requests in flight finish, saves their links and commits the CRM
cursor up to the last page handled in full (``connector sync --once`` then exits 130).
A second signal interrupts at once (:class:`KeyboardInterrupt`). ``connector run``
has its own handlers (:meth:`connector.daemon.Daemon.install_signal_handlers`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Within the block, SIGTERM/SIGINT set ``stop``; a second one raises KeyboardInterrupt.

    Signal handlers can only be installed from the main thread; elsewhere (a test
    runner's thread) the block runs without them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        log.warning(
            "%s received: finishing the requests in flight, then stopping (again to stop at once)",
            signal.Signals(signum).name,
            extra={"event": "stop"},
        )

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
