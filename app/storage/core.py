"""What every storage operation shares: the engine and its sessions, the current
user, one short transaction per operation with errors mapped to
:class:`StorageError`, role checks and audit entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.storage import engine as db
from app.storage import models as m
from app.storage.errors import (
    DatabaseLocked,
    DiskFull,
    NotFound,
    PermissionDenied,
    StorageError,
    classify_error,
    first_line,
)
from app.storage.identity import Identity, os_username
from app.storage.inputs import jsonable


class StorageCore:
    """The shared machinery of :class:`app.storage.Storage` (see there)."""

    def __init__(
        self,
        engine: Engine,
        *,
        user: str | None = None,
        busy_timeout: float = db.DEFAULT_BUSY_TIMEOUT_S,
        identity: Identity | None = None,
    ) -> None:
        self.engine = engine
        #: Who the connection authenticates as (:mod:`app.storage.identity`).
        self.identity = identity or Identity(os_username(), "operating-system user")
        self._refuse_other(user)
        self.busy_timeout = busy_timeout
        self._reader = sessionmaker(engine, expire_on_commit=False)
        self._writer = sessionmaker(db.write_engine(engine), expire_on_commit=False)
        self._user = user
        self._user_override: ContextVar[str | None] = ContextVar(
            f"concord_storage_user_{id(self)}", default=None
        )

    def close(self) -> None:
        """Release the connections; the object cannot be used afterwards."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def location(self) -> str:
        """The SQLite file, or the server URL without its password."""
        return db.describe_url(self.engine.url)

    @property
    def current_user(self) -> str | None:
        """The username that operations run as: :meth:`as_user`'s, else the default."""
        return self._user_override.get() or self._user

    def set_current_user(self, username: str | None) -> None:
        """The default user of every thread (the person signed in to the application).

        On a connection the database authenticates as a person (PostgreSQL),
        only that person's own name is accepted.
        """
        self._refuse_other(username)
        self._user = username

    @contextmanager
    def as_user(self, username: str) -> Iterator[Self]:
        """Run the operations inside the ``with`` block as ``username`` (this thread only);
        refused on a person's PostgreSQL connection for any name but their own."""
        self._refuse_other(username)
        token = self._user_override.set(username)
        try:
            yield self
        finally:
            self._user_override.reset(token)

    def _refuse_other(self, username: str | None) -> None:
        why = self.identity.refuse_other(username) if username is not None else None
        if why is not None:
            raise PermissionDenied(why)

    # -- transactions, roles, audit ----------------------------------------------------

    @contextmanager
    def _transaction(
        self, *, write: bool = False, unsaved_text: str | None = None
    ) -> Iterator[Session]:
        """One short transaction; database failures become one-line :class:`StorageError`."""
        session = (self._writer if write else self._reader)()
        try:
            yield session
            session.commit()
        except BaseException as exc:
            try:
                session.rollback()
            except Exception:  # the original error is the one worth reporting
                pass
            if isinstance(exc, StorageError):
                if exc.unsaved_text is None:
                    exc.unsaved_text = unsaved_text
                raise
            mapped = self._map_error(exc, unsaved_text)
            if mapped is not None:
                raise mapped from exc
            raise
        finally:
            session.close()

    def _map_error(self, exc: BaseException, unsaved_text: str | None) -> StorageError | None:
        kind = classify_error(exc)
        if kind is None:
            return None
        kept = "; your text is kept" if unsaved_text is not None else ""
        if kind is DatabaseLocked:
            message = (
                f"the database is locked by another program (waited {self.busy_timeout:g} s, "
                f"{self.location}); nothing was saved{kept}; try again"
            )
        elif kind is DiskFull:
            message = (
                f"the disk holding the database is full ({self.location}); nothing was "
                f"saved{kept}; free some space and try again"
            )
        else:
            message = (
                f"the database cannot be used ({self.location}): {first_line(exc)}; "
                f"nothing was saved{kept}"
            )
        return kind(message, unsaved_text=unsaved_text)

    def _actor(self, s: Session, action: str, *, admin: bool = False) -> m.User:
        username = self.current_user
        if username is None:
            raise PermissionDenied(f"{action} needs a signed-in user")
        user = user_row(s, username)
        if user is None:
            raise PermissionDenied(f"{action} refused: unknown user {username!r}")
        if admin and user.role != m.Role.ADMIN:
            raise PermissionDenied(f"{action} needs the admin role; {username} is a {user.role}")
        return user

    def _audit(
        self,
        s: Session,
        action: str,
        target_type: str | None = None,
        target_id: Any = None,
        details: Mapping[str, Any] | None = None,
    ) -> m.AuditEntry:
        row = m.AuditEntry(
            username=self.current_user,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            details=jsonable(details),
        )
        s.add(row)
        return row

    def _retry_on_conflict(self, operation: Any) -> Any:
        """Run an upsert; if a concurrent insert of the same key won the race, run it again."""
        try:
            return operation()
        except sa.exc.IntegrityError:
            return operation()


# -- row look-ups inside a session ---------------------------------------------------------


def user_row(s: Session, username: str) -> m.User | None:
    return s.scalars(sa.select(m.User).where(m.User.username == username)).one_or_none()


def admin_count(s: Session) -> int:
    count = sa.select(sa.func.count()).select_from(m.User).where(m.User.role == m.Role.ADMIN.value)
    return s.scalar(count) or 0


def study_row(s: Session, study_id: int) -> m.Study:
    row = s.get(m.Study, study_id)
    if row is None:
        raise NotFound(f"no study {study_id}")
    return row


def report_row(s: Session, study_id: int, *, for_update: bool = False) -> m.Report | None:
    """The study's report; ``for_update`` locks its row until the transaction ends.

    The lock serialises writers of one report on PostgreSQL (check, then write,
    with nobody in between); SQLite has no row locks and needs none, since a
    writing transaction holds the database's write lock from its BEGIN.
    """
    query = sa.select(m.Report).where(m.Report.study_id == study_id)
    if for_update:
        query = query.with_for_update()
    return s.scalars(query).one_or_none()


def model_row(s: Session, model_version: str) -> m.RegisteredModel | None:
    return s.scalars(
        sa.select(m.RegisteredModel).where(m.RegisteredModel.model_version == model_version)
    ).one_or_none()


def require_model(s: Session, model_version: str) -> m.RegisteredModel:
    row = model_row(s, model_version)
    if row is None:
        raise NotFound(f"no registered model {model_version}")
    return row


def active_model_row(s: Session) -> m.RegisteredModel | None:
    return s.scalars(
        sa.select(m.RegisteredModel).where(m.RegisteredModel.active.is_(True))
    ).one_or_none()
