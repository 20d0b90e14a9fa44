"""The phantom world's population: patients, their studies, and what each study shows.

A world is planned from (number of studies, seed): patients with one to
several studies each (a later study has the earlier one as its prior), a split
by patient (train / validate / test), and for every study its findings.  Each
patient draws from its own random stream and each study from its own, keyed by
the seed and the study's id, so one study never depends on another's random
numbers; a follow-up study does depend on its prior's *findings*, which is
what lets reports say "unchanged" or "new since ___".

Prevalences follow MIMIC-CXR's broad shape (support devices, effusion,
opacity, atelectasis and cardiomegaly common; lesions, fractures and pleural
thickening rare), with a floor so that every finding occurs in small worlds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from core_model.text.observations import OBSERVATIONS, PATHOLOGIES
from training.phantom.truth import (
    DEVICE_KINDS,
    LESION_KINDS,
    LUNG_LOCATIONS,
    SEVERITIES,
    Change,
    Finding,
    StudyTruth,
)

#: Relative frequency of each pathology in abnormal studies.
PREVALENCE: dict[str, float] = {
    "Pleural Effusion": 0.26,
    "Lung Opacity": 0.22,
    "Atelectasis": 0.22,
    "Cardiomegaly": 0.20,
    "Edema": 0.13,
    "Pneumonia": 0.09,
    "Consolidation": 0.07,
    "Pneumothorax": 0.06,
    "Enlarged Cardiomediastinum": 0.05,
    "Lung Lesion": 0.05,
    "Fracture": 0.04,
    "Pleural Other": 0.04,
}
#: Findings a radiologist may hedge, and how often.
HEDGE_RATE: dict[str, float] = {
    "Pneumonia": 0.35, "Atelectasis": 0.15, "Consolidation": 0.15, "Lung Opacity": 0.05,
    "Edema": 0.12, "Pleural Effusion": 0.08,
}
CHRONIC = {"Cardiomegaly", "Enlarged Cardiomediastinum", "Lung Lesion", "Pleural Other", "Fracture"}
SPLIT_FRACTIONS = (("train", 0.8), ("validate", 0.1), ("test", 0.1))
SUBJECT_BASE = 10_000_000
STUDY_BASE = 50_000_000


@dataclass(frozen=True)
class WorldConfig:
    """What ``concord phantom`` builds."""

    studies: int
    seed: int = 0
    size: int = 512
    normal_fraction: float = 0.4
    dicom: bool = False
    #: Mean number of studies per patient (geometric); 1.0 means no priors.
    studies_per_patient: float = 1.6
    #: Only these pathologies occur (None: all); focused worlds train fast in tests.
    pathologies: tuple[str, ...] | None = None
    #: Extra normal training studies that all carry one identical report (the paper's
    #: Table 3 imbalance study: ~130,000 studies reported "No active lung lesion").
    #: They come after the regular studies, which are the same as without them.
    extra_normals: int = 0
    extra_normal_report: str = "No active lung lesion."

    def __post_init__(self) -> None:
        if self.pathologies is not None:
            unknown = [p for p in self.pathologies if p not in PREVALENCE]
            if unknown or not self.pathologies:
                raise ValueError(f"unknown pathologies {unknown}; choose from {', '.join(PREVALENCE)}")
        if self.studies < 1:
            raise ValueError("a world needs at least one study")
        if not 0.0 <= self.normal_fraction <= 1.0:
            raise ValueError(f"normal fraction must be in [0, 1], not {self.normal_fraction}")
        if self.size < 64:
            raise ValueError(f"image size must be at least 64 px, not {self.size}")
        if self.studies_per_patient < 1.0:
            raise ValueError("studies per patient must be at least 1")
        if self.extra_normals < 0:
            raise ValueError(f"extra normal studies must be 0 or more, not {self.extra_normals}")
        if self.extra_normals and not self.extra_normal_report.strip():
            raise ValueError("the extra normal studies need a report text")


@dataclass(frozen=True)
class PatientPlan:
    index: int
    subject_id: int
    split: str
    study_ids: tuple[int, ...]
    #: One of the extra normal studies (``WorldConfig.extra_normals``).
    extra: bool = False


def stream(seed: int, *key: int | str) -> np.random.Generator:
    """A random stream that depends only on the seed and the key (never on other streams)."""
    digest = hashlib.sha256(repr((seed, *key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def plan_patients(config: WorldConfig) -> list[PatientPlan]:
    """Patients, their study ids and their split; cheap and deterministic."""
    rng = stream(config.seed, "plan")
    p_more = 1.0 - 1.0 / config.studies_per_patient
    patients: list[PatientPlan] = []
    next_study = 0
    while next_study < config.studies:
        count = 1
        while rng.random() < p_more and count < 8:
            count += 1
        count = min(count, config.studies - next_study)
        index = len(patients)
        studies = tuple(STUDY_BASE + next_study + k for k in range(count))
        split = _split_of(config.seed, index)
        patients.append(PatientPlan(index, SUBJECT_BASE + index, split, studies))
        next_study += count
    for k in range(config.extra_normals):  # one study each, all in the training split
        index = len(patients)
        patients.append(PatientPlan(index, SUBJECT_BASE + index, "train",
                                    (STUDY_BASE + config.studies + k,), extra=True))
    return patients


def _split_of(seed: int, patient: int) -> str:
    u = stream(seed, "split", patient).random()
    acc = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        acc += fraction
        if u < acc:
            return name
    return SPLIT_FRACTIONS[-1][0]


def patient_studies(config: WorldConfig, patient: PatientPlan) -> Iterator[StudyTruth]:
    """The studies of one patient, in order, each with findings and changes (no images yet)."""
    prior: StudyTruth | None = None
    if patient.extra:
        for study_id in patient.study_ids:
            yield StudyTruth(subject_id=patient.subject_id, study_id=study_id, split=patient.split,
                             findings=[])
        return
    for study_id in patient.study_ids:
        rng = stream(config.seed, "study", study_id)
        study = _sample_study(rng, config, patient, study_id, prior)
        yield study
        prior = study


def _sample_study(
    rng: np.random.Generator,
    config: WorldConfig,
    patient: PatientPlan,
    study_id: int,
    prior: StudyTruth | None,
) -> StudyTruth:
    normal = rng.random() < config.normal_fraction
    devices = _devices(rng, prior)
    changes: list[Change] = []
    allowed = set(config.pathologies or PREVALENCE)
    if prior is None:
        pathologies = [] if normal else _new_pathologies(rng, at_least=1, exclude=set(PREVALENCE) - allowed)
    else:
        pathologies, changes = _evolve(rng, prior, normal, exclude=set(PREVALENCE) - allowed)
    if config.pathologies is not None:
        pathologies = [f for f in pathologies if f.observation in allowed]
    coupled = _couple(rng, pathologies) if prior is None and config.pathologies is None else pathologies
    findings = coupled + devices
    return StudyTruth(
        subject_id=patient.subject_id,
        study_id=study_id,
        split=patient.split,
        findings=findings,
        prior_study_id=prior.study_id if prior else None,
        changes=changes,
    )


def _new_pathologies(rng: np.random.Generator, at_least: int = 1, exclude: set[str] = frozenset()) -> list[Finding]:
    names = [n for n in PREVALENCE if n not in exclude]
    if not names:
        return []
    weights = np.array([max(PREVALENCE[n], 0.04) for n in names])
    count = max(at_least, min(4, rng.poisson(0.8) + at_least))
    count = min(count, len(names))
    chosen = rng.choice(len(names), size=count, replace=False, p=weights / weights.sum())
    return [_new_finding(rng, names[i]) for i in sorted(chosen)]


def _new_finding(rng: np.random.Generator, observation: str) -> Finding:
    laterality: str | None = None
    location: str | None = None
    kind: str | None = None
    params: dict = {}
    if observation in ("Pleural Effusion", "Atelectasis", "Pleural Other"):
        laterality = _pick(rng, ["left", "right", "bilateral"], [0.35, 0.35, 0.3])
    elif observation in ("Lung Opacity", "Consolidation", "Pneumonia", "Lung Lesion", "Pneumothorax", "Fracture"):
        laterality = _pick(rng, ["left", "right"], [0.45, 0.55])
    if observation in ("Lung Opacity", "Consolidation", "Pneumonia", "Lung Lesion"):
        location = _pick(rng, list(LUNG_LOCATIONS[laterality]))
    elif observation == "Atelectasis":
        location = {"left": "left base", "right": "right base", "bilateral": "bilateral bases"}[laterality]
    if observation == "Lung Lesion":
        kind = _pick(rng, list(LESION_KINDS), [0.8, 0.2])
        params["size_mm"] = int(rng.integers(8, 30) if kind == "nodule" else rng.integers(32, 60))
    if observation == "Fracture":
        params["rib"] = int(rng.integers(3, 10))
    severities = SEVERITIES[observation]
    severity = _pick(rng, list(severities)) if severities else None
    hedged = bool(rng.random() < HEDGE_RATE.get(observation, 0.0))
    return Finding(observation, laterality, severity, location, kind, params, hedged)


def _couple(
    rng: np.random.Generator, pathologies: list[Finding], exclude: set[str] = frozenset()
) -> list[Finding]:
    """Pneumonia is usually seen as an opacity or consolidation at the same place."""
    present = {f.observation for f in pathologies} | set(exclude)
    out = list(pathologies)
    for f in pathologies:
        if f.observation == "Pneumonia" and not present & {"Consolidation", "Lung Opacity"} and rng.random() < 0.6:
            partner = "Consolidation" if rng.random() < 0.5 else "Lung Opacity"
            out.append(Finding(partner, f.laterality, None, f.location))
            present.add(partner)
    return out


def _devices(rng: np.random.Generator, prior: StudyTruth | None) -> list[Finding]:
    kept = []
    if prior is not None:
        for f in prior.findings:
            if f.observation == "Support Devices" and rng.random() < 0.8:
                kept.append(replace(f, params=dict(f.params)))
    have = {f.kind for f in kept}
    if rng.random() < 0.3:
        for kind in rng.choice(DEVICE_KINDS, size=int(rng.integers(1, 3)), replace=False):
            if kind in have:
                continue
            side = {"pacemaker": "left", "et_tube": None, "ng_tube": None}.get(
                str(kind), _pick(rng, ["left", "right"], [0.3, 0.7])
            )
            kept.append(Finding("Support Devices", side, None, None, str(kind)))
    return kept


def _evolve(
    rng: np.random.Generator, prior: StudyTruth, normal: bool, exclude: set[str] = frozenset()
) -> tuple[list[Finding], list[Change]]:
    pathologies: list[Finding] = []
    changes: list[Change] = []
    for f in prior.findings:
        if f.observation == "Support Devices":
            continue
        if normal or (f.observation not in CHRONIC and rng.random() < 0.3):
            changes.append(Change(f.observation, "resolved", f.laterality))
            continue
        g = replace(f, params=dict(f.params), hedged=bool(rng.random() < HEDGE_RATE.get(f.observation, 0.0)))
        status = "unchanged"
        severities = SEVERITIES[f.observation]
        if severities and f.severity in severities and f.observation not in CHRONIC:
            i = severities.index(f.severity)
            u = rng.random()
            if u < 0.25 and i + 1 < len(severities):
                g.severity, status = severities[i + 1], "increased"
            elif u < 0.5 and i > 0:
                g.severity, status = severities[i - 1], "decreased"
        pathologies.append(g)
        changes.append(Change(f.observation, status, f.laterality))
    if not normal:
        # Neither a finding kept nor one just resolved can be "new" in this study.
        have = {f.observation for f in pathologies} | {c.observation for c in changes} | set(exclude)
        if not pathologies or rng.random() < 0.3:
            new = _new_pathologies(rng, at_least=1, exclude=have)[:1]
            for f in _couple(rng, new, exclude=have):
                pathologies.append(f)
                changes.append(Change(f.observation, "new", f.laterality))
    return pathologies, changes


def _pick(rng: np.random.Generator, options: list, weights: list[float] | None = None):  # noqa: ANN202
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def derive_labels(study: StudyTruth) -> dict[str, str]:
    """CheXpert labels from the truth and what the report chose to say.

    Present -> 1 (hedged -> -1), explicitly negated -> 0, otherwise blank;
    "No Finding" by CheXpert's rule (no pathology present or uncertain).
    """
    labels = dict.fromkeys(OBSERVATIONS, "")
    for o in study.negated:
        labels[o] = "0"
    for f in study.findings:
        value = "-1" if f.hedged else "1"
        if labels[f.observation] != "1":
            labels[f.observation] = value
    if not any(labels[o] in ("1", "-1") for o in PATHOLOGIES):
        labels["No Finding"] = "1"
    return labels
