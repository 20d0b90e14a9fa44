"""The report editor with live checking, and the flags panel.

* :mod:`~app.report.editor`: :class:`ReportEditor`, the draft with section headings
  and the flags underlined on their sentences, re-checked as the radiologist types;
* :mod:`~app.report.worker`: :class:`CheckWorker`, the check off the GUI thread;
* :mod:`~app.report.flags_model`: :class:`FlagsModel`, the flags and their review;
* :mod:`~app.report.panel`: :class:`FlagsPanel`, the list to step through and decide;
* :mod:`~app.report.corrections`: :func:`suggest_correction` (no Qt);
* :mod:`~app.report.session`: :class:`CheckSession`, the glue between editor and panel.

See ``docs/report-editor.md``.
"""

from app.report.editor import ReportEditor
from app.report.flags_model import DECISIONS, FlagReview, FlagsModel
from app.report.panel import DISMISS_REASONS, DismissDialog, FlagsPanel
from app.report.session import CheckSession
from app.report.style import KIND_COLORS, KIND_LABELS
from app.report.worker import CheckSignals, CheckWorker
from app.session.corrections import Correction, suggest_correction

__all__ = [
    "DECISIONS",
    "DISMISS_REASONS",
    "KIND_COLORS",
    "KIND_LABELS",
    "CheckSession",
    "CheckSignals",
    "CheckWorker",
    "Correction",
    "DismissDialog",
    "FlagReview",
    "FlagsModel",
    "FlagsPanel",
    "ReportEditor",
    "suggest_correction",
]
