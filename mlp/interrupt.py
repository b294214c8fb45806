"""Ctrl-C during `fit`: the first one asks training to stop after the step under way (the model
stays usable, `fit` returns the History of the epochs that finished, `interrupted=True`); a
second one interrupts at once. Only in the main thread, where Python delivers signals, and
not in data-parallel runs, whose ranks must stop together."""
from __future__ import annotations

import signal
import threading


class StopRequest:
    def __init__(self, active=True):
        self.requested = False
        self._previous = None
        self._active = active and threading.current_thread() is threading.main_thread()

    def start(self):
        if self._active:
            self._previous = signal.signal(signal.SIGINT, self._ask)
        return self

    def _ask(self, signum, frame):
        if self.requested:  # asked twice: the user means now
            raise KeyboardInterrupt
        self.requested = True

    def stop(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
