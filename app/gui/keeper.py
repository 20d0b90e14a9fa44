"""Keeping the draft safe: autosave every few seconds, save, sign, and a recovery file.

Every save is a report version in storage (:mod:`app.storage`).  When storage
cannot take the text (database locked, disk full, someone else saved the
report first), the text is written to a recovery file beside the database and
the editor keeps it; the next successful save removes the file.  Opening the
study again restores a recovery file newer than what storage holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from app.storage import ConcurrentEditError, ReportState, Storage, StorageError
from core_model.files import atomic_write_text


@dataclass(frozen=True)
class SaveOutcome:
    ok: bool
    message: str
    conflict: ConcurrentEditError | None = None


def recovery_dir(storage: Storage) -> Path:
    """Where unsaved drafts go when storage refuses them (per database)."""
    from platformdirs import user_data_dir

    base = os.environ.get("CONCORD_RECOVERY_DIR") or str(Path(user_data_dir("Concord")) / "recovery")
    name = "".join(c if c.isalnum() else "_" for c in storage.location)[-80:]
    return Path(base) / name


class ReportKeeper(QObject):
    """The open study's report: what storage holds, and the editor's text on its way there.

    ``text_source`` is a callable returning the editor's current text.  Signals:
    ``saved(ReportState, kind)`` after a version is written, ``failed(message)``
    when one could not be (the text is then in the recovery file), and
    ``conflict(ConcurrentEditError)`` when another writer saved first.
    """

    saved = Signal(object, str)
    failed = Signal(str)
    conflict = Signal(object)

    def __init__(self, storage: Storage, text_source, *, interval_s: float = 3.0,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.storage = storage
        self._text = text_source
        self.study_id: int | None = None
        self.state: ReportState | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(max(250, int(interval_s * 1000)))
        self._timer.timeout.connect(self.autosave)
        self._in_conflict = False

    def set_interval(self, seconds: float) -> None:
        self._timer.setInterval(max(250, int(float(seconds) * 1000)))

    # ----------------------------------------------------------------- study

    def open(self, study_id: int) -> tuple[ReportState, str | None]:
        """Start keeping ``study_id``; returns storage's report and recovered text (or None)."""
        self.study_id = study_id
        self.state = self.storage.report(study_id)
        self._in_conflict = False
        recovered = self._read_recovery(study_id)
        if recovered is not None and recovered == self.state.text:
            self._drop_recovery(study_id)
            recovered = None
        if not self.state.signed:
            self._timer.start()
        else:
            self._timer.stop()
        return self.state, recovered

    def close(self) -> SaveOutcome | None:
        """Autosave the last words and stop keeping the study."""
        outcome = self.autosave() if self.study_id is not None else None
        self._timer.stop()
        self.study_id = None
        self.state = None
        return outcome

    @property
    def dirty(self) -> bool:
        return (self.state is not None and not self.state.signed
                and self._text() != self.state.text)

    # ----------------------------------------------------------------- saving

    def autosave(self) -> SaveOutcome | None:
        """Write the text as an ``autosave`` version when it changed; None when nothing to do."""
        if self.study_id is None or self.state is None or self.state.signed or not self.dirty:
            return None
        if self._in_conflict:
            self._write_recovery(self.study_id, self._text())
            return None  # the user decides how to resolve it; keep their words meanwhile
        return self._save("autosave")

    def save(self) -> SaveOutcome:
        """Write the text as a ``save`` version (even if unchanged, a deliberate save is one)."""
        if self.study_id is None or self.state is None:
            return SaveOutcome(False, "no study is open")
        if self.state.signed:
            return SaveOutcome(False, "the report is signed; it can no longer be edited")
        return self._save("save")

    def overwrite_after_conflict(self) -> SaveOutcome:
        """Save the user's text on top of the version that won the race (a new version)."""
        if self.study_id is None:
            return SaveOutcome(False, "no study is open")
        self.state = self.storage.report(self.study_id)
        self._in_conflict = False
        return self._save("save")

    def take_theirs(self) -> str:
        """Give up the local text for the stored one; the local text stays in the recovery file."""
        assert self.study_id is not None
        self._write_recovery(self.study_id, self._text())
        self.state = self.storage.report(self.study_id)
        self._in_conflict = False
        return self.state.text

    def signed(self, state: ReportState) -> None:
        self.state = state
        self._timer.stop()
        if self.study_id is not None:
            self._drop_recovery(self.study_id)

    def _save(self, kind: str) -> SaveOutcome:
        assert self.study_id is not None and self.state is not None
        text = self._text()
        try:
            if kind == "autosave":
                state = self.storage.autosave(self.study_id, text, expected_version=self.state.version)
            else:
                state = self.storage.save_report(self.study_id, text, kind=kind,
                                                 expected_version=self.state.version)
        except ConcurrentEditError as exc:
            self._in_conflict = True
            self._write_recovery(self.study_id, text)
            self.conflict.emit(exc)
            return SaveOutcome(False, str(exc), conflict=exc)
        except StorageError as exc:
            where = self._write_recovery(self.study_id, text)
            message = f"not saved: {exc}" + (f" (your text is kept in {where})" if where else "")
            self.failed.emit(message)
            return SaveOutcome(False, message)
        self.state = state
        self._drop_recovery(self.study_id)
        self.saved.emit(state, kind)
        return SaveOutcome(True, f"saved version {state.version}")

    # ----------------------------------------------------------------- recovery file

    def recovery_path(self, study_id: int) -> Path:
        return recovery_dir(self.storage) / f"study-{study_id}.txt"

    def _read_recovery(self, study_id: int) -> str | None:
        try:
            return self.recovery_path(study_id).read_text(encoding="utf-8")
        except OSError:
            return None

    def _write_recovery(self, study_id: int, text: str) -> Path | None:
        path = self.recovery_path(study_id)
        try:
            return atomic_write_text(path, text, make_parents=True, prefix=".recover-")
        except OSError:
            return None  # the editor still has the text; the failure was already reported

    def _drop_recovery(self, study_id: int) -> None:
        try:
            self.recovery_path(study_id).unlink()
        except OSError:
            pass
