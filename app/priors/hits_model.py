"""The list model of prior hits (one row per similar prior study)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, Qt

from app.priors.search import PriorHit

_Index = QModelIndex | QPersistentModelIndex


class PriorHitsModel(QAbstractListModel):
    """Hits best first. ``HitRole`` gives the :class:`PriorHit`; display text is for accessibility."""

    HitRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._hits: list[PriorHit] = []

    def set_hits(self, hits: list[PriorHit]) -> None:
        self.beginResetModel()
        self._hits = list(hits)
        self.endResetModel()

    def hits(self) -> list[PriorHit]:
        return list(self._hits)

    def hit(self, row: int) -> PriorHit | None:
        return self._hits[row] if 0 <= row < len(self._hits) else None

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802, B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._hits)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        hit = self.hit(index.row()) if index.isValid() else None
        if hit is None:
            return None
        if role == self.HitRole:
            return hit
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            findings = ", ".join(hit.positives()) or ("No Finding" if hit.is_normal() else "no positive finding")
            return f"{hit.score:.2f}  study {hit.study_id}: {findings}. {hit.preview(120)}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"Study {hit.study_id}, cosine similarity {hit.score:.3f}"
        return None
