"""Training pairs: what the loss needs for each study (paper sections 3-4).

For every study of a MIMIC-layout dataset: the image, the report rewritten as
single-entity sentences without temporal statements (``r``), its hard
negative (``r^n`` with one positive finding negated; for a normal report, a
single-finding report from the pool, section 4.1), the clinical vectors of
both (the paper's eqs. 3 and 5), and the report graphs of both.  Every text is
derived with the report-language engine, so MIMIC, phantom and exported cases
are prepared the same way.

The work per study is split in two steps so that it can run in parallel
(:mod:`training.preprocess`) and still give exactly what :func:`build_pairs`
gives: :func:`study_sentences` and :func:`pool_entry` (the single-finding pool
for normal reports is global to a split), then :func:`study_texts`, which
depends only on the study, the seed and that pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core_model.text.edits import (
    AlignEdit,
    make_edit,
    normal_hard_negative,
    report_rng,
    single_positive_pool,
)
from core_model.text.graph import extract_graph
from core_model.text.labeler import Labeler, default_labeler
from core_model.text.observations import PATHOLOGIES, Assertion
from core_model.text.rewrite import RewriteBackend, RewriteError, get_backend
from training.dataset import Sample

#: Skip reason of a study whose report has no clinical sentence left after rewriting.
NO_SENTENCES = "no clinical sentences after rewriting"

PoolEntry = tuple[str, str, str]  # (study key, entity, single-entity text)


@dataclass
class Pair:
    """One training example (texts are single-entity, temporal-free rewrites)."""

    key: str
    pixels: np.ndarray  # display image in [0, 1]
    text: str
    text_neg: str
    clinical: list[float]
    clinical_neg: list[float]
    graph: dict
    graph_neg: dict
    normal: bool
    entity: str | None  # the finding negated in text_neg (None for a pool negative)


@dataclass(frozen=True)
class StudyTexts:
    """Everything of a :class:`Pair` that belongs to the study rather than the image."""

    text: str
    text_neg: str
    clinical: list[float]
    clinical_neg: list[float]
    graph: dict
    graph_neg: dict
    normal: bool
    entity: str | None

    def pair(self, key: str, pixels: np.ndarray) -> Pair:
        return Pair(key, pixels, self.text, self.text_neg, self.clinical, self.clinical_neg,
                    self.graph, self.graph_neg, self.normal, self.entity)


def study_sentences(report: str, backend: RewriteBackend) -> list[str] | str:
    """The report's single-entity, temporal-free sentences, or why there are none."""
    try:
        sentences = backend.single_entity(report)
    except RewriteError as exc:
        return f"rewriting failed: {exc}"
    return sentences if sentences else NO_SENTENCES


def pool_entry(
    key: str, sentences: list[str], backend: RewriteBackend, labeler: Labeler | None = None
) -> PoolEntry | None:
    """The study's entry in its split's single-finding pool, or None if it has not one finding."""
    found = single_positive_pool([(key, " ".join(sentences))], backend=backend, labeler=labeler)
    return found[0] if found else None


def study_texts(
    key: str,
    sentences: list[str],
    pool: Sequence[PoolEntry],
    *,
    seed: int,
    backend: RewriteBackend,
    uncertain: float = 0.5,
    labeler: Labeler | None = None,
) -> StudyTexts | str:
    """``r``, its hard negative, clinical vectors and graphs of one study, or why it is skipped.

    Depends only on the study's ``key`` and sentences, ``seed`` and the split's
    ``pool``: never on which other studies are processed with it.
    """
    labeler = labeler or default_labeler()
    rng = report_rng(seed, key)
    r = " ".join(sentences)
    edit = make_edit(r, backend=backend, rng=rng)
    if isinstance(edit, AlignEdit):
        neg, entity = edit.r_n, edit.entity
    elif edit.normal:
        _, _, neg = normal_hard_negative(pool, rng, exclude=key)
        entity = None
    else:
        return f"no hard negative: {edit.reason}"
    labels = labeler.label_report(r, sections=False)
    labels_neg = labeler.label_report(neg, sections=False)
    normal = not any(labels.labels[o] in (Assertion.PRESENT, Assertion.UNCERTAIN) for o in PATHOLOGIES)
    return StudyTexts(
        r, neg, labels.clinical_vector(uncertain), labels_neg.clinical_vector(uncertain),
        extract_graph(r, sections=False), extract_graph(neg, sections=False), normal, entity,
    )


def build_pairs(
    samples: Sequence[Sample],
    *,
    seed: int = 0,
    backend: RewriteBackend | None = None,
    uncertain: float = 0.5,
    load_images: bool = True,
) -> tuple[list[Pair], dict[str, int]]:
    """Pairs for ``samples`` (one per image) and a count of what was skipped and why."""
    backend = backend or get_backend("rules")
    labeler = default_labeler()
    by_study: dict[int, list[str] | str] = {}
    for s in samples:
        if s.study_id not in by_study:
            by_study[s.study_id] = study_sentences(s.report, backend)
    pool = [
        entry for k, v in by_study.items()
        if not isinstance(v, str) and (entry := pool_entry(str(k), v, backend, labeler)) is not None
    ]
    skipped: dict[str, int] = {}
    pairs: list[Pair] = []
    prepared: dict[int, StudyTexts | str] = {}
    for s in samples:
        if s.study_id not in prepared:
            sentences = by_study[s.study_id]
            prepared[s.study_id] = sentences if isinstance(sentences, str) else study_texts(
                str(s.study_id), sentences, pool, seed=seed, backend=backend,
                uncertain=uncertain, labeler=labeler,
            )
        entry = prepared[s.study_id]
        if isinstance(entry, str):
            skipped[entry] = skipped.get(entry, 0) + 1
            continue
        pixels = s.load_image() if load_images else np.zeros((1, 1), np.float32)
        pairs.append(entry.pair(s.dicom_id, pixels))
    return pairs, skipped
