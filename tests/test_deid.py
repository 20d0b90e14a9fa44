"""De-identification before text leaves the machine (core_model.text.rewrite.deid).

The table below is the reference for what the Gemini backend removes and what it
keeps; docs/security.md shows it.  Each row: a short description, the input,
and the exact expected output.  Every removed span becomes ``___`` (MIMIC-CXR's
placeholder); the cue around it ("Dr.", "MRN:", "pager") stays so the sentence
still reads.
"""

from __future__ import annotations

import pytest

from core_model.text.labeler import label_report
from core_model.text.rewrite.deid import PLACEHOLDER, RULES, deidentify

# (description, input, expected)
CASES: list[tuple[str, str, str]] = [
    # --- dates -------------------------------------------------------------------
    (
        "date, US numeric",
        "Comparison is made to the study of 01/02/2019.",
        "Comparison is made to the study of ___.",
    ),
    ("date, ISO", "COMPARISON: 2019-01-02.", "COMPARISON: ___."),
    (
        "date, two-digit year",
        "Chest radiograph 1/2/19 shows no pneumothorax.",
        "Chest radiograph ___ shows no pneumothorax.",
    ),
    (
        "date, dotted European",
        "Compared with the study of 02.01.2019.",
        "Compared with the study of ___.",
    ),
    (
        "date, abbreviated month",
        "Compared with the radiograph from Jan 2, 2019, no change.",
        "Compared with the radiograph from ___, no change.",
    ),
    ("date, day month year", "Prior exam dated 2 January 2019.", "Prior exam dated ___."),
    (
        "date, '2nd of January'",
        "Since the 2nd of January, the effusion has decreased.",
        "Since the ___, the effusion has decreased.",
    ),
    ("date, 'January 2nd'", "Stable since January 2nd.", "Stable since ___."),
    ("date, month/day after 'from'", "Unchanged from 3/14.", "Unchanged from ___."),
    # --- times -------------------------------------------------------------------
    ("time, 12-hour", "Findings were called at 10:30 am.", "Findings were called at ___."),
    (
        "time, 24-hour after 'at'",
        "The referring physician was paged at 1430.",
        "The referring physician was paged at ___.",
    ),
    ("time, 'hours'", "Findings telephoned at 0830 hours.", "Findings telephoned at ___."),
    # --- names -------------------------------------------------------------------
    (
        "name after Dr.",
        "Findings discussed with Dr. John Smith.",
        "Findings discussed with Dr. ___.",
    ),
    ("name with initial", "Dr. J. Smith reviewed the study.", "Dr. ___ reviewed the study."),
    (
        "name after Mrs.",
        "Mrs. Garcia was informed of the results.",
        "Mrs. ___ was informed of the results.",
    ),
    (
        "name after 'discussed with'",
        "The findings were discussed with Jane Doe by telephone.",
        "The findings were discussed with ___ by telephone.",
    ),
    ("name after a role", "Results d/w NP Jones.", "Results d/w NP ___."),
    (
        "name before a credential",
        "Electronically signed by: John Smith, MD",
        "Electronically signed by: ___, MD",
    ),
    # --- contact details ---------------------------------------------------------
    (
        "phone number",
        "Please call 617-555-1234 with questions.",
        "Please call ___ with questions.",
    ),
    (
        "phone number with area code in parentheses",
        "Reach the reading room at (617) 555-1234.",
        "Reach the reading room at ___.",
    ),
    ("pager number", "Dr. Lee, pager 12345, was notified.", "Dr. ___, pager ___, was notified."),
    ("email address", "Send images to jane.doe@hospital.org.", "Send images to ___."),
    # --- identifiers -------------------------------------------------------------
    ("MRN, alphanumeric", "MRN: A1234567", "MRN: ___"),
    ("accession number", "Accession number 98765432.", "Accession number ___."),
    ("bare 6+ digit number", "Study 12345678 reviewed.", "Study ___ reviewed."),
    # --- ages --------------------------------------------------------------------
    (
        "age over 89",
        "92-year-old woman with dyspnea.",
        "___-year-old woman with dyspnea.",
    ),
    ("age over 89, other spellings", "Patient is 95 yo. Age: 93.", "Patient is ___ yo. Age: ___."),
    # --- everything at once -------------------------------------------------------
    (
        "name, time and date in one sentence",
        "Findings discussed with Dr. Smith by phone at 10:30 a.m. on 01/02/2019.",
        "Findings discussed with Dr. ___ by phone at ___ on ___.",
    ),
    # --- kept: clinical content --------------------------------------------------
    ("kept: age up to 89", "89-year-old man with cough.", "89-year-old man with cough."),
    (
        "kept: sizes",
        "A 1.5 cm nodule in the right upper lobe and a 3 mm nodule in the left lower lobe.",
        "A 1.5 cm nodule in the right upper lobe and a 3 mm nodule in the left lower lobe.",
    ),
    (
        "kept: vertebral level",
        "T4 compression fracture is unchanged.",
        "T4 compression fracture is unchanged.",
    ),
    (
        "kept: view count",
        "PA and lateral views of the chest, 2 views.",
        "PA and lateral views of the chest, 2 views.",
    ),
    (
        "kept: tube position",
        "The endotracheal tube tip is 4.5 cm above the carina.",
        "The endotracheal tube tip is 4.5 cm above the carina.",
    ),
    (
        "kept: 'may' is not a month",
        "Findings 1 and 2 may represent atelectasis.",
        "Findings 1 and 2 may represent atelectasis.",
    ),
    (
        "kept: not a name",
        "Findings were discussed with the referring physician.",
        "Findings were discussed with the referring physician.",
    ),
    (
        "kept: eponym after 'so-called'",
        "There are so-called Kerley B lines.",
        "There are so-called Kerley B lines.",
    ),
    (
        "kept: a year on its own",
        "Sternotomy wires from CABG in 2015.",
        "Sternotomy wires from CABG in 2015.",
    ),
    (
        "kept: already de-identified",
        "Dr. ___ was notified at ___ on ___.",
        "Dr. ___ was notified at ___ on ___.",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_deidentify_table(text: str, expected: str) -> None:
    assert deidentify(text) == expected


def test_table_is_large_enough_for_the_security_doc() -> None:
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES), "descriptions are the test ids"


@pytest.mark.parametrize("text", [c[2] for c in CASES], ids=[c[0] for c in CASES])
def test_deidentify_is_idempotent(text: str) -> None:
    assert deidentify(text) == text


def test_every_rule_has_a_name_and_uses_the_placeholder() -> None:
    assert PLACEHOLDER == "___"
    names = [name for name, _, _ in RULES]
    assert len(names) == len(set(names))


def test_a_whole_report_keeps_its_labels() -> None:
    report = (
        "EXAMINATION: Chest PA and lateral, 2 views.\n"
        "INDICATION: 92-year-old woman with cough. MRN: A1234567.\n"
        "COMPARISON: 01/02/2019.\n"
        "FINDINGS: Compared with Jan 2, 2019, a 1.5 cm nodule in the right upper lobe is "
        "unchanged. Small right pleural effusion. No pneumothorax. The endotracheal tube tip is "
        "4.5 cm above the carina. T4 compression fracture.\n"
        "IMPRESSION: Small right pleural effusion. Findings discussed with Dr. John Smith at "
        "10:30 am on 01/03/2019, pager 12345."
    )
    cleaned = deidentify(report)
    for secret in (
        "92",
        "A1234567",
        "01/02/2019",
        "Jan 2, 2019",
        "John",
        "Smith",
        "10:30",
        "12345",
    ):
        assert secret not in cleaned
    for kept in ("1.5 cm", "4.5 cm above the carina", "T4", "2 views"):
        assert kept in cleaned
    assert label_report(cleaned).labels == label_report(report).labels


def test_rejects_non_text() -> None:
    with pytest.raises(TypeError):
        deidentify(None)  # type: ignore[arg-type]


def test_security_doc_lists_every_case():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text(encoding="utf-8")
    for description, given, expected in CASES:
        escaped = given.replace("|", "\\|").replace("\n", " ")
        assert f"`{escaped}`" in doc, description
        assert f"`{expected.replace('|', chr(92) + '|').replace(chr(10), ' ')}`" in doc, description
