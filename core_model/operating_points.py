"""A model's flag modes: operating points chosen for what a reader experiences.

``operating_points.json`` in a model directory holds, per mode, the
false-flag budget it was fitted for (the share of truthful validation drafts
that may carry any flag), whether contradictions need the image-sentence
alignment too, each finding's points (:class:`core_model.flag_rules.Points`;
``null`` where a rule is off, and a finding with every rule off is not
checked), and the false-flag rate and recall measured on validation. ``concord operating-points`` and ``concord eval
--save-calibration`` write it (:mod:`training.operating_points`); the Reader
checks with the default mode unless told otherwise. A model without the file
checks with its calibration's points, as before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core_model.flag_rules import Points
from core_model.text.observations import FINDINGS

OPERATING_POINTS_FILE = "operating_points.json"
FORMAT = "concord-operating-points"
FORMAT_VERSION = 1
#: Mode name -> (label, false-flag budget on validation), strictest first.
MODES: dict[str, tuple[str, float]] = {
    "few": ("Few flags", 0.02),
    "balanced": ("Balanced", 0.05),
    "sensitive": ("Sensitive", 0.15),
}
DEFAULT_MODE = "balanced"
#: The fields of a finding's points, in file order.
RULES = ("present", "absent", "unsupported", "omission")


class OperatingPointsError(ValueError):
    """An operating-points file that cannot be read; one line."""


@dataclass(frozen=True)
class Mode:
    """One validated mode (see the module docstring)."""

    name: str
    budget: float
    alignment: bool
    points: dict[str, Points]
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def checked(self) -> frozenset[str]:
        """The findings this mode raises any flag on."""
        return frozenset(f for f, p in self.points.items() if p.checks_anything)

    @property
    def label(self) -> str:
        return MODES.get(self.name, (self.name, 0.0))[0]

    def describe(self) -> str:
        """``Balanced: 4.8 % of truthful drafts flagged, 61 % of errors caught (validation)``."""
        v = self.validation
        if v.get("note"):
            return f"{self.label}: {v['note']}"
        ffr, recall = v.get("false_flag_rate"), v.get("recall")
        if ffr is None or recall is None:
            return self.label
        return (f"{self.label}: {ffr:.1%} of truthful drafts flagged, {recall:.0%} of errors "
                "caught (validation)")

    def to_json(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "alignment": self.alignment,
            "points": {f: {rule: getattr(p, rule) for rule in RULES}
                       for f, p in sorted(self.points.items())},
            "validation": self.validation,
        }


def save_modes(directory: str | os.PathLike[str], modes: Mapping[str, Mode],
               provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``operating_points.json`` and the model card's "Flag modes" section."""
    from core_model.files import atomic_write_text

    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "default": DEFAULT_MODE,
            "provenance": dict(provenance or {}),
            "modes": {name: mode.to_json() for name, mode in modes.items()}}
    path = atomic_write_text(Path(directory) / OPERATING_POINTS_FILE,
                             json.dumps(data, indent=2) + "\n", mode=0o644)
    card = Path(directory) / "MODEL_CARD.md"
    if card.is_file():
        atomic_write_text(card, with_modes_section(card.read_text(encoding="utf-8"), modes,
                                                   provenance or {}), mode=0o644)
    return path


CARD_HEADING = "## Flag modes"


def card_section(modes: Mapping[str, Mode], provenance: Mapping[str, Any]) -> str:
    """The model card's table of validated modes (figures measured on validation drafts)."""
    where = provenance.get("split", "validation")
    lines = [CARD_HEADING, "",
             f"Fitted on the {where} split's drafts (the reader-facing consistency suite); the "
             f"default is {MODES.get(DEFAULT_MODE, (DEFAULT_MODE,))[0].lower()}. A finding a "
             "mode does not check raises no flag in it, and the check says so.", "",
             "| mode | budget | truthful drafts flagged | errors caught | flip | omission | "
             "false finding | precision | not checked |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode in modes.values():
        v = mode.validation
        by_type = v.get("recall_by_type") or {}
        left_out = ", ".join(f.lower() for f in FINDINGS if f not in mode.checked) or "none"
        lines.append(
            f"| {mode.label} | {mode.budget:.0%} | {_pct(v.get('false_flag_rate'))} | "
            f"{_pct(v.get('recall'))} | {_pct(by_type.get('flip'))} | "
            f"{_pct(by_type.get('omission'))} | {_pct(by_type.get('false_finding'))} | "
            f"{_pct(v.get('precision'))} | {left_out} |")
    first = next(iter(modes.values())).validation if modes else {}
    if first.get("truthful_n"):
        held = (f", each figure measured on studies held out of the fit ({first['cross_validated']}-"
                "fold cross-validation)" if first.get("cross_validated") else "")
        lines += ["", f"Validation: {first['truthful_n']:,} truthful drafts and "
                  f"{first.get('injected_n', 0):,} drafts with one injected error{held}."]
    return "\n".join(lines) + "\n"


def with_modes_section(card: str, modes: Mapping[str, Mode], provenance: Mapping[str, Any]) -> str:
    """``card`` with its flag-modes section replaced (or added at the end)."""
    section = card_section(modes, provenance)
    start = card.find(CARD_HEADING)
    if start < 0:
        return card.rstrip("\n") + "\n\n" + section
    end = card.find("\n## ", start + len(CARD_HEADING))
    rest = card[end + 1:] if end >= 0 else ""
    return card[:start] + section + ("\n" + rest if rest else "")


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "-"


def load_modes(directory: str | os.PathLike[str]) -> dict[str, Mode]:
    """The model directory's modes ({} when it has none); a damaged file is an error."""
    path = Path(directory) / OPERATING_POINTS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OperatingPointsError(f"{OPERATING_POINTS_FILE} cannot be read ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise OperatingPointsError(f"{OPERATING_POINTS_FILE} is not a Concord operating-points file")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise OperatingPointsError(f"{OPERATING_POINTS_FILE} is from a newer Concord; update it")
    modes = {}
    try:
        for name, entry in dict(data["modes"]).items():
            points = {str(f): Points(*(_point(p[rule]) for rule in RULES))
                      for f, p in dict(entry["points"]).items()}
            unknown = set(points) - set(FINDINGS)
            if unknown:
                raise ValueError(f"mode {name}: unknown findings {sorted(unknown)}")
            modes[str(name)] = Mode(str(name), float(entry["budget"]), bool(entry["alignment"]),
                                    points, dict(entry.get("validation") or {}))
    except KeyError as exc:
        raise OperatingPointsError(f"{OPERATING_POINTS_FILE}: an entry is missing its {exc}") from None
    except (TypeError, ValueError) as exc:
        raise OperatingPointsError(f"{OPERATING_POINTS_FILE}: {exc}") from None
    return modes


def _point(value: Any) -> float | None:
    if value is None:
        return None
    point = float(value)
    if not 0.0 <= point <= 1.0:
        raise ValueError(f"a point outside [0, 1] ({point})")
    return point


__all__ = ["CARD_HEADING", "DEFAULT_MODE", "card_section", "with_modes_section", "MODES", "Mode", "OPERATING_POINTS_FILE", "OperatingPointsError",
           "RULES", "load_modes", "save_modes"]
