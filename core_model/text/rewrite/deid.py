"""Rule-based de-identification of report text before it leaves the machine.

The Gemini backend sends report text to Google.  Reports from a hospital system
can carry protected health information (PHI) that the radiologist typed into
the free text: the referring physician's name, the date and time a finding was
telephoned, a pager number, an accession number.  Everything the Gemini backend
sends goes through :func:`deidentify` first, which replaces each such span with
``___``, the placeholder MIMIC-CXR uses, so that the rest of the report-language
engine (sentence splitting, section parsing) already knows how to read it.

The rules are deliberately conservative in one direction only: they must not
damage the clinical content the rewrite depends on.  Measurements ("1.5 cm",
"3 mm", "4.5 cm above the carina"), vertebral levels ("T4"), view counts
("2 views"), and ages up to 89 are kept.  A year on its own ("since 2019") is
kept too; HIPAA's Safe Harbor method allows the year of a date.

This is a filter for free text, not a certified de-identification system: a
name with no cue (no title, no "discussed with", no credential) cannot be told
from a word.  docs/gemini.md says so, and the backend is opt-in for that reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: What every removed span becomes (MIMIC-CXR's placeholder).
PLACEHOLDER = "___"

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d{2}"
# "am"/"pm"/"a.m."; the last dot of "p.m." is kept when it also ends the sentence.
_MERIDIEM = r"(?:[AaPp]\.[Mm]\.(?=[ \t]+[a-z0-9])|[AaPp]\.[Mm](?=\.)|[AaPp]\.?[Mm]\b)"

# Words that follow a title or "discussed with" but are not names.
_NOT_NAMES = frozenset(
    """
    a an the this that these those and or but at on in by via of for to from with who whom
    was were is are be been has had have will would regarding re about over per as
    patient patients pt team service house staff covering referring ordering primary
    physician physicians doctor doctors clinician clinicians provider providers nurse
    nurses resident residents fellow fellows attending radiologist radiology technologist
    telephone phone person clinic floor icu ed er unit family daughter son wife husband
    dr drs mr mrs ms miss mx prof np pa rn md notified informed paged called aware contacted
    """.split()
)

_NAME_WORD = r"[A-Z][a-zA-Z'\-]+|[A-Z]\.?"
# One to three capitalised name words ("John", "J.", "O'Neil", "Smith-Jones").
_NAME = rf"(?:{_NAME_WORD})(?:[ \t]+(?:{_NAME_WORD})){{0,2}}"

_TITLE = r"\b(?:Dr|Drs|Doctor|Mr|Mrs|Ms|Miss|Mx|Prof)\b\.?"
_ROLE = (
    r"(?:(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?|Doctor|NP|PA|RN"
    r"|(?i:(?:the[ \t]+)?(?:nurse|resident|fellow|attending|physician|radiologist)))"
)
# Verbs that take the person directly ("notified Smith") and verbs that need a
# preposition ("discussed with Smith", "signed by: Jane Doe"); "called" needs
# "to"/"by" because of "so-called Kerley B lines".
_CONTACT = (
    r"(?i:(?:notified|informed|paged|telephoned|contacted|d/w)"
    r"|(?:discussed|reviewed|communicated|conveyed|relayed|spoke|spoken|talked|reported|read"
    r"|signed|dictated|verified|approved|called|given)[ \t]+(?:with|to|by)[ \t]*:?)"
)

Replacer = Callable[[re.Match[str]], str]


def _keep_group(name: str) -> Replacer:
    """Replace only the named group, keep the cue around it ("MRN: ___", "Dr. ___")."""

    def repl(m: re.Match[str]) -> str:
        start, end = m.span(name)
        if start < 0:
            return m.group(0)
        a, b = start - m.start(), end - m.start()
        text = m.group(0)
        return text[:a] + PLACEHOLDER + text[b:]

    return repl


def _whole(m: re.Match[str]) -> str:
    return PLACEHOLDER


def _names(name: str) -> Replacer:
    """Replace a captured name unless its first word is an ordinary word ("the team")."""
    keep = _keep_group(name)

    def repl(m: re.Match[str]) -> str:
        captured = m.group(name)
        if captured is None or captured.split()[0].rstrip(".").lower() in _NOT_NAMES:
            return m.group(0)
        return keep(m)

    return repl


def _date(m: re.Match[str]) -> str:
    # "may" is usually the verb: "1 and 2 may represent".  Accept it as a month only
    # when written "May", followed by a year, or in "2nd of May".
    month = _MONTH_RE.search(m.group(0))
    if month is not None and month.group(0).rstrip(".").lower() == "may":
        text = m.group(0)
        if not (
            month.group(0) == "May" or re.search(_YEAR, text) or re.search(r"(?i)\bof\b", text)
        ):
            return text
    return PLACEHOLDER


def _age(m: re.Match[str]) -> str:
    group = "age" if m.group("age") is not None else "age2"
    return _keep_group(group)(m) if int(m.group(group)) > 89 else m.group(0)


_MONTH_RE = re.compile(rf"(?i)\b{_MONTH}")

#: The rules, applied in order (earlier rules see the original text; later ones
#: see placeholders, which no rule matches).  Each is (name, pattern, replacer);
#: the names appear in docs/gemini.md.
RULES: tuple[tuple[str, re.Pattern[str], Replacer], ...] = (
    (
        "email",
        re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+\b"),
        _whole,
    ),
    ("url", re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"']+"), _whole),
    # Labelled identifiers first, so "MRN: 1234567" keeps its label.  The value
    # must hold a digit, so "Accession number pending" is left alone.
    (
        "labelled identifier",
        re.compile(
            r"(?i)\b(?:MRN|MR[ \t]*\#|medical[ \t]+record|accession|acc[ \t]*\#|patient[ \t]+id"
            r"|unit[ \t]+no|order|encounter|study[ \t]+id|exam[ \t]+id|id|ssn|social[ \t]+security)"
            r"(?:[ \t]*(?:number|no\.?|\#))?[ \t]*:?[ \t]*"
            r"(?P<id>(?=[A-Z0-9\-]*\d)[A-Z0-9][A-Z0-9\-]{3,})\b"
        ),
        _keep_group("id"),
    ),
    (
        "pager or extension",
        re.compile(
            r"(?i)\b(?:pager|beeper|pgr|ext|extension)\.?[ \t]*(?:\#|no\.?|number)?[ \t]*:?[ \t]*"
            r"(?P<num>\d{3,})\b"
        ),
        _keep_group("num"),
    ),
    (
        "phone number",
        re.compile(
            r"(?<![\w.])(?:\+?1[ \t.\-]?)?(?:\(\d{3}\)[ \t]?|\d{3}[ \t.\-])\d{3}[ \t.\-]\d{4}(?!\w|\.\d)"
            r"|(?<![\w.\-/])\d{3}-\d{4}(?![\w\-/])"
        ),
        _whole,
    ),
    # Dates.  Numeric forms need two separators; a dotted form needs a 4-digit
    # year, so no decimal ("1.5") can look like a date.
    (
        "date (numeric)",
        re.compile(
            rf"\b(?:{_YEAR}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])"
            rf"|(?:0?[1-9]|[12]\d|3[01])[-/](?:0?[1-9]|[12]\d|3[01])[-/](?:{_YEAR}|\d{{2}})"
            rf"|(?:0?[1-9]|[12]\d|3[01])\.(?:0?[1-9]|[12]\d|3[01])\.{_YEAR})\b"
        ),
        _whole,
    ),
    (
        "date (month name)",
        re.compile(
            # 2nd of January 2019 / 2 January, 2019 / January 2nd, 2019 / Jan. 2 / January 2019
            rf"(?i)\b(?:{_DAY}[ \t]+(?:of[ \t]+)?{_MONTH}(?:,?[ \t]+{_YEAR})?"
            rf"|{_MONTH}[ \t]+{_DAY}(?:,?[ \t]+{_YEAR})?"
            rf"|{_MONTH},?[ \t]+{_YEAR})\b(?![ \t]*(?:cm|mm|views?)\b)"
        ),
        _date,
    ),
    (
        "date (month/day after a cue)",
        re.compile(
            r"(?i)(?:\b(?:on|dated?|from|since|until)[ \t]+"
            r"(?P<md>(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01]))\b(?!/)"
            r"|(?P<md2>\b(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01]))\b(?!/)"
            r"(?=[ \t]+(?:study|exam|examination|radiograph|film|chest|ct|cxr|x-ray|image)\b))"
        ),
        lambda m: _keep_group("md" if m.group("md") is not None else "md2")(m),
    ),
    (
        "time",
        re.compile(
            rf"\b(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?:[ \t]*{_MERIDIEM})?"
            rf"|\b(?:1[0-2]|0?[1-9])[ \t]*{_MERIDIEM}"
            r"|\b(?:[01]\d|2[0-3])[0-5]\d[ \t]*(?:hours|hrs|h)\b"
        ),
        _whole,
    ),
    (
        "time (24-hour clock after 'at')",
        re.compile(r"\bat[ \t]+(?P<t>(?:[01]\d|2[0-3])[0-5]\d)\b(?![ \t]*(?:cm|mm|ml|mL|cc)\b)"),
        _keep_group("t"),
    ),
    # Names: after a title, after "discussed with" and its cousins, before a credential.
    (
        "name after a title",
        re.compile(rf"{_TITLE}[ \t]+(?P<name>{_NAME}|[a-z][a-z'\-]+)"),
        _names("name"),
    ),
    (
        "name after 'discussed with'",
        re.compile(rf"\b{_CONTACT}[ \t]*(?:{_ROLE}[ \t]+)?(?P<name>{_NAME})"),
        _names("name"),
    ),
    (
        "name before a credential",
        re.compile(
            r"\b(?P<name>[A-Z][a-zA-Z'\-]+(?:[ \t]+[A-Z]\.?)?(?:[ \t]+[A-Z][a-zA-Z'\-]+){0,2}),?"
            r"[ \t]+(?:M\.?D\.?|D\.?O\.?|R\.?N\.?|N\.?P\.?|Ph\.?D\.?|MBBS|FRCR)(?![A-Za-z])"
        ),
        _names("name"),
    ),
    # Ages over 89 (HIPAA groups them as 90 or older).
    (
        "age over 89",
        re.compile(
            r"(?i)\b(?P<age>\d{2,3})(?=[ \t\-]*(?:years?|yrs?|y)[ \t\-]*(?:old\b|/o\b|o\b))"
            r"|\b(?:aged?|age:)[ \t]*(?P<age2>\d{2,3})\b"
        ),
        _age,
    ),
    (
        "age over 89 (decade)",
        re.compile(r"(?i)\bin[ \t]+(?:his|her|their)[ \t]+(?P<age>(?:9\d|1\d\d)s)\b"),
        _keep_group("age"),
    ),
    # Any remaining long number or letters+digits code is an identifier, not a measurement.
    ("long number", re.compile(r"(?<![\d.,])\d{6,}(?![\d.,]?\d)"), _whole),
    (
        "alphanumeric identifier",
        re.compile(r"\b(?:[A-Za-z]{1,4}-?\d{5,}[A-Za-z]?|\d{6,}[A-Za-z]{1,3})\b"),
        _whole,
    ),
)

_REPEATED = re.compile(r"___(?:[ \t]+___)+")


def deidentify(text: str) -> str:
    """``text`` with dates, times, names, contact details, identifiers and ages > 89 as ``___``.

    Clinical numbers (sizes, levels, view counts, ages up to 89, a bare year) are
    kept, so the labels of a report do not change.  Idempotent: de-identifying
    de-identified text changes nothing.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be str, not {type(text).__name__}")
    for _name, pattern, replace in RULES:
        text = pattern.sub(replace, text)
    return _REPEATED.sub(PLACEHOLDER, text)
