"""Which images a model can read, and which it must turn away with a reason.

Three gates, in order; the first that refuses gives the reason:

1. **the header** (DICOM): only radiographs (Modality CR or DX; not CT, MR,
   US, NM, PT, SEG, a secondary capture SC / OT, ...) of the chest
   (BodyPartExamined, when present, names the chest), one grayscale frame. A
   radiograph stored with a Secondary Capture SOP class (as converted research
   datasets often are) is judged by its Modality and by gate 3;
2. **the picture**: not blank, not saturated, not smaller than the model's
   input, not a colour photograph;
3. **the model's own training images**: the image's features (the image
   backbone's pooled output) must lie within the description fitted on the
   model's training images. The description is a Gaussian with a Ledoit-Wolf
   shrunk covariance; the score is the Mahalanobis distance (Lee et al., "A
   Simple Unified Framework for Detecting Out-of-Distribution Samples and
   Adversarial Attacks", NeurIPS 2018), and the threshold is a high percentile
   of the distances of a held-out (validation) split. It is generic: a model
   trained on MIMIC-CXR accepts MIMIC films and turns phantoms away, exactly as
   the demo model (trained on phantoms) turns real films away.

The description lives in the checkpoint directory as ``image_check.safetensors``
(mean and precision matrix) and ``image_check.json`` (threshold, provenance and
the SHA-256 of the tensors file), written atomically and checked on load; a
checkpoint without them still loads, with a warning that no image check was
fitted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core_model.checked_tensors import read_checked, write_checked

IMAGE_CHECK_TENSORS = "image_check.safetensors"
IMAGE_CHECK_FILE = "image_check.json"
FORMAT = "concord-image-check"
FORMAT_VERSION = 1
#: The share of held-out in-distribution images the threshold lets through.
DEFAULT_PERCENTILE = 99.5

#: Radiograph modalities (PS3.3 C.7.3.1.1.1): computed and digital radiography.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX"})
#: BodyPartExamined values (PS3.16 CID 4031 and common variants) that name the chest.
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS", "CHEST_LAT", "CHEST PA",
                              "PORT CHEST", "CHEST_PA", "TORAX", "THORAX PA"})
#: What the refused modalities are, for the reason given (PS3.3 C.7.3.1.1.1).
MODALITY_NAMES = {"CT": "computed tomography", "MR": "magnetic resonance", "US": "ultrasound",
                  "NM": "nuclear medicine", "PT": "PET", "SEG": "a segmentation",
                  "SC": "secondary capture: a screenshot or a scan of a picture",
                  "OT": "other", "MG": "mammography", "XA": "angiography", "RF": "fluoroscopy",
                  "SR": "a structured report", "PR": "a presentation state", "DOC": "a document"}
#: A picture whose value range is narrower than this is blank.
BLANK_RANGE = 0.04
#: A picture with more than this share of its pixels at black or white is saturated.
SATURATED_SHARE = 0.90
#: Mean difference between colour channels (0-255) above which a picture is in colour.
COLOUR_CHROMA = 6.0


class ImageCheckError(ValueError):
    """An image check that cannot be fitted, saved or loaded; one line."""


@dataclass(frozen=True)
class ImageCheck:
    """The verdict on a study's images: ``accepted`` or not, and why."""

    accepted: bool
    reason: str
    score: float | None = None
    threshold: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": bool(self.accepted),
            "reason": self.reason,
            "score": None if self.score is None else round(float(self.score), 4),
            "threshold": None if self.threshold is None else round(float(self.threshold), 4),
        }


# ----------------------------------------------------------------------------- gates 1 and 2


def header_problem(ds: Any) -> str | None:
    """Why a DICOM header says this is not a chest radiograph Concord reads, or None.

    Every value is read defensively: a value that is present but malformed (a corrupt
    file) is a reason of its own, never an exception.
    """
    values = {}
    for keyword in ("Modality", "BodyPartExamined", "NumberOfFrames", "PhotometricInterpretation"):
        try:
            value = ds.get(keyword)
        except Exception as exc:  # pydicom parses lazily: any corrupt element fails here
            return f"the header's {keyword} cannot be read ({str(exc)[:60]}; corrupt file)"
        values[keyword] = "" if value is None else str(value).strip()
    modality = values["Modality"].upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        what = f" ({MODALITY_NAMES[modality]})" if modality in MODALITY_NAMES else ""
        return (f"modality {modality}{what} is not a radiograph: the model reads chest "
                "radiographs (CR, DX)")
    part = values["BodyPartExamined"].upper()
    if part and part not in CHEST_BODY_PARTS:
        return f"the body part examined is {part}, not the chest"
    frames = values["NumberOfFrames"]
    try:
        many = int(float(frames or 1)) > 1
    except ValueError:
        return f"the header's NumberOfFrames {frames[:16]!r} is not a number (corrupt file)"
    if many:
        return "a multi-frame image: the model reads single radiographs"
    photometric = values["PhotometricInterpretation"].upper()
    if photometric and photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return f"a colour image ({photometric}), not a grayscale radiograph"
    return None


def picture_problem(pixels: np.ndarray, *, min_side: int) -> str | None:
    """Why the display picture cannot be read (blank, saturated, too small), or None."""
    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.size == 0:
        return f"not a single grayscale picture (shape {arr.shape})"
    height, width = arr.shape
    if min(height, width) < min_side:
        return (f"the image is {width} x {height} pixels, smaller than the {min_side} the model "
                "reads")
    step = max(1, int(np.sqrt(arr.size / 8_192)))  # about 8k samples: a fraction of a millisecond
    sample = np.asarray(arr[::step, ::step], dtype=np.float32)
    lo, hi = np.percentile(sample, (0.5, 99.5))
    if hi - lo < BLANK_RANGE:
        return "a blank image: no contrast to read"
    extreme = float(np.mean((sample <= 0.002) | (sample >= 0.998)))
    if extreme > SATURATED_SHARE:
        return f"a saturated image: {extreme:.0%} of its pixels are black or white"
    return None


def colour_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a PNG / JPEG file is a colour picture (a photograph, a screenshot), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"):
                return None
            rgb = np.asarray(im.convert("RGB").reduce(4) if min(im.size) >= 64
                             else im.convert("RGB"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError):
        return None  # the reader says what is wrong with the file
    chroma = float(np.mean(np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])))
    if chroma > COLOUR_CHROMA:
        return "a colour picture (a photograph or a screenshot), not a radiograph"
    return None


# ----------------------------------------------------------------------------- gate 3


@dataclass
class Layer:
    """One backbone stage's training features: a Gaussian, and its typical distance."""

    mean: np.ndarray
    precision: np.ndarray
    scale: float  # the median distance of held-out images: the stage's unit

    def distances(self, features: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if x.shape[1] != self.mean.shape[0]:
            raise ImageCheckError(f"features have {x.shape[1]} dimensions, the image check "
                                  f"{self.mean.shape[0]} (it belongs to another model)")
        x = x - self.mean
        return np.sqrt(np.maximum(np.sum((x @ self.precision) * x, axis=1), 0.0))  # BLAS


@dataclass
class ImageDescription:
    """The model's training images in its feature space, stage by stage, and a threshold.

    An image's score is the largest, over the backbone's stages, of its Mahalanobis
    distance to that stage's training features in units of the stage's typical
    held-out distance: early stages catch a picture of another kind (texture, noise,
    acquisition), the last one other content ("A Simple Unified Framework for
    Detecting Out-of-Distribution Samples and Adversarial Attacks", Lee et al., 2018,
    combines layers likewise).
    """

    layers: list[Layer]
    threshold: float
    percentile: float = DEFAULT_PERCENTILE
    provenance: dict[str, Any] = field(default_factory=dict)

    def scores(self, features: list[np.ndarray]) -> np.ndarray:
        """Each image's score; ``features`` holds one (images x C_k) array per stage."""
        if len(features) != len(self.layers):
            raise ImageCheckError(f"features of {len(features)} stages, the image check has "
                                  f"{len(self.layers)} (it belongs to another model)")
        per_layer = [layer.distances(f) / layer.scale for layer, f in zip(self.layers, features,
                                                                           strict=True)]
        return np.max(np.stack(per_layer), axis=0)

    def verdict(self, features: list[np.ndarray], *, model: str = "this model") -> ImageCheck:
        """Accepted when every image's score is within the threshold."""
        score = float(self.scores(features).max())
        if score <= self.threshold:
            return ImageCheck(True, "", score, self.threshold)
        return ImageCheck(
            False,
            f"the image is unlike the images {model} was trained on (score {score:.2f}, "
            f"threshold {self.threshold:.2f}): no flags are shown",
            score, self.threshold)


def fit_description(train: list[np.ndarray], held_out: list[np.ndarray], *,
                    percentile: float = DEFAULT_PERCENTILE,
                    provenance: dict[str, Any] | None = None) -> ImageDescription:
    """Fit one Gaussian per stage on ``train`` and set the threshold at ``percentile`` of the
    ``held_out`` images' scores (one images x C_k array per stage in each list)."""
    if not train or len(train) != len(held_out):
        raise ImageCheckError("training and held-out features need the same stages")
    if not 50.0 <= percentile < 100.0:
        raise ImageCheckError(f"the percentile must be in [50, 100), not {percentile}")
    layers = []
    for fit, held in zip(train, held_out, strict=True):
        fit, held = np.asarray(fit, dtype=np.float64), np.asarray(held, dtype=np.float64)
        if fit.ndim != 2 or held.ndim != 2 or fit.shape[1] != held.shape[1]:
            raise ImageCheckError("training and held-out features must be N x D with the same D")
        if len(fit) < 10 or len(held) < 10:
            raise ImageCheckError(f"too few images to fit an image check ({len(fit)} training, "
                                  f"{len(held)} held out; at least 10 of each)")
        if not (np.isfinite(fit).all() and np.isfinite(held).all()):
            raise ImageCheckError("the features hold NaN or infinite values")
        mean = fit.mean(0)
        layer = Layer(mean, np.linalg.inv(ledoit_wolf(fit - mean)), 1.0)
        layer.scale = max(float(np.median(layer.distances(held))), 1e-6)
        layers.append(layer)
    description = ImageDescription(layers, 0.0, percentile, dict(provenance or {}))
    scores = description.scores(held_out)
    description.threshold = float(np.percentile(scores, percentile))
    description.provenance.update({"train_images": int(len(train[0])),
                                   "held_out_images": int(len(held_out[0])),
                                   "stages": len(layers)})
    return description


def ledoit_wolf(centred: np.ndarray) -> np.ndarray:
    """The Ledoit-Wolf shrunk covariance of centred rows (well conditioned when N < D).

    Shrinks the sample covariance S toward mu * I, mu = trace(S) / D, by the weight that
    minimises the expected Frobenius loss ("A well-conditioned estimator for
    large-dimensional covariance matrices", Ledoit and Wolf 2004, Lemma 3.3 and 3.4).
    """
    n, d = centred.shape
    sample = centred.T @ centred / n
    mu = float(np.trace(sample)) / d
    target = sample - mu * np.eye(d)
    d2 = float(np.sum(target * target))
    b_bar2 = (float(np.sum(np.sum(centred * centred, axis=1) ** 2)) - n * float(
        np.sum(sample * sample))) / (n * n)
    shrinkage = 0.0 if d2 == 0.0 else min(max(b_bar2, 0.0), d2) / d2
    return shrinkage * mu * np.eye(d) + (1.0 - shrinkage) * sample


# ----------------------------------------------------------------------------- files


def save_description(directory: str | os.PathLike[str], description: ImageDescription) -> Path:
    """Write the description into a model directory, atomically; returns the JSON file."""
    tensors = {}
    for k, layer in enumerate(description.layers):
        tensors[f"mean_{k}"] = layer.mean.astype(np.float32)
        tensors[f"precision_{k}"] = layer.precision.astype(np.float32)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "feature": "image backbone stages, pooled over space",
        "layers": [{"dim": int(layer.mean.shape[0]), "scale": float(layer.scale)}
                   for layer in description.layers],
        "threshold": float(description.threshold),
        "percentile": float(description.percentile),
        "provenance": description.provenance,
    }
    return write_checked(Path(directory), IMAGE_CHECK_FILE, IMAGE_CHECK_TENSORS, tensors, meta,
                         ImageCheckError, "image check")


def load_description(directory: str | os.PathLike[str]) -> ImageDescription | None:
    """The model directory's image check, or None when none was fitted (neither file).

    A half-written, changed or corrupt one raises :class:`ImageCheckError`.
    """
    stored = read_checked(Path(directory), IMAGE_CHECK_FILE, IMAGE_CHECK_TENSORS, FORMAT,
                          FORMAT_VERSION, ImageCheckError, "image check")
    if stored is None:
        return None
    meta, tensors = stored
    try:
        layers = []
        for k, info in enumerate(meta["layers"]):
            mean = tensors[f"mean_{k}"].astype(np.float64)
            precision = tensors[f"precision_{k}"].astype(np.float64)
            d = int(info["dim"])
            if mean.shape != (d,) or precision.shape != (d, d):
                raise ValueError(f"stage {k} has the wrong shape")
            layers.append(Layer(mean, precision, float(info["scale"])))
        threshold = float(meta["threshold"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ImageCheckError(f"the image check cannot be read ({exc})") from None
    values = [threshold] + [la.scale for la in layers] + [float(np.sum(la.precision)) for la in layers]
    if not layers or not np.isfinite(values).all() or min(la.scale for la in layers) <= 0:
        raise ImageCheckError("the image check's values are not finite or not positive")
    return ImageDescription(layers, threshold, float(meta.get("percentile", 0.0)),
                            dict(meta.get("provenance") or {}))


def first_problem(problems: Iterable[str | None]) -> str | None:
    return next((p for p in problems if p), None)
