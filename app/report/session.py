"""Glue between a :class:`ReportEditor` and a :class:`FlagsPanel`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from app.report.editor import ReportEditor
from app.report.panel import FlagsPanel
from app.session.corrections import Correction, suggest_correction
from app.session.reading import FlagReview
from core_model.inference import Flag

#: ``approve(review, decision, reason)``: whether the owner of the decisions took it.
Approve = Callable[[FlagReview, str, str | None], bool]


class CheckSession(QObject):
    """Keeps the panel on the editor's flags and carries decisions back to the text.

    * with ``follow_editor`` (a pair used on its own), a check's flags go to the
      panel (with the text they were checked on); in the application the reading
      session feeds both instead, and ``follow_editor`` is off;
    * selecting a flag highlights its sentences and emits ``heatmapRequested(Flag)``
      for the viewer;
    * Enter / Edit moves the editor's cursor to the first sentence;
    * a decision goes to ``approve`` first (the reading session, which records
      it); only an approved acceptance applies its correction to the editor (one
      undo step), re-derived on the current text so it lands where the sentences
      are now.

    ``decided(flag, decision, reason)`` repeats each approved decision with the flag.
    """

    heatmapRequested = Signal(object)
    decided = Signal(object, str, object)

    def __init__(
        self,
        editor: ReportEditor,
        panel: FlagsPanel,
        parent: QObject | None = None,
        *,
        follow_editor: bool = True,
        approve: Approve | None = None,
    ) -> None:
        super().__init__(parent or editor)
        self.editor = editor
        self.panel = panel
        self.approve = approve
        if follow_editor:
            editor.flagsChanged.connect(self._on_flags)
        panel.currentFlagChanged.connect(self._on_current)
        panel.jumpRequested.connect(self._on_jump)
        panel.decided.connect(self._on_decided)

    def _on_flags(self, flags: list[Flag]) -> None:
        self.panel.set_flags(flags, self.editor.text())
        self._on_current(self.panel.current_flag_index())

    def refresh_current(self) -> None:
        """After the editor shows new flags: highlight the panel's current flag on them and
        show its evidence (its heatmap came with the check)."""
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
        if not 0 <= index < self.panel.model.rowCount():
            return
        review = self.panel.model.review(index)
        if self.approve is not None and not self.approve(review, decision, reason):  # type: ignore[arg-type]
            return
        self.decided.emit(review.flag, decision, reason)
        if decision == "accepted" and isinstance(correction, Correction):
            live = self.current_correction(index) or correction
            self.editor.apply_edits(live.edits)

    def current_correction(self, index: int) -> Correction | None:
        """Flag ``index``'s correction on the text as it is now (its sentences follow edits)."""
        flags = self.editor.flags()
        if not 0 <= index < len(flags):
            return None
        flag = flags[index]
        spans = self.editor.flag_spans(index)
        if flag.span is not None and (not spans or any(a == b for a, b in spans)):
            return None  # a sentence is gone
        live = flag
        if spans and len(spans) == len(flag.spans):
            repeats = tuple((s, span) for (s, _), span in zip(flag.repeats, spans[1:], strict=True))
            live = dataclasses.replace(flag, span=spans[0], repeats=repeats)
        return suggest_correction(live, self.editor.text())
