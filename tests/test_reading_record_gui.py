"""The reading record in the window (pytest-qt), on SQLite and PostgreSQL: the three defects
a reader met in a real window, each walked the way a radiologist walks it across the
studies of different patients.

1. A decision taken on one patient's flag showed on another patient's same finding.
2. The panel said every flag was reviewed while sign-off refused; after a restart a
   signed study showed other decisions than it was signed with.
3. Accept on a signed report's flag changed its text, and a later DICOM SR carried it.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PySide6.QtGui import QAction

from app.gui.launch import sign_in
from app.gui.window import MainWindow
from app.storage import Storage
from core_model.inference import CheckResult, Flag

FLAGGED = "No pneumothorax."
NODULE_REASON = "No nodule seen on image"


class SameFindingReader:
    """Every study gets the same "Lung Lesion" omission (the finding of the first defect),
    and a contradiction on ``FLAGGED`` when the report has it."""

    model_version = "stub-1"

    def check(self, images, report, *, study_key=None, heatmaps=True) -> CheckResult:
        flags = []
        at = report.find(FLAGGED)
        if at >= 0:
            flags.append(Flag("contradiction", "Pneumothorax", "absent", 0.93, "present",
                              sentence=FLAGGED, span=(at, at + len(FLAGGED)),
                              heatmap=np.ones((8, 8), np.float32)))
        flags.append(Flag("omission", "Lung Lesion", "not mentioned", 0.81, "present"))
        return CheckResult(flags, {}, [], self.model_version, "stub")


pytestmark = pytest.mark.usefixtures("no_dialogs")


@pytest.fixture
def storage(demo_storage):
    return demo_storage


def make_window(qtbot, storage: Storage, reader=None) -> MainWindow:
    window = MainWindow(storage, model_dir="stub", autosave_s=60.0,
                        reader_factory=lambda _d: reader or SameFindingReader())
    window.editor.set_debounce_ms(30)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.reader is not None, timeout=10_000)
    return window


def wait_for_check(qtbot, window: MainWindow, study_id: int) -> None:
    """The open study's text is checked and its flags recorded and shown."""
    qtbot.waitUntil(lambda: window.reading.study_id == study_id
                    and window.editor.checked_text() == window.editor.text()
                    and not window.editor.is_busy() and bool(window.flags_panel.reviews()),
                    timeout=15_000)


def open_study(qtbot, window: MainWindow, study_id: int) -> None:
    window.worklist.select_study(study_id)
    wait_for_check(qtbot, window, study_id)


def shown(window: MainWindow) -> list[tuple[str, str, str | None]]:
    return [(r.flag.entity, r.decision, r.reason) for r in window.flags_panel.reviews()]


def held(storage: Storage, study_id: int) -> list[tuple[str, str, str | None]]:
    return [(f.entity, str(f.decision), f.dismiss_reason) for f in storage.flags(study_id)]


def row_of(window: MainWindow, entity: str) -> int:
    return next(i for i, r in enumerate(window.flags_panel.reviews()) if r.flag.entity == entity)


def patients(storage: Storage, ids: list[int]) -> set[str | None]:
    return {storage.study(i).patient_id for i in ids}


def test_a_decision_never_shows_on_another_patients_study(qtbot, storage):
    window = make_window(qtbot, storage)
    first, second, third = window.worklist.study_ids()[:3]
    assert len(patients(storage, [first, second, third])) == 3  # three different patients
    open_study(qtbot, window, first)
    # the first flag is selected, its sentence highlighted and its evidence drawn
    qtbot.waitUntil(lambda: window.viewer.has_overlay, timeout=10_000)
    assert window.editor._selected == window.flags_panel.current_flag_index() == 0
    assert window.flags_panel.dismiss(row_of(window, "Lung Lesion"), NODULE_REASON)
    assert ("Lung Lesion", "dismissed", NODULE_REASON) in held(storage, first)

    next_study = window.findChild(QAction, "nextStudy")
    next_study.trigger()  # Ctrl+Down
    wait_for_check(qtbot, window, second)
    assert window.reading.study_id == second
    assert ("Lung Lesion", "none", None) in shown(window)
    assert shown(window) == held(storage, second)
    assert window.flags_panel.summary() == window.reading.review_state().summary()

    next_study.trigger()
    wait_for_check(qtbot, window, third)
    assert all(decision == "none" for _, decision, _ in shown(window))
    assert shown(window) == held(storage, third)

    window.findChild(QAction, "previousStudy").trigger()
    window.findChild(QAction, "previousStudy").trigger()
    wait_for_check(qtbot, window, first)
    assert ("Lung Lesion", "dismissed", NODULE_REASON) in shown(window)  # still on its own study


def test_the_panel_and_sign_off_agree_and_a_restart_shows_what_was_signed(qtbot, storage, db_url):
    window = make_window(qtbot, storage)
    first, second = window.worklist.study_ids()[:2]
    open_study(qtbot, window, first)
    window.flags_panel.dismiss(row_of(window, "Lung Lesion"), NODULE_REASON)
    window.worklist.select_study(second)
    wait_for_check(qtbot, window, second)
    # the same finding on the next patient is undecided, and the panel says so
    assert window.flags_panel.summary() == "1 flag, 0 reviewed"
    assert not window.flags_panel.all_reviewed()
    assert window.sign() is False
    assert "not reviewed: omission: Lung Lesion" in window.statusBar().currentMessage()
    window.flags_panel.dismiss(row_of(window, "Lung Lesion"), "Healed granuloma, known")
    assert window.flags_panel.summary() == "1 flag, 1 reviewed"
    assert window.sign() is True
    signed_with = held(storage, second)
    window.close()

    # a restart: a new process opens the same database
    again_storage = Storage.open(db_url)
    sign_in(again_storage, "alice")
    try:
        again = make_window(qtbot, again_storage)
        again.worklist.select_study(second)
        qtbot.waitUntil(lambda: again.reading.study_id == second and bool(again.flags_panel.reviews()),
                        timeout=10_000)
        qtbot.wait(300)  # a re-check of a final report would have landed by now
        assert shown(again) == signed_with == [("Lung Lesion", "dismissed",
                                                "Healed granuloma, known")]
        assert again.flags_panel.is_read_only()
        assert not again.flags_panel.accept_button.isEnabled()
        again.close()
    finally:
        again_storage.close()


def test_a_signed_report_never_changes_and_its_sr_carries_the_signed_text(qtbot, storage,
                                                                          tmp_path):
    window = make_window(qtbot, storage)
    study = next(s for s in window.worklist.study_ids()
                 if storage.images(s) and storage.images(s)[0].path.endswith(".dcm"))
    open_study(qtbot, window, study)
    signed_text = window.editor.text()
    for row in range(len(window.flags_panel.reviews())):
        window.flags_panel.dismiss(row, "Clinically insignificant")
    assert window.sign() is True
    assert window.editor.text_edit().isReadOnly()

    # Accept on the signed report's flag: nothing happens to the text or the decisions
    decisions = held(storage, study)
    window.flags_panel.select_flag(row_of(window, "Lung Lesion"))
    assert not window.flags_panel.accept_button.isEnabled()
    window.flags_panel.accept()  # the A key
    window.flags_panel.accept_button.click()
    assert window.editor.text() == signed_text == storage.report(study).text
    assert "There is a pulmonary nodule." not in window.editor.text()
    assert held(storage, study) == decisions

    # a change after signing is an addendum, exported with the report
    assert window.add_addendum("Addendum: the nodule was reviewed with the prior CT; benign.")
    assert window.addenda.isVisible() and "ADDENDUM 1" in window.addenda.text()
    assert storage.report(study).status == "amended"
    out = window.export_sr(str(tmp_path / "sr.dcm"))
    assert out is not None
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
             for item in _walk(pydicom.dcmread(out)) if item.get("ValueType") == "TEXT"}
    assert texts["Report text checked"] == signed_text
    assert texts["Signed addendum to the report"].startswith("Addendum: the nodule was reviewed")
    text_file = window.export_report("txt", str(tmp_path / "report.txt"))
    exported = open(text_file, encoding="utf-8").read()
    assert signed_text.rstrip() in exported and "ADDENDUM 1 (signed by alice" in exported


def test_the_status_bar_belongs_to_the_open_study(qtbot, storage):
    window = make_window(qtbot, storage)
    first, second = window.worklist.study_ids()[:2]
    open_study(qtbot, window, first)
    window.editor.text_edit().insertPlainText(" Edited.")
    assert window.save()
    assert window.save_label.text().startswith("Saved v")
    open_study(qtbot, window, second)
    assert not window.save_label.text().startswith("Saved v")


def _walk(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def test_edit_without_a_change_resolves_nothing_and_accepted_flags_reach_the_sr(qtbot, storage,
                                                                               tmp_path):
    """Pressing E (or Accept) says the report is wrong there: until the text changes so that the
    flag is gone, sign-off refuses. A flag an accepted correction resolved stays in the record
    and in the SR, with its decision."""
    window = make_window(qtbot, storage)
    study = next(s for s in window.worklist.study_ids()
                 if storage.images(s) and storage.images(s)[0].path.endswith(".dcm"))
    open_study(qtbot, window, study)
    window.editor.set_text(f"FINDINGS: The heart is normal in size. {FLAGGED}\n")
    qtbot.waitUntil(lambda: "Pneumothorax" in [r.flag.entity for r in window.flags_panel.reviews()]
                    and window.editor.checked_text() == window.editor.text(), timeout=10_000)
    window.flags_panel.edit(row_of(window, "Lung Lesion"))  # the E key: no text typed after it
    window.flags_panel.dismiss(row_of(window, "Pneumothorax"), "Correctly described")
    assert window.flags_panel.summary() == "2 flags, 2 reviewed; 1 awaiting an edit"
    assert window.sign() is False
    assert "marked for an edit, but the report still says it" in \
        window.statusBar().currentMessage()
    assert not storage.report(study).signed

    window.flags_panel.dismiss(row_of(window, "Lung Lesion"), "No nodule seen on image")
    window.flags_panel.accept(row_of(window, "Pneumothorax"))  # the correction is applied
    wait_for_check(qtbot, window, study)
    assert "There is a pneumothorax." in window.editor.text()
    assert [r.flag.entity for r in window.flags_panel.reviews()] == ["Lung Lesion"]
    assert window.flags_panel.summary() == "1 flag, 1 reviewed; 1 resolved by an edit"
    assert window.sign() is True
    out = window.export_sr(str(tmp_path / "sr.dcm"))
    dataset = pydicom.dcmread(out)
    meanings = [item.ConceptCodeSequence[0].CodeMeaning for item in _walk(dataset)
                if item.get("ValueType") == "CODE"]
    assert any("Pneumothorax" in m for m in meanings) and any("Lung" in m for m in meanings)


def test_a_preliminary_report_says_when_it_changed_after_it_was_issued(qtbot, storage, tmp_path):
    window = make_window(qtbot, storage)
    study = window.worklist.study_ids()[0]
    open_study(qtbot, window, study)
    for row in range(len(window.flags_panel.reviews())):
        window.flags_panel.dismiss(row, "Clinically insignificant")
    assert window.sign(preliminary=True) is True
    assert window.signed_label.text().startswith("Preliminary: issued by alice")
    assert "still editable" in window.signed_label.text()
    assert not window.editor.text_edit().isReadOnly()
    issued = window.editor.text()
    window.editor.text_edit().insertPlainText("Addition. ")
    assert window.save()
    assert "changed since it was issued" in window.signed_label.text()  # at once, on the save
    # the export is what was issued, not what was typed since
    exported = open(window.export_report("txt", str(tmp_path / "p.txt")), encoding="utf-8").read()
    assert "(preliminary)" in exported and issued.rstrip() in exported
    assert "Addition." not in exported
    assert [row.status for row in window.worklist.rows() if row.study_id == study] == ["preliminary"]


class RefusingReader(SameFindingReader):
    """Turns every image away, as a model does with images unlike its training images."""

    def check(self, images, report, *, study_key=None, heatmaps=True, show_unreliable=False):
        from core_model.image_check import ImageCheck

        verdict = ImageCheck(False, "the image is unlike the images model stub-1 was trained on "
                                    "(score 6.10, threshold 2.18): no flags are shown", 6.1, 2.18)
        result = super().check(images, report, study_key=study_key, heatmaps=heatmaps)
        if not show_unreliable:
            return CheckResult([], {}, [verdict.reason], self.model_version, "stub", verdict)
        for flag in result.flags:
            flag.unreliable = True
        long = [verdict.reason.replace("no flags are shown", "the flags shown are unreliable"),
                "not checked, the model does not see them reliably (validation AUC below 0.70): "
                "fracture, lung lesion, pleural other, pneumonia, lung opacity, atelectasis"]
        return CheckResult(result.flags, {}, long, self.model_version, "stub", verdict)


def test_an_image_the_model_cannot_read_gets_a_banner_no_flags_and_an_audit(qtbot, storage):
    window = make_window(qtbot, storage, RefusingReader())
    study = window.worklist.study_ids()[0]
    window.worklist.select_study(study)
    qtbot.waitUntil(lambda: window.image_banner.isVisible(), timeout=10_000)
    assert "unlike the images model stub-1 was trained on (score 6.10, threshold 2.18): no flags are shown" in \
        window.image_banner.label.text()
    assert window.flags_panel.reviews() == [] and storage.flags(study) == []
    [entry] = storage.audit_log(action="image_check.refuse")
    assert entry.details["score"] == 6.1 and entry.target_id == str(study)

    width, viewer = window.width(), window.viewer.width()
    window.image_banner.button.click()  # the reader asks for the flags anyway
    qtbot.waitUntil(lambda: bool(window.flags_panel.reviews()), timeout=10_000)
    assert all(r.flag.unreliable for r in window.flags_panel.reviews())
    assert all(f.unreliable for f in storage.flags(study))
    assert "the flags shown are unreliable" in window.image_banner.label.text()
    assert not window.image_banner.button.isVisible()
    assert storage.audit_log(action="image_check.override")
    qtbot.wait(50)
    # long warnings wrap: the window and the image keep their size
    assert window.width() == width and window.viewer.width() >= viewer - 2

    window.worklist.select_study(window.worklist.study_ids()[1])  # the next study asks again
    qtbot.waitUntil(lambda: window.reading.study_id != study and window.image_banner.isVisible()
                    and window.editor.checked_text() == window.editor.text(), timeout=10_000)
    assert window.flags_panel.reviews() == []


def test_a_model_trained_on_synthetic_images_says_so_outside_the_demo_too(qtbot, storage,
                                                                          tmp_path):
    from app.demo import DEMO_MODEL_DIR

    window = MainWindow(storage, model_dir=DEMO_MODEL_DIR, autosave_s=60.0)  # not --demo
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.reader is not None, timeout=60_000)
    assert window.banner.isVisible() and "trained only on synthetic" in window.banner.text()
    study = window.worklist.study_ids()[0]
    window.worklist.select_study(study)
    qtbot.waitUntil(lambda: window.reading.study_id == study and window.editor.checked_text()
                    == window.editor.text() and not window.editor.is_busy(), timeout=60_000)
    for row in range(len(window.flags_panel.reviews())):
        window.flags_panel.dismiss(row, "Clinically insignificant")
    assert window.sign() is True
    text = open(window.export_report("txt", str(tmp_path / "r.txt")), encoding="utf-8").read()
    assert "Model note:" in text and "synthetic (phantom) images only" in text
    sr = pydicom.dcmread(window.export_sr(str(tmp_path / "sr.dcm")))
    notes = [i.TextValue for i in _walk(sr) if i.get("ValueType") == "TEXT"
             and i.ConceptNameCodeSequence[0].CodeValue == "MODEL-NOTE"]
    assert notes and "not for clinical use" in notes[0]
