"""The CXR-Align edits and negation hard negatives (paper sections 3 and 4.1).

For a report with positive findings, one positive entity ``e`` is chosen
(seeded) and three texts are made from the report's single-entity,
temporal-free rewrite ``r``:

* ``r_r``: ``r`` without the sentences about ``e`` (task B of CXR-Align);
* ``r_n``: ``r_r`` with a natural negation of ``e`` inserted at the start,
  middle or end (task A, and the hard negative of training).

Every edit is verified with the labeler: ``r_n`` flips exactly ``e`` from
present to absent and ``r_r`` from present to not mentioned, with every other
finding unchanged ("No Finding" is derived and may follow).  A report with no
positive finding gets no edit; as section 4.1 says, its hard negative is a
report with a single positive entity drawn from a pool
(:func:`normal_hard_negative`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from core_model.text.labeler import Labeler, ReportLabels, default_labeler
from core_model.text.observations import FINDINGS, Assertion
from core_model.text.rewrite.base import RewriteBackend, RewriteError

#: Natural negations per finding, several phrasings each (tried in seeded order).
NEGATIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        "The cardiomediastinal silhouette is within normal limits.",
        "The mediastinum is not widened.",
        "No mediastinal widening.",
    ),
    "Cardiomegaly": ("Heart size is normal.", "No cardiomegaly.", "The heart is not enlarged."),
    "Lung Opacity": ("No focal opacity.", "No airspace opacity is seen.", "There is no pulmonary opacity."),
    "Lung Lesion": (
        "No pulmonary nodules or masses.",
        "No lung nodule is identified.",
        "There is no suspicious pulmonary lesion.",
    ),
    "Edema": ("No pulmonary edema.", "There is no evidence of pulmonary edema.", "No edema."),
    "Consolidation": ("No focal consolidation.", "There is no consolidation.", "No consolidation is seen."),
    "Pneumonia": ("No evidence of pneumonia.", "No pneumonia.", "There is no radiographic evidence of pneumonia."),
    "Atelectasis": ("No atelectasis.", "There is no atelectasis.", "No atelectasis is seen."),
    "Pneumothorax": ("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen."),
    "Pleural Effusion": (
        "No pleural effusion.",
        "There is no pleural effusion.",
        "No pleural effusions are seen.",
    ),
    "Pleural Other": ("No pleural thickening.", "There is no pleural thickening.", "No pleural plaques."),
    "Fracture": ("No fracture.", "No displaced rib fracture is seen.", "There is no acute fracture."),
    "Support Devices": (
        "No lines or tubes.",
        "There are no support devices.",
        "No indwelling lines or tubes are seen.",
    ),
}

POSITIONS = ("start", "middle", "end")


@dataclass(frozen=True)
class AlignEdit:
    """One report's CXR-Align triple (and its hard negative ``r_n``)."""

    entity: str
    position: str
    r: str
    r_n: str
    r_r: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EditSkipped:
    """No valid edit exists for this report; ``reason`` says why."""

    reason: str
    normal: bool = False
    r: str = ""


def report_rng(seed: int, key: str) -> random.Random:
    """A random stream for one report that depends only on the seed and the report's key."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_edit(
    report: str,
    *,
    backend: RewriteBackend,
    rng: random.Random,
    entity: str | None = None,
    labeler: Labeler | None = None,
) -> AlignEdit | EditSkipped:
    """Build ``r``, ``r_n`` and ``r_r`` for one report (or say why not)."""
    labeler = labeler or default_labeler()
    if entity is not None and entity not in FINDINGS:
        raise ValueError(f"unknown entity {entity!r}; choose one of: {', '.join(FINDINGS)}")
    try:
        sentences = backend.single_entity(report)
    except RewriteError as exc:
        return EditSkipped(f"rewriting failed: {exc}")
    if not sentences:
        return EditSkipped("no clinical sentences (empty FINDINGS/IMPRESSION)")
    base = _labels(sentences, labeler)
    r = " ".join(sentences)
    positives = [o for o in FINDINGS if base.labels[o] is Assertion.PRESENT]
    if entity is not None and entity not in positives:
        says = base.labels[entity].value
        return EditSkipped(f"{entity} is not positive in this report (the labeler reads: {says})", r=r)
    if not positives:
        return EditSkipped("normal report: no positive finding to negate", normal=True, r=r)
    candidates = [entity] if entity else positives
    rng.shuffle(candidates)
    reasons = []
    for e in candidates:
        result = _edit_entity(sentences, base, e, backend, rng, labeler)
        if isinstance(result, AlignEdit):
            return result
        reasons.append(result)
    return EditSkipped("; ".join(reasons), r=r)


def _edit_entity(
    sentences: list[str],
    base: ReportLabels,
    entity: str,
    backend: RewriteBackend,
    rng: random.Random,
    labeler: Labeler,
) -> AlignEdit | str:
    try:
        kept = backend.remove_entity(sentences, entity)
    except RewriteError as exc:
        return f"{entity}: removal failed ({exc})"
    removed = _labels(kept, labeler) if kept else None
    if not _only_changed(base, removed, entity, Assertion.NOT_MENTIONED):
        return f"{entity}: cannot remove it without changing another finding"
    positions = list(POSITIONS) if len(kept) >= 2 else (["start", "end"] if kept else ["start"])
    position = rng.choice(positions)
    phrasings = list(NEGATIONS[entity])
    rng.shuffle(phrasings)
    for negation in phrasings:
        negated = _insert(kept, negation, position)
        if _only_changed(base, _labels(negated, labeler), entity, Assertion.ABSENT):
            labels = {o: base.labels[o].chexpert for o in base.labels}
            return AlignEdit(entity, position, " ".join(sentences), " ".join(negated), " ".join(kept), labels)
    return f"{entity}: no negation phrasing verified"


def _insert(sentences: list[str], negation: str, position: str) -> list[str]:
    index = {"start": 0, "middle": len(sentences) // 2, "end": len(sentences)}[position]
    return [*sentences[:index], negation, *sentences[index:]]


def _labels(sentences: Sequence[str], labeler: Labeler) -> ReportLabels:
    return labeler.aggregate(tuple(labeler.label_sentence(s) for s in sentences))


def _only_changed(
    base: ReportLabels, edited: ReportLabels | None, entity: str, becomes: Assertion
) -> bool:
    for o in FINDINGS:
        got = edited.labels[o] if edited is not None else Assertion.NOT_MENTIONED
        want = becomes if o == entity else base.labels[o]
        if got is not want:
            return False
    return True


def single_positive_pool(
    reports: Sequence[tuple[str, str]], *, backend: RewriteBackend, labeler: Labeler | None = None
) -> list[tuple[str, str, str]]:
    """(id, entity, single-entity text) of the reports with exactly one positive finding."""
    labeler = labeler or default_labeler()
    pool = []
    for key, text in reports:
        try:
            sentences = backend.single_entity(text)
        except RewriteError:
            continue
        if not sentences:
            continue
        labels = _labels(sentences, labeler)
        positives = [o for o in FINDINGS if labels.labels[o] is Assertion.PRESENT]
        if len(positives) == 1:
            pool.append((key, positives[0], " ".join(sentences)))
    return pool


#: Used when a dataset has no single-finding report to draw from.
BUILTIN_POOL: tuple[tuple[str, str, str], ...] = (
    ("builtin:effusion", "Pleural Effusion", "Small left pleural effusion."),
    ("builtin:pneumothorax", "Pneumothorax", "Small right apical pneumothorax."),
    ("builtin:cardiomegaly", "Cardiomegaly", "Moderate cardiomegaly."),
    ("builtin:consolidation", "Consolidation", "Right lower lobe consolidation."),
    ("builtin:edema", "Edema", "Mild pulmonary edema."),
    ("builtin:atelectasis", "Atelectasis", "Left basilar atelectasis."),
    ("builtin:nodule", "Lung Lesion", "A 1.5 cm nodule in the right upper lobe."),
)


def normal_hard_negative(
    pool: Sequence[tuple[str, str, str]], rng: random.Random, exclude: str | None = None
) -> tuple[str, str, str]:
    """A single-positive report for a normal study's hard negative (section 4.1)."""
    candidates = [p for p in pool if p[0] != exclude] or list(BUILTIN_POOL)
    return rng.choice(candidates)
