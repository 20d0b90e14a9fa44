"""Keeping the draft safe in the window: autosave every few seconds, and Qt signals for
what the reading session reports about saving.

The saving itself (versions, conflicts, recovery files) is the reading
session's (:class:`app.session.ReadingSession`); this object adds the timer and
turns the session's events into signals: ``saved(ReportState, kind)``,
``failed(message)`` (the text is then in the recovery file) and
``conflict(ConcurrentEditError)`` (someone else saved first).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app.session import ReadingSession, RecoveryFiles, SaveOutcome, recovery_dir
from app.storage import ReportState, Storage

__all__ = ["ReportKeeper", "SaveOutcome", "recovery_dir"]


class ReportKeeper(QObject):
    """The open study's report on its way to storage.

    ``source`` is the window's :class:`ReadingSession` (or a :class:`Storage`, for
    which the keeper makes its own session); ``text_source`` returns the
    editor's current text.
    """

    saved = Signal(object, str)
    failed = Signal(str)
    conflict = Signal(object)

    def __init__(self, source: ReadingSession | Storage, text_source: Callable[[], str], *,
                 interval_s: float = 3.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = source if isinstance(source, ReadingSession) else ReadingSession(source)
        self.storage = self.session.storage
        self._text = text_source
        self._timer = QTimer(self)
        self._timer.setInterval(max(250, int(interval_s * 1000)))
        self._timer.timeout.connect(self.autosave)
        self.session.subscribe(self._on_event)

    def _on_event(self, event: str, payload: Any) -> None:
        if event == "saved":
            state, kind = payload
            self.saved.emit(state, kind)
        elif event == "save_failed":
            self.failed.emit(payload)
        elif event == "conflict":
            self.conflict.emit(payload)
        elif event == "signed":
            self._timer.stop()

    def set_interval(self, seconds: float) -> None:
        self._timer.setInterval(max(250, int(float(seconds) * 1000)))

    @property
    def study_id(self) -> int | None:
        return self.session.study_id

    @property
    def state(self) -> ReportState | None:
        return self.session.state

    @property
    def recovery(self) -> RecoveryFiles:
        return self.session.recovery

    # ----------------------------------------------------------------- study

    def open(self, study_id: int) -> tuple[ReportState, str | None]:
        """Start keeping ``study_id``; returns storage's report and recovered text (or None)."""
        recovered = self.session.open(study_id)
        assert self.session.state is not None
        if self.session.state.signed:
            self._timer.stop()
        else:
            self._timer.start()
        return self.session.state, recovered

    def close(self) -> SaveOutcome | None:
        """Autosave the last words and stop keeping the study."""
        self._timer.stop()
        if self.session.study_id is None:
            return None
        return self.session.close(self._text())

    @property
    def dirty(self) -> bool:
        return self.session.dirty(self._text())

    # ----------------------------------------------------------------- saving

    def autosave(self) -> SaveOutcome | None:
        """Write the text as an ``autosave`` version when it changed; None when nothing to do."""
        return self.session.autosave(self._text())

    def save(self) -> SaveOutcome:
        """Write the text as a ``save`` version (even if unchanged, a deliberate save is one)."""
        return self.session.save(self._text())

    def overwrite_after_conflict(self) -> SaveOutcome:
        return self.session.overwrite_after_conflict(self._text())

    def take_theirs(self) -> str:
        return self.session.take_theirs(self._text())

    def signed(self, state: ReportState) -> None:
        """The report was signed (the session already knows): stop autosaving."""
        self._timer.stop()

    def recovery_path(self, study_id: int) -> Path:
        return self.session.recovery.path(study_id)
