"""The flags panel: one row per flag, a filter by kind, keyboard stepping, decisions."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import (
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QSize,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QFontMetrics, QKeyEvent, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QPushButton,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app.report.flags_model import FlagsModel
from app.report.style import kind_color, kind_label
from app.session.reading import FlagReview
from core_model.inference import Flag

KIND_FILTERS = ("all", "contradiction", "unsupported", "omission")
#: Common reasons offered when a flag is dismissed (free text is allowed too).
DISMISS_REASONS = (
    "Finding is correctly described in the report",
    "Image quality / positioning limits the assessment",
    "Artefact or overlying structure (e.g. skin fold, device)",
    "Clinically insignificant",
    "Already described elsewhere in the report",
)
DECISION_LABELS = {"accepted": "Accepted", "dismissed": "Dismissed", "edited": "Edited"}


class KindFilter(QSortFilterProxyModel):
    """Keeps the rows of one kind (or all)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._kind = "all"

    def kind(self) -> str:
        return self._kind

    def set_kind(self, kind: str) -> None:
        if kind not in KIND_FILTERS:
            raise ValueError(f"unknown flag kind {kind!r}; expected one of {', '.join(KIND_FILTERS)}")
        if hasattr(self, "beginFilterChange"):  # Qt 6.10+; invalidateFilter is deprecated there
            self.beginFilterChange()
            self._kind = kind
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._kind = kind
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        if self._kind == "all":
            return True
        index = self.sourceModel().index(row, 0, parent)
        return index.data(FlagsModel.KindRole) == self._kind


class FlagDelegate(QStyledItemDelegate):
    """Paints a row: kind colour bar and name, finding, probability, excerpt, decision."""

    PAD = 8

    def sizeHint(self, option: QStyleOptionViewItem, index: Any) -> QSize:  # noqa: N802
        metrics = QFontMetrics(option.font)
        return QSize(280, 2 * metrics.height() + 2 * self.PAD + 4)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Any) -> None:
        review: FlagReview = index.data(FlagsModel.ReviewRole)
        if review is None:
            return super().paint(painter, option, index)
        flag = review.flag
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect: QRect = option.rect
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.fillRect(rect, QColor("#e3f2fd") if selected else QColor("#ffffff"))
        painter.setPen(QPen(QColor("#e0e0e0")))
        painter.drawLine(rect.bottomLeft(), rect.bottomRight())
        colour = QColor(kind_color(flag.kind))
        if review.reviewed:
            colour.setAlpha(90)
        painter.fillRect(QRect(rect.left(), rect.top(), 5, rect.height()), colour)

        base = QFont(option.font)
        bold = QFont(base)
        bold.setBold(True)
        small = QFont(base)
        small.setPointSizeF(max(7.0, base.pointSizeF() - 1))
        metrics = QFontMetrics(base)
        left = rect.left() + 5 + self.PAD
        right = rect.right() - self.PAD
        top = rect.top() + self.PAD
        line = metrics.height()
        muted = QColor("#9e9e9e") if review.reviewed else QColor("#37474f")

        # first line: kind, finding ......... probability
        painter.setFont(small)
        kind_text = ("UNRELIABLE " if flag.unreliable else "") + kind_label(flag.kind).upper()
        kind_width = QFontMetrics(small).horizontalAdvance(kind_text) + 10
        painter.setPen(QColor(kind_color(flag.kind)) if not review.reviewed else muted)
        painter.drawText(QRect(left, top, kind_width, line), Qt.AlignmentFlag.AlignVCenter, kind_text)
        painter.setFont(base)
        p_text = f"p {flag.probability:.2f}"
        p_width = metrics.horizontalAdvance(p_text)
        painter.setPen(muted)
        painter.drawText(QRect(right - p_width, top, p_width, line),
                         Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, p_text)
        painter.setFont(bold)
        painter.setPen(QColor("#9e9e9e") if review.reviewed else QColor("#212121"))
        entity_rect = QRect(left + kind_width, top, right - p_width - 8 - left - kind_width, line)
        entity = QFontMetrics(bold).elidedText(flag.entity, Qt.TextElideMode.ElideRight, entity_rect.width())
        painter.drawText(entity_rect, Qt.AlignmentFlag.AlignVCenter, entity)

        # second line: excerpt ......... decision
        painter.setFont(base)
        status = DECISION_LABELS.get(review.decision, "")
        status_width = metrics.horizontalAdvance(status) + 4 if status else 0
        if status:
            painter.setPen(QColor("#2e7d32") if review.decision != "dismissed" else QColor("#757575"))
            painter.drawText(QRect(right - status_width, top + line + 4, status_width, line),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, status)
        painter.setPen(QColor("#9e9e9e") if review.reviewed else QColor("#616161"))
        text_rect = QRect(left, top + line + 4, right - left - status_width - 8, line)
        excerpt = metrics.elidedText(index.data(FlagsModel.ExcerptRole), Qt.TextElideMode.ElideRight,
                                     text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignVCenter, excerpt)
        painter.restore()


class DismissDialog(QDialog):
    """Asks why a flag is dismissed: a common reason or free text; OK needs a reason."""

    def __init__(self, flag: Flag, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Dismiss flag")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Why is the {kind_label(flag.kind).lower()} on "
                                f"<b>{flag.entity}</b> dismissed?", self))
        self.reasons = QComboBox(self)
        self.reasons.addItem("Choose a reason\u2026", "")
        for reason in DISMISS_REASONS:
            self.reasons.addItem(reason, reason)
        self.reasons.addItem("Other (write below)", "")
        self.detail = QLineEdit(self)
        self.detail.setPlaceholderText("Reason in your words (optional with a reason above)")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, parent=self
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.reasons)
        layout.addWidget(self.detail)
        layout.addWidget(self.buttons)
        self.reasons.currentIndexChanged.connect(self._update)
        self.detail.textChanged.connect(self._update)
        self._update()

    def reason(self) -> str:
        chosen = str(self.reasons.currentData() or "")
        detail = self.detail.text().strip()
        return f"{chosen}: {detail}" if chosen and detail else (chosen or detail)

    def _update(self) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(bool(self.reason()))


class FlagsPanel(QWidget):
    """The flags of a check, to step through and decide.

    Signals: ``decided(flag_index, decision, reason, correction)`` (``reason``
    a ``str`` for dismissals else ``None``; ``correction`` a
    :class:`~app.report.corrections.Correction` for an accepted flag that has
    one, else ``None``), ``currentFlagChanged(flag_index)`` (``-1`` for none),
    ``jumpRequested(flag_index)`` (Enter, Edit).  Indices are positions in the
    list given to :meth:`set_flags`.

    Keys in the list: J / Down next, K / Up previous, Enter jump to the span,
    A accept, D dismiss, E edit.
    """

    decided = Signal(int, str, object, object)
    currentFlagChanged = Signal(int)
    jumpRequested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._read_only = False
        self._note = ""
        self.model = FlagsModel(self)
        self.proxy = KindFilter(self)
        self.proxy.setSourceModel(self.model)

        title = QLabel("Flags", self)
        title_font = QFont(title.font())
        title_font.setBold(True)
        title_font.setPointSizeF(title_font.pointSizeF() + 1)
        title.setFont(title_font)
        self.filter = QComboBox(self)
        for kind in KIND_FILTERS:
            self.filter.addItem("All kinds" if kind == "all" else kind_label(kind), kind)
        self.filter.currentIndexChanged.connect(
            lambda _: self.set_filter(str(self.filter.currentData()))
        )
        header = QHBoxLayout()
        header.addWidget(title)
        header.addStretch(1)
        header.addWidget(self.filter)

        self.view = QListView(self)
        self.view.setModel(self.proxy)
        self.view.setItemDelegate(FlagDelegate(self.view))
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setUniformItemSizes(True)
        self.view.setStyleSheet("QListView { border: 1px solid #cfd8dc; background: white; }")
        self.view.installEventFilter(self)
        self.view.selectionModel().currentChanged.connect(self._on_current)
        self.view.doubleClicked.connect(lambda _: self._jump())

        self.suggestion = QLabel(self)
        self.suggestion.setWordWrap(True)
        self.suggestion.setStyleSheet("color: #37474f; padding: 2px;")
        self.accept_button = QPushButton("Accept", self)
        self.edit_button = QPushButton("Edit", self)
        self.dismiss_button = QPushButton("Dismiss\u2026", self)
        self.accept_button.setToolTip("Accept the flag and apply its suggested correction (A)")
        self.edit_button.setToolTip("Go to the sentence to change it yourself (E)")
        self.dismiss_button.setToolTip("Dismiss the flag with a reason (D)")
        self.accept_button.clicked.connect(lambda: self.accept())
        self.edit_button.clicked.connect(lambda: self.edit())
        self.dismiss_button.clicked.connect(lambda: self.dismiss())
        buttons = QHBoxLayout()
        for button in (self.accept_button, self.edit_button, self.dismiss_button):
            buttons.addWidget(button)
        self.summary_label = QLabel(self)
        self.summary_label.setStyleSheet("color: #546e7a;")
        self.summary_label.setWordWrap(True)
        self.summary_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.suggestion.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(header)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.suggestion)
        layout.addLayout(buttons)
        layout.addWidget(self.summary_label)
        self.model.modelReset.connect(self._update)
        self.model.dataChanged.connect(self._update)
        self._update()

    # ----------------------------------------------------------------- content

    def set_flags(self, flags: list[Flag], report: str = "") -> None:
        """Show a check's flags; ``report`` (the checked text) lets corrections be suggested."""
        self.model.set_flags(flags, report)
        self._after_reset()

    def set_reviews(self, reviews: list[FlagReview]) -> None:
        """Show flags with their decisions as the reading session holds them; the current
        row stays where it was when it still exists."""
        row = self.current_flag_index()
        self.model.set_reviews(reviews)
        if 0 <= row < self.model.rowCount():
            self.select_flag(row)
        self._after_reset()

    def _after_reset(self) -> None:
        if self.proxy.rowCount() and not self.view.currentIndex().isValid():
            self.view.setCurrentIndex(self.proxy.index(0, 0))
        self._update()

    def set_note(self, note: str) -> None:
        """A few words after the summary, e.g. how many flags an edit resolved."""
        self._note = note
        self._update()

    def set_read_only(self, read_only: bool) -> None:
        """A signed report: its flags are shown, but no decision can be taken or changed."""
        self._read_only = bool(read_only)
        self._update()

    def is_read_only(self) -> bool:
        return self._read_only

    def flags(self) -> list[Flag]:
        return [r.flag for r in self.model.reviews()]

    def reviews(self) -> list[FlagReview]:
        return self.model.reviews()

    def all_reviewed(self) -> bool:
        """Every flag has a decision (vacuously true without flags)."""
        return all(r.reviewed for r in self.model.reviews())

    def summary(self) -> str:
        n = self.model.rowCount()
        text = f"{n} flag{'s' if n != 1 else ''}, {self.model.reviewed_count()} reviewed"
        return f"{text}; {self._note}" if self._note else text

    # ----------------------------------------------------------------- navigation

    def set_filter(self, kind: str) -> None:
        """Show ``all`` flags or one kind: ``contradiction``, ``unsupported``, ``omission``."""
        self.proxy.set_kind(kind)
        position = self.filter.findData(kind)
        if position != self.filter.currentIndex():
            self.filter.setCurrentIndex(position)
        if self.proxy.rowCount() and not self.view.currentIndex().isValid():
            self.view.setCurrentIndex(self.proxy.index(0, 0))
        self._update()

    def visible_flag_indices(self) -> list[int]:
        return [self.proxy.mapToSource(self.proxy.index(r, 0)).row() for r in range(self.proxy.rowCount())]

    def current_flag_index(self) -> int:
        index = self.view.currentIndex()
        return self.proxy.mapToSource(index).row() if index.isValid() else -1

    def select_flag(self, flag_index: int) -> None:
        index = self.proxy.mapFromSource(self.model.index(flag_index))
        if index.isValid():
            self.view.setCurrentIndex(index)

    def next_flag(self) -> None:
        self._step(1)

    def previous_flag(self) -> None:
        self._step(-1)

    def _step(self, delta: int) -> None:
        step_view(self.view, delta)

    # ----------------------------------------------------------------- decisions

    def accept(self, flag_index: int | None = None) -> None:
        """Accept the flag; its suggested correction (if any) goes out with ``decided``."""
        row = self._row(flag_index)
        if row < 0:
            return
        review = self.model.review(row)
        self.model.set_decision(row, "accepted")
        self.decided.emit(row, "accepted", None, review.correction)

    def edit(self, flag_index: int | None = None) -> None:
        """Record that the reader edits the text themself, and jump to the span."""
        row = self._row(flag_index)
        if row < 0:
            return
        self.model.set_decision(row, "edited")
        self.decided.emit(row, "edited", None, None)
        self.jumpRequested.emit(row)

    def dismiss(self, flag_index: int | None = None, reason: str | None = None) -> bool:
        """Dismiss the flag with ``reason`` (asked in a dialog when ``None``); a reason is required."""
        row = self._row(flag_index)
        if row < 0:
            return False
        if reason is None:
            reason = self.ask_reason(self.model.review(row).flag)
        reason = (reason or "").strip()
        if not reason:
            return False
        self.model.set_decision(row, "dismissed", reason)
        self.decided.emit(row, "dismissed", reason, None)
        return True

    def ask_reason(self, flag: Flag) -> str | None:
        """The dismissal reason from a :class:`DismissDialog` (``None`` when cancelled)."""
        dialog = DismissDialog(flag, self)
        return dialog.reason() if dialog.exec() == QDialog.DialogCode.Accepted else None

    def _row(self, flag_index: int | None) -> int:
        if self._read_only:
            return -1  # a signed report: decisions are final
        row = self.current_flag_index() if flag_index is None else flag_index
        return row if 0 <= row < self.model.rowCount() else -1

    # ----------------------------------------------------------------- internals

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if watched is self.view and event.type() == QEvent.Type.KeyPress:
            assert isinstance(event, QKeyEvent)
            key = event.key()
            if event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
                return False
            actions = {
                Qt.Key.Key_J: self.next_flag,
                Qt.Key.Key_K: self.previous_flag,
                Qt.Key.Key_Return: self._jump,
                Qt.Key.Key_Enter: self._jump,
                Qt.Key.Key_A: self.accept,
                Qt.Key.Key_D: self.dismiss,
                Qt.Key.Key_E: self.edit,
            }
            action = actions.get(Qt.Key(key))
            if action is not None:
                action()
                return True
        return super().eventFilter(watched, event)

    def _jump(self) -> None:
        row = self.current_flag_index()
        if row >= 0:
            self.jumpRequested.emit(row)

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._update()
        self.currentFlagChanged.emit(self.current_flag_index())

    def _update(self, *_: Any) -> None:
        self.summary_label.setText(self.summary())
        row = self.current_flag_index()
        has = row >= 0
        for button in (self.accept_button, self.edit_button, self.dismiss_button):
            button.setEnabled(has and not self._read_only)
        if self._read_only:
            self.summary_label.setText(self.summary() + " \u2014 signed: decisions are final")
        if not has:
            self.suggestion.setText("")
            return
        review = self.model.review(row)
        lines = [review.flag.message] if review.flag.message else []
        if review.correction is not None:
            lines.append(f"<b>Suggested:</b> {review.correction.summary}")
        if review.reason:
            lines.append(f"<b>Dismissed:</b> {review.reason}")
        self.suggestion.setText("<br>".join(lines))


def step_view(view: QAbstractItemView, delta: int) -> None:
    """Move a list view's current row by ``delta``, clamped to its rows (the first row if none)."""
    model = view.model()
    rows = model.rowCount()
    if not rows:
        return
    current = view.currentIndex()
    row = current.row() + delta if current.isValid() else 0
    view.setCurrentIndex(model.index(max(0, min(rows - 1, row)), 0))
