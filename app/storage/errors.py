"""What storage operations raise.

Every error a user can act on is a :class:`StorageError` whose message is one
line, fit for a status bar or a dialog. When the operation was saving report
text, the exception carries that text in ``unsaved_text`` so the caller can
keep it on screen: a failed save never loses what the radiologist typed.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from app.storage.records import FlagRecord


class StorageError(Exception):
    """Base class; ``str(exc)`` is one line for the user."""

    def __init__(self, message: str, *, unsaved_text: str | None = None) -> None:
        super().__init__(message)
        self.unsaved_text = unsaved_text


class InvalidInput(StorageError, ValueError):
    """A value or key the schema does not accept (unknown field, bad kind, bad date)."""


class NotFound(StorageError, LookupError):
    """The study, report, flag, model or user does not exist."""


class PermissionDenied(StorageError):
    """The current user's role does not allow the operation (or there is no current user)."""


class DatabaseLocked(StorageError):
    """Another program held the database past the busy timeout; nothing was written."""


class DiskFull(StorageError):
    """The disk (or database quota) is full; nothing was written."""


class DatabaseUnavailable(StorageError):
    """The database could not be opened, reached or written for another reason."""


class ConcurrentEditError(StorageError):
    """Someone saved the report after the version this save was based on.

    ``their_text`` / ``their_version`` / ``their_author`` describe what is now
    stored; ``unsaved_text`` is the caller's text, which was not written.
    """

    def __init__(
        self,
        message: str,
        *,
        unsaved_text: str | None,
        their_text: str,
        their_version: int,
        their_author: str | None,
    ) -> None:
        super().__init__(message, unsaved_text=unsaved_text)
        self.their_text = their_text
        self.their_version = their_version
        self.their_author = their_author


class ReportSigned(StorageError):
    """The report is signed; signed reports are not edited, re-flagged or re-signed."""


class SignOffBlocked(StorageError):
    """Sign-off refused: flags without a decision remain (listed in ``unreviewed``)."""

    def __init__(self, message: str, *, unreviewed: Sequence[FlagRecord] = ()) -> None:
        super().__init__(message)
        self.unreviewed = list(unreviewed)


class FlagSuperseded(StorageError):
    """The flag belongs to an older check of the report; decide on the current flags."""


class ModelExists(StorageError):
    """A model with this ``model_version`` is already registered."""


class ActivationRefused(StorageError):
    """The model cannot become active (no passing evaluation, nothing to roll back to)."""


class MigrationError(StorageError):
    """The database schema could not be brought to the version this program needs."""


def classify_error(exc: BaseException) -> type[StorageError] | None:
    """Which :class:`StorageError` a low-level failure is, or None if it is not one of them."""
    if isinstance(exc, OSError):
        return DiskFull if exc.errno == errno.ENOSPC else DatabaseUnavailable
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return None
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorname", None) or getattr(orig, "sqlstate", None) or ""
    text = f"{orig or ''} {exc}".lower()
    if code in ("SQLITE_BUSY", "SQLITE_LOCKED", "55P03") or "database is locked" in text:
        return DatabaseLocked
    if "database table is locked" in text or "lock timeout" in text:
        return DatabaseLocked
    if code in ("SQLITE_FULL", "53100") or any(
        needle in text
        for needle in ("database or disk is full", "no space left on device", "disk full")
    ):
        return DiskFull
    return DatabaseUnavailable


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
