"""The consistency suite, measured as a reader experiences the flags.

For each sampled study, drafts in a second phrasing family
(:mod:`training.reader_drafts`): one truthful, and one per error kind (a flip,
an omission, a false finding). Each draft is checked the way the product
checks it: the image check first (a study it refuses gets no flags), then the
flag rules at the model's operating points (:mod:`core_model.flag_rules`).

Metrics (each in [0, 1]; ``None`` without a case):

``false_flag_rate``
    the share of truthful drafts that carry any flag; ``false_flags_per_draft_mean``
    their mean number of flags;
``recall_by_type.<kind>``
    the share of drafts with that error that get a flag of the expected kind on
    the finding (a contradiction for a flip; an omission; a contradiction or
    unsupported for a false finding); ``recall`` over all errors;
``precision``
    flags that catch an injected error, over all flags raised on every draft;
``auroc_by_type.<kind>``
    how well the model's probability ranks the erroneous statements above the
    truthful ones of the same form, whatever the operating points (flip: the
    probability of findings stated absent, erroneous when present; omission:
    of findings not mentioned; false finding: one minus the probability of
    findings stated present), comparable to a finding-level AUROC;
``report_detection_accuracy``
    the share of all drafts (truthful and erroneous) for which "has a flag"
    equals "has an error"; ``error_report_detection`` the share of erroneous
    drafts that get any flag at all (CorBenchX's detection rate);
``by_mode``
    the false-flag rate, recall (overall and per kind) and precision at each
    of the model's flag modes (the metrics above are at the reader's mode,
    the default unless told otherwise);
``curve``
    recall against false-flag rate when every checked finding's operating
    points move together along its own probability quantiles (drawn in
    report.html).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core_model.calibration import rank_auc
from core_model.flag_rules import Points, Raised, Statement, raise_flags
from core_model.inference import Reader, StudyImage
from core_model.text.edits import report_rng
from core_model.text.labeler import default_labeler
from core_model.text.observations import FINDINGS, Assertion
from training.reader_drafts import ERROR_KINDS, EXPECTED, Draft, drafts_for, truth_of

#: Levels of the operating-point family the curve follows (the share of a finding's
#: negatives above its "present" point, and of its positives below its "absent" point).
CURVE_LEVELS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)


@dataclass
class Case:
    """One draft of one study, read and aligned with the study's image once."""

    draft: Draft
    truth: dict[str, bool]
    probabilities: dict[str, float]
    statements: list[Statement]
    mentioned: set[str]
    readable: bool  # the image check accepted the study's image


def cases_for(reader: Reader, studies: Sequence[Any], *, seed: int = 0,
              max_studies: int | None = None) -> tuple[list[Case], int, int]:
    """(cases, studies used, drafts that could not be written) for a sample of studies."""
    chosen = [s for s in studies if truth_of(s.labels) is not None]
    if max_studies is not None and len(chosen) > max_studies:
        rng = report_rng(seed, "reader-consistency")
        chosen = sorted(rng.sample(chosen, max_studies), key=lambda s: s.study_id)
    labeler = default_labeler()
    cases: list[Case] = []
    unwritable = 0
    for s in chosen:
        if s.pixels is None:
            raise ValueError("the consistency suite needs the studies' pixels "
                             "(load_studies(keep_pixels=True))")
        truth = truth_of(s.labels)
        assert truth is not None
        encoding = reader.embed_study([StudyImage(s.pixels)], f"eval:{s.dicom_id}")
        readable = reader.image_verdict(encoding).accepted
        probabilities = reader.probabilities(encoding)
        drafts = drafts_for(s.labels, report_rng(seed, f"drafts:{s.study_id}"))
        wanted = 1 + (2 if any(truth.values()) else 0) + (1 if not all(truth.values()) else 0)
        unwritable += wanted - len(drafts)
        for draft in drafts:
            mentioned, statements = reader.statements(encoding, labeler.label_report(draft.text))
            cases.append(Case(draft, truth, probabilities, statements, mentioned, readable))
    return cases, len(chosen), unwritable


def flags_of(case: Case, points: Mapping[str, Points], checked: frozenset[str], *,
             alignment: bool = True) -> list[Raised]:
    if not case.readable:
        return []  # the product shows no flags on an image the model cannot read
    return raise_flags(case.statements, case.mentioned, case.probabilities, points, checked,
                       alignment=alignment)


def score(cases: Sequence[Case], points: Mapping[str, Points], checked: frozenset[str], *,
          alignment: bool = True) -> dict[str, Any]:
    """The operating-point-dependent metrics of the suite (see the module docstring)."""
    truthful = flagged_truthful = truthful_flags = 0
    caught = {k: 0 for k in ERROR_KINDS}
    errors = {k: 0 for k in ERROR_KINDS}
    tp = fp = correct = erroneous_flagged = 0
    for case in cases:
        raised = flags_of(case, points, checked, alignment=alignment)
        error = case.draft.error
        if error is None:
            truthful += 1
            flagged_truthful += bool(raised)
            truthful_flags += len(raised)
            fp += len(raised)
            correct += not raised
            continue
        errors[error] += 1
        hits = [f for f in raised if f.entity == case.draft.entity and f.kind in EXPECTED[error]]
        caught[error] += bool(hits)
        tp += bool(hits)
        fp += len(raised) - len(hits)
        correct += bool(raised)
        erroneous_flagged += bool(raised)
    injected = sum(errors.values())
    return {
        "false_flag_rate": _ratio(flagged_truthful, truthful),
        "false_flags_per_draft_mean": (truthful_flags / truthful) if truthful else None,
        "recall": _ratio(sum(caught.values()), injected),
        "recall_by_type": {k: _ratio(caught[k], errors[k]) for k in ERROR_KINDS},
        "precision": _ratio(tp, tp + fp),
        "report_detection_accuracy": _ratio(correct, len(cases)),
        "error_report_detection": _ratio(erroneous_flagged, injected),
        "tp": tp, "fp": fp, "injected_n": injected, "truthful_n": truthful,
        "injected_by_type": errors,
    }


def auroc_by_type(cases: Sequence[Case]) -> dict[str, float | None]:
    """Statement-level AUROC per error kind, from the probabilities alone."""
    scores: dict[str, tuple[list[float], list[int]]] = {k: ([], []) for k in ERROR_KINDS}

    def add(kind: str, value: float, positive: bool) -> None:
        scores[kind][0].append(value)
        scores[kind][1].append(int(positive))

    for case in cases:
        if not case.readable:
            continue
        p, draft = case.probabilities, case.draft
        for finding in FINDINGS:
            said = draft.stated.get(finding, Assertion.NOT_MENTIONED)
            is_error = draft.entity == finding and draft.error is not None
            if said is Assertion.ABSENT and (is_error or not case.truth[finding]):
                add("flip", p[finding], is_error and draft.error == "flip")
            elif said is Assertion.PRESENT and (is_error or case.truth[finding]):
                add("false_finding", 1.0 - p[finding], is_error and draft.error == "false_finding")
            elif said is Assertion.NOT_MENTIONED and (is_error or not case.truth[finding]):
                add("omission", p[finding], is_error and draft.error == "omission")
    out: dict[str, float | None] = {}
    for kind, (values, labels) in scores.items():
        y = np.asarray(labels)
        out[kind] = rank_auc(np.asarray(values), y) if 0 < y.sum() < len(y) else None
    return out


def level_points(cases: Sequence[Case], level: float, floor: Mapping[str, Points]) -> dict[str, Points]:
    """Operating points at one level of the family: per finding, the probability above which
    ``level`` of the studies without it lie ("present": omissions and denied findings), and
    below which ``level`` of those with it lie ("absent" and "unsupported": asserted
    findings); never a "present" point below 0.5 nor the others above it."""
    by_study: dict[int, Case] = {}
    for case in cases:
        by_study.setdefault(id(case.probabilities), case)
    points = {}
    for finding in FINDINGS:
        negatives = [c.probabilities[finding] for c in by_study.values() if not c.truth[finding]]
        positives = [c.probabilities[finding] for c in by_study.values() if c.truth[finding]]
        present = float(np.quantile(negatives, 1.0 - level)) if negatives else floor[finding].present
        absent = float(np.quantile(positives, level)) if positives else floor[finding].absent
        absent = min(absent, 0.5)
        points[finding] = Points(max(present, 0.5), absent, absent, max(present, 0.5))
    return points


def consistency(reader: Reader, studies: Sequence[Any], *, seed: int = 0,
                max_studies: int | None = None) -> dict[str, Any]:
    """The whole suite at the reader's operating points, with its curve."""
    cases, studies_n, unwritable = cases_for(reader, studies, seed=seed, max_studies=max_studies)
    points = {f: Points.of(reader.calibration.get(f)) for f in FINDINGS}
    checked = frozenset(f for f in FINDINGS if reader.reliable(f))
    mode = reader.mode
    if mode is not None:  # the model's validated flag mode, as the product checks with it
        at_mode = {f: mode.points.get(f) or points[f] for f in FINDINGS}
        result = score(cases, at_mode, mode.checked, alignment=mode.alignment)
        result["mode"] = mode.name
    else:
        result = score(cases, points, checked)
        result["mode"] = None
    curve = {"level": [], "false_flag_rate": [], "recall": []}
    for level in CURVE_LEVELS:
        at = score(cases, level_points(cases, level, points), checked)
        curve["level"].append(level)
        curve["false_flag_rate"].append(at["false_flag_rate"])
        curve["recall"].append(at["recall"])
    by_mode = {}
    for name, other in reader.modes.items():  # every mode the model offers, on this split
        at = score(cases, {f: other.points.get(f) or points[f] for f in FINDINGS}, other.checked,
                   alignment=other.alignment)
        by_mode[name] = {k: at[k] for k in ("false_flag_rate", "recall", "recall_by_type",
                                            "precision")}
    result.update({
        "by_mode": by_mode,
        "auroc_by_type": auroc_by_type(cases),
        "studies_n": studies_n,
        "drafts_n": len(cases),
        "unwritable_n": unwritable,
        "unreadable_studies_n": len({id(c.probabilities) for c in cases if not c.readable}),
        "checked_findings": sorted(mode.checked if mode is not None else checked),
        "curve": curve,
    })
    return result


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


__all__ = ["CURVE_LEVELS", "Case", "auroc_by_type", "cases_for", "consistency", "flags_of",
           "level_points", "score"]
