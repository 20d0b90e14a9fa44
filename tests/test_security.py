"""Who signs is who is signed in.

PostgreSQL: two people set up with the documented commands (``concord db setup``,
``concord db add-user``); each connects as their own role. The server itself refuses a
radiologist's raw UPDATE of a signed report or version, any change to the audit log,
model activation, and anything written under another person's name; sign-off records
the connection's identity. SQLite: the identity is the operating-system user and the
file is readable by that user only.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.cli import main as concord
from app.gui.launch import authenticated_user, sign_in
from app.session import ReadingSession, study_key
from app.storage import PermissionDenied, Storage, StorageError
from app.storage.identity import os_username
from core_model.inference import CheckResult, Flag

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = ["postgresql"] if os.environ.get("CONCORD_TEST_POSTGRES_URL") else []
PEOPLE = {"ada_admin": "admin", "rad_bob": "radiologist", "rad_cleo": "radiologist"}
GROUPS = ("concord_admin", "concord_radiologist")


def as_person(url: str, name: str) -> str:
    return sa.make_url(url).set(username=name, password=None).render_as_string(hide_password=False)


@pytest.fixture(params=POSTGRES)
def department(request):
    """An empty PostgreSQL database set up as the documentation says, with three people."""
    db_url = os.environ["CONCORD_TEST_POSTGRES_URL"]
    _empty(db_url)
    assert concord(["db", "--database", db_url, "setup"]) == 0
    for name, role in PEOPLE.items():
        assert concord(["db", "--database", db_url, "add-user", name, "--role", role]) == 0
    yield db_url
    _empty(db_url)


def _empty(db_url: str) -> None:
    """An empty database, and none of Concord's roles on the server (roles outlive databases)."""
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
        for role in (*PEOPLE, *GROUPS):
            if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")
    engine.dispose()


def refused(storage: Storage, statement: str, match: str = "") -> str:
    """Run ``statement`` on its own connection; returns the server's refusal."""
    with storage.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match=match) as err:
        with conn.begin():
            conn.exec_driver_sql(statement)
    return str(err.value.orig)


def signed_study(storage: Storage) -> int:
    """A study read, checked, decided and signed through the reading session."""
    study = storage.upsert_study({"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.99",
                                  "source": "dicom-folder", "patient": {"PatientID": "P9"}})
    reading = ReadingSession(storage)
    reading.checking = True
    reading.open(study.id)
    text = "No pneumothorax."
    flags = [Flag("contradiction", "Pneumothorax", "absent", 0.9, "present", sentence=text,
                  span=(0, len(text)))]
    assert reading.apply_check(study_key(study.id), text, CheckResult(flags, {}, [], "m-1", "x"))
    reading.decide(reading.reviews()[0].record_id, "dismissed", "Correctly described")
    reading.sign(text)
    return study.id


def test_each_person_is_their_database_role_and_the_server_enforces_it(department):
    bob = Storage.open(as_person(department, "rad_bob"))
    ada = Storage.open(as_person(department, "ada_admin"))
    try:
        assert (bob.identity.username, bob.identity.enforced, bob.current_user) == (
            "rad_bob", True, "rad_bob")
        assert bob.user("rad_bob").role == "radiologist" and ada.user("ada_admin").role == "admin"
        with pytest.raises(PermissionDenied, match="cannot act as ada_admin"):
            bob.set_current_user("ada_admin")
        with pytest.raises(PermissionDenied):
            with bob.as_user("ada_admin"):
                pass
        with pytest.raises(PermissionDenied, match="concord db add-user"):
            bob.ensure_user("mallory")
        with pytest.raises(PermissionDenied, match="cannot act as"):
            sign_in(bob, "ada_admin")
        assert authenticated_user(bob, None) == "rad_bob"
        with pytest.raises(PermissionDenied, match="--user ada_admin is not who you are"):
            authenticated_user(bob, "ada_admin")

        study = signed_study(bob)
        state = bob.report(study)
        assert (state.status, state.signed_by) == ("final", "rad_bob")
        assert bob.audit_log(action="report.sign")[0].username == "rad_bob"

        # raw SQL as the radiologist: refused by the server
        refused(bob, f"UPDATE reports SET text = 'changed' WHERE study_id = {study}", "final")
        refused(bob, "UPDATE report_versions SET text = 'changed'", "permission denied")
        refused(bob, "DELETE FROM report_versions", "permission denied")
        refused(bob, "DELETE FROM audit_log", "permission denied")
        refused(bob, "UPDATE audit_log SET username = 'ada_admin'", "permission denied")
        refused(bob, "TRUNCATE audit_log", "permission denied")
        refused(bob, "INSERT INTO audit_log (username, action) VALUES ('ada_admin', 'x')",
                "row-level security")
        refused(bob, "INSERT INTO models (model_version, path, variant, evaluation_passed, active) "
                     "VALUES ('evil', '/x', 'clip', true, true)", "permission denied")
        refused(bob, "UPDATE users SET role = 'admin' WHERE username = 'rad_bob'",
                "row-level security")
    finally:
        bob.close()

    # a second radiologist cannot sign or decide as the first
    cleo = Storage.open(as_person(department, "rad_cleo"))
    try:
        draft = cleo.upsert_study({"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.98",
                                   "source": "dicom-folder", "patient": {"PatientID": "P8"}})
        cleo.save_report(draft.id, "The heart is normal in size.", expected_version=0)
        [flag] = cleo.record_flags(draft.id, [Flag("omission", "Edema", "not mentioned", 0.8,
                                                   "present")], "m-1")
        refused(cleo, "UPDATE reports SET status = 'final', signed_by = 'rad_bob', "
                      f"signed_at = now() WHERE study_id = {draft.id}", "only rad_bob may sign")
        refused(cleo, "UPDATE flags SET decision = 'dismissed', decided_by = 'rad_bob', "
                      f"decided_at = now() WHERE id = {flag.id}", "only rad_bob may record")
        refused(cleo, "INSERT INTO report_versions (report_id, version, text, author, kind) "
                      "SELECT id, 99, text, 'rad_bob', 'save' FROM reports "
                      f"WHERE study_id = {draft.id}", "row-level security")
        state = cleo.report(draft.id)
        assert state.status == "draft" and state.signed_by is None
    finally:
        cleo.close()

    # only the admin registers and activates models
    try:
        ada.register_model("m-2", "/models/m-2", "clip-ng-dtcg")
        ada.set_evaluation("m-2", {"metrics": {}}, True)
        assert ada.activate_model("m-2").active
        assert ada.audit_log(action="model.activate")[0].username == "ada_admin"
    finally:
        ada.close()
    radiologist = Storage.open(as_person(department, "rad_bob"))
    try:
        with pytest.raises(StorageError, match="admin role"):
            radiologist.activate_model("m-2")
        refused(radiologist, "UPDATE models SET active = false", "permission denied")
    finally:
        radiologist.close()


def test_the_app_refuses_a_connection_that_is_not_a_person(department):
    with Storage.open(department) as service:  # the owner: set-up and tools, not reading
        with pytest.raises(PermissionDenied, match="not a Concord user role"):
            authenticated_user(service, None)


def test_a_person_cannot_migrate_and_is_told_who_can(department):
    engine = sa.create_engine(department)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0002'")
    engine.dispose()
    with pytest.raises(StorageError, match="concord db setup"):
        Storage.open(as_person(department, "rad_bob"))
    engine = sa.create_engine(department)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0003'")
    engine.dispose()


def test_db_script_prints_the_department_setup(capsys):
    assert concord(["db", "script", "--database-name", "radiology",
                    "--person", "ada", "admin"]) == 0
    script = capsys.readouterr().out
    assert "CREATE ROLE concord_radiologist NOLOGIN" in script
    assert "GRANT CONNECT ON DATABASE \"radiology\"" in script
    assert "GRANT concord_admin TO \"ada\";" in script
    assert "ENABLE ROW LEVEL SECURITY" in script
    assert concord(["db", "script", "--person", "bad;name", "admin"]) == 2


def test_db_commands_need_a_postgresql_database(tmp_path, capsys):
    assert concord(["db", "--database", f"sqlite:///{tmp_path / 'x.db'}", "setup"]) == 2
    assert "PostgreSQL" in capsys.readouterr().err


# ----------------------------------------------------------------------------- SQLite


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_the_sqlite_file_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "new" / "concord.db"
    with Storage.open(f"sqlite:///{path}") as store:
        store.ensure_user(os_username(), "admin")
        assert store.identity.username == os_username() and not store.identity.enforced
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for side in path.parent.glob("concord.db-*"):
        assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0
    path.chmod(0o644)  # an older file others could read is tightened on the next open
    Storage.open(f"sqlite:///{path}").close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_user_must_name_the_signed_in_os_user(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    env.pop("CONCORD_DATABASE_URL", None)
    env.pop("CONCORD_USER", None)
    done = subprocess.run([sys.executable, "-m", "app.cli", "--user", "someone-else",
                           "--screenshot", str(tmp_path / "x.png")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert f"--user someone-else is not who you are signed in as: the database knows you as " \
           f"{os_username()}" in done.stderr
    assert not (tmp_path / "x.png").exists()
    with Storage.open(f"sqlite:///{tmp_path / 'own.db'}") as store:
        assert authenticated_user(store, os_username()) == os_username()
        assert authenticated_user(store, None) == os_username()
