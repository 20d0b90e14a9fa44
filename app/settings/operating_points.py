"""From the sensitivity setting to the operating points the :class:`~core_model.inference.Reader` uses.

The Reader takes no sensitivity: it reads each finding's operating points from
its ``calibration`` dictionary (the checkpoint's ``calibration.json``), through
``Reader.threshold(finding)`` (the image shows the finding at or above it) and
``Reader.absent_threshold(finding)`` (the image confidently lacks it below).
``calibration.json`` holds, per finding, the point fitted on validation data
for one target sensitivity (``target_sensitivity``, 0.8 by default with
``concord eval``) and the "confidently absent" point at sensitivity 0.98.

:func:`thresholds_for` returns a copy of that dictionary with the points moved
to another target sensitivity; the main window assigns it to
``reader.calibration``.  The Platt correction (``a``, ``b``) is kept, so the
probabilities do not change, only where the flags start.

Where the target is the fitted one the fitted point is used as is.  Otherwise
the point is *estimated* from the two fitted points, assuming the calibrated
logits of the positive cases are normally distributed: each point gives one
quantile of that distribution (the fraction of positives above it is its
sensitivity, with the order-statistic correction for ``positives`` cases), two
quantiles fix its mean and spread, and the new point is the quantile at the
new target.  Exact points for another target come from ``concord eval
--target-sensitivity X --save-calibration``.  Findings without fitted points
(too few validation cases, or no calibration at all) keep theirs (0.5 when
uncalibrated): an uncalibrated probability has no sensitivity to aim at.

Every entry returned has ``operating_point``: ``"fitted"``, ``"estimated"`` or
``"default"``, with an ``operating_point_note`` when a requested move was not
possible; moved entries keep the fitted values in ``fitted_threshold`` and
``fitted_absent_threshold``, so passing the result back in starts again from
the fitted points (the function is idempotent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

#: The sensitivity of the fitted "confidently absent" point (core_model.calibration).
ABSENT_SENSITIVITY = 0.98
_EPS = 1e-6
_NORMAL = NormalDist()


def thresholds_for(
    sensitivity: float | None, calibration: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """``calibration`` with each finding's operating points for the target ``sensitivity``.

    ``sensitivity`` None means the fitted points.  Assign the result to
    ``Reader.calibration`` (see the module docstring).
    """
    out: dict[str, dict[str, Any]] = {}
    for finding, entry in (calibration or {}).items():
        item = dict(entry)
        fitted = float(item.pop("fitted_threshold", item.get("threshold", 0.5)))
        fitted_absent = item.pop("fitted_absent_threshold", item.get("absent_threshold"))
        for key in ("operating_point", "operating_point_note", "requested_sensitivity"):
            item.pop(key, None)
        item["threshold"] = fitted
        if fitted_absent is not None:
            item["absent_threshold"] = float(fitted_absent)
        target = item.get("target_sensitivity")
        if target is None or "threshold" not in entry and "fitted_threshold" not in entry:
            item["operating_point"] = "default"
            if sensitivity is not None:
                item["operating_point_note"] = "no fitted operating point to move"
            out[finding] = item
            continue
        item["operating_point"] = "fitted"
        if sensitivity is None or math.isclose(float(target), sensitivity, abs_tol=1e-9):
            out[finding] = item
            continue
        estimate = _estimate(item, float(sensitivity))
        if isinstance(estimate, str):
            item["operating_point_note"] = estimate
            out[finding] = item
            continue
        item["fitted_threshold"] = fitted
        if fitted_absent is not None:
            item["fitted_absent_threshold"] = float(fitted_absent)
        item["threshold"] = estimate
        absent = item.get("absent_threshold")
        item["absent_threshold"] = estimate if absent is None else min(float(absent), estimate)
        item["operating_point"] = "estimated"
        item["requested_sensitivity"] = float(sensitivity)
        out[finding] = item
    return out


def _estimate(item: Mapping[str, Any], sensitivity: float) -> float | str:
    """The threshold for ``sensitivity`` from the fitted pair of points, or why there is none."""
    threshold, absent = item.get("threshold"), item.get("absent_threshold")
    if absent is None:
        return "no confidently-absent point to estimate from"
    threshold, absent = float(threshold), float(absent)
    if not (0.0 < absent < threshold < 1.0):
        return "the fitted points coincide; kept the fitted point"
    positives = item.get("positives")
    s_high = _achieved(float(item["target_sensitivity"]), positives)
    s_low = _achieved(ABSENT_SENSITIVITY, positives)
    z_high, z_low = _NORMAL.inv_cdf(s_high), _NORMAL.inv_cdf(s_low)
    if not z_low > z_high:
        return "too few positive cases to tell the fitted points apart; kept the fitted point"
    spread = (_logit(threshold) - _logit(absent)) / (z_low - z_high)
    centre = _logit(threshold) + spread * z_high
    target = min(max(sensitivity, _EPS), 1.0 - _EPS)
    return _sigmoid(centre - spread * _NORMAL.inv_cdf(target))


def _achieved(target: float, positives: object) -> float:
    """The share of positives above the point ``threshold_for_sensitivity`` picks for ``target``.

    That point is the k-th lowest positive score with k = floor((1 - target) n);
    as a quantile of the positives' distribution it sits at (k + 0.5) / n.
    """
    if isinstance(positives, int) and not isinstance(positives, bool) and positives > 0:
        k = min(int(math.floor((1.0 - target) * positives)), positives - 1)
        return 1.0 - (k + 0.5) / positives
    return min(max(target, _EPS), 1.0 - _EPS)


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 60.0), -60.0)))
