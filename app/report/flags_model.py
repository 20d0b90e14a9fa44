"""The flags of the current check and the reviewer's decision on each, as a Qt list model."""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt

from app.report.style import kind_label
from app.session.corrections import suggest_correction
from app.session.reading import FlagReview
from core_model.domain.flags import Decision
from core_model.inference import Flag

#: The decisions storage records (``Storage.decide_flag``); ``none`` is "not reviewed".
DECISIONS = tuple(d.value for d in Decision)
EXCERPT_CHARS = 90

Index = QModelIndex | QPersistentModelIndex


def excerpt(flag: Flag, limit: int = EXCERPT_CHARS) -> str:
    if flag.sentence is None:
        return "Not mentioned in the report"
    sentence = " / ".join(" ".join(s.split()) for s in flag.sentences)
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
        """Show a check's ``flags`` (of ``report``), none of them decided yet.

        The model never carries a decision from one set of flags to another: in
        the application the reading session does that, in storage, and hands
        the result over with :meth:`set_reviews`.
        """
        self.set_reviews(
            [FlagReview(f, suggest_correction(f, report) if report else None) for f in flags]
        )

    def set_reviews(self, reviews: list[FlagReview]) -> None:
        """Show these flags with their decisions exactly as given."""
        self.beginResetModel()
        self._reviews = [dataclasses.replace(r) for r in reviews]
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
