"""Glue between a :class:`ReportEditor` and a :class:`FlagsPanel`."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import QObject, Signal

from app.report.corrections import Correction, suggest_correction
from app.report.editor import ReportEditor
from app.report.panel import FlagsPanel
from core_model.inference import Flag


class CheckSession(QObject):
    """Keeps the panel on the editor's flags and carries decisions back to the text.

    * a check's flags go to the panel (with the text they were checked on);
    * selecting a flag highlights its span and emits ``heatmapRequested(Flag)``
      for the viewer;
    * Enter / Edit moves the editor's cursor to the span;
    * an accepted flag's correction is applied to the editor (one undo step),
      re-derived on the current text so it lands on the sentence where it is now.

    ``decided(flag, decision, reason)`` repeats the panel's decisions with the
    flag itself, for whoever records them (storage).
    """

    heatmapRequested = Signal(object)
    decided = Signal(object, str, object)

    def __init__(self, editor: ReportEditor, panel: FlagsPanel, parent: QObject | None = None) -> None:
        super().__init__(parent or editor)
        self.editor = editor
        self.panel = panel
        editor.flagsChanged.connect(self._on_flags)
        panel.currentFlagChanged.connect(self._on_current)
        panel.jumpRequested.connect(self._on_jump)
        panel.decided.connect(self._on_decided)

    def _on_flags(self, flags: list[Flag]) -> None:
        self.panel.set_flags(flags, self.editor.text())
        self._on_current(self.panel.current_flag_index())

    def _on_current(self, index: int) -> None:
        self.editor.select_flag(index)
        flags = self.editor.flags()
        if 0 <= index < len(flags):
            self.heatmapRequested.emit(flags[index])

    def _on_jump(self, index: int) -> None:
        self.editor.jump_to_flag(index)
        self.editor.focus_text()

    def _on_decided(self, index: int, decision: str, reason: object, correction: object) -> None:
        flags = self.editor.flags()
        if not 0 <= index < len(flags):
            return
        flag = flags[index]
        self.decided.emit(flag, decision, reason)
        if decision == "accepted" and isinstance(correction, Correction):
            live = self.current_correction(index) or correction
            self.editor.apply_correction(live.span, live.text)

    def current_correction(self, index: int) -> Correction | None:
        """Flag ``index``'s correction on the text as it is now (its span follows edits)."""
        flags = self.editor.flags()
        if not 0 <= index < len(flags):
            return None
        flag = flags[index]
        span = self.editor.flag_span(index)
        if flag.span is not None and (span is None or span[0] == span[1]):
            return None  # the sentence is gone
        live = dataclasses.replace(flag, span=span) if span is not None else flag
        return suggest_correction(live, self.editor.text())
