"""Importing a MIMIC-CXR-JPG-layout dataset (MIMIC itself, a phantom world, exported cases).

The dataset is read by the one reader, :class:`training.dataset.MimicDataset`
(every view, so the viewer has the laterals too).  Each study becomes a
study with its images (the JPEG / PNG / DICOM files where they lie) and its
free-text report as the first report version.  The layout has no DICOM UIDs,
so they are derived from MIMIC's identifiers (``2.25.`` + a UUID-5 of
``mimic-cxr:study:<study_id>`` or ``mimic-cxr:image:<dicom_id>``, PS3.5 B.2):
the same dataset imported twice gives the same studies.  Image sizes come
from the image files' headers; no image is decoded.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path

from app.importer.first_version import save_first_version
from app.importer.folder import Cancel, Progress
from app.importer.headers import MAX_PIXELS, Rejection, read_header
from app.importer.report import ImportedImage, ImportedStudy, ImportReport, study_warnings
from app.storage import InvalidInput, Storage
from training.dataset import MimicDataset, Sample

_NAMESPACE = uuid.UUID("6f0e1b0c-5d1a-4c52-9a57-2f3f1f0c9b11")  # Concord's MIMIC identifiers


def mimic_uid(kind: str, key: str | int) -> str:
    """A DICOM UID for a MIMIC identifier (``kind`` is ``study`` or ``image``)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, f'mimic-cxr:{kind}:{key}').int}"


def import_mimic(
    storage: Storage,
    root: str | os.PathLike[str],
    *,
    split: str | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> ImportReport:
    """Record the studies of a MIMIC-layout dataset (one split, or all) with their reports.

    The dataset's own problems (a missing CSV) raise
    :class:`training.dataset.DatasetError`; an image the reader skips, or
    whose file cannot be read, is listed in ``rejected`` with the reason.
    ``progress(done, total)`` counts studies.
    """
    dataset = MimicDataset(root, split=split, views=None)
    report = ImportReport(source="mimic", root=str(Path(root)))
    for skipped in dataset.skipped_images:
        report.rejected.append(
            Rejection(f"{skipped.dicom_id} (study {skipped.study_id})", skipped.reason)
        )
    studies: dict[int, list[Sample]] = {}
    for sample in dataset:
        studies.setdefault(sample.study_id, []).append(sample)
    report.files = len(dataset) + len(dataset.skipped_images)
    total = len(studies)
    if progress:
        progress(0, total)
    for done, (study_id, samples) in enumerate(studies.items()):
        if cancel and cancel():
            report.cancelled = True
            report.not_processed = sum(len(s) for s in list(studies.values())[done:])
            break
        study = _record_study(storage, study_id, samples, report)
        if study is not None:
            report.studies.append(study)
        if progress:
            progress(done + 1, total)
    storage.audit(
        "import.mimic",
        None,
        {
            "root": str(root),
            "split": split,
            "studies": len(report.studies),
            "new_studies": report.new_studies,
            "images": report.images,
            "rejected": len(report.rejected),
            "cancelled": report.cancelled,
        },
    )
    return report


def _record_study(
    storage: Storage, study_id: int, samples: list[Sample], report: ImportReport
) -> ImportedStudy | None:
    images = []
    for sample in samples:
        image = _image(sample)
        if isinstance(image, Rejection):
            report.rejected.append(image)
        else:
            images.append(image)
    if not images:
        return None
    uid = mimic_uid("study", study_id)
    existing = storage.study_by_uid(uid)
    data = {
        "StudyInstanceUID": uid,
        "AccessionNumber": str(study_id),
        "patient": {"PatientID": str(samples[0].subject_id)},
    }
    if existing is None:
        data["source"] = "mimic"
    try:
        record = storage.upsert_study(data, images=[i.storage_fields() for i in images])
    except InvalidInput as exc:
        report.rejected.extend(Rejection(i.path, f"not recorded: {exc}") for i in images)
        return None
    warnings = study_warnings(images)
    if not save_first_version(storage, record.id, samples[0].report) and existing is None:
        warnings.append("a report was saved meanwhile; the dataset's report was not imported")
    storage.audit(
        "import.study",
        ("study", record.id),
        {
            "source": "mimic",
            "study_id": study_id,
            "report": str(samples[0].report_path),
            "images": [i.details() for i in images],
            "warnings": warnings,
        },
    )
    return ImportedStudy(record.id, uid, record.patient_id, existing is None, images, warnings)


def _image(sample: Sample) -> ImportedImage | Rejection:
    """The catalogue entry of one image file, from its header only."""
    path = Path(sample.image_path)
    view = "" if sample.view == "UNKNOWN" else sample.view
    if path.suffix.lower() == ".dcm":
        header = read_header(path)
        if isinstance(header, Rejection):
            return header
        image = ImportedImage.of(header)
        return image if image.view_position else replace(image, view_position=view)
    size = _picture_size(path)
    if isinstance(size, str):
        return Rejection(str(path), size)
    columns, rows = size
    return ImportedImage(str(path), mimic_uid("image", sample.dicom_id), view, rows, columns, None)


def _picture_size(path: Path) -> tuple[int, int] | str:
    """(width, height) from a JPEG / PNG header, or why it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header; pixels are decoded only on load()
            width, height = im.size
    except Exception as exc:  # PIL's errors for a bad file (incl. its own bomb guard)
        return f"not a readable image ({type(exc).__name__}: {exc})"
    if width * height > MAX_PIXELS:
        return (
            f"image of {width} x {height} pixels exceeds the {MAX_PIXELS // 1_000_000}-"
            "megapixel limit (decompression-bomb guard)"
        )
    return width, height
