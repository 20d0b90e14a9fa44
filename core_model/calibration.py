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


def fit_platt(logits: np.ndarray, labels: np.ndarray, iterations: int = 50, l2: float = 1e-3) -> tuple[float, float]:
    """Logistic regression of ``labels`` on one feature; returns (a, b)."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    a, b = 1.0, 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a * x + b, -60, 60)))
        w = p * (1 - p)
        grad = np.array([np.sum((p - y) * x) + l2 * a, np.sum(p - y)])
        hess = np.array([[np.sum(w * x * x) + l2, np.sum(w * x)], [np.sum(w * x), np.sum(w) + 1e-9]])
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), float(b)


def threshold_for_sensitivity(probs: np.ndarray, labels: np.ndarray, sensitivity: float) -> float:
    """The highest threshold at which at least ``sensitivity`` of the positives score at or above it."""
    positives = np.sort(np.asarray(probs)[np.asarray(labels) == 1])
    if positives.size == 0:
        return 0.5
    index = int(np.floor((1.0 - sensitivity) * positives.size))
    return float(positives[min(index, positives.size - 1)])


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
            "sensitivity": float(predicted[y == 1].mean()),
            "specificity": float((~predicted[y == 0]).mean()),
            "positives": n_pos, "negatives": n_neg, "target_sensitivity": target_sensitivity,
        }
    return out
