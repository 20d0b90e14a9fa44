"""Small widgets the admin dialogs share: a path field with a Browse button, a message line."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

#: Message kinds of :class:`MessageLine` and their colours.
MESSAGE_COLORS = {"info": "#1f4e79", "ok": "#1b6e20", "warning": "#8a5300", "error": "#a4161a"}


class PathField(QWidget):
    """A line edit for a path and a Browse… button.

    ``mode`` is ``dir`` (an existing folder), ``newdir`` (a folder that may not
    exist yet: the picker chooses a parent-or-folder and the name can be typed)
    or ``file`` (an existing file matching ``file_filter``). Emits
    ``changed(str)`` when the text changes.
    """

    changed = Signal(str)

    def __init__(self, mode: str = "dir", *, placeholder: str = "", file_filter: str = "",
                 caption: str = "Choose", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        if mode not in ("dir", "newdir", "file"):
            raise ValueError(f"unknown path field mode {mode!r}")
        self.mode = mode
        self.file_filter = file_filter
        self.caption = caption
        self.edit = QLineEdit(self)
        self.edit.setPlaceholderText(placeholder)
        self.edit.textChanged.connect(self.changed)
        self.button = QPushButton("Browse…", self)
        self.button.clicked.connect(self.browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.button)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming, like QLineEdit
        self.edit.setText(text)

    def path(self) -> Path | None:
        """The path typed or chosen, None when empty (``~`` expanded)."""
        text = self.text()
        return Path(text).expanduser() if text else None

    def browse(self) -> None:
        start = self.text() or str(Path.home())
        if self.mode == "file":
            chosen, _ = QFileDialog.getOpenFileName(self, self.caption, start, self.file_filter)
        else:
            chosen = QFileDialog.getExistingDirectory(self, self.caption, start)
        if chosen:
            self.setText(chosen)


class MessageLine(QLabel):
    """A word-wrapped, selectable line for the outcome of an action, coloured by kind."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.kind = ""
        self.plain = ""
        self.hide()

    def show_message(self, text: str, kind: str = "info") -> None:
        self.kind, self.plain = kind, text
        color = MESSAGE_COLORS.get(kind, MESSAGE_COLORS["info"])
        body = html.escape(text).replace("\n", "<br>")
        self.setText(f'<span style="color:{color}">{body}</span>')
        self.setVisible(bool(text))

    def clear_message(self) -> None:
        self.kind, self.plain = "", ""
        self.clear()
        self.hide()


class LogView(QPlainTextEdit):
    """A read-only log: every line of the child's stdout, and its stderr in red."""

    def __init__(self, parent: QWidget | None = None, *, max_lines: int = 5000) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(max_lines)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = self.font()
        font.setFamily("monospace")
        font.setStyleHint(font.StyleHint.Monospace)
        self.setFont(font)

    def add_line(self, line: str, *, error: bool = False) -> None:
        # Every line as HTML with its own colour, so no formatting carries over.
        color = "#a4161a" if error else self.palette().text().color().name()
        body = html.escape(line) or "&nbsp;"
        self.appendHtml(f'<span style="color:{color}; white-space:pre">{body}</span>')

    def lines(self) -> list[str]:
        return self.toPlainText().splitlines()


__all__ = ["LogView", "MessageLine", "PathField"]
