"""Colours and names of the flag kinds, shared by the editor and the panel."""

from __future__ import annotations

#: Underline and marker colour per kind (hex RGB).
KIND_COLORS: dict[str, str] = {
    "contradiction": "#d32f2f",  # red
    "unsupported": "#e69100",  # amber, dark enough to read on white
    "omission": "#5e35b1",  # violet: no span, marks the section heading
}
KIND_LABELS: dict[str, str] = {
    "contradiction": "Contradiction",
    "unsupported": "Unsupported",
    "omission": "Omission",
}
#: Background of the span of the flag selected in the panel.
SELECTED_BACKGROUND = "#fff3c4"
EDITOR_FONT_FAMILIES = ["Inter", "Segoe UI", "Helvetica Neue", "DejaVu Sans", "Arial"]


def kind_color(kind: str) -> str:
    return KIND_COLORS.get(kind, "#546e7a")


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.capitalize())
