"""Alembic environment: runs Concord's migrations on the engine or URL it is given.

Configured in code by :func:`app.storage.engine.alembic_config` (no ini file).
On SQLite, foreign-key enforcement is switched off for the duration of the
migration (Alembic's batch mode rebuilds tables by copy-and-rename, which
must not cascade or fail half-way) and the foreign keys are verified with
``PRAGMA foreign_key_check`` before the migration commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context
from sqlalchemy.engine import Connection

from app.storage.engine import SQLITE_BEGIN, make_engine
from app.storage.errors import MigrationError
from app.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run_offline() -> None:
    """``--sql`` mode: print the SQL (e.g. for a PostgreSQL administrator to review)."""
    context.configure(
        url=config.attributes["url"],
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.driver_connection  # no transaction is open yet
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()  # PRAGMA foreign_keys is ignored inside a transaction
        raw.execute("PRAGMA foreign_keys=ON")
        if raw.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
            connection.invalidate()  # never hand a connection without foreign keys back


def _migrate(connection: Connection) -> None:
    connection.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
    with _sqlite_foreign_keys_off(connection):
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,  # ALTER on SQLite works by rebuilding the table
            compare_type=True,
            # SQLite's DDL is transactional too: all pending revisions commit together
            # (after the foreign-key check below) or not at all.
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
            if connection.dialect.name == "sqlite":
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise MigrationError(
                        f"migration would leave {len(broken)} broken foreign key(s), "
                        f"first in table {broken[0][0]!r}; nothing was changed"
                    )


def run_online() -> None:
    engine = config.attributes.get("engine")
    owned = engine is None
    if owned:
        engine = make_engine(config.attributes["url"])
    try:
        with engine.connect() as connection:
            _migrate(connection)
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
