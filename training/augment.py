"""Training augmentations on the display image, before :func:`core_model.model.preprocess.preprocess`.

The set medical CLIP models train with (ConVIRT, GLoRIA, MedCLIP): a random
resized crop within a narrow scale, a small rotation, and brightness and
contrast jitter.  Crop and rotation are one affine map, resampled once
(bilinear); where the rotated crop reaches past the image the fill is black,
as in the letterbox that :func:`preprocess` adds.

There is **never a horizontal (or vertical) flip**: laterality is part of
what the model must read.  A flipped radiograph would show a left effusion
under a report that says "left pleural effusion", the heart on the wrong side
(the look of situs inversus), and would teach the model to ignore left and
right, which the reports and the check depend on.

Every random draw comes from the generator passed in (a
:class:`numpy.random.Generator` or a :class:`torch.Generator`), so a seeded
training run is reproducible.  The aspect-ratio jitter is relative to the
image's own aspect ratio, and small by default (0.9 to 1.1, at most about 5%
stretch on either axis), so the cardiothoracic ratio the model judges barely
moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: How many random numbers one augmentation draws (fixed, so streams stay aligned).
DRAWS = 7


@dataclass(frozen=True)
class AugmentParams:
    """One draw of :class:`Augment`: a crop box (input pixels), an angle and two factors."""

    left: float
    top: float
    width: float
    height: float
    angle: float  # degrees
    brightness: float  # multiplicative factor
    contrast: float  # blend factor towards the image mean


@dataclass(frozen=True)
class Augment:
    """Random resized crop, small rotation, brightness and contrast jitter; never a flip.

    ``scale`` is the crop's share of the image area, ``ratio`` its aspect ratio
    relative to the image's, ``degrees`` the largest rotation either way,
    ``brightness`` and ``contrast`` the largest relative change.  Call it with a
    display image (``H x W`` floats in [0, 1]) and a generator; the result has
    the same shape, float32 in [0, 1].  With ``enabled=False`` (or
    :meth:`none`) the image is returned unchanged.
    """

    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.9, 1.1)
    degrees: float = 10.0
    brightness: float = 0.1
    contrast: float = 0.1
    enabled: bool = True

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, not {self.scale}")
        lo, hi = self.ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"aspect ratio range must satisfy 0 < low <= high, not {self.ratio}")
        if not 0.0 <= self.degrees <= 180.0:
            raise ValueError(f"rotation must be between 0 and 180 degrees, not {self.degrees}")
        for name in ("brightness", "contrast"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} jitter must be in [0, 1), not {value}")

    @classmethod
    def none(cls) -> Augment:
        """The identity (evaluation, or training without augmentation)."""
        return cls(enabled=False)

    def sample(self, height: int, width: int, rng: np.random.Generator | object) -> AugmentParams:
        """Draw the parameters for an ``height x width`` image (always :data:`DRAWS` numbers)."""
        u = _uniform(rng, DRAWS)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[0]
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = min(float(width), width * math.sqrt(area * ratio))
        h = min(float(height), height * math.sqrt(area / ratio))
        return AugmentParams(
            left=(width - w) * u[2],
            top=(height - h) * u[3],
            width=w,
            height=h,
            angle=self.degrees * (2.0 * u[4] - 1.0),
            brightness=1.0 + self.brightness * (2.0 * u[5] - 1.0),
            contrast=1.0 + self.contrast * (2.0 * u[6] - 1.0),
        )

    def __call__(self, display: np.ndarray, rng: np.random.Generator | object) -> np.ndarray:
        if not self.enabled:
            return display
        arr = _check(display)
        out = apply(arr, self.sample(arr.shape[0], arr.shape[1], rng))
        return out.reshape(np.shape(display))


def apply(display: np.ndarray, params: AugmentParams) -> np.ndarray:
    """The augmented image for drawn ``params``: intensity first, then one affine resampling."""
    arr = _check(display)
    height, width = arr.shape
    out = np.clip(arr * np.float32(params.brightness), 0.0, 1.0)
    mean = np.float32(out.mean())
    out = np.clip((out - mean) * np.float32(params.contrast) + mean, 0.0, 1.0).astype(np.float32)
    # Output point q (pixel centres at +0.5) -> input point: crop centre + R(angle) S (q - centre).
    theta = math.radians(params.angle)
    cos, sin = math.cos(theta), math.sin(theta)
    sx, sy = params.width / width, params.height / height
    a, b, d, e = cos * sx, -sin * sy, sin * sx, cos * sy
    cx, cy = params.left + params.width / 2.0, params.top + params.height / 2.0
    ox, oy = width / 2.0, height / 2.0
    coefficients = (a, b, cx - a * ox - b * oy, d, e, cy - d * ox - e * oy)
    if _is_identity(coefficients):
        return out
    image = Image.fromarray(out, mode="F").transform(
        (width, height), Image.Transform.AFFINE, coefficients,
        resample=Image.Resampling.BILINEAR, fillcolor=0.0,
    )
    return np.clip(np.array(image, dtype=np.float32), 0.0, 1.0)


def _uniform(rng: np.random.Generator | object, n: int) -> list[float]:
    if isinstance(rng, np.random.Generator):
        return [float(x) for x in rng.random(n)]
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(rng, torch.Generator):
        return [float(x) for x in torch.rand(n, generator=rng, dtype=torch.float64)]
    raise TypeError(f"expected a numpy.random.Generator or torch.Generator, not {type(rng).__name__}")


def _check(display: np.ndarray) -> np.ndarray:
    arr = np.asarray(display, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"expected a non-empty 2-D grayscale display image, got shape {arr.shape}")
    return arr


def _is_identity(c: tuple[float, ...]) -> bool:
    return all(abs(x - y) < 1e-9 for x, y in zip(c, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), strict=True))
