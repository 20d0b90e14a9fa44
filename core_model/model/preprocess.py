"""From a display image to the model's input tensor: one function for training and inference.

A radiograph is portrait or landscape, and squashing it to a square would
change the cardiothoracic ratio the model must judge, so :func:`preprocess`
letterboxes: the longest side is resized to ``size`` (bilinear, antialiased),
the image is centred on a black square (black is what a radiograph's own
collimated border looks like), then normalised per channel.

The grayscale display is replicated to 3 channels and normalised with
ImageNet's mean/std (:data:`~core_model.model.config.IMAGE_MEAN`,
``IMAGE_STD``): timm's backbones and any local ImageNet weights for them expect
exactly that input, and the cost (a 3-channel patch embedding instead of 1) is
negligible.  The channel count is ``len(mean)``, so a config with ``in_chans=1``
and a one-value mean/std gets a single channel from the same code.

Training augmentations live in the training package and run *before* this
function on the display array, so training and inference share every step here.
:func:`letterbox` gives the geometry for mapping a patch-token heatmap back onto
the original image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core_model.model.config import IMAGE_MEAN, IMAGE_STD


@dataclass(frozen=True)
class Letterbox:
    """Where an ``height x width`` image lies inside the ``size x size`` input."""

    size: int
    scale: float  # input pixels per original pixel
    top: int
    left: int
    height: int  # resized image height inside the square
    width: int


def letterbox(height: int, width: int, size: int) -> Letterbox:
    """Geometry of :func:`preprocess` for an image of ``height x width``."""
    if height <= 0 or width <= 0 or size <= 0:
        raise ValueError(f"bad letterbox sizes: {height}x{width} into {size}")
    scale = size / max(height, width)
    h = max(1, min(size, round(height * scale)))
    w = max(1, min(size, round(width * scale)))
    return Letterbox(size=size, scale=scale, top=(size - h) // 2, left=(size - w) // 2,
                     height=h, width=w)


def preprocess(
    display: np.ndarray,
    size: int,
    *,
    mean: Sequence[float] = IMAGE_MEAN,
    std: Sequence[float] = IMAGE_STD,
) -> torch.Tensor:
    """``float32 [C, size, size]`` from a display image ``H x W`` in [0, 1] (1 = white).

    Values outside [0, 1] are clipped (a display image should not have them);
    NaNs are an error, not something to train on silently.
    """
    arr = np.asarray(display)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale display image, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("empty image")
    if len(mean) != len(std) or not mean:
        raise ValueError("mean and std must have one value per channel")
    box = letterbox(arr.shape[0], arr.shape[1], size)
    arr = _block_reduce(arr.astype(np.float32, copy=False), box.height, box.width)
    if not np.isfinite(arr).all():  # a block mean keeps any NaN or inf it contains
        raise ValueError("image has NaN or infinite values")
    img = torch.from_numpy(np.clip(arr, 0.0, 1.0))[None, None]
    if (box.height, box.width) != tuple(arr.shape):
        img = F.interpolate(img, size=(box.height, box.width), mode="bilinear",
                            align_corners=False, antialias=True).clamp_(0.0, 1.0)
    canvas = torch.zeros((1, 1, size, size), dtype=torch.float32)
    canvas[..., box.top:box.top + box.height, box.left:box.left + box.width] = img
    channels = canvas[0].expand(len(mean), size, size)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return ((channels - m) / s).contiguous()


def _block_reduce(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Average ``k x k`` blocks while the image stays at least twice the target size.

    An area filter, exact for the blocks it averages; the antialiased resize
    that follows then works on a small image.  A 2500 x 2000 radiograph goes to
    128 px in a few milliseconds instead of tens.
    """
    k = min(arr.shape[0] // (2 * height), arr.shape[1] // (2 * width))
    if k < 2:
        return arr
    pooled = F.avg_pool2d(torch.from_numpy(np.ascontiguousarray(arr))[None, None], k)
    return pooled[0, 0].numpy()


def preprocess_batch(
    displays: Sequence[np.ndarray],
    size: int,
    *,
    mean: Sequence[float] = IMAGE_MEAN,
    std: Sequence[float] = IMAGE_STD,
) -> torch.Tensor:
    """``float32 [B, C, size, size]``: :func:`preprocess` of each image, stacked."""
    if len(displays) == 0:
        raise ValueError("no images to preprocess")
    return torch.stack([preprocess(d, size, mean=mean, std=std) for d in displays])
