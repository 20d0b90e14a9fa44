"""Comparing evaluation runs and gating a model on them.

:func:`compare_results` puts two runs side by side (the active model's
``results.json`` beside a new one's); :func:`passes` checks a run against
minimums and maximums, each resting on enough cases with its 95% interval on
the passing side (training.intervals). The activation gate of the desktop
application (``app.admin.registry``) is built on both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from training import evaluate as ev
from training.evalrun import ALL_SUITES, HEADLINE, READER_FIGURES


class MetricRow(NamedTuple):
    """One metric of two runs; ``difference`` is b - a (None when either is missing)."""

    metric: str
    a: float | None
    b: float | None
    difference: float | None


def metrics_of(results: Mapping[str, Any]) -> dict[str, Any]:
    """The flat metrics of a results dict (results.json, or nested suite results)."""
    if isinstance(results.get("metrics"), Mapping):
        return dict(results["metrics"])
    return ev.flat({k: v for k, v in results.items() if k in ALL_SUITES})


def _is_metric(name: str) -> bool:
    return (name in HEADLINE or name.startswith("zero_shot.auc.")
            or name in READER_FIGURES or name.startswith(("consistency.recall_by_type.",
                                                          "consistency.auroc_by_type."))
            or name == "consistency.recall_lenient"
            or (name.startswith("finetune.") and name.endswith((".mean_auc", ".mean_accuracy"))))


def compare_results(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[MetricRow]:
    """The metrics of two runs side by side (e.g. the active model as ``a``, a new one as ``b``).

    Headline metrics first in their usual order, then per-finding AUCs and the
    other rates; a metric either run has appears, with None where the other lacks it.
    """
    ma, mb = metrics_of(a), metrics_of(b)
    names = [n for n in dict.fromkeys([*HEADLINE, *sorted(ma), *sorted(mb)])
             if _is_metric(n) and (n in ma or n in mb)]
    rows = []
    for name in names:
        va, vb = _number(ma.get(name)), _number(mb.get(name))
        diff = None if va is None or vb is None else vb - va
        rows.append(MetricRow(name, va, vb, diff))
    return rows


def passes(results: Mapping[str, Any], thresholds: Mapping[str, float], *,
           maximums: Mapping[str, float] | None = None,
           min_cases: int = 0) -> tuple[bool, list[str]]:
    """Whether every metric named in ``thresholds`` reaches its minimum (and every one in
    ``maximums`` stays at or under its maximum), and the failures.

    A metric the run lacks or could not measure (null) fails. With ``min_cases``, each
    gated metric must also rest on at least that many cases and its 95% confidence interval
    (``results["intervals"]``, training.intervals) must lie wholly on the passing side: a
    split too small to tell is not a pass.
    """
    metrics = metrics_of(results)
    known = results.get("intervals") or {}
    failures = []
    gated = [(name, bound, True) for name, bound in thresholds.items()]
    gated += [(name, bound, False) for name, bound in (maximums or {}).items()]
    for name, bound, is_minimum in gated:
        value = _number(metrics.get(name))
        word = "minimum" if is_minimum else "maximum"
        if value is None:
            failures.append(f"{name}: not measured ({word} {bound:g})")
            continue
        if (value < bound) if is_minimum else (value > bound):
            failures.append(f"{name}: {value:.3f} is {'below' if is_minimum else 'above'} the "
                            f"{word} {bound:g}")
            continue
        if not min_cases:
            continue
        interval = known.get(name)
        if not isinstance(interval, Mapping):
            failures.append(f"{name}: {value:.3f} has no sample size or confidence interval "
                            "(evaluate again with this version of concord eval)")
        elif int(interval.get("n") or 0) < min_cases:
            failures.append(f"{name}: {value:.3f} rests on {int(interval.get('n') or 0)} cases; "
                            f"at least {min_cases} are needed to tell")
        elif (interval["low"] < bound) if is_minimum else (interval["high"] > bound):
            failures.append(f"{name}: {value:.3f}, but its 95% interval "
                            f"({interval['low']:.3f} to {interval['high']:.3f}) reaches past the "
                            f"{word} {bound:g}; too few cases to tell")
    return not failures, failures


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None




__all__ = ["MetricRow", "compare_results", "metrics_of", "passes"]
