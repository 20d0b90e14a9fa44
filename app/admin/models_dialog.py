"""Admin > Models…: the model registry, with Activate and Roll back.

Each row is a registered model: its status (active, passed, failed, not
evaluated), a summary of its evaluation, who registered it and when it was
last activated. Activate refuses a model whose evaluation did not pass (or
that was never evaluated); Roll back re-activates the model that was active
before. A refusal or any other error is shown in a message box and the dialog
stays open.
"""

from __future__ import annotations

import html
from datetime import datetime

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.admin.fields import MessageLine
from app.admin.registry import (
    activate,
    activation_comparison,
    check_activation,
    evaluation_failures,
    metrics_summary,
    model_status,
    require_admin,
    roll_back,
)
from app.storage import ModelRecord, Role, Storage, StorageError, UserRecord

COLUMNS = ("Model", "Variant", "Status", "Evaluation", "Registered", "Last activated")
STATUS_COLORS = {
    "active": QColor(27, 110, 32),
    "passed": QColor(31, 78, 121),
    "failed": QColor(164, 22, 26),
    "not evaluated": QColor(110, 110, 110),
}


class ModelsDialog(QDialog):
    """The registered models, with Activate, Roll back and Evaluate… (admins only).

    Signals: ``activeModelChanged(str model_version)`` after an activation or a
    roll back (the main window reloads its reader), ``evaluateRequested(str
    model_version)`` when Evaluate… is pressed (the main window opens
    :class:`~app.admin.evaluate.EvaluateDialog` for it).
    """

    activeModelChanged = Signal(str)
    evaluateRequested = Signal(str)

    def __init__(
        self,
        storage: Storage,
        role: str | Role | UserRecord | None,
        parent: QWidget | None = None,
    ) -> None:
        require_admin(role, "managing models")
        super().__init__(parent)
        self.storage = storage
        self.records: list[ModelRecord] = []
        #: The last error shown (plain text), and its message box while it is open.
        self.last_error: str | None = None
        self.error_box: QMessageBox | None = None
        self.setWindowTitle("Models")
        self._build()
        self.refresh()

    def _build(self) -> None:
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.message = MessageLine()
        self.activate_button = QPushButton("Activate")
        self.activate_button.clicked.connect(self.activate_selected)
        self.roll_back_button = QPushButton("Roll back")
        self.roll_back_button.setToolTip("re-activate the model that was active before the current one")
        self.roll_back_button.clicked.connect(self.roll_back)
        self.evaluate_button = QPushButton("Evaluate…")
        self.evaluate_button.clicked.connect(self._evaluate)
        self.bundled_button = QPushButton("Register bundled model")
        self.bundled_button.setToolTip("register the model shipped with Concord (trained on "
                                       "synthetic images only), with its shipped evaluation")
        self.bundled_button.clicked.connect(self.register_bundled)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        for b in (self.activate_button, self.roll_back_button, self.evaluate_button,
                  self.bundled_button, self.refresh_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        self.resize(860, 420)

    # -- content ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the registry again, keeping the selection."""
        selected = self.selected_version()
        try:
            self.records = self.storage.models()
        except StorageError as exc:
            self._error(f"Cannot read the model registry: {exc}")
            return
        self.table.setRowCount(len(self.records))
        for i, record in enumerate(self.records):
            status = model_status(record)
            cells = [
                record.model_version, record.variant, status, metrics_summary(record),
                f"{_when(record.created_at)} by {record.registered_by or '—'}",
                _when(record.activated_at),
            ]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j == 0:
                    item.setData(Qt.ItemDataRole.UserRole, record.model_version)
                if j == 2:
                    item.setForeground(QBrush(STATUS_COLORS[status]))
                    failures = evaluation_failures(record)
                    if failures:
                        item.setToolTip("\n".join(failures))
                if record.active:
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                item.setToolTip(item.toolTip() or f"{record.model_version}: {record.path}")
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        from app.admin.commands import bundled_model_version

        bundled = bundled_model_version()
        registered = {r.model_version for r in self.records}
        self.bundled_button.setVisible(bundled is not None and bundled not in registered)
        if not self.records and bundled is not None:
            self.message.show_message(
                "No model is registered yet. Register the bundled model to start checking "
                "(it was trained on synthetic images only), or register a trained one "
                "(Admin \u2192 Retrain model).", "info")
        if selected is not None:
            self.select(selected)
        self._selection_changed()

    def select(self, model_version: str) -> bool:
        for i, record in enumerate(self.records):
            if record.model_version == model_version:
                self.table.selectRow(i)
                return True
        return False

    def selected_version(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def status_of(self, model_version: str) -> str | None:
        """The Status column's text for a model (None if not listed)."""
        for i, record in enumerate(self.records):
            if record.model_version == model_version:
                return self.table.item(i, 2).text()
        return None

    def _selection_changed(self) -> None:
        chosen = self.selected_version()
        self.activate_button.setEnabled(chosen is not None)
        self.evaluate_button.setEnabled(chosen is not None)

    # -- actions ---------------------------------------------------------------------

    def activate_selected(self) -> bool:
        """Activate the selected model; on refusal a message box says why. True on success."""
        version = self.selected_version()
        if version is None:
            self._error("Choose a model to activate.")
            return False
        try:
            check_activation(self.storage, version)
            comparison = activation_comparison(self.storage, version)
        except StorageError as exc:
            self._error(f"Cannot activate {version}: {exc}")
            return False
        if not self.confirm_activation(comparison):
            self.message.show_message(f"{version} was not activated.", "info")
            return False
        try:
            record = activate(self.storage, version)
        except StorageError as exc:
            self._error(f"Cannot activate {version}: {exc}")
            return False
        self.refresh()
        self.message.show_message(f"{record.model_version} is now the active model.", "ok")
        self.activeModelChanged.emit(record.model_version)
        return True

    def confirm_activation(self, comparison: str) -> bool:
        """Ask, showing the active and new models' figures side by side (a fixed-width table)."""
        box = QMessageBox(QMessageBox.Icon.Question, "Activate model", comparison.split("\n", 1)[0],
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
        box.setInformativeText("<pre>" + html.escape(comparison.split("\n", 1)[-1].strip("\n"))
                               + "</pre>")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        return box.exec() == QMessageBox.StandardButton.Yes

    def roll_back(self) -> bool:
        """Re-activate the previously active model; on refusal a message box says why."""
        try:
            record = roll_back(self.storage)
        except StorageError as exc:
            self._error(f"Cannot roll back: {exc}")
            return False
        self.refresh()
        self.select(record.model_version)
        self.message.show_message(f"Rolled back: {record.model_version} is active again.", "ok")
        self.activeModelChanged.emit(record.model_version)
        return True

    def register_bundled(self) -> bool:
        """Register the model shipped with Concord (with its shipped evaluation)."""
        from app.admin.commands import register_bundled_model

        try:
            record = register_bundled_model(self.storage)
        except (StorageError, ValueError) as exc:
            self._error(f"Cannot register the bundled model: {exc}")
            return False
        self.refresh()
        self.select(record.model_version)
        self.message.show_message(
            f"{record.model_version} is registered; press Activate to check with it.", "ok")
        return True

    def _evaluate(self) -> None:
        version = self.selected_version()
        if version is not None:
            self.evaluateRequested.emit(version)

    def _error(self, text: str) -> None:
        """Show ``text`` in a window-modal message box (not blocking) and under the table."""
        self.last_error = text
        self.message.show_message(text, "error")
        if self.error_box is not None:
            self.error_box.close()
        box = QMessageBox(QMessageBox.Icon.Warning, "Models", text, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _=0: setattr(self, "error_box", None))
        self.error_box = box
        box.open()


def _when(moment: datetime | None) -> str:
    """Local time, to the minute; an em dash for never."""
    if moment is None:
        return "—"
    return (moment.astimezone() if moment.tzinfo else moment).strftime("%Y-%m-%d %H:%M")


__all__ = ["ModelsDialog"]
