"""Settings: the file, the API key in the keyring, operating points, the dialog, the theme."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import keyring
import keyring.backends.fail
import keyring.errors
import numpy as np
import pytest
from keyring.backend import KeyringBackend
from PySide6.QtGui import QKeySequence, QPalette
from PySide6.QtWidgets import QDialogButtonBox

from app.settings import (
    ACTIONS,
    DEFAULT_SHORTCUTS,
    GEMINI_WARNING,
    KEYRING_SERVICE,
    KEYRING_USERNAME,
    ApiKeyError,
    KeyringUnavailable,
    Settings,
    SettingsDialog,
    SettingsError,
    api_key_status,
    apply_theme,
    config_dir,
    delete_api_key,
    duplicate_shortcuts,
    get_api_key,
    load_settings,
    normalize_key_sequence,
    rewriting_options,
    save_settings,
    set_api_key,
    settings_path,
    thresholds_for,
)
from core_model.calibration import fit_calibration
from core_model.inference import Reader
from core_model.text.rewrite.gemini import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
#: Screenshots go to a temporary folder; set CONCORD_SCREENSHOTS_DIR=docs/screenshots to refresh
#: the documentation's (tests never change tracked files otherwise).
SCREENSHOTS = Path(os.environ.get("CONCORD_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="concord-shots-"))
SECRET = "AIza-test-secret-0123456789"


class MemoryKeyring(KeyringBackend):
    """An in-memory keyring backend for the tests."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.passwords:
            raise keyring.errors.PasswordDeleteError("no such password")
        del self.passwords[(service, username)]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private configuration folder and no API key in the environment."""
    monkeypatch.setenv("CONCORD_CONFIG_DIR", str(tmp_path / "config"))
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CONCORD_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "config"


@pytest.fixture
def fake_keyring():
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def no_keyring():
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    yield
    keyring.set_keyring(previous)


def custom_settings(tmp_path: Path) -> Settings:
    return Settings(
        device="cpu",
        database_url=f"sqlite:///{tmp_path / 'other.db'}",
        sensitivity=0.95,
        rewriting_backend="gemini",
        gemini_model="gemini-2.5-pro",
        theme="dark",
        shortcuts={**DEFAULT_SHORTCUTS, "accept": "Shift+A", "fit": ""},
        autosave_seconds=10,
        model_dir=str(tmp_path),
    )


# ----------------------------------------------------------------------------- file


def test_defaults_when_there_is_no_file(isolated):
    result = load_settings()
    assert result.settings == Settings()
    assert (result.exists, result.problem, result.backup) == (False, None, None)
    assert result.path == isolated / "settings.json" == settings_path()
    assert not isolated.exists()  # reading never writes
    s = result.settings
    assert (s.device, s.database_url, s.sensitivity, s.rewriting_backend, s.theme) == (
        "auto", "", None, "rules", "system")
    assert s.autosave_seconds == 3 and s.model_dir == "" and s.model_path is None
    assert s.gemini_model == DEFAULT_MODEL
    assert s.shortcuts == {
        "next_flag": "J", "previous_flag": "K", "accept": "A", "dismiss": "D", "edit": "E",
        "sign_off": "Ctrl+Shift+S", "save": "Ctrl+S", "toggle_heatmap": "H", "invert": "I",
        "reset_view": "R", "fit": "F",
    }
    assert s.reader_device is None and s.database_url_or_none is None


def test_config_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("CONCORD_CONFIG_DIR", str(tmp_path / "elsewhere"))
    assert config_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("CONCORD_CONFIG_DIR")
    assert config_dir().name == "Concord"


def test_round_trip(isolated, tmp_path):
    settings = custom_settings(tmp_path)
    path = save_settings(settings)
    assert path == settings_path()
    data = json.loads(path.read_text("utf-8"))
    assert data["version"] == 1 and data["theme"] == "dark" and data["shortcuts"]["fit"] == ""
    result = load_settings()
    assert result.problem is None and result.exists
    assert result.settings == settings
    assert result.settings.reader_device == "cpu"
    assert [p.name for p in isolated.iterdir()] == ["settings.json"]  # no temporary file left
    save_settings(Settings())  # replaced atomically
    assert load_settings().settings == Settings()


def test_missing_keys_and_shortcuts_take_defaults(isolated):
    isolated.mkdir(parents=True)
    settings_path().write_text(json.dumps({"theme": "light", "shortcuts": {"save": "Ctrl+Alt+S"}}))
    result = load_settings()
    assert result.problem is None
    assert result.settings.theme == "light" and result.settings.device == "auto"
    assert result.settings.shortcuts == {**DEFAULT_SHORTCUTS, "save": "Ctrl+Alt+S"}


def test_corrupt_file_is_kept_and_defaults_are_used(isolated):
    isolated.mkdir(parents=True)
    path = settings_path()
    broken = b'{"theme": "dark",\n "device": '
    path.write_bytes(broken)
    result = load_settings()
    assert result.settings == Settings()
    assert result.problem is not None
    assert str(path) in result.problem and "not valid JSON" in result.problem
    assert "line 2" in result.problem and "Using the defaults" in result.problem
    assert path.read_bytes() == broken  # the user's file is not overwritten
    assert result.backup == path.with_name("settings.json.bad")
    assert result.backup.read_bytes() == broken
    assert str(result.backup) in result.problem
    # The same bad file on the next start: the same copy, not another one.
    assert load_settings().backup == result.backup
    # A different bad file does not replace the first copy.
    path.write_bytes(b"\xff\xfe not text")
    again = load_settings()
    assert again.backup == path.with_name("settings.json.bad.2") and "UTF-8" in again.problem
    assert result.backup.read_bytes() == broken


def test_unknown_key_is_named(isolated):
    isolated.mkdir(parents=True)
    original = json.dumps({"theme": "dark", "colour_scheme": "blue"})
    settings_path().write_text(original)
    result = load_settings()
    assert result.settings == Settings()
    assert "unknown setting 'colour_scheme'" in result.problem
    assert settings_path().read_text() == original
    assert result.backup.read_text() == original
    with pytest.raises(SettingsError, match="unknown shortcut action 'zoom_in'"):
        Settings.from_dict({"shortcuts": {"zoom_in": "Ctrl+="}})
    with pytest.raises(SettingsError, match="version 7"):
        Settings.from_dict({"version": 7})
    with pytest.raises(SettingsError, match="one JSON object"):
        Settings.from_dict(["theme", "dark"])  # type: ignore[arg-type]


def test_invalid_value_in_the_file_falls_back(isolated):
    isolated.mkdir(parents=True)
    settings_path().write_text(json.dumps({"autosave_seconds": "soon"}))
    result = load_settings()
    assert result.settings == Settings()
    assert "autosave_seconds" in result.problem and "'soon'" in result.problem


@pytest.mark.parametrize(("field", "value", "message"), [
    ("device", "gpu", "'device' must be one of 'auto', 'cpu', 'cuda'"),
    ("theme", "blue", "'theme'"),
    ("rewriting_backend", "openai", "'rewriting_backend'"),
    ("sensitivity", 1.5, "'sensitivity'"),
    ("sensitivity", True, "'sensitivity'"),
    ("sensitivity", "high", "'sensitivity'"),
    ("autosave_seconds", 0, "'autosave_seconds'"),
    ("autosave_seconds", 2.5, "'autosave_seconds'"),
    ("autosave_seconds", "3", "'autosave_seconds'"),
    ("database_url", "mysql://u@h/db", "unsupported database 'mysql'"),
    ("database_url", "not a url", "not a database URL"),
    ("database_url", "sqlite://", "in-memory"),
    ("gemini_model", "", "'gemini_model'"),
    ("gemini_model", "gemini 2.5", "'gemini_model'"),
    ("model_dir", 3, "'model_dir'"),
    ("shortcuts", {"accept": "J"}, "J is used by both Next flag and Accept flag"),
    ("shortcuts", {"save": "ctrl+s", "sign_off": "Ctrl+S"}, "duplicate shortcuts"),
    ("shortcuts", {"save": "Hyper+S"}, "unknown modifier 'Hyper'"),
    ("shortcuts", {"save": 5}, "shortcut 'save'"),
    ("shortcuts", "J", "'shortcuts'"),
])
def test_invalid_values_are_refused(field, value, message):
    with pytest.raises(SettingsError) as info:
        Settings(**{field: value})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_accepted_values_are_normalised(tmp_path):
    s = Settings(database_url=f"  sqlite:///{tmp_path / 'x.db'}  ", sensitivity=0.9,
                 autosave_seconds=5.0, model_dir=" ~/models/m ")  # type: ignore[arg-type]
    assert s.database_url == f"sqlite:///{tmp_path / 'x.db'}"
    assert s.autosave_seconds == 5 and isinstance(s.autosave_seconds, int)
    assert s.model_path == Path("~/models/m").expanduser()
    assert Settings(database_url="postgresql://u@db.example/concord").database_url_or_none
    assert Settings(device="cuda").needs_restart(Settings()) == ["device"]
    assert Settings(theme="dark").needs_restart(Settings()) == []


def test_key_sequences_compare_canonically():
    assert normalize_key_sequence("shift+ctrl+s") == "Ctrl+Shift+S"
    assert normalize_key_sequence("Ctrl++") == "Ctrl++"
    assert normalize_key_sequence("f5") == normalize_key_sequence("F5")
    assert normalize_key_sequence("Ctrl+K, Ctrl+C") == "Ctrl+K, Ctrl+C"
    assert normalize_key_sequence(" ") == ""
    assert duplicate_shortcuts({"a": "j", "b": "J", "c": "", "d": ""}) == [("j", ["a", "b"])]


def test_save_failure_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SettingsError, match="cannot save settings"):
        save_settings(Settings(), blocker / "settings.json")


def test_import_does_not_load_qt():
    code = ("import sys, app.settings as s; s.Settings(); "
            "assert 'PySide6' not in sys.modules, 'Qt imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ----------------------------------------------------------------------------- API key


def test_api_key_round_trip_in_the_keyring(fake_keyring, isolated, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    assert get_api_key() is None
    assert api_key_status().keyring_available and not api_key_status().has_key
    set_api_key(f"  {SECRET}\n")
    assert fake_keyring.passwords == {(KEYRING_SERVICE, KEYRING_USERNAME): SECRET}
    assert get_api_key() == SECRET
    assert api_key_status().source == "keyring"
    assert rewriting_options(custom_settings(tmp_path)) == {
        "model": "gemini-2.5-pro", "api_key": SECRET}
    assert rewriting_options(Settings()) == {}
    save_settings(custom_settings(tmp_path))
    for path in isolated.rglob("*"):
        assert SECRET not in path.read_text("utf-8", errors="replace")
    assert SECRET not in caplog.text
    with pytest.raises(SettingsError, match="unknown setting 'gemini_api_key'"):
        Settings.from_dict({"gemini_api_key": SECRET})
    assert delete_api_key() is True
    assert delete_api_key() is False
    assert get_api_key() is None
    with pytest.raises(ApiKeyError, match="empty"):
        set_api_key("   ")
    with pytest.raises(ApiKeyError, match="spaces"):
        set_api_key("two words")


def test_keyring_wins_over_the_environment(fake_keyring, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "from-google-env")
    assert get_api_key() == "from-google-env"
    assert api_key_status().source == "GOOGLE_API_KEY"
    monkeypatch.setenv("GEMINI_API_KEY", "from-gemini-env")
    assert get_api_key() == "from-gemini-env"
    set_api_key(SECRET)
    assert get_api_key() == SECRET


def test_without_a_keyring_the_environment_is_read_only(no_keyring, monkeypatch):
    assert get_api_key() is None
    status = api_key_status()
    assert not status.keyring_available and not status.has_key
    assert "No system keyring" in status.message and "GEMINI_API_KEY" in status.message
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    assert get_api_key() == SECRET
    status = api_key_status()
    assert status.source == "GEMINI_API_KEY" and "read-only" in status.message
    assert SECRET not in status.message
    with pytest.raises(KeyringUnavailable, match="set GEMINI_API_KEY or GOOGLE_API_KEY"):
        set_api_key("another")
    with pytest.raises(KeyringUnavailable):
        delete_api_key()


# ----------------------------------------------------------------------------- operating points


def synthetic_calibration(target: float, n_pos: int = 400, n_neg: int = 1200, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = np.concatenate([rng.normal(1.5, 1.0, n_pos), rng.normal(-1.0, 1.0, n_neg)])
    labels = np.concatenate([np.ones(n_pos, int), np.zeros(n_neg, int)])
    calibration = fit_calibration({"Edema": logits}, {"Edema": labels}, target_sensitivity=target)
    a, b = calibration["Edema"]["a"], calibration["Edema"]["b"]
    probs = 1 / (1 + np.exp(-(a * logits + b)))
    return calibration, probs, labels


def sensitivity_at(threshold: float, probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs[labels == 1] >= threshold).mean())


@pytest.mark.parametrize("wanted", [0.9, 0.95, 0.7])
def test_thresholds_for_reaches_the_target_sensitivity(wanted):
    calibration, probs, labels = synthetic_calibration(0.8)
    moved = thresholds_for(wanted, calibration)["Edema"]
    assert moved["operating_point"] == "estimated"
    assert moved["fitted_threshold"] == calibration["Edema"]["threshold"]
    assert abs(sensitivity_at(moved["threshold"], probs, labels) - wanted) < 0.03
    assert moved["absent_threshold"] <= moved["threshold"]
    assert (moved["a"], moved["b"]) == (calibration["Edema"]["a"], calibration["Edema"]["b"])
    # The Reader reads its operating points from this dictionary.
    reader = Reader.__new__(Reader)  # no checkpoint needed: only the operating points are read
    reader.calibration = thresholds_for(wanted, calibration)
    assert reader.threshold("Edema") == moved["threshold"]
    assert reader.absent_threshold("Edema") == moved["absent_threshold"]


def test_thresholds_for_fitted_default_and_idempotent():
    calibration, _, _ = synthetic_calibration(0.8)
    calibration["Fracture"] = {"a": 1.0, "b": 0.0, "threshold": 0.5, "absent_threshold": 0.2,
                               "positives": 2, "negatives": 50, "note": "too few validation cases"}
    fitted = thresholds_for(None, calibration)
    assert fitted["Edema"]["threshold"] == calibration["Edema"]["threshold"]
    assert fitted["Edema"]["operating_point"] == "fitted"
    assert thresholds_for(0.8, calibration)["Edema"]["operating_point"] == "fitted"
    high, higher = thresholds_for(0.9, calibration), thresholds_for(0.95, calibration)
    assert higher["Edema"]["threshold"] < high["Edema"]["threshold"] < calibration["Edema"]["threshold"]
    assert thresholds_for(0.9, higher) == high  # starts from the fitted points again
    assert thresholds_for(None, higher) == fitted
    assert high["Fracture"]["threshold"] == 0.5 and high["Fracture"]["operating_point"] == "default"
    assert "no fitted operating point" in high["Fracture"]["operating_point_note"]
    assert thresholds_for(0.9, None) == {} == thresholds_for(0.9, {})
    assert calibration["Edema"].get("operating_point") is None  # the input is not changed


# ----------------------------------------------------------------------------- dialog


@pytest.fixture
def dialog(qtbot, fake_keyring, isolated):
    dlg = SettingsDialog(Settings())
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    return dlg


def press_ok(dlg: SettingsDialog) -> None:
    dlg.buttons.button(QDialogButtonBox.StandardButton.Ok).click()


def test_dialog_shows_the_gemini_warning(dialog):
    dialog.select_tab("Checking")
    assert not dialog.gemini_warning.isVisible()
    dialog.backend_combo.setCurrentIndex(dialog.backend_combo.findData("gemini"))
    assert dialog.gemini_warning.isVisible()
    assert dialog.gemini_warning.text() == GEMINI_WARNING
    assert "Google's servers" in GEMINI_WARNING and "leaves this machine" in GEMINI_WARNING
    dialog.backend_combo.setCurrentIndex(dialog.backend_combo.findData("rules"))
    assert not dialog.gemini_warning.isVisible()


def test_dialog_refuses_duplicate_shortcuts(dialog):
    assert set(dialog.shortcut_edits) == set(ACTIONS)
    dialog.select_tab("Shortcuts")
    dialog.shortcut_edits["accept"].setKeySequence(QKeySequence("J"))
    assert dialog.shortcut_error.isVisible()
    assert "J is used by both Next flag and Accept flag" in dialog.shortcut_error.text()
    dialog.select_tab("General")
    press_ok(dialog)
    assert dialog.isVisible() and dialog.result() == 0
    assert dialog.tabs.tabText(dialog.tabs.currentIndex()) == "Shortcuts"
    assert "Duplicate shortcuts" in dialog.error_label.text()
    assert not settings_path().exists()
    dialog.shortcut_edits["accept"].setKeySequence(QKeySequence("Ctrl+Return"))
    assert not dialog.shortcut_error.isVisible()
    press_ok(dialog)
    assert not dialog.isVisible()
    assert load_settings().settings.shortcuts["accept"] == "Ctrl+Return"


def test_bad_database_url_keeps_the_dialog_open(dialog, qtbot, tmp_path):
    dialog.select_tab("Appearance")
    assert not dialog.database_restart.isVisible()
    dialog.database_edit.setText("mysql://user@host/db")
    press_ok(dialog)
    assert dialog.isVisible() and dialog.saved_settings is None
    assert dialog.tabs.tabText(dialog.tabs.currentIndex()) == "General"
    assert "unsupported database 'mysql'" in dialog.error_label.text()
    assert dialog.error_label.isVisible() and dialog.database_restart.isVisible()
    assert dialog.database_restart.text() == "Takes effect after restart."
    assert not settings_path().exists()
    good = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    dialog.database_edit.setText(good)
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
    assert dialog.device_restart.isVisible()
    with qtbot.waitSignal(dialog.settingsSaved) as saved:
        press_ok(dialog)
    assert not dialog.isVisible()
    assert saved.args[0].database_url == good
    assert dialog.restart_required == ["device", "database_url"]
    assert load_settings().settings == dialog.saved_settings


def test_dialog_checks_the_model_folder(dialog, tmp_path):
    dialog.model_dir_edit.setText(str(tmp_path / "missing"))
    press_ok(dialog)
    assert dialog.isVisible() and "is not a folder" in dialog.error_label.text()


def test_dialog_stores_the_api_key_in_the_keyring_only(dialog, fake_keyring, isolated):
    dialog.backend_combo.setCurrentIndex(dialog.backend_combo.findData("gemini"))
    dialog.sensitivity_combo.setCurrentIndex(2)
    dialog.api_key_edit.setText(SECRET)
    assert dialog.api_key_edit.echoMode() == dialog.api_key_edit.EchoMode.Password
    press_ok(dialog)
    assert not dialog.isVisible()
    assert fake_keyring.passwords[(KEYRING_SERVICE, KEYRING_USERNAME)] == SECRET
    assert dialog.api_key_edit.text() == ""
    text = settings_path().read_text("utf-8")
    assert SECRET not in text
    saved = load_settings().settings
    assert saved.rewriting_backend == "gemini" and saved.sensitivity == 0.9


def test_dialog_removes_the_stored_key_on_ok(qtbot, fake_keyring, isolated):
    set_api_key(SECRET)
    dlg = SettingsDialog(Settings())
    qtbot.addWidget(dlg)
    assert dlg.remove_key_button.isEnabled()
    dlg.remove_key_button.click()
    assert get_api_key() == SECRET  # nothing changes before OK
    dlg.reject()
    assert get_api_key() == SECRET
    dlg = SettingsDialog(Settings())
    qtbot.addWidget(dlg)
    dlg.remove_key_button.click()
    dlg.accept()
    assert get_api_key() is None and fake_keyring.passwords == {}


def test_dialog_round_trips_custom_values(qtbot, fake_keyring, tmp_path):
    settings = custom_settings(tmp_path)
    dlg = SettingsDialog(Settings.from_dict({**settings.to_dict(), "sensitivity": 0.87}),
                         path=tmp_path / "s.json", problem="Settings not loaded: test.")
    qtbot.addWidget(dlg)
    assert dlg.problem_label.text() == "Settings not loaded: test."
    assert dlg.current_settings() == Settings.from_dict({**settings.to_dict(), "sensitivity": 0.87})
    assert "87%" in dlg.sensitivity_combo.currentText()
    dlg.accept()
    assert (tmp_path / "s.json").exists() and dlg.restart_required == []


def test_dialog_without_a_keyring(qtbot, no_keyring, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    dlg = SettingsDialog(Settings())
    qtbot.addWidget(dlg)
    assert not dlg.api_key_edit.isEnabled()
    assert "GEMINI_API_KEY" in dlg.api_key_status.text() and SECRET not in dlg.api_key_status.text()


# ----------------------------------------------------------------------------- theme


def test_theme_applies_a_dark_palette(qapp):
    before = qapp.palette().color(QPalette.ColorRole.Window)
    try:
        apply_theme(qapp, "dark")
        assert qapp.style().name().lower() == "fusion"
        window = qapp.palette().color(QPalette.ColorRole.Window)
        text = qapp.palette().color(QPalette.ColorRole.WindowText)
        assert window.lightness() < 80 and text.lightness() > 180
        apply_theme(qapp, "light")
        assert qapp.palette().color(QPalette.ColorRole.Window).lightness() > 180
        with pytest.raises(ValueError, match="unknown theme"):
            apply_theme(qapp, "sepia")
    finally:
        apply_theme(qapp, "system")
    assert qapp.palette().color(QPalette.ColorRole.Window) == before


# ----------------------------------------------------------------------------- screenshot


def test_screenshot_of_the_checking_tab(qtbot, fake_keyring):
    set_api_key(SECRET)
    dlg = SettingsDialog(Settings(rewriting_backend="gemini"))
    assert dlg.remove_key_button.isEnabled() and dlg.api_key_edit.text() == ""
    qtbot.addWidget(dlg)
    dlg.resize(640, 500)
    dlg.show()
    qtbot.waitExposed(dlg)
    dlg.select_tab("Checking")
    qtbot.wait(50)
    assert dlg.gemini_warning.isVisible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert dlg.grab().save(str(SCREENSHOTS / "settings.png"))


def test_dialog_offers_the_models_flag_modes_with_their_figures(qtbot, fake_keyring, isolated):
    from core_model.operating_points import load_modes

    root = Path(__file__).resolve().parents[1]
    modes = load_modes(root / "resources" / "models" / "concord-tiny-demo")
    assert set(modes) == {"few", "balanced", "sensitive"}
    dlg = SettingsDialog(Settings(flag_mode="sensitive"), modes=modes)
    qtbot.addWidget(dlg)
    items = [dlg.mode_combo.itemText(i) for i in range(dlg.mode_combo.count())]
    assert [i.split(":")[0] for i in items] == ["Few flags", "Balanced", "Sensitive"]
    assert all("of truthful drafts flagged" in i and "errors caught (validation)" in i for i in items)
    assert dlg.mode_combo.isEnabled() and dlg.mode_combo.currentData() == "sensitive"
    assert dlg.sensitivity_row.isHidden()  # the modes replace the sensitivity
    dlg.mode_combo.setCurrentIndex(0)
    assert dlg.current_settings().flag_mode == "few"

    without = SettingsDialog(Settings(), modes={})  # a model without validated modes
    qtbot.addWidget(without)
    assert not without.mode_combo.isEnabled() and not without.sensitivity_row.isHidden()
    assert without.current_settings().flag_mode == "balanced"
    with pytest.raises(SettingsError, match="flag_mode"):
        Settings(flag_mode="loud")
