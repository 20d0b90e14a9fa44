"""Report states draft / preliminary / final (``signed`` becomes ``final``), addenda,
flags that cover several sentences or were raised on an image the model's image check
turned away (``unreliable``), and a final report that the database itself
keeps unchanged (its row, and its study's flags and decisions).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

OLD_STATUSES = ("draft", "signed")
NEW_STATUSES = ("draft", "preliminary", "final")
OLD_KINDS = ("autosave", "save", "sign", "import")
NEW_KINDS = (*OLD_KINDS, "preliminary")

FINAL_REFUSED = "the report is final: it and its flags can no longer change; add an addendum"


def _in(column: str, values: tuple[str, ...]) -> str:
    return "{} IN ({})".format(column, ", ".join(f"'{v}'" for v in values))


def _sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def upgrade() -> None:
    sqlite = _sqlite()
    with op.batch_alter_table("reports", recreate="always" if sqlite else "auto") as batch:
        batch.drop_constraint(op.f("ck_reports_status"), type_="check")
        batch.alter_column("status", type_=sa.String(12), existing_type=sa.String(8),
                           existing_nullable=False, existing_server_default="draft")
    op.execute("UPDATE reports SET status = 'final' WHERE status = 'signed'")
    with op.batch_alter_table("reports") as batch:
        batch.create_check_constraint(op.f("ck_reports_status"), _in("status", NEW_STATUSES))
    _set_version_kinds(NEW_KINDS)
    with op.batch_alter_table("flags") as batch:
        batch.add_column(sa.Column("repeats", sa.JSON, nullable=True))
        batch.add_column(sa.Column("unreliable", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    op.create_table(
        "report_addenda",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("report_id", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.current_timestamp()),
        sa.PrimaryKeyConstraint("id", name="pk_report_addenda"),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"],
                                name="fk_report_addenda_report_id_reports"),
        sa.ForeignKeyConstraint(["author"], ["users.username"],
                                name="fk_report_addenda_author_users"),
    )
    op.create_index("ix_report_addenda_report_id", "report_addenda", ["report_id"])
    _create_final_triggers()


def downgrade() -> None:
    _drop_final_triggers()
    op.drop_index("ix_report_addenda_report_id", table_name="report_addenda")
    op.drop_table("report_addenda")
    with op.batch_alter_table("flags") as batch:
        batch.drop_column("unreliable")
        batch.drop_column("repeats")
    sqlite = _sqlite()
    with op.batch_alter_table("reports", recreate="always" if sqlite else "auto") as batch:
        batch.drop_constraint(op.f("ck_reports_status"), type_="check")
    # a preliminary report was issued but is not final: a draft to the older schema
    op.execute("UPDATE reports SET status = 'draft' WHERE status = 'preliminary'")
    op.execute("UPDATE reports SET status = 'signed' WHERE status = 'final'")
    with op.batch_alter_table("reports") as batch:
        batch.alter_column("status", type_=sa.String(8), existing_type=sa.String(12),
                           existing_nullable=False, existing_server_default="draft")
        batch.create_check_constraint(op.f("ck_reports_status"), _in("status", OLD_STATUSES))


def _set_version_kinds(values: tuple[str, ...]) -> None:
    sqlite = _sqlite()
    if sqlite:
        # batch mode rebuilds the table, which would take the append-only triggers with it
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS report_versions_no_{event}")
    with op.batch_alter_table("report_versions", recreate="always" if sqlite else "auto") as batch:
        batch.drop_constraint(op.f("ck_report_versions_kind"), type_="check")
        batch.alter_column("kind", type_=sa.String(12), existing_type=sa.String(8),
                           existing_nullable=False)
        batch.create_check_constraint(op.f("ck_report_versions_kind"), _in("kind", values))
    if sqlite:
        _sqlite_append_only("report_versions")


def _sqlite_append_only(table: str) -> None:
    for event in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {event} refused'); END"
        )


# -- a final report does not change ------------------------------------------------------
# The service refuses these changes itself; the triggers make the database refuse
# them too, whoever asks (another tool, a bug, a hand-typed query, any role).

_FINAL_STUDY = "EXISTS (SELECT 1 FROM reports r WHERE r.study_id = {row}.study_id AND r.status = 'final')"


def _create_final_triggers() -> None:
    if _sqlite():
        _sqlite_append_only("report_addenda")
        raise_ = f"BEGIN SELECT RAISE(ABORT, '{FINAL_REFUSED}'); END"
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER reports_final_no_{event.lower()} BEFORE {event} ON reports "
                       f"WHEN OLD.status = 'final' {raise_}")
        for event, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD")):
            op.execute(f"CREATE TRIGGER flags_final_no_{event.lower()} BEFORE {event} ON flags "
                       f"WHEN {_FINAL_STUDY.format(row=row)} {raise_}")
        return
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION concord_refuse_final_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_TABLE_NAME = 'reports' THEN
                IF OLD.status = 'final' THEN
                    RAISE EXCEPTION '{FINAL_REFUSED}' USING ERRCODE = 'insufficient_privilege';
                END IF;
            ELSIF TG_OP = 'INSERT' THEN
                IF {_FINAL_STUDY.format(row="NEW")} THEN
                    RAISE EXCEPTION '{FINAL_REFUSED}' USING ERRCODE = 'insufficient_privilege';
                END IF;
            ELSIF {_FINAL_STUDY.format(row="OLD")} THEN
                RAISE EXCEPTION '{FINAL_REFUSED}' USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute("CREATE TRIGGER reports_final BEFORE UPDATE OR DELETE ON reports "
               "FOR EACH ROW EXECUTE FUNCTION concord_refuse_final_change()")
    op.execute("CREATE TRIGGER flags_final BEFORE INSERT OR UPDATE OR DELETE ON flags "
               "FOR EACH ROW EXECUTE FUNCTION concord_refuse_final_change()")
    op.execute("CREATE TRIGGER report_addenda_no_change BEFORE UPDATE OR DELETE ON report_addenda "
               "FOR EACH ROW EXECUTE FUNCTION concord_refuse_change()")
    op.execute("CREATE TRIGGER report_addenda_no_truncate BEFORE TRUNCATE ON report_addenda "
               "FOR EACH STATEMENT EXECUTE FUNCTION concord_refuse_change()")


def _drop_final_triggers() -> None:
    if _sqlite():
        for name in ("reports_final_no_update", "reports_final_no_delete", "flags_final_no_insert",
                     "flags_final_no_update", "flags_final_no_delete", "report_addenda_no_update",
                     "report_addenda_no_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        return
    op.execute("DROP TRIGGER IF EXISTS reports_final ON reports")
    op.execute("DROP TRIGGER IF EXISTS flags_final ON flags")
    op.execute("DROP TRIGGER IF EXISTS report_addenda_no_change ON report_addenda")
    op.execute("DROP TRIGGER IF EXISTS report_addenda_no_truncate ON report_addenda")
    op.execute("DROP FUNCTION IF EXISTS concord_refuse_final_change()")
