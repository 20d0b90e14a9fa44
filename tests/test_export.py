"""Exports: the signed report as text and PDF, the AI results as a DICOM SR."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import zlib
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import highdicom
import pydicom
import pytest
from pydicom.dataset import Dataset

from app.export import (
    SR_SOP_CLASS_UID,
    ExportError,
    ReviewedFlag,
    SignedReport,
    build_sr,
    codes,
    report_text,
    sr_file_name,
    write_report_text,
    write_sr,
)
from app.export.pdf import layout_report, render_report_pdf, write_report_pdf
from app.export.text import format_person_name
from app.storage import FlagRecord, ReportState, StudyRecord
from core_model.inference import Flag
from core_model.text.observations import FINDINGS

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo"
REPORT = (
    "FINDINGS:\n"
    "PA and lateral views of the chest were obtained. No pneumothorax.\n"
    "Small left pleural effusion — unchanged, café.\n"
    "\n"
    "IMPRESSION:\n"
    "Small left pleural effusion."
)
SIGNED_AT = datetime(2025, 2, 1, 10, 32, 5, tzinfo=UTC)


def signed(text: str = REPORT, **overrides: object) -> SignedReport:
    values: dict[str, object] = dict(
        text=text,
        patient_id="10000002",
        accession_number="50000002",
        study_date="21610826",
        signed_by="Smith^Jane",
        signed_at=SIGNED_AT,
        model_version="concord-tiny-demo 2025.1",
    )
    values.update(overrides)
    return SignedReport(**values)  # type: ignore[arg-type]


def demo_dicom(folder: str = "study-01") -> Path:
    worklist = json.loads((DEMO / "worklist.json").read_text(encoding="utf-8"))
    study = next(s for s in worklist["studies"] if s["folder"] == folder)
    return DEMO / study["files"][0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# ============================================================================ text


def test_text_has_the_header_and_the_report_verbatim(tmp_path: Path) -> None:
    report = signed()
    text = report_text(report)
    header, body = text.split("=" * 72 + "\n\n", 1)
    assert body == REPORT + "\n"
    assert "Patient ID:    10000002" in header
    assert "Accession:     50000002" in header
    assert "Study date:    2161-08-26" in header
    assert "Signed by:     Smith^Jane" in header
    assert "Model version: concord-tiny-demo 2025.1" in header
    signed_line = next(line for line in header.splitlines() if line.startswith("Signed at:"))
    shown = datetime.fromisoformat(signed_line.split(":", 1)[1].strip())
    assert shown == SIGNED_AT  # local time with its offset: the same instant

    path = write_report_text(tmp_path / "report.txt", report)
    assert path == tmp_path / "report.txt"
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")  # no byte-order mark
    assert raw.decode("utf-8") == text
    assert "café" in raw.decode("utf-8")
    assert leftovers(tmp_path) == []


def test_text_header_optional_rows_and_missing_values() -> None:
    report = signed(
        patient_id=None,
        accession_number="",
        study_date=date(2024, 5, 6),
        model_version=None,
        patient_name="DOE^JANE^^DR",
        study_description="CHEST (PA AND LAT)",
        text="Line one.\r\nLine two.\r\n\r\n",
    )
    text = report_text(report)
    assert "Patient ID:    (not recorded)" in text
    assert "Accession:     (not recorded)" in text
    assert "Patient name:  DOE, JANE" in text
    assert "Study date:    2024-05-06" in text
    assert "Study:         CHEST (PA AND LAT)" in text
    assert "(no AI check recorded)" in text
    assert text.endswith("Line one.\nLine two.\n")
    assert "\r" not in text
    assert format_person_name("Bono") == "Bono"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"text": "  \n"}, "empty"),
        ({"signed_by": ""}, "not signed"),
        ({"signed_at": None}, "not signed"),
    ],
)
def test_unsigned_or_empty_reports_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        signed(**overrides)


def test_signed_report_from_storage_records() -> None:
    study = StudyRecord(7, "2.25.1", "10000002", "50000002", date(2161, 8, 26), "CHEST", "demo")
    state = ReportState(7, REPORT, 3, "final", "jsmith", SIGNED_AT, "m-1")
    report = SignedReport.from_records(study, state, signer_name="Smith^Jane")
    assert (report.patient_id, report.accession_number, report.signed_by) == (
        "10000002",
        "50000002",
        "Smith^Jane",
    )
    assert report.model_version == "m-1"
    assert report.file_name(".pdf") == "10000002_50000002_report.pdf"
    draft = ReportState(7, REPORT, 2, "draft")
    with pytest.raises(ExportError, match="not signed"):
        SignedReport.from_records(study, draft)


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.txt"
    target.write_text("earlier export", encoding="utf-8")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ExportError, match=r"cannot write .*report.txt: No space left on device"):
        write_report_text(target, signed())
    assert target.read_text(encoding="utf-8") == "earlier export"
    assert leftovers(tmp_path) == []


def test_read_only_folder_and_missing_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        write_report_text(tmp_path / "nowhere" / "report.txt", signed())
    with pytest.raises(ExportError, match="it is a folder"):
        write_report_text(tmp_path, signed())

    import tempfile

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(ExportError, match="Read-only file system"):
        write_report_text(tmp_path / "report.txt", signed())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user"
)
def test_really_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ExportError, match="cannot write"):
            write_report_text(folder / "report.txt", signed())
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


# ============================================================================ PDF


def pdf_objects(data: bytes) -> dict[int, tuple[bytes, bytes | None]]:
    """Object number -> (dictionary text, decoded stream or None) of a simple PDF."""
    objects: dict[int, tuple[bytes, bytes | None]] = {}
    for match in re.finditer(rb"(\d+) 0 obj\s*(.*?)endobj", data, re.S):
        body = match.group(2)
        stream = None
        found = re.search(rb"stream\r?\n(.*)\r?\nendstream", body, re.S)
        if found:
            stream = found.group(1)
            if b"/FlateDecode" in body[: found.start()]:
                stream = zlib.decompress(stream)
            body = body[: found.start()]
        objects[int(match.group(1))] = (body, stream)
    return objects


def _cmap(stream: bytes) -> dict[int, str]:
    table: dict[int, str] = {}
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", stream, re.S):
        for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            table[int(src, 16)] = bytes.fromhex(dst.decode()).decode("utf-16-be")
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", stream, re.S):
        for lo, hi, rest in re.findall(
            rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*(\[[^\]]*\]|<[0-9A-Fa-f]+>)", block
        ):
            lo_i, hi_i = int(lo, 16), int(hi, 16)
            if rest.startswith(b"["):
                for k, dst in enumerate(re.findall(rb"<([0-9A-Fa-f]+)>", rest)):
                    table[lo_i + k] = bytes.fromhex(dst.decode()).decode("utf-16-be")
            else:
                start = int(rest.strip(b"<>"), 16)
                for k in range(hi_i - lo_i + 1):
                    table[lo_i + k] = chr(start + k)
    return table


def pdf_text(data: bytes) -> list[str]:
    """The text of each page: glyphs of ``<hex> Tj`` mapped through each font's ToUnicode."""
    objects = pdf_objects(data)
    fonts: dict[int, dict[int, str]] = {}
    for number, (body, _) in objects.items():
        ref = re.search(rb"/ToUnicode (\d+) 0 R", body)
        if ref:
            fonts[number] = _cmap(objects[int(ref.group(1))][1] or b"")
    pages = []
    for body, _ in objects.values():
        if not re.search(rb"/Type\s*/Page\b(?!s)", body):
            continue
        names = {
            name: fonts.get(int(num), {})
            for name, num in re.findall(rb"/(F\d+) (\d+) 0 R", _resources(objects, body))
        }
        contents = re.search(rb"/Contents (\d+) 0 R", body)
        stream = objects[int(contents.group(1))][1] or b"" if contents else b""
        text, table = [], {}
        for token in re.finditer(rb"/(F\d+) [\d.]+ Tf|<([0-9A-Fa-f]+)> Tj", stream):
            if token.group(1):
                table = names.get(token.group(1), {})
            else:
                hexes = token.group(2)
                for i in range(0, len(hexes), 4):
                    text.append(table.get(int(hexes[i : i + 4], 16), "?"))
        pages.append("".join(text))
    return pages


def _resources(objects: dict[int, tuple[bytes, bytes | None]], page: bytes) -> bytes:
    ref = re.search(rb"/Resources (\d+) 0 R", page)
    if ref:
        return objects[int(ref.group(1))][0]
    return page


def squash(text: str) -> str:
    return "".join(text.split())


def page_count(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", data))


def test_pdf_is_a_valid_document_with_extractable_text(qapp, tmp_path: Path) -> None:
    path = write_report_pdf(tmp_path / "report.pdf", signed())
    data = path.read_bytes()
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    assert 2_000 < len(data) < 500_000
    assert page_count(data) == 1
    assert re.search(rb"/Count 1\b", data)
    assert b'pdfaid:part="1"' in data or b"pdfaid:part='1'" in data  # declares PDF/A-1b
    (page,) = pdf_text(data)
    flat = squash(page)
    for expected in (
        "Chest radiograph report",
        "Patient ID10000002",
        "Accession50000002",
        "2161-08-26",
        "Smith^Jane",
        "concord-tiny-demo 2025.1",
        "No pneumothorax.",
        "Small left pleural effusion — unchanged, café.",
        "IMPRESSION:",
        "page 1 of 1",
    ):
        assert squash(expected) in flat, expected
    assert leftovers(tmp_path) == []


def test_long_report_runs_over_several_pages_each_with_its_footer(qapp) -> None:
    lines = [f"Line {i:03d}: the lungs are clear without focal consolidation." for i in range(220)]
    data = render_report_pdf(signed("\n".join(lines)))
    pages = pdf_text(data)
    assert len(pages) == page_count(data) > 1
    flat = [squash(p) for p in pages]
    for number, page in enumerate(flat, 1):
        assert squash(f"page {number} of {len(pages)}") in page
        assert squash("Patient ID 10000002 · Accession 50000002") in page
    everything = "".join(flat)
    for line in (lines[0], lines[110], lines[-1]):  # nothing lost between pages
        assert squash(line) in everything
        assert sum(squash(line) in p for p in flat) == 1  # nor drawn twice


def test_a_paragraph_wrapped_across_pages_keeps_each_line_once(qapp) -> None:
    words = " ".join(f"w{i:04d} lungs clear." for i in range(900))  # one paragraph, many lines
    pages = [squash(p) for p in pdf_text(render_report_pdf(signed("FINDINGS:\n" + words)))]
    assert len(pages) > 1
    found = [int(m) for p in pages for m in re.findall(r"w(\d{4})", p)]
    assert found == list(range(900))


def test_layout_puts_the_rule_between_header_and_report(qapp) -> None:
    from PySide6.QtGui import QImage

    device = QImage(1200, 1600, QImage.Format.Format_RGB32)
    pages = layout_report(signed(), device, 1200.0, 1500.0)
    assert pages.first_body_block.text() == "FINDINGS:"
    tops = [(o.y() + line.y(), o.y() + line.y() + line.height()) for _, o, line in pages.lines]
    header_bottom = max(bottom for top, bottom in tops if top < pages.rule_y)
    body_top = min(top for top, _ in tops if top > pages.rule_y)
    assert header_bottom < pages.rule_y < body_top
    assert pages.pages == 1 and {page for page, _, _ in pages.lines} == {0}


def test_pdf_write_failure_leaves_nothing(
    qapp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: str, dst: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ExportError, match="Permission denied"):
        write_report_pdf(tmp_path / "report.pdf", signed())
    assert list(tmp_path.iterdir()) == []


# ============================================================================ DICOM SR


def content_items(items, path=()):  # noqa: ANN001, ANN201
    """Every content item of an SR tree with its ancestors' concept meanings."""
    for item in items:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        yield path, item
        if "ContentSequence" in item:
            yield from content_items(item.ContentSequence, (*path, name))


def value_of(item: Dataset) -> object:
    kind = item.ValueType
    if kind == "CODE":
        code = item.ConceptCodeSequence[0]
        return (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning)
    if kind == "NUM":
        return float(item.MeasuredValueSequence[0].NumericValue)
    if kind == "TEXT":
        return item.TextValue
    if kind == "PNAME":
        return str(item.PersonName)
    if kind == "UIDREF":
        return item.UID
    return None


def groups(ds: Dataset) -> list[dict[str, object]]:
    """Each measurement group as {concept meaning: value} (first value per concept)."""
    out = []
    for _, item in content_items(ds.ContentSequence):
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "125007":
            values: dict[str, object] = {}
            for sub in item.ContentSequence:
                values.setdefault(sub.ConceptNameCodeSequence[0].CodeMeaning, value_of(sub))
                if sub.ValueType == "IMAGE":
                    ref = sub.ReferencedSOPSequence[0]
                    values.setdefault("images", []).append(ref.ReferencedSOPInstanceUID)  # type: ignore[union-attr]
            out.append(values)
    return out


FLAGS = [
    Flag(
        "contradiction",
        "Pneumothorax",
        "absent",
        0.913,
        "present",
        sentence="No pneumothorax.",
        span=(60, 76),
        alignment=-0.125,
        message="The report says pneumothorax is absent; the image suggests it is present (p=0.91).",
    ),
    Flag(
        "unsupported",
        "Pleural Effusion",
        "present",
        0.21,
        "absent",
        sentence="Small left pleural effusion.",
    ),
    Flag("omission", "Enlarged Cardiomediastinum", "not mentioned", 0.66, "present"),
]


def test_sr_from_a_demo_image_holds_every_flag(tmp_path: Path) -> None:
    source_path = demo_dicom()
    source = pydicom.dcmread(source_path, stop_before_pixels=True)
    reviewed = [
        (FLAGS[0], "accepted"),
        (FLAGS[1], "dismissed", "Clinically insignificant"),
        FLAGS[2],
    ]
    out = write_sr(
        tmp_path / "ai.dcm",
        source_path,
        reviewed,
        model_version="concord-tiny-demo 2025.1",
        report_text=REPORT,
        signer="Smith^Jane",
        signer_login="jsmith",
    )
    assert out == tmp_path / "ai.dcm"
    assert leftovers(tmp_path) == []
    ds = pydicom.dcmread(out)

    # Header: SOP class, patient and study copied, the image as evidence.
    assert ds.SOPClassUID == SR_SOP_CLASS_UID == pydicom.uid.EnhancedSRStorage
    assert ds.file_meta.MediaStorageSOPClassUID == SR_SOP_CLASS_UID
    assert ds.Modality == "SR"
    assert ds.PatientID == source.PatientID
    assert ds.PatientName == source.PatientName
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.AccessionNumber == source.AccessionNumber
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert (ds.CompletionFlag, ds.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    ref = evidence.ReferencedSOPSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (
        source.SOPClassUID,
        source.SOPInstanceUID,
    )
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99CONCORD"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report

    # One measurement group per flag, in order.
    found = groups(ds)
    assert len(found) == 3
    by_finding = {g["Finding"][2]: g for g in found}  # type: ignore[index]
    assert list(by_finding) == ["Pneumothorax", "Pleural effusion", "Enlarged cardiomediastinum"]
    ptx = by_finding["Pneumothorax"]
    assert ptx["Finding"] == ("36118008", "SCT", "Pneumothorax")
    assert math.isclose(ptx["Probability"], 0.913)  # type: ignore[arg-type]
    assert math.isclose(ptx["Sentence versus negation alignment"], -0.125)  # type: ignore[arg-type]
    assert ptx["Report-image discrepancy type"] == ("CONTRADICTION", "99CONCORD", "Contradiction")
    assert ptx["Assertion in the report"] == ("272519000", "SCT", "Absent")
    assert ptx["Assessment of the image by the algorithm"] == ("52101004", "SCT", "Present")
    assert ptx["Reviewer decision"][0] == "ACCEPTED"  # type: ignore[index]
    assert ptx["Report sentence"] == "No pneumothorax."
    assert ptx["Qualitative Evaluations"] == FLAGS[0].message
    assert ptx["Algorithm Name"] == "Concord"
    assert ptx["Algorithm Version"] == "concord-tiny-demo 2025.1"
    assert ptx["Tracking Identifier"] == "Flag 1: contradiction Pneumothorax"
    assert ptx["images"] == [source.SOPInstanceUID]

    effusion = by_finding["Pleural effusion"]
    assert effusion["Finding"] == ("60046008", "SCT", "Pleural effusion")
    assert effusion["Report-image discrepancy type"][0] == "UNSUPPORTED"  # type: ignore[index]
    assert effusion["Reviewer decision"][0] == "DISMISSED"  # type: ignore[index]
    assert effusion["Reason for dismissal"] == "Clinically insignificant"
    assert math.isclose(effusion["Probability"], 0.21)  # type: ignore[arg-type]

    omission = by_finding["Enlarged cardiomediastinum"]
    assert omission["Finding"] == ("ENL-CARDIOMED", "99CONCORD", "Enlarged cardiomediastinum")
    assert omission["Assertion in the report"][0] == "NOT-MENTIONED"  # type: ignore[index]
    assert "Reviewer decision" not in omission  # not reviewed
    assert math.isclose(omission["Probability"], 0.66)  # type: ignore[arg-type]

    # Observer context: the model as a device, the signer as a person; the summary.
    root = {
        item.ConceptNameCodeSequence[0].CodeMeaning: value_of(item)
        for path, item in content_items(ds.ContentSequence)
        if len(path) == 0 or path == ("Qualitative Evaluations",)
    }
    assert root["Observer Type"] in {("121006", "DCM", "Person"), ("121007", "DCM", "Device")}
    assert root["Device Observer Name"] == "Concord"
    assert root["Device Observer Model Name"] == "concord-tiny-demo 2025.1"
    assert root["Person Observer Name"] == "Smith^Jane"
    assert root["Person Observer's Login Name"] == "jsmith"
    assert root["Report-image consistency"][0] == "DISCREPANCIES"  # type: ignore[index]
    assert root["Report text checked"] == REPORT

    # highdicom reads it back as a TID 1500 document.
    parsed = highdicom.sr.srread(out)
    assert isinstance(parsed, highdicom.sr.EnhancedSR)
    assert len(parsed.content.get_image_measurement_groups()) == 3


def test_sr_without_flags_says_no_discrepancy(tmp_path: Path) -> None:
    source = demo_dicom("study-04")
    out = write_sr(tmp_path / "none.dcm", source, [], model_version="v1", model_name="Concord tiny")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == SR_SOP_CLASS_UID
    (group,) = groups(ds)
    assert group["Finding"][0] == "NO-DISCREPANCY"  # type: ignore[index]
    assert group["Report-image consistency"][0] == "NO-DISCREPANCY"  # type: ignore[index]
    assert group["Algorithm Name"] == "Concord tiny"
    assert group["Algorithm Version"] == "v1"
    summary = [
        value_of(item)
        for path, item in content_items(ds.ContentSequence)
        if path == ("Qualitative Evaluations",)
    ]
    assert summary[0][0] == "NO-DISCREPANCY"  # type: ignore[index]
    assert "Report text checked" not in str(ds)  # none given


def test_sr_references_only_frontal_images_as_read_but_all_as_evidence() -> None:
    frontal = pydicom.dcmread(demo_dicom(), stop_before_pixels=True)
    lateral = pydicom.dcmread(demo_dicom(), stop_before_pixels=True)
    lateral.SOPInstanceUID = pydicom.uid.generate_uid(prefix=None)
    lateral.ViewPosition = "LL"
    del lateral.PatientBirthDate  # a missing type-2 attribute is filled, not fatal
    before = set(lateral.dir())
    doc = build_sr([lateral, frontal], FLAGS[:1], model_version="v2")
    assert set(lateral.dir()) == before  # the caller's dataset is not changed
    (group,) = groups(doc)
    assert group["images"] == [frontal.SOPInstanceUID]
    evidence = doc.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert {r.ReferencedSOPInstanceUID for r in evidence.ReferencedSOPSequence} == {
        frontal.SOPInstanceUID,
        lateral.SOPInstanceUID,
    }
    assert sr_file_name(doc) == "10000002_50000002_ai-results.dcm"


def test_sr_refuses_sources_that_are_not_dicom_images(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image", encoding="utf-8")
    with pytest.raises(ExportError, match="notes.txt: not a DICOM file"):
        build_sr(text, FLAGS, model_version="v1")
    with pytest.raises(ExportError, match="no such file"):
        build_sr(tmp_path / "missing.dcm", FLAGS, model_version="v1")
    with pytest.raises(ExportError, match="no source image"):
        build_sr([], FLAGS, model_version="v1")
    bare = Dataset()
    bare.PatientID = "1"
    with pytest.raises(ExportError, match="not a DICOM image of a study"):
        build_sr(bare, FLAGS, model_version="v1")
    other = pydicom.dcmread(demo_dicom("study-02"), stop_before_pixels=True)
    with pytest.raises(ExportError, match="2 different studies"):
        build_sr([demo_dicom(), other], FLAGS, model_version="v1")
    with pytest.raises(ExportError, match="model version"):
        build_sr(demo_dicom(), FLAGS, model_version=" ")
    sr_doc = pydicom.dcmread(write_sr(tmp_path / "a.dcm", demo_dicom(), [], model_version="v1"))
    with pytest.raises(ExportError, match="structured report, not an image"):
        build_sr(sr_doc, [], model_version="v1")


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (Flag("mismatch", "Pneumothorax", "absent", 0.9, "present"), "unknown kind"),
        (Flag("omission", "Lung Nodule", "not mentioned", 0.9, "present"), "unknown finding"),
        (Flag("omission", "Edema", "maybe", 0.9, "present"), "unknown report assertion"),
        (Flag("omission", "Edema", "not mentioned", float("nan"), "present"), "not in"),
        (Flag("omission", "Edema", "not mentioned", 1.5, "present"), "not in"),
        (
            (Flag("omission", "Edema", "not mentioned", 0.9, "present"), "ignored"),
            "unknown decision",
        ),
        ("a string", "not a flag"),
    ],
)
def test_sr_refuses_flags_it_cannot_code(flag: object, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        build_sr(demo_dicom(), [flag], model_version="v1")


def test_reviewed_flag_accepts_the_shapes_the_app_holds() -> None:
    flag = FLAGS[1]
    review = SimpleNamespace(flag=flag, decision="dismissed", reason="Artefact")
    record = FlagRecord(
        id=1,
        study_id=7,
        report_version=2,
        sentence=None,
        span=None,
        entity="Edema",
        kind="omission",
        report_says="not mentioned",
        image_probability=0.8,
        image_suggests=None,  # older rows may not say; the flag's rule does
        model_version="m-1",
        decision="none",
        dismiss_reason=None,
        decided_by=None,
        decided_at=None,
        superseded=False,
    )
    from_review = ReviewedFlag.of(review)
    assert (from_review.decision, from_review.reason, from_review.entity) == (
        "dismissed",
        "Artefact",
        "Pleural Effusion",
    )
    from_record = ReviewedFlag.of(record)
    assert (from_record.probability, from_record.decision) == (0.8, None)
    assert from_record.image_suggests == "present"
    assert ReviewedFlag.of((flag, "edited")).decision == "edited"
    assert ReviewedFlag.of(flag).decision is None
    doc = build_sr(demo_dicom(), [review, record], model_version="v1")
    assert [g["Finding"][2] for g in groups(doc)] == ["Pleural effusion", "Pulmonary edema"]  # type: ignore[index]


def test_sr_write_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ExportError, match="No space left on device"):
        write_sr(tmp_path / "ai.dcm", demo_dicom(), FLAGS, model_version="v1")
    assert list(tmp_path.iterdir()) == []


def test_codes_cover_every_finding_within_dicom_limits() -> None:
    assert tuple(codes.FINDING_CODES) == FINDINGS
    concepts = [
        value for value in vars(codes).values() if isinstance(value, highdicom.sr.CodedConcept)
    ]
    for table in (codes.FINDING_CODES, codes.KINDS, codes.ASSERTIONS, codes.DECISIONS):
        concepts += list(table.values())
    for concept in concepts:
        assert 0 < len(concept.value) <= 16, concept  # SH
        assert 0 < len(concept.meaning) <= 64, concept  # LO
        if concept.scheme_designator.startswith("99"):
            assert concept.scheme_designator == codes.SCHEME
