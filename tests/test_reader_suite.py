"""The reader-facing consistency suite: its drafts' phrasing family, and its metrics."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from core_model.flag_rules import Points, Statement
from core_model.inference import POSITIVE_PROMPTS
from core_model.text.edits import NEGATIONS
from core_model.text.labeler import default_labeler
from core_model.text.observations import FINDINGS, Assertion
from training.reader_drafts import ERROR_KINDS, FAMILY, drafts_for, truth_of
from training.reader_suite import Case, auroc_by_type, level_points, score

ROOT = Path(__file__).resolve().parents[1]


def test_every_sentence_of_the_family_says_exactly_what_it_means():
    labeler = default_labeler()
    for finding, (present, absent) in FAMILY.items():
        for want, sentences in ((Assertion.PRESENT, present), (Assertion.ABSENT, absent)):
            for sentence in sentences:
                labels = labeler.label_sentence(sentence).labels
                said = {f: a for f, a in labels.items() if a is not Assertion.NOT_MENTIONED}
                assert said == {finding: want}, (sentence, said)


def test_the_family_is_not_the_phrasing_the_model_learned():
    writer = (ROOT / "training" / "phantom" / "report_writer.py").read_text().lower()
    bank = json.loads((ROOT / "resources" / "models" / "concord-tiny-demo" / "prompts.json").read_text())
    learned = {s.lower() for side in ("positive", "negative") for v in bank[side].values() for s in v}
    learned |= {s.lower() for v in NEGATIONS.values() for s in v}
    learned |= {s.lower() for v in POSITIVE_PROMPTS.values() for s in v}
    for present, absent in FAMILY.values():
        for sentence in present + absent:
            assert sentence.lower() not in learned, sentence
            assert sentence.lower().rstrip(".") not in writer, sentence


def test_drafts_are_truthful_or_carry_exactly_one_error():
    labeler = default_labeler()
    written = 0
    for seed in range(200):
        rng = random.Random(seed)
        labels = {f: ("1" if rng.random() < 0.2 else rng.choice(["0", ""])) for f in FINDINGS}
        truth = truth_of(labels)
        drafts = drafts_for(labels, rng)
        kinds = [d.error for d in drafts]
        assert kinds[0] is None and set(kinds[1:]) <= set(ERROR_KINDS)
        for draft in drafts:
            read = labeler.label_report(draft.text).labels
            for finding in FINDINGS:
                said = read.get(finding, Assertion.NOT_MENTIONED)
                if draft.error is not None and finding == draft.entity:
                    wrong = {"flip": said is Assertion.ABSENT and truth[finding],
                             "omission": said is Assertion.NOT_MENTIONED and truth[finding],
                             "false_finding": said is Assertion.PRESENT and not truth[finding]}
                    assert wrong[draft.error], (draft.error, finding, said)
                elif said is Assertion.PRESENT:
                    assert truth[finding], (draft.text, finding)
                elif said is Assertion.ABSENT:
                    assert not truth[finding], (draft.text, finding)
                else:
                    assert not truth[finding] or (draft.error == "omission"
                                                  and finding == draft.entity), finding
            written += 1
    assert written > 500
    assert drafts_for({"Edema": "-1"}, random.Random(0)) == []  # an uncertain finding: no draft


def case(error, entity, stated, truth, probabilities, alignment=-0.1, readable=True):
    from training.reader_drafts import Draft

    statements = [Statement(f, a, f"{f} {a.value}.", (0, 1), alignment)
                  for f, a in stated.items()]
    full_truth = {f: f in truth for f in FINDINGS}
    full_p = {f: probabilities.get(f, 0.05) for f in FINDINGS}
    return Case(Draft("x", dict(stated), error, entity), full_truth, full_p, statements,
                set(stated), readable)


def test_the_metrics_count_as_a_reader_would():
    points = {f: Points(0.6, 0.2, 0.2, 0.6) for f in FINDINGS}
    checked = frozenset(FINDINGS)
    effusion, edema = "Pleural Effusion", "Edema"
    cases = [
        # truthful, no flag: effusion present and said so, edema absent and denied
        case(None, None, {effusion: Assertion.PRESENT, edema: Assertion.ABSENT}, {effusion},
             {effusion: 0.9, edema: 0.1}),
        # truthful, but the model sees edema: a false flag (a contradiction of the denial)
        case(None, None, {edema: Assertion.ABSENT}, set(), {edema: 0.7}),
        # a flip caught (effusion present, denied)
        case("flip", effusion, {effusion: Assertion.ABSENT}, {effusion}, {effusion: 0.9}),
        # an omission missed (effusion present, p too low to raise it)
        case("omission", effusion, {}, {effusion}, {effusion: 0.5}),
        # a false finding caught as unsupported, plus an unrelated false omission
        case("false_finding", edema, {edema: Assertion.PRESENT}, set(), {edema: 0.1, "Cardiomegaly": 0.8}),
        # an image the model cannot read: no flags at all
        case("flip", effusion, {effusion: Assertion.ABSENT}, {effusion}, {effusion: 0.9}, readable=False),
    ]
    s = score(cases, points, checked)
    assert s["false_flag_rate"] == 0.5 and s["false_flags_per_draft_mean"] == 0.5
    assert s["recall_by_type"] == {"flip": 0.5, "omission": 0.0, "false_finding": 1.0}
    assert s["recall"] == pytest.approx(2 / 4)
    assert (s["tp"], s["fp"]) == (2, 2) and s["precision"] == 0.5
    # correct: the clean truthful draft, and the erroneous drafts with any flag (flip, false finding)
    assert s["report_detection_accuracy"] == pytest.approx(3 / 6)
    assert s["error_report_detection"] == pytest.approx(2 / 4)
    auroc = auroc_by_type(cases)
    assert auroc["flip"] == 1.0  # the flipped statement's p (0.9) above every truthful denial's


def test_the_operating_point_family_never_crosses_one_half():
    cases = [case(None, None, {}, {"Edema"} if i % 2 else set(), {"Edema": i / 100})
             for i in range(100)]
    floor = {f: Points(0.5, 0.2, 0.2, 0.5) for f in FINDINGS}
    strict = level_points(cases, 0.01, floor)["Edema"]
    lax = level_points(cases, 0.3, floor)["Edema"]
    assert strict.present >= lax.present >= 0.5
    assert strict.absent <= lax.absent <= 0.5 and lax.unsupported == lax.absent
