"""What the window does with the open report: sign (final or preliminary), add an addendum
to a final report, export it, replace the draft by a file, insert a sentence.

Every step goes through the window's reading session (:class:`app.session.ReadingSession`):
sign-off is refused exactly when storage says a current flag is undecided, a
final report never changes (the editor is read-only, decisions are closed, and
storage refuses it too), and the exports always take storage's signed text with
its addenda, never the editor's.
"""

from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEventLoop, QStandardPaths, QTimer
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMessageBox,
    QWidget,
)

from app.storage import StorageError

if TYPE_CHECKING:
    from app.gui.window import MainWindow

CHECK_WAIT_MS = 15_000


class AddendaView(QLabel):
    """The signed addenda under a final report, each with its author and time."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("addenda")
        self.setWordWrap(True)
        self.setTextFormat(self.textFormat().RichText)
        self.setStyleSheet("background: #f1f8e9; color: #263238; padding: 6px; "
                           "border-top: 2px solid #7cb342;")
        self.hide()

    def show_state(self, state: Any) -> None:
        addenda = tuple(getattr(state, "addenda", ()) or ())
        if not addenda:
            self.clear()
            self.hide()
            return
        parts = []
        for number, a in enumerate(addenda, 1):
            when = a.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
            text = html.escape(a.text).replace("\n", "<br>")
            parts.append(f"<b>ADDENDUM {number}</b> \u2014 signed by {html.escape(a.author)} "
                         f"{when}<br>{text}")
        self.setText("<br><br>".join(parts))
        self.show()


class ReportActions:
    """The window's report actions (see the module docstring)."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self._last_folder: Path | None = None

    def export_folder(self) -> Path:
        """Where the export dialogs start: the last folder exported to, else Documents."""
        if self._last_folder is not None and self._last_folder.is_dir():
            return self._last_folder
        documents = QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.DocumentsLocation)
        return Path(documents) if documents and Path(documents).is_dir() else Path.home()

    def import_folder(self) -> Path:
        """Where the import dialogs start: the home folder, never the program's folder."""
        return Path.home()

    @property
    def reading(self) -> Any:
        return self.window.reading

    # ----------------------------------------------------------------- sign-off

    def sign(self, *, preliminary: bool = False) -> bool:
        w = self.window
        if w._study is None or self.reading.state is None:
            return False
        what = "Not issued" if preliminary else "Not signed"
        if self.reading.signed:
            w._error(what, "the report is already signed; add an addendum for a change")
            return False
        self.wait_for_current_check()
        if w.image_banner.isVisible() and not self._confirm_unchecked(what):
            return False
        try:
            state = self.reading.sign(w.editor.text(), preliminary=preliminary)
        except StorageError as exc:
            w._error(what, str(exc))
            return False
        w.keeper.signed(state)
        w.refresh_worklist()
        w.statusBar().showMessage("Issued as preliminary." if preliminary else "Report signed.",
                                  10_000)
        return True

    def _confirm_unchecked(self, what: str) -> bool:
        """The model could not read this study's images: the reader confirms signing without
        its check (always recorded: the refusal is in the audit log)."""
        if os.environ.get("CONCORD_NO_DIALOGS"):
            return True
        answer = QMessageBox.question(
            self.window, "Sign without the model's check?",
            "The model could not check this study: its image is unlike the images it was "
            "trained on, so no flags were shown. Sign the report anyway?")
        if answer != QMessageBox.StandardButton.Yes:
            self.window.statusBar().showMessage(f"{what}: cancelled.", 10_000)
            return False
        return True

    def wait_for_current_check(self) -> None:
        """Before sign-off: the current text's check has run and its flags are recorded."""
        w = self.window
        if not self.reading.checking:
            return
        editor = w.editor
        if editor.checked_text() != editor.text() or editor.is_busy():
            if not editor.is_busy():
                editor.recheck_now()
            loop = QEventLoop()
            editor.flagsChanged.connect(loop.quit)
            editor.checkFailed.connect(loop.quit)
            QTimer.singleShot(CHECK_WAIT_MS, loop.quit)
            if editor.checked_text() != editor.text() or editor.is_busy():
                loop.exec()
            editor.flagsChanged.disconnect(loop.quit)
            editor.checkFailed.disconnect(loop.quit)
        QApplication.processEvents()

    # ----------------------------------------------------------------- addenda

    def add_addendum(self, text: str | None = None) -> bool:
        """A signed addendum under the final report (asked for in a dialog when ``text`` is None)."""
        w = self.window
        if w._study is None or not self.reading.signed:
            w._error("No addendum", "only a signed report takes an addendum; edit the draft instead")
            return False
        if text is None:
            text, ok = QInputDialog.getMultiLineText(
                w, "Add addendum", "Addendum (signed by you, shown under the report):")
            if not ok:
                return False
        if not text.strip():
            w._error("No addendum", "the addendum is empty")
            return False
        try:
            self.reading.add_addendum(text)
        except StorageError as exc:
            w._error("Addendum not added", str(exc))
            return False
        w.refresh_worklist()
        w.statusBar().showMessage("Addendum signed.", 10_000)
        return True

    # ----------------------------------------------------------------- exports

    def export_report(self, fmt: str, path: str | None = None) -> str | None:
        """The signed report (with its addenda) as ``txt`` or ``pdf`` (docs/export.md)."""
        from app.export import ExportError, write_report_text
        from app.export.pdf import write_report_pdf

        w = self.window
        if w._study is None:
            w._error("Nothing to export", "Open a study first.")
            return None
        try:
            report = self.reading.signed_report()
            note = w.model_note_for(report.model_version)
            if note:
                report = dataclasses.replace(report, model_note=note)
        except (ExportError, StorageError) as exc:
            w._error("Export failed", str(exc))
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                w, "Export report", str(self.export_folder() / report.file_name(f".{fmt}")),
                "PDF (*.pdf)" if fmt == "pdf" else "Text (*.txt)")
            if not path:
                return None
        writer = write_report_pdf if fmt == "pdf" else write_report_text
        return self._written(lambda: writer(path, report), path, "report.export",
                             {"format": fmt, "addenda": len(report.addenda)})

    def _written(self, write: Any, path: str, action: str, details: dict[str, Any]) -> str | None:
        """Write an export, audit it, and remember its folder; None (with a message) on failure."""
        from app.export import ExportError

        w = self.window
        assert w._study is not None
        try:
            write()
            w.storage.audit(action, ("study", w._study.study_id), {"path": str(path), **details})
        except (ExportError, StorageError) as exc:
            w._error("Export failed", str(exc))
            return None
        self._last_folder = Path(path).parent
        w.statusBar().showMessage(f"Exported {path}", 10_000)
        return str(path)

    def export_sr(self, path: str | None = None) -> str | None:
        """The AI results (flags and decisions) as a DICOM Structured Report: for a signed
        report, its final flags with the signed text and addenda; for a draft, the current
        flags with the saved draft."""
        from app.export import read_sources, sr_file_name, write_sr

        w = self.window
        study = w._study
        if study is None or not study.images:
            w._error("Nothing to export", "Open a study with a frontal DICOM image first.")
            return None
        if not self.reading.signed and self.reading.dirty(w.editor.text()):
            if not w.save():
                return None
        state = self.reading.state
        if state is None:
            return None
        review = self.reading.review_state()
        # the current flags, and those the reader's edits resolved (accepted, edited)
        items: list[Any] = [*self.reading.reviews(), *(review.resolved if review else ())]
        try:
            suggested = sr_file_name(read_sources(study.images[0])[0])
        except Exception:  # the file name is only a suggestion; write_sr reports the real problem
            suggested = f"concord-sr-{study.study_id}.dcm"
        if path is None:
            path, _ = QFileDialog.getSaveFileName(w, "Export AI results",
                                                  str(self.export_folder() / suggested),
                                                  "DICOM (*.dcm)")
            if not path:
                return None
        flags = review.flags if review is not None else ()
        model_version = (flags[0].model_version if flags else None) or state.model_version \
            or w.model_version or "none"
        user = w.user()
        addenda = [f"{a.text}\n(signed by {a.author}, {a.created_at.isoformat()})"
                   for a in state.addenda]
        return self._written(
            lambda: write_sr(path, study.images, items, model_version=model_version,
                             report_text=state.text, addenda=addenda,
                             signer=state.signed_by if state.signed else None,
                             signer_login=user.username if user else None,
                             model_note=w.model_note_for(model_version)),
            path, "sr.export", {"version": state.version, "addenda": len(state.addenda)})

    # ----------------------------------------------------------------- the draft

    def open_report_file(self, path: str | None = None) -> bool:
        """Replace the draft by a text file's content (one undo step away from what was there)."""
        w = self.window
        if w._study is None:
            w._error("No study", "Open a study first.")
            return False
        if self.reading.signed:
            w._error("Report not opened", "the report is signed; it can no longer be edited")
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(w, "Open a report", "", "Text (*.txt);;All files (*)")
            if not path:
                return False
        from app.gui.window import read_report_file

        try:
            text = read_report_file(path)
        except ValueError as exc:
            w._error("Report not opened", str(exc))
            return False
        w.keeper.autosave()
        w.editor.set_text(text)
        w.keeper.autosave()
        return True

    def insert_sentence(self, sentence: str) -> None:
        """Put a sentence (from a similar case) at the cursor of a draft."""
        w = self.window
        if self.reading.signed or w._study is None:
            return
        edit = w.editor.text_edit()
        cursor = edit.textCursor()
        before = edit.toPlainText()[max(0, cursor.position() - 1):cursor.position()]
        cursor.insertText(("" if not before or before.isspace() else " ") + sentence.strip())
        edit.setTextCursor(cursor)
        w.editor.focus_text()
