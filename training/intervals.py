"""How sure an evaluation is: sample sizes and 95% confidence intervals of its metrics.

A gate that activates models must not pass one on a handful of cases: a
model that aligned 8 of 8 edited reports has a CXR-Align accuracy of 1.000
and a 95% interval of 0.68 to 1.00. Every gated metric therefore carries the
number of cases it rests on and its interval:

* proportions (CXR-Align A and B, the consistency suite's rates, the image
  check's accept rate): the Wilson score interval, which stays inside [0, 1]
  and behaves at 0 and 1 successes;
* the zero-shot mean AUC: a percentile bootstrap over the studies (the AUC of
  each finding recomputed on each resample, then averaged).

``results.json`` holds them under ``intervals``: metric -> {"value", "n",
"low", "high", "method"}; the activation gate (``app.admin.registry.judge``)
reads them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core_model.calibration import rank_auc
from core_model.text.observations import FINDINGS

Z95 = 1.959963984540054
BOOTSTRAP_REPS = 200


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes`` out of ``n`` (None without cases)."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(value: float | None, n: int | None) -> dict[str, Any] | None:
    """The interval entry of a rate measured on ``n`` cases (None when unmeasured)."""
    if value is None or not n:
        return None
    bounds = wilson(round(value * n), int(n))
    assert bounds is not None
    return {"value": value, "n": int(n), "low": bounds[0], "high": bounds[1], "method": "wilson"}


def mean_auc_interval(scores: Sequence[Mapping[str, float]], labels: Sequence[Mapping[str, str]],
                      *, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> dict[str, Any] | None:
    """Percentile bootstrap over studies of the mean per-finding AUC (CheXpert labels: "1"
    positive, "-1" left out, anything else negative)."""
    n = len(scores)
    if n == 0:
        return None
    values = np.array([[s[f] for f in FINDINGS] for s in scores], float)
    known = np.array([[lab.get(f, "") != "-1" for f in FINDINGS] for lab in labels])
    positive = np.array([[lab.get(f, "") == "1" for f in FINDINGS] for lab in labels])

    def mean_auc(rows: np.ndarray) -> float | None:
        aucs = []
        for j in range(len(FINDINGS)):
            keep = rows[known[rows, j]]
            y = positive[keep, j]
            if 0 < y.sum() < len(y):
                aucs.append(rank_auc(values[keep, j], y.astype(int)))
        return float(np.mean(aucs)) if aucs else None

    point = mean_auc(np.arange(n))
    if point is None:
        return None
    rng = np.random.default_rng(seed)
    draws = [m for m in (mean_auc(rng.integers(0, n, n)) for _ in range(reps)) if m is not None]
    low, high = np.quantile(draws, [0.025, 0.975])
    return {"value": point, "n": n, "low": float(low), "high": float(high),
            "method": f"bootstrap ({reps} resamples of the studies)"}


def intervals(nested: Mapping[str, Mapping[str, Any]], image_check: Mapping[str, Any] | None,
              zero_shot_scores: tuple[Sequence[Mapping[str, float]], Sequence[Mapping[str, str]]] | None,
              *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The intervals of the gated metrics an evaluation measured (see the module docstring)."""
    out: dict[str, dict[str, Any] | None] = {}
    align = nested.get("cxr_align")
    if align:
        for key in ("A", "B"):
            out[f"cxr_align.{key}"] = proportion(align.get(key), align.get("n"))
    if zero_shot_scores is not None and "zero_shot" in nested:
        out["zero_shot.mean_auc"] = mean_auc_interval(*zero_shot_scores, seed=seed)
    c = nested.get("consistency")
    if c:
        out["consistency.false_flag_rate"] = proportion(c.get("false_flag_rate"), c.get("truthful_n"))
        out["consistency.recall"] = proportion(c.get("recall"), c.get("injected_n"))
        by_type = c.get("injected_by_type") or {}
        for kind, value in (c.get("recall_by_type") or {}).items():
            out[f"consistency.recall_by_type.{kind}"] = proportion(value, by_type.get(kind))
        out["consistency.precision"] = proportion(c.get("precision"),
                                                  (c.get("tp") or 0) + (c.get("fp") or 0))
    if image_check:
        out["image_check.accept_rate"] = proportion(image_check.get("accept_rate"),
                                                    image_check.get("images"))
    return {k: v for k, v in out.items() if v is not None}


__all__ = ["BOOTSTRAP_REPS", "intervals", "mean_auc_interval", "proportion", "wilson"]
