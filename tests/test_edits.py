"""CXR-Align edits: r^n flips exactly one finding to absent, r^r to not mentioned."""

import csv
from collections import Counter
from pathlib import Path

import pytest

from core_model.text.edits import (
    BUILTIN_POOL,
    NEGATIONS,
    AlignEdit,
    EditSkipped,
    make_edit,
    normal_hard_negative,
    report_rng,
    single_positive_pool,
)
from core_model.text.labeler import label_report, label_sentence
from core_model.text.observations import FINDINGS, Assertion
from core_model.text.rewrite import get_backend

REPORTS = {
    r["study_id"]: r["report"]
    for r in csv.DictReader(open(Path(__file__).parent / "data" / "reports.csv", newline=""))
}
RULES = get_backend("rules")


def _labels(text: str) -> dict[str, Assertion]:
    return label_report(text, sections=False).labels


def test_every_negation_phrasing_negates_exactly_its_finding():
    for finding, phrasings in NEGATIONS.items():
        for p in phrasings:
            sl = label_sentence(p)
            assert sl.observations == (finding,), p
            assert sl.labels[finding] is Assertion.ABSENT, p


@pytest.mark.parametrize("study", ["s50000001", "s50000002", "s50000005", "s50000006", "s50000007", "s50000008"])
def test_edit_is_verified_independently(study):
    edit = make_edit(REPORTS[study], backend=RULES, rng=report_rng(0, study))
    assert isinstance(edit, AlignEdit), edit
    r, rn, rr = _labels(edit.r), _labels(edit.r_n), _labels(edit.r_r) if edit.r_r else None
    assert r[edit.entity] is Assertion.PRESENT
    assert rn[edit.entity] is Assertion.ABSENT
    assert (rr[edit.entity] if rr else Assertion.NOT_MENTIONED) is Assertion.NOT_MENTIONED
    for o in FINDINGS:
        if o != edit.entity:
            assert rn[o] is r[o], o
            assert (rr[o] if rr else Assertion.NOT_MENTIONED) is r[o], o
    # r^n is r^r plus one sentence, at the recorded position.
    inserted = [s for s in edit.r_n.split(". ") if s.rstrip(".") + "." not in edit.r_r]
    assert len(inserted) == 1


def test_edits_are_seeded_and_independent_of_order():
    a = make_edit(REPORTS["s50000002"], backend=RULES, rng=report_rng(7, "s50000002"))
    b = make_edit(REPORTS["s50000002"], backend=RULES, rng=report_rng(7, "s50000002"))
    assert a == b
    seen = Counter()
    entities = set()
    for seed in range(40):
        e = make_edit(REPORTS["s50000002"], backend=RULES, rng=report_rng(seed, "s50000002"))
        seen[e.position] += 1
        entities.add(e.entity)
    assert set(seen) == {"start", "middle", "end"}
    assert len(entities) >= 4  # every positive finding gets its turn


def test_requested_entity_and_reasons():
    edit = make_edit(REPORTS["s50000002"], backend=RULES, rng=report_rng(0, "x"), entity="Support Devices")
    assert isinstance(edit, AlignEdit) and edit.entity == "Support Devices"
    skipped = make_edit(REPORTS["s50000002"], backend=RULES, rng=report_rng(0, "x"), entity="Pneumothorax")
    assert isinstance(skipped, EditSkipped)
    assert "Pneumothorax is not positive" in skipped.reason and "absent" in skipped.reason
    with pytest.raises(ValueError, match="unknown entity"):
        make_edit("Effusion.", backend=RULES, rng=report_rng(0, "x"), entity="Effusion")


def test_normal_and_empty_reports_say_why():
    normal = make_edit(REPORTS["s50000004"], backend=RULES, rng=report_rng(0, "n"))
    assert isinstance(normal, EditSkipped) and normal.normal
    assert "normal report" in normal.reason
    empty = make_edit(REPORTS["s50000012"], backend=RULES, rng=report_rng(0, "e"))
    assert isinstance(empty, EditSkipped) and not empty.normal
    assert "no clinical sentences" in empty.reason


def test_normal_hard_negative_comes_from_single_positive_reports():
    pool = single_positive_pool(list(REPORTS.items()), backend=RULES)
    assert pool, "the sample table has single-finding reports"
    for key, entity, text in pool:
        positives = [o for o in FINDINGS if _labels(text)[o] is Assertion.PRESENT]
        assert positives == [entity], (key, text)
    key, entity, text = normal_hard_negative(pool, report_rng(0, "s50000004"), exclude="s50000004")
    assert key != "s50000004"
    assert normal_hard_negative([], report_rng(0, "x")) in BUILTIN_POOL
