"""SIGTERM/SIGINT as a request to stop at the next step boundary (checkpoint, then exit 143/130).

Schedulers (Slurm, Kubernetes) send SIGTERM and wait a grace period before SIGKILL; the runner
uses that time to save the cell's state so a restart continues where it stopped.
"""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """Installs handlers in the main thread; `requested` says whether a stop signal arrived."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_status(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Interrupted(Exception):
    """Raised inside a cell after its state was checkpointed because a stop was requested."""

    def __init__(self, step: int, checkpoint: str):
        super().__init__(f"stopped by signal at step {step}; state saved to {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint
