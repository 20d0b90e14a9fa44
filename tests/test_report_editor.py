"""The report editor and the flags panel: live checking, flags, decisions (pytest-qt)."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QDialogButtonBox, QHBoxLayout, QSplitter, QWidget

from app.demo import demo_worklist
from app.report import (
    KIND_COLORS,
    CheckSession,
    DismissDialog,
    FlagsPanel,
    ReportEditor,
    suggest_correction,
)
from core_model.inference import CheckResult, Flag, Reader

ROOT = Path(__file__).resolve().parents[1]
#: Screenshots go to a temporary folder; set CONCORD_SCREENSHOTS_DIR=docs/screenshots to refresh
#: the documentation's (tests never change tracked files otherwise).
SCREENSHOTS = Path(os.environ.get("CONCORD_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="concord-shots-"))
KINDS = set(KIND_COLORS)

STUB_REPORT = (
    "FINDINGS:\nThe heart is normal in size. There is a pleural effusion. No pneumothorax.\n\n"
    "IMPRESSION:\nNo acute process.\n"
)
#: sentence -> (kind, entity, report_says) the stub flags whenever the sentence is in the text.
STUB_RULES = {
    "The heart is normal in size.": ("contradiction", "Cardiomegaly", "absent"),
    "There is a pleural effusion.": ("unsupported", "Pleural Effusion", "present"),
    "No pneumothorax.": ("contradiction", "Pneumothorax", "absent"),
}


class StubReader:
    """A stand-in for ``Reader``: flags known sentences, records calls and threads."""

    def __init__(self, *, delay: float = 0.0, omission: str | None = "Edema") -> None:
        self.calls: list[str] = []
        self.threads: list[int] = []
        self.delay = delay
        self.omission = omission
        self.gate: threading.Event | None = None

    def check(self, images, report, *, study_key=None, heatmaps=True) -> CheckResult:  # noqa: ANN001
        self.calls.append(report)
        self.threads.append(threading.get_ident())
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay)
        flags = []
        for sentence, (kind, entity, says) in STUB_RULES.items():
            at = report.find(sentence)
            if at >= 0:
                flags.append(Flag(kind, entity, says, 0.9, "present" if kind != "unsupported" else
                                  "absent", sentence=sentence, span=(at, at + len(sentence)),
                                  message=f"{entity}: stub flag"))
        if self.omission:
            flags.append(Flag("omission", self.omission, "not mentioned", 0.8, "present"))
        return CheckResult(flags, {}, [], "stub", "stub")


@pytest.fixture(scope="module")
def worklist():
    return demo_worklist()


@pytest.fixture(scope="module")
def reader(worklist) -> Reader:
    return Reader(worklist.model_dir, device="cpu", threads=1)


def study_by_kind(worklist, kind: str, entity: str | None = None):
    for study in worklist.studies:
        if study.error.kind == kind and (entity is None or study.error.entity == entity):
            return study
    raise AssertionError(f"no {kind} study in the demo worklist")


def demo_images(worklist, study) -> list[Path]:
    return [worklist.root / f for f in study.files]


@pytest.fixture
def make_editor(qtbot):
    editors: list[ReportEditor] = []

    def make(debounce_ms: int = 50) -> ReportEditor:
        editor = ReportEditor(debounce_ms=debounce_ms)
        editor.resize(640, 400)
        qtbot.addWidget(editor)
        editor.show()
        editors.append(editor)
        return editor

    yield make
    for editor in editors:
        editor.set_reader(None)
        editor.wait_for_idle()


def stub_editor(make_editor, qtbot, reader: StubReader, debounce_ms: int = 30) -> ReportEditor:
    editor = make_editor(debounce_ms)
    editor.set_reader(reader)
    editor.set_study("stub-study", [np.zeros((8, 8), np.float32)])
    with qtbot.waitSignal(editor.flagsChanged, timeout=10_000):
        editor.set_text(STUB_REPORT)
    return editor


def assert_well_formed(flags: list[Flag], text: str) -> None:
    for flag in flags:
        assert flag.kind in KINDS
        assert 0.0 <= flag.probability <= 1.0
        assert flag.entity and flag.report_says and flag.image_suggests
        if flag.kind == "omission":
            assert flag.span is None
        else:
            start, end = flag.span
            assert 0 <= start < end <= len(text)
            assert text[start:end] == flag.sentence


# ----------------------------------------------------------------------------- the real model


def test_demo_flip_study_flags_arrive_underlined(qtbot, make_editor, worklist, reader):
    # study-05: the draft denies the support devices the image shows (the bundled model's
    # AUC for devices is 0.71; for a widened mediastinum, study-01's error, it is 0.63 and
    # the model misses that one: resources/models/README.md)
    study = study_by_kind(worklist, "flip", "Support Devices")
    draft = worklist.draft(study)
    editor = make_editor(debounce_ms=100)
    editor.set_reader(reader)
    editor.set_study(study.study_instance_uid, demo_images(worklist, study))
    with qtbot.waitSignal(editor.flagsChanged, timeout=60_000) as blocker:
        editor.set_text(draft)
    flags = blocker.args[0]
    assert flags and flags == editor.flags()
    assert editor.text() == draft  # checking never writes to the text
    assert_well_formed(flags, draft)

    underlines = editor.underlines()
    for flag in flags:
        if flag.span is not None:
            assert (*flag.span, KIND_COLORS[flag.kind]) in underlines
    if any(f.kind == "omission" for f in flags):
        heading = editor.omission_anchor()
        assert draft[heading[0]:heading[1]] == "FINDINGS:"
        assert (*heading, KIND_COLORS["omission"]) in underlines

    # The injected error: the draft denies the devices the image shows.
    wrong = next(f for f in flags if f.sentence == study.error.sentence)
    assert (wrong.kind, wrong.entity) == ("contradiction", "Support Devices")
    tip = editor.tooltip_at(wrong.span[0] + 1)
    assert "Support Devices" in tip and "Contradiction" in tip and "p = " in tip
    assert wrong.heatmap is not None and wrong.heatmap.ndim == 2


def test_demo_edit_that_negates_a_present_finding_is_flagged(qtbot, make_editor, worklist, reader):
    study = study_by_kind(worklist, "clean")  # its truth: marked cardiomegaly
    draft = worklist.draft(study)
    positive = "The heart is markedly enlarged."
    assert positive in draft
    editor = make_editor(debounce_ms=50)
    editor.set_reader(reader)
    editor.set_study(study.study_instance_uid, demo_images(worklist, study))
    with qtbot.waitSignal(editor.flagsChanged, timeout=60_000):
        editor.set_text(draft)
    assert not [f for f in editor.flags() if f.entity == "Cardiomegaly"]

    denial = "The heart is normal in size."
    start = draft.index(positive)
    with qtbot.waitSignal(editor.flagsChanged, timeout=60_000) as blocker:
        cursor = editor.text_edit().textCursor()
        cursor.setPosition(start)
        cursor.setPosition(start + len(positive), QTextCursor.MoveMode.KeepAnchor)
        cursor.insertText(denial)
    text = editor.text()
    assert text == draft.replace(positive, denial)
    flags = blocker.args[0]
    assert_well_formed(flags, text)
    flagged = [f for f in flags if f.entity == "Cardiomegaly"]
    assert flagged and flagged[0].kind == "contradiction"
    assert flagged[0].sentence == denial and flagged[0].report_says == "absent"


def test_typing_while_checks_run_loses_no_character(qtbot, make_editor, worklist, reader):
    study = study_by_kind(worklist, "remove")
    draft = worklist.draft(study)
    editor = make_editor(debounce_ms=0)  # a check after almost every keystroke
    editor.set_reader(reader)
    editor.set_study(study.study_instance_uid, demo_images(worklist, study))
    editor.set_text(draft)
    cursor = editor.text_edit().textCursor()
    cursor.movePosition(QTextCursor.MoveOperation.End)
    editor.text_edit().setTextCursor(cursor)
    typed = "There is a small right pneumothorax. No pleural effusion, no edema."
    qtbot.keyClicks(editor.text_edit(), typed, delay=3)
    assert editor.checks_requested > 1
    qtbot.waitUntil(lambda: not editor.is_busy() and bool(editor.flags()), timeout=60_000)
    assert editor.text() == draft + typed
    assert_well_formed(editor.flags(), editor.text())


# ----------------------------------------------------------------------------- the mechanism


def test_rapid_typing_triggers_one_check_off_the_gui_thread(qtbot, make_editor):
    stub = StubReader()
    editor = stub_editor(make_editor, qtbot, stub, debounce_ms=300)
    assert stub.calls == [STUB_REPORT]
    cursor = editor.text_edit().textCursor()
    cursor.movePosition(QTextCursor.MoveOperation.End)
    editor.text_edit().setTextCursor(cursor)
    with qtbot.waitSignal(editor.flagsChanged, timeout=10_000):
        qtbot.keyClicks(editor.text_edit(), "Stable.")
    assert stub.calls == [STUB_REPORT, STUB_REPORT + "Stable."]
    assert threading.get_ident() not in stub.threads


def test_stale_results_are_dropped(qtbot, make_editor):
    stub = StubReader(omission=None)
    editor = stub_editor(make_editor, qtbot, stub)
    stub.gate = threading.Event()
    editor.recheck_now()  # held at the gate
    qtbot.waitUntil(lambda: len(stub.calls) == 2)
    shown: list[list[Flag]] = []
    editor.flagsChanged.connect(shown.append)
    editor.apply_correction((0, 0), "")  # no change: the held check is still current
    edit_at = editor.text().index("No pneumothorax.")
    editor.apply_correction((edit_at, edit_at + len("No pneumothorax.")), "Lungs clear.")
    editor.recheck_now()
    stub.gate.set()
    qtbot.waitUntil(lambda: not editor.is_busy(), timeout=10_000)
    qtbot.waitUntil(lambda: len(shown) == 1, timeout=10_000)
    qtbot.wait(50)
    assert len(shown) == 1  # only the newest request's flags were shown
    assert editor.stale_results >= 1
    assert [f.entity for f in shown[0]] == ["Cardiomegaly", "Pleural Effusion"]


def test_failed_check_reports_in_one_line(qtbot, make_editor):
    class Broken(StubReader):
        def check(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
            raise RuntimeError("boom\nwith a second line")

    editor = make_editor()
    editor.set_reader(Broken())
    editor.set_study("s", [np.zeros((8, 8), np.float32)])
    with qtbot.waitSignal(editor.checkFailed, timeout=10_000) as blocker:
        editor.set_text(STUB_REPORT)
    assert "\n" not in blocker.args[0] and "boom" in blocker.args[0]
    assert editor.text() == STUB_REPORT


# ----------------------------------------------------------------------------- the panel


@pytest.fixture
def session(qtbot, make_editor):
    editor = stub_editor(make_editor, qtbot, StubReader())
    panel = FlagsPanel()
    panel.resize(360, 400)
    qtbot.addWidget(panel)
    panel.show()
    checked = CheckSession(editor, panel)
    panel.set_flags(editor.flags(), editor.text())
    return checked


def test_panel_filter_summary_and_rows(session):
    panel = session.panel
    assert [f.kind for f in panel.flags()] == ["contradiction", "unsupported", "contradiction",
                                               "omission"]
    assert panel.summary() == "4 flags, 0 reviewed"
    panel.set_filter("contradiction")
    assert panel.visible_flag_indices() == [0, 2]
    panel.set_filter("omission")
    assert panel.visible_flag_indices() == [3]
    assert panel.filter.currentData() == "omission"
    panel.filter.setCurrentIndex(panel.filter.findData("unsupported"))
    assert panel.visible_flag_indices() == [1]
    panel.set_filter("all")
    assert panel.visible_flag_indices() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        panel.set_filter("bogus")


def test_keyboard_stepping_moves_the_editor_to_the_span(qtbot, session):
    editor, panel = session.editor, session.panel
    heatmaps: list[Flag] = []
    session.heatmapRequested.connect(heatmaps.append)
    panel.view.setFocus()
    panel.select_flag(0)
    qtbot.keyClick(panel.view, Qt.Key.Key_J)
    assert panel.current_flag_index() == 1
    assert heatmaps[-1].entity == "Pleural Effusion"
    qtbot.keyClick(panel.view, Qt.Key.Key_Return)
    assert editor.text_edit().textCursor().position() == editor.flags()[1].span[0]
    qtbot.keyClick(panel.view, Qt.Key.Key_J)
    qtbot.keyClick(panel.view, Qt.Key.Key_J)
    qtbot.keyClick(panel.view, Qt.Key.Key_J)  # stays on the last row
    assert panel.current_flag_index() == 3
    qtbot.keyClick(panel.view, Qt.Key.Key_Return)  # an omission: its heading
    assert editor.text_edit().textCursor().position() == editor.omission_anchor()[0]
    qtbot.keyClick(panel.view, Qt.Key.Key_K)
    qtbot.keyClick(panel.view, Qt.Key.Key_K)
    assert panel.current_flag_index() == 1
    # The selected span is highlighted in the editor.
    selected = [s for s in editor.text_edit().extraSelections() if s.format.background().style()
                != Qt.BrushStyle.NoBrush]
    assert [(s.cursor.selectionStart(), s.cursor.selectionEnd()) for s in selected] == [
        editor.flags()[1].span
    ]


def test_accept_applies_the_correction_through_the_undo_stack(qtbot, session):
    editor, panel = session.editor, session.panel
    original = editor.text()
    decided = []
    panel.decided.connect(lambda *args: decided.append(args))
    correction = panel.reviews()[0].correction
    assert correction is not None and correction.text == "The heart is enlarged."
    with qtbot.waitSignal(editor.flagsChanged, timeout=10_000):
        panel.select_flag(0)
        qtbot.keyClick(panel.view, Qt.Key.Key_A)
    assert decided[0][:3] == (0, "accepted", None)
    assert editor.text() == original.replace("The heart is normal in size.", "The heart is enlarged.")
    assert "Cardiomegaly" not in [f.entity for f in editor.flags()]  # re-checked

    editor.focus_text()
    qtbot.keyClick(editor.text_edit(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert editor.text() == original

    # An omission's correction adds a statement at the end of FINDINGS.
    qtbot.waitUntil(lambda: len(panel.flags()) == 4, timeout=10_000)
    omission = panel.flags().index(next(f for f in panel.flags() if f.kind == "omission"))
    panel.accept(omission)
    assert editor.text() == original.replace(
        "No pneumothorax.\n", "No pneumothorax. There is pulmonary edema.\n"
    )


def test_dismiss_needs_a_reason_and_all_reviewed(qtbot, session, monkeypatch):
    panel = session.panel
    assert not panel.all_reviewed()
    decided = []
    panel.decided.connect(lambda *args: decided.append(args))
    assert not panel.dismiss(1, "  ")
    monkeypatch.setattr(panel, "ask_reason", lambda flag: None)  # the dialog cancelled
    assert not panel.dismiss(1)
    assert panel.reviews()[1].decision == "none" and not decided
    monkeypatch.setattr(panel, "ask_reason", lambda flag: "Artefact: skin fold")
    panel.select_flag(1)
    qtbot.keyClick(panel.view, Qt.Key.Key_D)
    assert decided[-1] == (1, "dismissed", "Artefact: skin fold", None)
    assert panel.reviews()[1].reason == "Artefact: skin fold"
    assert panel.summary() == "4 flags, 1 reviewed"
    panel.dismiss(0, "Correctly described")
    panel.dismiss(3, "Clinically insignificant")
    assert not panel.all_reviewed()
    jumps = []
    panel.jumpRequested.connect(jumps.append)
    panel.edit(2)
    assert decided[-1] == (2, "edited", None, None) and jumps == [2]
    assert panel.all_reviewed() and panel.summary() == "4 flags, 4 reviewed"

    # The panel is a view: it never carries a decision to another set of flags by itself
    # (that is the reading session's, with the study in the flag's identity:
    # tests/test_reading_session.py). A re-check on its own shows the new flags undecided.
    session.editor.recheck_now()
    qtbot.waitUntil(lambda: not session.editor.is_busy(), timeout=10_000)
    qtbot.wait(20)
    assert panel.summary() == "4 flags, 0 reviewed"


def test_dismiss_dialog_requires_a_reason(qtbot):
    dialog = DismissDialog(Flag("contradiction", "Edema", "absent", 0.9, "present"))
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()
    dialog.reasons.setCurrentIndex(1)
    assert ok.isEnabled() and dialog.reason() == dialog.reasons.currentText()
    dialog.reasons.setCurrentIndex(0)
    dialog.detail.setText("old rib fracture, known")
    assert ok.isEnabled() and dialog.reason() == "old rib fracture, known"


def test_suggested_corrections_use_the_report_language():
    text = "FINDINGS:\nNo effusion or pneumothorax. The heart is enlarged.\n"
    start = text.index("No effusion")
    end = text.index(". The") + 1
    flag = Flag("contradiction", "Pneumothorax", "absent", 0.9, "present",
                sentence=text[start:end], span=(start, end))
    correction = suggest_correction(flag, text)
    assert correction.span == (start, end)
    assert correction.text == "No pleural effusion. There is a pneumothorax."
    present = text.index("The heart is enlarged.")
    flag = Flag("contradiction", "Cardiomegaly", "present", 0.05, "absent",
                sentence="The heart is enlarged.", span=(present, present + 22))
    assert suggest_correction(flag, text).text == "Heart size is normal."
    unsupported = Flag("unsupported", "Cardiomegaly", "present", 0.3, "absent",
                       sentence="The heart is enlarged.", span=(present, present + 22))
    assert suggest_correction(unsupported, text) is None


# ----------------------------------------------------------------------------- screenshot


def test_screenshot(qtbot, worklist, reader):
    study = study_by_kind(worklist, "flip", "Enlarged Cardiomediastinum")
    window = QWidget()
    window.setWindowTitle("Concord: report")
    window.setStyleSheet("QWidget { background: #f5f7f8; } QPlainTextEdit { background: white; "
                         "border: 1px solid #cfd8dc; }")
    splitter = QSplitter(window)
    editor = ReportEditor(debounce_ms=50)
    panel = FlagsPanel()
    splitter.addWidget(editor)
    splitter.addWidget(panel)
    splitter.setSizes([620, 420])
    layout = QHBoxLayout(window)
    layout.setContentsMargins(10, 10, 10, 10)
    layout.addWidget(splitter)
    CheckSession(editor, panel)
    window.resize(1060, 560)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    editor.set_reader(reader)
    editor.set_study(study.study_instance_uid, demo_images(worklist, study))
    text = worklist.draft(study) + "\nIMPRESSION:\nNo acute cardiopulmonary process.\n"
    with qtbot.waitSignal(editor.flagsChanged, timeout=60_000):
        editor.set_text(text)
    panel.select_flag(0)
    panel.dismiss(1, "Artefact or overlying structure")
    panel.select_flag(0)
    qtbot.wait(50)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert window.grab().save(str(SCREENSHOTS / "report-editor.png"))
    editor.set_reader(None)
    editor.wait_for_idle()
