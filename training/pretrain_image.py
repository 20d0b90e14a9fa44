"""Pretrain a config's image backbone as a finding classifier, for ``concord train`` to start from.

The paper starts its image encoder from pretrained weights; Concord cannot
download any, so ``concord pretrain-image`` makes them from a MIMIC-layout
dataset: the config's timm backbone (from scratch) with a linear head over the
twelve pathologies, trained with binary cross-entropy on the training split's
report labels ("1" positive, "0" and blank negative, "-1" left out, as
``training.finetune`` reads them), with the trainer's augmentation, an AdamW
optimiser and a warm-up + cosine schedule.  It writes the backbone alone (timm
key layout, no head) as a ``.safetensors`` file that ``image_weights:`` (or
``concord train --image-weights``) loads, plus a JSON summary beside it with
the validation split's per-finding ROC AUC.

The labels come from the training reports, which the method's clinical-label
loss (eq. 5) uses anyway; the validation and test splits are never trained on.

    concord pretrain-image --data ROOT --out tower.safetensors [--model tiny]
        [--steps 6000] [--lr 1e-3] [--precision bf16] [--threads N]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core_model.files import atomic_write_bytes, atomic_write_text
from core_model.model.config import get_config
from core_model.model.encoders import ImageEncoder
from core_model.model.preprocess import preprocess
from core_model.text.observations import PATHOLOGIES
from training.augment import Augment
from training.dataset import MimicDataset
from training.evaluate import roc_auc
from training.finetune import LABELS, label_row
from training.preprocess import resize_longest
from training.trainer import stop_signals

_COLUMNS = [LABELS.index(o) for o in PATHOLOGIES]


class PretrainError(RuntimeError):
    """A pretraining run that cannot start or finish (the message says why)."""


class PretrainCancelled(PretrainError):
    """SIGINT/SIGTERM stopped the run before it finished."""


@dataclass(frozen=True)
class PretrainConfig:
    model: str = "tiny"
    steps: int = 6000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.05
    precision: str = "bf16"
    seed: int = 0
    #: Sample training images by prevalence**-balance of their rarest finding (0: uniform).
    balance: float = 0.0
    #: The trunk's global pooling (timm: avg, max, avgmax); None keeps the config's.
    global_pool: str | None = None
    #: Input size; None keeps the config's.
    size: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "warmup"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.balance < 0:
            raise ValueError(f"balance must not be negative, got {self.balance}")


def load_split(root: str | os.PathLike[str], split: str, store: int,
               first_only: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Display images (uint8, longest side ``store``) and a [N, 12] label matrix (-1: left out)."""
    images, labels, seen = [], [], set()
    for sample in MimicDataset(root, split=split):
        if first_only and sample.study_id in seen:
            continue
        seen.add(sample.study_id)
        images.append(resize_longest(sample.load_image(), store))
        targets, known = label_row(sample.labels)
        labels.append([targets[j] if known[j] else -1.0 for j in _COLUMNS])
    return images, np.asarray(labels, dtype=np.float32).reshape(-1, len(PATHOLOGIES))


def balanced_weights(labels: np.ndarray, alpha: float) -> np.ndarray:
    """Sampling probabilities: each image weighs prevalence**-alpha of its rarest positive
    finding; an image without one weighs as the commonest finding does."""
    prevalence = np.clip((labels == 1).mean(axis=0), 1e-4, None)
    weight = prevalence ** -alpha
    per_image = np.where(labels == 1, weight[None, :], 0.0).max(axis=1)
    per_image[per_image == 0] = weight.min()
    return per_image / per_image.sum()


class ImageClassifier:
    """The backbone, its 12-finding head, and one training step / evaluation."""

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        cfg = get_config(config.model)
        if config.size:
            cfg.image.image_size = config.size
        if config.global_pool:
            cfg.image.timm_kwargs = {**cfg.image.timm_kwargs, "global_pool": config.global_pool}
        self.size, self.mean, self.std = cfg.image.image_size, cfg.image.mean, cfg.image.std
        self.encoder = ImageEncoder(cfg.image).weights_channels_last_()
        self.head = torch.nn.Linear(self.encoder.num_features, len(PATHOLOGIES))
        self.optimiser = torch.optim.AdamW([*self.encoder.parameters(), *self.head.parameters()],
                                           lr=config.lr, weight_decay=config.weight_decay)
        self.augment = Augment()
        self.rng = np.random.default_rng(config.seed)

    @property
    def store(self) -> int:
        """The stored image side: room for the random crop, as the training cache keeps."""
        return round(self.size * 1.25)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.config.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def pixels(self, images: list[np.ndarray], rows: Any, train: bool) -> torch.Tensor:
        out = []
        for i in rows:
            display = images[i].astype(np.float32) / 255.0
            if train:
                display = self.augment(display, self.rng)
            out.append(preprocess(display, self.size, mean=self.mean, std=self.std))
        return torch.stack(out)

    def step(self, step: int, images: list[np.ndarray], labels: np.ndarray,
             sampling: np.ndarray | None) -> float:
        c = self.config
        lr = c.lr * min(1.0, (step + 1) / c.warmup) * 0.5 * (1 + math.cos(math.pi * step / c.steps))
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        rows = self.rng.choice(len(images), c.batch_size, p=sampling) if sampling is not None \
            else self.rng.integers(0, len(images), c.batch_size)
        y = torch.from_numpy(labels[rows])
        with self.autocast():
            logits = self.head(self.encoder(self.pixels(images, rows, True))).float()
        known = (y >= 0).float()
        loss = (F.binary_cross_entropy_with_logits(logits, y.clamp(min=0), reduction="none") * known).mean()
        if not torch.isfinite(loss):
            raise PretrainError(f"the loss is {loss.item()} at step {step + 1}; lower lr")
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, images: list[np.ndarray], labels: np.ndarray) -> dict[str, float]:
        """Per-finding ROC AUC (findings without both classes are left out)."""
        self.encoder.eval()
        scores = []
        try:
            for a in range(0, len(images), 128):
                with self.autocast():
                    batch = self.pixels(images, range(a, min(a + 128, len(images))), False)
                    scores.append(self.head(self.encoder(batch)).float())
        finally:
            self.encoder.train()
        s = torch.cat(scores).numpy()
        result = {}
        for k, name in enumerate(PATHOLOGIES):
            known = labels[:, k] >= 0
            auc = roc_auc(s[known, k], labels[known, k].astype(int))
            if auc is not None:
                result[name] = auc
        return result

    def backbone_bytes(self) -> bytes:
        from safetensors.torch import save

        return save({k: v.contiguous() for k, v in self.encoder.trunk.state_dict().items()})


def train_classifier(config: PretrainConfig, data_root: str | os.PathLike[str], *,
                     eval_split: str = "validate", eval_every: int = 1000,
                     emit: Callable[[dict[str, Any]], None] | None = None,
                     cancelled: Callable[[], bool] | None = None,
                     ) -> Iterator[tuple[ImageClassifier, dict[str, Any]]]:
    """Train and yield ``(classifier, row)`` after each evaluation (the last at ``config.steps``).

    ``row`` has ``step``, ``epoch``, ``seconds``, ``mean_auc`` and ``auc`` (per
    finding, on ``eval_split``, one frontal image per study).
    """
    emit = emit or (lambda event: None)
    clf = ImageClassifier(config)
    root = Path(data_root)
    t0 = time.perf_counter()
    train_x, train_y = load_split(root, "train", clf.store, first_only=False)
    eval_x, eval_y = load_split(root, eval_split, clf.store, first_only=True)
    if len(train_x) < config.batch_size:
        raise PretrainError(f"only {len(train_x)} training images in {root} for a batch of {config.batch_size}")
    if not eval_x:
        raise PretrainError(f"the {eval_split} split of {root} has no images to evaluate on")
    emit({"event": "data", "train_images": len(train_x), "eval_studies": len(eval_x),
          "eval_split": eval_split, "image_size": clf.size, "seconds": round(time.perf_counter() - t0, 1)})
    sampling = balanced_weights(train_y, config.balance) if config.balance else None
    start = time.perf_counter()
    for step in range(config.steps):
        if cancelled is not None and cancelled():
            raise PretrainCancelled(f"cancelled at step {step}; nothing was written")
        loss = clf.step(step, train_x, train_y, sampling)
        if (step + 1) % 50 == 0:
            elapsed = time.perf_counter() - start
            rate = (step + 1) / max(elapsed, 1e-9)
            emit({"event": "step", "step": step + 1, "steps": config.steps, "loss": round(loss, 5),
                  "samples_per_s": round(rate * config.batch_size, 1),
                  "eta_s": round((config.steps - step - 1) / rate, 1)})
        if (step + 1) % eval_every == 0 or step + 1 == config.steps:
            aucs = clf.evaluate(eval_x, eval_y)
            row = {"step": step + 1, "epoch": round((step + 1) * config.batch_size / len(train_x), 2),
                   "seconds": round(time.perf_counter() - start),
                   "mean_auc": float(np.mean(list(aucs.values()))) if aucs else float("nan"),
                   "auc": aucs}
            emit({"event": "evaluate", **row})
            yield clf, row


def pretrain_image(config: PretrainConfig, data_root: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   eval_every: int = 1000,
                   emit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train, then write ``out`` (backbone weights) and ``out`` with ``.json`` (the summary).

    Both files are written atomically at the end: a failure or a cancel
    (SIGINT/SIGTERM, which stop at the next step) leaves nothing half-written.
    """
    target = Path(out)
    if target.suffix.lower() != ".safetensors":
        raise PretrainError(f"{target.name}: the output must be a .safetensors file")
    if not target.parent.is_dir():
        raise PretrainError(f"no folder {target.parent} to write {target.name} into")
    last: tuple[ImageClassifier, dict[str, Any]] | None = None
    history = []
    with stop_signals() as stopped:
        for clf, row in train_classifier(config, data_root, eval_every=eval_every, emit=emit,
                                         cancelled=stopped):
            history.append(row)
            last = (clf, row)
    assert last is not None
    clf, row = last
    try:
        atomic_write_bytes(target, clf.backbone_bytes(), mode=0o644)
        summary = {"weights": target.name, "config": asdict(config), "data": str(Path(data_root).resolve()),
                   "backbone": get_config(config.model).image.backbone, "image_size": clf.size,
                   "eval_split": "validate", "final": row, "history": history}
        atomic_write_text(target.with_suffix(".json"), json.dumps(summary, indent=2) + "\n", mode=0o644)
    except OSError as exc:
        raise PretrainError(f"could not write {target}: {exc.strerror or exc}") from exc
    return target
