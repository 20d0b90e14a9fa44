"""Plain, immutable snapshots that the storage service returns.

The GUI never holds ORM objects or sessions: every method of
:class:`app.storage.Storage` works in its own short transaction and hands back
these frozen dataclasses, safe to pass between threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any

from app.storage import models as m


def _snapshot(cls: type, row: Any, **derived: Any) -> Any:
    """``cls`` with each field read from the row attribute of the same name, unless in ``derived``."""
    return cls(**{f.name: derived[f.name] if f.name in derived else getattr(row, f.name)
                  for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class UserRecord:
    username: str
    display_name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == m.Role.ADMIN

    @classmethod
    def of(cls, row: m.User) -> UserRecord:
        return _snapshot(cls, row)


@dataclass(frozen=True, slots=True)
class PatientRecord:
    id: int
    patient_id: str
    name: str | None
    sex: str | None
    birth_date: date | None

    @classmethod
    def of(cls, row: m.Patient) -> PatientRecord:
        return _snapshot(cls, row)


@dataclass(frozen=True, slots=True)
class StudyRecord:
    id: int
    study_instance_uid: str
    patient_id: str | None  # the patient's DICOM PatientID
    accession_number: str | None
    study_date: date | None
    description: str | None
    source: str

    @classmethod
    def of(cls, row: m.Study) -> StudyRecord:
        patient = row.patient.patient_id if row.patient is not None else None
        return _snapshot(cls, row, patient_id=patient)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: int
    study_id: int
    sop_instance_uid: str
    path: str
    view_position: str | None
    rows: int | None
    columns: int | None
    photometric_interpretation: str | None
    pixel_spacing: str | None = None
    transfer_syntax_uid: str | None = None

    @classmethod
    def of(cls, row: m.Image) -> ImageRecord:
        return _snapshot(cls, row)


@dataclass(frozen=True, slots=True)
class ReportState:
    """The current report of a study; ``version`` 0 means no report was saved yet.

    Pass ``version`` back as ``expected_version`` when saving.
    """

    study_id: int
    text: str
    version: int
    status: str
    signed_by: str | None = None
    signed_at: datetime | None = None
    model_version: str | None = None
    updated_at: datetime | None = None

    @property
    def signed(self) -> bool:
        return self.status == m.ReportStatus.SIGNED

    @classmethod
    def of(cls, row: m.Report) -> ReportState:
        return _snapshot(cls, row, version=row.version_id)

    @classmethod
    def empty(cls, study_id: int) -> ReportState:
        return cls(study_id, "", 0, m.ReportStatus.DRAFT.value)


@dataclass(frozen=True, slots=True)
class ReportVersionRecord:
    version: int
    text: str
    author: str
    kind: str
    created_at: datetime

    @classmethod
    def of(cls, row: m.ReportVersion) -> ReportVersionRecord:
        return _snapshot(cls, row)


@dataclass(frozen=True, slots=True)
class FlagRecord:
    id: int
    study_id: int
    report_version: int | None
    sentence: str | None
    span: tuple[int, int] | None
    entity: str
    kind: str
    report_says: str
    image_probability: float
    image_suggests: str | None
    model_version: str
    decision: str
    dismiss_reason: str | None
    decided_by: str | None
    decided_at: datetime | None
    superseded: bool

    @property
    def reviewed(self) -> bool:
        return self.decision != m.Decision.NONE

    def describe(self) -> str:
        """``contradiction: Pneumothorax in "No pneumothorax."`` (for messages)."""
        where = f' in "{self.sentence}"' if self.sentence else ""
        return f"{self.kind}: {self.entity}{where}"

    @classmethod
    def of(cls, row: m.Flag) -> FlagRecord:
        span = None
        if row.span_start is not None and row.span_end is not None:
            span = (row.span_start, row.span_end)
        return _snapshot(cls, row, span=span, superseded=row.superseded_at is not None)


@dataclass(frozen=True, slots=True)
class ModelRecord:
    model_version: str
    path: str
    variant: str
    metrics: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    evaluation_passed: bool
    active: bool
    created_at: datetime
    activated_at: datetime | None
    registered_by: str | None

    @classmethod
    def of(cls, row: m.RegisteredModel) -> ModelRecord:
        return _snapshot(cls, row)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    username: str | None
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, row: m.AuditEntry) -> AuditRecord:
        return _snapshot(cls, row, details=dict(row.details or {}))
