"""The main window: worklist, viewer, report editor with live checking, flags, priors.

Everything slow (decoding images, loading the model, checking the report,
searching priors) runs off the GUI thread; the window only wires the parts
together and records what the radiologist does in storage:

* opening a study: its images in the viewer, its report (or a recovered
  draft) in the editor, an ``open`` audit entry;
* the reading record is the :class:`~app.session.ReadingSession`'s: the
  editor's checks go to it (it records each check's flags against the report
  version they were raised on), the flags panel and the editor's underlines
  show what it holds, decisions go to it and it records them; the window keeps
  no flag or decision of its own;
* selecting a flag shows its evidence heatmap on the image;
* the draft autosaves every few seconds and on close (:class:`ReportKeeper`);
* sign-off (final or preliminary) needs every current flag decided, as storage
  says; a final report is read-only and takes signed addenda
  (:mod:`app.gui.report_actions`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressDialog,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui.background import run_in_background
from app.gui.image_banner import ImageCheckBanner
from app.gui.keeper import ReportKeeper
from app.gui.report_actions import AddendaView, ReportActions
from app.gui.worklist import WorklistPanel, WorklistRow
from app.report import CheckSession, FlagsPanel, ReportEditor
from app.session import FlagReview, ReadingSession, study_key
from app.storage import (
    ConcurrentEditError,
    Role,
    Storage,
    StorageError,
)
from app.viewer import ImageViewer, MetadataPanel, ThumbnailStrip
from app.viewer.loader import ImageLoader
from app.viewer.overlay import heatmap_box

DEMO_BANNER = (
    "DEMO \u2014 synthetic phantom studies and a model trained only on synthetic images. "
    "Not for clinical use."
)

#: Default shortcuts: action name -> key sequence (Settings may override them).
DEFAULT_SHORTCUTS = {
    "save": "Ctrl+S",
    "sign_off": "Ctrl+Shift+S",
    "next_flag": "Ctrl+J",
    "previous_flag": "Ctrl+K",
    "next_study": "Ctrl+Down",
    "previous_study": "Ctrl+Up",
    "toggle_heatmap": "Ctrl+H",
    "invert": "Ctrl+I",
    "reset_view": "Ctrl+R",
    "fit": "Ctrl+F",
    "recheck": "F5",
    "focus_flags": "F6",
    "focus_report": "F7",
}


@dataclass
class OpenStudy:
    study_id: int
    key: str
    paths: list[str]
    images: list[Any]


class MainWindow(QMainWindow):
    """The reading window.  ``ready`` fires once the first study's image and flags are shown."""

    ready = Signal()
    studyOpened = Signal(int)

    def __init__(
        self,
        storage: Storage,
        *,
        model_dir: str | os.PathLike[str] | None = None,
        demo: bool = False,
        autosave_s: float = 3.0,
        shortcuts: dict[str, str] | None = None,
        reader_factory: Any = None,
        settings: Any = None,
        device: str | None = None,
        settings_problem: str | None = None,
        index_dir: str | os.PathLike[str] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.storage = storage
        self.demo = demo
        self.reader: Any = None
        self.model_version: str | None = None
        self._model_dir = Path(model_dir) if model_dir else None
        #: Started with a model of its own (--model, Settings) rather than the registry's.
        self._explicit_model = model_dir is not None
        self._reader_factory = reader_factory
        self._device = device
        self._shortcuts = {**DEFAULT_SHORTCUTS, **(shortcuts or {})}
        self.settings = settings
        self._settings_problem = settings_problem
        self._index_dir = Path(index_dir) if index_dir else None
        self._dialogs: list[Any] = []
        self._loaders: list[Any] = []  # thumbnail jobs, kept alive until they report
        self._thumbnails_pending = False
        self._named_actions: dict[str, QAction] = {}
        self._local_shortcuts: list[QShortcut] = []
        self._study: OpenStudy | None = None
        self._image_shown = False
        self._flags_shown = False
        self._ready_sent = False
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self.setWindowTitle("Concord" + (" \u2014 demo" if demo else ""))

        # ---- parts
        self.worklist = WorklistPanel(self)
        self.viewer = ImageViewer(self, thread_pool=self._pool)
        self.thumbnails = ThumbnailStrip(self, icon_size=72)
        self.metadata = MetadataPanel(self)
        self.editor = ReportEditor(self)
        self.flags_panel = FlagsPanel(self)
        #: The one owner of the open study's report, flags and decisions.
        self.reading = ReadingSession(storage)
        self.session = CheckSession(self.editor, self.flags_panel, self, follow_editor=False,
                                    approve=self._approve_decision)
        self.editor.set_flag_source(self._on_check_result)
        self.priors_panel = self._make_priors_panel()
        self.keeper = ReportKeeper(self.reading, self.editor.text, interval_s=autosave_s, parent=self)
        self.report_actions = ReportActions(self)
        self.addenda = AddendaView(self)

        self.banner = QLabel(DEMO_BANNER, self)
        self.banner.setObjectName("demoBanner")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setStyleSheet(
            "background: #fff3cd; color: #7a4f01; font-weight: bold; padding: 6px; "
            "border-bottom: 1px solid #e0c36c;"
        )
        self.banner.setVisible(demo)
        self.model_banner = QLabel(self)
        self.model_banner.setObjectName("modelBanner")
        self.model_banner.setStyleSheet("background: #fdecea; color: #8a1c12; padding: 4px;")
        self.model_banner.setWordWrap(True)
        self.model_banner.hide()
        self.image_banner = ImageCheckBanner(self)
        self.image_banner.showAnyway.connect(self._show_unreliable_flags)
        self._image_audited: tuple[int, str] | None = None
        self.signed_label = QLabel(self)
        self.signed_label.setObjectName("reportState")
        self.signed_label.setStyleSheet("color: #1b5e20; font-weight: bold; padding: 2px 4px;")
        self.signed_label.setWordWrap(True)  # a long line must not widen the report side
        self.signed_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.signed_label.hide()

        # ---- layout
        image_side = QWidget(self)
        image_layout = QVBoxLayout(image_side)
        image_layout.setContentsMargins(0, 0, 0, 0)
        image_layout.addWidget(self.viewer, 1)
        image_layout.addWidget(self.thumbnails)
        left_tabs = QTabWidget(self)
        left_tabs.addTab(self.worklist, "Worklist")
        left_tabs.addTab(self.metadata, "Image info")
        self.left_tabs = left_tabs

        report_side = QWidget(self)
        report_layout = QVBoxLayout(report_side)
        report_layout.setContentsMargins(0, 0, 0, 0)
        report_layout.addWidget(self.signed_label)
        report_layout.addWidget(self.editor, 3)
        report_layout.addWidget(self.addenda)
        self.side_tabs = QTabWidget(self)
        self.side_tabs.addTab(self.flags_panel, "Flags")
        self.side_tabs.addTab(self.priors_panel, "Priors")
        report_layout.addWidget(self.side_tabs, 2)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(left_tabs)
        splitter.addWidget(image_side)
        splitter.addWidget(report_side)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 5)
        splitter.setStretchFactor(2, 4)
        splitter.setSizes([300, 760, 560])
        self.splitter = splitter
        central = QWidget(self)
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(self.banner)
        outer.addWidget(self.model_banner)
        outer.addWidget(self.image_banner)
        outer.addWidget(splitter, 1)
        self.setCentralWidget(central)
        self.resize(1600, 940)

        self.user_label = QLabel(self)
        self.model_label = QLabel(self)
        self.save_label = QLabel(self)
        for label in (self.save_label, self.model_label, self.user_label):
            self.statusBar().addPermanentWidget(label)

        # ---- wiring
        self.worklist.studyActivated.connect(self.open_study)
        self.thumbnails.imageSelected.connect(self._show_image)
        self.viewer.imageLoaded.connect(self._on_image_loaded)
        self.viewer.loadFailed.connect(lambda m: self.statusBar().showMessage(m, 10_000))
        self.editor.flagsChanged.connect(self._on_flags)
        self.editor.checkFailed.connect(lambda m: self.statusBar().showMessage(f"Check failed: {m}", 10_000))
        self.session.heatmapRequested.connect(self._show_heatmap)
        self.reading.subscribe(self._on_reading)
        self.keeper.saved.connect(self._on_saved)
        self.keeper.failed.connect(self._on_save_failed)
        self.keeper.conflict.connect(self._on_conflict)

        self._build_menus()
        if settings is not None:
            self._apply_shortcuts(settings.shortcuts)
        self._update_user()
        self.refresh_worklist()
        self._load_model()

    # ================================================================ menus

    def _action(self, menu: Any, text: str, slot: Any, shortcut: str | None = None,
                name: str | None = None) -> QAction:
        action = QAction(text, self)
        for key, value in self._shortcuts.items():
            if shortcut is not None and value == shortcut:
                self._named_actions.setdefault(key, action)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda _checked=False: slot())
        if name:
            action.setObjectName(name)
        menu.addAction(action)
        self.addAction(action)  # shortcuts work wherever the focus is
        return action

    def _build_menus(self) -> None:
        sc = self._shortcuts
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "Import DICOM folder\u2026", self.import_folder, name="importFolder")
        self._action(file_menu, "Import MIMIC-layout dataset\u2026", self.import_mimic, name="importMimic")
        self.open_report_action = self._action(file_menu, "Open report file\u2026",
                                               self.open_report_file, name="openReport")
        file_menu.addSeparator()
        self.save_action = self._action(file_menu, "&Save report", self.save, sc["save"], "save")
        self.sign_action = self._action(file_menu, "Sign off\u2026", self.sign, sc["sign_off"], "sign")
        self.preliminary_action = self._action(file_menu, "Issue as preliminary",
                                               lambda: self.sign(preliminary=True), name="preliminary")
        self.addendum_action = self._action(file_menu, "Add addendum\u2026", self.add_addendum,
                                            name="addendum")
        self.addendum_action.setEnabled(False)
        file_menu.addSeparator()
        self.export_menu = file_menu.addMenu("Export")
        self._action(self.export_menu, "Report as text\u2026", lambda: self.export_report("txt"),
                     name="exportText")
        self._action(self.export_menu, "Report as PDF\u2026", lambda: self.export_report("pdf"),
                     name="exportPdf")
        self._action(self.export_menu, "AI results as DICOM SR\u2026", self.export_sr, name="exportSr")
        file_menu.addSeparator()
        self._action(file_menu, "Settings\u2026", self.open_settings, name="settings")
        self._action(file_menu, "Quit", self.close, "Ctrl+Q")

        view = bar.addMenu("&View")
        self._action(view, "Fit to window", self.viewer.fit, sc["fit"], "fit")
        self._action(view, "Reset window/level and zoom", self.viewer.reset, sc["reset_view"], "reset")
        self._action(view, "Invert", self.viewer.toggle_invert, sc["invert"], "invert")
        self._action(view, "Show evidence heatmap", self._toggle_heatmap, sc["toggle_heatmap"],
                     "toggleHeatmap")
        view.addSeparator()
        self._action(view, "Next study", lambda: self.worklist.step(1), sc["next_study"], "nextStudy")
        self._action(view, "Previous study", lambda: self.worklist.step(-1), sc["previous_study"],
                     "previousStudy")

        review = bar.addMenu("&Review")
        self._action(review, "Next flag", self.flags_panel.next_flag, sc["next_flag"], "nextFlag")
        self._action(review, "Previous flag", self.flags_panel.previous_flag, sc["previous_flag"],
                     "previousFlag")
        self._action(review, "Check report now", self.editor.recheck_now, sc["recheck"], "recheck")
        self._action(review, "Go to flags", self._focus_flags, sc["focus_flags"], "focusFlags")
        self._action(review, "Go to report", self.editor.focus_text, sc["focus_report"], "focusReport")

        self.admin_menu = bar.addMenu("&Admin")
        self._action(self.admin_menu, "Retrain model\u2026", self.open_retrain, name="retrain")
        self._action(self.admin_menu, "Evaluate model\u2026", self.open_evaluate, name="evaluate")
        self._action(self.admin_menu, "Models (activate / roll back)\u2026", self.open_models,
                     name="models")
        self._action(self.admin_menu, "Export finalized cases as a dataset\u2026",
                     self.open_export_dataset, name="exportDataset")

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "Keyboard shortcuts", self.show_shortcuts, "F1")
        self._action(help_menu, "About Concord", self.show_about)

    def user(self) -> Any:
        name = self.storage.current_user
        return self.storage.user(name) if name else None

    def is_admin(self) -> bool:
        user = self.user()
        return user is not None and user.role == Role.ADMIN

    def _update_user(self) -> None:
        user = self.user()
        admin = self.is_admin()
        self.admin_menu.menuAction().setVisible(admin)
        for action in self.admin_menu.actions():
            action.setEnabled(admin)
        if user is not None:
            self.user_label.setText(f"{user.username} ({user.role})")

    # ================================================================ model

    def _load_model(self) -> None:
        directory = self._model_dir
        if directory is None:
            active = self.storage.active_model()
            if active is None:
                self._model_failed("no model is active: an administrator can activate one "
                                   "(Admin \u2192 Models); the report can still be edited and signed")
                return
            directory = Path(active.path)
        self.model_label.setText(f"Loading model {directory.name}\u2026")
        factory = self._reader_factory
        if factory is None:
            device = self._device

            def factory(d: Path) -> Any:
                from core_model.inference import Reader

                return Reader(d, device=device)
        # keep the job (and its signals object) alive until its result is delivered
        self._model_job = run_in_background(lambda: factory(directory), self._model_loaded,
                          lambda m: self._model_failed(f"the model at {directory} could not be loaded: {m}"),
                          self._pool)

    def _model_loaded(self, reader: Any) -> None:
        self.reader = reader
        self.model_version = getattr(reader, "model_version", None) or "unknown"
        self.model_label.setText(f"Model {self.model_version}")
        self.model_banner.hide()
        self.reading.model_version = self.model_version
        self._update_checking()
        self._show_model_banner(reader)
        self.editor.set_reader(reader)
        self._apply_sensitivity()
        self._open_prior_index()
        if self._study is not None:
            self.editor.recheck_now()

    def _show_model_banner(self, reader: Any) -> None:
        """The demo's banner, and the same for any model trained on synthetic images only."""
        if self.demo:
            return
        synthetic = self.model_note_for(getattr(reader, "model_version", None)) is not None
        self.banner.setText(
            f"Model {self.model_version} was trained only on synthetic (phantom) images: its "
            "flags are not for clinical use.")
        self.banner.setVisible(synthetic)

    def model_note_for(self, model_version: str | None) -> str | None:
        """What the exports must say of the model that checked a report: that it was trained
        on synthetic images only (None when it was not, or is not known)."""
        from core_model.checkpoint import trained_on_synthetic

        note = "trained on synthetic (phantom) images only: not for clinical use"
        checkpoint = getattr(self.reader, "checkpoint", None)
        if checkpoint is not None and model_version in (None, self.model_version):
            return note if trained_on_synthetic(checkpoint.manifest) else None
        if model_version is None:
            return None
        from app.admin.commands import read_model_manifest

        try:
            for record in self.storage.models():
                manifest = read_model_manifest(record.path)
                if manifest.get("model_version") == model_version:
                    return note if trained_on_synthetic(manifest) else None
        except StorageError:
            return None
        return None

    def _model_failed(self, message: str) -> None:
        self.reader = None
        self.reading.model_version = None
        self._update_checking()
        self.model_label.setText("No model")
        self.model_banner.setText(f"Checking is off: {message}.")
        self.model_banner.show()
        self._flags_shown = True  # nothing will come; the screenshot need not wait for flags
        self._maybe_ready()

    # ================================================================ worklist and studies

    def refresh_worklist(self) -> None:
        rows = []
        try:
            for study in self.storage.studies():
                state = self.storage.report(study.id)
                status = str(state.status) if state.version else "no report"
                rows.append(WorklistRow(
                    study.id, study.patient_id or "", study.accession_number or "",
                    study.study_date.isoformat() if study.study_date else "",
                    study.description or "", status,
                ))
        except StorageError as exc:
            self._error("The worklist could not be read", str(exc))
            return
        self.worklist.set_rows(rows, keep=self._study.study_id if self._study else None)

    def open_study(self, study_id: int) -> None:
        if self._study is not None and self._study.study_id == study_id:
            return
        self._leave_study()
        try:
            images = self.storage.images(study_id)
            state, recovered = self.keeper.open(study_id)
            self.storage.audit("study.open", ("study", study_id))
        except StorageError as exc:
            self._error("The study could not be opened", str(exc))
            return
        paths = [i.path for i in images]
        frontal = [i.path for i in images if (i.view_position or "").upper() in ("PA", "AP", "")]
        # the model reads frontal views only; a lateral-only study is shown but not checked
        self._study = OpenStudy(study_id, study_key(study_id), paths, frontal)
        self._update_checking()
        self._image_shown = False
        self.image_banner.hide()  # until this study's first check says otherwise
        self.save_label.setText("")  # the last study's save status is not this one's
        self.statusBar().clearMessage()
        self.thumbnails.set_items([
            f"{i.view_position or '?'}" for i in images
        ])
        self._thumbnails_pending = True  # started once the shown image is painted (it goes first)
        if paths:
            first = paths.index(frontal[0]) if frontal else 0
            self.thumbnails.set_current(first)
            self._show_image(first)
        else:
            self.viewer.clear("This study has no images")
        text = recovered if recovered is not None else state.text
        self.editor.set_study(self._study.key, self._study.images)
        self.editor.set_text(text)
        self._set_signed(state)
        # what storage holds for this study, until (and unless) a new check replaces it
        stored = [r.flag for r in self.reading.reviews()]
        self.editor.show_flags(stored if recovered is None else [])
        self._publish_flags()
        if recovered is not None:
            self.statusBar().showMessage(
                "Recovered text that had not reached the database; it will be saved now.", 15_000)
            self.keeper.autosave()
        if not self._study.images:
            self.statusBar().showMessage(
                "No frontal image in this study: the model checks frontal views only.", 15_000)
        try:
            record = self.storage.study(study_id)
            exclude = tuple(x for x in (record.accession_number, record.study_instance_uid) if x)
        except StorageError:
            exclude = ()
        self.priors_panel.set_study(self._study.key, self._study.images, exclude_ids=exclude, draft=text)
        self.studyOpened.emit(study_id)

    def _leave_study(self) -> None:
        if self._study is None:
            return
        self.keeper.close()
        self._study = None
        self.viewer.set_overlay(None)
        self.editor.show_flags([])
        self._publish_flags()

    def _update_checking(self) -> None:
        """Sign-off waits for a check of the current text only when one can run."""
        self.reading.checking = bool(self.reader is not None and self._study is not None
                                     and self._study.images)

    def _show_image(self, index: int) -> None:
        if self._study is None or not 0 <= index < len(self._study.paths):
            return
        self.viewer.open_async(self._study.paths[index])

    def _on_thumbnail(self, study_id: int, index: int, thumb: Any, job: Any) -> None:
        if job in self._loaders:
            self._loaders.remove(job)
        if self._study is None or self._study.study_id != study_id:
            return  # a thumbnail of the study shown before
        if thumb is not None and 0 <= index < self.thumbnails.count():
            self.thumbnails.set_thumbnail(index, thumb)

    def _start_thumbnails(self) -> None:
        if self._study is None or not self._thumbnails_pending:
            return
        self._thumbnails_pending = False
        study_id = self._study.study_id
        for index, path in enumerate(self._study.paths):
            loader = ImageLoader(path, index, thumbnail_size=72)
            loader.signals.loaded.connect(
                lambda i, _image, thumb, sid=study_id, job=loader: self._on_thumbnail(sid, i, thumb, job))
            self._loaders.append(loader)
            self._pool.start(loader)

    def _on_image_loaded(self, image: Any) -> None:
        self.metadata.set_image(image)
        self._image_shown = True
        QTimer.singleShot(0, self._start_thumbnails)
        current = self.flags_panel.current_flag_index()
        flags = self.editor.flags()
        if 0 <= current < len(flags):
            self._show_heatmap(flags[current])
        self._maybe_ready()

    def _set_signed(self, state: Any) -> None:
        signed = bool(state is not None and state.signed)
        self.editor.text_edit().setReadOnly(signed)
        self.save_action.setEnabled(not signed)
        self.sign_action.setEnabled(not signed)
        self.preliminary_action.setEnabled(not signed)
        self.open_report_action.setEnabled(not signed)
        self.addendum_action.setEnabled(signed)
        self.flags_panel.set_read_only(signed)
        self.addenda.show_state(state)
        if state is not None and (signed or state.preliminary):
            when = state.signed_at.astimezone().strftime("%Y-%m-%d %H:%M") if state.signed_at else ""
            what = f"{state.status.capitalize()}: signed" if signed else "Preliminary: issued"
            tail = "; read-only (add an addendum for a change)" if signed else "; still editable"
            if state.preliminary and self.reading.changed_since_issued():
                tail = "; changed since it was issued (issue it again or sign it final)"
            self.signed_label.setText(
                f"{what} by {state.signed_by} {when} (model {state.model_version or 'none'}){tail}")
            self.signed_label.setVisible(True)
        else:
            self.signed_label.setVisible(False)

    # ================================================================ flags

    def _on_check_result(self, key: str | None, text: str, result: Any) -> list[Any] | None:
        """A finished check goes to the reading session; the editor shows what it holds."""
        if not self.reading.apply_check(key, text, result):
            return None
        self._show_image_verdict(getattr(result, "image_check", None))
        return [r.flag for r in self.reading.reviews()]

    def _show_image_verdict(self, verdict: Any) -> None:
        """The banner for images the model cannot read, audited once per study and reason."""
        if self._study is None:
            return
        shown_anyway = self.editor.shows_unreliable()
        self.image_banner.show_verdict(verdict, self.model_version or "?", shown_anyway=shown_anyway,
                                       signed=self.reading.signed)
        if verdict is None or verdict.accepted:
            return
        mark = (self._study.study_id, verdict.reason + str(shown_anyway))
        if self._image_audited == mark:
            return
        self._image_audited = mark
        try:
            self.storage.audit("image_check.override" if shown_anyway else "image_check.refuse",
                               ("study", self._study.study_id),
                               {"model_version": self.model_version, "reason": verdict.reason,
                                "score": verdict.score, "threshold": verdict.threshold})
        except StorageError as exc:
            self.statusBar().showMessage(f"Not audited: {exc}", 10_000)

    def _show_unreliable_flags(self) -> None:
        """The reader asks to see the flags on an image the model cannot read reliably."""
        self.editor.set_show_unreliable(True)

    def _on_reading(self, event: str, payload: Any) -> None:
        if event == "flags":
            self._publish_flags()
        elif event == "error":
            self.statusBar().showMessage(str(payload), 10_000)
        elif event in ("signed", "addendum"):
            self._set_signed(payload)
            self._publish_flags()  # final: no corrections offered, no decision open

    def _publish_flags(self) -> None:
        """The flags panel shows the reading session's flags and decisions, as stored."""
        self.flags_panel.set_reviews(self.reading.reviews())
        self.flags_panel.set_read_only(self.reading.signed)
        review = self.reading.review_state()
        self.flags_panel.set_note("; ".join(review.extras()) if review is not None else "")

    def _approve_decision(self, review: FlagReview, decision: str, reason: str | None) -> bool:
        """A decision from the panel: recorded by the reading session, or refused."""
        if review.record_id is None:
            self._error("Decision not recorded", "this flag was not recorded; check again (F5)")
            self._publish_flags()
            return False
        try:
            self.reading.decide(review.record_id, decision, reason)
        except StorageError as exc:
            self._error("Decision not recorded", str(exc))
            return False
        self.statusBar().clearMessage()  # an earlier refusal no longer holds
        return True

    def _on_flags(self, flags: list[Any]) -> None:
        if self._study is None:
            return
        self.session.refresh_current()  # the panel's current flag on the editor's new flags
        if self.editor.checked_text() == self.editor.text():  # a check's, not only the stored
            self._flags_shown = True
            self._maybe_ready()

    def _show_heatmap(self, flag: Any) -> None:
        heat = getattr(flag, "heatmap", None)
        image = self.viewer.image
        if heat is None or image is None or self.reader is None:
            self.viewer.set_overlay(None)
            return
        if not np.isfinite(heat).any():  # nothing stands out of the film's own background
            self.viewer.set_overlay(None)
            self.statusBar().showMessage(
                f"No focal evidence for {flag.entity.lower()}: the model's evidence is spread "
                "over the film, so none is drawn.", 8_000)
            return
        try:
            size = int(self.reader.model.config.image.image_size)
        except AttributeError:
            size = 128
        self.viewer.set_overlay(heat, box=heatmap_box((image.rows, image.columns), size))

    def _toggle_heatmap(self) -> None:
        self.viewer.overlay_visible = not self.viewer.overlay_visible

    def _focus_flags(self) -> None:
        self.side_tabs.setCurrentWidget(self.flags_panel)
        self.flags_panel.view.setFocus()

    # ================================================================ saving and signing

    def save(self) -> bool:
        outcome = self.keeper.save()
        if not outcome.ok and outcome.conflict is None:
            self.statusBar().showMessage(outcome.message, 10_000)
        return outcome.ok

    def sign(self, preliminary: bool = False) -> bool:
        """Sign off the report (final), or issue it as preliminary."""
        return self.report_actions.sign(preliminary=preliminary)

    def add_addendum(self, text: str | None = None) -> bool:
        return self.report_actions.add_addendum(text)

    def _on_saved(self, state: Any, kind: str) -> None:
        self.save_label.setText(f"{'Autosaved' if kind == 'autosave' else 'Saved'} v{state.version}")
        if state.preliminary:
            self._set_signed(state)  # "changed since it was issued" as soon as it is
        if kind != "autosave":
            self.refresh_worklist()

    def _on_save_failed(self, message: str) -> None:
        self.save_label.setText("Not saved")
        self.statusBar().showMessage(message, 15_000)

    def _on_conflict(self, exc: ConcurrentEditError) -> None:
        self.save_label.setText("Conflict")
        if os.environ.get("CONCORD_NO_DIALOGS"):
            return
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Someone else saved this report")
        box.setText(
            f"{exc.their_author or 'Another user'} saved version {exc.their_version} of this report "
            "while you were editing. Your text is still in the editor (and in a recovery file).")
        box.setDetailedText(f"Their text:\n\n{exc.their_text}")
        keep = box.addButton("Keep mine (save as a new version)", QMessageBox.ButtonRole.AcceptRole)
        theirs = box.addButton("Load theirs", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Decide later", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        if box.clickedButton() is keep:
            self.keeper.overwrite_after_conflict()
        elif box.clickedButton() is theirs:
            self.editor.set_text(self.keeper.take_theirs())

    # ================================================================ file actions

    def import_folder(self, folder: str | None = None) -> Any:
        """Import a folder of DICOM files (headers only; per-file reasons for what is rejected)."""
        from app.importer import import_dicom_folder

        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Import a folder of DICOM files",
                                                      str(self.report_actions.import_folder()))
            if not folder:
                return None
        return self._import(folder, "Reading DICOM headers\u2026",
                            lambda tick, cancel: import_dicom_folder(self.storage, folder, progress=tick,
                                                                     cancel=cancel))

    def import_mimic(self, root: str | None = None) -> Any:
        """Import a MIMIC-layout dataset's studies with their reports."""
        from app.importer import import_mimic

        if root is None:
            root = QFileDialog.getExistingDirectory(self, "Import a MIMIC-layout dataset",
                                                    str(self.report_actions.import_folder()))
            if not root:
                return None
        return self._import(root, "Reading the dataset\u2026",
                            lambda tick, cancel: import_mimic(self.storage, root, progress=tick, cancel=cancel))

    def _import(self, folder: str, label: str, run: Any) -> Any:
        progress = QProgressDialog(label, "Cancel", 0, 100, self)
        progress.setWindowModality(Qt.WindowModality.WindowModal)
        progress.setMinimumDuration(500)

        def tick(done: int, total: int) -> None:
            progress.setMaximum(max(total, 1))
            progress.setValue(done)
            QApplication.processEvents()

        try:
            report = run(tick, progress.wasCanceled)
        except (StorageError, ValueError, OSError) as exc:
            progress.close()
            self._error("Import failed", str(exc))
            return None
        progress.close()
        self.refresh_worklist()
        self.statusBar().showMessage(f"Imported {folder}: {report.summary()}", 20_000)
        if report.rejected and not os.environ.get("CONCORD_NO_DIALOGS"):
            box = QMessageBox(QMessageBox.Icon.Information, "Import finished", report.summary(),
                              parent=self)
            box.setDetailedText("\n".join(f"{r.path}: {r.reason}" for r in report.rejected[:500]))
            box.exec()
        return report

    def open_report_file(self, path: str | None = None) -> bool:
        return self.report_actions.open_report_file(path)

    def export_report(self, fmt: str, path: str | None = None) -> str | None:
        return self.report_actions.export_report(fmt, path)

    def export_sr(self, path: str | None = None) -> str | None:
        return self.report_actions.export_sr(path)

    # ================================================================ dialogs provided by other parts

    def _make_priors_panel(self) -> QWidget:
        from app.priors import PriorsPanel

        panel = PriorsPanel(self)
        panel.insertRequested.connect(self._insert_sentence)
        self.editor.textEdited.connect(panel.set_draft)
        return panel

    def _open_prior_index(self) -> None:
        from app.priors import default_index_dir

        if self.reader is None:
            return
        version = self.model_version or "unknown"
        directory = self._index_dir or default_index_dir(version)
        if self.demo and self._index_dir is None:  # never mixed with a real worklist's priors
            directory = default_index_dir(version).parent.with_name("demo-prior-index") / version
        if self.demo and not (Path(directory) / "index.json").is_file():
            # the demo's priors are the other demo studies: index them once, in the background
            from app.demo import build_demo_prior_index
            from app.report.worker import MODEL_LOCK

            reader = self.reader

            def build() -> Any:
                with MODEL_LOCK:  # the reader is shared with the editor's checks
                    return build_demo_prior_index(reader, directory)

            self._index_job = run_in_background(
                build,
                lambda _d: self.priors_panel.open_index(reader, directory),
                lambda m: self.statusBar().showMessage(f"Demo priors not indexed: {m}", 10_000),
                self._pool)
            return
        self.priors_panel.open_index(self.reader, directory)

    def _insert_sentence(self, sentence: str) -> None:
        self.report_actions.insert_sentence(sentence)

    # ---- settings

    def apply_settings(self, settings: Any) -> None:
        """Apply what can change while running: theme, operating point, autosave, shortcuts."""
        from app.settings import apply_theme

        self.settings = settings
        app = QApplication.instance()
        if app is not None:
            apply_theme(app, settings.theme)
        self.keeper.set_interval(settings.autosave_seconds)
        self._apply_sensitivity()
        self._apply_shortcuts(settings.shortcuts)

    def _apply_shortcuts(self, mapping: dict[str, str]) -> None:
        """Shortcuts from Settings.  Keys with Ctrl/Alt/Meta or F-keys work window-wide;
        a single letter works only in the flags list (flag actions) or on the image (view
        actions), so typing in the report never triggers one."""
        for shortcut in self._local_shortcuts:
            shortcut.setParent(None)
            shortcut.deleteLater()
        self._local_shortcuts = []
        local = {
            "next_flag": (self.flags_panel.view, self.flags_panel.next_flag),
            "previous_flag": (self.flags_panel.view, self.flags_panel.previous_flag),
            "accept": (self.flags_panel.view, lambda: self.flags_panel.accept()),
            "dismiss": (self.flags_panel.view, lambda: self.flags_panel.dismiss()),
            "edit": (self.flags_panel.view, lambda: self.flags_panel.edit()),
            "toggle_heatmap": (self.viewer, self._toggle_heatmap),
            "invert": (self.viewer, self.viewer.toggle_invert),
            "reset_view": (self.viewer, self.viewer.reset),
            "fit": (self.viewer, self.viewer.fit),
        }
        for name, keys in mapping.items():
            if not keys:
                continue
            sequence = QKeySequence(keys)
            global_key = any(m in keys for m in ("Ctrl+", "Alt+", "Meta+")) or keys.startswith("F")
            action = self._named_actions.get(name)
            if action is not None and global_key:
                action.setShortcut(sequence)
            elif name in local:
                widget, slot = local[name]
                shortcut = QShortcut(sequence, widget)
                shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                shortcut.activated.connect(slot)
                self._local_shortcuts.append(shortcut)

    def _apply_sensitivity(self) -> None:
        """The flag mode (Settings > Checking) on the loaded model, or for a model without
        validated modes, the sensitivity on its calibration."""
        from app.report.worker import MODEL_LOCK
        from app.settings import thresholds_for

        reader = self.reader
        settings = self.settings
        base = getattr(getattr(reader, "checkpoint", None), "calibration", None)
        if reader is None or settings is None or base is None:
            return
        with MODEL_LOCK:
            reader.calibration = thresholds_for(settings.sensitivity, base)
            modes = getattr(reader, "modes", {})
            if modes:
                reader.set_mode(settings.flag_mode if settings.flag_mode in modes else None)
        if self._study is not None:
            self.editor.recheck_now()

    def open_settings(self) -> None:
        from app.settings import SettingsDialog

        dialog = SettingsDialog(self.settings, problem=self._settings_problem,
                                modes=getattr(self.reader, "modes", None), parent=self)
        dialog.settingsSaved.connect(self.apply_settings)
        dialog.exec()
        self._settings_problem = None
        if dialog.restart_required:
            self.statusBar().showMessage("Some changes take effect after a restart.", 15_000)

    # ---- admin

    def _role(self) -> str | None:
        user = self.user()
        return str(user.role) if user is not None else None

    def _admin_dialog(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if not self.is_admin():
            self._error("Not allowed", "Only an administrator can do this.")
            return None
        import app.admin as admin

        try:
            dialog = getattr(admin, name)(self.storage, self._role(), self, *args, **kwargs)
        except PermissionError as exc:
            self._error("Not allowed", str(exc))
            return None
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self._dialogs.append(dialog)
        dialog.destroyed.connect(lambda *_: self._dialogs.remove(dialog) if dialog in self._dialogs else None)
        return dialog

    def open_retrain(self) -> Any:
        dialog = self._admin_dialog("RetrainDialog")
        if dialog is not None:
            dialog.modelRegistered.connect(
                lambda v: self.statusBar().showMessage(
                    f"Model {v} registered; evaluate it, then activate it (Admin \u2192 Models).", 20_000))
            dialog.show()
        return dialog

    def open_evaluate(self, model_version: str | None = None, **options: Any) -> Any:
        """The Evaluate dialog; ``options`` go to it (``data_root``, ``thresholds``)."""
        dialog = self._admin_dialog("EvaluateDialog", model_version=model_version, **options)
        if dialog is not None:
            dialog.show()
        return dialog

    def open_models(self) -> Any:
        dialog = self._admin_dialog("ModelsDialog")
        if dialog is not None:
            dialog.activeModelChanged.connect(lambda _v: self._load_model_if_changed())
            dialog.evaluateRequested.connect(self.open_evaluate)
            dialog.show()
        return dialog

    def open_export_dataset(self) -> Any:
        dialog = self._admin_dialog("ExportDatasetDialog")
        if dialog is not None:
            dialog.show()
        return dialog

    def _load_model_if_changed(self) -> None:
        """After an activation or roll back: check with the newly active model, or say why not."""
        active = self.storage.active_model()
        if active is None:
            return
        if active.path != str(self._model_dir or ""):
            was = " instead of the model this window was started with" if self._explicit_model else ""
            self._explicit_model = False
            self._model_dir = Path(active.path)
            self.statusBar().showMessage(
                f"{active.model_version} is now the active model: checking with it{was}.", 20_000)
            self._load_model()
        else:
            self.statusBar().showMessage(
                f"{active.model_version} is active; this window already checks with it.", 20_000)

    def show_shortcuts(self) -> None:
        lines = [f"{name.replace('_', ' ')}: {keys}" for name, keys in sorted(self._shortcuts.items())]
        lines += ["", "In the flags list: J / K next / previous, A accept, D dismiss, E edit, Enter go to sentence",
                  "In the image: drag to window/level, wheel to zoom, middle-drag or Space+drag to pan"]
        QMessageBox.information(self, "Keyboard shortcuts", "\n".join(lines))

    def show_about(self) -> None:
        QMessageBox.about(self, "About Concord",
                          "Concord: a reading assistant for chest radiographs.\n"
                          f"Model: {self.model_version or 'none'}\nDatabase: {self.storage.location}")

    # ================================================================ helpers

    def _error(self, title: str, message: str) -> None:
        self.statusBar().showMessage(f"{title}: {message}", 15_000)
        if not os.environ.get("CONCORD_NO_DIALOGS"):
            QMessageBox.warning(self, title, message)

    def _maybe_ready(self) -> None:
        if not self._ready_sent and self._image_shown and self._flags_shown:
            self._ready_sent = True
            QTimer.singleShot(0, self.ready.emit)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.keeper.close()  # the last words: saved, or kept in the recovery file
        self.editor.wait_for_idle(5_000)
        self.priors_panel.wait_for_idle()
        super().closeEvent(event)


# ---------------------------------------------------------------------------- report files

_ENCODINGS = ("utf-8-sig", "utf-16")


def read_report_file(path: str | os.PathLike[str], limit: int = 1_000_000) -> str:
    """A report's text: UTF-8 (with or without BOM), UTF-16 with a BOM, else a clear error.

    A file in an unknown 8-bit encoding is refused rather than guessed at: a
    wrong guess silently changes characters of a medical report.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"{p.name}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise ValueError(f"{p.name}: {len(data):,} bytes is too large for a report")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates: tuple[str, ...] = ("utf-16",)
    else:
        candidates = ("utf-8-sig",)
    for encoding in candidates:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" in text:
            break
        if not text.strip():
            raise ValueError(f"{p.name}: the file is empty")
        return text.replace("\r\n", "\n").replace("\r", "\n")
    raise ValueError(f"{p.name}: not UTF-8 or UTF-16 text; save it as UTF-8 and open it again")
