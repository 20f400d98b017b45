"""SIGINT (Ctrl-C) and SIGTERM as one exception, so that long commands stop the same way
for both and can say what was kept and how to go on.

Within :func:`interruptible`, either signal raises :class:`Interrupted`. It is a
``BaseException`` but not a ``KeyboardInterrupt``: code that catches
``KeyboardInterrupt`` to record a failure (Optuna marks a trial FAIL on one, and never
runs it again) lets it through, so an interrupted trial is left as a killed one would
be, and re-queued by the next session.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while :func:`interruptible` was in force."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        """``SIGINT`` or ``SIGTERM``."""
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by this signal (130, 143)."""
        return 128 + self.signum


@contextmanager
def interruptible(then_ignore: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` within (main thread only; elsewhere
    nothing changes). After the first signal the previous handlers are back, or, with
    ``then_ignore`` (a worker process that its parent also signals), both signals are
    ignored while the worker winds down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    before: dict[int, Any] = {s: signal.getsignal(s) for s in sigs}

    def restore() -> None:
        for s in sigs:
            signal.signal(s, signal.SIG_IGN if then_ignore else before[s])

    def handler(signum: int, frame: Any) -> None:
        global _pending
        restore()
        if _holding:  # within held(): raised as that step ends
            _pending = signum
            return
        raise Interrupted(signum)

    for s in sigs:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s in sigs:
            if signal.getsignal(s) is handler or not then_ignore:
                signal.signal(s, before[s])


def die_with_parent(parent: int) -> None:
    """End this process when the process ``parent`` ends, however it ends (one killed
    outright would otherwise leave its worker computing what the next run of the command
    computes again in the same folder): at once on Linux (``PR_SET_PDEATHSIG``, sent when
    the thread that started this process ends), and within a second anywhere (a thread
    watching for this process being handed to another parent). For a worker process's
    start (the web's job children, a study's and a search's training processes)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # gone before the line above took effect
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="braintumor-parent-watch").start()


#: how many :func:`held` blocks are open, and the signal that came during them
_holding = 0
_pending: int | None = None


@contextmanager
def held() -> Iterator[None]:
    """Within :func:`interruptible`, a step that must not be cut in two (a label map and
    its row in the table): SIGINT or SIGTERM arriving during it raises
    :class:`Interrupted` as it ends, not within it."""
    global _holding, _pending
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        if not _holding and _pending is not None:  # the signal before a failure's report
            signum, _pending = _pending, None
            raise Interrupted(signum)
