"""Evidence heatmaps on the original image: letterbox geometry and colouring (no Qt).

The model sees a square ``input_size x input_size`` input in which the image
is letterboxed (:func:`core_model.model.preprocess.letterbox`: longest side
scaled to ``input_size``, centred, black bars).  A ``h x w`` patch-token
heatmap tiles that square, so cell ``(i, j)`` covers input pixels
``[j * S / w, (j + 1) * S / w) x [i * S / h, (i + 1) * S / h)`` and an input
pixel ``(u, v)`` is image pixel ``((u - left) / scale, (v - top) / scale)``,
the same mapping as :func:`training.evaluate.argmax_point`.  The square
therefore covers an image-space rectangle that extends past the image on the
short side (the black bars); :func:`heatmap_box` returns it and the viewer
draws the heatmap into it, clipped to the image.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from core_model.model.preprocess import Letterbox

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels (edges)

#: Heatmap values up to this are transparent; from ``FULL_ALPHA_AT`` on, drawn at full opacity.
ALPHA_FROM = 0.15
FULL_ALPHA_AT = 0.6
#: Where on the colour map a value of 0 starts (0 would be the map's black end).
COLOR_FLOOR = 0.2


def _letterbox(rows: int, columns: int, input_size: int) -> Letterbox:
    # Imported here: the preprocessing module pulls in torch, which opening an image does not need.
    from core_model.model.preprocess import letterbox

    return letterbox(rows, columns, input_size)


def heatmap_box(image_shape: tuple[int, int], input_size: int) -> Box:
    """The model's input square in image pixel coordinates (its outer edges)."""
    rows, columns = image_shape
    lb = _letterbox(rows, columns, input_size)
    return (-lb.left / lb.scale, -lb.top / lb.scale,
            (input_size - lb.left) / lb.scale, (input_size - lb.top) / lb.scale)


def heatmap_to_image(heatmap: np.ndarray, image_shape: tuple[int, int], input_size: int) -> np.ndarray:
    """The heatmap resampled onto the image grid (``rows x columns`` float32, nearest cell).

    Pixel ``(y, x)`` takes the value of the cell that contains its centre
    ``(x + 0.5, y + 0.5)`` after mapping into the model's input square.
    """
    grid = np.asarray(heatmap, dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"expected a 2-D heatmap, got shape {grid.shape}")
    rows, columns = image_shape
    lb = _letterbox(rows, columns, input_size)
    h, w = grid.shape
    u = (np.arange(columns) + 0.5) * lb.scale + lb.left  # input-square coordinates
    v = (np.arange(rows) + 0.5) * lb.scale + lb.top
    j = np.clip(np.floor(u * w / input_size).astype(np.int64), 0, w - 1)
    i = np.clip(np.floor(v * h / input_size).astype(np.int64), 0, h - 1)
    return grid[i[:, None], j[None, :]]


def cell_box(cell: tuple[int, int], grid_shape: tuple[int, int], image_shape: tuple[int, int],
             input_size: int) -> Box:
    """Image-pixel rectangle (edges, unclipped) covered by heatmap cell ``(i, j)``."""
    x0, y0, x1, y1 = heatmap_box(image_shape, input_size)
    h, w = grid_shape
    i, j = cell
    cw, ch = (x1 - x0) / w, (y1 - y0) / h
    return (x0 + j * cw, y0 + i * ch, x0 + (j + 1) * cw, y0 + (i + 1) * ch)


@cache
def colormap_table(name: str = "inferno") -> np.ndarray:
    """``256 x 3`` uint8 RGB of a matplotlib colormap (perceptually uniform ones by default)."""
    import matplotlib

    rgba = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))
    return np.rint(rgba[:, :3] * 255.0).astype(np.uint8)


def colorize(heatmap: np.ndarray, opacity: float = 0.45, colormap: str = "inferno",
             max_side: int = 512) -> np.ndarray:
    """``h x w x 4`` uint8 RGBA (straight alpha) of a heatmap with values in [0, 1].

    Alpha rises linearly from 0 at ``ALPHA_FROM`` to ``opacity`` at
    ``FULL_ALPHA_AT``, so weak evidence stays out of the way and the radiograph remains readable
    under it; the colour map's darkest fifth is skipped (a near-black tint
    reads as shadow on a radiograph, not as evidence).  NaN cells are
    transparent.  Heatmaps larger than ``max_side`` are subsampled first (they
    are drawn scaled anyway).
    """
    grid = np.asarray(heatmap, dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"expected a 2-D heatmap, got shape {grid.shape}")
    step = max(1, int(np.ceil(max(grid.shape) / max_side)))
    grid = grid[::step, ::step]
    finite = np.isfinite(grid)
    v = np.clip(np.where(finite, grid, 0.0), 0.0, 1.0)
    levels = np.rint((COLOR_FLOOR + (1.0 - COLOR_FLOOR) * v) * 255.0).astype(np.uint8)
    out = np.empty(grid.shape + (4,), dtype=np.uint8)
    out[..., :3] = colormap_table(colormap)[levels]
    ramp = np.clip((v - ALPHA_FROM) / (FULL_ALPHA_AT - ALPHA_FROM), 0.0, 1.0)
    alpha = np.clip(opacity, 0.0, 1.0) * ramp * 255.0
    out[..., 3] = np.where(finite, np.rint(alpha), 0).astype(np.uint8)
    return out
