"""The signed report as plain text: a header that identifies the study, then the report.

The header names the patient, the accession, the study date, who signed the
report and when, and the model version whose check the radiologist reviewed.
The file is UTF-8 (no byte-order mark) with ``\\n`` line ends; the report text
is written exactly as signed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from app.export.files import ExportError, atomic_write_bytes, safe_name

if TYPE_CHECKING:
    from app.storage import ReportState, StudyRecord

TITLE = "Chest radiograph report"
MISSING = "(not recorded)"
RULE = "=" * 72


@dataclass(frozen=True)
class SignedReport:
    """A signed report with what identifies it; the input of the text and PDF exports.

    ``signed_at`` is best timezone-aware (storage keeps UTC); it is shown in
    the computer's local time with its UTC offset.  ``study_date`` may be a
    :class:`~datetime.date` or a DICOM ``YYYYMMDD`` string.
    """

    text: str
    patient_id: str | None
    accession_number: str | None
    study_date: date | str | None
    signed_by: str
    signed_at: datetime
    model_version: str | None
    patient_name: str | None = None
    study_description: str | None = None
    #: Signed addenda under the report, oldest first: (text, author, signed at).
    addenda: tuple[tuple[str, str, datetime], ...] = ()
    #: Issued as a preliminary report (not signed final yet).
    preliminary: bool = False
    #: What the report must say of the model that checked it (e.g. trained on synthetic images).
    model_note: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ExportError(f"the report must be text, not {type(self.text).__name__}")
        if not self.text.strip():
            raise ExportError("the report is empty: there is nothing to export")
        if not self.signed_by or not isinstance(self.signed_at, datetime):
            raise ExportError("the report is not signed: only signed reports are exported")

    @classmethod
    def from_records(
        cls,
        study: StudyRecord,
        report: ReportState,
        *,
        signer_name: str | None = None,
        patient_name: str | None = None,
    ) -> SignedReport:
        """From the storage records of a study and its current report.

        ``signer_name`` (a display name) replaces the signer's user name when
        given.  Raises :class:`ExportError` if the report is not signed.
        """
        issued = report.signed or report.preliminary
        if not issued or report.signed_by is None or report.signed_at is None:
            raise ExportError("the report is not signed: only signed (or preliminary) reports "
                              "are exported")
        return cls(
            text=report.text,
            patient_id=study.patient_id,
            accession_number=study.accession_number,
            study_date=study.study_date,
            signed_by=signer_name or report.signed_by,
            signed_at=report.signed_at,
            model_version=report.model_version,
            patient_name=patient_name,
            study_description=study.description,
            addenda=tuple((a.text, a.author, a.created_at) for a in report.addenda),
            preliminary=report.preliminary,
        )

    @property
    def status(self) -> str:
        """``signed``, ``amended`` once an addendum is under it, or ``preliminary``."""
        if self.preliminary:
            return "preliminary"
        return "amended" if self.addenda else "signed"

    def body(self) -> str:
        """The signed text exactly as signed, then each addendum under its own heading."""
        parts = [self.text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")]
        for number, (text, author, at) in enumerate(self.addenda, 1):
            parts.append(f"ADDENDUM {number} (signed by {author}, {format_datetime(at)}):\n"
                         + text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n"))
        return "\n\n".join(parts)

    def header_rows(self) -> list[tuple[str, str]]:
        """The identifying rows shared by the text and PDF exports, as (label, value)."""
        rows = [("Patient ID", self.patient_id or MISSING)]
        if self.patient_name:
            rows.append(("Patient name", format_person_name(self.patient_name)))
        rows += [
            ("Accession", self.accession_number or MISSING),
            ("Study date", format_study_date(self.study_date)),
        ]
        if self.study_description:
            rows.append(("Study", self.study_description))
        rows += [
            ("Issued by (preliminary)" if self.preliminary else "Signed by", self.signed_by),
            ("Issued at" if self.preliminary else "Signed at", format_datetime(self.signed_at)),
            ("Model version", self.model_version or "(no AI check recorded)"),
        ]
        if self.model_note:
            rows.append(("Model note", self.model_note))
        return rows

    def file_name(self, suffix: str) -> str:
        """A suggested file name, e.g. ``10000002_50000002_report.txt``."""
        return safe_name(self.patient_id, self.accession_number, "report", suffix=suffix)


def format_study_date(value: date | str | None) -> str:
    """``2025-01-31`` from a date or a DICOM ``YYYYMMDD`` string; other strings as they are."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or MISSING


def format_person_name(value: str) -> str:
    """A DICOM person name for reading: ``DOE^JANE^^DR`` -> ``DOE, JANE``; others as they are."""
    text = str(value).split("=")[0]
    if "^" not in text:
        return text.strip()
    family, *rest = text.split("^")
    given = " ".join(p for p in rest[:2] if p)
    return f"{family}, {given}" if family and given else (family or given).strip()


def format_datetime(value: datetime) -> str:
    """Local time with its UTC offset for aware datetimes (``2025-02-01 11:32:05+01:00``)."""
    if value.tzinfo is not None:
        value = value.astimezone()
    return value.isoformat(sep=" ", timespec="seconds")


def report_text(report: SignedReport) -> str:
    """The export as one string: title, header rows, a rule, the report, a final newline."""
    rows = report.header_rows()
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{TITLE} ({report.status})", ""]
    lines += [f"{label + ':':<{width}}{value}" for label, value in rows]
    lines += [RULE, ""]
    return "\n".join(lines) + "\n" + report.body() + "\n"


def write_report_text(path: str | os.PathLike[str], report: SignedReport) -> Path:
    """Write :func:`report_text` to ``path`` as UTF-8, atomically; returns the path.

    Raises :class:`ExportError` (one line) when the file cannot be written.
    """
    return atomic_write_bytes(path, report_text(report).encode("utf-8"))
