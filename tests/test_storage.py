"""The storage layer: migrations, reports and their versions, concurrency, flags and
sign-off, the model registry and its roles, the append-only audit log, error mapping.

Every test runs on its own SQLite file in ``tmp_path`` and, when
CONCORD_TEST_POSTGRES_URL names a test database (``.ci/run`` starts one), again on
an emptied PostgreSQL database: the same storage code and migrations serve both.
"""

from __future__ import annotations

import errno
import socket
import sqlite3
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from app.storage import (
    ActivationRefused,
    ConcurrentEditError,
    DatabaseLocked,
    DatabaseUnavailable,
    DiskFull,
    FlagSuperseded,
    InvalidInput,
    MigrationError,
    ModelExists,
    NotFound,
    PermissionDenied,
    ReportSigned,
    SignOffBlocked,
    Storage,
    StorageError,
)
from app.storage import engine as db
from app.storage.models import Base

TABLES = {
    "users",
    "patients",
    "studies",
    "images",
    "reports",
    "report_versions",
    "flags",
    "models",
    "audit_log",
    "report_addenda",
}

STUDY = {
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
    "AccessionNumber": "ACC001",
    "StudyDate": "20240131",
    "StudyDescription": "CHEST PA AND LATERAL",
    "source": "dicom-folder",
    "patient": {"PatientID": "P001", "PatientName": "Doe^Jane", "PatientSex": "F"},
}
IMAGES = [
    {
        "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.1.1",
        "path": "/data/study1/pa.dcm",
        "ViewPosition": "PA",
        "Rows": 2048,
        "Columns": 2500,
        "PhotometricInterpretation": "MONOCHROME2",
    },
    {
        "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.1.2",
        "path": "/data/study1/lat.dcm",
        "ViewPosition": "LL",
        "Rows": 2048,
        "Columns": 2048,
        "PhotometricInterpretation": "MONOCHROME1",
    },
]

PNEUMOTHORAX = {
    "kind": "contradiction",
    "entity": "Pneumothorax",
    "sentence": "No pneumothorax.",
    "span": [20, 36],
    "report_says": "absent",
    "probability": 0.91,
    "image_suggests": "present",
}
EFFUSION = {
    "kind": "omission",
    "entity": "Pleural Effusion",
    "sentence": None,
    "span": None,
    "report_says": "not mentioned",
    "probability": 0.74,
    "image_suggests": "present",
}


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


@pytest.fixture
def storage(url: str):
    st = Storage.open(url)
    st.ensure_user("ada", "admin", display_name="Ada Admin")  # the first admin: bootstrap
    st.ensure_user("rita", display_name="Rita Radiologist")
    st.set_current_user("rita")
    yield st
    st.close()


@pytest.fixture
def study_id(storage: Storage) -> int:
    return storage.upsert_study(STUDY, images=IMAGES).id


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def other_program(url: str, sql: str) -> None:
    """Run ``sql`` the way another program would: its own connection, not Concord's engine."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def append_only_triggers(conn: sa.Connection) -> set[str]:
    """Names of the triggers that keep the audit log and report versions append-only."""
    if conn.dialect.name == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    else:
        sql = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    return set(conn.exec_driver_sql(sql).scalars())


def expected_triggers(url: str) -> set[str]:
    """The append-only triggers, and those that keep a final report and its flags unchanged."""
    events = ("update", "delete") if is_sqlite(url) else ("change", "truncate")
    append_only = ("audit_log", "report_versions", "report_addenda")
    names = {f"{t}_no_{e}" for t in append_only for e in events}
    if is_sqlite(url):
        names |= {f"reports_final_no_{e}" for e in ("update", "delete")}
        names |= {f"flags_final_no_{e}" for e in ("insert", "update", "delete")}
    else:
        names |= {"reports_final", "flags_final"}
    return names


# -- migrations ----------------------------------------------------------------------------


def test_open_creates_every_table_from_empty(url: str) -> None:
    with Storage.open(url) as st:
        names = set(sa.inspect(st.engine).get_table_names())
        assert names == TABLES | {"alembic_version"}
        assert st.schema_revision == db.head_revision()
        with st.engine.connect() as conn:
            if is_sqlite(url):
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert append_only_triggers(conn) == expected_triggers(url)
        [entry] = st.audit_log()
        assert (entry.action, entry.details) == ("schema.upgrade", {"from": None, "to": db.head_revision()})


def test_upgrading_from_0001_keeps_versions_and_append_only_triggers(url: str) -> None:
    engine = db.make_engine(db.resolve_url(url))
    db.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO users (username, role) VALUES ('ada', 'admin')")
        conn.exec_driver_sql("INSERT INTO patients (patient_id) VALUES ('P1')")
        conn.exec_driver_sql(
            "INSERT INTO studies (study_instance_uid, patient_id, source) VALUES ('1.2.3', 1, 'demo')")
        conn.exec_driver_sql(
            "INSERT INTO reports (study_id, text, version_id, status) VALUES (1, 'old text', 1, 'draft')")
        conn.exec_driver_sql(
            "INSERT INTO report_versions (report_id, version, text, author, kind) "
            "VALUES (1, 1, 'old text', 'ada', 'save')")
        with pytest.raises(sa.exc.IntegrityError):
            with conn.begin_nested():
                conn.exec_driver_sql(
                    "INSERT INTO report_versions (report_id, version, text, author, kind) "
                    "VALUES (1, 2, 'x', 'ada', 'import')")
    engine.dispose()
    with Storage.open(url) as st:
        assert st.schema_revision == db.head_revision()
        st.set_current_user("ada")
        [version] = st.report_history(1)
        assert (version.text, version.kind) == ("old text", "save")
        st.save_report(1, "imported text", kind="import", expected_version=1)
        assert st.report_history(1)[-1].kind == "import"
        with st.engine.begin() as conn, pytest.raises(sa.exc.DatabaseError, match="append-only"):
            conn.exec_driver_sql("UPDATE report_versions SET text = 'changed'")
        image = st.upsert_images(1, [{"SOPInstanceUID": "1.2.3.4", "path": "/x.dcm",
                                      "PixelSpacing": "0.139\\0.139",
                                      "TransferSyntaxUID": "1.2.840.10008.1.2.1"}])[0]
        assert (image.pixel_spacing, image.transfer_syntax_uid) == ("0.139\\0.139", "1.2.840.10008.1.2.1")


def test_models_and_migrations_describe_the_same_schema(url: str) -> None:
    with Storage.open(url) as st, st.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_open_twice_is_idempotent(url: str) -> None:
    with Storage.open(url, user="ada") as first:
        first.ensure_user("ada", "admin")
        first.upsert_study(STUDY)
    with Storage.open(url, user="ada") as second:
        assert second.schema_revision == db.head_revision()
        assert len(second.studies()) == 1
        assert [e.action for e in second.audit_log(action="schema.upgrade")] == ["schema.upgrade"]


def test_downgrade_to_base_and_upgrade_again(url: str) -> None:
    with Storage.open(url) as st:
        db.downgrade(st.engine, "base")
        assert set(sa.inspect(st.engine).get_table_names()) == {"alembic_version"}
        assert st.schema_revision is None
        db.upgrade(st.engine, "head")
        assert set(sa.inspect(st.engine).get_table_names()) == TABLES | {"alembic_version"}
        with st.engine.connect() as conn:
            if is_sqlite(url):
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert append_only_triggers(conn) == expected_triggers(url)


def test_a_database_from_a_newer_concord_is_refused(url: str) -> None:
    Storage.open(url).close()
    other_program(url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(MigrationError, match="schema '9999', newer than this version"):
        Storage.open(url)


def test_an_unusable_location_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseUnavailable, match="cannot create the database folder"):
        Storage.open(f"sqlite:///{blocker / 'sub' / 'concord.db'}")


def test_an_unreachable_database_server_is_one_clear_error() -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://concord:secret@127.0.0.1:{port}/concord"
    with pytest.raises(DatabaseUnavailable) as info:
        Storage.open(url)
    message = str(info.value)
    assert "\n" not in message and f"127.0.0.1:{port}" in message
    assert "secret" not in message  # the password never reaches an error message or log


def test_default_database_is_in_the_per_user_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import platformdirs

    def user_data_dir(appname: str, appauthor: object = None) -> str:
        return str(tmp_path / "data" / appname)

    monkeypatch.delenv(db.URL_ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(platformdirs, "user_data_dir", user_data_dir)
    expected = tmp_path / "data" / "Concord" / "concord.db"
    assert db.resolve_url().database == str(expected)
    with Storage.open() as st:
        assert st.location == str(expected)
    assert expected.is_file()
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv(db.URL_ENVIRONMENT_VARIABLE, f"sqlite:///{other}")
    assert db.resolve_url().database == str(other)
    assert db.resolve_url("postgresql://u:secret@host/concord").drivername == "postgresql+psycopg"
    with pytest.raises(InvalidInput, match="unsupported database"):
        db.resolve_url("mysql://host/db")


# -- users and roles -----------------------------------------------------------------------


def test_users_roles_and_the_first_admin(storage: Storage) -> None:
    assert {u.username: u.role for u in storage.users()} == {"ada": "admin", "rita": "radiologist"}
    # once an admin exists, only an admin makes another or changes a role
    with pytest.raises(PermissionDenied, match="admin role"):
        storage.ensure_user("mallory", "admin")
    with pytest.raises(PermissionDenied, match="admin role"):
        storage.ensure_user("rita", "admin")
    assert storage.ensure_user("rita").role == "radiologist"  # role=None: unchanged
    with storage.as_user("ada"):
        assert storage.ensure_user("rita", "admin").is_admin
        storage.ensure_user("rita", "radiologist")
        with pytest.raises(PermissionDenied, match="only admin"):
            storage.ensure_user("ada", "radiologist")
    with pytest.raises(InvalidInput, match="role must be one of"):
        storage.ensure_user("bob", "superuser")


def test_as_user_applies_to_this_thread_only(storage: Storage) -> None:
    seen: list[str | None] = []
    with storage.as_user("ada"):
        assert storage.current_user == "ada"
        worker = threading.Thread(target=lambda: seen.append(storage.current_user))
        worker.start()
        worker.join()
    assert seen == ["rita"]  # the worker runs as the signed-in (default) user
    assert storage.current_user == "rita"


def test_mutations_need_a_known_user(storage: Storage, study_id: int) -> None:
    storage.set_current_user(None)
    with pytest.raises(PermissionDenied, match="signed-in user") as info:
        storage.save_report(study_id, "Text.", expected_version=0)
    assert info.value.unsaved_text == "Text."
    with storage.as_user("nobody"), pytest.raises(PermissionDenied, match="unknown user"):
        storage.upsert_study(STUDY)


# -- patients, studies, images -------------------------------------------------------------


def test_upsert_study_patient_and_images(storage: Storage) -> None:
    study = storage.upsert_study(STUDY, images=IMAGES)
    assert study.study_instance_uid == STUDY["StudyInstanceUID"]
    assert (study.patient_id, study.accession_number) == ("P001", "ACC001")
    assert study.study_date == date(2024, 1, 31)
    assert [(i.view_position, i.rows, i.columns) for i in storage.images(study.id)] == [
        ("PA", 2048, 2500),
        ("LL", 2048, 2048),
    ]
    again = storage.upsert_study(
        {"study_instance_uid": STUDY["StudyInstanceUID"], "description": "CHEST PA"}
    )
    assert again.id == study.id
    assert (again.description, again.accession_number) == ("CHEST PA", "ACC001")
    patient = storage.upsert_patient({"PatientID": "P001", "PatientBirthDate": "19700102"})
    assert (patient.name, patient.birth_date) == ("Doe^Jane", date(1970, 1, 2))
    moved = dict(IMAGES[0], path="/moved/pa.dcm")
    [image] = storage.upsert_images(study.id, [moved])
    assert image.path == "/moved/pa.dcm"
    assert len(storage.images(study.id)) == 2
    assert storage.study_by_uid("9.9.9") is None
    with pytest.raises(InvalidInput, match="unknown study field"):
        storage.upsert_study({"StudyInstanceUID": "1.2.3", "source": "demo", "Modality": "CR"})
    with pytest.raises(InvalidInput, match="source must be one of"):
        storage.upsert_study({"StudyInstanceUID": "1.2.3", "source": "pacs"})
    with pytest.raises(InvalidInput, match="source is required"):
        storage.upsert_study({"StudyInstanceUID": "1.2.3"})
    with pytest.raises(InvalidInput, match="not a date"):
        storage.upsert_study({"StudyInstanceUID": "1.2.3", "source": "demo", "StudyDate": "31/01"})
    with pytest.raises(NotFound):
        storage.study(999)
    assert [e.action for e in reversed(storage.audit_log(username="rita"))] == [
        "study.create",
        "study.update",
        "patient.upsert",
        "images.upsert",
    ]


# -- reports -------------------------------------------------------------------------------


def test_every_save_is_a_version(storage: Storage, study_id: int) -> None:
    state = storage.report(study_id)
    assert (state.version, state.text, state.status) == (0, "", "draft")
    state = storage.save_report(study_id, "FINDINGS: Clear lungs.", expected_version=0)
    assert state.version == 1
    state = storage.autosave(study_id, "FINDINGS: Clear lungs. No eff", expected_version=1)
    state = storage.autosave(study_id, "FINDINGS: Clear lungs. No effusion.", expected_version=2)
    same = storage.autosave(study_id, state.text, expected_version=state.version)
    assert same.version == state.version == 3  # unchanged text: no new version
    state = storage.save_report(study_id, state.text, expected_version=3)
    history = storage.report_history(study_id)
    assert [(v.version, v.kind, v.author) for v in history] == [
        (1, "save", "rita"),
        (2, "autosave", "rita"),
        (3, "autosave", "rita"),
        (4, "save", "rita"),
    ]
    assert history[0].text == "FINDINGS: Clear lungs."
    assert storage.report(study_id).text == "FINDINGS: Clear lungs. No effusion."
    assert all(v.created_at.tzinfo is UTC for v in history)
    assert datetime.now(UTC) - history[-1].created_at < timedelta(minutes=5)
    with pytest.raises(InvalidInput, match="sign"):
        storage.save_report(study_id, "x", kind="sign", expected_version=4)


def test_stale_save_from_another_instance_raises_and_keeps_both_texts(
    url: str, storage: Storage, study_id: int
) -> None:
    with Storage.open(url, user="ada") as other:
        mine = storage.report(study_id)
        theirs = other.report(study_id)
        assert mine.version == theirs.version == 0
        other.save_report(study_id, "Their text.", expected_version=theirs.version)
        with pytest.raises(ConcurrentEditError) as info:
            storage.save_report(study_id, "My text.", expected_version=mine.version)
        err = info.value
        assert (err.their_text, err.their_version, err.their_author) == ("Their text.", 1, "ada")
        assert err.unsaved_text == "My text."
        assert "\n" not in str(err)
        with pytest.raises(ConcurrentEditError):  # autosave is checked the same way
            storage.autosave(study_id, "My text.", expected_version=0)
        assert storage.report(study_id).text == "Their text."
        assert len(storage.report_history(study_id)) == 1
        # the caller merges and saves on top of their version
        merged = storage.save_report(study_id, "Merged.", expected_version=err.their_version)
        assert merged.version == 2
        assert other.report(study_id).text == "Merged."


def test_simultaneous_saves_one_wins_the_other_is_told(
    url: str, storage: Storage, study_id: int
) -> None:
    storage.save_report(study_id, "Base.", expected_version=0)
    other = Storage.open(url, user="ada")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def save(st: Storage, text: str) -> None:
        barrier.wait()
        try:
            st.save_report(study_id, text, expected_version=1)
            outcomes.append("saved")
        except ConcurrentEditError as exc:
            outcomes.append(f"conflict:{exc.unsaved_text}")

    threads = [
        threading.Thread(target=save, args=(storage, "From rita.")),
        threading.Thread(target=save, args=(other, "From ada.")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert sorted(o.split(":")[0] for o in outcomes) == ["conflict", "saved"]
    final = storage.report(study_id)
    assert final.version == 2
    assert [v.version for v in storage.report_history(study_id)] == [1, 2]
    loser = next(o for o in outcomes if o.startswith("conflict")).split(":", 1)[1]
    assert final.text != loser


# -- flags and sign-off --------------------------------------------------------------------


def test_sign_off_is_blocked_until_every_flag_is_reviewed(storage: Storage, study_id: int) -> None:
    text = "FINDINGS: Heart size normal. No pneumothorax."
    state = storage.save_report(study_id, text, expected_version=0)
    flags = storage.record_flags(study_id, [PNEUMOTHORAX, EFFUSION], "m-001")
    assert [(f.kind, f.entity, f.span) for f in flags] == [
        ("contradiction", "Pneumothorax", (20, 36)),
        ("omission", "Pleural Effusion", None),
    ]
    assert flags[0].report_version == state.version
    assert not storage.can_sign(study_id)
    with pytest.raises(SignOffBlocked) as info:
        storage.sign(study_id, "m-001")
    assert "2 flag(s) not reviewed" in str(info.value)
    assert "Pneumothorax" in str(info.value) and "Pleural Effusion" in str(info.value)
    assert {f.id for f in info.value.unreviewed} == {f.id for f in flags}

    storage.decide_flag(flags[0].id, "dismissed", reason="  skin fold  ")
    assert [f.entity for f in storage.unreviewed_flags(study_id)] == ["Pleural Effusion"]
    with pytest.raises(SignOffBlocked, match="1 flag"):
        storage.sign(study_id, "m-001")
    decided = storage.decide_flag(flags[1].id, "accepted")
    assert (decided.decision, decided.decided_by) == ("accepted", "rita")
    assert decided.decided_at is not None and decided.decided_at.tzinfo is UTC
    assert storage.flags(study_id)[0].dismiss_reason == "skin fold"
    # accepted, but the report still lacks the finding: the acceptance is not resolved
    with pytest.raises(SignOffBlocked, match="accepted or marked for an edit"):
        storage.sign(study_id, "m-001")
    storage.decide_flag(flags[1].id, "dismissed", reason="not seen on the image")
    assert storage.can_sign(study_id)

    signed = storage.sign(study_id, "m-001", expected_version=state.version)
    assert (signed.status, signed.signed_by, signed.model_version) == ("final", "rita", "m-001")
    assert signed.version == state.version + 1
    assert storage.report_history(study_id)[-1].kind == "sign"
    assert not storage.can_sign(study_id)
    with pytest.raises(ReportSigned) as edit:
        storage.save_report(study_id, "Changed.", expected_version=signed.version)
    assert edit.value.unsaved_text == "Changed."
    with pytest.raises(ReportSigned):
        storage.record_flags(study_id, [], "m-001")
    with pytest.raises(ReportSigned):
        storage.decide_flag(flags[0].id, "none")
    with pytest.raises(ReportSigned):
        storage.sign(study_id, "m-001")


def test_a_new_check_supersedes_flags_and_keeps_identical_decisions(
    storage: Storage, study_id: int
) -> None:
    storage.save_report(study_id, "No pneumothorax.", expected_version=0)
    first = storage.record_flags(study_id, [PNEUMOTHORAX, EFFUSION], "m-001")
    storage.decide_flag(first[0].id, "dismissed", reason="skin fold")
    second = storage.record_flags(study_id, [PNEUMOTHORAX, EFFUSION], "m-001")
    assert [f.decision for f in second] == ["dismissed", "none"]
    assert second[0].dismiss_reason == "skin fold"
    assert [f.id for f in storage.flags(study_id)] == [f.id for f in second]
    assert len(storage.flags(study_id, include_superseded=True)) == 4
    with pytest.raises(FlagSuperseded):
        storage.decide_flag(first[1].id, "accepted")
    # a different model's check is reviewed afresh
    third = storage.record_flags(study_id, [PNEUMOTHORAX], "m-002")
    assert [f.decision for f in third] == ["none"]
    undone = storage.decide_flag(third[0].id, "edited")
    undone = storage.decide_flag(third[0].id, "none")
    assert (undone.decision, undone.decided_by, undone.decided_at) == ("none", None, None)
    with pytest.raises(NotFound):
        storage.decide_flag(9999, "accepted")
    with pytest.raises(InvalidInput, match="decision must be one of"):
        storage.decide_flag(third[0].id, "ignored")


def test_flags_accept_core_model_flag_objects(storage: Storage, study_id: int) -> None:
    from core_model.inference import Flag

    flag = Flag("unsupported", "Edema", "present", 0.08, "absent", "Mild edema.", (0, 11))
    [stored] = storage.record_flags(study_id, [flag], "m-001")
    assert (stored.kind, stored.report_says, stored.span, stored.image_probability) == (
        "unsupported",
        "present",
        (0, 11),
        pytest.approx(0.08),
    )
    assert stored.report_version is None  # checked before the first save


def test_an_empty_report_cannot_be_signed(storage: Storage, study_id: int) -> None:
    assert not storage.can_sign(study_id)
    with pytest.raises(SignOffBlocked, match="empty"):
        storage.sign(study_id, None)


# -- model registry ------------------------------------------------------------------------


def register(storage: Storage, version: str, *, passed: bool) -> None:
    storage.register_model(version, f"/models/{version}", "clip-ng-dtcg", {"auc": 0.8})
    storage.set_evaluation(version, {"cxr_align": 0.7}, passed)


def test_model_registry_is_admin_only(storage: Storage) -> None:
    with storage.as_user("ada"):
        register(storage, "m-001", passed=True)
    for attempt in (
        lambda: storage.register_model("m-002", "/models/m-002", "clip"),
        lambda: storage.set_evaluation("m-001", {}, True),
        lambda: storage.activate_model("m-001"),
        lambda: storage.roll_back(),
    ):
        with pytest.raises(PermissionDenied, match="needs the admin role; rita is a radiologist"):
            attempt()
    assert storage.active_model() is None
    assert [m.model_version for m in storage.models()] == ["m-001"]


def test_activation_needs_a_passed_evaluation_and_leaves_exactly_one_active(
    storage: Storage,
) -> None:
    storage.set_current_user("ada")
    register(storage, "m-001", passed=True)
    register(storage, "m-002", passed=False)
    storage.register_model("m-003", "/models/m-003", "clip")  # never evaluated
    with pytest.raises(ModelExists):
        storage.register_model("m-001", "/x", "clip")
    for version in ("m-002", "m-003"):
        with pytest.raises(ActivationRefused, match="no passing evaluation"):
            storage.activate_model(version)
    with pytest.raises(ActivationRefused, match="no previously active"):
        storage.roll_back()
    assert storage.activate_model("m-001").active
    storage.set_evaluation("m-002", {"cxr_align": 0.75}, True)
    storage.activate_model("m-002")
    assert [m.model_version for m in storage.models() if m.active] == ["m-002"]
    assert storage.active_model().model_version == "m-002"
    assert storage.model("m-002").metrics == {"auc": 0.8}
    with pytest.raises(NotFound):
        storage.activate_model("m-404")


def test_roll_back_returns_to_the_previously_active_model(storage: Storage) -> None:
    storage.set_current_user("ada")
    for version in ("m-001", "m-002", "m-003"):
        register(storage, version, passed=True)
        storage.activate_model(version)
    assert storage.roll_back().model_version == "m-002"
    assert storage.active_model().model_version == "m-002"
    assert storage.roll_back().model_version == "m-003"  # like `kubectl rollout undo`
    assert [m.model_version for m in storage.models() if m.active] == ["m-003"]
    entries = storage.audit_log(action="model.roll_back")
    assert [(e.target_id, e.details["from"]) for e in entries] == [
        ("m-003", "m-002"),
        ("m-002", "m-003"),
    ]


def test_the_database_itself_allows_one_active_model(url: str, storage: Storage) -> None:
    storage.set_current_user("ada")
    register(storage, "m-001", passed=True)
    register(storage, "m-002", passed=True)
    storage.activate_model("m-001")
    true = "1" if is_sqlite(url) else "true"
    with pytest.raises(sa.exc.IntegrityError, match="(?i)unique"):
        other_program(url, f"UPDATE models SET active = {true} WHERE model_version = 'm-002'")
    assert [m.model_version for m in storage.models() if m.active] == ["m-001"]


# -- audit log -----------------------------------------------------------------------------


def test_every_mutation_is_audited(storage: Storage, study_id: int) -> None:
    state = storage.save_report(study_id, "No pneumothorax.", expected_version=0)
    storage.autosave(study_id, "No pneumothorax. ", expected_version=state.version)
    [flag] = storage.record_flags(study_id, [PNEUMOTHORAX], "m-001")
    storage.decide_flag(flag.id, "dismissed", reason="correctly described")
    storage.sign(study_id, "m-001")
    with storage.as_user("ada"):
        register(storage, "m-001", passed=True)
        storage.activate_model("m-001")
        register(storage, "m-002", passed=True)
        storage.activate_model("m-002")
        storage.roll_back()
        storage.audit("training.start", ("model", "m-003"), {"config": "tiny"})
    log = storage.audit_log()
    assert [e.id for e in log] == sorted((e.id for e in log), reverse=True)  # newest first
    actions = [(e.action, e.username) for e in reversed(log)]
    assert actions == [
        ("schema.upgrade", None),
        ("user.create", None),
        ("user.create", None),
        ("study.create", "rita"),
        ("report.save", "rita"),
        ("report.autosave", "rita"),
        ("flags.record", "rita"),
        ("flag.decide", "rita"),
        ("report.sign", "rita"),
        ("model.register", "ada"),
        ("model.evaluate", "ada"),
        ("model.activate", "ada"),
        ("model.register", "ada"),
        ("model.evaluate", "ada"),
        ("model.activate", "ada"),
        ("model.roll_back", "ada"),
        ("training.start", "ada"),
    ]
    sign = storage.audit_log(action="report.sign")[0]
    assert (sign.target_type, sign.target_id) == ("study", str(study_id))
    assert sign.details == {"version": 3, "model_version": "m-001"}
    assert sign.at.tzinfo is UTC
    assert len(storage.audit_log(target=("study", study_id))) == 5
    assert len(storage.audit_log(username="ada", limit=3)) == 3
    assert storage.audit_log(since=datetime.now(UTC) + timedelta(hours=1)) == []
    # refused actions change nothing, so they leave no entry
    with pytest.raises(PermissionDenied):
        storage.activate_model("m-001")
    assert len(storage.audit_log()) == len(log)


def test_storage_has_no_way_to_change_history() -> None:
    verbs = ("delete", "remove", "purge", "erase", "truncate", "edit_audit", "update_audit")
    assert not [name for name in dir(Storage) if any(v in name for v in verbs)]


@pytest.mark.parametrize("table", ["audit_log", "report_versions"])
def test_triggers_refuse_update_and_delete(
    url: str, storage: Storage, study_id: int, table: str
) -> None:
    storage.save_report(study_id, "Original.", expected_version=0)
    # SQLite raises an integrity error; PostgreSQL's trigger an insufficient-privilege one
    with pytest.raises(sa.exc.DatabaseError, match=f"{table} is append-only: UPDATE"):
        other_program(url, f"UPDATE {table} SET id = id")
    with pytest.raises(sa.exc.DatabaseError, match=f"{table} is append-only: DELETE"):
        other_program(url, f"DELETE FROM {table}")
    if not is_sqlite(url):
        with pytest.raises(sa.exc.DatabaseError, match=f"{table} is append-only: TRUNCATE"):
            other_program(url, f"TRUNCATE {table} CASCADE")
    with Session(storage.engine) as session, pytest.raises(sa.exc.DatabaseError, match="append-only"):
        session.execute(sa.text(f"DELETE FROM {table}"))
    assert storage.report_history(study_id)[0].text == "Original."
    assert len(storage.audit_log()) > 0


# -- errors --------------------------------------------------------------------------------


def failing_commit(exc: BaseException):
    def commit(self: Session) -> None:
        raise exc

    return commit


@pytest.mark.parametrize(
    "failure",
    [
        sa.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full")),
        sa.exc.OperationalError("COMMIT", {}, psycopg.errors.DiskFull(
            'could not extend file "base/16384/16590": No space left on device')),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
    ids=["sqlite-full", "postgresql-53100", "enospc"],
)
def test_a_full_disk_keeps_the_text_and_changes_nothing(
    storage: Storage, study_id: int, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    storage.save_report(study_id, "Saved.", expected_version=0)
    with monkeypatch.context() as patch:
        patch.setattr(Session, "commit", failing_commit(failure))
        with pytest.raises(DiskFull) as info:
            storage.save_report(study_id, "Typed but not saved.", expected_version=1)
    err = info.value
    assert isinstance(err, StorageError)
    assert err.unsaved_text == "Typed but not saved."
    message = str(err)
    assert "\n" not in message and "disk holding the database is full" in message
    assert "your text is kept" in message and storage.location in message
    assert storage.report(study_id).text == "Saved."
    assert len(storage.report_history(study_id)) == 1


def test_a_locked_database_is_reported_in_one_line(url: str, tmp_path: Path) -> None:
    with Storage.open(url, user="ada", busy_timeout=0.2) as st:
        st.ensure_user("ada", "admin")
        sid = st.upsert_study(STUDY).id
        # another program holds the write lock: the whole SQLite file, or PostgreSQL's
        # reports table in a mode that still lets others read it
        holder_engine = sa.create_engine(url)
        holder = holder_engine.connect()
        if is_sqlite(url):
            holder.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            holder.exec_driver_sql("LOCK TABLE reports IN EXCLUSIVE MODE")
        try:
            with pytest.raises(DatabaseLocked) as info:
                st.save_report(sid, "Dictated text.", expected_version=0)
            assert info.value.unsaved_text == "Dictated text."
            assert "locked by another program (waited 0.2 s" in str(info.value)
            assert "\n" not in str(info.value)
            assert st.report(sid).version == 0  # reading still works
        finally:
            holder.rollback()
            holder.close()
            holder_engine.dispose()
        assert st.save_report(sid, "Dictated text.", expected_version=0).version == 1


def test_locked_error_text_maps_too(
    storage: Storage, study_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = sa.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("database is locked"))
    monkeypatch.setattr(Session, "commit", failing_commit(locked))
    with pytest.raises(DatabaseLocked) as info:
        storage.autosave(study_id, "Draft.", expected_version=0)
    assert info.value.unsaved_text == "Draft."
