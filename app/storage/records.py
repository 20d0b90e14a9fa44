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
from core_model.domain.flags import FlagIdentity


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
class AddendumRecord:
    """A signed section added to a final report: its own author and time."""

    id: int
    text: str
    author: str
    created_at: datetime

    @classmethod
    def of(cls, row: m.ReportAddendum) -> AddendumRecord:
        return _snapshot(cls, row)


@dataclass(frozen=True, slots=True)
class ReportState:
    """The current report of a study; ``version`` 0 means no report was saved yet.

    Pass ``version`` back as ``expected_version`` when saving. ``status`` is
    one of :class:`~app.storage.models.ReportStatus`: ``amended`` is a final
    report with addenda. A final (or amended) report is :attr:`signed`: its
    text, flags and decisions never change; ``signed_by`` / ``signed_at`` name
    who issued it (also for a preliminary report).
    """

    study_id: int
    text: str
    version: int
    status: str
    signed_by: str | None = None
    signed_at: datetime | None = None
    model_version: str | None = None
    updated_at: datetime | None = None
    addenda: tuple[AddendumRecord, ...] = ()

    @property
    def signed(self) -> bool:
        """Final (or amended): nothing about the report changes any more."""
        return self.status in (m.ReportStatus.FINAL, m.ReportStatus.AMENDED)

    @property
    def preliminary(self) -> bool:
        return self.status == m.ReportStatus.PRELIMINARY

    @classmethod
    def of(cls, row: m.Report, addenda: tuple[AddendumRecord, ...] = ()) -> ReportState:
        status = row.status
        if status == m.ReportStatus.FINAL and addenda:
            status = m.ReportStatus.AMENDED.value
        return _snapshot(cls, row, version=row.version_id, status=status, addenda=tuple(addenda))

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
    #: Other sentences making the same statement, as (sentence, span) pairs.
    repeats: tuple[tuple[str, tuple[int, int]], ...] = ()
    #: Raised on an image the model's image check turned away (shown at the reader's request).
    unreliable: bool = False

    @property
    def reviewed(self) -> bool:
        return self.decision != m.Decision.NONE

    @property
    def sentences(self) -> tuple[str, ...]:
        first = (self.sentence,) if self.sentence is not None else ()
        return first + tuple(s for s, _ in self.repeats)

    def identity(self) -> FlagIdentity:
        """What the flag is (:mod:`core_model.domain.flags`): study, version, model, statement."""
        return FlagIdentity.of(
            study=self.study_id, report_version=self.report_version,
            model_version=self.model_version, kind=self.kind, entity=self.entity,
            report_says=self.report_says, sentences=self.sentences,
        )

    def describe(self) -> str:
        """``contradiction: Pneumothorax in "No pneumothorax."`` (for messages)."""
        where = " in " + " and ".join(f'"{s}"' for s in self.sentences) if self.sentences else ""
        return f"{self.kind}: {self.entity}{where}"

    @classmethod
    def of(cls, row: m.Flag) -> FlagRecord:
        span = None
        if row.span_start is not None and row.span_end is not None:
            span = (row.span_start, row.span_end)
        repeats = tuple(
            (str(r["sentence"]), (int(r["start"]), int(r["end"]))) for r in (row.repeats or [])
        )
        return _snapshot(
            cls, row, span=span, superseded=row.superseded_at is not None, repeats=repeats
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
