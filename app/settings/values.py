"""The settings themselves: :class:`Settings`, their defaults and their checks (no Qt).

Every value is checked when a :class:`Settings` is made, so an instance is
always valid: a bad value raises :class:`SettingsError` whose message names the
setting and says what it accepts.  :meth:`Settings.from_dict` reads the file's
dictionary (unknown keys are refused by name, missing keys take their
defaults); :meth:`Settings.to_dict` is what is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core_model.operating_points import DEFAULT_MODE, MODES

#: Version of the settings file's layout (the ``version`` key).
FORMAT_VERSION = 1

DEVICES = ("auto", "cpu", "cuda")
THEMES = ("light", "dark", "system")
REWRITING_BACKENDS = ("rules", "gemini")
#: The Gemini model used when none is chosen (``core_model.text.rewrite.gemini.DEFAULT_MODEL``).
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"
DEFAULT_AUTOSAVE_SECONDS = 3
AUTOSAVE_RANGE = (1, 600)
#: Target sensitivities offered by the dialog (None: the model's own fitted operating points).
SENSITIVITY_PRESETS: dict[float, str] = {
    0.80: "Fewer flags: catch 80% of findings",
    0.90: "Balanced: catch 90% of findings",
    0.95: "More flags: catch 95% of findings",
}
SENSITIVITY_RANGE = (0.5, 0.99)
#: Flag modes a model may carry, strictest first (core_model.operating_points owns them).
FLAG_MODES = tuple(MODES)

#: Shortcut actions: name -> (label, default key sequence in Qt's portable text).
ACTIONS: dict[str, tuple[str, str]] = {
    "next_flag": ("Next flag", "J"),
    "previous_flag": ("Previous flag", "K"),
    "accept": ("Accept flag", "A"),
    "dismiss": ("Dismiss flag", "D"),
    "edit": ("Edit flagged sentence", "E"),
    "sign_off": ("Sign off report", "Ctrl+Shift+S"),
    "save": ("Save report", "Ctrl+S"),
    "toggle_heatmap": ("Show / hide heatmap", "H"),
    "invert": ("Invert image", "I"),
    "reset_view": ("Reset view", "R"),
    "fit": ("Fit image to window", "F"),
}
DEFAULT_SHORTCUTS: dict[str, str] = {name: key for name, (_, key) in ACTIONS.items()}

#: Settings read only when the application starts.
RESTART_FIELDS = ("device", "database_url", "model_dir")

_MODIFIERS = {"ctrl": "Ctrl", "alt": "Alt", "shift": "Shift", "meta": "Meta"}
_MODIFIER_ORDER = ("Ctrl", "Alt", "Shift", "Meta")
_KEY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")


class SettingsError(ValueError):
    """A setting has a value Concord does not accept; the message names it (one line)."""


def normalize_key_sequence(text: str) -> str:
    """``text`` in a canonical form for comparing (``shift+ctrl+s`` -> ``Ctrl+Shift+S``).

    Accepts Qt's portable text: chords separated by ``", "``, each chord
    modifiers (Ctrl, Alt, Shift, Meta) and one key joined by ``+`` (``Ctrl++``
    is Ctrl and the plus key).  Returns ``""`` for an empty sequence (no
    shortcut) and raises :class:`SettingsError` for one that cannot be a key.
    """
    text = text.strip()
    if not text:
        return ""
    chords = []
    for chord in text.split(", "):
        chord = chord.strip()
        if chord == "+" or chord.endswith("++"):
            key, head = "+", chord[:-2]
            parts = head.split("+") if head else []
        else:
            *parts, key = chord.split("+")
        modifiers = []
        for part in parts:
            name = _MODIFIERS.get(part.strip().lower())
            if name is None:
                raise SettingsError(f"{text!r} is not a key sequence: unknown modifier {part!r}")
            modifiers.append(name)
        key = key.strip()
        if len(key) == 1 and key.isprintable() and not key.isspace():
            key = key.upper()
        elif _KEY_NAME.match(key):
            key = key.capitalize()  # named keys compare case-insensitively: F1, Space, PgDown
        else:
            raise SettingsError(f"{text!r} is not a key sequence")
        ordered = [m for m in _MODIFIER_ORDER if m in modifiers]
        chords.append("+".join([*ordered, key]))
    return ", ".join(chords)


def duplicate_shortcuts(shortcuts: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """``[(key sequence, [actions...]), ...]`` for every sequence bound to more than one action.

    Sequences are compared in their canonical form (:func:`normalize_key_sequence`);
    the sequence reported is the first action's, as written.
    """
    by_key: dict[str, list[str]] = {}
    shown: dict[str, str] = {}
    for action, sequence in shortcuts.items():
        key = normalize_key_sequence(sequence)
        if key:
            by_key.setdefault(key, []).append(action)
            shown.setdefault(key, sequence.strip())
    return [(shown[key], actions) for key, actions in by_key.items() if len(actions) > 1]


def describe_duplicates(duplicates: list[tuple[str, list[str]]]) -> str:
    """One line naming each clash, e.g. ``"J is used by both Next flag and Accept flag"``."""
    parts = []
    for key, actions in duplicates:
        labels = [ACTIONS[a][0] if a in ACTIONS else a for a in actions]
        who = f"both {labels[0]} and {labels[1]}" if len(labels) == 2 else (
            f"{', '.join(labels[:-1])} and {labels[-1]}")
        parts.append(f"{key} is used by {who}")
    return "; ".join(parts)


def _default_shortcuts() -> dict[str, str]:
    return dict(DEFAULT_SHORTCUTS)


@dataclass(frozen=True)
class Settings:
    """Concord's user settings; every instance is valid (see the module docstring).

    ``database_url`` and ``model_dir`` are empty for the defaults (the
    per-user SQLite file, the active model of the registry).  ``flag_mode`` is
    the validated flag mode the check uses (the model's ``operating_points.json``;
    see docs/inference.md).  ``sensitivity`` applies only to a model without
    validated modes: a target sensitivity for its calibration's operating
    points, or None for the points fitted with it (see
    :func:`app.settings.thresholds_for`).
    ``shortcuts`` maps every action of :data:`ACTIONS` to a key sequence in Qt's
    portable text (``""``: no shortcut); actions left out take their defaults.
    """

    device: str = "auto"
    database_url: str = ""
    sensitivity: float | None = None
    flag_mode: str = DEFAULT_MODE
    rewriting_backend: str = "rules"
    gemini_model: str = DEFAULT_GEMINI_MODEL
    theme: str = "system"
    shortcuts: dict[str, str] = field(default_factory=_default_shortcuts)
    autosave_seconds: int = DEFAULT_AUTOSAVE_SECONDS
    model_dir: str = ""

    def __post_init__(self) -> None:
        _choice("device", self.device, DEVICES)
        _choice("rewriting_backend", self.rewriting_backend, REWRITING_BACKENDS)
        _choice("theme", self.theme, THEMES)
        _choice("flag_mode", self.flag_mode, FLAG_MODES)
        if not isinstance(self.database_url, str):
            raise SettingsError(f"setting 'database_url' must be text, not {self.database_url!r}")
        object.__setattr__(self, "database_url", self.database_url.strip())
        if self.database_url:
            check_database_url(self.database_url)
        object.__setattr__(self, "sensitivity", _sensitivity(self.sensitivity))
        if not isinstance(self.gemini_model, str) or not _MODEL_NAME.match(self.gemini_model.strip()):
            raise SettingsError(
                f"setting 'gemini_model' must be a model name such as {DEFAULT_GEMINI_MODEL!r}, "
                f"not {self.gemini_model!r}"
            )
        object.__setattr__(self, "gemini_model", self.gemini_model.strip())
        object.__setattr__(self, "shortcuts", _shortcuts(self.shortcuts))
        object.__setattr__(self, "autosave_seconds", _autosave(self.autosave_seconds))
        if not isinstance(self.model_dir, str):
            raise SettingsError(f"setting 'model_dir' must be a folder path, not {self.model_dir!r}")
        object.__setattr__(self, "model_dir", self.model_dir.strip())

    # ------------------------------------------------------------------ file form

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        """Settings from the file's dictionary; missing keys (and shortcuts) take their defaults.

        Unknown keys (including inside ``shortcuts``) and invalid values raise
        :class:`SettingsError` naming them.
        """
        if not isinstance(data, Mapping):
            raise SettingsError("the settings file must hold one JSON object")
        values = dict(data)
        version = values.pop("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise SettingsError(
                f"settings file version {version!r} is not {FORMAT_VERSION} "
                "(written by another version of Concord)"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            names = ", ".join(repr(k) for k in unknown)
            raise SettingsError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} {names} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The dictionary written to the settings file (with its ``version``)."""
        out: dict[str, Any] = {"version": FORMAT_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, dict) else value
        return out

    # ------------------------------------------------------------------ for callers

    @property
    def reader_device(self) -> str | None:
        """``device`` for :class:`core_model.inference.Reader` (None: CUDA if available)."""
        return None if self.device == "auto" else self.device

    @property
    def database_url_or_none(self) -> str | None:
        """``url`` for ``Storage.open`` (None: ``$CONCORD_DATABASE_URL``, else the per-user file)."""
        return self.database_url or None

    @property
    def model_path(self) -> Path | None:
        """The model folder override, or None for the registry's active model."""
        return Path(self.model_dir).expanduser() if self.model_dir else None

    def changed_fields(self, other: Settings) -> list[str]:
        """Names of the settings whose values differ between ``self`` and ``other``."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    def needs_restart(self, previous: Settings) -> list[str]:
        """The changed settings that take effect only after a restart."""
        return [name for name in self.changed_fields(previous) if name in RESTART_FIELDS]


def check_database_url(url: str) -> str:
    """Raise :class:`SettingsError` unless ``url`` is one storage accepts; returns where it points."""
    from app.storage import InvalidInput, resolve_url
    from app.storage.engine import describe_url

    try:
        parsed = resolve_url(url)
    except InvalidInput as exc:
        raise SettingsError(f"setting 'database_url': {exc}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise SettingsError(
            "setting 'database_url': an in-memory SQLite database would lose everything on exit; "
            "give a file, sqlite:///PATH"
        )
    return describe_url(parsed)


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(
            f"setting {name!r} must be one of {', '.join(repr(c) for c in choices)}, not {value!r}"
        )


def _sensitivity(value: object) -> float | None:
    if value is None:
        return None
    low, high = SENSITIVITY_RANGE
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not low <= value <= high):
        raise SettingsError(
            f"setting 'sensitivity' must be null (the model's fitted operating points) or a "
            f"target sensitivity between {low} and {high}, e.g. 0.9; not {value!r}"
        )
    return round(float(value), 4)


def _autosave(value: object) -> int:
    low, high = AUTOSAVE_RANGE
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(
            f"setting 'autosave_seconds' must be a whole number of seconds from {low} to {high}, "
            f"not {value!r}"
        )
    return value


def _shortcuts(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise SettingsError("setting 'shortcuts' must map action names to key sequences")
    unknown = sorted(set(value) - set(ACTIONS))
    if unknown:
        raise SettingsError(
            f"unknown shortcut action{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)} (known: {', '.join(ACTIONS)})"
        )
    out = {}
    for action in ACTIONS:
        sequence = value.get(action, DEFAULT_SHORTCUTS[action])
        if not isinstance(sequence, str):
            raise SettingsError(f"shortcut {action!r} must be a key sequence such as 'Ctrl+S', "
                                f"not {sequence!r}")
        try:
            normalize_key_sequence(sequence)
        except SettingsError as exc:
            raise SettingsError(f"shortcut {action!r}: {exc}") from None
        out[action] = sequence.strip()
    duplicates = duplicate_shortcuts(out)
    if duplicates:
        raise SettingsError(f"duplicate shortcuts: {describe_duplicates(duplicates)}")
    return out
