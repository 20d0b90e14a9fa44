"""Platt calibration and operating points stay finite and sensible on hard inputs."""

from __future__ import annotations

import numpy as np
import pytest

from core_model.calibration import fit_calibration, fit_platt


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_platt_recovers_a_known_logistic_relation():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, 4000)
    y = (rng.random(4000) < _sigmoid(0.8 * x - 1.0)).astype(int)
    a, b = fit_platt(x, y)
    assert abs(a - 0.8) < 0.1 and abs(b + 1.0) < 0.15


def test_perfectly_separated_large_logits_give_a_finite_monotone_correction():
    """Raw zero-shot logits reach tens; a plain Newton fit diverged to a step function here."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-40, 5, 800), rng.normal(30, 5, 140)])
    y = np.concatenate([np.zeros(800, int), np.ones(140, int)])
    a, b = fit_platt(x, y)
    assert 0 < a < 10 and abs(b) < 100, (a, b)
    probs = _sigmoid(a * x + b)
    assert probs[y == 1].min() > probs[y == 0].max()
    assert 0.0 < probs.min() and probs.max() < 1.0


def test_operating_points_are_inside_the_unit_interval():
    rng = np.random.default_rng(2)
    logits = {"Edema": np.concatenate([rng.normal(-60, 2, 880), rng.normal(-55, 2, 70)])}
    labels = {"Edema": np.concatenate([np.zeros(880, int), np.ones(70, int)])}
    point = fit_calibration(logits, labels, target_sensitivity=0.8)["Edema"]
    assert 0.0 < point["absent_threshold"] <= point["threshold"] < 1.0
    assert point["sensitivity"] >= 0.8 and point["specificity"] > 0.5


def test_the_validation_auc_is_recorded_per_finding():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 300), rng.normal(1, 1, 60)])
    y = np.concatenate([np.zeros(300, int), np.ones(60, int)])
    x[:10] = x[300:310]  # some ties between classes
    point = fit_calibration({"Edema": x}, {"Edema": y}, target_sensitivity=0.8)["Edema"]
    pos, neg = x[y == 1], x[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg))
    assert point["auc"] == pytest.approx(pairwise)
    assert 0.7 < point["auc"] < 0.85
