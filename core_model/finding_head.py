"""A model's finding head: per-finding scores from the image backbone's own features.

The zero-shot score compares the image embedding with prompt sentences; it
answers in the contrastive space's terms, where a small effusion or a plate
of atelectasis moves the global embedding little. The finding head reads the
backbone's pooled features at every stage (the same features the image check
describes), early high-resolution stages included, and scores each finding
with a logistic regression fitted on the training split's labels: a linear
probe, the paper's own way to read a frozen encoder (Table 2, LP), kept with
the model. On the demo model it raised the validation AUC of atelectasis
from 0.954 to 0.993, of pleural effusion from 0.975 to 0.994 and of pleural
other from 0.842 to 0.952; it cannot see what the backbone does not (lung
lesions, fractures at 128 px).

When a model has a head, the Reader's finding probabilities (calibration,
flags, flag modes) come from it, and so does the evidence drawn for a flag
(each patch's share of the head's score, :meth:`FindingHead.evidence`); the
zero-shot logits still serve the zero-shot evaluation, the statement
alignment and retrieval. The head lives in the checkpoint directory as
``finding_head.safetensors`` (feature mean and scale, weights, biases) and
``finding_head.json`` (findings, dimensions, provenance and the SHA-256 of
the tensors file), written atomically and checked on load; a checkpoint
without them checks with the zero-shot scores, as before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core_model.checked_tensors import read_checked, write_checked

FINDING_HEAD_TENSORS = "finding_head.safetensors"
FINDING_HEAD_FILE = "finding_head.json"
FORMAT = "concord-finding-head"
FORMAT_VERSION = 1


class FindingHeadError(ValueError):
    """A finding head that cannot be read or used; one line."""


@dataclass(frozen=True)
class FindingHead:
    """Standardised pooled features -> one logit per finding."""

    findings: tuple[str, ...]
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,), positive
    weights: np.ndarray  # (F, D)
    bias: np.ndarray  # (F,)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def features(self, stages: Sequence[np.ndarray]) -> np.ndarray:
        """One study's feature vector: each stage's pooled features (images x C_k), averaged
        over the study's frontal images and concatenated."""
        x = np.concatenate([np.asarray(s, np.float64).reshape(-1, s.shape[-1]).mean(0) for s in stages])
        if x.shape != (self.dim,):
            raise FindingHeadError(f"the finding head expects {self.dim} features, the image "
                                   f"backbone gives {x.shape[0]} (a head fitted for another model?)")
        return x

    def evidence(self, patches: np.ndarray, finding: str) -> np.ndarray | None:
        """Each patch's contribution to ``finding``'s logit, from the last stage's weights
        (the finding's score is the mean of these plus the other stages' terms): a class
        activation map. ``patches`` is (N, C) of the last stage; None when the head has no
        such finding or the shapes do not fit."""
        if finding not in self.findings or patches.ndim != 2 or patches.shape[1] > self.dim:
            return None
        c = patches.shape[1]
        k = self.findings.index(finding)
        weights = self.weights[k, -c:] / self.scale[-c:]
        return np.asarray(patches, np.float64) @ weights

    def logits(self, stages: Sequence[np.ndarray]) -> dict[str, float]:
        z = self.weights @ ((self.features(stages) - self.mean) / self.scale) + self.bias
        return {f: float(v) for f, v in zip(self.findings, z, strict=True)}


def save_head(directory: str | os.PathLike[str], head: FindingHead) -> Path:
    """Write the head into a model directory, atomically; returns the JSON file."""
    tensors = {"mean": head.mean.astype(np.float32), "scale": head.scale.astype(np.float32),
               "weights": head.weights.astype(np.float32), "bias": head.bias.astype(np.float32)}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "feature": "image backbone stages, pooled over space, concatenated",
        "findings": list(head.findings),
        "dim": head.dim,
        "provenance": head.provenance,
    }
    return write_checked(Path(directory), FINDING_HEAD_FILE, FINDING_HEAD_TENSORS, tensors, meta,
                         FindingHeadError, "finding head")


def load_head(directory: str | os.PathLike[str]) -> FindingHead | None:
    """The model directory's finding head, or None when it has none (neither file).

    A half-written, changed or corrupt one raises :class:`FindingHeadError`.
    """
    stored = read_checked(Path(directory), FINDING_HEAD_FILE, FINDING_HEAD_TENSORS, FORMAT,
                          FORMAT_VERSION, FindingHeadError, "finding head")
    if stored is None:
        return None
    meta, tensors = stored
    try:
        findings = tuple(str(f) for f in meta["findings"])
        d = int(meta["dim"])
        head = FindingHead(findings, tensors["mean"].astype(np.float64),
                           tensors["scale"].astype(np.float64), tensors["weights"].astype(np.float64),
                           tensors["bias"].astype(np.float64), dict(meta.get("provenance") or {}))
        if (head.mean.shape != (d,) or head.scale.shape != (d,)
                or head.weights.shape != (len(findings), d) or head.bias.shape != (len(findings),)):
            raise ValueError("the tensors have the wrong shapes")
    except (KeyError, TypeError, ValueError) as exc:
        raise FindingHeadError(f"the finding head cannot be read ({exc})") from None
    values = np.concatenate([head.mean, head.scale, head.weights.ravel(), head.bias])
    if not np.isfinite(values).all() or head.scale.min() <= 0:
        raise FindingHeadError("the finding head's values are not finite, or a scale is not positive")
    return head


__all__ = ["FINDING_HEAD_FILE", "FINDING_HEAD_TENSORS", "FindingHead", "FindingHeadError",
           "load_head", "save_head"]
