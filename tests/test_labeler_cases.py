"""Hand-built sentence cases for the rule-based report labeler.

Each row of ``tests/data/labeler_sentences.tsv`` is one radiology report
sentence (written for this test set, not copied from any report) with the
CheXpert labels a careful radiologist would give it:

    id <TAB> rule <TAB> sentence <TAB> expected

``expected`` holds ``Observation=value`` items (value ``1``, ``0`` or ``-1``)
for every observation the sentence mentions; an observation not listed is
expected NOT mentioned (blank).  Optional ``lat:Observation=side`` and
``sev:Observation=grade`` items state the laterality / severity of a PRESENT
finding.  Items are separated by ``;`` and ``|`` (either works), e.g.

    Pneumothorax=0;Pleural Effusion=1|lat:Pleural Effusion=left|sev:Pleural Effusion=small
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core_model.text.observations import FINDINGS, Assertion

DATA = Path(__file__).parent / "data" / "labeler_sentences.tsv"
HEADER = ["id", "rule", "sentence", "expected"]

RULES = (
    "pre_negation",
    "post_negation",
    "list_negation",
    "termination",
    "pseudo_negation",
    "double_negation",
    "uncertainty_pre",
    "uncertainty_post",
    "versus",
    "no_finding_phrase",
    "heart_size_normal",
    "mediastinum",
    "laterality",
    "severity",
    "abbreviation",
    "devices",
    "device_removed",
    "deid_span",
    "multi_finding",
    "temporal_words",
    "plain_positive",
    "not_mentioned",
    "hedged_negation",
)
VALUES = frozenset({"1", "0", "-1"})
LATERALITIES = frozenset({"left", "right", "bilateral"})
SEVERITIES = frozenset({"small", "mild", "moderate", "large", "severe"})


@dataclass(frozen=True)
class Case:
    id: str
    rule: str
    sentence: str
    raw_expected: str
    labels: dict[str, str]  # all 13 findings -> "1" / "0" / "-1" / ""
    lat: dict[str, str] = field(default_factory=dict)
    sev: dict[str, str] = field(default_factory=dict)


def _parse_expected(raw: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    labels = dict.fromkeys(FINDINGS, "")
    lat: dict[str, str] = {}
    sev: dict[str, str] = {}
    for item in raw.replace("|", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected item without '=': {item!r}")
        key, value = key.strip(), value.strip()
        if key.startswith("lat:"):
            lat[key[4:].strip()] = value
        elif key.startswith("sev:"):
            sev[key[4:].strip()] = value
        else:
            if key not in labels:
                raise ValueError(f"unknown observation {key!r} in {raw!r}")
            labels[key] = value
    return labels, lat, sev


def _load() -> list[Case]:
    with DATA.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if header != HEADER:
            raise ValueError(f"{DATA.name}: header {header!r}, expected {HEADER!r}")
        cases = []
        for lineno, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != len(HEADER):
                raise ValueError(f"{DATA.name}:{lineno}: {len(row)} fields, expected 4: {row!r}")
            case_id, rule, sentence, raw = row
            labels, lat, sev = _parse_expected(raw)
            cases.append(Case(case_id, rule, sentence, raw, labels, lat, sev))
    return cases


CASES = _load()


@pytest.fixture(scope="module")
def label_sentence():
    from core_model.text.labeler import label_sentence

    return label_sentence


def _norm(value: object) -> str:
    """A laterality / severity as a lower-case string ("" for None); enums by value."""
    if value is None:
        return ""
    value = getattr(value, "value", value)
    return str(value).strip().lower()


def _describe(case: Case, got: dict[str, str], mentions=()) -> str:
    want = {k: v for k, v in case.labels.items() if v != ""}
    have = {k: v for k, v in got.items() if v != ""}
    lines = [
        f"[{case.id} / {case.rule}]",
        f"  sentence: {case.sentence!r}",
        f"  expected: {want}  (raw: {case.raw_expected!r})",
        f"  got:      {have}",
    ]
    diff = [
        f"{k}: expected {case.labels[k]!r} got {got[k]!r}"
        for k in FINDINGS
        if case.labels[k] != got[k]
    ]
    if diff:
        lines.append("  differs:  " + "; ".join(diff))
    for m in mentions:
        lines.append(
            f"  mention:  {m.observation} {m.text!r} [{m.start}:{m.end}] "
            f"{_norm(m.assertion)} lat={_norm(m.laterality)!r} sev={_norm(m.severity)!r}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ the data itself


def test_dataset_size_and_rule_coverage():
    assert len(CASES) >= 150, f"only {len(CASES)} rows in {DATA.name}"
    counts = Counter(c.rule for c in CASES)
    unknown = sorted(set(counts) - set(RULES))
    assert not unknown, f"unknown rule names: {unknown}"
    thin = {r: counts.get(r, 0) for r in RULES if counts.get(r, 0) < 3}
    assert not thin, f"rules with fewer than 3 cases: {thin}"


def test_dataset_is_well_formed():
    ids = Counter(c.id for c in CASES)
    assert not [i for i, n in ids.items() if n > 1], "duplicate ids"
    problems = []
    for c in CASES:
        if not c.sentence.strip():
            problems.append(f"{c.id}: empty sentence")
        for obs, value in c.labels.items():
            if value not in VALUES and value != "":
                problems.append(f"{c.id}: {obs}={value!r} is not 1/0/-1")
        for kind, items, allowed in (("lat", c.lat, LATERALITIES), ("sev", c.sev, SEVERITIES)):
            for obs, value in items.items():
                if value not in allowed:
                    problems.append(f"{c.id}: {kind}:{obs}={value!r} not in {sorted(allowed)}")
                if c.labels.get(obs) != "1":
                    problems.append(
                        f"{c.id}: {kind}:{obs} given for a finding not expected present"
                    )
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ the labeler


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_labels(case: Case, label_sentence):
    sl = label_sentence(case.sentence)
    got = {obs: Assertion(sl.labels.get(obs, Assertion.NOT_MENTIONED)).chexpert for obs in FINDINGS}
    assert got == case.labels, _describe(case, got, sl.mentions)


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.lat or c.sev],
    ids=[c.id for c in CASES if c.lat or c.sev],
)
def test_laterality_and_severity(case: Case, label_sentence):
    sl = label_sentence(case.sentence)
    got = {obs: Assertion(sl.labels.get(obs, Assertion.NOT_MENTIONED)).chexpert for obs in FINDINGS}
    failures = []
    for attr, wanted in (("laterality", case.lat), ("severity", case.sev)):
        for obs, value in wanted.items():
            present = [
                m for m in sl.mentions if m.observation == obs and m.assertion == Assertion.PRESENT
            ]
            if not any(_norm(getattr(m, attr)) == value for m in present):
                seen = [_norm(getattr(m, attr)) for m in present]
                failures.append(f"{obs} {attr}: expected {value!r}, present mentions have {seen}")
    assert not failures, "\n".join(failures) + "\n" + _describe(case, got, sl.mentions)
