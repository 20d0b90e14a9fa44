"""The one dataset reader: MIMIC-CXR-JPG's layout (and MIMIC-CXR's DICOM files).

Reads ``mimic-cxr-2.0.0-metadata.csv``, ``-split.csv`` and ``-chexpert.csv``
under a root, joins images, reports and labels by study, applies the split,
keeps the frontal views by default, and yields one :class:`Sample` per image.
A phantom world, a hospital's exported cases and MIMIC itself are all read
through here.  Problems with the dataset as a whole (a missing CSV or column)
raise :class:`DatasetError`; problems with one study or image (a missing
file, a report with no clinical text, labels that disagree with the split) are
skipped and counted with their reason in :attr:`MimicDataset.skipped` (each one
is listed in :attr:`MimicDataset.skipped_images`).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from core_model.imaging import read_image
from core_model.text.observations import OBSERVATIONS, PATHOLOGIES
from core_model.text.sections import clinical_sections, has_clinical_heading

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
FRONTAL_VIEWS = ("PA", "AP")
SPLITS = ("train", "validate", "test")


class DatasetError(ValueError):
    """The dataset cannot be read at all; the message names the file and the fix."""


@dataclass(frozen=True)
class Sample:
    """One image with its study's report and labels."""

    dicom_id: str
    subject_id: int
    study_id: int
    split: str
    view: str
    image_path: Path
    report_path: Path
    report: str
    labels: dict[str, str] = field(default_factory=dict)

    def load_image(self) -> np.ndarray:
        """The image as display values in [0, 1] (DICOM through the standard's pipeline)."""
        return read_image(self.image_path)


class SkippedImage(NamedTuple):
    """One image the reader skipped, and why (``split`` is empty when the split file lacks it)."""

    dicom_id: str
    study_id: int
    split: str
    reason: str


def study_folder(root: Path, subject_id: int, study_id: int) -> Path:
    p = f"p{subject_id}"
    return root / "files" / p[:3] / p / f"s{study_id}"


class MimicDataset(Sequence[Sample]):
    """Samples of a MIMIC-layout root, filtered by split and view."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split: str | Sequence[str] | None = None,
        views: Sequence[str] | None = FRONTAL_VIEWS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset folder")
        splits = (split,) if isinstance(split, str) else tuple(split or SPLITS)
        for s in splits:
            if s not in SPLITS:
                raise DatasetError(f"unknown split {s!r}; choose from {', '.join(SPLITS)}")
        self.splits = splits
        self.views = tuple(v.upper() for v in views) if views else None
        self.skipped: Counter[str] = Counter()
        self.skipped_images: list[SkippedImage] = []
        self.filtered: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self._samples = self._scan()

    # Sequence protocol
    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index):  # noqa: ANN001, ANN204 - Sequence protocol
        return self._samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    # ----------------------------------------------------------------- scanning

    def _scan(self) -> list[Sample]:
        metadata = _read_csv(self.root, METADATA_CSV, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
        split_rows = _read_csv(self.root, SPLIT_CSV, ("dicom_id", "study_id", "subject_id", "split"))
        label_rows = _read_csv(self.root, CHEXPERT_CSV, ("subject_id", "study_id", *OBSERVATIONS))

        split_of: dict[str, tuple[str, int]] = {}
        study_subject: dict[int, int] = {}
        for r in split_rows:
            split_of[r["dicom_id"]] = (r["split"].strip(), int(r["subject_id"]))
            study_subject[int(r["study_id"])] = int(r["subject_id"])
        labels_of: dict[int, dict[str, str]] = {}
        disagreeing: set[int] = set()
        for r in label_rows:
            study = int(r["study_id"])
            subject = int(r["subject_id"])
            if study in study_subject and study_subject[study] != subject:
                disagreeing.add(study)
                continue
            labels_of[study] = {o: _label(r[o]) for o in OBSERVATIONS}

        reports: dict[int, tuple[Path, str] | str] = {}
        samples = []
        for r in metadata:
            dicom_id = r["dicom_id"].strip()
            subject, study = int(r["subject_id"]), int(r["study_id"])
            view = (r.get("ViewPosition") or "").strip().upper() or "UNKNOWN"
            split_entry = split_of.get(dicom_id)
            if split_entry is None:
                self._skip("image not in the split file", dicom_id, study, "")
                continue
            split, split_subject = split_entry
            if split_subject != subject:
                self._skip("split file and metadata disagree on the subject", dicom_id, study, split)
                continue
            if split not in self.splits:
                self.filtered[f"split {split}"] += 1
                continue
            if self.views is not None and view not in self.views:
                self.filtered[f"view {view}"] += 1
                continue
            if study in disagreeing:
                self._skip("labels disagree with the split file (subject id differs)", dicom_id, study, split)
                continue
            if study not in labels_of:
                self._skip("study has no label row", dicom_id, study, split)
                continue
            folder = study_folder(self.root, subject, study)
            image = _image_file(folder, dicom_id)
            if image is None:
                self._skip("image file missing", dicom_id, study, split)
                continue
            if study not in reports:
                reports[study] = self._report(folder)
            report = reports[study]
            if isinstance(report, str):
                self._skip(report, dicom_id, study, split)
                continue
            samples.append(Sample(dicom_id, subject, study, split, view, image, report[0], report[1], labels_of[study]))
        return samples

    def _skip(self, reason: str, dicom_id: str, study_id: int, split: str) -> None:
        self.skipped[reason] += 1
        self.skipped_images.append(SkippedImage(dicom_id, study_id, split, reason))

    def _report(self, folder: Path) -> tuple[Path, str] | str:
        """The study's report, or the reason it cannot be used."""
        path = folder.with_suffix(".txt")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return "report file missing"
        except (OSError, UnicodeDecodeError):
            return "report file unreadable (not UTF-8 text)"
        if not any(s.text for s in clinical_sections(text)):
            return "report has no FINDINGS/IMPRESSION or other clinical text"
        if not has_clinical_heading(text):
            self.notes["reports without FINDINGS/IMPRESSION headings (other clinical text used)"] += 1
        return path, text

    # ----------------------------------------------------------------- summary

    def summary(self) -> dict[str, object]:
        """Counts, label distribution, normal share and duplicate-report share."""
        studies: dict[int, Sample] = {}
        for s in self._samples:
            studies.setdefault(s.study_id, s)
        n = len(studies)
        per_label = {
            o: Counter(s.labels[o] for s in studies.values()) for o in OBSERVATIONS
        }
        normal = sum(1 for s in studies.values() if s.labels["No Finding"] == "1")
        texts = Counter(_clinical_text(s.report) for s in studies.values())
        duplicated = sum(c for c in texts.values() if c > 1)
        return {
            "root": str(self.root),
            "images": len(self._samples),
            "studies": n,
            "patients": len({s.subject_id for s in studies.values()}),
            "by_split": dict(Counter(s.split for s in studies.values())),
            "by_view": dict(Counter(s.view for s in self._samples)),
            "labels": {
                o: {"positive": c["1"], "negative": c["0"], "uncertain": c["-1"], "blank": c[""]}
                for o, c in per_label.items()
            },
            "normal_share": normal / n if n else 0.0,
            "abnormal_studies": sum(
                1 for s in studies.values() if any(s.labels[o] in ("1", "-1") for o in PATHOLOGIES)
            ),
            "duplicate_report_share": duplicated / n if n else 0.0,
            "top_reports": [(t, c) for t, c in texts.most_common(5) if c > 1],
            "skipped": dict(self.skipped),
            "filtered": dict(self.filtered),
            "notes": dict(self.notes),
        }


def _clinical_text(report: str) -> str:
    return " ".join(" ".join(s.text.split()) for s in clinical_sections(report))


def _label(value: str | None) -> str:
    value = (value or "").strip()
    if not value:
        return ""
    try:
        number = int(float(value))
    except ValueError as exc:
        raise DatasetError(f"{CHEXPERT_CSV}: label {value!r} is not 1, 0, -1 or blank") from exc
    if number not in (1, 0, -1):
        raise DatasetError(f"{CHEXPERT_CSV}: label {value!r} is not 1, 0, -1 or blank")
    return str(number)


def _read_csv(root: Path, name: str, required: Sequence[str]) -> list[dict[str, str]]:
    path = root / name
    if not path.is_file():
        raise DatasetError(f"{root}: missing {name} (a MIMIC-CXR-JPG root has the metadata, split and chexpert CSVs)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text") from exc
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV ({exc})") from exc
    for i, r in enumerate(rows, start=2):
        for c in ("subject_id", "study_id"):
            if c in r and not (r[c] or "").strip().isdigit():
                raise DatasetError(f"{path}: line {i}: {c} {r[c]!r} is not a number")
    return rows


def _image_file(folder: Path, dicom_id: str) -> Path | None:
    for suffix in (".jpg", ".dcm", ".png"):
        p = folder / f"{dicom_id}{suffix}"
        if p.is_file():
            return p
    return None
