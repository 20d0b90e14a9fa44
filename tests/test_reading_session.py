"""The reading record: a Qt-free reading session over storage, on SQLite and PostgreSQL.

The stateful test drives random sequences of open / check / decide / edit / sign /
amend / restart across three studies of three patients, and after every step asserts:

* no decision is shown or stored on a study it was not made on;
* what the session shows (the flags panel's rows) equals what storage holds;
* sign-off succeeds exactly when every current flag is dismissed (an accepted or
  edited flag the text still raises is not resolved) and the report is a
  non-empty, checked draft;
* a final report, its flags and their decisions never change again;
* a restart restores exactly what was shown.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from app.gui.launch import sign_in
from app.session import ReadingSession, study_key
from app.storage import ReportSigned, SignOffBlocked, Storage, StorageError
from core_model.inference import CheckResult, Flag

#: Sentences a draft can hold; the stub model flags some of them.
SENTENCES = (
    "No pneumothorax.",
    "There is a small left pleural effusion.",
    "The heart is normal in size.",
    "No focal consolidation.",
)
#: sentence -> (kind, entity, report_says) the stub flags whenever the sentence is in the text.
FLAGGED = {
    "No pneumothorax.": ("contradiction", "Pneumothorax", "absent"),
    "There is a small left pleural effusion.": ("unsupported", "Pleural Effusion", "present"),
}
PATIENTS = ("P-A", "P-B", "P-C")


def stub_check(text: str, model_version: str = "stub-1") -> CheckResult:
    """Flags known sentences, and always the same omission: the same finding on every study
    (the shape of the defect where one study's decision showed on another patient's)."""
    flags = []
    for sentence, (kind, entity, says) in FLAGGED.items():
        at = text.find(sentence)
        if at >= 0:
            flags.append(Flag(kind, entity, says, 0.9, "present" if kind == "contradiction"
                              else "absent", sentence=sentence, span=(at, at + len(sentence))))
    flags.append(Flag("omission", "Lung Lesion", "not mentioned", 0.7, "present"))
    return CheckResult(flags, {}, [], model_version, "stub")


def make_studies(storage: Storage) -> list[int]:
    ids = []
    for i, patient in enumerate(PATIENTS):
        record = storage.upsert_study({
            "StudyInstanceUID": f"1.2.826.0.1.3680043.8.498.77.{i}",
            "AccessionNumber": f"ACC{i}",
            "source": "dicom-folder",
            "patient": {"PatientID": patient},
        })
        ids.append(record.id)
    return ids


def snapshot(reviews) -> list[tuple[int | None, str, str | None]]:
    return [(r.record_id, r.decision, r.reason) for r in reviews]


def stored(storage: Storage, study_id: int) -> list[tuple[int, str, str | None]]:
    return [(f.id, str(f.decision), f.dismiss_reason) for f in storage.flags(study_id)]


class ReadingRecord(RuleBasedStateMachine):
    """See the module docstring. ``URL`` is set per database by the test below."""

    URL = ""

    def __init__(self) -> None:
        super().__init__()
        _reset(self.URL)  # each example starts from an empty database
        self.storage = Storage.open(self.URL)
        sign_in(self.storage, "rita")
        self.session = ReadingSession(self.storage)
        self.session.checking = True
        self.studies = make_studies(self.storage)
        self.texts: dict[int, str] = {s: "" for s in self.studies}  # each study's editor text
        self.decisions = 0
        self.signed: dict[int, tuple[str, list[tuple[int, str, str | None]], int]] = {}

    def teardown(self) -> None:
        self.storage.close()

    # ----------------------------------------------------------------- helpers

    @property
    def current(self) -> int | None:
        return self.session.study_id

    def _text(self) -> str:
        assert self.current is not None
        return self.texts[self.current]

    # ----------------------------------------------------------------- rules

    @rule(which=st.integers(0, 2))
    def open_study(self, which: int) -> None:
        if self.current is not None:
            self.session.close(self.texts[self.current] if not self.session.signed else None)
        study = self.studies[which]
        self.session.open(study)
        state = self.session.state
        assert state is not None
        if state.version:
            self.texts[study] = state.text  # the editor starts from what storage holds

    @precondition(lambda self: self.current is not None)
    @rule()
    def check(self) -> None:
        text = self._text()
        assert self.session.apply_check(study_key(self.current), text, stub_check(text))
        if not self.session.signed:
            assert self.session.state.text == text  # the checked text is a stored version
            assert {f.report_version for f in self.storage.flags(self.current)} <= {
                self.session.state.version or None}

    @precondition(lambda self: self.current is not None)
    @rule(data=st.data())
    def check_another_study(self, data: st.DataObject) -> None:
        """A late result of a check of another study changes nothing here."""
        other = data.draw(st.sampled_from([s for s in self.studies if s != self.current]))
        before = snapshot(self.session.reviews())
        assert not self.session.apply_check(study_key(other), "x", stub_check("No pneumothorax."))
        assert snapshot(self.session.reviews()) == before

    @precondition(lambda self: self.current is not None and self.session.reviews())
    @rule(data=st.data(), decision=st.sampled_from(["accepted", "dismissed", "edited", "none"]))
    def decide(self, data: st.DataObject, decision: str) -> None:
        reviews = self.session.reviews()
        review = data.draw(st.sampled_from(reviews))
        self.decisions += 1
        reason = f"reason {self.decisions} on study {self.current}" if decision == "dismissed" \
            else None
        if self.session.signed:
            with pytest.raises(ReportSigned):
                self.session.decide(review.record_id, decision, reason)
            return
        shown = self.session.decide(review.record_id, decision, reason)
        assert (shown.decision, shown.reason) == (decision, reason)

    @precondition(lambda self: self.current is not None)
    @rule(sentence=st.sampled_from(SENTENCES), add=st.booleans())
    def edit(self, sentence: str, add: bool) -> None:
        if self.session.signed:
            return  # the editor is read-only
        text = self._text()
        if add and sentence not in text:
            text = (text + " " + sentence).strip()
        elif not add:
            text = " ".join(text.replace(sentence, " ").split())
        self.texts[self.current] = text

    @precondition(lambda self: self.current is not None)
    @rule()
    def save(self) -> None:
        outcome = self.session.save(self._text())
        assert outcome.ok == (not self.session.signed)

    @precondition(lambda self: self.current is not None)
    @rule(preliminary=st.booleans())
    def sign(self, preliminary: bool) -> None:
        study, text = self.current, self._text()
        was_signed = self.session.signed
        review = self.session.review_state()
        checked = (review is not None and not self.session.dirty(text)
                   and self.session._checked_version == self.session.state.version)
        expected = (not was_signed and bool(text.strip()) and checked
                    and all(r.decision == "dismissed" for r in self.session.reviews()))
        try:
            state = self.session.sign(text, preliminary=preliminary)
        except (SignOffBlocked, ReportSigned):
            assert not expected
            return
        assert expected, "signed although a flag was undecided or the text unchecked"
        assert state.signed_by == "rita"
        if not preliminary:
            self.signed[study] = (state.text, stored(self.storage, study), state.version)

    @precondition(lambda self: self.current is not None)
    @rule(final=st.booleans())
    def review_and_sign(self, final: bool) -> None:
        """The reader's usual path: check, dismiss every flag the text keeps, sign (final or
        preliminary)."""
        if self.session.signed:
            return
        if not self._text():
            self.edit(SENTENCES[self.decisions % len(SENTENCES)], True)
        self.check()
        for review in self.session.reviews():
            if review.decision != "dismissed":
                self.decisions += 1
                self.session.decide(review.record_id, "dismissed",
                                    f"reason {self.decisions} on study {self.current}")
        self.sign(preliminary=not final)
        assert self.session.state.status == ("final" if final else "preliminary")

    @precondition(lambda self: self.current is not None)
    @rule(words=st.text(alphabet="abc ", min_size=1, max_size=12))
    def amend(self, words: str) -> None:
        if not self.session.signed:
            with pytest.raises(StorageError):
                self.session.add_addendum("Addendum " + words)
            return
        before = len(self.session.state.addenda)
        state = self.session.add_addendum("Addendum " + words)
        assert len(state.addenda) == before + 1 and state.status == "amended"
        assert state.addenda[-1].author == "rita"

    @rule()
    def restart(self) -> None:
        """Close everything and open again: the same study shows exactly what it showed."""
        study = self.current
        shown = snapshot(self.session.reviews())
        if study is not None and not self.session.signed:
            self.session.close(self._text())
        self.storage.close()
        self.storage = Storage.open(self.URL)
        sign_in(self.storage, "rita")
        self.session = ReadingSession(self.storage)
        self.session.checking = True
        if study is None:
            return
        self.session.open(study)
        assert snapshot(self.session.reviews()) == shown

    # ----------------------------------------------------------------- invariants

    @invariant()
    def decisions_stay_on_their_study(self) -> None:
        for study in self.studies:
            for flag in self.storage.flags(study, include_superseded=True):
                if flag.dismiss_reason is not None:
                    assert flag.dismiss_reason.endswith(f"on study {study}"), (
                        f"study {study} holds a decision made on another study: "
                        f"{flag.dismiss_reason!r}")
        for review in self.session.reviews():
            if review.reason is not None:
                assert review.reason.endswith(f"on study {self.current}")

    @invariant()
    def the_panel_shows_what_storage_holds(self) -> None:
        if self.current is None:
            return
        assert snapshot(self.session.reviews()) == stored(self.storage, self.current)
        review = self.session.review_state()
        assert review is not None
        assert [(f.id, str(f.decision), f.dismiss_reason) for f in review.flags] == \
            stored(self.storage, self.current)

    @invariant()
    def a_final_report_never_changes(self) -> None:
        for study, (text, flags, version) in self.signed.items():
            state = self.storage.report(study)
            assert (state.text, state.version) == (text, version)
            assert state.signed
            assert stored(self.storage, study) == flags


def _reset(url: str) -> None:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        import os

        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass
        return
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


#: Examples per database; each runs up to STEPS rules (the note of the issue gives the time).
EXAMPLES = 40
STEPS = 30


def test_the_reading_record_holds_under_random_use(db_url: str) -> None:
    ReadingRecord.URL = db_url
    run_state_machine_as_test(
        ReadingRecord,
        settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                          suppress_health_check=list(HealthCheck), derandomize=True),
    )


# ----------------------------------------------------------------------------- plain cases


@pytest.fixture
def session(db_url):
    storage = Storage.open(db_url)
    sign_in(storage, "rita")
    reading = ReadingSession(storage)
    reading.checking = True
    yield reading, storage, make_studies(storage)
    storage.close()


def test_a_decision_carries_to_a_recheck_of_the_same_sentence_only(session):
    reading, storage, (a, b, _c) = session
    reading.open(a)
    text = "No pneumothorax. The heart is normal in size."
    assert reading.apply_check(study_key(a), text, stub_check(text))
    omission = next(r for r in reading.reviews() if r.flag.kind == "omission")
    contradiction = next(r for r in reading.reviews() if r.flag.kind == "contradiction")
    reading.decide(omission.record_id, "dismissed", "No nodule seen on image")
    reading.decide(contradiction.record_id, "dismissed", "Correctly described")
    # an edit elsewhere: both flags are the same findings in unchanged sentences
    text += " No focal consolidation."
    assert reading.apply_check(study_key(a), text, stub_check(text))
    assert {r.flag.kind: r.decision for r in reading.reviews()} == {
        "contradiction": "dismissed", "omission": "dismissed"}
    # the sentence changed: a new flag, undecided
    text = text.replace("No pneumothorax.", "No pneumothorax. ").replace("No pneumothorax. ",
                                                                        "No pneumothorax seen. ")
    text = text.replace("No pneumothorax seen.", "No pneumothorax.").replace(
        "No pneumothorax.", "No pneumothorax on this film.")
    result = stub_check(text)
    result.flags.insert(0, Flag("contradiction", "Pneumothorax", "absent", 0.9, "present",
                                sentence="No pneumothorax on this film.",
                                span=(0, len("No pneumothorax on this film."))))
    assert reading.apply_check(study_key(a), text, result)
    assert {r.flag.kind: r.decision for r in reading.reviews()} == {
        "contradiction": "none", "omission": "dismissed"}
    # another patient's study: nothing of study a
    reading.close(text)
    reading.open(b)
    assert reading.apply_check(study_key(b), "No pneumothorax.", stub_check("No pneumothorax."))
    assert all(r.decision == "none" and r.reason is None for r in reading.reviews())
    assert all(f.decision == "none" for f in storage.flags(b))


def test_flags_are_recorded_against_the_version_they_were_raised_on(session):
    reading, storage, (a, _b, _c) = session
    reading.open(a)
    assert reading.apply_check(study_key(a), "No pneumothorax.", stub_check("No pneumothorax."))
    version = reading.state.version
    assert version > 0 and storage.report(a).text == "No pneumothorax."
    assert {f.report_version for f in storage.flags(a)} == {version}
    entry = storage.audit_log(action="flags.record")[0]
    assert entry.details["report_version"] == version


def test_sign_off_needs_the_current_text_checked_and_every_flag_decided(session):
    reading, storage, (a, _b, _c) = session
    reading.open(a)
    text = "No pneumothorax."
    reading.apply_check(study_key(a), text, stub_check(text))
    with pytest.raises(SignOffBlocked, match="Cannot sign accession ACC0: 2 flag\\(s\\) not reviewed"):
        reading.sign(text)
    assert reading.review_state().summary() == "2 flags, 0 reviewed"
    for review in reading.reviews():
        reading.decide(review.record_id, "dismissed", "Finding is correctly described")
    assert reading.review_state().summary() == "2 flags, 2 reviewed"
    with pytest.raises(SignOffBlocked, match="changed since it was last checked"):
        reading.sign(text + " The heart is normal in size.")
    reading.apply_check(study_key(a), reading.state.text, stub_check(reading.state.text))
    state = reading.sign(reading.state.text)
    assert state.status == "final" and state.signed_by == "rita"
    with pytest.raises(ReportSigned):
        reading.decide(reading.reviews()[0].record_id, "accepted")
    assert not reading.save("changed").ok
    assert storage.report(a).text == text + " The heart is normal in size."


def test_a_preliminary_report_stays_editable_and_is_signed_final_later(session):
    reading, storage, (a, _b, _c) = session
    reading.open(a)
    text = "The heart is normal in size."
    reading.apply_check(study_key(a), text, stub_check(text))
    for review in reading.reviews():
        reading.decide(review.record_id, "dismissed", "Not seen")
    state = reading.sign(text, preliminary=True)
    assert state.status == "preliminary" and not state.signed
    assert storage.report_history(a)[-1].kind == "preliminary"
    assert reading.save(text + " No focal consolidation.").ok
    reading.apply_check(study_key(a), reading.state.text, stub_check(reading.state.text))
    assert reading.sign(reading.state.text).status == "final"
    assert [e.action for e in storage.audit_log(target=("study", a))][:2] == [
        "report.sign", "flags.record"]


def test_an_addendum_is_signed_under_a_final_report_and_nothing_else_changes(session):
    reading, storage, (a, _b, _c) = session
    reading.open(a)
    text = "The heart is normal in size."
    reading.apply_check(study_key(a), text, stub_check(text))
    reading.decide(reading.reviews()[0].record_id, "dismissed", "No nodule")
    final = reading.sign(text)
    with pytest.raises(StorageError, match="not signed final"):
        storage.add_addendum(_b, "x")
    state = reading.add_addendum("Comparison with the outside film: no change.")
    assert state.status == "amended" and state.text == final.text and state.version == final.version
    [addendum] = state.addenda
    assert (addendum.author, addendum.text) == ("rita", "Comparison with the outside film: no change.")
    assert storage.audit_log(action="report.addendum")[0].details["addendum"] == addendum.id
    report = reading.signed_report()
    assert report.status == "amended" and "ADDENDUM 1 (signed by rita" in report.body()
    assert report.body().startswith(final.text)


def test_the_database_refuses_any_change_to_a_final_report(session):
    reading, storage, (a, b, _c) = session
    reading.open(a)
    reading.apply_check(study_key(a), "The heart is normal in size.",
                        stub_check("The heart is normal in size."))
    reading.decide(reading.reviews()[0].record_id, "dismissed", "No nodule")
    reading.sign("The heart is normal in size.")
    reading.add_addendum("Addendum.")
    statements = [
        f"UPDATE reports SET text = 'changed' WHERE study_id = {a}",
        f"UPDATE reports SET status = 'draft' WHERE study_id = {a}",
        f"DELETE FROM reports WHERE study_id = {a}",
        f"UPDATE flags SET decision = 'none' WHERE study_id = {a}",
        f"DELETE FROM flags WHERE study_id = {a}",
        "UPDATE report_addenda SET text = 'changed'",
        "DELETE FROM report_addenda",
    ]
    for statement in statements:
        with storage.engine.connect() as conn, pytest.raises(sa.exc.DatabaseError,
                                                             match="final|append-only"):
            with conn.begin():
                conn.exec_driver_sql(statement)
    with storage.engine.connect() as conn, pytest.raises(sa.exc.DatabaseError, match="final"):
        with conn.begin():
            conn.exec_driver_sql(
                "INSERT INTO flags (study_id, entity, kind, report_says, image_probability, "
                f"model_version, decision) VALUES ({a}, 'Edema', 'omission', 'not mentioned', 0.9, "
                "'m', 'none')")
    assert storage.report(a).text == "The heart is normal in size."
    # another study's draft is not affected
    assert storage.save_report(b, "draft", expected_version=0).version == 1


def test_one_flag_covers_the_same_statement_in_findings_and_impression(session):
    from core_model.inference import _dedupe

    reading, storage, (a, _b, _c) = session
    text = "FINDINGS: No pneumothorax.\n\nIMPRESSION: No pneumothorax."
    second = text.rindex("No pneumothorax.")
    flags = _dedupe([
        Flag("contradiction", "Pneumothorax", "absent", 0.9, "present", sentence="No pneumothorax.",
             span=(second, second + 16)),
        Flag("contradiction", "Pneumothorax", "absent", 0.9, "present", sentence="No pneumothorax.",
             span=(10, 26)),
        Flag("omission", "Edema", "not mentioned", 0.8, "present"),
    ])
    assert len(flags) == 2 and flags[0].spans == ((10, 26), (second, second + 16))
    reading.open(a)
    assert reading.apply_check(study_key(a), text, CheckResult(flags, {}, [], "stub-1", "stub"))
    contradiction = reading.reviews()[0]
    assert contradiction.flag.spans == ((10, 26), (second, second + 16))
    assert storage.flags(a)[0].repeats == (("No pneumothorax.", (second, second + 16)),)
    assert contradiction.correction is not None and len(contradiction.correction.edits) == 2
    reading.decide(contradiction.record_id, "dismissed", "Correctly described on study")
    reading.decide(reading.reviews()[1].record_id, "dismissed", "Not seen")
    assert reading.review_state().sign_obstacle is None  # one decision covered both sentences


def test_upgrading_from_0002_makes_signed_reports_final(db_url):
    from app.storage import engine as db

    engine = db.make_engine(db.resolve_url(db_url))
    db.upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO users (username, role) VALUES ('ada', 'admin')")
        conn.exec_driver_sql("INSERT INTO studies (study_instance_uid, source) VALUES ('1.2', 'demo')")
        conn.exec_driver_sql("INSERT INTO studies (study_instance_uid, source) VALUES ('1.3', 'demo')")
        conn.exec_driver_sql(
            "INSERT INTO reports (study_id, text, version_id, status, signed_by) "
            "VALUES (1, 'Signed text.', 2, 'signed', 'ada'), (2, 'Draft.', 1, 'draft', NULL)")
    engine.dispose()
    with Storage.open(db_url) as st:
        assert st.report(1).status == "final" and st.report(1).signed
        assert st.report(2).status == "draft"
        with st.engine.connect() as conn, pytest.raises(sa.exc.DatabaseError, match="final"):
            with conn.begin():
                conn.exec_driver_sql("UPDATE reports SET text = 'x' WHERE study_id = 1")
    engine = db.make_engine(db.resolve_url(db_url))
    db.downgrade(engine, "0002")  # and back: final is signed again, drafts stay drafts
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT study_id, status FROM reports ORDER BY study_id").all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(1, "signed"), (2, "draft")]


def test_accept_and_edit_ask_for_a_change_the_text_must_show_before_sign_off(session):
    """Pressing Edit (or Accept without a correction) and changing nothing leaves the flag
    unresolved: sign-off refuses, and a re-check asks afresh. Once the change removes the
    flag it is resolved, and the record says how."""
    reading, storage, (a, _b, _c) = session
    reading.open(a)
    text = "No pneumothorax. There is a small left pleural effusion."
    reading.apply_check(study_key(a), text, stub_check(text))
    by_kind = {r.flag.kind: r for r in reading.reviews()}
    reading.decide(by_kind["contradiction"].record_id, "accepted")
    reading.decide(by_kind["unsupported"].record_id, "edited")
    reading.decide(by_kind["omission"].record_id, "dismissed", "No nodule seen on image")
    assert reading.review_state().summary() == "3 flags, 3 reviewed; 2 awaiting an edit"
    with pytest.raises(SignOffBlocked, match="2 flag\\(s\\) accepted or marked for an edit, "
                                             "but the report still says it"):
        reading.sign(text)
    # a re-check of the unchanged text: the promised edits are still open
    reading.apply_check(study_key(a), text, stub_check(text))
    assert {r.flag.kind: r.decision for r in reading.reviews()} == {
        "contradiction": "none", "unsupported": "none", "omission": "dismissed"}
    for review in reading.reviews():
        if review.decision == "none":
            reading.decide(review.record_id, "accepted" if review.flag.kind == "contradiction"
                           else "edited")
    # the reader makes both changes: the flags are gone, resolved by the edit
    text = "There is a pneumothorax. No pleural effusion."
    reading.apply_check(study_key(a), text, stub_check(text))
    review = reading.review_state()
    assert [f.kind for f in review.flags] == ["omission"]
    assert sorted((f.kind, f.decision) for f in review.resolved) == [
        ("contradiction", "accepted"), ("unsupported", "edited")]
    assert review.summary() == "1 flag, 1 reviewed; 2 resolved by an edit"
    assert reading.sign(text).status == "final"
