"""Light, dark or the system's look for the whole application."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

from app.settings.values import THEMES

#: Colours of the dark palette (hex RGB), by role.
DARK_COLORS: dict[QPalette.ColorRole, str] = {
    QPalette.ColorRole.Window: "#2b2d30",
    QPalette.ColorRole.WindowText: "#e6e6e6",
    QPalette.ColorRole.Base: "#1e1f22",
    QPalette.ColorRole.AlternateBase: "#26282b",
    QPalette.ColorRole.ToolTipBase: "#3c3f41",
    QPalette.ColorRole.ToolTipText: "#f0f0f0",
    QPalette.ColorRole.PlaceholderText: "#8c8f94",
    QPalette.ColorRole.Text: "#e6e6e6",
    QPalette.ColorRole.Button: "#35373b",
    QPalette.ColorRole.ButtonText: "#e6e6e6",
    QPalette.ColorRole.BrightText: "#ff6b6b",
    QPalette.ColorRole.Light: "#4a4d52",
    QPalette.ColorRole.Midlight: "#3f4246",
    QPalette.ColorRole.Mid: "#2f3134",
    QPalette.ColorRole.Dark: "#18191b",
    QPalette.ColorRole.Shadow: "#000000",
    QPalette.ColorRole.Highlight: "#3d7bd9",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#6fa8ff",
    QPalette.ColorRole.LinkVisited: "#b48ef0",
}
#: Disabled widgets: text dimmed so that they read as disabled on the dark background.
DARK_DISABLED: dict[QPalette.ColorRole, str] = {
    QPalette.ColorRole.WindowText: "#7b7e83",
    QPalette.ColorRole.Text: "#7b7e83",
    QPalette.ColorRole.ButtonText: "#7b7e83",
    QPalette.ColorRole.Highlight: "#4a4d52",
    QPalette.ColorRole.HighlightedText: "#b0b0b0",
}

#: The style name and palette each application started with (for "system"), by id.
_ORIGINAL: dict[int, tuple[str, QPalette]] = {}


def dark_palette() -> QPalette:
    """The dark palette :func:`apply_theme` installs."""
    palette = QPalette()
    for role, color in DARK_COLORS.items():
        palette.setColor(QPalette.ColorGroup.All, role, QColor(color))
    for role, color in DARK_DISABLED.items():
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(color))
    return palette


def apply_theme(app: QApplication, theme: str) -> None:
    """Apply ``"light"``, ``"dark"`` or ``"system"`` to ``app`` (every open and future window).

    ``dark``: the Fusion style with :func:`dark_palette`.  ``light``: the
    Fusion style with its standard (light) palette, the same on every
    platform.  ``system``: the style and palette the application started with,
    which follow the platform's own light or dark mode.  Qt 6.8+ is also told
    the colour scheme, so native dialogs and title bars match.
    """
    if theme not in THEMES:
        raise ValueError(f"unknown theme {theme!r}; expected one of {', '.join(THEMES)}")
    # The start-up look, remembered on the first call, is what "system" returns to.
    style_name, palette = _ORIGINAL.setdefault(id(app), (app.style().name(), QPalette(app.palette())))
    hints = QGuiApplication.styleHints()
    if theme == "system":
        _set_style(app, style_name)
        if hasattr(hints, "unsetColorScheme"):
            hints.unsetColorScheme()
        app.setPalette(palette)
        return
    _set_style(app, "Fusion")
    if hasattr(hints, "setColorScheme"):
        hints.setColorScheme(Qt.ColorScheme.Dark if theme == "dark" else Qt.ColorScheme.Light)
    app.setPalette(dark_palette() if theme == "dark" else app.style().standardPalette())


def _set_style(app: QApplication, name: str) -> None:
    if app.style().name().lower() == name.lower():
        return
    style = QStyleFactory.create(name)
    if style is not None:
        app.setStyle(style)
