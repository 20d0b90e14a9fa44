"""``concord db``: setting up a shared PostgreSQL database for a department.

``concord db setup`` (run as the database owner) migrates the schema and
applies Concord's roles, grants, row-level security and identity triggers;
``concord db add-user NAME --role radiologist|admin`` creates a person's login
role in the right group; ``concord db script`` prints the same SQL for an
administrator to review or run with ``psql``. See docs/security.md.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from core_model.text.io import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "db",
        help="set up a shared PostgreSQL database: schema, roles, grants (docs/security.md)",
        description="Set up a PostgreSQL database for a department: each person connects as "
        "their own database role; the server enforces who may sign, decide and activate.",
    )
    p.add_argument("--database", metavar="URL", help="database URL (default $CONCORD_DATABASE_URL); "
                   "connect as the database owner")
    steps = p.add_subparsers(dest="db_command", metavar="STEP", required=True)
    steps.add_parser("setup", help="migrate the schema and apply roles, grants, policies, triggers "
                                   "(idempotent; run again after every upgrade)")
    add = steps.add_parser("add-user", help="create a person's login role in a Concord group")
    add.add_argument("name", help="the person's database role (their login name)")
    add.add_argument("--role", choices=("radiologist", "admin"), required=True)
    add.add_argument("--password", action="store_true",
                     help="ask for a password (otherwise the server's own authentication is used: "
                          "Kerberos, LDAP, certificates, or a password set by the administrator)")
    script = steps.add_parser("script", help="print the set-up as SQL (nothing is changed)")
    script.add_argument("--database-name", default="concord", help="the database's name in the script")
    script.add_argument("--person", nargs=2, action="append", default=[], metavar=("NAME", "ROLE"),
                        help="also create this person (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.storage import StorageError, security

    if args.db_command == "script":
        people = [tuple(x) for x in args.person]
        for name, role in people:
            if role not in security.GROUP_OF_ROLE:
                raise InputError(f"{name}: the role is radiologist or admin, not {role!r}")
        try:
            sys.stdout.write(security.script(args.database_name, people))
        except StorageError as exc:
            raise InputError(str(exc)) from exc
        return 0
    url = args.database or os.environ.get("CONCORD_DATABASE_URL")
    if not url or not url.startswith("postgresql"):
        raise InputError("give the PostgreSQL database with --database URL or $CONCORD_DATABASE_URL "
                         "(a desktop SQLite database needs no set-up)")
    import sqlalchemy as sa

    from app.storage import Storage

    try:
        storage = Storage.open(url)
    except StorageError as exc:
        raise InputError(str(exc)) from exc
    try:
        if storage.identity.enforced:
            raise InputError(f"connected as {storage.identity.username}, a Concord user; run "
                             "`concord db` as the database owner")
        with storage.engine.begin() as connection:
            if args.db_command == "setup":
                database = connection.exec_driver_sql("SELECT current_database()").scalar()
                security.apply(connection, security.setup_statements(str(database)))
                print(f"concord db setup: schema {storage.schema_revision}, roles "
                      f"{security.RADIOLOGIST_GROUP} and {security.ADMIN_GROUP} ready")
            else:
                if not security.groups_exist(connection):
                    raise InputError("run `concord db setup` first")
                password = None
                if args.password:
                    password = getpass.getpass(f"Password for {args.name}: ")
                    if not password:
                        raise InputError("empty password: nothing was changed")
                security.apply(connection, security.add_person_statements(args.name, args.role, password))
                print(f"concord db add-user: {args.name} is a Concord {args.role}")
    except sa.exc.DBAPIError as exc:
        raise InputError(f"the database refused: {str(exc.orig).splitlines()[0]}") from exc
    except StorageError as exc:
        raise InputError(str(exc)) from exc
    finally:
        storage.close()
    return 0
