"""Concord's database: studies, reports and their versions, flags and the reviewer's
decisions, the model registry and an append-only audit log.

The application talks to it only through :class:`Storage`::

    storage = Storage.open()                    # per-user SQLite file, migrated to head
    storage.set_current_user("alice")
    state = storage.report(study_id)
    state = storage.save_report(study_id, text, expected_version=state.version)

See docs/storage.md.
"""

from app.storage.engine import default_database_path, resolve_url
from app.storage.errors import (
    ActivationRefused,
    ConcurrentEditError,
    DatabaseLocked,
    DatabaseUnavailable,
    DiskFull,
    FlagSuperseded,
    InvalidInput,
    MigrationError,
    ModelExists,
    NotFound,
    PermissionDenied,
    ReportSigned,
    SignOffBlocked,
    StorageError,
)
from app.storage.models import (
    Decision,
    FlagKind,
    ReportSays,
    ReportStatus,
    Role,
    StudySource,
    VersionKind,
)
from app.storage.records import (
    AddendumRecord,
    AuditRecord,
    FlagRecord,
    ImageRecord,
    ModelRecord,
    PatientRecord,
    ReportState,
    ReportVersionRecord,
    StudyRecord,
    UserRecord,
)
from app.storage.reports import ReviewState
from app.storage.service import Storage

__all__ = [
    "ActivationRefused",
    "AddendumRecord",
    "AuditRecord",
    "ConcurrentEditError",
    "DatabaseLocked",
    "DatabaseUnavailable",
    "Decision",
    "DiskFull",
    "FlagKind",
    "FlagRecord",
    "FlagSuperseded",
    "ImageRecord",
    "InvalidInput",
    "MigrationError",
    "ModelExists",
    "ModelRecord",
    "NotFound",
    "PatientRecord",
    "PermissionDenied",
    "ReportSays",
    "ReportSigned",
    "ReportState",
    "ReportStatus",
    "ReportVersionRecord",
    "ReviewState",
    "Role",
    "SignOffBlocked",
    "Storage",
    "StorageError",
    "StudyRecord",
    "StudySource",
    "UserRecord",
    "VersionKind",
    "default_database_path",
    "resolve_url",
]
