"""The database tables, as SQLAlchemy 2.0 typed declarative models.

Portable across SQLite and PostgreSQL: closed value sets are short strings
with CHECK constraints (no native ENUM types to migrate), JSON columns are
``sa.JSON``, and every timestamp is a timezone-aware UTC ``datetime``
(:class:`UTCDateTime`). The schema itself is created by the Alembic
migrations in ``app/storage/migrations``; a test compares the two.
The tables and the reasons for each column are described in docs/storage.md.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core_model.domain.flags import Decision, FlagKind

# Deterministic constraint names, so that migrations can refer to them (and
# Alembic's batch mode can rebuild SQLite tables) on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

USERNAME_LENGTH = 64
UID_LENGTH = 64  # DICOM UIDs are at most 64 characters (PS3.5 9.1)
MODEL_VERSION_LENGTH = 128


def utcnow() -> datetime:
    return datetime.now(UTC)


class Role(StrEnum):
    RADIOLOGIST = "radiologist"  # read, edit reports, review flags, sign
    ADMIN = "admin"  # also register, activate and roll back models


class StudySource(StrEnum):
    DICOM_FOLDER = "dicom-folder"
    MIMIC = "mimic"
    DEMO = "demo"


class ReportStatus(StrEnum):
    """Where a report is in its life (docs/storage.md, "Report states")."""

    DRAFT = "draft"  # being written; every save is a version
    PRELIMINARY = "preliminary"  # issued before final sign-off; still editable
    FINAL = "final"  # signed: the text, its flags and decisions never change again
    AMENDED = "amended"  # final, with one or more signed addenda (not stored: derived)


#: The statuses the ``reports.status`` column holds (``amended`` is final plus addenda).
STORED_REPORT_STATUSES = (ReportStatus.DRAFT, ReportStatus.PRELIMINARY, ReportStatus.FINAL)


class VersionKind(StrEnum):
    AUTOSAVE = "autosave"
    SAVE = "save"
    SIGN = "sign"
    IMPORT = "import"  # the text that came with an imported study (schema 0002)
    PRELIMINARY = "preliminary"  # issued as a preliminary report (schema 0003)


class ReportSays(StrEnum):
    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"
    NOT_MENTIONED = "not mentioned"


def one_of(column: str, values: Any) -> sa.CheckConstraint:
    """``column IN (...)``, named ``ck_<table>_<column>`` by the naming convention."""
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=column)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones, so values are
    converted to UTC and stored without an offset, and read back as UTC; a
    naive ``datetime`` is refused rather than guessed.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Concord stores timezone-aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON()}


def _created() -> Mapped[datetime]:
    return mapped_column(default=utcnow, server_default=sa.func.current_timestamp())


def _username_fk(*, nullable: bool) -> Mapped[Any]:
    return mapped_column(
        sa.String(USERNAME_LENGTH), sa.ForeignKey("users.username"), nullable=nullable
    )


class User(Base):
    __tablename__ = "users"
    __table_args__ = (one_of("role", Role),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(USERNAME_LENGTH), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(200), default="", server_default="")
    role: Mapped[str] = mapped_column(
        sa.String(16), default=Role.RADIOLOGIST.value, server_default=Role.RADIOLOGIST.value
    )
    created_at: Mapped[datetime] = _created()


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[str] = mapped_column(sa.String(64), unique=True)  # DICOM PatientID
    name: Mapped[str | None] = mapped_column(sa.String(324))  # DICOM PN: 5 x 64 + separators
    sex: Mapped[str | None] = mapped_column(sa.String(16))
    birth_date: Mapped[date | None] = mapped_column(sa.Date)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.current_timestamp()
    )


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (one_of("source", StudySource),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(sa.String(UID_LENGTH), unique=True)
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    accession_number: Mapped[str | None] = mapped_column(sa.String(64))
    study_date: Mapped[date | None] = mapped_column(sa.Date)
    description: Mapped[str | None] = mapped_column(sa.String(256))
    source: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.current_timestamp()
    )

    patient: Mapped[Patient | None] = relationship()


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    sop_instance_uid: Mapped[str] = mapped_column(sa.String(UID_LENGTH), unique=True)
    path: Mapped[str] = mapped_column(sa.Text)
    view_position: Mapped[str | None] = mapped_column(sa.String(16))
    rows: Mapped[int | None]
    columns: Mapped[int | None]
    photometric_interpretation: Mapped[str | None] = mapped_column(sa.String(16))
    #: "row\\column" in mm, as DICOM's PixelSpacing writes it (schema 0002).
    pixel_spacing: Mapped[str | None] = mapped_column(sa.String(64))
    transfer_syntax_uid: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = _created()


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (one_of("status", STORED_REPORT_STATUSES),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("studies.id"), unique=True)
    text: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    # Optimistic locking: every UPDATE is "... WHERE version_id = <the version read>".
    version_id: Mapped[int] = mapped_column(nullable=False)
    status: Mapped[str] = mapped_column(
        sa.String(12), default=ReportStatus.DRAFT.value, server_default=ReportStatus.DRAFT.value
    )
    signed_by: Mapped[str | None] = _username_fk(nullable=True)
    signed_at: Mapped[datetime | None]
    model_version: Mapped[str | None] = mapped_column(sa.String(MODEL_VERSION_LENGTH))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.current_timestamp()
    )

    __mapper_args__ = {"version_id_col": version_id}


class ReportVersion(Base):
    """One row per save of a report; append-only (database triggers refuse changes)."""

    __tablename__ = "report_versions"
    __table_args__ = (
        one_of("kind", VersionKind),
        sa.UniqueConstraint("report_id", "version", name="uq_report_versions_report_id_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(sa.ForeignKey("reports.id"))
    version: Mapped[int]
    text: Mapped[str] = mapped_column(sa.Text)
    author: Mapped[str] = _username_fk(nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(12))
    created_at: Mapped[datetime] = _created()


class ReportAddendum(Base):
    """A signed section added to a final report; append-only (database triggers refuse changes)."""

    __tablename__ = "report_addenda"

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(sa.ForeignKey("reports.id"), index=True)
    text: Mapped[str] = mapped_column(sa.Text)
    author: Mapped[str] = _username_fk(nullable=False)
    created_at: Mapped[datetime] = _created()


class Flag(Base):
    __tablename__ = "flags"
    __table_args__ = (
        one_of("kind", FlagKind),
        one_of("report_says", ReportSays),
        one_of("decision", Decision),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("studies.id"), index=True)
    report_id: Mapped[int | None] = mapped_column(sa.ForeignKey("reports.id"))
    report_version: Mapped[int | None]
    sentence: Mapped[str | None] = mapped_column(sa.Text)
    span_start: Mapped[int | None]
    span_end: Mapped[int | None]
    #: Other sentences making the same statement: [{"sentence", "start", "end"}] (schema 0003).
    repeats: Mapped[list[Any] | None] = mapped_column(sa.JSON)
    #: Raised on an image the image check turned away, shown at the reader's request (0003).
    unreliable: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    entity: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(16))
    report_says: Mapped[str] = mapped_column(sa.String(16))
    image_probability: Mapped[float] = mapped_column(sa.Float)
    image_suggests: Mapped[str | None] = mapped_column(sa.String(16))
    model_version: Mapped[str] = mapped_column(sa.String(MODEL_VERSION_LENGTH))
    decision: Mapped[str] = mapped_column(
        sa.String(16), default=Decision.NONE.value, server_default=Decision.NONE.value
    )
    dismiss_reason: Mapped[str | None] = mapped_column(sa.Text)
    decided_by: Mapped[str | None] = _username_fk(nullable=True)
    decided_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created()
    superseded_at: Mapped[datetime | None]  # set when a newer check of the study replaced it


class RegisteredModel(Base):
    __tablename__ = "models"
    __table_args__ = (
        # At most one active model, guaranteed by the database itself.
        sa.Index(
            "uq_models_one_active",
            "active",
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version: Mapped[str] = mapped_column(sa.String(MODEL_VERSION_LENGTH), unique=True)
    path: Mapped[str] = mapped_column(sa.Text)
    variant: Mapped[str] = mapped_column(sa.String(32))
    metrics: Mapped[dict[str, Any] | None]
    evaluation: Mapped[dict[str, Any] | None]
    evaluation_passed: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    registered_by: Mapped[str | None] = mapped_column(sa.String(USERNAME_LENGTH))
    created_at: Mapped[datetime] = _created()
    active: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    activated_at: Mapped[datetime | None]  # last time it became active; drives roll-back


class AuditEntry(Base):
    """Who did what, when; append-only (database triggers refuse changes)."""

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_target", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = _created()
    username: Mapped[str | None] = mapped_column(sa.String(USERNAME_LENGTH))
    action: Mapped[str] = mapped_column(sa.String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(sa.String(32))
    target_id: Mapped[str | None] = mapped_column(sa.String(128))
    details: Mapped[dict[str, Any] | None]


APPEND_ONLY_TABLES = ("audit_log", "report_versions", "report_addenda")
