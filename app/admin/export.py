"""Export signed cases as a MIMIC-CXR-JPG-layout dataset (no Qt).

A hospital's finalized cases become training and evaluation data for the
next model through the same reader as MIMIC itself
(:class:`training.dataset.MimicDataset`)::

    OUT/files/pXX/pSUBJECT/sSTUDY.txt               the signed report (de-identified)
    OUT/files/pXX/pSUBJECT/sSTUDY/DICOMID.jpg       each image, 8-bit display values
    OUT/mimic-cxr-2.0.0-metadata.csv                one row per image (ViewPosition, size, date)
    OUT/mimic-cxr-2.0.0-split.csv                   one row per image, split "train" by default
    OUT/mimic-cxr-2.0.0-chexpert.csv                one row per study: labels from the report labeler
    OUT/concord-export-map.csv                      MIMIC numbers <-> Concord / DICOM identifiers
    OUT/concord-export-manifest.json                counts, settings and every skip with its reason

Numbers: ``subject_id`` is 8 digits from a hash of the DICOM PatientID (the
same patient gets the same number in every export, collisions resolved in
PatientID order), ``study_id`` is 50,000,000 + the study's database id, and
``dicom_id`` is MIMIC-shaped (five groups of 8 hex digits) from a hash of the
SOPInstanceUID. Images are decoded with :func:`core_model.imaging.read_image`
(DICOM through the standard's display pipeline, the file's own window) and
written as grayscale JPEG with Pillow.

Only studies whose report is signed are exported; a study is skipped (and
listed in the manifest) when it has no frontal image, when none of its
frontal images can be read, or when its report has no clinical text; an
unreadable image is skipped alone. The export is audited (``dataset.export``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.admin.registry import current_role, require_admin
from app.storage import ImageRecord, Storage, StudyRecord
from core_model.files import atomic_write_text
from core_model.imaging import ImageReadError, read_image
from core_model.text.labeler import label_report
from core_model.text.observations import OBSERVATIONS
from core_model.text.rewrite.deid import deidentify as deidentify_text
from core_model.text.sections import clinical_sections

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
MAP_CSV = "concord-export-map.csv"
MANIFEST_JSON = "concord-export-manifest.json"
AUDIT_ACTION = "dataset.export"
METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning",
)
MAP_COLUMNS = (
    "subject_id", "study_id", "dicom_id", "patient_id", "concord_study_id",
    "study_instance_uid", "sop_instance_uid", "view_position", "source_path",
)
SPLITS = ("train", "validate", "test")
FRONTAL_VIEWS = ("PA", "AP")
SUBJECT_BASE, SUBJECT_SPAN = 10_000_000, 90_000_000
STUDY_BASE = 50_000_000

#: ``progress(done, total)`` counts studies; ``cancel()`` is polled between studies.
Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class ExportError(ValueError):
    """The export cannot start or cannot be written; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class SkippedStudy:
    concord_study_id: int
    study_instance_uid: str
    reason: str


@dataclass(frozen=True, slots=True)
class SkippedImage:
    concord_study_id: int
    sop_instance_uid: str
    path: str
    reason: str


@dataclass
class ExportSummary:
    """What an export wrote and what it left out."""

    out_root: str
    studies: int = 0
    images: int = 0
    #: Studies not exported because their report is not signed (not listed one by one).
    not_signed: int = 0
    skipped_studies: list[SkippedStudy] = field(default_factory=list)
    skipped_images: list[SkippedImage] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    manifest: str = ""
    mapping: str = ""

    def describe(self) -> str:
        """One paragraph for a dialog or a log."""
        parts = [f"Exported {self.studies} studies ({self.images} images) to {self.out_root}."]
        if self.not_signed:
            parts.append(f"{self.not_signed} studies were left out because their report is not signed.")
        if self.skipped_studies:
            parts.append(f"{len(self.skipped_studies)} signed studies were skipped.")
        if self.skipped_images:
            parts.append(f"{len(self.skipped_images)} images were skipped.")
        if self.skipped_studies or self.skipped_images:
            parts.append(f"Reasons are listed in {MANIFEST_JSON}.")
        if self.cancelled:
            parts.append("The export was cancelled; the dataset holds the studies done before.")
        return " ".join(parts)


# -------------------------------------------------------------------- identifiers


def subject_numbers(patient_keys: Iterable[str]) -> dict[str, int]:
    """Stable 8-digit MIMIC-style subject numbers for patient keys (collision-free)."""
    taken: set[int] = set()
    numbers: dict[str, int] = {}
    for key in sorted(set(patient_keys)):
        digest = hashlib.sha256(f"concord:patient:{key}".encode()).digest()
        offset = int.from_bytes(digest[:8], "big") % SUBJECT_SPAN
        while SUBJECT_BASE + offset in taken:
            offset = (offset + 1) % SUBJECT_SPAN
        taken.add(SUBJECT_BASE + offset)
        numbers[key] = SUBJECT_BASE + offset
    return numbers


def study_number(study: StudyRecord) -> int:
    """MIMIC-style study number: 50,000,000 + the database id."""
    return STUDY_BASE + study.id


def dicom_id_for(sop_instance_uid: str) -> str:
    """A MIMIC-shaped dicom_id (``xxxxxxxx-xxxxxxxx-...``, five groups) for an SOPInstanceUID."""
    digest = hashlib.sha1(f"concord:image:{sop_instance_uid}".encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def patient_key(study: StudyRecord) -> str:
    """The patient a study belongs to; a study without a patient is its own patient."""
    return study.patient_id or f"study:{study.study_instance_uid}"


def study_folder(root: Path, subject_id: int, study_id: int) -> Path:
    """``files/pXX/pSUBJECT/sSTUDY``, as MIMIC-CXR and ``training.dataset`` lay it out."""
    p = f"p{subject_id}"
    return root / "files" / p[:3] / p / f"s{study_id}"


# -------------------------------------------------------------------- the export


def export_finalized(
    storage: Storage,
    out_root: str | os.PathLike[str],
    *,
    split: str = "train",
    deidentify: bool = True,
    quality: int = 95,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> ExportSummary:
    """Write every study with a signed report into ``out_root`` in MIMIC-CXR-JPG's layout.

    Admin only (:class:`app.admin.registry.AdminRequired`). ``out_root`` must
    be absent or empty (:class:`ExportError`). ``deidentify`` passes each
    report through the rule-based filter of
    :mod:`core_model.text.rewrite.deid` (names, dates, phone numbers become
    ``___``). Every study is written under ``split`` (``train`` by default).
    """
    require_admin(current_role(storage), "exporting cases")
    if split not in SPLITS:
        raise ExportError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    root = Path(out_root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ExportError(f"{root} is not an empty folder; choose a new one "
                          "(an export is never written over another)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {root}: {exc.strerror or exc}") from exc

    started = time.perf_counter()
    summary = ExportSummary(str(root))
    studies = storage.studies()
    subjects = subject_numbers(patient_key(s) for s in studies)
    meta_rows: list[list[Any]] = []
    split_rows: list[list[Any]] = []
    label_rows: list[list[Any]] = []
    map_rows: list[list[Any]] = []
    total = len(studies)
    if progress:
        progress(0, total)
    for done, study in enumerate(studies):
        if cancel and cancel():
            summary.cancelled = True
            break
        try:
            _export_study(storage, study, root, subjects[patient_key(study)], split, deidentify,
                          quality, summary, meta_rows, split_rows, label_rows, map_rows)
        except OSError as exc:
            raise ExportError(f"cannot write to {root}: {exc.strerror or exc}; "
                              "the export folder is incomplete") from exc
        if progress:
            progress(done + 1, total)

    summary.seconds = round(time.perf_counter() - started, 3)
    summary.manifest = str(root / MANIFEST_JSON)
    summary.mapping = str(root / MAP_CSV)
    try:
        _table(root / METADATA_CSV, METADATA_COLUMNS, meta_rows)
        _table(root / SPLIT_CSV, ("dicom_id", "study_id", "subject_id", "split"), split_rows)
        _table(root / CHEXPERT_CSV, ("subject_id", "study_id", *OBSERVATIONS), label_rows)
        _table(root / MAP_CSV, MAP_COLUMNS, map_rows)
        manifest = {
            "format": "concord-export",
            "format_version": 1,
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "database": storage.location,
            "user": storage.current_user,
            "split": split,
            "deidentified": deidentify,
            "jpeg_quality": quality,
            **{k: v for k, v in asdict(summary).items()
               if k not in ("out_root", "manifest", "mapping")},
        }
        _atomic_text(root / MANIFEST_JSON, json.dumps(manifest, indent=2) + "\n")
    except OSError as exc:
        raise ExportError(f"cannot write to {root}: {exc.strerror or exc}; "
                          "the export folder is incomplete") from exc
    storage.audit(AUDIT_ACTION, None, {
        "out": str(root), "studies": summary.studies, "images": summary.images,
        "not_signed": summary.not_signed, "skipped_studies": len(summary.skipped_studies),
        "skipped_images": len(summary.skipped_images), "split": split,
        "deidentified": deidentify, "cancelled": summary.cancelled,
    })
    return summary


def _export_study(
    storage: Storage, study: StudyRecord, root: Path, subject_id: int, split: str,
    deidentify: bool, quality: int, summary: ExportSummary, meta_rows: list[list[Any]],
    split_rows: list[list[Any]], label_rows: list[list[Any]], map_rows: list[list[Any]],
) -> None:
    def skip(reason: str) -> None:
        summary.skipped_studies.append(SkippedStudy(study.id, study.study_instance_uid, reason))

    report = storage.report(study.id)
    if not report.signed:
        summary.not_signed += 1
        return
    text = deidentify_text(report.text) if deidentify else report.text
    if not any(s.text for s in clinical_sections(text)):
        skip("the signed report has no FINDINGS / IMPRESSION or other clinical text")
        return
    images = storage.images(study.id)
    if not images:
        skip("no images")
        return
    if not any(_view(i) in FRONTAL_VIEWS for i in images):
        views = ", ".join(sorted({_view(i) or "unknown" for i in images}))
        skip(f"no frontal image (PA/AP); views: {views}")
        return
    number = study_number(study)
    folder = study_folder(root, subject_id, number)
    written: list[tuple[ImageRecord, str, tuple[int, int], Path]] = []
    for image in images:
        dicom_id = dicom_id_for(image.sop_instance_uid)
        target = folder / f"{dicom_id}.jpg"
        try:
            shape = _write_jpeg(Path(image.path), target, quality)
        except _Unreadable as exc:
            summary.skipped_images.append(
                SkippedImage(study.id, image.sop_instance_uid, image.path, f"unreadable file: {exc}"))
            continue
        written.append((image, dicom_id, shape, target))
    if not any(_view(i) in FRONTAL_VIEWS for i, *_ in written):
        for *_, path in written:
            path.unlink(missing_ok=True)
        _remove_empty(folder, root)
        skip("no readable frontal image")
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    _atomic_text(folder.with_suffix(".txt"), text if text.endswith("\n") else text + "\n")
    date = study.study_date.strftime("%Y%m%d") if study.study_date else ""
    description = study.description or ""
    for image, dicom_id, (rows, columns), _ in written:
        meta_rows.append([dicom_id, subject_id, number, description, _view(image), rows, columns,
                          date, "", description, "", ""])
        split_rows.append([dicom_id, number, subject_id, split])
        map_rows.append([subject_id, number, dicom_id, study.patient_id or "", study.id,
                         study.study_instance_uid, image.sop_instance_uid, _view(image), image.path])
    labels = label_report(text).chexpert_row()
    label_rows.append([subject_id, number, *(_float_label(labels[o]) for o in OBSERVATIONS)])
    summary.studies += 1
    summary.images += len(written)


class _Unreadable(Exception):
    pass


def _view(image: ImageRecord) -> str:
    return (image.view_position or "").strip().upper()


def _write_jpeg(source: Path, target: Path, quality: int) -> tuple[int, int]:
    """Decode ``source`` to display values and write an 8-bit grayscale JPEG; (rows, columns)."""
    from PIL import Image

    try:
        pixels = read_image(source)
    except ImageReadError as exc:
        raise _Unreadable(str(exc)) from exc
    except MemoryError as exc:
        raise _Unreadable(f"{source.name}: not enough memory to decode") from exc
    except (OSError, ValueError, EOFError, RuntimeError) as exc:  # decoders raise many types
        raise _Unreadable(f"{source.name}: {' '.join(str(exc).split())[:160]}") from exc
    if pixels.ndim != 2 or pixels.size == 0:
        raise _Unreadable(f"{source.name}: not a single-frame grayscale image")
    values = np.clip(np.rint(np.nan_to_num(pixels) * 255.0), 0, 255).astype(np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    Image.fromarray(values).save(part, format="JPEG", quality=quality)
    os.replace(part, target)
    return int(values.shape[0]), int(values.shape[1])


def _remove_empty(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to ``root`` while they are empty."""
    while folder != root and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _float_label(value: str) -> str:
    """MIMIC's CheXpert CSV writes 1.0 / 0.0 / -1.0 and blank."""
    return f"{float(value):.1f}" if value else ""


def _table(path: Path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    part = path.with_name(f".{path.name}.part")
    with open(part, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(part, path)


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_text(path, text, mode=0o644)


__all__ = [
    "AUDIT_ACTION",
    "ExportError",
    "ExportSummary",
    "SkippedImage",
    "SkippedStudy",
    "dicom_id_for",
    "export_finalized",
    "study_number",
    "subject_numbers",
]
