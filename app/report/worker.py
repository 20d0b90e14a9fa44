"""The check off the GUI thread: a :class:`QRunnable` that reports with signals."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Signal

from core_model.inference import CheckError, as_study_image

#: One model is not safe to run from two threads at once (its caches are plain
#: dictionaries), so every check in the process takes this lock.
MODEL_LOCK = threading.Lock()


class CheckSignals(QObject):
    """``finished``, ``failed`` or ``skipped``; each carries the request's generation."""

    finished = Signal(int, str, object, object)  # generation, checked text, CheckResult, images
    failed = Signal(int, str, str)  # generation, checked text, one-line message
    skipped = Signal(int)  # generation: superseded before it started


class CheckWorker(QRunnable):
    """Runs ``reader.check(images, text)`` in a thread pool.

    ``latest`` (optional) returns the newest generation requested; a worker
    whose generation is no longer the newest when it starts skips the model.
    ``images`` may be paths, arrays or ``StudyImage``; the decoded images come
    back with the result so the caller can keep them for the next check.
    """

    def __init__(
        self,
        reader: Any,
        images: Sequence[Any],
        text: str,
        *,
        study_key: str | None,
        generation: int,
        latest: Callable[[], int] | None = None,
        heatmaps: bool = True,
        show_unreliable: bool = False,
    ) -> None:
        super().__init__()
        self.reader = reader
        self.images = list(images)
        self.text = text
        self.study_key = study_key
        self.generation = generation
        self.latest = latest
        self.heatmaps = heatmaps
        self.show_unreliable = show_unreliable
        self.signals = CheckSignals()

    def run(self) -> None:
        if self.latest is not None and self.latest() != self.generation:
            self.signals.skipped.emit(self.generation)
            return
        try:
            with MODEL_LOCK:
                images = [as_study_image(im) for im in self.images]
                extra = {"show_unreliable": True} if self.show_unreliable else {}
                result = self.reader.check(
                    images, self.text, study_key=self.study_key, heatmaps=self.heatmaps, **extra
                )
        except CheckError as exc:
            self.signals.failed.emit(self.generation, self.text, str(exc))
        except Exception as exc:  # a worker must report, never die silently
            detail = " ".join(str(exc).split())[:160] or type(exc).__name__
            self.signals.failed.emit(self.generation, self.text, f"the check failed ({detail})")
        else:
            self.signals.finished.emit(self.generation, self.text, result, images)
