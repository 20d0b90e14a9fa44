"""Training pairs: what the loss needs for each study (paper sections 3-4).

For every study of a MIMIC-layout dataset: the image, the report rewritten as
single-entity sentences without temporal statements (``r``), its hard
negative (``r^n`` with one positive finding negated; for a normal report, a
single-finding report from the pool, section 4.1), the clinical vectors of
both (DESIGN.md section 2), and the report graphs of both.  Every text is
derived with the report-language engine, so MIMIC, phantom and exported cases
are prepared the same way.
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
from core_model.text.labeler import default_labeler
from core_model.text.observations import PATHOLOGIES, Assertion
from core_model.text.rewrite import RewriteBackend, get_backend
from training.dataset import Sample


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
    by_study: dict[int, list[str]] = {}
    texts: dict[int, str] = {}
    for s in samples:
        if s.study_id not in texts:
            texts[s.study_id] = s.report
            by_study[s.study_id] = backend.single_entity(s.report)
    pool = single_positive_pool(
        [(str(k), " ".join(v)) for k, v in by_study.items() if v], backend=backend
    )
    skipped: dict[str, int] = {}
    pairs: list[Pair] = []
    prepared: dict[int, tuple] = {}
    for s in samples:
        if s.study_id not in prepared:
            sentences = by_study[s.study_id]
            if not sentences:
                prepared[s.study_id] = ("skip", "no clinical sentences after rewriting")
            else:
                rng = report_rng(seed, str(s.study_id))
                r = " ".join(sentences)
                edit = make_edit(r, backend=backend, rng=rng)
                if isinstance(edit, AlignEdit):
                    neg, entity = edit.r_n, edit.entity
                elif edit.normal:
                    _, entity_, neg = normal_hard_negative(pool, rng, exclude=str(s.study_id))
                    entity = None
                else:
                    prepared[s.study_id] = ("skip", f"no hard negative: {edit.reason}")
                    continue
                labels = labeler.label_report(r, sections=False)
                labels_neg = labeler.label_report(neg, sections=False)
                normal = not any(labels.labels[o] in (Assertion.PRESENT, Assertion.UNCERTAIN) for o in PATHOLOGIES)
                prepared[s.study_id] = (
                    "ok", r, neg, labels.clinical_vector(uncertain), labels_neg.clinical_vector(uncertain),
                    extract_graph(r, sections=False), extract_graph(neg, sections=False), normal, entity,
                )
        entry = prepared[s.study_id]
        if entry[0] == "skip":
            skipped[entry[1]] = skipped.get(entry[1], 0) + 1
            continue
        _, r, neg, c, cn, g, gn, normal, entity = entry
        pixels = s.load_image() if load_images else np.zeros((1, 1), np.float32)
        pairs.append(Pair(s.dicom_id, pixels, r, neg, c, cn, g, gn, normal, entity))
    return pairs, skipped
