"""The bundled demo worklist: valid files, drafts with exactly their listed error, idempotent load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.demo import DEMO_DIR, KINDS, build_demo, demo_worklist, load_demo
from app.importer import ImageHeader, read_header
from app.storage import Storage
from core_model.imaging import read_image
from core_model.text.labeler import default_labeler
from core_model.text.observations import FINDINGS, Assertion
from core_model.text.sentences import split_sentences

MAX_BYTES = 5_000_000


@pytest.fixture(scope="module")
def worklist():
    return demo_worklist()


def sentences(report: str) -> list[str]:
    body = report.split("FINDINGS:", 1)[1]
    return [s.text for s in split_sentences(body)]


def changed_findings(before: str, after: str) -> dict[str, tuple[Assertion, Assertion]]:
    labeler = default_labeler()
    a = labeler.label_report(before).labels
    b = labeler.label_report(after).labels
    return {f: (a[f], b[f]) for f in FINDINGS if a[f] is not b[f]}


def mentions(sentence: str) -> set[str]:
    return {m.observation for m in default_labeler().label_sentence(sentence).mentions}


def test_the_bundled_worklist_loads(worklist) -> None:
    assert len(worklist.studies) == 6
    assert {s.error.kind for s in worklist.studies} == set(KINDS)
    assert len({s.folder for s in worklist.studies}) == 6
    assert len({s.study_instance_uid for s in worklist.studies}) == 6
    assert (worklist.model_dir / "config.json").is_file()  # the bundled demo model
    entities = [s.error.entity for s in worklist.studies if not s.error.clean]
    assert len(set(entities)) == len(entities)  # a different finding in each error


def test_the_demo_folder_is_small() -> None:
    total = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert total < MAX_BYTES


def test_every_listed_file_is_a_valid_dicom_image(worklist) -> None:
    for study in worklist.studies:
        listed = {worklist.root / f for f in study.files}
        assert listed == set(worklist.dicom_folder(study).iterdir())
        for path in listed:
            header = read_header(path)
            assert isinstance(header, ImageHeader), header
            assert header.study_instance_uid == study.study_instance_uid
            assert header.patient["PatientID"] == study.patient_id
            assert header.view_position in study.views
            pixels = read_image(path)  # decodes as the viewer does
            assert pixels.shape == (header.rows, header.columns)
            assert 0.0 <= pixels.min() < pixels.max() <= 1.0


def test_each_draft_differs_from_the_true_report_by_exactly_its_error(worklist) -> None:
    for study in worklist.studies:
        error, true, draft = study.error, study.true_text, worklist.draft(study)
        if error.clean:
            assert draft == true and error.entity is None and error.expected_flag is None
            continue
        change = changed_findings(true, draft)
        assert set(change) == {error.entity}, (study.folder, change)
        before, after = change[error.entity]
        added = [s for s in sentences(draft) if s not in sentences(true)]
        dropped = [s for s in sentences(true) if s not in sentences(draft)]
        assert all(error.entity in mentions(s) for s in dropped), (study.folder, dropped)
        if error.kind == "flip":
            assert (before, after) == (Assertion.PRESENT, Assertion.ABSENT)
            assert added == [error.sentence] and dropped
            assert error.expected_flag == "contradiction"
        elif error.kind == "remove":
            assert (before, after) == (Assertion.PRESENT, Assertion.NOT_MENTIONED)
            assert added == [] and " ".join(dropped) == error.sentence
            assert error.expected_flag == "omission"
        else:
            assert error.kind == "add"
            assert before in (Assertion.ABSENT, Assertion.NOT_MENTIONED)
            assert after is Assertion.PRESENT
            assert added == [error.sentence]
            assert error.expected_flag == "contradiction"


def test_load_demo_is_idempotent(tmp_path: Path, worklist) -> None:
    url = f"sqlite:///{tmp_path / 'concord.db'}"
    with Storage.open(url, user="demo") as storage:
        storage.ensure_user("demo")
        first = load_demo(storage)
        audit_entries = len(storage.audit_log(limit=None))
        second = load_demo(storage)
        assert second == first
        assert len(storage.audit_log(limit=None)) == audit_entries  # nothing written again
        assert [s.study_instance_uid for s in first] == [
            s.study_instance_uid for s in worklist.studies
        ]
        for record, study in zip(first, worklist.studies, strict=True):
            assert record.source == "demo" and record.patient_id == study.patient_id
            assert len(storage.images(record.id)) == len(study.files)
            state = storage.report(record.id)
            assert state.text == worklist.draft(study) and state.version == 1
        # A report written after the first load survives loading again.
        state = storage.save_report(first[0].id, "edited", expected_version=1)
        load_demo(storage)
        assert storage.report(first[0].id).text == "edited"
    with Storage.open(url, user="demo") as reopened:
        assert [s.id for s in load_demo(reopened)] == [s.id for s in first]
        assert len(reopened.studies()) == len(worklist.studies)


def test_build_demo_is_reproducible(tmp_path: Path) -> None:
    a = build_demo(tmp_path / "a", studies=4, size=64, candidates=16)
    b = build_demo(tmp_path / "b", studies=4, size=64, candidates=16)
    assert [s.error.kind for s in a.studies] == list(KINDS)
    strip = {"generator"}
    ja = {k: v for k, v in json.loads((a.root / "worklist.json").read_text()).items() if k not in strip}
    jb = {k: v for k, v in json.loads((b.root / "worklist.json").read_text()).items() if k not in strip}
    assert ja == jb
    for sa, sb in zip(a.studies, b.studies, strict=True):
        assert a.draft(sa) == b.draft(sb)
        assert all((a.root / f).is_file() for f in sa.files)
