"""Importing a folder of DICOM files: headers only, grouped by StudyInstanceUID.

Two passes.  The first walks the folder (recursively, in name order), reads
each file's header (:func:`app.importer.headers.read_header`) and groups the
accepted images by study; a file that cannot be imported is listed with its
reason and the walk goes on.  The second records each study with its images
in one storage transaction.  Files are opened read-only and never changed;
pixels are never decoded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.importer.headers import ImageHeader, Rejection, read_header
from app.importer.report import ImportedImage, ImportedStudy, ImportReport, study_warnings
from app.storage import InvalidInput, Storage, StudySource

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class ImportFolderError(ValueError):
    """The folder itself cannot be imported (missing, not a folder); one line."""


def import_dicom_folder(
    storage: Storage,
    folder: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    source: str = "dicom-folder",
) -> ImportReport:
    """Record every DICOM radiograph under ``folder`` in ``storage``.

    ``progress(done, total)`` is called after each file is read.  ``cancel()``
    is asked before each file and before each study is recorded; when it
    returns true the import stops and counts the files it did not record in
    ``not_processed``.  A cancel while reading leaves storage unchanged; a
    cancel while recording keeps the studies already recorded (one
    transaction each).  Importing the same folder again updates the same
    studies (they are keyed on StudyInstanceUID and SOPInstanceUID) and
    completes a cancelled import.
    Storage errors other than a refused record (database locked or full, no
    signed-in user) propagate: nothing more could be recorded.
    """
    if source not in {s.value for s in StudySource}:
        raise ValueError(f"unknown study source {source!r}")
    root = Path(folder)
    if not root.is_dir():
        raise ImportFolderError(f"{root}: not a folder")
    report = ImportReport(source=source, root=str(root))
    paths = _files(root, report)
    report.files = len(paths)
    total = len(paths)
    if progress:
        progress(0, total)

    groups: dict[str, list[ImageHeader]] = {}
    first_seen: dict[str, str] = {}
    for done, path in enumerate(paths):
        if cancel and cancel():
            report.cancelled = True
            report.not_processed = total - done + sum(len(h) for h in groups.values())
            return _finish(storage, root, report)
        result = read_header(path)
        if isinstance(result, Rejection):
            report.rejected.append(result)
        elif result.sop_instance_uid in first_seen:
            report.rejected.append(
                Rejection(
                    str(path),
                    f"duplicate SOPInstanceUID: same image as {first_seen[result.sop_instance_uid]}",
                )
            )
        else:
            first_seen[result.sop_instance_uid] = str(path)
            groups.setdefault(result.study_instance_uid, []).append(result)
            report.warnings.extend(f"{path}: {w}" for w in result.warnings)
        if progress:
            progress(done + 1, total)

    pending = list(groups.items())
    for index, (uid, headers) in enumerate(pending):
        if cancel and cancel():
            report.cancelled = True
            report.not_processed += sum(len(h) for _, h in pending[index:])
            break
        study = _record_study(storage, uid, headers, source, report)
        if study is not None:
            report.studies.append(study)
    return _finish(storage, root, report)


def _finish(storage: Storage, root: Path, report: ImportReport) -> ImportReport:
    storage.audit(
        "import.dicom-folder",
        None,
        {
            "folder": str(root),
            "files": report.files,
            "studies": len(report.studies),
            "new_studies": report.new_studies,
            "images": report.images,
            "rejected": len(report.rejected),
            "cancelled": report.cancelled,
        },
    )
    return report


def _files(root: Path, report: ImportReport) -> list[Path]:
    """Every regular file under ``root``, in a stable order; unreadable folders are rejected."""

    def unreadable(exc: OSError) -> None:
        report.rejected.append(Rejection(str(exc.filename), f"unreadable folder: {exc.strerror}"))

    paths = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames.sort()
        paths.extend(Path(dirpath) / name for name in sorted(filenames))
    return paths


def _record_study(
    storage: Storage, uid: str, headers: list[ImageHeader], source: str, report: ImportReport
) -> ImportedStudy | None:
    """One study and its images in one transaction; a refused image is rejected alone."""
    existing = storage.study_by_uid(uid)
    data: dict[str, Any] = {"StudyInstanceUID": uid}
    if existing is None:
        data["source"] = source
    warnings: list[str] = []
    patients = {h.patient["PatientID"]: h.patient for h in headers if h.patient}
    if patients:
        key = next(iter(patients))
        data["patient"] = patients[key]
        if len(patients) > 1:
            warnings.append(f"files name {len(patients)} different patients; recorded as {key}")
    for header in headers:  # the first file that has a value gives it
        for name, value in header.study.items():
            data.setdefault(name, value)
    images = [ImportedImage.of(h) for h in headers]
    try:
        record = storage.upsert_study(data, images=[i.storage_fields() for i in images])
    except InvalidInput:
        # Something in one file was refused (for instance an image already recorded in
        # another study): record the study alone, then each image on its own.
        try:
            record = storage.upsert_study(data)
        except InvalidInput as exc:
            report.rejected.extend(Rejection(h.path, f"not recorded: {exc}") for h in headers)
            return None
        kept = []
        for image in images:
            try:
                storage.upsert_images(record.id, [image.storage_fields()])
                kept.append(image)
            except InvalidInput as exc:
                report.rejected.append(Rejection(image.path, f"not recorded: {exc}"))
        images = kept
        if not images:
            warnings.append("no image of this study could be recorded")
    warnings.extend(study_warnings(images))
    study = ImportedStudy(record.id, uid, record.patient_id, existing is None, images, warnings)
    storage.audit(
        "import.study",
        ("study", record.id),
        {
            "source": source,
            "images": [i.details() for i in images],
            "warnings": warnings,
        },
    )
    return study
