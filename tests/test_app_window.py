"""The main window: opening studies, recording flags and decisions, autosave, sign-off, roles.

Most tests use a stub reader (fast, known flags); one runs the real demo
(``concord --demo --screenshot``) in a child process, and one kills a child
process mid-typing to prove the autosave keeps the text.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from app.gui.keeper import ReportKeeper
from app.gui.launch import sign_in
from app.gui.window import MainWindow, read_report_file
from app.storage import DiskFull, PermissionDenied, Storage
from core_model.inference import CheckResult, Flag

ROOT = Path(__file__).resolve().parents[1]
FLAGGED = "No pneumothorax."


class StubReader:
    """Flags ``FLAGGED`` as a contradiction whenever the report has it; an omission always."""

    model_version = "stub-1"

    def check(self, images, report, *, study_key=None, heatmaps=True) -> CheckResult:  # noqa: ANN001
        import numpy as np

        flags = []
        at = report.find(FLAGGED)
        if at >= 0:
            heat = np.zeros((8, 8), np.float32)
            heat[1:3, 5:7] = 1.0
            flags.append(Flag("contradiction", "Pneumothorax", "absent", 0.93, "present",
                              sentence=FLAGGED, span=(at, at + len(FLAGGED)), heatmap=heat,
                              message="Pneumothorax: the image suggests it is present"))
        flags.append(Flag("omission", "Edema", "not mentioned", 0.81, "present"))
        return CheckResult(flags, {}, [], self.model_version, "stub")


pytestmark = pytest.mark.usefixtures("no_dialogs")


@pytest.fixture
def storage(demo_storage):
    return demo_storage


def make_window(qtbot, storage, *, autosave_s: float = 60.0, reader=None, model_dir="stub"):
    window = MainWindow(storage, model_dir=model_dir, autosave_s=autosave_s,
                        reader_factory=lambda _d: reader or StubReader())
    window.editor.set_debounce_ms(30)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.reader is not None or window.model_banner.isVisible(), timeout=10_000)
    return window


def open_first(qtbot, window) -> int:
    study_id = window.worklist.study_ids()[0]
    window.worklist.select_study(study_id)
    qtbot.waitUntil(lambda: bool(window._image_shown and window.editor.flags()), timeout=15_000)
    return study_id


def type_text(window, text: str) -> None:
    edit = window.editor.text_edit()
    cursor = edit.textCursor()
    cursor.movePosition(cursor.MoveOperation.End)
    edit.setTextCursor(cursor)
    edit.insertPlainText(text)


# ------------------------------------------------------------------------ first start


def test_first_user_of_a_new_database_is_its_admin(tmp_path):
    with Storage.open(f"sqlite:///{tmp_path / 'new.db'}") as store:
        assert sign_in(store, "first").role == "admin"
        assert sign_in(store, "second").role == "radiologist"
        assert sign_in(store, "first").role == "admin"  # signing in again changes nothing


def test_demo_screenshot_from_the_command_line(tmp_path):
    out = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "OMP_NUM_THREADS": "1",
           "HOME": str(tmp_path)}
    env.pop("CONCORD_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "app.cli", "--demo", "--screenshot", str(out)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(out) as shot:
        assert shot.width >= 1000 and shot.height >= 600
        colours = shot.convert("RGB").resize((64, 40)).getcolors(64 * 40)
        assert colours is not None and len(colours) > 50  # a real window, not a blank frame
    # the first start made the per-user demo database
    assert list((tmp_path / "data").rglob("demo.db"))


# ------------------------------------------------------------------------ reading a study


def test_opening_a_study_shows_image_report_and_flags_and_records_them(qtbot, storage):
    window = make_window(qtbot, storage)
    study_id = open_first(qtbot, window)
    assert window.viewer.image is not None
    assert window.editor.text() == storage.report(study_id).text
    flags = storage.flags(study_id)
    assert [f.entity for f in flags] == [f.entity for f in window.editor.flags()]
    assert {f.model_version for f in flags} == {"stub-1"}
    assert storage.audit_log(action="study.open")
    assert window.banner.isHidden()  # not the demo


def test_selecting_a_flag_draws_its_heatmap(qtbot, storage):
    window = make_window(qtbot, storage)
    study_id = open_first(qtbot, window)
    type_text(window, " " + FLAGGED)
    qtbot.waitUntil(lambda: any(f.kind == "contradiction" for f in window.editor.flags()), timeout=10_000)
    row = next(i for i, f in enumerate(window.editor.flags()) if f.kind == "contradiction")
    window.flags_panel.select_flag(row)
    qtbot.waitUntil(lambda: window.viewer.has_overlay, timeout=5_000)
    assert storage.flags(study_id)


def test_decisions_are_recorded_and_sign_off_needs_all_of_them(qtbot, storage):
    window = make_window(qtbot, storage)
    study_id = open_first(qtbot, window)
    type_text(window, " " + FLAGGED)
    qtbot.waitUntil(lambda: len(window.editor.flags()) == 2, timeout=10_000)
    qtbot.waitUntil(lambda: len(storage.flags(study_id)) == 2, timeout=5_000)

    assert window.sign() is False  # nothing reviewed yet
    assert not storage.report(study_id).signed
    omission = next(i for i, f in enumerate(window.editor.flags()) if f.kind == "omission")
    window.flags_panel.dismiss(omission, reason="Not visible to me")
    decided = {f.entity: f for f in storage.flags(study_id)}
    assert decided["Edema"].decision == "dismissed"
    assert decided["Edema"].dismiss_reason == "Not visible to me"
    assert window.sign() is False  # the contradiction is still open

    contradiction = next(i for i, f in enumerate(window.editor.flags()) if f.kind == "contradiction")
    denials = window.editor.text().count(FLAGGED)
    window.flags_panel.accept(contradiction)  # applies the suggested correction
    assert window.editor.text().count(FLAGGED) == denials - 1
    assert "There is a pneumothorax." in window.editor.text()
    qtbot.waitUntil(lambda: not window.editor.is_busy(), timeout=10_000)
    qtbot.wait(100)
    for row, review in enumerate(window.flags_panel.reviews()):
        if not review.reviewed:
            window.flags_panel.dismiss(row, reason="Reviewed")
    assert window.sign() is True
    state = storage.report(study_id)
    assert state.signed and state.signed_by == "alice" and state.model_version == "stub-1"
    assert state.text == window.editor.text()
    assert window.editor.text_edit().isReadOnly()
    actions = {a.action for a in storage.audit_log()}
    assert {"study.open", "flags.record", "report.sign"} <= actions


def test_decisions_survive_reopening_the_study(qtbot, storage):
    window = make_window(qtbot, storage)
    study_id = open_first(qtbot, window)
    omission = next(i for i, f in enumerate(window.editor.flags()) if f.kind == "omission")
    window.flags_panel.dismiss(omission, reason="Not visible to me")
    window.close()
    again = make_window(qtbot, storage)
    assert open_first(qtbot, again) == study_id
    qtbot.waitUntil(lambda: bool(again.flags_panel.reviews())
                    and again.flags_panel.reviews()[omission].decision == "dismissed", timeout=5_000)


# ------------------------------------------------------------------------ never losing text


def test_autosave_writes_a_version_every_few_seconds(qtbot, storage):
    window = make_window(qtbot, storage, autosave_s=0.3)
    study_id = open_first(qtbot, window)
    before = storage.report(study_id).version
    type_text(window, " Small left apical pneumothorax.")
    qtbot.waitUntil(lambda: storage.report(study_id).text == window.editor.text(), timeout=5_000)
    history = storage.report_history(study_id)
    assert storage.report(study_id).version > before
    assert history[-1].kind == "autosave" and history[0].kind == "import"  # the demo draft came in as an import
    assert "Autosaved" in window.save_label.text()


def test_closing_the_window_saves_the_last_words(qtbot, storage):
    window = make_window(qtbot, storage)  # autosave far away: only the close can save
    study_id = open_first(qtbot, window)
    type_text(window, " Last words.")
    window.close()
    assert storage.report(study_id).text.endswith("Last words.")


def test_a_storage_failure_keeps_the_text_in_a_recovery_file(qtbot, storage):
    window = make_window(qtbot, storage)
    study_id = open_first(qtbot, window)
    type_text(window, " Written while the disk is full.")

    def full(*_a, **_k):
        raise DiskFull("the disk holding the database is full")

    storage.autosave = full  # an instance attribute hides the method until deleted
    outcome = window.keeper.autosave()
    assert outcome is not None and not outcome.ok and "full" in outcome.message
    recovery = window.keeper.recovery_path(study_id)
    assert recovery.read_text(encoding="utf-8") == window.editor.text()
    assert "Written while the disk is full." in window.editor.text()
    del storage.autosave
    # opening the study again (e.g. after a crash) restores the newer text and saves it
    window.keeper.close()
    window._study = None
    window.open_study(study_id)
    qtbot.waitUntil(lambda: storage.report(study_id).text.endswith("disk is full."), timeout=5_000)
    assert not recovery.exists()


OTHER_WRITER = textwrap.dedent("""
    import sys
    from app.storage import Storage
    with Storage.open(sys.argv[1]) as other:
        other.ensure_user("bob")
        other.set_current_user("bob")
        theirs = other.report(int(sys.argv[2]))
        other.save_report(int(sys.argv[2]), theirs.text + " Bob's addition.",
                          expected_version=theirs.version)
""")


def test_a_concurrent_edit_is_detected_and_the_text_kept(qtbot, storage, db_url):
    window = make_window(qtbot, storage)
    study_id = open_first(qtbot, window)
    # a second Concord process on the same database saves first
    other = subprocess.run([sys.executable, "-c", OTHER_WRITER, db_url, str(study_id)],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    type_text(window, " Alice's addition.")
    seen = []
    window.keeper.conflict.connect(seen.append)
    outcome = window.keeper.autosave()
    assert outcome is not None and outcome.conflict is not None and seen
    assert seen[0].their_author == "bob"
    assert window.editor.text().endswith("Alice's addition.")
    assert window.keeper.recovery_path(study_id).read_text(encoding="utf-8").endswith("Alice's addition.")
    assert storage.report(study_id).text.endswith("Bob's addition.")  # never silently overwritten
    window.keeper.overwrite_after_conflict()  # the user chose to keep theirs as a new version
    assert storage.report(study_id).text.endswith("Alice's addition.")


CHILD = textwrap.dedent("""
    import sys, time
    from PySide6.QtWidgets import QApplication
    from app.gui.launch import sign_in
    from app.gui.window import MainWindow
    from app.storage import Storage
    from core_model.inference import CheckResult

    class Quiet:
        model_version = "stub-1"
        def check(self, images, report, **_):
            return CheckResult([], {}, [], "stub-1", "stub")

    app = QApplication([])
    store = Storage.open(sys.argv[1])
    sign_in(store, "alice")
    window = MainWindow(store, model_dir="stub", autosave_s=0.5, reader_factory=lambda d: Quiet())
    window.show()
    study = int(sys.argv[2])
    window.worklist.select_study(study)
    edit = window.editor.text_edit()
    cursor = edit.textCursor()
    cursor.movePosition(cursor.MoveOperation.End)
    edit.setTextCursor(cursor)
    for word in sys.argv[3].split():
        edit.insertPlainText(" " + word)
        end = time.time() + 0.05
        while time.time() < end:
            app.processEvents()
    end = time.time() + 1.5   # more than the autosave interval
    while time.time() < end:
        app.processEvents()
        time.sleep(0.01)
    print("typed", flush=True)
    while True:
        app.processEvents()
        time.sleep(0.01)
""")


def test_an_edit_survives_a_killed_process(storage, db_url):
    url = db_url
    study_id = storage.studies()[0].id
    words = "Interval increase in the right pleural effusion."
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(study_id), words],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        line = child.stdout.readline()
        assert line.strip() == "typed", child.stderr.read()[-2000:]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    with Storage.open(url) as store:
        assert store.report(study_id).text.rstrip().endswith(words)


# ------------------------------------------------------------------------ roles and bad input


def test_admin_menu_is_for_admins_only_and_storage_enforces_it(qtbot, storage):
    admin = make_window(qtbot, storage)
    assert admin.admin_menu.menuAction().isVisible()
    storage.ensure_user("carol")
    storage.set_current_user("carol")
    window = make_window(qtbot, storage)
    assert not window.admin_menu.menuAction().isVisible()
    assert not any(a.isEnabled() for a in window.admin_menu.actions())
    window.open_retrain()  # refused with a message, nothing opens
    assert "administrator" in window.statusBar().currentMessage()
    storage.set_current_user("alice")
    storage.register_model("m-1", str(ROOT / "resources" / "models" / "concord-tiny-demo"), "clip-ng-dtcg")
    storage.set_current_user("carol")
    with pytest.raises(PermissionDenied):
        storage.activate_model("m-1")


def test_a_model_that_fails_to_load_leaves_the_editor_working(qtbot, storage, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    window = MainWindow(storage, model_dir=broken, autosave_s=60)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(window.model_banner.isVisible, timeout=20_000)
    assert "could not be loaded" in window.model_banner.text()
    study_id = window.worklist.study_ids()[0]
    window.worklist.select_study(study_id)
    qtbot.waitUntil(lambda: window._image_shown, timeout=10_000)
    type_text(window, " Still editable.")
    assert window.save()
    assert storage.report(study_id).text.endswith("Still editable.")


def test_a_study_with_only_a_lateral_view_says_so(qtbot, storage):
    study = storage.studies()[0]
    image = storage.images(study.id)[0]
    lateral = storage.upsert_study(
        {"StudyInstanceUID": "2.25.999", "source": "dicom-folder", "patient_id": study.patient_id},
        images=[{"SOPInstanceUID": "2.25.9991", "path": image.path, "ViewPosition": "LL"}])
    window = make_window(qtbot, storage)
    window.refresh_worklist()
    window.worklist.select_study(lateral.id)
    qtbot.waitUntil(lambda: window._image_shown, timeout=10_000)
    assert "No frontal image" in window.statusBar().currentMessage()


def test_report_files_in_known_encodings_open_and_others_are_refused(tmp_path):
    text = "FINDINGS: Kein Pleuraerguss. \u00d6dem nicht sichtbar.\n"
    (tmp_path / "utf8.txt").write_text(text, encoding="utf-8")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (tmp_path / "utf16.txt").write_text(text, encoding="utf-16")
    (tmp_path / "latin1.txt").write_bytes(text.encode("cp1252"))
    (tmp_path / "empty.txt").write_bytes(b"  \n")
    for name in ("utf8.txt", "bom.txt", "utf16.txt"):
        assert read_report_file(tmp_path / name) == text
    with pytest.raises(ValueError, match="not UTF-8"):
        read_report_file(tmp_path / "latin1.txt")
    with pytest.raises(ValueError, match="empty"):
        read_report_file(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="cannot read"):
        read_report_file(tmp_path / "missing.txt")


def test_keeper_without_a_study_does_nothing(qtbot, storage):
    keeper = ReportKeeper(storage, lambda: "text")
    assert keeper.autosave() is None
    assert not keeper.save().ok



# ------------------------------------------------------------------------ export and admin from the menus


def test_a_signed_report_exports_as_text_pdf_and_dicom_sr(qtbot, storage, tmp_path):
    import pydicom

    window = make_window(qtbot, storage)
    study_id = open_first(qtbot, window)
    assert window.export_report("txt", str(tmp_path / "draft.txt")) is None  # not signed yet
    for row in range(len(window.flags_panel.reviews())):
        window.flags_panel.dismiss(row, reason="Reviewed")
    assert window.sign()
    text = window.export_report("txt", str(tmp_path / "report.txt"))
    pdf = window.export_report("pdf", str(tmp_path / "report.pdf"))
    sr = window.export_sr(str(tmp_path / "results.dcm"))
    assert text and pdf and sr
    assert storage.report(study_id).text.strip().splitlines()[-1] in Path(text).read_text(encoding="utf-8")
    assert Path(pdf).read_bytes().startswith(b"%PDF")
    ds = pydicom.dcmread(sr)
    assert ds.Modality == "SR"
    assert ds.PatientID == storage.study(study_id).patient_id
    actions = [a.action for a in storage.audit_log()]
    assert actions.count("report.export") == 2 and "sr.export" in actions


def test_admin_menu_opens_the_admin_dialogs(qtbot, storage):
    window = make_window(qtbot, storage)
    for open_dialog in (window.open_retrain, window.open_models, window.open_export_dataset):
        dialog = open_dialog()
        assert dialog is not None and dialog.isVisible()
        dialog.close()


def test_retrain_evaluate_and_activate_from_the_menu(qtbot, storage, tmp_path):
    """A few steps of ``concord train`` from Admin > Retrain, evaluated and activated; a cancelled
    second run leaves the active model as it was."""
    from app.admin import TrainRequest

    world = tmp_path / "world"
    subprocess.run([sys.executable, "-m", "app.cli", "phantom", "--out", str(world), "--studies", "40",
                    "--size", "64", "--seed", "1", "--workers", "1"],
                   check=True, capture_output=True, timeout=180, cwd=ROOT)
    config = tmp_path / "tiny-test.yaml"
    config.write_text("base: tiny\nbatch_size: 8\nwarmup: 1\nvocab_size: 400\n"
                      "checkpoint_every: 2\naugment: false\n")
    window = make_window(qtbot, storage)

    dialog = window.open_retrain()
    dialog.set_request(TrainRequest(world, tmp_path / "runs" / "first", config=str(config),
                                    variant="clip-ng-dtcg", steps=4, device="cpu", threads=1))
    with qtbot.waitSignal(dialog.runEnded, timeout=180_000) as ended:
        assert dialog.start()
    assert ended.args[0] == "done", dialog.message_text()
    assert dialog.progress_bar.value() == dialog.progress_bar.maximum()
    version = "first-step4"
    assert storage.model(version).variant == "clip-ng-dtcg"

    # a world this small cannot support the real gate's sample sizes: minimums only here
    evaluate = window.open_evaluate(version, data_root=world, thresholds={"cxr_align.A": 0.0},
                                    maximums={}, min_cases=0)
    with qtbot.waitSignal(evaluate.runEnded, timeout=300_000) as ended:
        assert evaluate.start()
    assert ended.args[0] == "evaluated", evaluate.message_text()
    assert storage.model(version).evaluation_passed

    models = window.open_models()
    models.confirm_activation = lambda comparison: version in comparison
    assert models.select(version) and models.activate_selected()
    assert storage.active_model().model_version == version
    qtbot.waitUntil(lambda: window.model_version is not None and window.reader is not None
                    and window._model_dir is not None and window._model_dir.name == Path(
                        storage.model(version).path).name, timeout=60_000)

    second = window.open_retrain()
    second.set_request(TrainRequest(world, tmp_path / "runs" / "second", config=str(config),
                                    variant="clip-ng-dtcg", steps=400, device="cpu", threads=1))
    with qtbot.waitSignal(second.runEnded, timeout=180_000) as ended:
        assert second.start()
        qtbot.waitUntil(lambda: second.monitor.step >= 1, timeout=120_000)
        second.cancel()
    assert ended.args[0] == "cancelled"
    assert storage.active_model().model_version == version
    actions = {a.action for a in storage.audit_log()}
    assert {"training.start", "model.register", "model.evaluate", "model.activate"} <= actions


def test_demo_negating_a_present_finding_raises_a_contradiction(qtbot, storage):
    """The real demo model: study-04 shows marked cardiomegaly (its report says so, no injected
    error); writing that the heart is normal must be flagged, and the decision audited."""
    from app.demo import DEMO_MODEL_DIR, demo_worklist

    entry = next(s for s in demo_worklist().studies if s.folder == "study-04")
    study = storage.study_by_uid(entry.study_instance_uid)
    window = MainWindow(storage, model_dir=DEMO_MODEL_DIR, autosave_s=60)
    window.editor.set_debounce_ms(30)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.reader is not None, timeout=60_000)
    window.worklist.select_study(study.id)
    qtbot.waitUntil(lambda: window._image_shown and window.editor.checks_requested > 0
                    and not window.editor.is_busy(), timeout=60_000)
    qtbot.wait(200)
    before = {(f.kind, f.entity) for f in window.editor.flags()}
    assert ("contradiction", "Cardiomegaly") not in before
    window.editor.set_text("FINDINGS:\nThe heart is normal in size. No cardiomegaly. "
                           "A large left effusion is noted. No pneumothorax.\n")
    qtbot.waitUntil(lambda: ("contradiction", "Cardiomegaly") in
                    {(f.kind, f.entity) for f in window.editor.flags()}, timeout=30_000)
    row = next(i for i, f in enumerate(window.editor.flags())
               if (f.kind, f.entity) == ("contradiction", "Cardiomegaly"))
    flag = window.editor.flags()[row]
    assert flag.report_says == "absent" and flag.image_suggests == "present"
    window.flags_panel.accept(row)
    qtbot.waitUntil(lambda: any(f.decision == "accepted" for f in storage.flags(study.id)), timeout=5_000)
    others = [i for i, r in enumerate(window.flags_panel.reviews()) if not r.reviewed]
    if others:
        window.flags_panel.dismiss(others[0], reason="Not clinically relevant")
    decided = storage.audit_log(action="flag.decide")
    assert "accepted" in {a.details.get("to") for a in decided}


def test_importing_from_the_file_menu_lists_rejections_and_keeps_working(qtbot, storage, tmp_path):
    import shutil

    window = make_window(qtbot, storage)
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "notes.dcm").write_text("not a DICOM file")
    (folder / "truncated.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    source = Path(storage.images(storage.studies()[0].id)[0].path)
    shutil.copy(source, folder / "copy.dcm")
    report = window.import_folder(str(folder))
    assert report is not None and len(report.rejected) == 2
    assert all(r.reason for r in report.rejected)
    assert "2 file(s) rejected" in window.statusBar().currentMessage()
    assert window.import_mimic(str(tmp_path / "incoming")) is None  # not a dataset: a message
    assert "Import failed" in window.statusBar().currentMessage()
    assert window.worklist.study_ids()  # the worklist is intact


def test_thumbnails_arrive_after_the_image_and_belong_to_the_open_study(qtbot, storage):
    window = make_window(qtbot, storage)
    first, second = window.worklist.study_ids()[:2]
    window.worklist.select_study(first)
    window.worklist.select_study(second)  # before the first study's thumbnails could arrive
    qtbot.waitUntil(lambda: window._image_shown and not window._loaders, timeout=15_000)
    assert window._study.study_id == second
    assert window.thumbnails.count() == len(storage.images(second))
    icon = window.thumbnails.item(0).icon()
    assert not icon.isNull()


def test_the_demo_indexes_its_studies_as_priors(qtbot, storage, tmp_path):
    from app.demo import DEMO_MODEL_DIR

    window = MainWindow(storage, model_dir=DEMO_MODEL_DIR, demo=True, autosave_s=60,
                        index_dir=tmp_path / "priors")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.reader is not None, timeout=60_000)
    qtbot.waitUntil(lambda: (tmp_path / "priors" / "index.json").is_file(), timeout=60_000)
    window.worklist.select_study(window.worklist.study_ids()[0])
    window.side_tabs.setCurrentWidget(window.priors_panel)
    qtbot.waitUntil(lambda: len(window.priors_panel.hits()) > 0, timeout=30_000)
    own = storage.study(window.worklist.study_ids()[0]).accession_number
    assert own not in {h.study_id for h in window.priors_panel.hits()}  # never its own report
    assert window.banner.isVisible()
