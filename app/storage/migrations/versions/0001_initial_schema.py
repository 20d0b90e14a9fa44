"""Initial schema: users, patients, studies, images, reports and their versions,
flags, the model registry and the audit log; append-only triggers.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

APPEND_ONLY = ("audit_log", "report_versions")


def _now() -> sa.TextClause:
    return sa.text("CURRENT_TIMESTAMP")


def _ts(name: str, *, nullable: bool = True, now: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=_now() if now else None,
    )


def _one_of(table: str, column: str, *values: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    # op.f(): the name is final, not to be run through the naming convention again.
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_{table}_{column}"))


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("role", sa.String(16), nullable=False, server_default="radiologist"),
        _ts("created_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        _one_of("users", "role", "radiologist", "admin"),
    )
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(324), nullable=True),
        sa.Column("sex", sa.String(16), nullable=True),
        sa.Column("birth_date", sa.Date, nullable=True),
        _ts("created_at", nullable=False, now=True),
        _ts("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="pk_patients"),
        sa.UniqueConstraint("patient_id", name="uq_patients_patient_id"),
    )
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.Integer, nullable=True),
        sa.Column("accession_number", sa.String(64), nullable=True),
        sa.Column("study_date", sa.Date, nullable=True),
        sa.Column("description", sa.String(256), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        _ts("created_at", nullable=False, now=True),
        _ts("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="pk_studies"),
        sa.UniqueConstraint("study_instance_uid", name="uq_studies_study_instance_uid"),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name="fk_studies_patient_id_patients"
        ),
        _one_of("studies", "source", "dicom-folder", "mimic", "demo"),
    )
    op.create_index("ix_studies_patient_id", "studies", ["patient_id"])
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("study_id", sa.Integer, nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("view_position", sa.String(16), nullable=True),
        sa.Column("rows", sa.Integer, nullable=True),
        sa.Column("columns", sa.Integer, nullable=True),
        sa.Column("photometric_interpretation", sa.String(16), nullable=True),
        _ts("created_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_images_sop_instance_uid"),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name="fk_images_study_id_studies", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_images_study_id", "images", ["study_id"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("study_id", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("status", sa.String(8), nullable=False, server_default="draft"),
        sa.Column("signed_by", sa.String(64), nullable=True),
        _ts("signed_at"),
        sa.Column("model_version", sa.String(128), nullable=True),
        _ts("created_at", nullable=False, now=True),
        _ts("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("study_id", name="uq_reports_study_id"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_reports_study_id_studies"),
        sa.ForeignKeyConstraint(
            ["signed_by"], ["users.username"], name="fk_reports_signed_by_users"
        ),
        _one_of("reports", "status", "draft", "signed"),
    )
    op.create_table(
        "report_versions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("report_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        _ts("created_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="pk_report_versions"),
        sa.UniqueConstraint("report_id", "version", name="uq_report_versions_report_id_version"),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], name="fk_report_versions_report_id_reports"
        ),
        sa.ForeignKeyConstraint(
            ["author"], ["users.username"], name="fk_report_versions_author_users"
        ),
        _one_of("report_versions", "kind", "autosave", "save", "sign"),
    )
    op.create_table(
        "flags",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("study_id", sa.Integer, nullable=False),
        sa.Column("report_id", sa.Integer, nullable=True),
        sa.Column("report_version", sa.Integer, nullable=True),
        sa.Column("sentence", sa.Text, nullable=True),
        sa.Column("span_start", sa.Integer, nullable=True),
        sa.Column("span_end", sa.Integer, nullable=True),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("report_says", sa.String(16), nullable=False),
        sa.Column("image_probability", sa.Float, nullable=False),
        sa.Column("image_suggests", sa.String(16), nullable=True),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False, server_default="none"),
        sa.Column("dismiss_reason", sa.Text, nullable=True),
        sa.Column("decided_by", sa.String(64), nullable=True),
        _ts("decided_at"),
        _ts("created_at", nullable=False, now=True),
        _ts("superseded_at"),
        sa.PrimaryKeyConstraint("id", name="pk_flags"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_flags_study_id_studies"),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name="fk_flags_report_id_reports"),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["users.username"], name="fk_flags_decided_by_users"
        ),
        _one_of("flags", "kind", "contradiction", "unsupported", "omission"),
        _one_of("flags", "report_says", "present", "absent", "uncertain", "not mentioned"),
        _one_of("flags", "decision", "none", "accepted", "dismissed", "edited"),
    )
    op.create_index("ix_flags_study_id", "flags", ["study_id"])
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=True),
        sa.Column("evaluation", sa.JSON, nullable=True),
        sa.Column("evaluation_passed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("registered_by", sa.String(64), nullable=True),
        _ts("created_at", nullable=False, now=True),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
        _ts("activated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("model_version", name="uq_models_model_version"),
    )
    # A partial unique index: at most one row with active = true.
    op.create_index(
        "uq_models_one_active",
        "models",
        ["active"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, nullable=False),
        _ts("at", nullable=False, now=True),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=True),
        sa.Column("target_id", sa.String(128), nullable=True),
        sa.Column("details", sa.JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_index("ix_audit_log_target", "audit_log", ["target_type", "target_id"])
    _create_append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_index("ix_audit_log_action", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("uq_models_one_active", table_name="models")
    op.drop_table("models")
    op.drop_index("ix_flags_study_id", table_name="flags")
    op.drop_table("flags")
    op.drop_table("report_versions")
    op.drop_table("reports")
    op.drop_index("ix_images_study_id", table_name="images")
    op.drop_table("images")
    op.drop_index("ix_studies_patient_id", table_name="studies")
    op.drop_table("studies")
    op.drop_table("patients")
    op.drop_table("users")


# -- append-only tables -----------------------------------------------------------------
# The service has no method that updates or deletes these rows; the triggers make
# the database refuse it too, whoever asks (another tool, a bug, a hand-typed query).


def _create_append_only_triggers() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for table in APPEND_ONLY:
            for event in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {event} refused'); END"
                )
    elif dialect == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION concord_refuse_change() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$
            """
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION concord_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION concord_refuse_change()"
            )
    else:
        raise NotImplementedError(f"Concord supports SQLite and PostgreSQL, not {dialect}")


def _drop_append_only_triggers() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for table in APPEND_ONLY:
            for event in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{event}")
    elif dialect == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS concord_refuse_change()")
