"""The priors panel: similar prior studies by image or by the draft, and their reports.

The list shows each hit's cosine similarity, chips for its positive findings
and the first words of its report. Selecting a hit shows the whole report,
read-only, with the sentence under the cursor highlighted; "Insert sentence"
(or Enter, or a double-click on a sentence) emits ``insertRequested(str)``
for the main window to insert into the draft at the editor's cursor.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import (
    QEvent,
    QModelIndex,
    QObject,
    QRect,
    QRectF,
    QSize,
    Qt,
    QThreadPool,
    QTimer,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QShortcut,
    QTextCharFormat,
    QTextCursor,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QListView,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from app.priors.hits_model import PriorHitsModel
from app.priors.search import (
    DEFAULT_K,
    MODES,
    Mode,
    PriorHit,
    PriorResults,
    PriorSearch,
    ReportSentence,
    no_index_message,
)
from app.priors.worker import IndexOpener, PriorWorker
from app.report.panel import step_view
from app.report.style import EDITOR_FONT_FAMILIES, SELECTED_BACKGROUND

#: Wait after the last keystroke in the draft before searching by text again.
DEFAULT_DEBOUNCE_MS = 800
MODE_LABELS: dict[str, str] = {"image": "By &image", "text": "By &text"}
#: Chip colours: (background, border, text).
CHIP_PRESENT = ("#e8eaf6", "#c5cae9", "#283593")
CHIP_UNCERTAIN = ("#ffffff", "#9fa8da", "#5c6bc0")
CHIP_NORMAL = ("#e8f5e9", "#c8e6c9", "#2e7d32")
CHIP_NONE = ("#f5f5f5", "#e0e0e0", "#757575")
SCORE_COLOUR = "#00695c"
MODE_BUTTON_STYLE = (
    "QPushButton { padding: 3px 12px; border: 1px solid #90a4ae; border-radius: 3px; "
    "background: #ffffff; color: #37474f; } "
    "QPushButton:checked { background: #37474f; color: #ffffff; border-color: #37474f; } "
    "QPushButton:focus { border-color: #1e88e5; }"
)


class HitDelegate(QStyledItemDelegate):
    """Paints a hit: score badge and study, finding chips, two lines of the report."""

    PAD = 8
    GAP = 4

    def sizeHint(self, option: QStyleOptionViewItem, index: Any) -> QSize:  # noqa: N802
        line = QFontMetrics(option.font).height()
        return QSize(300, 2 * self.PAD + 5 * line + 3 * self.GAP)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Any) -> None:
        hit: PriorHit | None = index.data(PriorHitsModel.HitRole)
        if hit is None:
            return super().paint(painter, option, index)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect: QRect = option.rect
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.fillRect(rect, QColor("#e3f2fd") if selected else QColor("#ffffff"))
        painter.setPen(QPen(QColor("#e0e0e0")))
        painter.drawLine(rect.bottomLeft(), rect.bottomRight())
        if selected and option.state & QStyle.StateFlag.State_HasFocus:
            painter.fillRect(QRect(rect.left(), rect.top(), 4, rect.height()), QColor("#1e88e5"))

        base = QFont(option.font)
        bold = QFont(base)
        bold.setBold(True)
        small = QFont(base)
        small.setPointSizeF(max(7.0, base.pointSizeF() - 1))
        metrics = QFontMetrics(base)
        line = metrics.height()
        left = rect.left() + self.PAD + 4
        right = rect.right() - self.PAD
        top = rect.top() + self.PAD

        # line 1: score badge, study id ........ rank
        score = f"{hit.score:.2f}"
        badge_w = QFontMetrics(bold).horizontalAdvance(score) + 12
        badge = QRectF(left, top, badge_w, line + 2)
        path = QPainterPath()
        path.addRoundedRect(badge, 4, 4)
        painter.fillPath(path, QColor(SCORE_COLOUR))
        painter.setFont(bold)
        painter.setPen(QColor("#ffffff"))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, score)
        rank = f"#{index.row() + 1}"
        painter.setFont(small)
        rank_w = QFontMetrics(small).horizontalAdvance(rank)
        painter.setPen(QColor("#90a4ae"))
        painter.drawText(QRect(right - rank_w, top, rank_w, line + 2),
                         Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, rank)
        painter.setFont(bold)
        painter.setPen(QColor("#212121"))
        id_left = int(badge.right()) + 8
        id_rect = QRect(id_left, top, right - rank_w - 8 - id_left, line + 2)
        painter.drawText(id_rect, Qt.AlignmentFlag.AlignVCenter,
                         QFontMetrics(bold).elidedText(f"Study {hit.study_id}",
                                                       Qt.TextElideMode.ElideRight, id_rect.width()))

        # line 2: chips
        chips_top = top + line + 2 + self.GAP
        self._chips(painter, small, _chips_of(hit), left, chips_top, right)

        # lines 3-4: the report's first words
        painter.setFont(base)
        painter.setPen(QColor("#546e7a"))
        text_top = chips_top + line + 2 * self.GAP
        for no, text in enumerate(_wrap(metrics, hit.preview() or "(no report text)", right - left, 2)):
            painter.drawText(QRect(left, text_top + no * line, right - left, line),
                             Qt.AlignmentFlag.AlignVCenter, text)
        painter.restore()

    def _chips(self, painter: QPainter, font: QFont, chips: list[tuple[str, tuple[str, str, str]]],
               left: int, top: int, right: int) -> None:
        metrics = QFontMetrics(font)
        painter.setFont(font)
        x = left
        height = metrics.height() + 4
        for n, (text, (background, border, colour)) in enumerate(chips):
            width = metrics.horizontalAdvance(text) + 12
            rest = len(chips) - n - 1
            more = f"+{rest}" if rest else ""
            reserve = metrics.horizontalAdvance(more) + 8 if more else 0
            if x + width > right - reserve and n:
                painter.setPen(QColor("#78909c"))
                painter.drawText(QRect(x, top, right - x, height), Qt.AlignmentFlag.AlignVCenter,
                                 f"+{len(chips) - n}")
                return
            width = min(width, right - x)
            chip = QRectF(x, top, width, height)
            path = QPainterPath()
            path.addRoundedRect(chip.adjusted(0.5, 0.5, -0.5, -0.5), height / 2, height / 2)
            painter.fillPath(path, QColor(background))
            pen = QPen(QColor(border))
            if colour == CHIP_UNCERTAIN[2]:
                pen.setStyle(Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawPath(path)
            painter.setPen(QColor(colour))
            painter.drawText(chip, Qt.AlignmentFlag.AlignCenter,
                             metrics.elidedText(text, Qt.TextElideMode.ElideRight, int(width) - 10))
            x += int(width) + 4


def _chips_of(hit: PriorHit) -> list[tuple[str, tuple[str, str, str]]]:
    chips = [(f, CHIP_PRESENT) for f in hit.positives()]
    chips += [(f"{f}?", CHIP_UNCERTAIN) for f in hit.uncertain()]
    if not chips:
        if hit.is_normal():
            chips = [("No Finding", CHIP_NORMAL)]
        elif hit.labels_source == "none":
            chips = [("labels unknown", CHIP_NONE)]
        else:
            chips = [("no positive finding", CHIP_NONE)]
    return chips


def _wrap(metrics: QFontMetrics, text: str, width: int, lines: int) -> list[str]:
    """Greedy word wrap into at most ``lines`` lines, the last one elided."""
    words = text.split()
    out: list[str] = []
    elide = Qt.TextElideMode.ElideRight

    def fits(text: str) -> bool:  # the same measure as the elision, so a fitted line is never elided
        return metrics.elidedText(text, elide, width) == text

    while words and len(out) < lines - 1:
        current = words.pop(0)
        while words and fits(current + " " + words[0]):
            current += " " + words.pop(0)
        out.append(metrics.elidedText(current, elide, width))
    if words:
        out.append(metrics.elidedText(" ".join(words), elide, width))
    return out


class _Generation:
    """The newest generation of one mode, readable from a worker thread without Qt."""

    def __init__(self) -> None:
        self.value = 0

    def get(self) -> int:
        return self.value


class PriorsPanel(QWidget):
    """Similar prior studies of the current study, by image or by the draft.

    Feed it with :meth:`open_index` (loads an index directory off the GUI
    thread) or :meth:`set_search` (a :class:`PriorSearch`, or ``None``),
    :meth:`set_study` (the study being read) and :meth:`set_draft` (the
    draft, on every edit; text searches wait ``debounce_ms`` after the last
    change). Searches run on the panel's own one-thread ``QThreadPool``; a
    result is shown only if no newer request of its mode was made since (a new
    study, a new draft, a new search), anything else is dropped and counted in
    ``stale_results``.

    Signals: ``insertRequested(str)`` the sentence(s) to insert into the
    draft; ``hitSelected(object)`` the selected :class:`PriorHit` or ``None``;
    ``resultsChanged(str, object)`` a mode and its new :class:`PriorResults`;
    ``busyChanged(bool)``.

    Keys: Alt+I / Alt+T by image / by text, F5 search again. In the list:
    J / Down next hit, K / Up previous, Enter to the report. In the report:
    J / K next / previous sentence (Shift+arrows select several), Enter or
    Insert inserts, Escape back to the list. Double-click inserts a sentence.
    """

    insertRequested = Signal(str)
    hitSelected = Signal(object)
    resultsChanged = Signal(str, object)
    busyChanged = Signal(bool)

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    ) -> None:
        super().__init__(parent)
        self._search: PriorSearch | None = None
        self._open_token = 0
        self._opening = False
        self._study_key: str | None = None
        self._images: list[Any] = []
        self._exclude: tuple[str, ...] = ()
        self._draft = ""
        self._mode: Mode = "image"
        self._results: dict[str, PriorResults | None] = dict.fromkeys(MODES)
        self._dirty: dict[str, bool] = dict.fromkeys(MODES, True)
        self._generations = {m: _Generation() for m in MODES}
        self._in_flight = 0
        self._sentences: list[ReportSentence] = []
        self._positions: list[tuple[int, int]] = []  # sentence spans in the view's positions
        self.stale_results = 0
        self.searches_started = 0

        # header: title, mode toggle
        title = QLabel("Similar priors", self)
        title_font = QFont(title.font())
        title_font.setBold(True)
        title_font.setPointSizeF(title_font.pointSizeF() + 1)
        title.setFont(title_font)
        self.mode_buttons: dict[str, QPushButton] = {}
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        header = QHBoxLayout()
        header.addWidget(title)
        header.addStretch(1)
        for mode in MODES:
            button = QPushButton(MODE_LABELS[mode], self)
            button.setCheckable(True)
            button.setObjectName(f"mode-{mode}")
            button.setToolTip(
                "Past studies whose images look like this study's (Alt+I)" if mode == "image"
                else "Past reports that say what the draft says (Alt+T)"
            )
            button.setStyleSheet(MODE_BUTTON_STYLE)
            button.clicked.connect(lambda _checked=False, m=mode: self.set_mode(m))
            self._group.addButton(button)
            self.mode_buttons[mode] = button
            header.addWidget(button)
        self.mode_buttons["image"].setChecked(True)

        self.message = QLabel(self)
        self.message.setObjectName("priorsMessage")
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._set_message("")

        # hits
        self.model = PriorHitsModel(self)
        self.view = QListView(self)
        self.view.setObjectName("priorsList")
        self.view.setModel(self.model)
        self.view.setItemDelegate(HitDelegate(self.view))
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setUniformItemSizes(True)
        self.view.setStyleSheet("QListView { border: 1px solid #cfd8dc; background: white; }")
        self.view.installEventFilter(self)
        self.view.selectionModel().currentChanged.connect(self._on_current)

        # the selected report
        self.report_title = QLabel(self)
        self.report_title.setObjectName("priorsReportTitle")
        self.report_title.setStyleSheet("color: #37474f;")
        self.report_view = QPlainTextEdit(self)
        self.report_view.setObjectName("priorsReport")
        self.report_view.setReadOnly(True)
        self.report_view.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        font = QFont()
        font.setFamilies(EDITOR_FONT_FAMILIES)
        font.setPointSize(10)
        self.report_view.setFont(font)
        self.report_view.document().setDocumentMargin(8)
        self.report_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.report_view.setStyleSheet("QPlainTextEdit { border: 1px solid #cfd8dc; background: #fbfcfc; }")
        self.report_view.setPlaceholderText("Select a prior study to read its report.")
        self.report_view.installEventFilter(self)
        self.report_view.viewport().installEventFilter(self)
        self.report_view.cursorPositionChanged.connect(self._on_cursor)
        self.report_view.selectionChanged.connect(self._on_cursor)

        self.insert_button = QPushButton("Insert &sentence", self)
        self.insert_button.setObjectName("insertSentence")
        self.insert_button.setToolTip(
            "Insert the highlighted sentence into the draft at the editor's cursor "
            "(Enter in the report, or double-click the sentence)"
        )
        self.insert_button.clicked.connect(lambda: self.insert_sentence())
        self.hint = QLabel("Click a sentence, then Insert; double-click inserts at once.", self)
        self.hint.setStyleSheet("color: #78909c;")
        self.hint.setWordWrap(True)
        footer = QHBoxLayout()
        footer.addWidget(self.hint, 1)
        footer.addWidget(self.insert_button)

        lower = QWidget(self)
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.setSpacing(4)
        lower_layout.addWidget(self.report_title)
        lower_layout.addWidget(self.report_view, 1)
        lower_layout.addLayout(footer)
        self.splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.addWidget(self.view)
        self.splitter.addWidget(lower)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(header)
        layout.addWidget(self.message)
        layout.addWidget(self.splitter, 1)
        self.setFocusProxy(self.view)
        QWidget.setTabOrder(self.view, self.report_view)
        QWidget.setTabOrder(self.report_view, self.insert_button)

        refresh = QShortcut(QKeySequence(Qt.Key.Key_F5), self)
        refresh.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        refresh.activated.connect(self.refresh)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(max(0, int(debounce_ms)))
        self._timer.timeout.connect(self._on_draft_settled)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._show_results()

    # ----------------------------------------------------------------- inputs

    def set_search(self, search: PriorSearch | None) -> None:
        """The model and index to search (``None``: no index); every result so far is stale."""
        self._open_token += 1  # an index still being opened is not wanted any more
        self._opening = False
        self._search = search
        self._invalidate(*MODES)
        self._request(self._mode)

    def open_index(self, reader: Any, index_dir: str | os.PathLike[str] | None, *, k: int = DEFAULT_K) -> None:
        """Load ``index_dir`` for ``reader``'s model off the GUI thread, then search with it.

        :meth:`PriorSearch.open` verifies every file of the index, which takes
        a while for a big one; until it is done the panel says "Loading".
        A missing or mismatched index ends as its message, like :meth:`set_search`.
        """
        self._open_token += 1
        token = self._open_token
        self._opening = True
        self._search = None
        self._invalidate(*MODES)
        self._results = dict.fromkeys(MODES)
        self._show_results()
        self._set_message("Loading the prior index\u2026")
        opener = IndexOpener(reader, index_dir, token=token, k=k)
        opener.signals.opened.connect(self._on_opened)
        self._in_flight += 1
        if self._in_flight == 1:
            self.busyChanged.emit(True)
        self._pool.start(opener)

    def _on_opened(self, token: int, search: PriorSearch) -> None:
        self._done()
        if token != self._open_token:
            self.stale_results += 1
            return
        self.set_search(search)

    def search(self) -> PriorSearch | None:
        return self._search

    def set_study(
        self,
        study_key: str | None,
        images: Sequence[Any],
        *,
        exclude_ids: Sequence[str] = (),
        draft: str | None = None,
    ) -> None:
        """The study being read: the reader's cache key, its images, the ids it has in the index.

        ``exclude_ids`` are left out of every result (the study itself: for an
        index built from a MIMIC-layout dataset its study id, which the importer
        stores as the accession number). ``draft`` replaces the draft too.
        The hits of the previous study are cleared at once.
        """
        self._study_key = study_key
        self._images = list(images)
        self._exclude = tuple(str(x) for x in exclude_ids if x)
        if draft is not None:
            self._draft = draft
        self._timer.stop()
        self._invalidate(*MODES)
        self._results = dict.fromkeys(MODES)
        self._show_results()
        self._request(self._mode)

    def set_draft(self, text: str) -> None:
        """The current draft (call on every edit); by-text results follow after the debounce."""
        if text == self._draft:
            return
        self._draft = text
        self._invalidate("text")
        self._timer.start()

    def draft(self) -> str:
        return self._draft

    def set_mode(self, mode: Mode) -> None:
        """Show the hits ``"image"`` or ``"text"``; searches if that mode's results are out of date."""
        if mode not in MODES:
            raise ValueError(f"mode must be 'image' or 'text', got {mode!r}")
        self._mode = mode
        button = self.mode_buttons[mode]
        if not button.isChecked():
            button.setChecked(True)
        if mode == "text" and self._timer.isActive():
            self._timer.stop()
        self._show_results()
        if self._dirty[mode]:
            self._request(mode)

    def mode(self) -> Mode:
        return self._mode

    def refresh(self) -> None:
        """Search the current mode again now."""
        self._timer.stop()
        self._invalidate(self._mode)
        self._request(self._mode)

    def set_debounce_ms(self, ms: int) -> None:
        self._timer.setInterval(max(0, int(ms)))

    # ----------------------------------------------------------------- state

    def results(self, mode: Mode | None = None) -> PriorResults | None:
        """The newest results of ``mode`` (the current one by default), ``None`` before any."""
        return self._results[mode or self._mode]

    def hits(self) -> list[PriorHit]:
        """The hits listed now (the current mode's)."""
        return self.model.hits()

    def message_text(self) -> str:
        return self.message.text()

    def is_busy(self) -> bool:
        return self._in_flight > 0

    def wait_for_idle(self, msecs: int = 30_000) -> bool:
        """Block until running searches end (shutdown, tests); results arrive later as events."""
        return self._pool.waitForDone(msecs)

    # ----------------------------------------------------------------- hits

    def current_hit(self) -> PriorHit | None:
        index = self.view.currentIndex()
        return self.model.hit(index.row()) if index.isValid() else None

    def select_hit(self, row: int) -> None:
        if 0 <= row < self.model.rowCount():
            self.view.setCurrentIndex(self.model.index(row))

    def next_hit(self) -> None:
        self._step_hit(1)

    def previous_hit(self) -> None:
        self._step_hit(-1)

    def _step_hit(self, delta: int) -> None:
        step_view(self.view, delta)

    # ----------------------------------------------------------------- sentences

    def sentences(self) -> list[ReportSentence]:
        """Sentences of the report shown (spans into its text)."""
        return list(self._sentences)

    def select_sentence(self, number: int) -> None:
        """Put the cursor on sentence ``number`` of the shown report (highlighted)."""
        if not 0 <= number < len(self._positions):
            return
        cursor = self.report_view.textCursor()
        cursor.setPosition(self._positions[number][0])
        self.report_view.setTextCursor(cursor)
        self.report_view.ensureCursorVisible()

    def selected_sentences(self) -> list[ReportSentence]:
        """The sentences the user picked: under the selection, else the one at the cursor."""
        cursor = self.report_view.textCursor()
        lo, hi = cursor.selectionStart(), cursor.selectionEnd()
        if lo == hi:
            found = [i for i, (a, b) in enumerate(self._positions) if a <= lo <= b]
            return [self._sentences[found[0]]] if found else []
        return [s for s, (a, b) in zip(self._sentences, self._positions, strict=True) if a < hi and b > lo]

    def selected_text(self) -> str:
        """What Insert would insert: the selected sentence(s), one line, ``""`` for none."""
        return " ".join(s.text for s in self.selected_sentences())

    def insert_sentence(self) -> bool:
        """Emit ``insertRequested`` with the selected sentence(s); False when none is selected."""
        text = self.selected_text()
        if not text:
            return False
        self.insertRequested.emit(text)
        return True

    def _step_sentence(self, delta: int) -> None:
        if not self._positions:
            return
        picked = self.selected_sentences()
        if picked:
            number = self._sentences.index(picked[0] if delta < 0 else picked[-1]) + delta
        else:
            at = self.report_view.textCursor().position()
            after = [i for i, (a, _) in enumerate(self._positions) if a >= at]
            number = (after[0] if after else len(self._positions)) + (0 if delta > 0 else -1)
        self.select_sentence(max(0, min(len(self._positions) - 1, number)))

    # ----------------------------------------------------------------- internals

    def _invalidate(self, *modes: str) -> None:
        for mode in modes:
            self._generations[mode].value += 1
            self._dirty[mode] = True

    def _request(self, mode: Mode) -> None:
        """Start a search of ``mode`` now, or show at once why it cannot run."""
        self._dirty[mode] = False
        generation = self._generations[mode].value
        search = self._search
        reason = ""
        if self._opening:
            self._dirty[mode] = True  # searched once the index is open
            if mode == self._mode:
                self._set_message("Loading the prior index\u2026")
            return
        if search is None:
            reason = no_index_message()
        elif not search.available:
            reason = search.unavailable_reason
        elif mode == "image" and not self._images:
            reason = ("no study open: search by image needs the study's images" if self._study_key is None
                      else "no study images: search by image needs the study's images")
        elif mode == "text" and not self._draft.strip():
            reason = "search by text needs a draft: the report is empty"
        if reason or search is None:
            self._accept(mode, generation, PriorResults(mode, ok=False, message=reason))
            return
        worker = PriorWorker(
            search,
            mode,
            generation=generation,
            images=self._images,
            draft=self._draft,
            study_key=self._study_key,
            exclude=self._exclude,
            latest=self._generations[mode].get,
        )
        # Bound methods of this QObject: the signals are queued into the GUI thread.
        worker.signals.finished.connect(self._on_finished)
        worker.signals.failed.connect(self._on_failed)
        worker.signals.skipped.connect(self._on_skipped)
        self._in_flight += 1
        self.searches_started += 1
        if self._in_flight == 1:
            self.busyChanged.emit(True)
        if mode == self._mode:
            self._set_message("Searching\u2026")
        self._pool.start(worker)

    def _done(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        if self._in_flight == 0:
            self.busyChanged.emit(False)

    def _on_skipped(self, _mode: str, _generation: int) -> None:
        self._done()
        self.stale_results += 1

    def _on_finished(self, mode: Mode, generation: int, results: PriorResults) -> None:
        self._done()
        self._accept(mode, generation, results)

    def _on_failed(self, mode: Mode, generation: int, message: str) -> None:
        self._done()
        self._accept(mode, generation, PriorResults(mode, ok=False, message=message))

    def _accept(self, mode: Mode, generation: int, results: PriorResults) -> None:
        """Keep ``results`` if they answer the newest request of ``mode``; drop them otherwise."""
        if generation != self._generations[mode].value:
            self.stale_results += 1
            return
        self._results[mode] = results
        if mode == self._mode:
            self._show_results()
        self.resultsChanged.emit(mode, results)

    def _on_draft_settled(self) -> None:
        if self._mode == "text":
            self._request("text")

    def _show_results(self) -> None:
        results = self._results[self._mode]
        previous = self.current_hit()
        hits = list(results.hits) if results is not None else []
        self.model.set_hits(hits)
        if results is None:
            self._set_message("Searching\u2026" if self.is_busy() else "")
        elif not results.ok:
            self._set_message(results.message, error=True)
        else:
            how = "by image" if self._mode == "image" else "by text"
            parts = [f"{len(hits)} similar prior{'s' if len(hits) != 1 else ''} {how}"
                     if hits else results.message]
            if results.note:
                parts.append(results.note)
            self._set_message("; ".join(p for p in parts if p))
        row = next((i for i, h in enumerate(hits) if previous and h.study_id == previous.study_id), 0)
        if hits:
            self.view.setCurrentIndex(self.model.index(row))
        else:
            self._show_report(None)

    def _set_message(self, text: str, *, error: bool = False) -> None:
        colour = "#c62828" if error else "#546e7a"
        self.message.setStyleSheet(f"color: {colour}; padding: 2px 0;")
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        hit = self.model.hit(current.row()) if current.isValid() else None
        self._show_report(hit)
        self.hitSelected.emit(hit)

    def _show_report(self, hit: PriorHit | None) -> None:
        if hit is None:
            self._sentences, self._positions = [], []
            self.report_title.setText("")
            self.report_view.setPlainText("")
            self._on_cursor()
            return
        findings = ", ".join(hit.positives() + [f"{f}?" for f in hit.uncertain()])
        findings = findings or ("No Finding" if hit.is_normal() else "no positive finding")
        self.report_title.setText(f"<b>Study {html.escape(hit.study_id)}</b> \u00b7 similarity "
                                  f"{hit.score:.2f} \u00b7 {html.escape(findings)}")
        self._sentences = hit.sentences()
        map_ = _Utf16(hit.report)
        self._positions = [(map_(s.start), map_(s.end)) for s in self._sentences]
        self.report_view.setPlainText(hit.report or "(the index holds no report text for this study)")
        if self._positions:
            self.select_sentence(0)
        self._on_cursor()

    def _on_cursor(self) -> None:
        picked = {s.start for s in self.selected_sentences()}
        selections = []
        document = self.report_view.document()
        for sentence, (a, b) in zip(self._sentences, self._positions, strict=True):
            if sentence.start not in picked:
                continue
            sel = QTextEdit.ExtraSelection()
            cursor = QTextCursor(document)
            cursor.setPosition(a)
            cursor.setPosition(b, QTextCursor.MoveMode.KeepAnchor)
            sel.cursor = cursor
            fmt = QTextCharFormat()
            fmt.setBackground(QColor(SELECTED_BACKGROUND))
            sel.format = fmt
            selections.append(sel)
        self.report_view.setExtraSelections(selections)
        n = len(picked)
        self.insert_button.setEnabled(n > 0)
        self.insert_button.setText("Insert &sentence" if n <= 1 else f"Insert {n} &sentences")

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        kind = event.type()
        if watched is self.report_view.viewport() and kind == QEvent.Type.MouseButtonDblClick:
            assert isinstance(event, QMouseEvent)
            position = self.report_view.cursorForPosition(event.position().toPoint()).position()
            number = next((i for i, (a, b) in enumerate(self._positions) if a <= position <= b), -1)
            if number >= 0:
                self.select_sentence(number)
                self.insert_sentence()
            return True
        if kind != QEvent.Type.KeyPress:
            return super().eventFilter(watched, event)
        assert isinstance(event, QKeyEvent)
        if event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            return False
        key = Qt.Key(event.key())
        if watched is self.view:
            actions = {
                Qt.Key.Key_J: self.next_hit,
                Qt.Key.Key_K: self.previous_hit,
                Qt.Key.Key_Return: self._to_report,
                Qt.Key.Key_Enter: self._to_report,
            }
        elif watched is self.report_view:
            actions = {
                Qt.Key.Key_J: lambda: self._step_sentence(1),
                Qt.Key.Key_K: lambda: self._step_sentence(-1),
                Qt.Key.Key_Return: self.insert_sentence,
                Qt.Key.Key_Enter: self.insert_sentence,
                Qt.Key.Key_Insert: self.insert_sentence,
                Qt.Key.Key_Escape: self.view.setFocus,
            }
        else:
            return super().eventFilter(watched, event)
        action = actions.get(key)
        if action is None:
            return False
        action()
        return True

    def _to_report(self) -> None:
        if self.current_hit() is not None:
            self.report_view.setFocus()
            if not self.selected_sentences() and self._positions:
                self.select_sentence(0)


class _Utf16:
    """Python string index -> Qt document position (UTF-16 code units)."""

    def __init__(self, text: str) -> None:
        self._prefix: list[int] | None = None
        if any(ord(c) > 0xFFFF for c in text):
            prefix = [0]
            for c in text:
                prefix.append(prefix[-1] + (2 if ord(c) > 0xFFFF else 1))
            self._prefix = prefix

    def __call__(self, index: int) -> int:
        return index if self._prefix is None else self._prefix[index]


__all__ = ["HitDelegate", "PriorsPanel"]
