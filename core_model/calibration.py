"""Per-label calibration and operating points (``calibration.json``).

For each finding, from validation images' raw zero-shot logits and their
labels: a Platt correction ``sigmoid(a * logit + b)`` fitted by Newton's
method, the operating point ``threshold`` on the calibrated probability that
reaches the target sensitivity, and ``absent_threshold``, below which the
image confidently lacks the finding (sensitivity 0.98: almost no positive
scores lower).  Findings with too few positives or negatives keep the
identity correction and the default points, and say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

MIN_PER_CLASS = 5


def fit_platt(logits: np.ndarray, labels: np.ndarray, iterations: int = 100, l2: float = 1e-2
              ) -> tuple[float, float]:
    """Platt's logistic correction of one score; returns (a, b) for ``sigmoid(a * logit + b)``.

    As Platt (1999) prescribes, the 0/1 labels are replaced by the smoothed
    targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``, so even perfectly
    separated scores have a finite optimum; the score is standardised first
    (raw zero-shot logits reach tens), and each Newton step is halved until
    the regularised log-loss decreases (a plain Newton step can overshoot and
    diverge to a step function).  The fit is convex, so this converges.
    """
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    n_pos, n_neg = float(y.sum()), float(y.size - y.sum())
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    mu = float(x.mean()) if x.size else 0.0
    sd = float(x.std()) if x.size and x.std() > 1e-12 else 1.0
    z = (x - mu) / sd

    def loss(a: float, b: float) -> float:
        s = a * z + b
        return float(np.sum(np.logaddexp(0.0, s) - t * s) + 0.5 * l2 * a * a)

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a * z + b, -60, 60)))
        w = p * (1 - p)
        grad = np.array([np.sum((p - t) * z) + l2 * a, np.sum(p - t)])
        hess = np.array([[np.sum(w * z * z) + l2, np.sum(w * z)], [np.sum(w * z), np.sum(w) + 1e-9]])
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        scale = 1.0
        while scale > 1e-8:
            new = loss(a - scale * step[0], b - scale * step[1])
            if new <= current:
                break
            scale /= 2
        else:
            break
        a, b, current = a - scale * step[0], b - scale * step[1], new
        if scale * np.abs(step).max() < 1e-10:
            break
    return float(a / sd), float(b - a * mu / sd)


def threshold_for_sensitivity(probs: np.ndarray, labels: np.ndarray, sensitivity: float) -> float:
    """The highest threshold at which at least ``sensitivity`` of the positives score at or above it."""
    positives = np.sort(np.asarray(probs)[np.asarray(labels) == 1])
    if positives.size == 0:
        return 0.5
    index = int(np.floor((1.0 - sensitivity) * positives.size))
    return float(positives[min(index, positives.size - 1)])


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for 0/1 ``labels`` (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit_calibration(
    logits: Mapping[str, Sequence[float]],
    labels: Mapping[str, Sequence[int]],
    *,
    target_sensitivity: float = 0.9,
) -> dict[str, dict[str, float | int | str]]:
    """``calibration.json`` content from per-finding validation logits and 0/1 labels."""
    out: dict[str, dict[str, float | int | str]] = {}
    for finding, values in logits.items():
        x = np.asarray(values, dtype=np.float64)
        y = np.asarray(labels[finding], dtype=np.int64)
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos < MIN_PER_CLASS or n_neg < MIN_PER_CLASS:
            out[finding] = {"a": 1.0, "b": 0.0, "threshold": 0.5, "absent_threshold": 0.2,
                            "positives": n_pos, "negatives": n_neg,
                            "note": f"too few validation cases (need {MIN_PER_CLASS} of each)"}
            continue
        a, b = fit_platt(x, y)
        probs = 1.0 / (1.0 + np.exp(-np.clip(a * x + b, -60, 60)))
        threshold = threshold_for_sensitivity(probs, y, target_sensitivity)
        absent = min(threshold, threshold_for_sensitivity(probs, y, 0.98))
        predicted = probs >= threshold
        out[finding] = {
            "a": a, "b": b, "threshold": threshold, "absent_threshold": absent,
            "auc": rank_auc(x, y),
            "sensitivity": float(predicted[y == 1].mean()),
            "specificity": float((~predicted[y == 0]).mean()),
            "positives": n_pos, "negatives": n_neg, "target_sensitivity": target_sensitivity,
        }
    return out
