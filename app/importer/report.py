"""What an import did: studies recorded, files rejected with their reason, warnings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.importer.headers import ImageHeader, Rejection
from core_model.inference import LATERAL

#: View positions of lateral projections: the check reads frontal images only.
LATERAL_VIEWS = frozenset(LATERAL)
LATERAL_ONLY = "only lateral views: the check needs a frontal (PA or AP) image"


@dataclass(frozen=True)
class ImportedImage:
    """One image as recorded: the catalogue's columns plus what the header adds."""

    path: str
    sop_instance_uid: str
    view_position: str
    rows: int | None
    columns: int | None
    photometric_interpretation: str | None
    pixel_spacing: tuple[float, float] | None = None
    transfer_syntax_uid: str | None = None

    @classmethod
    def of(cls, header: ImageHeader) -> ImportedImage:
        return cls(
            header.path,
            header.sop_instance_uid,
            header.view_position,
            header.rows,
            header.columns,
            header.photometric_interpretation,
            header.pixel_spacing,
            header.transfer_syntax_uid,
        )

    def storage_fields(self) -> dict[str, Any]:
        """The dictionary ``Storage.upsert_study(images=...)`` takes (DICOM keywords)."""
        fields: dict[str, Any] = {"SOPInstanceUID": self.sop_instance_uid, "path": self.path}
        if self.view_position:
            fields["ViewPosition"] = self.view_position
        if self.rows:
            fields["Rows"] = self.rows
        if self.columns:
            fields["Columns"] = self.columns
        if self.photometric_interpretation:
            fields["PhotometricInterpretation"] = self.photometric_interpretation
        if self.pixel_spacing:
            fields["PixelSpacing"] = "\\".join(f"{v:g}" for v in self.pixel_spacing)
        if self.transfer_syntax_uid:
            fields["TransferSyntaxUID"] = self.transfer_syntax_uid
        return fields

    def details(self) -> dict[str, Any]:
        """For the import's audit entry: the header facts the catalogue has no column for."""
        return {
            "path": self.path,
            "sop_instance_uid": self.sop_instance_uid,
            "pixel_spacing": list(self.pixel_spacing) if self.pixel_spacing else None,
            "transfer_syntax_uid": self.transfer_syntax_uid,
        }


@dataclass
class ImportedStudy:
    """A study recorded in storage by this import."""

    id: int  # the storage id
    study_instance_uid: str
    patient_id: str | None
    new: bool  # created by this import (else updated)
    images: list[ImportedImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def lateral_only(self) -> bool:
        return LATERAL_ONLY in self.warnings


@dataclass
class ImportReport:
    """The outcome of one import; nothing in it is an exception."""

    source: str
    root: str
    files: int = 0  # files found under the root
    studies: list[ImportedStudy] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # "PATH: what" for files that were kept
    cancelled: bool = False
    not_processed: int = 0  # files left unread or unrecorded because of a cancel

    @property
    def images(self) -> int:
        return sum(len(s.images) for s in self.studies)

    @property
    def new_studies(self) -> int:
        return sum(1 for s in self.studies if s.new)

    def rejection(self, path: str) -> str | None:
        """Why ``path`` was rejected, or None."""
        for r in self.rejected:
            if r.path == str(path):
                return r.reason
        return None

    def summary(self) -> str:
        """One line for a status bar."""
        parts = [
            f"{len(self.studies)} {'study' if len(self.studies) == 1 else 'studies'} "
            f"({self.new_studies} new), {self.images} image(s)",
            f"{len(self.rejected)} file(s) rejected",
        ]
        warned = sum(1 for s in self.studies if s.warnings) + len(self.warnings)
        if warned:
            parts.append(f"{warned} warning(s)")
        if self.cancelled:
            parts.append(f"cancelled, {self.not_processed} file(s) not processed")
        return "; ".join(parts)


def study_warnings(images: list[ImportedImage]) -> list[str]:
    """Warnings about a study as a whole (its set of views)."""
    views = [i.view_position.upper() for i in images]
    if views and all(v in LATERAL_VIEWS for v in views):
        return [LATERAL_ONLY]
    return []
