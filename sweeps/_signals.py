"""SIGTERM stops a sweep as Ctrl-C does: Tune saves its state, the runs close as interrupted, and
the command says how to continue it.

SIGTERM is what ``ray down``, a batch scheduler's time limit or a spot instance's notice sends.
Ray's own handlers would end the driver at once (``ray.init`` installs one that exits, and its core
worker then a native one that dumps a stack and aborts), with nothing saved. `install` runs after
Ray has started, so its handler is the one left in place: it passes the signal on to whatever
handles SIGINT at that moment -- inside ``Tuner.fit``, Tune's graceful stop (which puts back the
previous handler after the first signal, so a second SIGTERM stops at once, as a second Ctrl-C);
elsewhere, Python's ``KeyboardInterrupt``.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

# The exit status of a sweep stopped by SIGTERM: 128 + 15, as a shell reports a process killed
# by it, so a scheduler can tell it from Ctrl-C's 130 and from a failure.
SIGTERM_EXIT = 128 + signal.SIGTERM
SIGINT_EXIT = 128 + signal.SIGINT


class StopSignals:
    """The driver's SIGTERM handler; ``received``: the stop signal that arrived, if any."""

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> None:
        """Handle SIGTERM from now on (call after Ray starts; a no-op off the main thread)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def exit_status(self) -> int:
        """How an interrupted sweep exits: 143 after SIGTERM, else 130 (Ctrl-C)."""
        return SIGTERM_EXIT if self.received == signal.SIGTERM else SIGINT_EXIT

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        self.received = signum
        if first:
            log.warning("SIGTERM: stopping the sweep as Ctrl-C would (its state is saved; "
                        "send it again to stop at once)")
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:  # SIG_IGN or SIG_DFL: as Python's default for Ctrl-C
            raise KeyboardInterrupt
