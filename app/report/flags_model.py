"""The flags of the current check and the reviewer's decision on each, as a Qt list model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt

from app.report.corrections import Correction, suggest_correction
from app.report.style import kind_label
from core_model.inference import Flag

#: The decisions storage records (``Storage.decide_flag``); ``none`` is "not reviewed".
DECISIONS = ("none", "accepted", "dismissed", "edited")
EXCERPT_CHARS = 90

Index = QModelIndex | QPersistentModelIndex


@dataclass
class FlagReview:
    """One flag, its suggested correction and the reviewer's decision."""

    flag: Flag
    correction: Correction | None = None
    decision: str = "none"
    reason: str | None = None

    @property
    def reviewed(self) -> bool:
        return self.decision != "none"

    @property
    def key(self) -> tuple[str, str, str | None]:
        return review_key(self.flag)


def review_key(flag: Flag) -> tuple[str, str, str | None]:
    """A decision follows its flag across re-checks: same kind, finding and sentence."""
    return flag.kind, flag.entity, flag.sentence


def excerpt(flag: Flag, limit: int = EXCERPT_CHARS) -> str:
    if flag.sentence is None:
        return "Not mentioned in the report"
    sentence = " ".join(flag.sentence.split())
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "\u2026"


class FlagsModel(QAbstractListModel):
    """Rows are flags in the check's order; roles below give the row's parts to views."""

    FlagRole = Qt.ItemDataRole.UserRole + 1
    KindRole = Qt.ItemDataRole.UserRole + 2
    ReviewRole = Qt.ItemDataRole.UserRole + 3
    ExcerptRole = Qt.ItemDataRole.UserRole + 4

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._reviews: list[FlagReview] = []

    # ----------------------------------------------------------------- content

    def set_flags(self, flags: list[Flag], report: str = "") -> None:
        """Show ``flags`` (of ``report``); decisions on the same flags are kept."""
        previous = {r.key: r for r in self._reviews if r.reviewed}
        self.beginResetModel()
        self._reviews = []
        for flag in flags:
            review = FlagReview(flag, suggest_correction(flag, report) if report else None)
            old = previous.get(review.key)
            if old is not None:
                review.decision, review.reason = old.decision, old.reason
            self._reviews.append(review)
        self.endResetModel()

    def reviews(self) -> list[FlagReview]:
        return list(self._reviews)

    def review(self, row: int) -> FlagReview:
        return self._reviews[row]

    def set_decision(self, row: int, decision: str, reason: str | None = None) -> None:
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}; expected one of {', '.join(DECISIONS)}")
        review = self._reviews[row]
        review.decision = decision
        review.reason = reason if decision == "dismissed" else None
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def reviewed_count(self) -> int:
        return sum(r.reviewed for r in self._reviews)

    # ----------------------------------------------------------------- Qt model

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._reviews)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._reviews):
            return None
        review = self._reviews[index.row()]
        flag = review.flag
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{flag.entity} \u2014 {kind_label(flag.kind).lower()} (p {flag.probability:.2f})"
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = flag.message or excerpt(flag)
            if review.correction is not None:
                tip += f"\nSuggested: {review.correction.text.strip()}"
            if review.reason:
                tip += f"\nDismissed: {review.reason}"
            return tip
        if role == self.FlagRole:
            return flag
        if role == self.KindRole:
            return flag.kind
        if role == self.ReviewRole:
            return review
        if role == self.ExcerptRole:
            return excerpt(flag)
        return None
