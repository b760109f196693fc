"""SIGINT / SIGTERM as a request to stop cleanly, from the first line of an entry point on.

This module imports no torch, so an entry point can call :func:`catch_early` before its heavy
imports: a signal that arrives while torch loads, or while the teacher and the data are read,
is remembered, and the run stops at the first point where it can leave a resumable
``last.pth`` (right after the first checkpoint, before the first step), with the same one-line
message as a stop during training. A second signal falls through to the default behaviour.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Handlers in place before this module installed its own.
_ORIGINAL: dict[int, Any] = {}
#: Names of the signals received before a :class:`StopRequest` was entered.
_EARLY: list[str] = []


def catch_early() -> None:
    """Record SIGINT / SIGTERM from now on (call first thing in an entry point's ``__main__``)."""
    for signum in SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread: no handlers
            _ORIGINAL.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, _record_early)


def _record_early(signum: int, frame: Any) -> None:
    _EARLY.append(signal.Signals(signum).name)
    signal.signal(signum, _ORIGINAL.get(signum, signal.SIG_DFL))


class StopRequest:
    """Turns SIGINT / SIGTERM into a flag the training loop checks after each step.

    The loop then writes ``last.pth`` and exits with a message saying how to resume, instead of
    dying in the middle of a step. A signal caught by :func:`catch_early` counts as received. A
    second signal falls through to the handler that was in place before.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = _EARLY[0] if _EARLY else None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for signum in SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                previous = signal.getsignal(signum)
                self._previous[signum] = _ORIGINAL.get(signum, previous)
                if self.signal_name is None:
                    signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        _EARLY.clear()

    @property
    def requested(self) -> bool:
        return self.signal_name is not None
