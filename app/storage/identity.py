"""Who the person using Concord is: taken from what authenticated them, never from a name
they type.

* PostgreSQL: the connection's own role (``current_user``), authenticated by the
  server (password in ``~/.pgpass``, Kerberos, LDAP, certificates). When that
  role is a member of Concord's groups (:mod:`app.storage.security`) it is a
  *person*: their Concord role comes from their membership, and the server
  refuses anything done under another name. A connection as the database
  owner or a superuser is a *service* connection (set-up, migrations, tools):
  it may act for any user, as such a role can anyway.
* SQLite (one person's desktop): the operating-system user who runs Concord;
  the database file is readable and writable by that user only.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from app.storage.models import Role


@dataclass(frozen=True)
class Identity:
    """The authenticated identity of a storage connection."""

    username: str
    #: How it was authenticated, for messages ("PostgreSQL role", "operating-system user").
    source: str
    #: The database itself knows this person and refuses other names (a PostgreSQL person).
    enforced: bool = False
    #: The Concord role the database grants (PostgreSQL persons), else None (the users table).
    role: Role | None = None

    def refuse_other(self, username: str) -> str | None:
        """Why ``username`` cannot be used on this connection, or None when it can."""
        if not self.enforced or username == self.username:
            return None
        return (
            f"connected to the database as {self.username} ({self.source}); "
            f"cannot act as {username}"
        )


def os_username() -> str:
    """The operating-system user running Concord (letters, digits, '.', '_', '-')."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "user"
    cleaned = "".join(c for c in name if c.isalnum() or c in "._-")
    return cleaned or "user"


def connection_identity(engine: Engine) -> Identity:
    """The identity that ``engine``'s connections authenticate as."""
    if engine.dialect.name != "postgresql":
        return Identity(os_username(), "operating-system user")
    with engine.connect() as connection:
        name, person, role = connection.execute(
            sa.text(
                """
                SELECT current_user,
                       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'concord_radiologist')
                         AND pg_has_role(current_user, 'concord_radiologist', 'MEMBER')
                         AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'concord_admin')
                         AND pg_has_role(current_user, 'concord_admin', 'MEMBER')
                """
            )
        ).one()
    if not person:
        return Identity(str(name), "PostgreSQL service role")
    return Identity(str(name), "PostgreSQL role", enforced=True,
                    role=Role.ADMIN if role else Role.RADIOLOGIST)
