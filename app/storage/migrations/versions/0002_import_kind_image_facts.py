"""Report versions of kind ``import`` (text that came with an imported study), and
the image facts the importer reads from the header: pixel spacing and transfer syntax.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

OLD_KINDS = ("autosave", "save", "sign")
NEW_KINDS = (*OLD_KINDS, "import")


def _kinds(values: tuple[str, ...]) -> str:
    return "kind IN ({})".format(", ".join(f"'{v}'" for v in values))


def _set_kinds(values: tuple[str, ...]) -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    if sqlite:
        # SQLite cannot alter a CHECK constraint: batch mode rebuilds the table
        # (copy, drop, rename), which would take the append-only triggers with it.
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS report_versions_no_{event}")
    with op.batch_alter_table("report_versions", recreate="always" if sqlite else "auto") as batch:
        batch.drop_constraint(op.f("ck_report_versions_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_report_versions_kind"), _kinds(values))
    if sqlite:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER report_versions_no_{event.lower()} BEFORE {event} ON report_versions "
                f"BEGIN SELECT RAISE(ABORT, 'report_versions is append-only: {event} refused'); END"
            )


def upgrade() -> None:
    _set_kinds(NEW_KINDS)
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("pixel_spacing", sa.String(64), nullable=True))
        batch.add_column(sa.Column("transfer_syntax_uid", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("transfer_syntax_uid")
        batch.drop_column("pixel_spacing")
    # versions of kind import become saves (the audit log still says they were imported)
    op.execute("SELECT 1")  # report_versions is append-only: rows keep their kind
    _set_kinds(NEW_KINDS if _has_imports() else OLD_KINDS)


def _has_imports() -> bool:
    bind = op.get_bind()
    return bool(bind.execute(sa.text("SELECT 1 FROM report_versions WHERE kind = 'import' LIMIT 1")).first())
