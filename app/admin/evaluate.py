"""Admin > Evaluate…: run ``concord eval`` on a registered model and record the verdict.

The child writes ``<model dir>/eval/results.json`` (and the report and plots
beside it). The dialog then shows the new model's metrics beside the active
model's stored evaluation (``training.evalgate.compare_results``) with the
minimums each must reach (``training.evalgate.passes``), and stores the
evaluation and its verdict with the model (``storage.set_evaluation``). Only a
model whose evaluation passed can be activated (Admin > Models…).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.admin.commands import DEVICES, CommandBuilder, EvalRequest, concord_command
from app.admin.fields import LogView, MessageLine, PathField
from app.admin.process import ChildProcess
from app.admin.registry import (
    MIN_GATE_CASES,
    ComparisonRow,
    Verdict,
    judge,
    load_results,
    model_status,
    record_evaluation,
    require_admin,
)
from app.storage import Role, Storage, StorageError, UserRecord

#: Suites of ``concord eval --suite all``.
ALL_SUITES = ("cxr_align", "zero_shot", "retrieval", "ncd", "adversarial", "pointing", "consistency")
_PROGRESS_LINE = re.compile(r"^concord eval: (calibrated on|embedded|\w+ done)\b")
COLUMNS = ("Metric", "Active", "New", "New: 95% interval", "Difference", "Bound", "Meets")
BETTER, WORSE = QColor(27, 110, 32), QColor(164, 22, 26)


class EvaluateDialog(QDialog):
    """Evaluate a registered model and record whether it may be activated (admins only).

    ``model_version`` preselects a model; ``thresholds`` are the minimums
    and ``maximums`` the maximums (defaults: the registry's gate), each resting on at least
    ``min_cases`` cases;
    (default :data:`app.admin.registry.DEFAULT_THRESHOLDS`); ``data_root``
    prefills the dataset. ``command`` and ``environment`` as in
    :class:`~app.admin.retrain.RetrainDialog`.

    Signals: ``evaluated(str model_version, bool passed)`` once the verdict is
    stored; ``runEnded(str outcome)`` with ``evaluated``, ``cancelled`` or ``failed``.
    """

    evaluated = Signal(str, bool)
    runEnded = Signal(str)

    def __init__(
        self,
        storage: Storage,
        role: str | Role | UserRecord | None,
        parent: QWidget | None = None,
        *,
        model_version: str | None = None,
        thresholds: Mapping[str, float] | None = None,
        maximums: Mapping[str, float] | None = None,
        min_cases: int = MIN_GATE_CASES,
        data_root: str | Path | None = None,
        command: CommandBuilder | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        require_admin(role, "evaluating a model")
        super().__init__(parent)
        self.storage = storage
        self.thresholds = dict(thresholds) if thresholds is not None else None
        self.maximums = dict(maximums) if maximums is not None else None
        self.min_cases = min_cases
        self.command = command or concord_command
        self.environment = dict(environment) if environment is not None else None
        self.verdict: Verdict | None = None
        self.results: dict[str, Any] | None = None
        self.outcome: str | None = None
        self._request: EvalRequest | None = None
        self._version: str | None = None
        self._cancelled = False
        self._done_steps = 0
        self._total_steps = 0
        self.process = ChildProcess(self)
        self.process.stdoutLine.connect(lambda line: self.log.add_line(line))
        self.process.stderrLine.connect(self._stderr_line)
        self.process.ended.connect(self._ended)
        self.setWindowTitle("Evaluate a model")
        self._build()
        self.reload_models(model_version)
        if data_root is not None:
            self.data_field.setText(str(data_root))
        self._set_running(False)

    # -- layout ----------------------------------------------------------------------

    def _build(self) -> None:
        self.model_box = QComboBox()
        self.data_field = PathField("dir", placeholder="dataset root with validate and test splits",
                                    caption="Dataset root")
        self.suite_edit = QLineEdit("all")
        self.suite_edit.setToolTip("all, or a comma list of: " + ", ".join(ALL_SUITES))
        self.device_box = QComboBox()
        self.device_box.addItems(DEVICES)
        self.form = QGroupBox("Evaluation")
        form = QFormLayout(self.form)
        form.addRow("Model", self.model_box)
        form.addRow("Data root", self.data_field)
        form.addRow("Suites", self.suite_edit)
        form.addRow("Device", self.device_box)

        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("idle")
        self.status_label = QLabel("Not started.")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.verdict_label = QLabel()
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.log = LogView()
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.log)
        splitter.setSizes([300, 120])
        self.message = MessageLine()

        self.run_button = QPushButton("Run evaluation")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.verdict_label)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        self.resize(760, 640)

    def reload_models(self, select: str | None = None) -> None:
        """Fill the model list from storage; ``select`` (else the newest) is chosen."""
        current = select or self.model_box.currentData()
        self.model_box.clear()
        try:
            models = self.storage.models()
        except StorageError as exc:
            self._show(f"cannot read the model registry: {exc}", "error")
            return
        for record in reversed(models):  # newest first
            self.model_box.addItem(f"{record.model_version}  ({record.variant}, "
                                   f"{model_status(record)})", record.model_version)
        index = self.model_box.findData(current) if current else 0
        self.model_box.setCurrentIndex(max(index, 0))

    # -- actions ---------------------------------------------------------------------

    def running(self) -> bool:
        return self.process.running()

    def start(self) -> bool:
        """Run ``concord eval`` on the chosen model; False (reason shown) if it cannot start."""
        if self.running():
            return False
        version = self.model_box.currentData()
        if not version:
            self._show("no registered model to evaluate; train one first (Admin > Retrain…)", "error")
            return False
        data = self.data_field.path()
        if data is None:
            self._show("choose the dataset folder", "error")
            return False
        try:
            record = self.storage.model(version)
            request = EvalRequest(Path(record.path), data.resolve(),
                                  suite=self.suite_edit.text().strip() or "all",
                                  device=self.device_box.currentText())
            request.check()
            request.results_path.parent.mkdir(parents=True, exist_ok=True)
        except (ValueError, StorageError) as exc:
            self._show(str(exc), "error")
            return False
        except OSError as exc:
            self._show(f"cannot create {exc.filename}: {exc.strerror}", "error")
            return False
        args = request.arguments()
        program, arguments = self.command(args)
        self._request, self._version = request, version
        self._cancelled = False
        self.outcome = None
        self.verdict, self.results = None, None
        suites = request.suite.split(",")
        self._total_steps = 2 + (len(ALL_SUITES) if "all" in suites else len(suites))
        self._done_steps = 0
        self.progress_bar.setRange(0, self._total_steps)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%v / %m steps")
        self.table.setRowCount(0)
        self.verdict_label.clear()
        self.message.clear_message()
        self.log.clear()
        self.log.add_line("$ concord " + " ".join(args))
        self.status_label.setText(f"Evaluating {version}…")
        self._set_running(True)
        self.process.start(program, arguments, environment=self.environment)
        return True

    def cancel(self) -> None:
        """Stop the evaluation (nothing is recorded; ``concord eval`` writes its files last)."""
        if self.running():
            self._cancelled = True
            self.process.terminate()

    def reject(self) -> None:
        if self.running():
            self.cancel()
            self.process.wait(10_000)
        super().reject()

    # -- child output ----------------------------------------------------------------

    def _stderr_line(self, line: str) -> None:
        self.log.add_line(line, error=True)
        if _PROGRESS_LINE.match(line):
            self._done_steps = min(self._done_steps + 1, self._total_steps)
            self.progress_bar.setValue(self._done_steps)
            self.status_label.setText(line.removeprefix("concord eval: "))

    def _ended(self, code: int, crashed: bool) -> None:
        self._set_running(False)
        request, version = self._request, self._version
        assert request is not None and version is not None
        if self._cancelled:
            self.outcome = "cancelled"
            self.progress_bar.setFormat("cancelled")
            self._show("evaluation cancelled; nothing was recorded", "warning")
        elif code != 0 or crashed:
            self.outcome = "failed"
            self.progress_bar.setFormat("failed")
            lines = self.process.last_error_lines()
            why = f"exit status {code}" if not crashed else "the process did not finish"
            self._show(f"Evaluation failed ({why}):\n" + ("\n".join(lines) or "(no error output)"),
                       "error")
        else:
            self.progress_bar.setValue(self._total_steps)
            self.progress_bar.setFormat("done")
            try:
                results = load_results(request.results_path)
            except ValueError as exc:
                self.outcome = "failed"
                self._show(str(exc), "error")
            else:
                self.show_results(version, results, request.results_path)
        self.runEnded.emit(self.outcome or "failed")

    def show_results(self, model_version: str, results: Mapping[str, Any],
                     results_path: str | Path | None = None) -> Verdict | None:
        """Show ``results`` beside the active model's, store the verdict; the verdict or None."""
        try:
            active = self.storage.active_model()
            verdict = judge(results, active, self.thresholds, self.maximums, self.min_cases)
        except StorageError as exc:
            self.outcome = "failed"
            self._show(f"cannot read the active model: {exc}", "error")
            return None
        self.results, self.verdict = dict(results), verdict
        self._fill_table(verdict, model_version)
        color = BETTER if verdict.passed else WORSE
        self.verdict_label.setText(f'<b style="color:{color.name()}">{verdict.describe()}</b>')
        try:
            record_evaluation(self.storage, model_version, results, verdict, results_path)
        except StorageError as exc:
            self.outcome = "failed"
            self._show(f"the verdict could not be recorded: {exc}", "error")
            return verdict
        self.outcome = "evaluated"
        self.status_label.setText(f"Evaluated {model_version}.")
        if verdict.passed:
            self._show(f"{model_version} passed; activate it in Admin > Models…", "ok")
        elif verdict.undecided:
            self._show(f"{model_version} was not passed: its evaluation rests on too few cases "
                       "to tell; evaluate it on a larger test split", "warning")
        else:
            self._show(f"{model_version} did not pass; it cannot be activated", "warning")
        self.reload_models(model_version)
        self.evaluated.emit(model_version, verdict.passed)
        return verdict

    def _fill_table(self, verdict: Verdict, model_version: str) -> None:
        active = verdict.active_version or "no active model"
        self.table.setHorizontalHeaderLabels(
            ["Metric", f"Active: {active}", f"New: {model_version}", *COLUMNS[3:]])
        self.table.setRowCount(len(verdict.rows))
        for i, row in enumerate(verdict.rows):
            meets = row.meets_minimum
            bound = ("" if row.minimum is None and row.maximum is None
                     else f">= {row.minimum:g}" if row.minimum is not None else f"<= {row.maximum:g}")
            cells = [row.metric, _num(row.active), _num(row.new), _interval(row),
                     _num(row.difference, signed=True), bound,
                     "" if meets is None else ("yes" if meets else "NO")]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if j == 4 and row.difference:
                    # a false-flag rate is better lower
                    better = (row.difference < 0) == (row.maximum is not None)
                    item.setForeground(QBrush(BETTER if better else WORSE))
                if j == 6 and meets is not None:
                    item.setForeground(QBrush(BETTER if meets else WORSE))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)

    def table_rows(self) -> list[list[str]]:
        """The comparison table's text, row by row (for tests and copying)."""
        return [[self.table.item(i, j).text() if self.table.item(i, j) else ""
                 for j in range(self.table.columnCount())] for i in range(self.table.rowCount())]

    # -- state -----------------------------------------------------------------------

    def _set_running(self, running: bool) -> None:
        self.form.setEnabled(not running)
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _show(self, text: str, kind: str) -> None:
        self.message.show_message(text, kind)

    def message_text(self) -> str:
        return self.message.plain


def _interval(row: ComparisonRow) -> str:
    """``0.912 to 0.940 (n 1,459)``: the new value's 95% interval and sample size."""
    if row.low is None or row.high is None:
        return f"n {row.n:,}" if row.n else ""
    return f"{row.low:.3f} to {row.high:.3f} (n {row.n:,})"


def _num(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


__all__ = ["EvaluateDialog"]
