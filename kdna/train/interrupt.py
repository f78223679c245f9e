"""Ctrl-C (SIGINT) and SIGTERM during :func:`kdna.train.train_classifier`: stop cleanly, lose
nothing.

While :class:`StopSignals` is active, a signal does not kill the loop: it is *recorded*, the
current optimiser step finishes, ``last.pt`` is written atomically at that exact position and
:class:`TrainingInterrupted` is raised (it names the checkpoint and the signal; the command
line turns it into the resume command and exit status 130 or 143). During evaluation, which
may be long, the signal interrupts at once: the checkpoint is then the position just before
evaluation, which a resumed run evaluates first. A second signal while the first is being
handled falls back to the previous handler (a second Ctrl-C is Python's usual
``KeyboardInterrupt``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TypeVar

__all__ = ["StopSignals", "TrainingInterrupted", "ignore_sigint"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal; ``checkpoint`` (or ``None`` on ranks other than 0) holds
    the position reached. ``exit_code`` is the shell's convention, 128 + the signal number."""

    def __init__(self, signum: int, checkpoint: Path | None, step: int) -> None:
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        saved = (f"saved {str(checkpoint)!r}; resume with train_classifier(..., "
                 f"resume={str(checkpoint)!r})"
                 if checkpoint is not None else "rank 0 saved the checkpoint")
        super().__init__(f"training interrupted by {self.signal_name} after step {step}: {saved}")


class _Abort(Exception):
    """Raised by the handler while an interruptible phase (evaluation) runs."""


class StopSignals:
    """Record SIGINT and SIGTERM instead of dying, for the ``with`` block (main thread only;
    elsewhere it does nothing). ``received`` is the first signal's number, or ``None``."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.abortable = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # the second signal: the user insists
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        self.received = signum
        if self.abortable:
            raise _Abort

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def interruptibly(self, work: Callable[[], T]) -> tuple[bool, T | None]:
        """``(True, work())``, or ``(False, None)`` when a signal came before or during it
        (a signal ends ``work`` at once: evaluation need not finish)."""
        if self.received is not None:
            return False, None
        try:
            self.abortable = True
            return True, work()
        except _Abort:
            return False, None
        finally:
            self.abortable = False


def ignore_sigint(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C reaches the whole process group, but only the main
    process decides when to stop, so workers ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
