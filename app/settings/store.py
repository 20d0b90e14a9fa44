"""The settings file: where it lives, reading it safely, writing it atomically (no Qt).

The file is JSON, ``settings.json`` in the per-user configuration folder
(``platformdirs.user_config_dir("Concord")``, e.g. ``~/.config/Concord`` on
Linux) or in ``$CONCORD_CONFIG_DIR`` when that is set.

Reading never fails and never writes the user's file: a file that is not JSON,
has an unknown key or an invalid value gives the defaults, a one-line
``problem`` for the user, and a copy of the file beside it (``settings.json.bad``)
so nothing the user wrote is lost even after the next save replaces it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from app.settings.values import Settings, SettingsError
from core_model.files import atomic_write_bytes

APP_NAME = "Concord"
CONFIG_DIR_ENVIRONMENT_VARIABLE = "CONCORD_CONFIG_DIR"
SETTINGS_FILENAME = "settings.json"
#: Files larger than this are not settings files (and are not read into memory).
MAX_FILE_BYTES = 1_000_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    """What :func:`load_settings` found.

    ``settings`` is always usable.  ``problem`` is None when the file was read
    (or did not exist yet, ``exists`` False), else one line saying what was wrong
    and that the defaults are in use; ``backup`` is then the copy of the file.
    """

    settings: Settings
    path: Path
    exists: bool
    problem: str | None = None
    backup: Path | None = None


def config_dir() -> Path:
    """``$CONCORD_CONFIG_DIR``, else the per-user configuration folder of Concord."""
    override = os.environ.get(CONFIG_DIR_ENVIRONMENT_VARIABLE)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False))


def settings_path() -> Path:
    """The settings file (it may not exist yet)."""
    return config_dir() / SETTINGS_FILENAME


def load_settings(path: str | os.PathLike[str] | None = None) -> LoadResult:
    """The saved settings, or the defaults with a ``problem`` (never raises, never writes the file)."""
    path = Path(path) if path is not None else settings_path()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return LoadResult(Settings(), path, exists=False)
    except OSError as exc:
        return _fallback(path, f"cannot read {path}: {exc.strerror or exc}", keep=False)
    if size > MAX_FILE_BYTES:
        return _fallback(path, f"{path} is {size:,} bytes, too large to be a settings file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return _fallback(path, f"cannot read {path}: {exc.strerror or exc}", keep=False)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _fallback(path, f"{path} is not UTF-8 text")
    except json.JSONDecodeError as exc:
        return _fallback(path, f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                               f"{exc.msg})")
    try:
        settings = Settings.from_dict(data)
    except SettingsError as exc:
        return _fallback(path, f"{path}: {exc}")
    return LoadResult(settings, path, exists=True)


def save_settings(settings: Settings, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``settings`` atomically (a temporary file replaces the old one); returns the path.

    Raises :class:`SettingsError` with one line when the file cannot be written.
    """
    path = Path(path) if path is not None else settings_path()
    text = json.dumps(settings.to_dict(), indent=2, ensure_ascii=False) + "\n"
    try:
        _atomic_write(path, text.encode("utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot save settings to {path}: {exc.strerror or exc}") from None
    return path


def _fallback(path: Path, reason: str, *, keep: bool = True) -> LoadResult:
    backup = _keep_copy(path) if keep else None
    kept = f"; your file was kept as {backup}" if backup else ""
    problem = f"Settings not loaded: {reason}. Using the defaults{kept}."
    log.warning("%s", problem)
    return LoadResult(Settings(), path, exists=True, problem=problem, backup=backup)


def _keep_copy(path: Path) -> Path | None:
    """A copy of the bad file beside it: ``NAME.bad``, or ``NAME.bad.2`` ... if that holds another."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    for n in range(1, 100):
        candidate = path.with_name(path.name + (".bad" if n == 1 else f".bad.{n}"))
        try:
            if candidate.read_bytes() == data:
                return candidate  # the same bad file was kept on an earlier start
        except FileNotFoundError:
            try:
                _atomic_write(candidate, data)
            except OSError:
                return None
            return candidate
        except OSError:
            continue
    return None


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, make_parents=True)
