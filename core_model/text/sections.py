"""Section parsing for free-text radiology reports.

MIMIC-CXR reports carry headings such as ``FINDINGS:`` and ``IMPRESSION:`` at the
start of a line (sometimes with the text on the same line); OpenI and hospital
exports use the same words with other spellings.  A report with no heading at
all is one untitled section.  Every section keeps its character span in the
original text so that later layers (sentences, flags) can point back into it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Canonical section name -> spellings seen in reports (matched case-insensitively).
SECTION_NAMES: dict[str, tuple[str, ...]] = {
    "final report": ("final report", "preliminary report", "addendum"),
    "examination": ("examination", "exam", "study", "procedure", "type of examination"),
    "indication": (
        "indication", "indications", "clinical indication", "reason for exam",
        "reason for examination", "reason for study", "clinical information",
        "clinical history", "history", "clinical data", "clinical details",
    ),
    "technique": ("technique", "techniques", "views", "view"),
    "comparison": ("comparison", "comparisons", "prior", "priors", "comparison studies"),
    "findings": (
        "findings", "finding", "report", "description", "observations",
        "pa and lateral views of the chest", "frontal and lateral views of the chest",
    ),
    "impression": (
        "impression", "impressions", "conclusion", "conclusions", "summary",
        "opinion", "diagnosis", "interpretation", "assessment",
    ),
    "recommendation": ("recommendation", "recommendations", "advice"),
    "notification": ("notification", "communication", "critical result", "wet read"),
}

#: Sections whose sentences describe the image (the rest is administrative).
CLINICAL_SECTIONS = ("findings", "impression")
ADMINISTRATIVE_SECTIONS = (
    "final report", "examination", "indication", "technique", "comparison", "notification",
)

_LOOKUP = {spelling: name for name, spellings in SECTION_NAMES.items() for spelling in spellings}
_HEADING = re.compile(
    r"(?im)^[ \t]*(?P<heading>"
    + "|".join(sorted((re.escape(s).replace(r"\ ", r"[ \t]+") for s in _LOOKUP), key=len, reverse=True))
    + r")[ \t]*(?::|(?=[ \t]*$))[ \t]*"
)

# Headings in capitals with a colon also count inside a line ("... IMPRESSION: No
# acute process."), as reports flattened into one CSV cell often have them.
_INLINE_HEADING = re.compile(
    r"(?<![A-Za-z])(?P<heading>"
    + "|".join(
        sorted((re.escape(s.upper()).replace(r"\ ", r"[ \t]+") for s in _LOOKUP if len(s) > 4), key=len, reverse=True)
    )
    + r")[ \t]*:[ \t]*"
)

#: De-identification placeholders: MIMIC's ``___`` and OpenI's ``XXXX``.
DEID_SPAN = re.compile(r"_{2,}|\bX{2,}\b")


@dataclass(frozen=True, slots=True)
class Section:
    """One section of a report: canonical name, heading as written, body span."""

    name: str
    heading: str | None
    start: int
    end: int
    text: str


def parse_sections(text: str) -> list[Section]:
    """Split ``text`` into sections at recognised headings.

    Text before the first heading becomes a section named ``"preamble"``
    (``"body"`` when the report has no heading at all).  Spans index ``text``.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be str, not {type(text).__name__}")
    matches = list(_HEADING.finditer(text))
    starts = {m.start("heading") for m in matches}
    inline = [m for m in _INLINE_HEADING.finditer(text) if m.start("heading") not in starts]
    if inline:
        matches = sorted(matches + inline, key=lambda m: m.start())
    sections: list[Section] = []
    first = matches[0].start() if matches else len(text)
    if text[:first].strip():
        sections.append(_make("body" if not matches else "preamble", None, text, 0, first))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        heading = m.group("heading")
        name = _LOOKUP[re.sub(r"\s+", " ", heading.lower())]
        sections.append(_make(name, heading, text, m.end(), end))
    return sections


def _make(name: str, heading: str | None, text: str, start: int, end: int) -> Section:
    # Trim surrounding whitespace but keep offsets into the original text.
    body = text[start:end]
    lead = len(body) - len(body.lstrip())
    trail = len(body.rstrip())
    return Section(name, heading, start + lead, start + trail, body.strip())


def clinical_sections(text: str) -> list[Section]:
    """The sections that describe the image.

    FINDINGS and IMPRESSION when present; otherwise every section that is not
    administrative (a report with no headings is all clinical); otherwise the
    last non-empty section that is not administrative, as MIMIC-CXR's own
    section parser falls back to the last paragraph.  A report of INDICATION,
    TECHNIQUE and COMPARISON only has no clinical section.
    """
    sections = [s for s in parse_sections(text) if s.text]
    chosen = [s for s in sections if s.name in CLINICAL_SECTIONS]
    if chosen:
        return chosen
    return [s for s in sections if s.name not in ADMINISTRATIVE_SECTIONS and s.name != "recommendation"]


def has_clinical_heading(text: str) -> bool:
    """True when the report has a FINDINGS or IMPRESSION section with text."""
    return any(s.name in CLINICAL_SECTIONS and s.text for s in parse_sections(text))
