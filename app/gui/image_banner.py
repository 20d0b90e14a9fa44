"""The banner over a study whose images the model's image check turned away.

"This image is unlike the images model X was trained on: no flags are shown",
with the reason, and a button to see the flags anyway, marked unreliable.
Each refusal and each override is written to the audit log by the window.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget


class ImageCheckBanner(QWidget):
    """Hidden while the images are accepted; ``showAnyway`` when the reader asks for the flags."""

    showAnyway = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("imageCheckBanner")
        self.setStyleSheet("#imageCheckBanner { background: #fdecea; border-bottom: 1px solid "
                           "#e57373; } QLabel { color: #8a1c12; padding: 4px; }")
        self.setAutoFillBackground(True)
        self.label = QLabel(self)
        self.label.setWordWrap(True)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.button = QPushButton("Show the flags anyway (unreliable)", self)
        self.button.setToolTip("check this study even though the model cannot read its images "
                               "reliably; every flag is marked unreliable and the choice is audited")
        self.button.clicked.connect(self.showAnyway.emit)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.button)
        self.hide()

    def show_verdict(self, verdict: Any, model: str, *, shown_anyway: bool,
                     signed: bool = False) -> None:
        """Show (or hide) the banner for a check's image verdict."""
        if verdict is None or verdict.accepted:
            self.hide()
            return
        # the distribution gate can be overridden; a wrong modality or an unreadable picture not
        overridable = verdict.score is not None
        measured = (f" (score {verdict.score:.2f}, threshold {verdict.threshold:.2f})"
                    if verdict.threshold is not None else "")
        if overridable and shown_anyway:
            text = (f"This image is unlike the images model {model} was trained on{measured}: "
                    "the flags shown are unreliable.")
        elif overridable:
            text = (f"This image is unlike the images model {model} was trained on{measured}: "
                    "no flags are shown.")
        else:
            text = f"This image cannot be checked by model {model}: {verdict.reason}. No flags are shown."
        self.label.setText(text)
        self.button.setVisible(overridable and not shown_anyway and not signed)
        self.show()
