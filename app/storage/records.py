"""Plain, immutable snapshots that the storage service returns.

The GUI never holds ORM objects or sessions: every method of
:class:`app.storage.Storage` works in its own short transaction and hands back
these frozen dataclasses, safe to pass between threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from app.storage import models as m


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
        return cls(row.username, row.display_name, row.role)


@dataclass(frozen=True, slots=True)
class PatientRecord:
    id: int
    patient_id: str
    name: str | None
    sex: str | None
    birth_date: date | None

    @classmethod
    def of(cls, row: m.Patient) -> PatientRecord:
        return cls(row.id, row.patient_id, row.name, row.sex, row.birth_date)


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
        return cls(
            row.id,
            row.study_instance_uid,
            row.patient.patient_id if row.patient is not None else None,
            row.accession_number,
            row.study_date,
            row.description,
            row.source,
        )


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

    @classmethod
    def of(cls, row: m.Image) -> ImageRecord:
        return cls(
            row.id,
            row.study_id,
            row.sop_instance_uid,
            row.path,
            row.view_position,
            row.rows,
            row.columns,
            row.photometric_interpretation,
        )


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
        return cls(
            row.study_id,
            row.text,
            row.version_id,
            row.status,
            row.signed_by,
            row.signed_at,
            row.model_version,
            row.updated_at,
        )

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
        return cls(row.version, row.text, row.author, row.kind, row.created_at)


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
        return cls(
            row.id,
            row.study_id,
            row.report_version,
            row.sentence,
            span,
            row.entity,
            row.kind,
            row.report_says,
            row.image_probability,
            row.image_suggests,
            row.model_version,
            row.decision,
            row.dismiss_reason,
            row.decided_by,
            row.decided_at,
            row.superseded_at is not None,
        )


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
        return cls(
            row.model_version,
            row.path,
            row.variant,
            row.metrics,
            row.evaluation,
            row.evaluation_passed,
            row.active,
            row.created_at,
            row.activated_at,
            row.registered_by,
        )


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
        return cls(
            row.id,
            row.at,
            row.username,
            row.action,
            row.target_type,
            row.target_id,
            dict(row.details or {}),
        )
