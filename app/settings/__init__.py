"""User settings: the settings file, the Gemini API key in the keyring, the dialog, the theme.

* :mod:`~app.settings.values`: :class:`Settings` (no Qt), its defaults and checks;
* :mod:`~app.settings.store`: :func:`load_settings` / :func:`save_settings`, the JSON
  file in the per-user configuration folder (``$CONCORD_CONFIG_DIR`` overrides it);
* :mod:`~app.settings.api_key`: :func:`get_api_key`, :func:`set_api_key`,
  :func:`delete_api_key` (the OS keyring; the environment when there is none);
* :mod:`~app.settings.operating_points`: :func:`thresholds_for`, the sensitivity
  setting as operating points for ``Reader.calibration``;
* :mod:`~app.settings.dialog`: :class:`SettingsDialog` (Qt);
* :mod:`~app.settings.theme`: :func:`apply_theme` (Qt).

``import app.settings`` does not import Qt: the dialog and the theme are loaded
on first use of their names.  See ``docs/settings.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.settings.api_key import (
    ENVIRONMENT_VARIABLES,
    KEYRING_SERVICE,
    KEYRING_USERNAME,
    ApiKeyError,
    ApiKeyStatus,
    KeyringUnavailable,
    api_key_status,
    delete_api_key,
    get_api_key,
    set_api_key,
)
from app.settings.operating_points import thresholds_for
from app.settings.store import (
    CONFIG_DIR_ENVIRONMENT_VARIABLE,
    LoadResult,
    config_dir,
    load_settings,
    save_settings,
    settings_path,
)
from app.settings.values import (
    ACTIONS,
    DEFAULT_GEMINI_MODEL,
    DEFAULT_SHORTCUTS,
    DEVICES,
    RESTART_FIELDS,
    REWRITING_BACKENDS,
    SENSITIVITY_PRESETS,
    THEMES,
    Settings,
    SettingsError,
    duplicate_shortcuts,
    normalize_key_sequence,
)

if TYPE_CHECKING:
    from app.settings.dialog import GEMINI_WARNING, SettingsDialog
    from app.settings.theme import apply_theme, dark_palette

_QT_NAMES = {
    "SettingsDialog": "app.settings.dialog",
    "GEMINI_WARNING": "app.settings.dialog",
    "apply_theme": "app.settings.theme",
    "dark_palette": "app.settings.theme",
}


def __getattr__(name: str) -> Any:
    module = _QT_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'app.settings' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def rewriting_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``core_model.text.rewrite.get_backend(settings.rewriting_backend, ...)``.

    For Gemini: the model and, when there is one, the key from :func:`get_api_key`
    (without one the backend reads the environment itself and says what is missing).
    """
    if settings.rewriting_backend != "gemini":
        return {}
    options: dict[str, Any] = {"model": settings.gemini_model}
    key = get_api_key()
    if key:
        options["api_key"] = key
    return options


__all__ = [
    "ACTIONS",
    "CONFIG_DIR_ENVIRONMENT_VARIABLE",
    "DEFAULT_GEMINI_MODEL",
    "DEFAULT_SHORTCUTS",
    "DEVICES",
    "ENVIRONMENT_VARIABLES",
    "GEMINI_WARNING",
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "RESTART_FIELDS",
    "REWRITING_BACKENDS",
    "SENSITIVITY_PRESETS",
    "THEMES",
    "ApiKeyError",
    "ApiKeyStatus",
    "KeyringUnavailable",
    "LoadResult",
    "Settings",
    "SettingsDialog",
    "SettingsError",
    "api_key_status",
    "apply_theme",
    "config_dir",
    "dark_palette",
    "delete_api_key",
    "duplicate_shortcuts",
    "get_api_key",
    "load_settings",
    "normalize_key_sequence",
    "rewriting_options",
    "save_settings",
    "set_api_key",
    "settings_path",
    "thresholds_for",
]
