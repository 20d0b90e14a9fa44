"""Admin > Retrain…: run ``concord train`` as a child process with live progress.

The dialog builds a :class:`~app.admin.commands.TrainRequest` from its fields,
starts ``python -m app.cli train ... --progress json`` with :class:`QProcess`,
and follows the JSON-lines events (:class:`~app.admin.progress.TrainingMonitor`):
a progress bar, a loss plot, the ETA and every output line in a log. Cancel
sends SIGTERM, on which the trainer finishes its step, writes a resumable
checkpoint and exits with status 130; Resume runs the same command with
``--resume``. When the run ends with ``done`` its model is registered in
storage (not active: it must be evaluated and activated first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.admin.commands import (
    DEVICES,
    CommandBuilder,
    TrainRequest,
    concord_command,
    loss_variants,
    model_version_for,
    named_configs,
    register_trained_model,
)
from app.admin.fields import LogView, MessageLine, PathField
from app.admin.plot import LossPlot
from app.admin.process import CANCELLED_EXIT, ChildProcess
from app.admin.progress import TrainingMonitor, format_duration, parse_line
from app.admin.registry import require_admin
from app.storage import ModelRecord, Role, Storage, StorageError, UserRecord

CONFIG_FILE_ITEM = "YAML / JSON file…"
LENGTH_MODES = ("configuration's steps", "steps", "epochs")


class RetrainDialog(QDialog):
    """Train a new model on a MIMIC-layout dataset (admins only).

    ``role`` is the signed-in user's role; anything but ``admin`` raises
    :class:`~app.admin.registry.AdminRequired` (a :class:`PermissionError`).
    ``command`` turns ``concord`` arguments into ``(program, arguments)``
    (default :func:`~app.admin.commands.concord_command`); ``environment``
    is the child's base environment (default: this process's).

    Signals: ``runStarted(bool resume)``, ``runEnded(str outcome)`` with outcome
    ``done``, ``cancelled`` or ``failed``, ``modelRegistered(str model_version)``.
    """

    runStarted = Signal(bool)
    runEnded = Signal(str)
    modelRegistered = Signal(str)

    def __init__(
        self,
        storage: Storage,
        role: str | Role | UserRecord | None,
        parent: QWidget | None = None,
        *,
        command: CommandBuilder | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        require_admin(role, "retraining the model")
        super().__init__(parent)
        self.storage = storage
        self.command = command or concord_command
        self.environment = dict(environment) if environment is not None else None
        self.monitor = TrainingMonitor()
        self.outcome: str | None = None
        self.registered: ModelRecord | None = None
        self._request: TrainRequest | None = None
        self._steps: int | None = None
        self._resumable: tuple[TrainRequest, int | None] | None = None
        self._cancel_requested = False
        self._close_when_ended = False
        self.process = ChildProcess(self)
        self.process.stdoutLine.connect(self._stdout_line)
        self.process.stderrLine.connect(self._stderr_line)
        self.process.ended.connect(self._ended)
        self.process.failedToStart.connect(self._failed_to_start)
        self._start_error: str | None = None
        self.setWindowTitle("Retrain the model")
        self._build()
        self._set_running(False)

    # -- layout ----------------------------------------------------------------------

    def _build(self) -> None:
        self.data_field = PathField("dir", placeholder="dataset root (mimic-cxr-2.0.0-*.csv and files/)",
                                    caption="Dataset root")
        self.variant_box = QComboBox()
        self.variant_box.addItem("from the configuration", None)
        for name in loss_variants():
            self.variant_box.addItem(name, name)
        self.config_box = QComboBox()
        self.config_box.addItems([*named_configs(), CONFIG_FILE_ITEM])
        self.config_file = PathField("file", placeholder="training configuration file",
                                     file_filter="Configuration (*.yaml *.yml *.json)",
                                     caption="Training configuration")
        self.config_box.currentTextChanged.connect(self._config_changed)
        config_row = QWidget()
        row = QHBoxLayout(config_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.config_box)
        row.addWidget(self.config_file, 1)

        self.length_box = QComboBox()
        self.length_box.addItems(LENGTH_MODES)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 10_000_000)
        self.steps_spin.setValue(2000)
        self.epochs_spin = QDoubleSpinBox()
        self.epochs_spin.setRange(0.01, 100_000)
        self.epochs_spin.setDecimals(2)
        self.epochs_spin.setValue(1.0)
        self.length_box.currentTextChanged.connect(self._length_changed)
        length_row = QWidget()
        row = QHBoxLayout(length_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.length_box)
        row.addWidget(self.steps_spin)
        row.addWidget(self.epochs_spin)
        row.addStretch(1)

        self.device_box = QComboBox()
        self.device_box.addItems(DEVICES)
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(0, 256)
        self.threads_spin.setSpecialValueText("default")
        self.threads_spin.setToolTip("torch CPU threads; 1 is fastest when other work shares the cores")
        device_row = QWidget()
        row = QHBoxLayout(device_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.device_box)
        row.addWidget(QLabel("CPU threads"))
        row.addWidget(self.threads_spin)
        row.addStretch(1)

        self.out_field = PathField("newdir", placeholder="new run folder (or an earlier run to resume)",
                                   caption="Run folder")
        self.cache_field = PathField("dir", placeholder="optional: preprocessing cache shared by runs",
                                     caption="Preprocessing cache")

        self.form = QGroupBox("Run")
        form = QFormLayout(self.form)
        form.addRow("Data root", self.data_field)
        form.addRow("Loss variant", self.variant_box)
        form.addRow("Configuration", config_row)
        form.addRow("Length", length_row)
        form.addRow("Device", device_row)
        form.addRow("Run folder", self.out_field)
        form.addRow("Cache folder", self.cache_field)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("idle")
        self.status_label = QLabel("Not started.")
        self.eta_label = QLabel("ETA —")
        self.eta_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status_label, 1)
        status_row.addWidget(self.eta_label)
        self.plot = LossPlot()
        self.log = LogView()
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.plot)
        splitter.addWidget(self.log)
        splitter.setSizes([220, 160])
        self.message = MessageLine()

        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(self.resume)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.resume_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addWidget(self.progress_bar)
        layout.addLayout(status_row)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        self._config_changed(self.config_box.currentText())
        self._length_changed(self.length_box.currentText())
        self.resize(760, 720)

    def _config_changed(self, text: str) -> None:
        self.config_file.setVisible(text == CONFIG_FILE_ITEM)

    def _length_changed(self, text: str) -> None:
        self.steps_spin.setVisible(text == "steps")
        self.epochs_spin.setVisible(text == "epochs")

    # -- fields <-> request ----------------------------------------------------------

    def request(self) -> TrainRequest:
        """The request the fields describe (paths made absolute); ValueError if incomplete."""
        data, out, cache = self.data_field.path(), self.out_field.path(), self.cache_field.path()
        if data is None:
            raise ValueError("choose the dataset folder")
        if out is None:
            raise ValueError("choose the output run folder")
        if self.config_box.currentText() == CONFIG_FILE_ITEM:
            chosen = self.config_file.path()
            if chosen is None:
                raise ValueError("choose the configuration file")
            config = str(chosen.resolve())
        else:
            config = self.config_box.currentText()
        mode = self.length_box.currentText()
        threads = self.threads_spin.value() or None
        return TrainRequest(
            data_root=data.resolve(), out_dir=out.resolve(), config=config,
            variant=self.variant_box.currentData(),
            steps=self.steps_spin.value() if mode == "steps" else None,
            epochs=self.epochs_spin.value() if mode == "epochs" else None,
            device=self.device_box.currentText(),
            cache_dir=cache.resolve() if cache is not None else None, threads=threads,
        )

    def set_request(self, request: TrainRequest) -> None:
        """Fill the fields from ``request`` (for the main window's defaults, and tests)."""
        self.data_field.setText(str(request.data_root))
        self.out_field.setText(str(request.out_dir))
        self.cache_field.setText(str(request.cache_dir) if request.cache_dir else "")
        if request.config in named_configs():
            self.config_box.setCurrentText(request.config)
        else:
            self.config_box.setCurrentText(CONFIG_FILE_ITEM)
            self.config_file.setText(request.config)
        index = self.variant_box.findData(request.variant) if request.variant else 0
        self.variant_box.setCurrentIndex(max(index, 0))
        if request.steps is not None:
            self.length_box.setCurrentText("steps")
            self.steps_spin.setValue(request.steps)
        elif request.epochs is not None:
            self.length_box.setCurrentText("epochs")
            self.epochs_spin.setValue(request.epochs)
        else:
            self.length_box.setCurrentText(LENGTH_MODES[0])
        self.device_box.setCurrentText(request.device if request.device in DEVICES else "auto")
        self.threads_spin.setValue(request.threads or 0)

    # -- actions ---------------------------------------------------------------------

    def running(self) -> bool:
        return self.process.running()

    def start(self) -> bool:
        """Start a new run from the fields; False (with the reason shown) if it cannot start."""
        if self.running():
            return False
        try:
            request = self.request()
            request.check()
            steps = request.resolved_steps()
        except ValueError as exc:
            self._show(str(exc), "error")
            return False
        if (request.out_dir / "run.json").is_file():
            self._resumable = (request, steps)
            self.resume_button.setEnabled(True)
            self._show(f"{request.out_dir} already holds a training run; press Resume to continue "
                       "it, or choose a new run folder", "warning")
            return False
        return self._launch(request, steps, resume=False)

    def resume(self) -> bool:
        """Continue the last cancelled or failed run (the same command with ``--resume``)."""
        if self.running() or self._resumable is None:
            return False
        request, steps = self._resumable
        return self._launch(request, steps, resume=True)

    def cancel(self) -> None:
        """First press: SIGTERM (the run checkpoints and stops). Second press: kill it."""
        if not self.running():
            return
        if self._cancel_requested:
            self.log.add_line("[force stop: the process is killed; nothing more is saved]", error=True)
            self.process.kill()
            return
        self._cancel_requested = True
        self.cancel_button.setText("Force stop")
        self.status_label.setText("Stopping: finishing the current step and saving a checkpoint…")
        self.process.terminate()

    def reject(self) -> None:
        """Close; a running run is cancelled first (the window closes when it has stopped)."""
        if self.running():
            self._close_when_ended = True
            self.cancel()
            return
        super().reject()

    def _launch(self, request: TrainRequest, steps: int | None, *, resume: bool) -> bool:
        args = request.arguments(resume=resume, steps=steps)
        try:
            self.storage.audit("training.start", ("run", str(request.out_dir)),
                               {"arguments": args, "resume": resume})
        except StorageError as exc:
            self._show(f"cannot start: {exc}", "error")
            return False
        program, arguments = self.command(args)
        self._request, self._steps = request, steps
        self._resumable = None
        self._cancel_requested = False
        self._start_error = None
        self.outcome = None
        self.registered = None
        if resume:
            self.monitor.new_attempt()
            self.log.add_line(f"--- resuming {request.out_dir} ---")
        else:
            self.monitor = TrainingMonitor()
            self.plot.clear()
            self.log.clear()
        self.plot.set_total_steps(steps)
        self.monitor.steps = steps or self.monitor.steps
        self.message.clear_message()
        self.log.add_line("$ concord " + " ".join(args))
        self._set_running(True)
        self.progress_bar.setFormat("starting…")
        self.status_label.setText("Starting (loading the data and building the model)…")
        self.eta_label.setText("ETA —")
        self.process.start(program, arguments, environment=self.environment)
        self.runStarted.emit(resume)
        return True

    # -- child output ----------------------------------------------------------------

    def _stdout_line(self, line: str) -> None:
        parsed = parse_line(line)
        self.log.add_line(line)
        if parsed.event is None:
            return
        note = self.monitor.apply(parsed.event)
        if parsed.kind == "step":
            self._show_progress()
        elif note:
            self.log.add_line(f"» {note}")
            self.status_label.setText(note)
            if parsed.kind == "start":
                self.plot.set_total_steps(self.monitor.steps)

    def _stderr_line(self, line: str) -> None:
        self.log.add_line(line, error=True)

    def _failed_to_start(self, message: str) -> None:
        self._start_error = message
        self.log.add_line(message, error=True)

    def _show_progress(self) -> None:
        m = self.monitor
        self.progress_bar.setValue(int(round(m.fraction * 1000)))
        self.progress_bar.setFormat(f"{m.step} / {m.steps}" if m.steps else f"step {m.step}")
        self.status_label.setText(m.status())
        self.eta_label.setText(f"ETA {format_duration(m.eta_s)}")
        self.plot.set_total_steps(m.steps)
        self.plot.set_points(m.losses)

    def _ended(self, code: int, crashed: bool) -> None:
        request = self._request
        self._set_running(False)
        m = self.monitor
        checkpoint = m.checkpoint or (self._latest_checkpoint(request) if request else None)
        if m.outcome == "done" and code == 0 and not crashed:
            self.outcome = "done"
            self._show_progress()
            self.progress_bar.setFormat("done")
            self.eta_label.setText("ETA —")
            self._register()
        elif code == CANCELLED_EXIT or m.outcome == "cancelled":
            self.outcome = "cancelled"
            self.progress_bar.setFormat(f"cancelled at step {m.step}")
            self._offer_resume(request, checkpoint)
            self._show(f"cancelled; resumable checkpoint kept at {checkpoint}. Press Resume to "
                       "continue the run.", "warning")
        elif crashed and self._cancel_requested:
            self.outcome = "cancelled"
            self.progress_bar.setFormat("stopped")
            if checkpoint:
                self._offer_resume(request, checkpoint)
                self._show(f"stopped before a new checkpoint; the last checkpoint is kept at "
                           f"{checkpoint}. Press Resume to continue from it.", "warning")
            else:
                self._show("stopped before the first checkpoint; nothing to resume "
                           "(start the run again)", "warning")
        else:
            self.outcome = "failed"
            self.progress_bar.setFormat("failed")
            why = f"exit status {code}" if not crashed else "the process was killed"
            lines = self.process.last_error_lines()
            if self._start_error:
                why, lines = "it did not start", [self._start_error]
            detail = "\n".join(lines) if lines else "(no error output)"
            message = f"Training failed ({why}):\n{detail}"
            if checkpoint:
                self._offer_resume(request, checkpoint)
                message += f"\nThe last checkpoint is kept at {checkpoint}; Resume continues from it."
            self._show(message, "error")
        self.runEnded.emit(self.outcome)
        if self._close_when_ended:
            self._close_when_ended = False
            super().reject()

    def _offer_resume(self, request: TrainRequest | None, checkpoint: str | None) -> None:
        if request is not None and checkpoint:
            self._resumable = (request, self._steps)
            self.resume_button.setEnabled(True)

    @staticmethod
    def _latest_checkpoint(request: TrainRequest) -> str | None:
        """The run folder's newest complete checkpoint (``latest.json``), if any."""
        try:
            latest = json.loads((Path(request.out_dir) / "latest.json").read_text(encoding="utf-8"))
            return str(Path(request.out_dir) / "checkpoints" / latest["checkpoint"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _register(self) -> None:
        request, m = self._request, self.monitor
        assert request is not None
        model_dir = Path(m.model_path) if m.model_path else request.out_dir / "model"
        if not model_dir.is_absolute():
            model_dir = request.out_dir / model_dir
        version = model_version_for(request.out_dir, m.step)
        try:
            self.registered = register_trained_model(self.storage, model_dir, request.out_dir,
                                                     m.step, request.variant)
        except StorageError as exc:
            self._show(f"Training finished (model at {model_dir}) but the model could not be "
                       f"registered as {version}: {exc}", "error")
            return
        self.status_label.setText(f"Done at step {m.step}.")
        self._show(f"Done: model registered as {self.registered.model_version} ({model_dir}). "
                   "It is not active yet: evaluate it (Admin > Evaluate…), then activate it "
                   "(Admin > Models…).", "ok")
        self.modelRegistered.emit(self.registered.model_version)

    # -- state -----------------------------------------------------------------------

    def _set_running(self, running: bool) -> None:
        self.form.setEnabled(not running)
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.cancel_button.setText("Cancel run")
        self.resume_button.setEnabled(False if running else self._resumable is not None)

    def _show(self, text: str, kind: str) -> None:
        self.message.show_message(text, kind)

    def message_text(self) -> str:
        """The outcome or error line shown under the log (plain text)."""
        return self.message.plain


__all__ = ["RetrainDialog"]
