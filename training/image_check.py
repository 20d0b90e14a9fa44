"""Fitting a model's image check on its own training images (:mod:`core_model.image_check`).

``concord train`` fits it at the end of a run (training images from the run's
pairs; the threshold from the validation pairs, or from a held-out tenth of the
training images when validation is off); ``concord eval --save-calibration``
fits it again from the dataset's ``train`` and ``validate`` splits. ``concord
eval`` reports ``image_check.accept_rate``: the share of the evaluated split's
frontal images the check accepts.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core_model.image_check import (
    DEFAULT_PERCENTILE,
    ImageCheckError,
    ImageDescription,
    fit_description,
    save_description,
)
from core_model.imaging import ImageReadError

#: At most this many images are encoded per split (a sample, seeded): enough for a
#: covariance of a few hundred dimensions, and minutes at most on a CPU.
MAX_IMAGES = 4000


def pooled_features(model: Any, displays: Sequence[np.ndarray], *,
                    batch_size: int = 64) -> list[np.ndarray]:
    """Each backbone stage's pooled features (one N x C_k array per stage) of display
    images in [0, 1]."""
    import torch

    out: list[list[np.ndarray]] = []
    model.eval()
    for start in range(0, len(displays), batch_size):
        batch = torch.stack([model.preprocess(d) for d in displays[start:start + batch_size]])
        with torch.inference_mode():
            *_rest, stages = model.encode_image_features(batch.to(model.device))
        out.append([s.float().cpu().numpy() for s in stages])
    if not out:
        return []
    return [np.concatenate([batch[k] for batch in out]) for k in range(len(out[0]))]


def fit_from_displays(model: Any, train: Sequence[np.ndarray], held_out: Sequence[np.ndarray], *,
                      percentile: float = DEFAULT_PERCENTILE, seed: int = 0,
                      provenance: dict[str, Any] | None = None) -> ImageDescription:
    """Fit on (a seeded sample of) ``train``; threshold from ``held_out`` (display images)."""
    rng = random.Random(seed)
    train = _sample(train, rng)
    held_out = _sample(held_out, rng)
    return fit_description(pooled_features(model, train), pooled_features(model, held_out),
                           percentile=percentile, provenance=provenance)


def fit_after_training(model_dir: str | os.PathLike[str], model: Any, train: Sequence[Any],
                       validation: Sequence[Any], *, seed: int, source: str) -> ImageDescription:
    """Fit and save a trained model's image check from the run's pairs (``.pixels``)."""
    train_px = [p.pixels for p in train]
    held_px = [p.pixels for p in validation]
    held_from = "validation pairs"
    if len(held_px) < 10:  # validation off: hold out a tenth of the training images
        rng = random.Random(seed)
        order = list(range(len(train_px)))
        rng.shuffle(order)
        cut = max(10, len(order) // 10)
        held_px = [train_px[i] for i in order[:cut]]
        train_px = [train_px[i] for i in order[cut:]]
        held_from = "a held-out tenth of the training images"
    description = fit_from_displays(model, train_px, held_px, seed=seed, provenance={
        "fitted_on": source, "threshold_from": held_from})
    save_description(model_dir, description)
    return description


def fit_from_dataset(model: Any, data_root: str | os.PathLike[str], *, fit_split: str = "train",
                     threshold_split: str = "validate", seed: int = 0,
                     percentile: float = DEFAULT_PERCENTILE) -> ImageDescription:
    """Fit on a dataset's ``fit_split`` frontal images; threshold from ``threshold_split``."""
    train = read_frontal(data_root, fit_split, seed=seed)
    held = read_frontal(data_root, threshold_split, seed=seed)
    return fit_from_displays(model, train, held, percentile=percentile, seed=seed, provenance={
        "fitted_on": f"{Path(data_root).resolve()} ({fit_split} split)",
        "threshold_from": f"{threshold_split} split"})


def read_frontal(data_root: str | os.PathLike[str], split: str, *, seed: int = 0,
                 limit: int = MAX_IMAGES) -> list[np.ndarray]:
    """Up to ``limit`` frontal images of a split (a seeded sample), as display images."""
    from training.dataset import MimicDataset

    samples = list(MimicDataset(data_root, split=split))
    random.Random(seed).shuffle(samples)
    images = []
    for sample in samples:
        if len(images) >= limit:
            break
        try:
            images.append(sample.load_image())
        except ImageReadError:
            continue  # the dataset summary reports unreadable files
    return images


def accept_rate(reader: Any, displays: Sequence[np.ndarray],
                on_batch: Callable[[int], None] | None = None) -> float | None:
    """The share of ``displays`` the reader's image check accepts (None without a check)."""
    description = reader.image_description
    if description is None or not displays:
        return None
    features = pooled_features(reader.model, list(displays))
    if on_batch is not None:
        on_batch(len(displays))
    return float(np.mean(description.scores(features) <= description.threshold))  # per image


def _sample(images: Sequence[np.ndarray], rng: random.Random) -> list[np.ndarray]:
    items = list(images)
    if len(items) > MAX_IMAGES:
        items = rng.sample(items, MAX_IMAGES)
    return items


__all__ = ["ImageCheckError", "MAX_IMAGES", "accept_rate", "fit_after_training",
           "fit_from_dataset", "fit_from_displays", "pooled_features", "read_frontal"]
