"""``SettingsDialog``: the settings in four tabs, checked before they are saved.

OK checks every value; a problem is shown in red above the buttons, the tab
that holds it is brought forward, and the dialog stays open.  When everything
is valid the API key (if one was typed) goes to the keyring, the settings are
written to the settings file, ``settingsSaved(Settings)`` is emitted and the
dialog closes.  The dialog applies nothing to the running application: the
main window does that with the saved settings (see ``docs/settings.md``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QKeySequence, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QKeySequenceEdit,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.settings.api_key import ApiKeyError, api_key_status, delete_api_key, set_api_key
from app.settings.store import save_settings
from app.settings.values import (
    ACTIONS,
    AUTOSAVE_RANGE,
    DEFAULT_GEMINI_MODEL,
    DEFAULT_SHORTCUTS,
    FLAG_MODES,
    SENSITIVITY_PRESETS,
    Settings,
    SettingsError,
    check_database_url,
    describe_duplicates,
    duplicate_shortcuts,
)
from core_model.operating_points import MODES, Mode

GEMINI_WARNING = (
    "Gemini sends report text (de-identified) to Google's servers; it leaves this machine."
)
RESTART_NOTE = "Takes effect after restart."
TABS = ("General", "Checking", "Appearance", "Shortcuts")
DEVICE_LABELS = {
    "auto": "Automatic (the GPU when there is one)",
    "cpu": "CPU",
    "cuda": "GPU (CUDA)",
}
BACKEND_LABELS = {
    "rules": "Rules (offline, on this computer)",
    "gemini": "Gemini (Google, online)",
}
THEME_LABELS = {"system": "Same as the system", "light": "Light", "dark": "Dark"}
GEMINI_MODELS = (DEFAULT_GEMINI_MODEL, "gemini-2.5-pro", "gemini-2.5-flash-lite")
FITTED_LABEL = "As fitted with the model (recommended)"
ERROR_COLOR = "#d32f2f"
WARNING_STYLE = (
    "QLabel { background: #fff4e5; color: #5d3a00; border: 1px solid #f0a030; "
    "border-radius: 4px; padding: 8px; font-weight: 600; }"
)
NOTE_STYLE = "QLabel { color: #b26a00; }"
DUPLICATE_BACKGROUND = QColor("#ffd6d6")
DUPLICATE_TEXT = QColor("#5a0000")

#: Which tab holds each setting, for bringing a problem forward.
FIELD_TABS = {
    "device": "General", "database_url": "General", "autosave_seconds": "General",
    "model_dir": "General", "sensitivity": "Checking", "flag_mode": "Checking",
    "rewriting_backend": "Checking", "gemini_model": "Checking", "api_key": "Checking", "theme": "Appearance",
    "shortcuts": "Shortcuts",
}


class SettingsDialog(QDialog):
    """Edits a :class:`Settings`; OK validates, stores the API key, saves and closes.

    ``path``: the settings file (default: :func:`app.settings.settings_path`).
    ``problem``: a message shown at the top, e.g. ``LoadResult.problem`` when
    the file could not be read.  After OK, ``saved_settings`` holds what was
    saved and ``restart_required`` the names of the changed settings that need
    a restart (``device``, ``database_url``, ``model_dir``).
    """

    settingsSaved = Signal(object)

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        problem: str | None = None,
        modes: Mapping[str, Mode] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Concord settings")
        #: The flag modes of the model the window checks with ({}: it has none).
        self.modes = dict(modes or {})
        self.initial = settings or Settings()
        self.path = Path(path) if path is not None else None
        self.saved_settings: Settings | None = None
        self.restart_required: list[str] = []
        self._remove_key = False

        layout = QVBoxLayout(self)
        self.problem_label = QLabel(problem or "")
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet(WARNING_STYLE)
        self.problem_label.setVisible(bool(problem))
        layout.addWidget(self.problem_label)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._general_tab(), "General")
        self.tabs.addTab(self._checking_tab(), "Checking")
        self.tabs.addTab(self._appearance_tab(), "Appearance")
        self.tabs.addTab(self._shortcuts_tab(), "Shortcuts")
        layout.addWidget(self.tabs, 1)

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(f"QLabel {{ color: {ERROR_COLOR}; font-weight: 600; }}")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        layout.addWidget(self.error_label)

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        self._load(self.initial)
        self.resize(640, 520)

    # ------------------------------------------------------------------ tabs

    def _general_tab(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        self.device_combo = QComboBox()
        for value, label in DEVICE_LABELS.items():
            self.device_combo.addItem(label, value)
        self.device_restart = _note(RESTART_NOTE)
        self.device_combo.currentIndexChanged.connect(self._update_restart_notes)
        form.addRow("Model runs on", _stack(self.device_combo, self.device_restart))

        self.database_edit = QLineEdit()
        self.database_edit.setClearButtonEnabled(True)
        self.database_edit.setPlaceholderText(f"Default: {_default_database()}")
        self.database_restart = _note(RESTART_NOTE)
        self.database_edit.textChanged.connect(self._update_restart_notes)
        help_db = _help("Empty: the per-user SQLite file (or $CONCORD_DATABASE_URL). Otherwise "
                        "sqlite:///PATH or postgresql+psycopg://user@host:5432/db; keep a "
                        "PostgreSQL password in ~/.pgpass, not here (this file is plain text).")
        form.addRow("Database URL", _stack(self.database_edit, help_db, self.database_restart))

        self.autosave_spin = QSpinBox()
        self.autosave_spin.setRange(*AUTOSAVE_RANGE)
        self.autosave_spin.setSuffix(" s")
        form.addRow("Autosave every", self.autosave_spin)

        self.model_dir_edit = QLineEdit()
        self.model_dir_edit.setClearButtonEnabled(True)
        self.model_dir_edit.setPlaceholderText("Empty: the active model of the model registry")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_model_dir)
        row = QHBoxLayout()
        row.addWidget(self.model_dir_edit, 1)
        row.addWidget(browse)
        holder = QWidget()
        holder.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)
        self.model_dir_restart = _note(RESTART_NOTE)
        self.model_dir_edit.textChanged.connect(self._update_restart_notes)
        form.addRow("Model folder", _stack(holder, self.model_dir_restart))
        return page

    def _checking_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        form = QFormLayout()
        self.mode_combo = QComboBox()
        self.mode_combo.setAccessibleName("Flag mode")
        for name in FLAG_MODES:
            mode = self.modes.get(name)
            self.mode_combo.addItem(mode.describe() if mode is not None else MODES[name][0], name)
        self.mode_combo.setEnabled(bool(self.modes))
        mode_help = _help(
            "How many flags the check raises. Each mode was fitted on the model's validation "
            "drafts: the share of truthful drafts that carried any flag, and the share of injected "
            "errors (a flipped negation, a left-out finding, a false finding) it caught."
            if self.modes else
            "The model in use has no validated flag modes (fit them with concord "
            "operating-points); its calibration's operating points are used, at the sensitivity "
            "below.")
        form.addRow("Flag mode", _stack(self.mode_combo, mode_help))
        self.sensitivity_combo = QComboBox()
        self._sensitivities: list[float | None] = [None, *SENSITIVITY_PRESETS]
        self.sensitivity_combo.addItems([FITTED_LABEL, *SENSITIVITY_PRESETS.values()])
        self.sensitivity_row = _stack(self.sensitivity_combo, _help(
            "For a model without flag modes: the share of the findings shown by the image that "
            "the check aims to flag. Points other than the model's fitted one are estimated from "
            "its calibration."))
        form.addRow("Flag sensitivity", self.sensitivity_row)
        form.setRowVisible(self.sensitivity_row, not self.modes)

        self.backend_combo = QComboBox()
        for value, label in BACKEND_LABELS.items():
            self.backend_combo.addItem(label, value)
        self.backend_combo.currentIndexChanged.connect(self._update_gemini)
        form.addRow("Rewriting", self.backend_combo)
        layout.addLayout(form)

        self.gemini_warning = QLabel(GEMINI_WARNING)
        self.gemini_warning.setWordWrap(True)
        self.gemini_warning.setStyleSheet(WARNING_STYLE)
        self.gemini_warning.setAccessibleName("Privacy warning")
        layout.addWidget(self.gemini_warning)

        self.gemini_group = QGroupBox("Gemini")
        gemini_form = QFormLayout(self.gemini_group)
        self.gemini_model_combo = QComboBox()
        self.gemini_model_combo.setEditable(True)
        self.gemini_model_combo.addItems(GEMINI_MODELS)
        gemini_form.addRow("Model", self.gemini_model_combo)
        self.api_key_edit = QLineEdit()
        self.api_key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.api_key_edit.setClearButtonEnabled(True)
        self.remove_key_button = QPushButton("Remove stored key")
        self.remove_key_button.clicked.connect(self._mark_key_for_removal)
        key_row = QHBoxLayout()
        key_row.setContentsMargins(0, 0, 0, 0)
        key_row.addWidget(self.api_key_edit, 1)
        key_row.addWidget(self.remove_key_button)
        key_holder = QWidget()
        key_holder.setLayout(key_row)
        self.api_key_status = _help("")
        gemini_form.addRow("API key", _stack(key_holder, self.api_key_status))
        layout.addWidget(self.gemini_group)
        layout.addStretch(1)
        return page

    def _appearance_tab(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        self.theme_combo = QComboBox()
        for value, label in THEME_LABELS.items():
            self.theme_combo.addItem(label, value)
        form.addRow("Theme", self.theme_combo)
        return page

    def _shortcuts_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.shortcut_table = QTableWidget(len(ACTIONS), 2)
        self.shortcut_table.setHorizontalHeaderLabels(["Action", "Shortcut"])
        self.shortcut_table.verticalHeader().hide()
        self.shortcut_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.shortcut_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.shortcut_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.Stretch)
        self.shortcut_table.horizontalHeader().setSectionResizeMode(
            1, QHeaderView.ResizeMode.Stretch)
        self.shortcut_edits: dict[str, QKeySequenceEdit] = {}
        for row, (action, (label, _default)) in enumerate(ACTIONS.items()):
            item = QTableWidgetItem(label)
            item.setData(Qt.ItemDataRole.UserRole, action)
            self.shortcut_table.setItem(row, 0, item)
            edit = QKeySequenceEdit()
            if hasattr(edit, "setMaximumSequenceLength"):  # Qt 6.5+
                edit.setMaximumSequenceLength(1)
            if hasattr(edit, "setClearButtonEnabled"):
                edit.setClearButtonEnabled(True)
            edit.setObjectName(f"shortcut_{action}")
            edit.keySequenceChanged.connect(lambda _sequence: self._check_shortcuts())
            self.shortcut_table.setCellWidget(row, 1, edit)
            self.shortcut_edits[action] = edit
        layout.addWidget(self.shortcut_table, 1)
        self.shortcut_error = QLabel()
        self.shortcut_error.setWordWrap(True)
        self.shortcut_error.setStyleSheet(f"QLabel {{ color: {ERROR_COLOR}; font-weight: 600; }}")
        self.shortcut_error.hide()
        layout.addWidget(self.shortcut_error)
        layout.addWidget(_help("Keys without Ctrl or Alt act in the flags list and the image, "
                               "never while you type in the report. Clear a shortcut to leave "
                               "the action without one."))
        defaults = QPushButton("Restore defaults")
        defaults.clicked.connect(lambda: self.set_shortcuts(DEFAULT_SHORTCUTS))
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(defaults)
        layout.addLayout(row)
        return page

    # ------------------------------------------------------------------ values

    def _load(self, settings: Settings) -> None:
        _select(self.device_combo, settings.device)
        self.database_edit.setText(settings.database_url)
        self.autosave_spin.setValue(settings.autosave_seconds)
        self.model_dir_edit.setText(settings.model_dir)
        self.set_sensitivity(settings.sensitivity)
        _select(self.mode_combo, settings.flag_mode)
        _select(self.backend_combo, settings.rewriting_backend)
        self.gemini_model_combo.setCurrentText(settings.gemini_model)
        _select(self.theme_combo, settings.theme)
        self.set_shortcuts(settings.shortcuts)
        self._refresh_key_status()
        self._update_gemini()
        self._update_restart_notes()

    def set_sensitivity(self, value: float | None) -> None:
        """Select the sensitivity ``value`` (None: the fitted points), adding it if it is custom."""
        if value not in self._sensitivities:
            self._sensitivities.append(value)
            self.sensitivity_combo.addItem(f"Custom: catch {value:.0%} of findings")
        self.sensitivity_combo.setCurrentIndex(self._sensitivities.index(value))

    def sensitivity(self) -> float | None:
        return self._sensitivities[max(self.sensitivity_combo.currentIndex(), 0)]

    def set_shortcuts(self, shortcuts: dict[str, str]) -> None:
        """Show ``shortcuts`` (action -> key sequence text) in the table."""
        for action, edit in self.shortcut_edits.items():
            edit.blockSignals(True)
            edit.setKeySequence(QKeySequence.fromString(
                shortcuts.get(action, ""), QKeySequence.SequenceFormat.PortableText))
            edit.blockSignals(False)
        self._check_shortcuts()

    def shortcuts(self) -> dict[str, str]:
        """The shortcuts as edited, in Qt's portable text."""
        return {action: edit.keySequence().toString(QKeySequence.SequenceFormat.PortableText)
                for action, edit in self.shortcut_edits.items()}

    def current_settings(self) -> Settings:
        """The settings as edited; :class:`SettingsError` if a value is not accepted."""
        return Settings(
            device=self.device_combo.currentData(),
            database_url=self.database_edit.text().strip(),
            sensitivity=self.sensitivity(),
            flag_mode=self.mode_combo.currentData(),
            rewriting_backend=self.backend_combo.currentData(),
            gemini_model=self.gemini_model_combo.currentText().strip(),
            theme=self.theme_combo.currentData(),
            shortcuts=self.shortcuts(),
            autosave_seconds=self.autosave_spin.value(),
            model_dir=self.model_dir_edit.text().strip(),
        )

    def select_tab(self, name: str) -> None:
        self.tabs.setCurrentIndex(TABS.index(name))

    # ------------------------------------------------------------------ OK

    def accept(self) -> None:
        """Validate, store the API key, save and close; on a problem show it and stay open."""
        problem = self._validate()
        if problem is not None:
            self._show_error(*problem)
            return
        try:
            settings = self.current_settings()
        except SettingsError as exc:
            self._show_error(str(exc), None)
            return
        try:
            key = self.api_key_edit.text().strip()
            if key:
                set_api_key(key)
            elif self._remove_key:
                delete_api_key()
        except ApiKeyError as exc:
            self._show_error(f"API key: {exc}", "api_key", self.api_key_edit)
            return
        self.api_key_edit.clear()
        self._remove_key = False
        try:
            save_settings(settings, self.path)
        except SettingsError as exc:
            self._show_error(str(exc), None)
            return
        self.saved_settings = settings
        self.restart_required = settings.needs_restart(self.initial)
        self.error_label.hide()
        self.settingsSaved.emit(settings)
        super().accept()

    def _validate(self) -> tuple[str, str, QWidget] | None:
        """(message, setting, widget) for the first problem, else None."""
        url = self.database_edit.text().strip()
        if url:
            try:
                check_database_url(url)
            except SettingsError as exc:
                return str(exc), "database_url", self.database_edit
        folder = self.model_dir_edit.text().strip()
        if folder and not Path(folder).expanduser().is_dir():
            return (f"setting 'model_dir': {folder} is not a folder", "model_dir",
                    self.model_dir_edit)
        duplicates = duplicate_shortcuts(self.shortcuts())
        if duplicates:
            return (f"Duplicate shortcuts: {describe_duplicates(duplicates)}", "shortcuts",
                    self.shortcut_table)
        return None

    def _show_error(self, message: str, setting: str | None, widget: QWidget | None = None) -> None:
        self.error_label.setText(message)
        self.error_label.show()
        if setting in FIELD_TABS:
            self.select_tab(FIELD_TABS[setting])
        if widget is not None:
            widget.setFocus()

    # ------------------------------------------------------------------ live updates

    def _update_gemini(self) -> None:
        gemini = self.backend_combo.currentData() == "gemini"
        self.gemini_warning.setVisible(gemini)

    def _update_restart_notes(self) -> None:
        self.device_restart.setVisible(self.device_combo.currentData() != self.initial.device)
        self.database_restart.setVisible(
            self.database_edit.text().strip() != self.initial.database_url)
        self.model_dir_restart.setVisible(
            self.model_dir_edit.text().strip() != self.initial.model_dir)

    def _check_shortcuts(self) -> None:
        shortcuts = self.shortcuts()
        duplicates = duplicate_shortcuts(shortcuts)
        clashing = {action for _, actions in duplicates for action in actions}
        for row in range(self.shortcut_table.rowCount()):
            item = self.shortcut_table.item(row, 0)
            action = item.data(Qt.ItemDataRole.UserRole)
            clash = action in clashing  # dark text on the pale red, whatever the theme
            item.setBackground(QBrush(DUPLICATE_BACKGROUND) if clash else QBrush())
            item.setForeground(QBrush(DUPLICATE_TEXT) if clash else QBrush())
        self.shortcut_error.setText(
            f"Duplicate shortcuts: {describe_duplicates(duplicates)}" if duplicates else "")
        self.shortcut_error.setVisible(bool(duplicates))

    def _refresh_key_status(self) -> None:
        status = api_key_status()
        self.api_key_status.setText(status.message)
        self.api_key_edit.setEnabled(status.keyring_available)
        self.remove_key_button.setEnabled(status.keyring_available and status.source == "keyring")
        if not status.keyring_available:
            self.api_key_edit.setPlaceholderText("No system keyring on this computer")
        elif status.source == "keyring":
            self.api_key_edit.setPlaceholderText("Stored in the keyring; type a new key to replace it")
        else:
            self.api_key_edit.setPlaceholderText("Paste your Gemini API key")

    def _mark_key_for_removal(self) -> None:
        self._remove_key = True
        self.api_key_edit.clear()
        self.remove_key_button.setEnabled(False)
        self.api_key_status.setText("The stored key will be removed when you press OK.")

    def _browse_model_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder", self.model_dir_edit.text())
        if folder:
            self.model_dir_edit.setText(folder)


def _default_database() -> str:
    try:
        from app.storage import default_database_path

        return str(default_database_path())
    except Exception:  # only a placeholder text
        return "the per-user SQLite file"


def _select(combo: QComboBox, value: object) -> None:
    index = combo.findData(value)
    combo.setCurrentIndex(max(index, 0))


def _note(text: str) -> QLabel:
    label = QLabel(text)
    label.setStyleSheet(NOTE_STYLE)
    label.hide()
    return label


def _help(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    return label


def _stack(*widgets: QWidget) -> QWidget:
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(3)
    for widget in widgets:
        layout.addWidget(widget)
    return holder
