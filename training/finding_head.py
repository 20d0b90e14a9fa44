"""Fit a model's finding head (core_model.finding_head) on a dataset's training labels.

Each finding gets an L2-regularised logistic regression on the standardised,
concatenated pooled features of the image backbone's stages, fitted with
L-BFGS on the training split's frontal images (one per study, a seeded sample
of at most :data:`MAX_IMAGES`) and their CheXpert labels: "1" positive, "0"
and blank negative, "-1" (uncertain) left out for that finding. A finding
with fewer than :data:`MIN_POSITIVES` positive (or negative) images is left
out of the head and keeps its zero-shot score.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from core_model.finding_head import FindingHead
from core_model.imaging import ImageReadError
from core_model.text.observations import FINDINGS

#: At most this many training images are encoded (a seeded sample).
MAX_IMAGES = 8000
#: A finding needs this many images of each class to be fitted.
MIN_POSITIVES = 10
#: The L2 penalty on the weights (per standardised feature, on the mean log-loss).
L2 = 1e-3


def read_labelled(data_root: str | os.PathLike[str], split: str, *, seed: int = 0,
                  limit: int = MAX_IMAGES) -> tuple[list[np.ndarray], list[dict[str, str]]]:
    """Up to ``limit`` frontal images of ``split``, one per study (a seeded sample), and
    their labels."""
    from training.dataset import MimicDataset

    by_study: dict[int, Any] = {}
    for sample in MimicDataset(data_root, split=split):  # frontal views only, by default
        by_study.setdefault(sample.study_id, sample)
    samples = sorted(by_study.values(), key=lambda s: s.study_id)
    random.Random(seed).shuffle(samples)
    images, labels = [], []
    for sample in samples:
        if len(images) >= limit:
            break
        try:
            images.append(sample.load_image())
        except ImageReadError:
            continue  # the dataset summary reports unreadable files
        labels.append(dict(sample.labels))
    return images, labels


def fit_head(features: np.ndarray, labels: list[dict[str, str]], *,
             provenance: dict[str, Any] | None = None, l2: float = L2) -> FindingHead:
    """The head for an (images x D) feature matrix and the images' labels."""
    import torch

    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) != len(labels) or len(x) < 2 * MIN_POSITIVES:
        raise ValueError(f"a finding head needs at least {2 * MIN_POSITIVES} labelled images "
                         f"(got {len(x)})")
    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = torch.tensor((x - mean) / scale, dtype=torch.float64)
    findings, weights, biases, counts = [], [], [], {}
    for finding in FINDINGS:
        values = [lab.get(finding, "") for lab in labels]
        keep = np.array([v != "-1" for v in values])
        y = np.array([v == "1" for v in values], float)[keep]
        if y.sum() < MIN_POSITIVES or (1 - y).sum() < MIN_POSITIVES:
            continue
        w, b = _logistic(z[torch.from_numpy(keep)], torch.tensor(y), l2)
        findings.append(finding)
        weights.append(w)
        biases.append(b)
        counts[finding] = {"positive": int(y.sum()), "negative": int((1 - y).sum())}
    if not findings:
        raise ValueError(f"no finding has {MIN_POSITIVES} positive and negative images to fit on")
    return FindingHead(tuple(findings), mean, scale, np.stack(weights), np.array(biases),
                       {**(provenance or {}), "images": len(x), "l2": l2, "counts": counts})


def _logistic(x: Any, y: Any, l2: float) -> tuple[np.ndarray, float]:
    import torch

    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> Any:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return w.detach().numpy(), float(b.detach())


def fit_from_dataset(model: Any, data_root: str | os.PathLike[str], *, split: str = "train",
                     seed: int = 0, limit: int = MAX_IMAGES) -> FindingHead:
    """Encode the split's images with ``model`` and fit its head."""
    from training.image_check import pooled_features

    images, labels = read_labelled(data_root, split, seed=seed, limit=limit)
    if not images:
        raise ValueError(f"the {split} split of {data_root} has no readable frontal image")
    stages = pooled_features(model, images)
    features = np.concatenate(stages, axis=1)
    return fit_head(features, labels, provenance={
        "fitted_on": f"{Path(data_root).resolve()} ({split} split)", "seed": seed})


__all__ = ["L2", "MAX_IMAGES", "MIN_POSITIVES", "fit_from_dataset", "fit_head", "read_labelled"]
