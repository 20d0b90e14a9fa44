"""Running a function off the GUI thread and getting its result back as a signal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(str)


class Job(QRunnable):
    """``fn()`` in a pool thread; ``signals.done(result)`` or ``signals.failed(one line)``.

    Signals are queued to the receiver's thread, so slots run on the GUI thread.
    """

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.fn = fn
        self.signals = _Signals()
        self.setAutoDelete(True)

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # reported to the GUI as one line, never raised in a pool thread
            self.signals.failed.emit(_one_line(exc))
            return
        self.signals.done.emit(result)


def run_in_background(
    fn: Callable[[], Any],
    on_done: Callable[[Any], None],
    on_failed: Callable[[str], None],
    pool: QThreadPool | None = None,
) -> Job:
    job = Job(fn)
    job.signals.done.connect(on_done)
    job.signals.failed.connect(on_failed)
    (pool or QThreadPool.globalInstance()).start(job)
    return job


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    return message if len(message) < 400 else message[:397] + "..."
