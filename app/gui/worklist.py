"""The worklist: the studies in the database with their report status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLUMNS = ("Patient", "Accession", "Date", "Description", "Report")


@dataclass(frozen=True)
class WorklistRow:
    """One study as the worklist shows it."""

    study_id: int
    patient_id: str
    accession: str
    date: str
    description: str
    status: str  # "no report", or the report's state: draft, preliminary, final, amended


class WorklistPanel(QWidget):
    """A filterable table of studies; ``studyActivated(study_id)`` on Enter, double-click or selection."""

    studyActivated = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("Worklist", self)
        font = title.font()
        font.setBold(True)
        title.setFont(font)
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Filter by patient, accession, description\u2026")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._apply_filter)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._on_selection)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(title)
        layout.addWidget(self.search)
        layout.addWidget(self.table, 1)
        self._rows: list[WorklistRow] = []
        self._quiet = False

    def set_rows(self, rows: Sequence[WorklistRow], *, keep: int | None = None) -> None:
        """Show ``rows``; select study ``keep`` again without re-announcing it."""
        self._quiet = True
        try:
            self._rows = list(rows)
            self.table.setRowCount(len(self._rows))
            for r, row in enumerate(self._rows):
                values = (row.patient_id, row.accession, row.date, row.description, row.status)
                for c, value in enumerate(values):
                    item = QTableWidgetItem(value)
                    item.setData(Qt.ItemDataRole.UserRole, row.study_id)
                    if c == 4 and row.status in ("final", "amended"):
                        item.setForeground(Qt.GlobalColor.darkGreen)
                    elif c == 4 and row.status == "preliminary":
                        item.setForeground(Qt.GlobalColor.darkYellow)
                    self.table.setItem(r, c, item)
            self._apply_filter(self.search.text())
            if keep is not None:
                self.select_study(keep)
        finally:
            self._quiet = False

    def rows(self) -> list[WorklistRow]:
        return list(self._rows)

    def study_ids(self) -> list[int]:
        return [r.study_id for r in self._rows]

    def select_study(self, study_id: int) -> None:
        for r, row in enumerate(self._rows):
            if row.study_id == study_id:
                self.table.selectRow(r)
                return

    def current_study(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self._rows[rows[0].row()].study_id

    def step(self, delta: int) -> None:
        """Select the next (``+1``) or previous (``-1``) visible study."""
        visible = [r for r in range(self.table.rowCount()) if not self.table.isRowHidden(r)]
        if not visible:
            return
        current = self.table.currentRow()
        after = [r for r in visible if (r > current if delta > 0 else r < current)]
        if after:
            self.table.selectRow(after[0] if delta > 0 else after[-1])

    def _apply_filter(self, text: str) -> None:
        needle = text.strip().lower()
        for r, row in enumerate(self._rows):
            hay = " ".join((row.patient_id, row.accession, row.date, row.description, row.status))
            self.table.setRowHidden(r, bool(needle) and needle not in hay.lower())

    def _on_selection(self) -> None:
        if self._quiet:
            return
        study = self.current_study()
        if study is not None:
            self.studyActivated.emit(study)
