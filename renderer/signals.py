"""Signals during a run: SIGINT, SIGTERM and SIGHUP stop the current job (recorded as interrupted), never setup,
cleanup or a finished job's sidecar; a second signal exits at once."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

from .ffmpeg import kill_children


class Interrupted(BaseException):
    """Raised from a signal handler so the current job stops and is recorded as interrupted."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalGuard:
    """SIGINT, SIGTERM and SIGHUP raise `Interrupted` once armed, except inside `held()`; otherwise they are only
    remembered (setup and cleanup, and a finished job's sidecar, are never cut short). A second signal exits at
    once: the kernel drops the lock and the next run sweeps the temporaries."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.received: int | None = None
        self.armed = False

    def arm(self) -> None:
        """Let signals raise from now on, starting with one that arrived before."""
        self.armed = True
        if self.received is not None:
            raise Interrupted(self.received)

    def handle(self, signum, frame) -> None:
        if self.received is not None:
            os.write(2, f"svdrender: second {signal.Signals(signum).name}: stopping at once\n".encode())
            kill_children()  # none may go on writing a temporary after we are gone
            os._exit(128 + signum)
        self.received = signum
        if self.armed:
            raise Interrupted(signum)

    @contextmanager
    def held(self):
        """Run a block that a signal must not cut; the caller checks `received` afterwards."""
        armed, self.armed = self.armed, False
        try:
            yield
        finally:
            self.armed = armed

    @property
    def exit_code(self) -> int | None:
        """128 + the signal received (130 SIGINT, 143 SIGTERM, 129 SIGHUP), or None."""
        return None if self.received is None else 128 + self.received


@contextmanager
def stop_on_signals():
    """Install a `SignalGuard` for the duration of a run.

    Python lets only the main thread set handlers; a run from another thread (a web app, a notebook helper) gets a
    guard that never fires, and the host application keeps its own signal handling.
    """
    guard = SignalGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {sig: signal.signal(sig, guard.handle) for sig in SignalGuard.SIGNALS}
    try:
        yield guard
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
