"""Exporting a signed report and the AI results of its study.

* :mod:`~app.export.text`: :class:`SignedReport`, the report as UTF-8 text with an
  identifying header (:func:`write_report_text`);
* :mod:`~app.export.pdf`: the same as a PDF drawn with Qt (:func:`write_report_pdf`;
  imported from there, so that this package stays free of Qt);
* :mod:`~app.export.sr`: the flags and the reviewer's decisions as a DICOM Structured
  Report, TID 1500 in an Enhanced SR, written with highdicom (:func:`write_sr`);
* :mod:`~app.export.codes`: the SR's coded concepts (DCM, SCT, UCUM and ``99CONCORD``);
* :mod:`~app.export.files`: atomic writes and :class:`ExportError`.

Every writer builds its file in memory and replaces the target atomically; a
failure raises :class:`ExportError` with one line and leaves no partial file.
See ``docs/export.md``.
"""

from app.export.files import ExportError, atomic_write_bytes, safe_name
from app.export.sr import (
    SR_SOP_CLASS_UID,
    ReviewedFlag,
    build_sr,
    read_sources,
    sr_bytes,
    sr_file_name,
    write_sr,
)
from app.export.text import SignedReport, report_text, write_report_text

__all__ = [
    "SR_SOP_CLASS_UID",
    "ExportError",
    "ReviewedFlag",
    "SignedReport",
    "atomic_write_bytes",
    "build_sr",
    "read_sources",
    "report_text",
    "safe_name",
    "sr_bytes",
    "sr_file_name",
    "write_report_text",
    "write_sr",
]
