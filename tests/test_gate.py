"""The activation gate: sample sizes, 95% intervals, minimums and maximums."""

from __future__ import annotations

import random

import pytest

from app.admin.registry import DEFAULT_MAXIMUMS, DEFAULT_THRESHOLDS, MIN_GATE_CASES, judge
from core_model.text.observations import FINDINGS
from training.intervals import intervals, mean_auc_interval, proportion, wilson


def test_wilson_interval():
    low, high = wilson(8, 8)
    assert low == pytest.approx(0.6756, abs=1e-3) and high == 1.0  # 8 of 8 is not "1.000"
    low, high = wilson(50, 1000)
    assert low == pytest.approx(0.0381, abs=1e-3) and high == pytest.approx(0.0653, abs=1e-3)
    assert wilson(0, 0) is None
    assert proportion(None, 10) is None and proportion(0.5, 0) is None


def test_mean_auc_interval_narrows_with_more_studies():
    rng = random.Random(0)

    def studies(n):
        labels = [{f: "1" if rng.random() < 0.3 else "0" for f in FINDINGS} for _ in range(n)]
        scores = [{f: (1.0 if lab[f] == "1" else 0.0) + rng.gauss(0, 0.8) for f in FINDINGS}
                  for lab in labels]
        return scores, labels

    small, large = mean_auc_interval(*studies(60)), mean_auc_interval(*studies(1500))
    for entry in (small, large):
        assert entry["low"] <= entry["value"] <= entry["high"]
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 2
    assert 0.7 < large["value"] < 0.9  # a unit shift over noise 0.8: AUC about 0.81


def _results(n: int, a: float = 0.9, ffr: float = 0.04, accept: float = 0.99) -> dict:
    nested = {
        "cxr_align": {"A": a, "B": a, "n": n},
        "consistency": {"false_flag_rate": ffr, "truthful_n": n, "recall": 0.6, "injected_n": 3 * n,
                        "recall_by_type": {}, "injected_by_type": {}, "precision": 0.9,
                        "tp": n, "fp": n // 10},
    }
    image_check = {"accept_rate": accept, "images": n}
    out = {"metrics": {"cxr_align.A": a, "cxr_align.B": a, "zero_shot.mean_auc": 0.9,
                       "consistency.false_flag_rate": ffr, "consistency.recall": 0.6,
                       "image_check.accept_rate": accept},
           "intervals": intervals(nested, image_check, None)}
    out["intervals"]["zero_shot.mean_auc"] = {"value": 0.9, "n": n, "low": 0.85, "high": 0.95}
    return out


def test_a_large_enough_evaluation_passes():
    verdict = judge(_results(1000))
    assert verdict.passed, verdict.failures
    assert set(DEFAULT_MAXIMUMS) <= {r.metric for r in verdict.rows}
    row = next(r for r in verdict.rows if r.metric == "cxr_align.A")
    assert row.n == 1000 and row.low < 0.9 < row.high


def test_a_handful_of_cases_is_not_a_pass():
    verdict = judge(_results(8, a=1.0))  # 8 of 8: "1.000" on nothing
    assert not verdict.passed and verdict.undecided
    assert any(f"rests on 8 cases; at least {MIN_GATE_CASES}" in f for f in verdict.failures)
    assert verdict.describe().startswith("NOT PASSED, too few cases to tell")


def test_an_interval_across_the_bound_is_not_a_pass():
    # 0.62 on 150 cases: the 95% interval reaches below the minimum 0.6
    verdict = judge(_results(150, a=0.62))
    assert not verdict.passed and verdict.undecided
    assert any("cxr_align.A: 0.620, but its 95% interval" in f for f in verdict.failures)


def test_too_many_false_flags_fail():
    verdict = judge(_results(1000, ffr=0.2))
    assert not verdict.passed and not verdict.undecided
    assert any("consistency.false_flag_rate: 0.200 is above the maximum 0.1" in f
               for f in verdict.failures)
    assert judge(_results(1000, accept=0.5)).passed is False


def test_results_without_intervals_cannot_pass_but_minimums_alone_can_be_asked_for():
    bare = {"metrics": _results(1000)["metrics"]}
    verdict = judge(bare)
    assert not verdict.passed and "no sample size" in verdict.failures[0]
    assert judge(bare, thresholds=DEFAULT_THRESHOLDS, maximums={}, min_cases=0).passed
