"""The evaluation suites behind ``concord eval``: one function per suite, plain numbers out.

Every suite reads one split of a MIMIC-layout dataset through
:class:`~training.dataset.MimicDataset` (one frontal image per study, the first
one listed) and a :class:`~core_model.inference.Reader`.  Report texts are the
single-entity, temporal-free rewrites ``r`` the model is trained on (rules
backend), so every suite compares the image with the same kind of text.
Metrics are floats in [0, 1]; each suite also reports how many cases it used
(keys ``n`` / ``*_n``) and, where it helps, a mean count (``*_mean``), and a
metric with no case is ``None``.  Every random
choice is drawn from :func:`~core_model.text.edits.report_rng` (seed, study),
so a suite gives the same numbers on every run.

Suites
------
``cxr_align``
    paper section 3: for studies with a verified edit of a positive finding,
    A = share where the image is closer to ``r`` than to ``r^n`` (the finding
    negated), B = closer to ``r`` than to ``r^r`` (the finding removed).
``zero_shot``
    ROC AUC of the raw zero-shot logits (positive prompt minus negated prompt)
    against the CheXpert labels: "1" positive, "0" **and blank** negative
    (in a phantom world a finding the report does not mention is absent),
    "-1" (uncertain) excluded; findings whose labels have fewer than two
    classes are skipped.  ``mean_auc`` averages the findings scored.
``retrieval``
    image -> report among the split's distinct report texts: top-1 / top-5 hit
    when the study's own text is ranked there (identical texts are one
    candidate, so a duplicate report counts as a hit); ``label_f1`` is the micro
    F1 (positive = "1", the 13 findings) between the labels of the top-1 text's
    study and the query study's labels.
``ncd``
    normal case detection, section 5.5: each normal image ranks its own report
    against up to 2999 distinct abnormal reports of the split (seeded sample);
    accuracy = own report first; ``n`` = the number of abnormal reports used.
``adversarial``
    section 5.4 / ProbMed: for each study with a positive finding, one present
    finding (label "1") and one absent finding (label "0", else blank) are
    drawn; correct when the raw logit of the present one is > 0 (positive
    prompt preferred) and that of the absent one < 0 (negated prompt preferred).
``pointing``
    phantom worlds only (``phantom-truth.jsonl``): for each finding the truth
    draws in the image, the heatmap's argmax cell centre, mapped back through
    the letterbox to image pixels, must fall in one of that finding's boxes.
``consistency``
    the product's own task, measured as a reader experiences it
    (:mod:`training.reader_suite`): drafts in a second phrasing family, truthful
    ones and ones with one error (a flip, an omission, a false finding); the
    false-flag rate on truthful drafts, recall per error kind, precision over
    all flags, AUROC per kind, report-level detection accuracy, and the curve of
    recall against false-flag rate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core_model.inference import POSITIVE_PROMPTS, Reader, StudyImage
from core_model.model.preprocess import letterbox
from core_model.text.edits import AlignEdit, make_edit, report_rng
from core_model.text.observations import FINDINGS, PATHOLOGIES
from core_model.text.rewrite import RewriteBackend, get_backend
from core_model.text.rewrite.base import RewriteError
from training.dataset import MimicDataset

NCD_MAX_ABNORMAL = 2999
#: Studies sampled for the consistency suite.  Each runs up to four checks; at 80
#: studies (about 200 injected errors) precision and recall moved by 0.04-0.07
#: between samples, enough to reverse the comparison of two models, at 500 they
#: cost about 10 s on one CPU thread (docs/evaluation.md).
CONSISTENCY_STUDIES = 500
TRUTH_JSONL = "phantom-truth.jsonl"
EXPECTED_KIND = {"flip": "contradiction", "remove": "omission", "add": "contradiction"}


# --------------------------------------------------------------------- studies


@dataclass
class Study:
    """One study of the split as the suites see it."""

    study_id: int
    dicom_id: str
    text: str  # single-entity rewrite r of the report
    labels: dict[str, str]  # CheXpert values of the 14 observations
    embedding: np.ndarray  # (D,) normalised image embedding
    logits: dict[str, float]  # raw zero-shot logits
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    shape: tuple[int, int] = (0, 0)  # stored image (rows, columns)
    pixels: np.ndarray | None = None
    #: The finding head's logits, where the model has one (what its flags rest on).
    head_logits: dict[str, float] | None = None

    @property
    def positives(self) -> list[str]:
        return [f for f in FINDINGS if self.labels.get(f) == "1"]

    @property
    def normal(self) -> bool:
        return not any(self.labels.get(o) in ("1", "-1") for o in PATHOLOGIES)


def load_studies(
    reader: Reader,
    dataset_root: str | os.PathLike[str],
    split: str = "test",
    *,
    backend: RewriteBackend | None = None,
    keep_pixels: bool = True,
) -> list[Study]:
    """Embed one frontal image per study of ``split`` (studies whose report rewrites to nothing are left out)."""
    backend = backend or get_backend("rules")
    seen: set[int] = set()
    studies = []
    for sample in MimicDataset(dataset_root, split=split):
        if sample.study_id in seen:
            continue
        seen.add(sample.study_id)
        sentences = backend.single_entity(sample.report)
        if not sentences:
            continue
        pixels = sample.load_image()
        enc = reader.embed_study([StudyImage(pixels, sample.view)], key=f"eval:{sample.dicom_id}")
        heatmaps = {f: reader.evidence(enc, f) for f in FINDINGS}  # raw: the pointing game
        studies.append(Study(
            sample.study_id, sample.dicom_id, " ".join(sentences), dict(sample.labels),
            np.asarray(enc.embedding, np.float32), reader.raw_logits(enc), heatmaps,
            tuple(pixels.shape[:2]), pixels if keep_pixels else None,
            reader.finding_logits(enc) if reader.finding_head is not None else None,
        ))
    return studies


# --------------------------------------------------------------------- pure metrics


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """ROC AUC (Mann-Whitney, ties count half); None unless both classes occur."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores: Sequence[float], labels: Sequence[int]
              ) -> tuple[list[float], list[float]] | None:
    """ROC points (false-positive, true-positive rates) from (0, 0) to (1, 1), one per distinct score.

    None unless both classes occur; the trapezoid area under the points equals :func:`roc_auc`.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tpr = np.r_[0.0, np.cumsum(y)[last] / n_pos]
    fpr = np.r_[0.0, np.cumsum(~y)[last] / n_neg]
    return fpr.tolist(), tpr.tolist()


def retrieval_hits(similarity: np.ndarray, truth: Sequence[int], k: int) -> np.ndarray:
    """Per query (row), whether candidate ``truth[i]`` is among the ``k`` highest scores (ties: lower index first)."""
    sim = np.asarray(similarity, np.float64)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.array([truth[i] in order[i] for i in range(len(sim))], bool)


def micro_f1(predicted: Sequence[dict[str, str]], truth: Sequence[dict[str, str]],
             findings: Sequence[str] = FINDINGS) -> float | None:
    """Micro F1 over ``findings`` with positive = "1"; None when neither side has a positive."""
    tp = fp = fn = 0
    for p, t in zip(predicted, truth, strict=True):
        for f in findings:
            a, b = p.get(f) == "1", t.get(f) == "1"
            tp += a and b
            fp += a and not b
            fn += b and not a
    return None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def ncd_correct(image: np.ndarray, normal_text: np.ndarray, abnormal_texts: np.ndarray) -> bool:
    """Whether the normal report scores strictly above every abnormal one for this image."""
    own = float(image @ normal_text)
    return bool(len(abnormal_texts) == 0 or own > float(np.max(abnormal_texts @ image)))


def argmax_point(heatmap: np.ndarray, image_shape: tuple[int, int], input_size: int) -> tuple[float, float]:
    """(x, y) in image pixels of the centre of the heatmap's highest cell, through the letterbox."""
    h, w = heatmap.shape
    i, j = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    box = letterbox(image_shape[0], image_shape[1], input_size)
    cx, cy = (j + 0.5) * input_size / w, (i + 0.5) * input_size / h
    return (cx - box.left) / box.scale, (cy - box.top) / box.scale


def in_box(point: tuple[float, float], box: Sequence[int]) -> bool:
    """Whether (x, y) lies in the box (x0, y0, x1, y1), end exclusive."""
    x, y = point
    x0, y0, x1, y1 = box
    return x0 <= x < x1 and y0 <= y < y1


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


# --------------------------------------------------------------------- suites


def cxr_align(reader: Reader, studies: Sequence[Study], *, seed: int = 0,
              backend: RewriteBackend | None = None) -> dict[str, Any]:
    """CXR-Align tasks A (r vs r^n) and B (r vs r^r) over studies with a verified edit."""
    backend = backend or get_backend("rules")
    a = b = n = 0
    for s in studies:
        if not s.positives:
            continue
        edit = make_edit(s.text, backend=backend, rng=report_rng(seed, str(s.study_id)))
        if not isinstance(edit, AlignEdit):
            continue
        r, rn, rr = reader.embed_texts([edit.r, edit.r_n, edit.r_r or " "]) @ s.embedding
        a += bool(r > rn)
        b += bool(r > rr)
        n += 1
    return {"A": _ratio(a, n), "B": _ratio(b, n), "n": n}


def zero_shot(studies: Sequence[Study], *, curves: bool = False) -> dict[str, Any]:
    """ROC AUC of raw zero-shot logits per finding (blank = negative, uncertain excluded).

    With ``curves``, also ``curves``: finding -> {"fpr", "tpr"} (:func:`roc_curve`) and the
    numbers of positive and negative studies scored.
    """
    auc: dict[str, float] = {}
    points: dict[str, dict[str, Any]] = {}
    for f in FINDINGS:
        pairs = [(s.logits[f], s.labels.get(f, "") == "1") for s in studies if s.labels.get(f, "") != "-1"]
        value = roc_auc([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None
        if value is not None:
            auc[f] = value
            if curves:
                fpr, tpr = roc_curve([p[0] for p in pairs], [p[1] for p in pairs])
                positives = sum(p[1] for p in pairs)
                points[f] = {"fpr": fpr, "tpr": tpr, "positives": positives,
                             "negatives": len(pairs) - positives}
    out = {"mean_auc": float(np.mean(list(auc.values()))) if auc else None, "auc": auc,
           "findings_n": len(auc)}
    if curves:
        out["curves"] = points
    scored = [s for s in studies if s.head_logits is not None]
    if scored:  # the model's finding head, beside its zero-shot scores
        head = {}
        for f in FINDINGS:
            pairs = [(s.head_logits[f], s.labels.get(f, "") == "1") for s in scored
                     if s.labels.get(f, "") != "-1"]
            value = roc_auc([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None
            if value is not None:
                head[f] = value
        out["finding_head"] = {"mean_auc": float(np.mean(list(head.values()))) if head else None,
                               "auc": head}
    return out


def retrieval(reader: Reader, studies: Sequence[Study]) -> dict[str, Any]:
    """Image -> report retrieval among the split's distinct report texts."""
    if not studies:
        return {"top1": None, "top5": None, "label_f1": None, "n": 0, "candidates_n": 0}
    texts = list(dict.fromkeys(s.text for s in studies))
    labels_of = {}
    for s in studies:
        labels_of.setdefault(s.text, s.labels)
    index = {t: i for i, t in enumerate(texts)}
    sim = np.stack([s.embedding for s in studies]) @ reader.embed_texts(texts).T
    truth = [index[s.text] for s in studies]
    top1 = retrieval_hits(sim, truth, 1)
    top5 = retrieval_hits(sim, truth, 5)
    best = np.argmax(sim, axis=1)
    f1 = micro_f1([labels_of[texts[j]] for j in best], [s.labels for s in studies])
    return {"top1": float(top1.mean()), "top5": float(top5.mean()), "label_f1": f1,
            "n": len(studies), "candidates_n": len(texts)}


def ncd(reader: Reader, studies: Sequence[Study], *, seed: int = 0,
        max_abnormal: int = NCD_MAX_ABNORMAL) -> dict[str, Any]:
    """Normal case detection: each normal image's own report against abnormal reports."""
    abnormal = sorted({s.text for s in studies if not s.normal})
    if len(abnormal) > max_abnormal:
        rng = report_rng(seed, "ncd")
        abnormal = sorted(rng.sample(abnormal, max_abnormal))
    normals = [s for s in studies if s.normal]
    if not normals or not abnormal:
        return {"accuracy": None, "n": len(abnormal), "images_n": len(normals)}
    ab = reader.embed_texts(abnormal)
    own = reader.embed_texts([s.text for s in normals])
    hits = [ncd_correct(s.embedding, own[i], ab) for i, s in enumerate(normals)]
    return {"accuracy": float(np.mean(hits)), "n": len(abnormal), "images_n": len(normals)}


def adversarial(studies: Sequence[Study], *, seed: int = 0) -> dict[str, Any]:
    """ProbMed-style paired questions: the present finding affirmed AND an absent one denied."""
    correct = n = 0
    for s in studies:
        present = s.positives
        absent = [f for f in FINDINGS if s.labels.get(f) == "0"] or \
                 [f for f in FINDINGS if s.labels.get(f, "") == ""]
        if not present or not absent:
            continue
        rng = report_rng(seed, f"adversarial:{s.study_id}")
        p, a = rng.choice(present), rng.choice(absent)
        correct += bool(s.logits[p] > 0 and s.logits[a] < 0)
        n += 1
    return {"accuracy": _ratio(correct, n), "n": n}


def read_truth(dataset_root: str | os.PathLike[str]) -> dict[str, dict[str, list[list[int]]]] | None:
    """dicom_id -> finding -> boxes, from a phantom world's truth file (None when there is none)."""
    path = Path(dataset_root) / TRUTH_JSONL
    if not path.is_file():
        return None
    boxes: dict[str, dict[str, list[list[int]]]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            study = json.loads(line)
            for image in study.get("images", []):
                per = boxes.setdefault(image["dicom_id"], {})
                for region in image.get("regions", []):
                    per.setdefault(region["observation"], []).append(list(region["box"]))
    return boxes


def pointing(reader: Reader, studies: Sequence[Study],
             truth: dict[str, dict[str, list[list[int]]]] | None) -> dict[str, Any]:
    """Pointing game over findings drawn in the image (phantom truth only)."""
    if truth is None:
        return {"accuracy": None, "n": 0}
    size = reader.model.config.image.image_size
    hits = n = 0
    by_finding: dict[str, list[int]] = {}
    for s in studies:
        for finding, boxes in truth.get(s.dicom_id, {}).items():
            if finding not in s.heatmaps or not boxes:
                continue
            point = argmax_point(s.heatmaps[finding], s.shape, size)
            hit = any(in_box(point, b) for b in boxes)
            hits += hit
            n += 1
            by_finding.setdefault(finding, []).append(int(hit))
    return {"accuracy": _ratio(hits, n), "n": n,
            "by_finding": {f: _ratio(sum(v), len(v)) for f, v in sorted(by_finding.items())},
            "n_by_finding": {f: len(v) for f, v in sorted(by_finding.items())}}


def inject_errors(study: Study, *, seed: int = 0, backend: RewriteBackend | None = None
                  ) -> list[tuple[str, str | None, str]]:
    """(case, entity, report) for the clean report and each injected error that applies."""
    backend = backend or get_backend("rules")
    cases: list[tuple[str, str | None, str]] = [("clean", None, study.text)]
    if study.positives:
        edit = make_edit(study.text, backend=backend, rng=report_rng(seed, str(study.study_id)))
        if isinstance(edit, AlignEdit):
            cases.append(("flip", edit.entity, edit.r_n))
            if edit.r_r:
                cases.append(("remove", edit.entity, edit.r_r))
    absent = [f for f in FINDINGS if study.labels.get(f, "") in ("0", "")]
    if absent:
        rng = report_rng(seed, f"add:{study.study_id}")
        finding = rng.choice(absent)
        try:
            kept = backend.remove_entity(backend.single_entity(study.text), finding)
        except RewriteError:
            return cases
        kept.insert(rng.randint(0, len(kept)), POSITIVE_PROMPTS[finding][0])
        cases.append(("add", finding, " ".join(kept)))
    return cases


def consistency(reader: Reader, studies: Sequence[Study], *, seed: int = 0,
                backend: RewriteBackend | None = None, max_studies: int | None = 80) -> dict[str, Any]:
    """The reader-facing consistency suite (:mod:`training.reader_suite`); ``backend`` is
    unused (its drafts are written in their own phrasing family)."""
    from training.reader_suite import consistency as reader_consistency

    del backend
    return reader_consistency(reader, studies, seed=seed, max_studies=max_studies)


# --------------------------------------------------------------------- all together


def evaluate_all(reader: Reader, dataset_root: str | os.PathLike[str], split: str = "test",
                 seed: int = 0, *, consistency_studies: int | None = CONSISTENCY_STUDIES) -> dict[str, Any]:
    """Every suite on one split, as a nested dict (see :func:`flat`)."""
    backend = get_backend("rules")
    studies = load_studies(reader, dataset_root, split, backend=backend)
    return {
        "split": split,
        "studies_n": len(studies),
        "cxr_align": cxr_align(reader, studies, seed=seed, backend=backend),
        "zero_shot": zero_shot(studies),
        "retrieval": retrieval(reader, studies),
        "ncd": ncd(reader, studies, seed=seed),
        "adversarial": adversarial(studies, seed=seed),
        "pointing": pointing(reader, studies, read_truth(dataset_root)),
        "consistency": consistency(reader, studies, seed=seed, backend=backend,
                                   max_studies=consistency_studies),
    }


def flat(results: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested results as one level, names joined with dots (``zero_shot.auc.Edema``)."""
    out: dict[str, Any] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out


__all__ = [
    "Study", "adversarial", "argmax_point", "consistency", "cxr_align", "evaluate_all",
    "flat", "in_box", "inject_errors", "load_studies", "micro_f1", "ncd", "ncd_correct", "pointing",
    "read_truth", "retrieval", "retrieval_hits", "roc_auc", "roc_curve", "zero_shot",
]
