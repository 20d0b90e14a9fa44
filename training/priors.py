"""Building the prior-report index from a MIMIC-layout dataset (similar prior reports, docs/ARCHITECTURE.md).

Each study's report is embedded as the model sees reports in training (the
single-entity, temporal-free rewrite ``r``), and its frontal images'
embedding is stored beside it, so similar priors can be found by text or by
image.  The index records the model version it was built with.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core_model.index import ReportIndex
from core_model.inference import Reader, StudyImage
from core_model.text.rewrite import get_backend
from training.dataset import MimicDataset


def build_prior_index(
    reader: Reader,
    dataset: MimicDataset,
    *,
    images: bool = True,
    progress: Callable[[int], None] | None = None,
) -> tuple[ReportIndex, dict[str, int]]:
    """An index of every study in ``dataset``; returns it and the skip counts."""
    backend = get_backend("rules")
    studies: dict[int, list] = {}
    for sample in dataset:
        studies.setdefault(sample.study_id, []).append(sample)
    ids, texts, reports, labels, image_rows = [], [], [], [], []
    skipped: dict[str, int] = {}
    for study_id, samples in studies.items():
        first = samples[0]
        sentences = backend.single_entity(first.report)
        if not sentences:
            skipped["no clinical sentences"] = skipped.get("no clinical sentences", 0) + 1
            continue
        ids.append(str(study_id))
        texts.append(" ".join(sentences))
        reports.append(first.report)
        labels.append(dict(first.labels))
        if images:
            study = [StudyImage(s.load_image(), s.view) for s in samples]
            image_rows.append(reader.embed_study(study, key=f"study:{study_id}").embedding)
        if progress:
            progress(1)
    dim = reader.model.embed_dim
    index = ReportIndex(dim=dim, model_version=reader.model_version)
    if ids:
        text_emb = reader.embed_texts(texts).astype(np.float32)
        image_emb = np.stack(image_rows).astype(np.float32) if images else None
        index.add(ids, text_emb, image_emb, labels, reports)
    index.build()
    return index, skipped
