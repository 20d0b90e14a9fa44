"""Admin > Export dataset…: signed cases to a MIMIC-layout folder, off the GUI thread."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.admin.export import SPLITS, ExportSummary, export_finalized
from app.admin.fields import MessageLine, PathField
from app.admin.registry import require_admin
from app.storage import Role, Storage, StorageError, UserRecord


class ExportSignals(QObject):
    """``progress(done, total)``, then ``finished(ExportSummary)`` or ``failed(message)``."""

    progress = Signal(int, int)
    finished = Signal(object)
    failed = Signal(str)


class ExportWorker(QRunnable):
    """Runs :func:`~app.admin.export.export_finalized` in a thread pool; ``cancel()`` stops it
    between studies."""

    def __init__(self, storage: Storage, out_root: Path, *, split: str = "train",
                 deidentify: bool = True) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the dialog keeps it (and its signals) alive
        self.storage = storage
        self.out_root = out_root
        self.split = split
        self.deidentify = deidentify
        self.signals = ExportSignals()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def run(self) -> None:
        try:
            summary = export_finalized(
                self.storage, self.out_root, split=self.split, deidentify=self.deidentify,
                progress=self.signals.progress.emit, cancel=self._cancel.is_set)
        except (ValueError, PermissionError, StorageError) as exc:
            self.signals.failed.emit(str(exc))
        except Exception as exc:  # a worker must report, never die silently
            self.signals.failed.emit(f"export failed: {type(exc).__name__}: {exc}")
        else:
            self.signals.finished.emit(summary)


class ExportDatasetDialog(QDialog):
    """Export every study with a signed report as a MIMIC-layout dataset (admins only).

    Signal: ``exported(ExportSummary)`` when an export has finished.
    """

    exported = Signal(object)

    def __init__(
        self,
        storage: Storage,
        role: str | Role | UserRecord | None,
        parent: QWidget | None = None,
        *,
        pool: QThreadPool | None = None,
    ) -> None:
        require_admin(role, "exporting cases")
        super().__init__(parent)
        self.storage = storage
        self.pool = pool or QThreadPool.globalInstance()
        self.worker: ExportWorker | None = None
        self.summary: ExportSummary | None = None
        self.setWindowTitle("Export signed cases as a dataset")

        self.out_field = PathField("newdir", placeholder="new, empty folder for the dataset",
                                   caption="Export folder")
        self.split_box = QComboBox()
        self.split_box.addItems(SPLITS)
        self.deid_check = QCheckBox("De-identify report text (names, dates, numbers become ___)")
        self.deid_check.setChecked(True)
        form = QFormLayout()
        form.addRow("Export folder", self.out_field)
        form.addRow("Split", self.split_box)
        form.addRow("", self.deid_check)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("idle")
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("The summary and every skipped study appear here.")
        self.message = MessageLine()
        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel export")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.details, 1)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        self.resize(640, 420)

    def running(self) -> bool:
        return self.worker is not None

    def start(self) -> bool:
        """Start the export in the thread pool; False (reason shown) if it cannot start."""
        if self.running():
            return False
        out = self.out_field.path()
        if out is None:
            self.message.show_message("choose the export folder", "error")
            return False
        worker = ExportWorker(self.storage, out.resolve(), split=self.split_box.currentText(),
                              deidentify=self.deid_check.isChecked())
        worker.signals.progress.connect(self._progress)
        worker.signals.finished.connect(self._finished)
        worker.signals.failed.connect(self._failed)
        self.worker = worker
        self.summary = None
        self.details.clear()
        self.message.show_message("Exporting…", "info")
        self.progress_bar.setRange(0, 0)
        self._set_running(True)
        self.pool.start(worker)
        return True

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def reject(self) -> None:
        if self.worker is not None:  # stop between studies; the tables of what is done are kept
            self.worker.cancel()
            self.pool.waitForDone(30_000)
        super().reject()

    def _progress(self, done: int, total: int) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.progress_bar.setFormat(f"{done} / {total} studies")

    def _finished(self, summary: ExportSummary) -> None:
        self.worker = None
        self._set_running(False)
        self.summary = summary
        self.progress_bar.setFormat("cancelled" if summary.cancelled else "done")
        self.message.show_message(summary.describe(), "warning" if summary.cancelled else "ok")
        lines = [summary.describe(), "", f"manifest: {summary.manifest}",
                 f"identifier map (keep it private): {summary.mapping}"]
        if summary.skipped_studies:
            lines += ["", "Skipped studies:"]
            lines += [f"  study {s.concord_study_id} ({s.study_instance_uid}): {s.reason}"
                      for s in summary.skipped_studies]
        if summary.skipped_images:
            lines += ["", "Skipped images:"]
            lines += [f"  study {s.concord_study_id}, {s.path}: {s.reason}"
                      for s in summary.skipped_images]
        self.details.setPlainText("\n".join(lines))
        self.exported.emit(summary)

    def _failed(self, message: str) -> None:
        self.worker = None
        self._set_running(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("failed")
        self.message.show_message(message, "error")

    def _set_running(self, running: bool) -> None:
        self.out_field.setEnabled(not running)
        self.split_box.setEnabled(not running)
        self.deid_check.setEnabled(not running)
        self.export_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)


__all__ = ["ExportDatasetDialog", "ExportSignals", "ExportWorker"]
