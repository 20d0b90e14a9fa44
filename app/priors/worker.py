"""Prior searches off the GUI thread: a :class:`QRunnable` that reports with signals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Signal

from app.priors.search import Mode, PriorResults, PriorSearch
from app.report.worker import MODEL_LOCK


class PriorSignals(QObject):
    """``finished``, ``failed`` or ``skipped``; each carries the request's mode and generation."""

    finished = Signal(str, int, object)  # mode, generation, PriorResults
    failed = Signal(str, int, str)  # mode, generation, one-line message
    skipped = Signal(str, int)  # mode, generation: superseded before it started


class PriorWorker(QRunnable):
    """Runs one :meth:`PriorSearch.search` in a thread pool.

    ``latest`` (optional) returns the newest generation requested; a worker
    whose generation is no longer the newest when it starts skips the model.
    The search takes ``app.report.worker.MODEL_LOCK``, the process-wide lock
    of the shared ``Reader`` (its caches are not thread-safe).
    """

    def __init__(
        self,
        search: PriorSearch,
        mode: Mode,
        *,
        generation: int,
        images: Sequence[Any] = (),
        draft: str = "",
        study_key: str | None = None,
        exclude: Sequence[str] = (),
        latest: Callable[[], int] | None = None,
    ) -> None:
        super().__init__()
        self.search = search
        self.mode = mode
        self.generation = generation
        self.images = list(images)
        self.draft = draft
        self.study_key = study_key
        self.exclude = tuple(exclude)
        self.latest = latest
        self.signals = PriorSignals()

    def run(self) -> None:
        if self.latest is not None and self.latest() != self.generation:
            self.signals.skipped.emit(self.mode, self.generation)
            return
        try:
            with MODEL_LOCK:
                result: PriorResults = self.search.search(
                    self.mode,
                    images=self.images,
                    draft=self.draft,
                    study_key=self.study_key,
                    exclude=self.exclude,
                )
        except Exception as exc:  # a worker must report, never die silently
            detail = " ".join(str(exc).split())[:160] or type(exc).__name__
            self.signals.failed.emit(self.mode, self.generation, f"the search failed ({detail})")
        else:
            self.signals.finished.emit(self.mode, self.generation, result)


class OpenerSignals(QObject):
    """``opened(token, PriorSearch)``: the index was loaded (or the reason it could not be)."""

    opened = Signal(int, object)


class IndexOpener(QRunnable):
    """Runs :meth:`PriorSearch.open` in a thread pool (loading verifies every file's checksum)."""

    def __init__(self, reader: Any, index_dir: Any, *, token: int, k: int) -> None:
        super().__init__()
        self.reader = reader
        self.index_dir = index_dir
        self.token = token
        self.k = k
        self.signals = OpenerSignals()

    def run(self) -> None:
        try:
            search = PriorSearch.open(self.reader, self.index_dir, k=self.k)
        except Exception as exc:  # a worker must report, never die silently
            detail = " ".join(str(exc).split())[:160] or type(exc).__name__
            search = PriorSearch(self.reader, None, k=self.k, index_dir=self.index_dir,
                                 error=f"the prior index cannot be opened ({detail})")
        self.signals.opened.emit(self.token, search)
