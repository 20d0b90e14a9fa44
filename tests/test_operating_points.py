"""Flag modes: the rules with points switched off, the modes file, and fitting on drafts."""

from __future__ import annotations

import json
import random

import pytest

from core_model.flag_rules import Points, Statement, raise_flags
from core_model.operating_points import (
    DEFAULT_MODE,
    MODES,
    OPERATING_POINTS_FILE,
    Mode,
    OperatingPointsError,
    load_modes,
    save_modes,
)
from core_model.text.observations import FINDINGS, Assertion
from training.operating_points import fit_modes
from training.reader_drafts import Draft
from training.reader_suite import Case, score

SHARP = FINDINGS[:6]  # the synthetic model sees these well
BLIND = "Fracture"  # and this one not at all


def _statement(finding: str, assertion: Assertion, alignment: float = -1.0) -> Statement:
    return Statement(finding, assertion, "", (0, 0), alignment)


def test_a_point_of_none_turns_its_rule_off():
    f = "Edema"
    probabilities = {g: 0.9 for g in FINDINGS}
    denial = [_statement(f, Assertion.ABSENT)]
    on = {g: Points(0.6, 0.2, 0.3, 0.6) for g in FINDINGS}
    off = {**on, f: Points(None, 0.2, 0.3, 0.6)}
    assert [r.kind for r in raise_flags(denial, {f}, probabilities, on, {f})] == ["contradiction"]
    assert raise_flags(denial, {f}, probabilities, off, {f}) == []
    # omissions have their own point
    no_omission = {g: Points(0.6, 0.2, 0.3, None) for g in FINDINGS}
    assert raise_flags([], set(), probabilities, no_omission, set(FINDINGS)) == []
    assert len(raise_flags([], set(), probabilities, on, set(FINDINGS))) == len(FINDINGS)
    # an assertion: a contradiction below "absent" against the alignment, unsupported below
    # "unsupported" otherwise, nothing when both are off
    low = {**probabilities, f: 0.1}
    assertion = [_statement(f, Assertion.PRESENT, alignment=0.5)]
    assert [r.kind for r in raise_flags(assertion, {f}, low, on, {f})] == ["unsupported"]
    assert [r.kind for r in raise_flags(assertion, {f}, low, on, {f}, alignment=False)] == ["contradiction"]
    assert raise_flags(assertion, {f}, low, {**on, f: Points(0.6, None, None, 0.6)}, {f}) == []


def _mode(name: str = "balanced") -> Mode:
    points = {f: Points(0.7, 0.1, 0.2, None) for f in SHARP}
    points[BLIND] = Points(None, None, None, None)
    return Mode(name, MODES[name][1], False, points,
                {"false_flag_rate": 0.04, "recall": 0.71, "truthful_n": 900})


def test_modes_round_trip_and_describe_themselves(tmp_path):
    save_modes(tmp_path, {"balanced": _mode()}, provenance={"split": "validate"})
    modes = load_modes(tmp_path)
    assert list(modes) == ["balanced"]
    mode = modes["balanced"]
    assert mode.checked == frozenset(SHARP) and BLIND not in mode.checked
    assert mode.points["Edema"] == Points(0.7, 0.1, 0.2, None)
    assert mode.describe() == "Balanced: 4.0% of truthful drafts flagged, 71% of errors caught (validation)"
    assert load_modes(tmp_path / "nothing-here") == {}


@pytest.mark.parametrize("damage, words", [
    (lambda d: "{not json", "cannot be read"),
    (lambda d: json.dumps({**d, "format": "other"}), "not a Concord operating-points file"),
    (lambda d: json.dumps({**d, "format_version": 99}), "newer Concord"),
    (lambda d: json.dumps({**d, "modes": {"balanced": {**d["modes"]["balanced"],
                                                        "points": {"Edema": {"present": 1.5, "absent": 0.1,
                                                                             "unsupported": 0.1, "omission": None}}}}}),
     "outside [0, 1]"),
    (lambda d: json.dumps({**d, "modes": {"balanced": {**d["modes"]["balanced"],
                                                        "points": {"Gout": {"present": 0.5, "absent": 0.1,
                                                                            "unsupported": 0.1, "omission": None}}}}}),
     "unknown findings"),
    (lambda d: json.dumps({**d, "modes": {"balanced": {"budget": 0.05}}}), "missing its"),
])
def test_a_damaged_modes_file_is_a_clear_error(tmp_path, damage, words):
    save_modes(tmp_path, {"balanced": _mode()})
    path = tmp_path / OPERATING_POINTS_FILE
    path.write_text(damage(json.loads(path.read_text())))
    with pytest.raises(OperatingPointsError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_modes(tmp_path)


def _synthetic_cases(studies: int, seed: int) -> list[Case]:
    """Studies whose 'model' separates SHARP findings with some overlap and is blind to BLIND;
    drafts as the suite writes them (truthful, flip, omission, false finding)."""
    rng = random.Random(seed)
    cases = []
    for _ in range(studies):
        truth = {f: (f in SHARP or f == BLIND) and rng.random() < 0.3 for f in FINDINGS}
        probabilities = {}
        for f in FINDINGS:
            if f == BLIND:
                probabilities[f] = rng.random() * 0.3  # says nothing about the image
            elif f in SHARP:
                centre = 0.8 if truth[f] else 0.2
                probabilities[f] = min(max(rng.gauss(centre, 0.15), 0.0), 1.0)
            else:
                probabilities[f] = 0.01
        present = [f for f in FINDINGS if truth[f]]
        absent = [f for f in (*SHARP, BLIND) if not truth[f]]
        stated = {f: Assertion.PRESENT for f in present}
        stated |= {f: Assertion.ABSENT for f in rng.sample(absent, min(2, len(absent)))}
        drafts = [Draft("", dict(stated))]
        if present:
            flipped, left_out = rng.choice(present), rng.choice(present)
            drafts.append(Draft("", {**stated, flipped: Assertion.ABSENT}, "flip", flipped))
            drafts.append(Draft("", {f: a for f, a in stated.items() if f != left_out},
                                "omission", left_out))
        if absent:
            added = rng.choice(absent)
            drafts.append(Draft("", {**stated, added: Assertion.PRESENT}, "false_finding", added))
        for draft in drafts:
            statements = [_statement(f, a, rng.uniform(-1, 1)) for f, a in draft.stated.items()]
            cases.append(Case(draft, truth, probabilities, statements, set(draft.stated), True))
    return cases


def test_fitted_modes_keep_their_budgets_and_leave_out_what_the_model_cannot_see():
    validation, held_out = _synthetic_cases(1500, seed=1), _synthetic_cases(1500, seed=2)
    modes = fit_modes(validation)
    assert list(modes) == list(MODES) and DEFAULT_MODE in modes
    recalls, rates = [], []
    for name, mode in modes.items():
        budget = MODES[name][1]
        # the figures are held out (cross-validated over the validation studies)
        assert mode.validation["cross_validated"] == 5 and mode.validation["false_flag_rate"] <= budget
        assert BLIND not in mode.checked  # no flag on a finding the model is blind to
        assert set(mode.checked) <= set(SHARP)
        for p in mode.points.values():  # no flag says "present" below 0.5, "absent" above
            assert p.present is None or p.present >= 0.5
            assert p.omission is None or p.omission >= 0.5
            assert all(v is None or v <= 0.5 for v in (p.absent, p.unsupported))
        again = score(held_out, mode.points, mode.checked, alignment=mode.alignment)
        assert again["false_flag_rate"] <= budget + 0.03  # it holds on drafts it never saw
        recalls.append(again["recall"])
        rates.append(again["false_flag_rate"])
    assert recalls == sorted(recalls) and rates == sorted(rates)
    assert recalls[-1] > 0.5


def test_fitting_only_the_findings_asked_for():
    modes = fit_modes(_synthetic_cases(600, seed=3), findings=frozenset(SHARP[:2]))
    assert all(m.checked <= frozenset(SHARP[:2]) for m in modes.values())
    assert any(m.checked for m in modes.values())


def test_saving_modes_writes_the_model_card_section_once(tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Concord model x\n\n## Metrics\n\n| a | b |\n")
    save_modes(tmp_path, {"balanced": _mode()}, provenance={"split": "validate"})
    save_modes(tmp_path, {"balanced": _mode()}, provenance={"split": "validate"})
    text = card.read_text()
    assert text.count("## Flag modes") == 1 and text.startswith("# Concord model x")
    assert "## Metrics" in text
    row = next(line for line in text.splitlines() if line.startswith("| Balanced"))
    assert "| 5% | 4.0% | 71.0% |" in row and "fracture" in row and "edema" not in row
