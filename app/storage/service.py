"""The storage service: the only door between the application and its database.

:class:`Storage` opens (and migrates) the database and offers one method per
thing the application does: import studies, save reports, record and decide
flags, sign, manage the model registry, read the audit log. Each method runs
in its own short transaction, checks the current user's role, writes an audit
entry in the same transaction as the change, and returns frozen records
(:mod:`app.storage.records`), never ORM objects. It is safe to share one
instance between the GUI thread and worker threads.

See docs/storage.md for the schema, the roles and the guarantees.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from app.storage import engine as db
from app.storage import models as m
from app.storage.catalog import StudyCatalog
from app.storage.core import admin_count, user_row
from app.storage.errors import (
    DatabaseUnavailable,
    InvalidInput,
    MigrationError,
    PermissionDenied,
    StorageError,
    first_line,
)
from app.storage.identity import connection_identity
from app.storage.inputs import check_username, enum_value
from app.storage.records import AuditRecord, UserRecord
from app.storage.registry import ModelRegistry
from app.storage.reports import Reports


class Storage(StudyCatalog, Reports, ModelRegistry):
    """Concord's database. Create it with :meth:`Storage.open`.

    Methods by topic: users (:meth:`ensure_user`, :meth:`as_user`), studies
    (:class:`StudyCatalog`), reports, flags and sign-off (:class:`Reports`),
    models (:class:`ModelRegistry`), and the audit log (:meth:`audit`,
    :meth:`audit_log`).
    """

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str | URL | None = None,
        *,
        user: str | None = None,
        busy_timeout: float = db.DEFAULT_BUSY_TIMEOUT_S,
    ) -> Storage:
        """Open the database at ``url`` and migrate it to the current schema.

        ``url`` defaults to ``$CONCORD_DATABASE_URL``, else ``concord.db`` in the
        per-user data folder. Opening an up-to-date database changes nothing.
        """
        try:
            engine = db.make_engine(url, busy_timeout=busy_timeout)
        except OSError as exc:  # the database folder cannot be created
            raise DatabaseUnavailable(
                f"cannot create the database folder {exc.filename}: {exc.strerror}"
            ) from exc
        try:
            identity = connection_identity(engine)
            storage = cls(engine, user=user, busy_timeout=busy_timeout, identity=identity)
            storage._migrate()
            if identity.enforced:
                storage._record_person()
        except BaseException as exc:
            engine.dispose()
            if isinstance(exc, sa.exc.DBAPIError):
                raise DatabaseUnavailable(
                    f"cannot connect to {db.describe_url(engine.url)}: {first_line(exc)}"
                ) from exc
            raise
        return storage

    def _record_person(self) -> None:
        """A person on PostgreSQL: their users row, with the role their membership gives."""
        identity = self.identity
        assert identity.role is not None
        self._user = identity.username
        with self._transaction(write=True) as s:
            row = user_row(s, identity.username)
            if row is None:
                s.add(m.User(username=identity.username, role=identity.role.value))
                s.flush()
                self._audit(s, "user.create", "user", identity.username,
                            {"role": identity.role.value, "from": "database role"})
            elif row.role != identity.role:
                self._audit(s, "user.update", "user", identity.username,
                            {"role": [row.role, identity.role.value], "from": "database role"})
                row.role = identity.role.value

    def _migrate(self) -> None:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(db.alembic_config(engine=self.engine))
        head = script.get_current_head()
        try:
            before = db.current_revision(self.engine)
            if before == head:
                return
            if self.identity.enforced:
                raise MigrationError(
                    f"the database at {self.location} has schema {before!r}; this version of "
                    f"Concord needs {head!r}: the database administrator runs "
                    "`concord db setup` (docs/security.md)"
                )
            known = {rev.revision for rev in script.walk_revisions()}
            if before is not None and before not in known:
                raise MigrationError(
                    f"the database at {self.location} has schema {before!r}, newer than this "
                    f"version of Concord knows (up to {head!r}); update Concord"
                )
            db.upgrade(self.engine, "head")
            if self.engine.dialect.name == "postgresql":
                from app.storage import security

                with self.engine.begin() as connection:
                    if security.groups_exist(connection):  # new tables get the grants too
                        security.apply(connection, security.setup_statements(
                            connection.exec_driver_sql("SELECT current_database()").scalar()))
        except StorageError:
            raise
        except Exception as exc:
            mapped = self._map_error(exc, None)
            if mapped is not None:
                raise mapped from exc
            raise MigrationError(
                f"could not migrate the database at {self.location}: {first_line(exc)}"
            ) from exc
        with self._transaction(write=True) as s:
            self._audit(s, "schema.upgrade", "schema", head, {"from": before, "to": head})

    @property
    def schema_revision(self) -> str | None:
        return db.current_revision(self.engine)

    # -- users -------------------------------------------------------------------------

    def ensure_user(
        self,
        username: str,
        role: str | m.Role | None = None,
        *,
        display_name: str | None = None,
    ) -> UserRecord:
        """Create ``username`` if missing; change its role or display name if they differ.

        Anyone may create a radiologist. Creating an admin, or changing a role,
        needs the admin role, except for the very first admin of a database.
        ``role=None`` means radiologist for a new user and "unchanged" otherwise.
        """
        username = check_username(username)
        wanted = enum_value(m.Role, role, "role") if role is not None else None
        if self.identity.enforced and (username != self.identity.username or
                                       wanted not in (None, self.identity.role)):
            raise PermissionDenied(
                "on this database people and their roles are PostgreSQL roles: the database "
                "administrator adds them with `concord db add-user` (docs/security.md)"
            )
        with self._transaction(write=True) as s:
            row = user_row(s, username)
            if row is None:
                wanted = wanted or m.Role.RADIOLOGIST
                if wanted == m.Role.ADMIN and admin_count(s) > 0:
                    self._actor(s, f"creating the admin {username}", admin=True)
                row = m.User(username=username, role=wanted.value, display_name=display_name or "")
                s.add(row)
                s.flush()
                self._audit(s, "user.create", "user", username, {"role": wanted.value})
                return UserRecord.of(row)
            changes: dict[str, Any] = {}
            if wanted is not None and row.role != wanted:
                self._actor(s, f"changing the role of {username}", admin=True)
                if row.role == m.Role.ADMIN and admin_count(s) == 1:
                    raise PermissionDenied(
                        f"{username} is the only admin; make another admin first"
                    )
                changes["role"] = [row.role, wanted.value]
                row.role = wanted.value
            if display_name is not None and display_name != row.display_name:
                actor = self._actor(s, f"renaming {username}")
                if actor.username != username and actor.role != m.Role.ADMIN:
                    raise PermissionDenied(
                        f"only {username} or an admin may change {username}'s display name"
                    )
                changes["display_name"] = [row.display_name, display_name]
                row.display_name = display_name
            if changes:
                self._audit(s, "user.update", "user", username, changes)
            return UserRecord.of(row)

    def user(self, username: str) -> UserRecord | None:
        with self._transaction() as s:
            row = user_row(s, username)
            return UserRecord.of(row) if row is not None else None

    def users(self) -> list[UserRecord]:
        with self._transaction() as s:
            rows = s.scalars(sa.select(m.User).order_by(m.User.username))
            return [UserRecord.of(r) for r in rows]

    # -- audit log ---------------------------------------------------------------------

    def audit(
        self,
        action: str,
        target: tuple[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Append an entry for an action done outside storage (e.g. ``training.start``)."""
        if not action:
            raise InvalidInput("an audit entry needs an action")
        target_type, target_id = target if target is not None else (None, None)
        with self._transaction(write=True) as s:
            row = self._audit(s, action, target_type, target_id, details)
            s.flush()
            return AuditRecord.of(row)

    def audit_log(
        self,
        *,
        action: str | None = None,
        username: str | None = None,
        target: tuple[str, Any] | None = None,
        since: datetime | None = None,
        limit: int | None = 1000,
    ) -> list[AuditRecord]:
        """Audit entries, newest first, optionally filtered."""
        query = sa.select(m.AuditEntry).order_by(m.AuditEntry.id.desc())
        if action is not None:
            query = query.where(m.AuditEntry.action == action)
        if username is not None:
            query = query.where(m.AuditEntry.username == username)
        if target is not None:
            query = query.where(
                m.AuditEntry.target_type == target[0], m.AuditEntry.target_id == str(target[1])
            )
        if since is not None:
            query = query.where(m.AuditEntry.at >= since)
        if limit is not None:
            query = query.limit(limit)
        with self._transaction() as s:
            return [AuditRecord.of(r) for r in s.scalars(query)]
