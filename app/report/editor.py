"""The report editor: the draft with its headings, re-checked as the radiologist types.

The editor's document is the only copy of the text.  A check reads a snapshot
of it in a worker thread and never writes to it; a result is shown only when
it belongs to the newest request (its generation) and the text has not changed
since that snapshot.  Flags are underlined through extra selections, which are
not part of the document (nothing to undo, nothing saved), and each flag's span
is kept as a ``QTextCursor`` so the underline follows the sentence while the
text around it is edited.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QEvent, QThreadPool, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
from PySide6.QtWidgets import (
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    QTextEdit,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from app.report.style import EDITOR_FONT_FAMILIES, SELECTED_BACKGROUND, kind_color, kind_label
from app.report.worker import CheckWorker
from core_model.inference import Flag

#: A section heading at the start of a line: "FINDINGS:", "IMPRESSION:", "CLINICAL HISTORY:".
HEADING = re.compile(r"^[ \t]*([A-Z][A-Z /]{2,40}:)", re.MULTILINE)
DEFAULT_DEBOUNCE_MS = 400


class SectionHighlighter(QSyntaxHighlighter):
    """Shows section headings in bold; formatting only, the text is untouched."""

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)
        self.heading = QTextCharFormat()
        self.heading.setFontWeight(QFont.Weight.Bold)
        self.heading.setForeground(QColor("#263238"))

    def highlightBlock(self, text: str) -> None:  # noqa: N802 (Qt's name)
        m = HEADING.match(text)
        if m:
            self.setFormat(m.start(1), m.end(1) - m.start(1), self.heading)


class _TextEdit(QPlainTextEdit):
    """The plain-text editor; hovering a flagged span shows the flag."""

    def __init__(self, owner: ReportEditor) -> None:
        super().__init__(owner)
        self._owner = owner

    def viewportEvent(self, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.ToolTip:
            position = self.cursorForPosition(event.pos()).position()
            tip = self._owner.tooltip_at(position)
            if tip:
                QToolTip.showText(event.globalPos(), tip, self.viewport())
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().viewportEvent(event)


class ReportEditor(QWidget):
    """The draft report with live checking.

    Signals: ``flagsChanged(list[Flag])`` when a check's flags are shown,
    ``textEdited(str)`` on every change of the text (not on :meth:`set_text`),
    ``checkFailed(str)``, ``warningsChanged(list[str])``, ``busyChanged(bool)``.
    """

    flagsChanged = Signal(list)
    textEdited = Signal(str)
    checkFailed = Signal(str)
    warningsChanged = Signal(list)
    busyChanged = Signal(bool)

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
        heatmaps: bool = True,
    ) -> None:
        super().__init__(parent)
        self._edit = _TextEdit(self)
        self._edit.setObjectName("reportText")
        font = QFont()
        font.setFamilies(EDITOR_FONT_FAMILIES)
        font.setPointSize(11)
        self._edit.setFont(font)
        self._edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self._edit.document().setDocumentMargin(10)
        self._edit.setPlaceholderText("FINDINGS:\n\nIMPRESSION:\n")
        self._highlighter = SectionHighlighter(self._edit.document())
        self._status = QLabel(self)
        self._status.setObjectName("checkStatus")
        self._status.setStyleSheet("color: #546e7a; padding: 2px 4px;")
        self._status.setWordWrap(True)  # long warnings wrap; they never widen the window
        self._status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self._edit, 1)
        layout.addWidget(self._status)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(debounce_ms)
        self._timer.timeout.connect(self.recheck_now)
        # One thread: checks of this editor run one at a time, newest wins.
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._heatmaps = heatmaps

        self._reader: Any = None
        self._study_key: str | None = None
        self._images: list[Any] = []
        self._generation = 0
        self._latest = _Latest(0)
        self._in_flight = 0
        self._flags: list[Flag] = []
        self._anchors: list[list[QTextCursor]] = []  # per flag, one cursor per sentence
        self._flag_source: Any = None
        self._checked_text: str | None = None  # the text of the check whose flags are shown
        self._show_unreliable = False
        self._selected = -1
        self._loading = False
        self.checks_requested = 0
        self.stale_results = 0
        self._edit.textChanged.connect(self._on_text_changed)
        self._set_status("No model loaded")

    # ----------------------------------------------------------------- public API

    def set_reader(self, reader: Any) -> None:
        """The model to check with (a ``core_model.inference.Reader``), or ``None`` to stop."""
        self._reader = reader
        self._invalidate()
        self._schedule()

    def set_study(self, study_key: str | None, images: Sequence[Any]) -> None:
        """The study the report is about: a cache key and its images (paths, arrays or StudyImage)."""
        self._study_key = study_key
        self._checked_text = None
        self._show_unreliable = False
        self._images = list(images)
        self._invalidate()
        self._schedule()

    def set_text(self, text: str) -> None:
        """Replace the draft (a new document: the undo history starts here)."""
        self._loading = True
        try:
            self._edit.setPlainText(text)
        finally:
            self._loading = False
        self._invalidate()
        self._schedule()

    def text(self) -> str:
        return self._edit.toPlainText()

    def set_show_unreliable(self, show: bool) -> None:
        """Check this study's images even when the model's image check turns them away (the
        flags come marked unreliable); reset by :meth:`set_study`."""
        self._show_unreliable = bool(show)
        self._invalidate()
        self.recheck_now()

    def shows_unreliable(self) -> bool:
        return self._show_unreliable

    def checked_text(self) -> str | None:
        """The text whose check's flags are shown (None before the first check of a study)."""
        return self._checked_text

    def set_flag_source(self, source: Any) -> None:
        """Who decides which flags a finished check shows.

        ``source(study_key, checked_text, result)`` returns the flags to show
        (the reading session's, recorded in storage) or ``None`` to keep what is
        shown. Without a source the check's own flags are shown.
        """
        self._flag_source = source

    def show_flags(self, flags: list[Flag]) -> None:
        """Underline ``flags`` on the current text and announce them (``flagsChanged``)."""
        self._show(list(flags))
        self.flagsChanged.emit(list(self._flags))

    def flags(self) -> list[Flag]:
        return list(self._flags)

    def text_edit(self) -> QPlainTextEdit:
        """The underlying editor widget (for focus, key events and tests)."""
        return self._edit

    def debounce_ms(self) -> int:
        return self._timer.interval()

    def set_debounce_ms(self, ms: int) -> None:
        self._timer.setInterval(max(0, int(ms)))

    def is_busy(self) -> bool:
        return self._in_flight > 0

    def wait_for_idle(self, msecs: int = 30_000) -> bool:
        """Block until running checks end (for shutdown and tests); results arrive later as events."""
        return self._pool.waitForDone(msecs)

    def recheck_now(self) -> None:
        """Check the current text now (skipping the debounce)."""
        self._timer.stop()
        if self._reader is None:
            self._set_status("No model loaded: the report is not checked")
            return
        if not self._images:
            self._set_status("No study images: the report is not checked")
            return
        self._bump()
        self.checks_requested += 1
        worker = CheckWorker(
            self._reader,
            self._images,
            self.text(),
            study_key=self._study_key,
            generation=self._generation,
            latest=self._latest.get,  # a request superseded while queued skips the model
            heatmaps=self._heatmaps,
            show_unreliable=self._show_unreliable,
        )
        worker.signals.finished.connect(self._on_finished)
        worker.signals.failed.connect(self._on_failed)
        worker.signals.skipped.connect(self._on_done)
        self._in_flight += 1
        if self._in_flight == 1:
            self.busyChanged.emit(True)
        self._set_status("Checking\u2026")
        self._pool.start(worker)

    def flag_span(self, index: int) -> tuple[int, int] | None:
        """Where flag ``index``'s first sentence is in the current text (it follows edits)."""
        spans = self.flag_spans(index)
        return spans[0] if spans else None

    def flag_spans(self, index: int) -> list[tuple[int, int]]:
        """Where each sentence of flag ``index`` is in the current text (they follow edits)."""
        if not 0 <= index < len(self._anchors):
            return []
        return [(a.selectionStart(), a.selectionEnd()) for a in self._anchors[index]]

    def omission_anchor(self) -> tuple[int, int] | None:
        """The heading omissions are marked on: IMPRESSION, else FINDINGS, else the first heading."""
        text = self.text()
        headings = [(m.group(1), m.start(1), m.end(1)) for m in HEADING.finditer(text)]
        for wanted in ("IMPRESSION:", "FINDINGS:"):
            for name, start, end in headings:
                if name.strip() == wanted:
                    return start, end
        if headings:
            return headings[0][1], headings[0][2]
        return None

    def select_flag(self, index: int) -> None:
        """Highlight flag ``index`` (``-1`` for none) without moving the cursor."""
        self._selected = index if 0 <= index < len(self._flags) else -1
        self._refresh_selections()

    def jump_to_flag(self, index: int) -> None:
        """Select flag ``index`` and put the cursor at the start of its span (or its heading)."""
        self.select_flag(index)
        if self._selected < 0:
            return
        span = self.flag_span(index) or self.omission_anchor()
        if span is None:
            return
        cursor = self._edit.textCursor()
        cursor.setPosition(span[0])
        self._edit.setTextCursor(cursor)
        self._edit.ensureCursorVisible()

    def focus_text(self) -> None:
        self._edit.setFocus()

    def apply_correction(self, span: tuple[int, int], new_text: str) -> tuple[int, int]:
        """Replace ``span`` of the text by ``new_text`` as one undoable step (Ctrl+Z restores).

        Returns the span of the new text.
        """
        return self.apply_edits([(span, new_text)])

    def apply_edits(self, edits: Sequence[tuple[tuple[int, int], str]]) -> tuple[int, int]:
        """Replace several spans at once, as one undoable step; returns the first new span."""
        if self._edit.isReadOnly():
            return (0, 0)
        length = len(self.text())
        ordered = sorted(((max(0, min(a, length)), max(0, min(b, length))), t)
                         for (a, b), t in ((sorted(span), text) for span, text in edits))
        cursor = QTextCursor(self._edit.document())
        cursor.beginEditBlock()
        for (start, end), new_text in reversed(ordered):  # from the end: earlier spans stay valid
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            cursor.insertText(new_text)
        cursor.endEditBlock()
        (start, _), first = ordered[0]
        view = self._edit.textCursor()
        view.setPosition(start + len(first))
        self._edit.setTextCursor(view)
        return start, start + len(first)

    def tooltip_at(self, position: int) -> str:
        """The tooltip for the character at ``position``: the flags on it, as rich text."""
        parts = []
        for i, flag in enumerate(self._flags):
            if any(a <= position < b for a, b in self.flag_spans(i)):
                parts.append(_describe(flag))
        heading = self.omission_anchor()
        if heading and heading[0] <= position < heading[1]:
            parts += [_describe(f) for f in self._flags if f.span is None]
        return "<hr>".join(parts)

    def underlines(self) -> list[tuple[int, int, str]]:
        """The underlines shown now: (start, end, colour) per extra selection (for tests)."""
        out = []
        for sel in self._edit.extraSelections():
            fmt = sel.format
            if fmt.underlineStyle() == QTextCharFormat.UnderlineStyle.NoUnderline:
                continue
            out.append((sel.cursor.selectionStart(), sel.cursor.selectionEnd(),
                        fmt.underlineColor().name()))
        return out

    # ----------------------------------------------------------------- internals

    def _invalidate(self) -> None:
        """Results of requests made before now are stale."""
        self._bump()

    def _bump(self) -> None:
        self._generation += 1
        self._latest.value = self._generation

    def _schedule(self) -> None:
        if self._reader is not None and self._images:
            self._timer.start()

    def _on_text_changed(self) -> None:
        self._refresh_selections()
        if self._loading:
            return
        self._invalidate()
        self.textEdited.emit(self.text())
        self._schedule()

    def _on_done(self, generation: int) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        if self._in_flight == 0:
            self.busyChanged.emit(False)

    def _on_finished(self, generation: int, checked: str, result: Any, images: list) -> None:
        self._on_done(generation)
        if generation != self._generation or checked != self.text():
            self.stale_results += 1
            return
        if images:
            self._images = list(images)  # decoded once; later checks skip the file read
        flags = list(result.flags)
        if self._flag_source is not None:
            shown = self._flag_source(self._study_key, checked, result)
            if shown is None:
                self._set_status("Checked, but the flags could not be recorded", error=True)
                return
            flags = list(shown)
        self._checked_text = checked
        self._show(flags)
        warnings = list(getattr(result, "warnings", []) or [])
        self.warningsChanged.emit(warnings)
        n = len(self._flags)
        summary = f"{n} flag{'s' if n != 1 else ''}"
        self._set_status(summary + ("; " + "; ".join(warnings) if warnings else ""))
        self.flagsChanged.emit(list(self._flags))

    def _on_failed(self, generation: int, checked: str, message: str) -> None:
        self._on_done(generation)
        if generation != self._generation:
            self.stale_results += 1
            return
        self._set_status(f"Not checked: {message}", error=True)
        self.checkFailed.emit(message)

    def _show(self, flags: list[Flag]) -> None:
        document = self._edit.document()
        length = len(self.text())
        self._flags = flags
        self._anchors = []
        for flag in flags:
            anchors = []
            for start, end in flag.spans:
                if not 0 <= start < end <= length:
                    continue
                cursor = QTextCursor(document)
                cursor.setPosition(start)
                cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
                anchors.append(cursor)
            self._anchors.append(anchors)
        self._selected = -1
        self._refresh_selections()

    def _refresh_selections(self) -> None:
        selections = []
        for i, flag in enumerate(self._flags):
            for span in self.flag_spans(i):
                if span[0] == span[1]:
                    continue
                selections.append(self._selection(span, flag.kind, selected=i == self._selected))
        omissions = [i for i, f in enumerate(self._flags) if f.span is None]
        heading = self.omission_anchor()
        if omissions and heading is not None:
            selected = self._selected in omissions
            selections.append(self._selection(heading, "omission", selected=selected, dotted=True))
        self._edit.setExtraSelections(selections)

    def _selection(self, span: tuple[int, int], kind: str, *, selected: bool,
                   dotted: bool = False) -> QTextEdit.ExtraSelection:
        sel = QTextEdit.ExtraSelection()
        cursor = QTextCursor(self._edit.document())
        cursor.setPosition(span[0])
        cursor.setPosition(span[1], QTextCursor.MoveMode.KeepAnchor)
        sel.cursor = cursor
        fmt = QTextCharFormat()
        style = QTextCharFormat.UnderlineStyle
        fmt.setUnderlineStyle(style.DashUnderline if dotted else style.WaveUnderline)
        fmt.setUnderlineColor(QColor(kind_color(kind)))
        if selected:
            fmt.setBackground(QColor(SELECTED_BACKGROUND))
        sel.format = fmt
        return sel

    def _set_status(self, text: str, *, error: bool = False) -> None:
        colour = "#c62828" if error else "#546e7a"
        self._status.setStyleSheet(f"color: {colour}; padding: 2px 4px;")
        self._status.setText(text)

    def status_text(self) -> str:
        return self._status.text()


class _Latest:
    """The newest generation, readable from the worker thread without touching Qt objects."""

    def __init__(self, value: int) -> None:
        self.value = value

    def get(self) -> int:
        return self.value


def _describe(flag: Flag) -> str:
    colour = kind_color(flag.kind)
    lines = [
        f"<b style='color:{colour}'>{kind_label(flag.kind)}</b> \u00b7 <b>{html.escape(flag.entity)}</b>",
        f"Report says: {html.escape(flag.report_says)}",
        f"Image suggests: {html.escape(flag.image_suggests)} (p = {flag.probability:.2f})",
    ]
    return "<br>".join(lines)
