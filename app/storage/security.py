"""Who is who on a shared PostgreSQL database, enforced by the server itself.

Each person connects as their own database role (password in ``~/.pgpass``,
or whatever the server authenticates with: Kerberos, LDAP, certificates).
Their role is a member of one of Concord's two group roles:

``concord_radiologist``
    reads everything; imports studies; writes reports, report versions and
    addenda *as themself*; records flags and decisions *as themself*; appends
    to the audit log *as themself*.
``concord_admin``
    a radiologist who also registers, evaluates and activates models.

The server enforces it, whatever program connects (raw SQL included):

* GRANTs: no UPDATE or DELETE on ``audit_log``, ``report_versions``,
  ``report_addenda``; no write on ``models`` except for ``concord_admin``.
* Row-level security: an audit entry, report version or addendum can only be
  written under the connection's own name (``current_user``); a person can
  only write their own row of ``users``, with the role their membership gives.
* Triggers: whoever signs or issues a report, or decides on a flag, is the
  connection's own role; a final report and its flags never change (that one
  holds for every role, see migration 0003).

The tables belong to the role that runs the migrations (the database owner):
``concord db setup`` runs them and applies everything here; it is idempotent
and is run again after every upgrade. See docs/security.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.storage.errors import InvalidInput
from app.storage.models import APPEND_ONLY_TABLES, Role

RADIOLOGIST_GROUP = "concord_radiologist"
ADMIN_GROUP = "concord_admin"
GROUP_OF_ROLE = {Role.RADIOLOGIST: RADIOLOGIST_GROUP, Role.ADMIN: ADMIN_GROUP}

#: Tables a radiologist may add rows to and change (within the triggers' rules).
WRITABLE = ("patients", "studies", "images", "reports", "flags", "users")
#: Tables a radiologist may only add rows to.
APPEND_ONLY = APPEND_ONLY_TABLES
#: Tables only an admin may change.
ADMIN_ONLY = ("models",)

#: Row-level security: (table, policy, command, USING, WITH CHECK); persons see every row.
POLICIES = (
    ("audit_log", "concord_own_entries", "INSERT", None, "username = current_user"),
    ("report_versions", "concord_own_versions", "INSERT", None, "author = current_user"),
    ("report_addenda", "concord_own_addenda", "INSERT", None, "author = current_user"),
    ("users", "concord_own_user_insert", "INSERT", None,
     "username = current_user AND role = concord_role()"),
    ("users", "concord_own_user_update", "UPDATE", "username = current_user",
     "username = current_user AND role = concord_role()"),
)

_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION concord_is_person() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{RADIOLOGIST_GROUP}')
       AND pg_has_role(current_user, '{RADIOLOGIST_GROUP}', 'MEMBER')
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
$$;

CREATE OR REPLACE FUNCTION concord_role() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ADMIN_GROUP}')
             AND pg_has_role(current_user, '{ADMIN_GROUP}', 'MEMBER') THEN 'admin'
        WHEN concord_is_person() THEN 'radiologist'
        ELSE NULL
    END
$$;

CREATE OR REPLACE FUNCTION concord_signer_is_self() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF concord_is_person()
       AND (NEW.signed_by IS DISTINCT FROM OLD.signed_by OR NEW.status IS DISTINCT FROM OLD.status
            OR NEW.signed_at IS DISTINCT FROM OLD.signed_at)
       AND NEW.signed_by IS NOT NULL AND NEW.signed_by <> current_user THEN
        RAISE EXCEPTION 'only % may sign as %', NEW.signed_by, NEW.signed_by
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION concord_decider_is_self() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT concord_is_person() OR NEW.decided_by IS NULL OR NEW.decided_by = current_user THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.decided_by IS NOT DISTINCT FROM OLD.decided_by
       AND NEW.decided_at IS NOT DISTINCT FROM OLD.decided_at
       AND NEW.decision IS NOT DISTINCT FROM OLD.decision
       AND NEW.dismiss_reason IS NOT DISTINCT FROM OLD.dismiss_reason THEN
        RETURN NEW;  -- the decision is untouched (the flag is only being superseded)
    END IF;
    -- a re-check carries an earlier decision over: it must exist, by that person, at that time
    IF TG_OP = 'INSERT' AND EXISTS (
        SELECT 1 FROM flags f
        WHERE f.study_id = NEW.study_id AND f.entity = NEW.entity AND f.kind = NEW.kind
          AND f.decided_by = NEW.decided_by AND f.decided_at = NEW.decided_at
          AND f.decision = NEW.decision
    ) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'only % may record a decision as %', NEW.decided_by, NEW.decided_by
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


def _quote(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-@]{0,62}", name):
        raise InvalidInput(
            f"{name!r} cannot be a database role name: use letters, digits, '_', '.', '-' or '@'"
        )
    return '"' + name.replace('"', '""') + '"'


def setup_statements(database: str) -> list[str]:
    """The SQL that sets Concord's roles, grants, policies and identity triggers (idempotent)."""
    out = []
    for group in (RADIOLOGIST_GROUP, ADMIN_GROUP):
        out.append(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
            f"'{group}') THEN CREATE ROLE {group} NOLOGIN; END IF; END $$"
        )
    out.append(f"GRANT {RADIOLOGIST_GROUP} TO {ADMIN_GROUP}")
    out.append(f"GRANT CONNECT ON DATABASE {_quote(database)} TO {RADIOLOGIST_GROUP}")
    out.append(f"GRANT USAGE ON SCHEMA public TO {RADIOLOGIST_GROUP}")
    out.append(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC, {RADIOLOGIST_GROUP}, {ADMIN_GROUP}")
    out.append(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {RADIOLOGIST_GROUP}")
    out.append(f"GRANT INSERT, UPDATE ON {', '.join(WRITABLE)} TO {RADIOLOGIST_GROUP}")
    out.append(f"GRANT INSERT ON {', '.join(APPEND_ONLY)} TO {RADIOLOGIST_GROUP}")
    out.append(f"GRANT INSERT, UPDATE ON {', '.join(ADMIN_ONLY)} TO {ADMIN_GROUP}")
    out.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {RADIOLOGIST_GROUP}")
    out += [s.strip() for s in _FUNCTIONS.split(";\n\n") if s.strip()]
    for table in sorted({p[0] for p in POLICIES}):
        out.append(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        out.append(f"DROP POLICY IF EXISTS concord_read ON {table}")
        out.append(f"CREATE POLICY concord_read ON {table} FOR SELECT USING (true)")
    for table, name, command, using, check in POLICIES:
        out.append(f"DROP POLICY IF EXISTS {name} ON {table}")
        clause = (f" USING ({using})" if using else "") + (f" WITH CHECK ({check})" if check else "")
        out.append(f"CREATE POLICY {name} ON {table} FOR {command} TO {RADIOLOGIST_GROUP}{clause}")
    out.append("DROP TRIGGER IF EXISTS reports_signer_is_self ON reports")
    out.append("CREATE TRIGGER reports_signer_is_self BEFORE UPDATE ON reports "
               "FOR EACH ROW EXECUTE FUNCTION concord_signer_is_self()")
    out.append("DROP TRIGGER IF EXISTS flags_decider_is_self ON flags")
    out.append("CREATE TRIGGER flags_decider_is_self BEFORE INSERT OR UPDATE ON flags "
               "FOR EACH ROW EXECUTE FUNCTION concord_decider_is_self()")
    return out


def add_person_statements(name: str, role: str | Role, password: str | None = None) -> list[str]:
    """SQL that creates a person's login role (if missing) in the group of ``role``."""
    group = GROUP_OF_ROLE[Role(role)]
    quoted = _quote(name)
    login = "LOGIN" + (" PASSWORD " + _literal(password) if password else "")
    other = ADMIN_GROUP if group == RADIOLOGIST_GROUP else None
    out = [
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
        f"{_literal(name)}) THEN CREATE ROLE {quoted} {login}; END IF; END $$",
        f"GRANT {group} TO {quoted}",
    ]
    if other:  # a change of role takes the other membership away
        out.append(f"REVOKE {other} FROM {quoted}")
    return out


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def groups_exist(connection: Connection) -> bool:
    """Whether the department set-up was applied to this server."""
    found = connection.execute(
        sa.text("SELECT count(*) FROM pg_roles WHERE rolname IN (:a, :b)"),
        {"a": RADIOLOGIST_GROUP, "b": ADMIN_GROUP},
    ).scalar()
    return found == 2


def apply(connection: Connection, statements: Iterable[str]) -> None:
    for statement in statements:
        connection.exec_driver_sql(statement.replace("%", "%%"))  # psycopg formats even without parameters


def script(database: str, people: Iterable[tuple[str, str]] = ()) -> str:
    """The whole set-up as one SQL script, for an administrator to read or run with psql."""
    lines = ["-- Concord: roles, grants, row-level security and identity triggers (docs/security.md)"]
    for statement in setup_statements(database):
        lines.append(statement.rstrip(";") + ";")
    for name, role in people:
        lines += [s + ";" for s in add_person_statements(name, role)]
    return "\n".join(lines) + "\n"
