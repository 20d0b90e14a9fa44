"""The phantom world's report writer: labels, determinism, templates, variety, temporal language.

import dataclasses
The studies come from a small local sampler (not the world sampler) that
draws findings from :mod:`training.phantom.truth`'s vocabularies, with hedged
findings, devices, priors with changes, and normal studies.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter

import numpy as np
import pytest

from core_model.text.labeler import label_report
from core_model.text.observations import OBSERVATIONS, Assertion
from core_model.text.sections import clinical_sections
from training.phantom.report_writer import (
    NORMAL_TEMPLATE_NEGATED,
    NORMAL_TEMPLATE_VIEWS,
    NORMAL_TEMPLATE_WEIGHTS,
    NORMAL_TEMPLATES,
    TEMPLATE_SHARE,
    WrittenReport,
    write_report,
)
from training.phantom.truth import (
    DEVICE_KINDS,
    LESION_KINDS,
    LUNG_LOCATIONS,
    SEVERITIES,
    Change,
    Finding,
    StudyTruth,
)
from training.phantom.world import derive_labels as derive_study_labels

_LUNG_OBS = ("Lung Opacity", "Lung Lesion", "Consolidation", "Pneumonia", "Atelectasis")
_SIDED_OBS = ("Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture")
_PATHOLOGIES = tuple(o for o in SEVERITIES if o != "Support Devices")
_DEVICE_SIDES = {
    "et_tube": (None,), "ng_tube": (None,), "central_line": ("right", "left"),
    "picc": ("right", "left"), "pacemaker": ("left", "right"), "chest_tube": ("right", "left"),
}



def derive_labels(study, written):
    """The labels the dataset writer stores: the truth plus what the report negated."""
    return derive_study_labels(dataclasses.replace(study, negated=list(written.negated)))

def _pick(rng: np.random.Generator, seq):  # noqa: ANN001, ANN202 - tiny local helper
    return seq[int(rng.integers(len(seq)))]


def _finding(rng: np.random.Generator, obs: str) -> Finding:
    """One random finding of ``obs`` with the attributes the world sampler may give it."""
    sev = _pick(rng, SEVERITIES[obs]) if SEVERITIES[obs] and rng.random() < 0.85 else None
    lat = loc = kind = None
    params: dict = {}
    if obs in _LUNG_OBS:
        if rng.random() < 0.85:
            side = _pick(rng, ("right", "left", "bilateral"))
            lat = side
            loc = _pick(rng, LUNG_LOCATIONS[side]) if rng.random() < 0.8 else None
        if obs == "Lung Lesion":
            kind = _pick(rng, LESION_KINDS) if rng.random() < 0.9 else None
            if rng.random() < 0.8:
                params["size_mm"] = float(
                    rng.uniform(5, 28) if kind != "mass" else rng.uniform(30, 70)
                )
            if lat == "bilateral":
                lat, loc = "right", _pick(rng, LUNG_LOCATIONS["right"])
    elif obs in _SIDED_OBS:
        if rng.random() < 0.9:
            lat = _pick(rng, ("right", "left", "bilateral") if obs != "Fracture" else ("right", "left"))
        if obs == "Fracture" and rng.random() < 0.7:
            params["rib"] = int(rng.integers(1, 13))
    elif obs == "Edema":
        lat = "bilateral" if rng.random() < 0.3 else None
    elif obs == "Support Devices":
        kind = _pick(rng, DEVICE_KINDS)
        lat = _pick(rng, _DEVICE_SIDES[kind])
        if kind == "et_tube" and rng.random() < 0.5:
            params["tip_cm"] = round(float(rng.uniform(2, 7)), 1)
    hedged = obs != "Support Devices" and rng.random() < 0.15
    return Finding(obs, lat, sev, loc, kind, params, hedged)


def _study(rng: np.random.Generator, sid: int, prior: StudyTruth | None = None) -> StudyTruth:
    """A random study; with ``prior``, a follow-up whose changes refer to it."""
    findings: list[Finding] = []
    changes: list[Change] = []
    if prior is not None:
        for f in prior.findings:
            r = rng.random()
            if r < 0.3:
                changes.append(Change(f.observation, "resolved", f.laterality))
                continue
            g = Finding(f.observation, f.laterality, f.severity, f.location, f.kind,
                        dict(f.params), f.hedged and rng.random() < 0.5)
            if r < 0.6 or not SEVERITIES[f.observation]:
                status = "unchanged"
            else:
                status = "increased" if r < 0.8 else "decreased"
            findings.append(g)
            changes.append(Change(f.observation, status, f.laterality))
    normal = rng.random() < 0.35
    if not normal:
        for _ in range(int(rng.integers(1, 4))):
            obs = _pick(rng, _PATHOLOGIES)
            findings.append(_finding(rng, obs))
            if prior is not None:
                changes.append(Change(obs, "new", findings[-1].laterality))
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            findings.append(_finding(rng, "Support Devices"))
            if prior is not None:
                changes.append(Change("Support Devices", "new", findings[-1].laterality))
    return StudyTruth(
        subject_id=10000000 + sid, study_id=50000000 + sid, split="train", findings=findings,
        prior_study_id=prior.study_id if prior is not None else None, changes=changes,
    )


def sample_studies(n: int, seed: int = 0) -> list[tuple[StudyTruth, StudyTruth | None, str]]:
    """``n`` (study, prior or None, view) triples; about a third are follow-ups."""
    rng = np.random.default_rng(seed)
    out: list[tuple[StudyTruth, StudyTruth | None, str]] = []
    for i in range(n):
        prior = None
        if rng.random() < 0.35:
            prior = _study(rng, 2 * i + 1)
        study = _study(rng, 2 * i, prior)
        out.append((study, prior, "AP" if rng.random() < 0.4 else "PA"))
    return out


def _write_all(
    studies: list[tuple[StudyTruth, StudyTruth | None, str]], seed: int = 1
) -> list[WrittenReport]:
    rng = np.random.default_rng(seed)
    return [write_report(s, rng, prior=p, view=v) for s, p, v in studies]


def _clinical(text: str) -> str:
    return " ".join(" ".join(s.text.split()) for s in clinical_sections(text))


@pytest.fixture(scope="module")
def sample() -> tuple[list[tuple[StudyTruth, StudyTruth | None, str]], list[WrittenReport]]:
    studies = sample_studies(1500, seed=7)
    return studies, _write_all(studies)


# --------------------------------------------------------------------------- (1) labels


def test_labeler_agrees_with_derived_labels(sample) -> None:  # noqa: ANN001
    studies, written = sample
    bad = []
    for (study, _, _), w in zip(studies, written, strict=True):
        expected = derive_labels(study, w)
        got = label_report(w.text).chexpert_row()
        if got != expected:
            diff = {o: (expected[o], got[o]) for o in expected if expected[o] != got[o]}
            bad.append((diff, w.text))
    assert not bad, f"{len(bad)} disagreements; first: {bad[0][0]}\n{bad[0][1]}"


def test_more_seeds_agree() -> None:
    studies = sample_studies(1500, seed=11)
    for (study, _, _), w in zip(studies, _write_all(studies, seed=3), strict=True):
        assert label_report(w.text).chexpert_row() == derive_labels(study, w), w.text


def test_templates_say_what_their_negated_lists_say() -> None:
    for tid, findings, impression in NORMAL_TEMPLATES:
        text = (f"FINDINGS: {findings}\n\n" if findings else "") + f"IMPRESSION: {impression}"
        labels = label_report(text).labels
        absent = {o for o, a in labels.items() if a is Assertion.ABSENT}
        assert absent == set(NORMAL_TEMPLATE_NEGATED[tid]), tid
        assert labels["No Finding"] is Assertion.PRESENT, tid
        assert not {o for o, a in labels.items() if a in (Assertion.PRESENT, Assertion.UNCERTAIN)
                    and o != "No Finding"}, tid


def test_hedged_and_negated_lists(sample) -> None:  # noqa: ANN001
    studies, written = sample
    for (study, _, _), w in zip(studies, written, strict=True):
        present = {f.observation for f in study.findings if not f.hedged}
        hedged = {f.observation for f in study.findings if f.hedged} - present
        assert set(w.hedged) == hedged
        assert not set(w.negated) & (present | hedged)


def test_odd_attribute_combinations_still_agree() -> None:
    """Attributes drawn independently (sides, lobes, severities, kinds, changes that do not fit)."""
    rng = np.random.default_rng(123)
    observations = list(SEVERITIES)
    locations = [loc for v in LUNG_LOCATIONS.values() for loc in v] + [None, None, "clavicle"]
    severities = ["small", "moderate", "large", "mild", "severe", None, None]
    sides = [None, "left", "right", "bilateral"]
    statuses = ["resolved", "unchanged", "increased", "decreased", "new"]
    for _ in range(1500):
        findings = []
        for _ in range(int(rng.integers(0, 5))):
            obs = _pick(rng, observations)
            kind = None
            if obs == "Support Devices":
                kind = _pick(rng, [*DEVICE_KINDS, None])
            elif obs == "Lung Lesion":
                kind = _pick(rng, [*LESION_KINDS, None])
            params: dict = {}
            if rng.random() < 0.5:
                params["size_mm"] = float(rng.uniform(3, 80))
            if rng.random() < 0.5:
                params["rib"] = int(rng.integers(1, 13))
            findings.append(Finding(obs, _pick(rng, sides), _pick(rng, severities),
                                    _pick(rng, locations), kind, params, bool(rng.random() < 0.3)))
        prior = None
        changes = []
        if rng.random() < 0.5:
            prior = StudyTruth(1, 1, "train", [
                Finding(_pick(rng, observations), _pick(rng, sides))
                for _ in range(int(rng.integers(0, 4)))
            ])
            for f in prior.findings + findings:
                changes.append(Change(f.observation, _pick(rng, statuses), f.laterality))
        study = StudyTruth(1, 2, "train", findings, prior_study_id=1 if prior else None,
                           changes=changes)
        w = write_report(study, rng, prior=prior, view=_pick(rng, ("PA", "AP")))
        assert label_report(w.text).chexpert_row() == derive_labels(study, w), w.text


# --------------------------------------------------------------------------- (2) determinism


def test_deterministic_for_a_generator_state() -> None:
    studies = sample_studies(200, seed=5)
    a = _write_all(studies, seed=42)
    b = _write_all(studies, seed=42)
    assert [w.text for w in a] == [w.text for w in b]
    assert [(w.negated, w.hedged, w.template) for w in a] == [
        (w.negated, w.hedged, w.template) for w in b
    ]
    c = _write_all(studies, seed=43)
    assert [w.text for w in a] != [w.text for w in c]


# --------------------------------------------------------------------------- (3) templates


def test_template_table() -> None:
    assert len(NORMAL_TEMPLATES) == len(NORMAL_TEMPLATE_WEIGHTS) >= 5
    assert NORMAL_TEMPLATES[0][2] == "No acute cardiopulmonary process."
    assert list(NORMAL_TEMPLATE_WEIGHTS[:5]) == [15829, 4643, 4488, 1255, 1014]
    assert list(NORMAL_TEMPLATE_WEIGHTS) == sorted(NORMAL_TEMPLATE_WEIGHTS, reverse=True)
    assert len({t[0] for t in NORMAL_TEMPLATES}) == len(NORMAL_TEMPLATES)
    assert set(NORMAL_TEMPLATE_NEGATED) == {t[0] for t in NORMAL_TEMPLATES}
    assert set(NORMAL_TEMPLATE_VIEWS) <= set(NORMAL_TEMPLATE_NEGATED)


def test_normal_template_share_and_word_for_word_repeats() -> None:
    rng = np.random.default_rng(0)
    normal = StudyTruth(1, 2, "train", [])
    written = [write_report(normal, rng, view="PA" if i % 2 else "AP") for i in range(3000)]
    templated = [w for w in written if w.template]
    share = len(templated) / len(written)
    assert abs(share - TEMPLATE_SHARE) < 0.05, share
    by_id = {t[0]: t for t in NORMAL_TEMPLATES}
    counts = Counter(w.template for w in templated)
    assert counts.most_common(1)[0][0] == NORMAL_TEMPLATES[0][0]
    assert counts[NORMAL_TEMPLATES[0][0]] > 0.45 * len(templated)
    for w in templated:
        _, findings, impression = by_id[w.template]
        expected = " ".join(p for p in (findings, impression) if p)
        assert _clinical(w.text) == expected
        assert w.negated == sorted(NORMAL_TEMPLATE_NEGATED[w.template], key=OBSERVATIONS.index)
    # Free-text normals vary.
    free = {_clinical(w.text) for w in written if not w.template}
    assert len(free) > 0.8 * sum(1 for w in written if not w.template)


def test_normal_studies_with_devices_are_free_text() -> None:
    rng = np.random.default_rng(1)
    study = StudyTruth(1, 2, "train", [Finding("Support Devices", kind="et_tube")])
    for _ in range(50):
        w = write_report(study, rng, view="AP")
        assert w.template is None
        assert label_report(w.text).chexpert_row() == derive_labels(study, w)


# --------------------------------------------------------------------------- (4) variety

_SIDE_WORDS = {
    "left": ("left",), "right": ("right",),
    "bilateral": ("bilateral", "bibasilar", "bibasal", "both", "bilaterally"),
}
_SEVERITY_WORDS = {
    "small": ("small", "trace", "tiny"),
    "moderate": ("moderate", "moderately", "moderate-sized"),
    "large": ("large", "large-sized", "markedly"),
    "mild": ("mild", "mildly", "slight", "slightly", "minimal"),
    "severe": ("severe", "severely", "marked", "markedly"),
}
_DEVICE_WORDS = {
    "et_tube": r"endotracheal tube|et tube",
    "ng_tube": r"nasogastric|enteric tube|ng tube|orogastric|feeding tube",
    "central_line": r"central venous catheter|central line|ij line|subclavian line",
    "picc": r"picc",
    "pacemaker": r"pacemaker",
    "chest_tube": r"chest tube|pigtail catheter",
}


def test_every_observation_and_device_kind_appears(sample) -> None:  # noqa: ANN001
    studies, written = sample
    seen_obs: Counter[str] = Counter()
    seen_kinds: Counter[str] = Counter()
    for (study, _, _), w in zip(studies, written, strict=True):
        text = _clinical(w.text).lower()
        labels = label_report(w.text)
        for f in study.findings:
            seen_obs[f.observation] += 1
            if f.observation == "Support Devices" and f.kind:
                assert re.search(_DEVICE_WORDS[f.kind], text), (f.kind, text)
                seen_kinds[f.kind] += 1
        assert labels is not None
    assert set(seen_obs) == set(SEVERITIES)
    assert set(seen_kinds) == set(DEVICE_KINDS)


def test_laterality_and_severity_words_are_written(sample) -> None:  # noqa: ANN001
    """Each finding has a sentence naming it (with its assertion) and its side and severity words."""
    studies, written = sample
    missing = []
    for (study, _, _), w in zip(studies, written, strict=True):
        sentences = label_report(w.text).sentences
        for f in study.findings:
            if f.observation == "Support Devices":
                continue
            want = Assertion.UNCERTAIN if f.hedged else Assertion.PRESENT
            texts = [
                s.text.lower() for s in sentences
                if any(m.observation == f.observation and m.assertion is want for m in s.mentions)
            ]
            assert texts, (f, w.text)
            words_ok = []
            if f.laterality and f.location != "lingula":
                words_ok.append(_SIDE_WORDS[f.laterality])
            if f.severity:
                words_ok.append(_SEVERITY_WORDS[f.severity])
            for words in words_ok:
                if not any(re.search(rf"\b(?:{'|'.join(words)})\b", t) for t in texts):
                    missing.append((f, texts))
    assert not missing, f"{len(missing)} findings without their words; first: {missing[0]}"


def test_phrasing_variety(sample) -> None:  # noqa: ANN001
    studies, written = sample
    sentences_by_obs: dict[str, set[str]] = {}
    negative_sentences: set[str] = set()
    hedge_words = Counter()
    for w in written:
        for s in label_report(w.text).sentences:
            shape = re.sub(r"\d+(?:\.\d+)?", "#", s.text.lower())
            for m in s.mentions:
                if m.assertion is Assertion.PRESENT:
                    sentences_by_obs.setdefault(m.observation, set()).add(shape)
                elif m.assertion is Assertion.ABSENT:
                    negative_sentences.add(shape)
                elif m.assertion is Assertion.UNCERTAIN:
                    for word in ("possible", "questionable", "probable", "cannot", "excluded",
                                 "may", "versus", "likely", "concerning", "borderline"):
                        if word in s.text.lower():
                            hedge_words[word] += 1
    for obs, shapes in sentences_by_obs.items():
        assert len(shapes) >= 5, (obs, shapes)
    assert len(negative_sentences) >= 40
    assert len(hedge_words) >= 6
    texts = "\n".join(w.text for w in written)
    for phrase in ("No pleural effusion", "Heart size is normal", "FINAL REPORT",
                   "EXAMINATION:", "INDICATION:", "COMPARISON: ", "TECHNIQUE:", "___"):
        assert phrase in texts, phrase
    assert re.search(r"^ ?1\. ", texts, re.M)


# --------------------------------------------------------------------------- (5) temporal

_TEMPORAL = re.compile(
    r"\b(?:unchanged|stable|new|increased|decreased|resolved|resolution|interval|compared|"
    r"comparison|prior|previous(?:ly)?|again|persistent|since|improving|improved|worsening|"
    r"remains|removed|removal)\b",
    re.I,
)


def test_temporal_language_only_with_a_prior(sample) -> None:  # noqa: ANN001
    studies, written = sample
    with_prior = 0
    temporal_with_prior = 0
    for (_, prior, _), w in zip(studies, written, strict=True):
        clinical = _clinical(w.text)
        comparison = re.search(r"COMPARISON:\s*(.*)", w.text)
        assert comparison is not None
        if prior is None:
            assert not _TEMPORAL.search(clinical), clinical
            assert comparison.group(1).strip() == "None."
        else:
            with_prior += 1
            assert "___" in comparison.group(1)
            temporal_with_prior += bool(_TEMPORAL.search(clinical))
    assert temporal_with_prior > 0.6 * with_prior


def test_resolution_is_written_as_absent() -> None:
    prior = StudyTruth(1, 1, "train", [Finding("Pneumothorax", "right", "small")])
    study = StudyTruth(1, 2, "train", [], prior_study_id=1,
                       changes=[Change("Pneumothorax", "resolved", "right")])
    rng = np.random.default_rng(3)
    resolved = 0
    for _ in range(200):
        w = write_report(study, rng, prior=prior)
        row = label_report(w.text).chexpert_row()
        assert row == derive_labels(study, w)
        if "resolution" in w.text.lower() or "resolved" in w.text.lower():
            resolved += 1
            assert "Pneumothorax" in w.negated
    assert resolved > 50


# --------------------------------------------------------------------------- speed


def test_speed() -> None:
    studies = sample_studies(600, seed=9)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for s, p, v in studies:
        write_report(s, rng, prior=p, view=v)
    rate = len(studies) / (time.perf_counter() - t0)
    assert rate > 2000, f"{rate:.0f} reports/s"
