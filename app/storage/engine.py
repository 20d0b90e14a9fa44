"""Database URLs, engines and schema migrations.

SQLite (the default, one file in the per-user data folder) and PostgreSQL are
supported. SQLite connections get foreign keys on, the WAL journal (readers
never wait for a writer), a busy timeout, and explicit transactions: writes
start with ``BEGIN IMMEDIATE`` so that two Concord processes saving at once
queue on the lock instead of failing half-way (see docs/storage.md).

Migrations are Alembic scripts in ``app/storage/migrations``; their
configuration is built here in code, there is no ``alembic.ini``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection, Engine

from app.storage.errors import InvalidInput

APP_NAME = "Concord"
DATABASE_FILENAME = "concord.db"
URL_ENVIRONMENT_VARIABLE = "CONCORD_DATABASE_URL"
MIGRATIONS = Path(__file__).resolve().with_name("migrations")
DEFAULT_BUSY_TIMEOUT_S = 5.0

# Execution option read by the SQLite "begin" hook: the BEGIN mode of a transaction.
SQLITE_BEGIN = "concord_sqlite_begin"


def default_database_path() -> Path:
    """``concord.db`` in the per-user data folder, e.g. ``~/.local/share/Concord/``."""
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False)) / DATABASE_FILENAME


def resolve_url(url: str | URL | None = None) -> URL:
    """The URL given, else ``$CONCORD_DATABASE_URL``, else the per-user SQLite file.

    A bare ``postgresql://`` URL uses psycopg 3 (the ``postgres`` extra).
    """
    if url is None:
        url = os.environ.get(URL_ENVIRONMENT_VARIABLE) or None
    if url is None:
        return URL.create("sqlite", database=str(default_database_path()))
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InvalidInput(f"not a database URL: {url!s}") from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise InvalidInput(
            f"unsupported database {backend!r}: use sqlite:///PATH or postgresql+psycopg://..."
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def describe_url(url: URL) -> str:
    """Where the data lives, for messages: the SQLite path, or the URL without password."""
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def make_engine(
    url: str | URL | None = None, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S
) -> Engine:
    """An engine for ``url`` (see :func:`resolve_url`) with Concord's connection settings."""
    url = resolve_url(url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, busy_timeout)
    # lock_timeout: a row lock held elsewhere fails after the timeout instead of hanging.
    options = f"-c lock_timeout={max(1, int(busy_timeout * 1000))}"
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"options": options})


def _sqlite_engine(url: URL, busy_timeout: float) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file:")
    if not in_memory:
        keep_private(Path(database).expanduser())
    engine = sa.create_engine(url, connect_args={"timeout": busy_timeout})

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite would otherwise issue its own BEGIN (DEFERRED) lazily; we issue
        # BEGIN ourselves in on_begin so a write transaction takes the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={max(0, int(busy_timeout * 1000))}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    def on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    sa.event.listen(engine, "connect", on_connect)
    sa.event.listen(engine, "begin", on_begin)
    return engine


def keep_private(path: Path) -> None:
    """Make the SQLite file (and its WAL / shared-memory files) readable and writable by
    its owner only: on one person's desktop the file is their reading record.

    A new folder is made private too; an existing file of ours that others could
    read is tightened. Files owned by another user are left alone (the open then
    fails with the operating system's reason, or works read-only as it allows).
    """
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            info = file.stat()
            if info.st_uid == os.getuid() and info.st_mode & 0o077:
                file.chmod(0o600)
        except OSError:
            continue


def write_engine(engine: Engine) -> Engine:
    """The same engine, whose transactions take SQLite's write lock when they begin."""
    return engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})


# -- migrations ---------------------------------------------------------------------------


def alembic_config(url: str | URL | None = None, *, engine: Engine | None = None) -> Config:
    """Alembic configuration for Concord's migrations, built without an ini file.

    Pass ``engine`` to migrate through it (its connection settings apply);
    otherwise ``env.py`` makes an engine for ``url``.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.set_main_option("truncate_slug_length", "40")
    config.attributes["url"] = engine.url if engine is not None else resolve_url(url)
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None, "no migration scripts found"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine=engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine=engine), revision)
