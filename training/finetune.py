"""Fine-tuned classification (the paper's Table 2, FT10 / FT100): how good are the image features?

Two protocols on 14 CheXpert labels (No Finding and the 13 findings), each on
a fraction of the training split's labels chosen by patient (a patient's
studies are in or out together; fixed seed), scored on the evaluated split:

* **linear probe** (``LP10``, ``LP100``): the image encoder frozen, a logistic
  regression on its pooled features (standardised), full batch;
* **fine-tune** (``FT10``, ``FT100``): a copy of the image encoder with a
  linear 14-label head, every weight trained (AdamW, cosine schedule).

Labels follow the zero-shot suite's convention: ``1`` positive, ``0`` and blank
negative, ``-1`` (uncertain) left out of the loss and of the scores.  One
frontal image per study.  Reported per label: ROC AUC (labels with both
classes in the evaluated split) and accuracy at probability 0.5; and their means.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core_model.text.observations import OBSERVATIONS
from training.evaluate import roc_auc

LABELS: tuple[str, ...] = OBSERVATIONS  # 14: No Finding first, CheXpert's order
DEFAULT_FRACTIONS = (0.1, 1.0)


class FinetuneError(ValueError):
    """The request cannot run (no labelled studies, a bad fraction); one line."""


@dataclass(frozen=True)
class Labelled:
    """One frontal image per study, preprocessed, with its 14 labels."""

    pixels: torch.Tensor  # [N, 1, S, S] float16, normalised (channel 0 of the model's input)
    targets: torch.Tensor  # [N, 14] float32 in {0, 1}
    mask: torch.Tensor  # [N, 14] bool: label known (not uncertain)
    subjects: list[int]
    study_ids: list[int]

    def __len__(self) -> int:
        return len(self.study_ids)

    def subset(self, rows: Sequence[int]) -> Labelled:
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return Labelled(self.pixels[index], self.targets[index], self.mask[index],
                        [self.subjects[i] for i in rows], [self.study_ids[i] for i in rows])


def label_row(labels: dict[str, str]) -> tuple[list[float], list[bool]]:
    """(targets, known) of one study's CheXpert values (blank = negative, -1 = unknown)."""
    values = [str(labels.get(name, "") or "").strip() for name in LABELS]
    targets = [1.0 if _is_one(v) else 0.0 for v in values]
    known = [not v.startswith("-1") for v in values]
    return targets, known


def _is_one(value: str) -> bool:
    try:
        return float(value) == 1.0
    except ValueError:
        return False


def load_labelled(model: Any, data_root: str | os.PathLike[str], split: str,
                  progress: Callable[[int, int], None] | None = None) -> Labelled:
    """The split's studies (first frontal image each), preprocessed for ``model``."""
    from core_model.model.preprocess import preprocess
    from training.dataset import MimicDataset

    dataset = MimicDataset(data_root, split=split)
    first: dict[int, Any] = {}
    for sample in dataset:
        first.setdefault(sample.study_id, sample)
    if not first:
        raise FinetuneError(f"the {split} split of {data_root} has no frontal images")
    image = model.config.image
    pixels, targets, mask, subjects, ids = [], [], [], [], []
    for n, sample in enumerate(first.values()):
        tensor = preprocess(sample.load_image(), image.image_size, mean=image.mean, std=image.std)
        pixels.append(tensor[:1].to(torch.float16))
        t, k = label_row(sample.labels)
        targets.append(t)
        mask.append(k)
        subjects.append(sample.subject_id)
        ids.append(sample.study_id)
        if progress is not None and (n + 1) % 256 == 0:
            progress(n + 1, len(first))
    return Labelled(torch.stack(pixels), torch.tensor(targets), torch.tensor(mask), subjects, ids)


def patient_fraction(data: Labelled, fraction: float, seed: int) -> list[int]:
    """Rows of ``data`` whose patient is in a random ``fraction`` of the patients (at least one)."""
    if not 0.0 < fraction <= 1.0:
        raise FinetuneError(f"a label fraction must be in (0, 1], not {fraction}")
    patients = sorted(set(data.subjects))
    if fraction >= 1.0:
        chosen = set(patients)
    else:
        rng = np.random.default_rng(seed)
        count = max(1, math.ceil(fraction * len(patients)))
        chosen = {patients[i] for i in rng.permutation(len(patients))[:count]}
    return [i for i, s in enumerate(data.subjects) if s in chosen]


def _expand(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    return pixels.float().expand(-1, channels, -1, -1)


@torch.no_grad()
def features(visual: torch.nn.Module, data: Labelled, channels: int, batch: int = 128) -> torch.Tensor:
    """Pooled image-encoder features (before the projection into the shared space)."""
    visual.eval()
    out = [visual(_expand(data.pixels[i:i + batch], channels)) for i in range(0, len(data), batch)]
    return torch.cat(out).float()


def _masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weight = mask.float()
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)


def linear_probe(train_x: torch.Tensor, train: Labelled, test_x: torch.Tensor, *,
                 epochs: int = 300, lr: float = 0.05, weight_decay: float = 1e-4,
                 seed: int = 0) -> torch.Tensor:
    """Logistic regression per label on standardised features; returns test probabilities."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True).clamp_min(1e-6)
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    head = torch.nn.Linear(xs.shape[1], len(LABELS))
    optimiser = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        optimiser.zero_grad()
        _masked_bce(head(xs), train.targets, train.mask).backward()
        optimiser.step()
    with torch.no_grad():
        return torch.sigmoid(head(xt))


def fine_tune(visual: torch.nn.Module, channels: int, train: Labelled, test: Labelled, *,
              steps: int = 300, batch: int = 32, lr: float = 1e-4, head_lr: float = 1e-3,
              seed: int = 0, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Every weight of a copy of ``visual`` plus a linear head; returns test probabilities."""
    torch.manual_seed(seed)
    encoder = copy.deepcopy(visual).train()
    if hasattr(encoder, "weights_channels_last_"):
        encoder.weights_channels_last_()
    for p in encoder.parameters():
        p.requires_grad_(True)
    head = torch.nn.Linear(int(getattr(encoder, "num_features", 0) or _width(encoder, train, channels)),
                           len(LABELS))
    optimiser = torch.optim.AdamW([
        {"params": encoder.parameters(), "lr": lr},
        {"params": head.parameters(), "lr": head_lr},
    ], weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    generator = torch.Generator().manual_seed(seed)
    n = len(train)
    for step in range(steps):
        rows = torch.randint(0, n, (min(batch, n),), generator=generator)
        logits = head(encoder(_expand(train.pixels[rows], channels)))
        loss = _masked_bce(logits, train.targets[rows], train.mask[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if progress is not None and (step + 1) % 50 == 0:
            progress(step + 1, steps)
    encoder.eval()
    with torch.no_grad():
        out = [head(encoder(_expand(test.pixels[i:i + 128], channels))) for i in range(0, len(test), 128)]
    return torch.sigmoid(torch.cat(out))


def _width(encoder: torch.nn.Module, data: Labelled, channels: int) -> int:
    with torch.no_grad():
        return int(encoder(_expand(data.pixels[:1], channels)).shape[1])


def score(probabilities: torch.Tensor, test: Labelled) -> dict[str, Any]:
    """Per-label AUC and accuracy at 0.5 over known labels, and their means."""
    auc: dict[str, float] = {}
    accuracy: dict[str, float] = {}
    probs = probabilities.numpy()
    for j, name in enumerate(LABELS):
        known = test.mask[:, j].numpy()
        if not known.any():
            continue
        y = test.targets[known, j].numpy().astype(int)
        p = probs[known, j]
        accuracy[name] = float(np.mean((p >= 0.5) == (y == 1)))
        value = roc_auc(p.tolist(), y.tolist())
        if value is not None:
            auc[name] = float(value)
    return {
        "mean_auc": float(np.mean(list(auc.values()))) if auc else None,
        "mean_accuracy": float(np.mean(list(accuracy.values()))) if accuracy else None,
        "auc": auc,
        "accuracy": accuracy,
        "labels_n": len(auc),
    }


def finetune_suite(model: Any, data_root: str | os.PathLike[str], *, split: str = "test",
                   fractions: Sequence[float] = DEFAULT_FRACTIONS, steps: int = 300,
                   probe_epochs: int = 300, seed: int = 0, linear: bool = True, full: bool = True,
                   emit: Callable[[dict[str, Any]], None] | None = None,
                   train_data: Labelled | None = None, test_data: Labelled | None = None) -> dict[str, Any]:
    """LP / FT at each fraction of the training labels, scored on ``split``.

    Keys ``LP10``, ``FT10``, ``LP100``, ``FT100`` (the percentage of the
    training patients, rounded), each with ``mean_auc``, ``mean_accuracy``,
    per-label ``auc`` / ``accuracy``, ``train_studies`` and ``train_patients``.
    ``model`` is left unchanged (the fine-tune trains a copy).
    """
    emit = emit or (lambda _e: None)
    fractions = tuple(float(f) for f in fractions)
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise FinetuneError(f"a label fraction must be in (0, 1], not {f}")
    if not fractions:
        raise FinetuneError("name at least one label fraction")
    visual = model.visual
    channels = int(model.config.image.in_chans)
    train = train_data or load_labelled(model, data_root, "train",
                                        lambda d, t: emit({"event": "finetune", "stage": "load train",
                                                           "done": d, "total": t}))
    test = test_data or load_labelled(model, data_root, split)
    out: dict[str, Any] = {"split": split, "test_studies": len(test), "steps": steps,
                           "probe_epochs": probe_epochs, "seed": seed}
    train_x = test_x = None
    if linear:
        train_x = features(visual, train, channels)
        test_x = features(visual, test, channels)
    for fraction in fractions:
        rows = patient_fraction(train, fraction, seed)
        part = train.subset(rows)
        tag = f"{round(fraction * 100):d}"
        facts = {"train_studies": len(part), "train_patients": len(set(part.subjects)), "fraction": fraction}
        if linear:
            assert train_x is not None and test_x is not None
            probs = linear_probe(train_x[torch.as_tensor(rows)], part, test_x, epochs=probe_epochs, seed=seed)
            out[f"LP{tag}"] = {**score(probs, test), **facts}
            emit({"event": "finetune", "stage": f"LP{tag}", "mean_auc": out[f"LP{tag}"]["mean_auc"]})
        if full:
            probs = fine_tune(visual, channels, part, test, steps=steps, seed=seed,
                              progress=lambda d, t, tag=tag: emit({"event": "finetune", "stage": f"FT{tag}",
                                                                   "done": d, "total": t}))
            out[f"FT{tag}"] = {**score(probs, test), **facts}
            emit({"event": "finetune", "stage": f"FT{tag}", "mean_auc": out[f"FT{tag}"]["mean_auc"]})
    return out
