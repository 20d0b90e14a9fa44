"""The grayscale display pipeline as lookup tables (no Qt).

PS3.4 N.2 / PS3.3 C.11: stored values -> Modality LUT -> VOI LUT (a VOI LUT
Sequence item, or Window Center / Width with the VOI LUT Function) ->
Presentation, where MONOCHROME1 is inverted (PS3.3 C.7.6.3.1.2) -> the user's
invert toggle.  Every stage is pointwise, so for integer data the whole chain
is evaluated once per distinct stored value (at most 65,536 entries, with
pydicom's ``apply_windowing`` / ``apply_voi``) into a ``uint8`` table, and a
frame is one gather ``table[index]``: about 15 ms for a 3000 x 2500 image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from app.viewer.image_data import LoadedImage, Window, range_window

#: 16 output bits for pydicom's windowing: PS3.3 C.11.2.1.2 maps to [y_min, y_max].
_WINDOW_BITS = 16


@dataclass(frozen=True)
class FileVoiLut:
    """The file's VOI LUT Sequence item ``item`` (PS3.3 C.11.2.1.1)."""

    item: int = 0


Voi = Window | FileVoiLut


@dataclass(frozen=True)
class DisplayState:
    """What the user set: the VOI transform and the invert toggle."""

    voi: Voi
    inverted: bool = False


def default_state(image: LoadedImage) -> DisplayState:
    """The file's first VOI LUT Sequence item, else its first window, else the robust data range.

    A VOI LUT Sequence wins over Window Center / Width, as in
    :func:`core_model.imaging.dicom_display`, so the viewer shows what the
    model reads.
    """
    if image.voi_lut_count:
        return DisplayState(FileVoiLut(0))
    return DisplayState(image.default_window)


# ----------------------------------------------------------------------------- VOI stage


def voi_output(image: LoadedImage, voi: Voi, values: np.ndarray) -> np.ndarray:
    """VOI stage of modality ``values`` as float64 in [0, 1] (0 = lowest output)."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_voi, apply_windowing

    if isinstance(voi, FileVoiLut):
        ds = image.dataset
        item = ds.VOILUTSequence[voi.item]
        bits = int(item.LUTDescriptor[2])
        # A VOI LUT is indexed by integer input values (C.11.2.1.1).
        out = apply_voi(np.floor(values).astype(np.int64), ds, index=voi.item)
        return out.astype(np.float64) / float((1 << bits) - 1)
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"  # presentation is applied after this stage
    ds.PixelRepresentation = 0
    ds.BitsStored = _WINDOW_BITS  # pydicom's output range: [0, 2**16 - 1]
    ds.WindowCenter = float(voi.center)
    ds.WindowWidth = float(_valid_width(voi))
    ds.VOILUTFunction = voi.function
    out = apply_windowing(np.asarray(values, dtype=np.float64), ds)
    return out / float((1 << _WINDOW_BITS) - 1)


def _valid_width(voi: Window) -> float:
    # LINEAR needs width >= 1 (C.11.2.1.2.1); LINEAR_EXACT and SIGMOID need width > 0.
    return max(voi.width, 1.0) if voi.function == "LINEAR" else max(voi.width, 1e-6)


def display_table(image: LoadedImage, state: DisplayState) -> np.ndarray:
    """``uint8`` display value of every entry of ``image.modality_table`` (255 = white)."""
    assert image.modality_table is not None
    return _to_uint8(voi_output(image, state.voi, image.modality_table), image, state)


def _to_uint8(norm: np.ndarray, image: LoadedImage, state: DisplayState) -> np.ndarray:
    out = np.rint(np.clip(norm, 0.0, 1.0) * 255.0).astype(np.uint8)
    if image.is_monochrome1 != state.inverted:  # MONOCHROME1 (C.7.6.3.1.2), then the toggle
        np.subtract(255, out, out=out)
    return out


def render(image: LoadedImage, state: DisplayState, table: np.ndarray | None = None) -> np.ndarray:
    """The displayed ``uint8`` image, ``rows x columns`` (C-contiguous)."""
    if image.index is None:  # float data: window every pixel (rare for radiographs)
        assert image.float_values is not None
        return _to_uint8(voi_output(image, state.voi, image.float_values), image, state)
    if table is None:
        table = display_table(image, state)
    return apply_table(table, image.index)


#: Pixels per gather: small enough that numpy's index temporaries stay in cache.
_CHUNK_PIXELS = 1 << 17


def apply_table(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` in row bands: about twice as fast as one gather on a large image."""
    out = np.empty(index.shape, dtype=table.dtype)
    if index.ndim != 2 or index.size <= _CHUNK_PIXELS:
        np.take(table, index, out=out)
        return out
    rows = max(1, _CHUNK_PIXELS // max(index.shape[1], 1))
    for r in range(0, index.shape[0], rows):
        np.take(table, index[r:r + rows], out=out[r:r + rows])
    return out


def thumbnail(image: LoadedImage, size: int = 128, state: DisplayState | None = None) -> np.ndarray:
    """A small ``uint8`` rendering (longest side about ``size``), area-averaged."""
    full = render(image, state or default_state(image))
    k = max(1, max(full.shape) // size)
    h, w = (full.shape[0] // k) * k, (full.shape[1] // k) * k
    if k == 1 or h == 0 or w == 0:
        return np.ascontiguousarray(full)
    blocks = full[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    return np.rint(blocks).astype(np.uint8)


# ----------------------------------------------------------------------------- presets


#: Radiograph presets: (centre, width) as fractions of the robust data range,
#: in display brightness (0 = black), so they read the same for MONOCHROME1.
PRESET_FRACTIONS: dict[str, tuple[float, float]] = {
    "Lung": (0.40, 0.70),
    "Soft tissue": (0.60, 0.45),
    "Bone": (0.75, 0.55),
}


def presets(image: LoadedImage) -> dict[str, Voi]:
    """Named VOI settings: the file's own, radiograph presets and the full data range."""
    out: dict[str, Voi] = {}
    for i in range(image.voi_lut_count):
        label = ""
        item = image.dataset.VOILUTSequence[i]
        if "LUTExplanation" in item:
            label = str(item.LUTExplanation).strip()
        out[f"File VOI LUT {i + 1}" + (f": {label}" if label else "")] = FileVoiLut(i)
    for i, w in enumerate(image.file_windows):
        out[f"File window {i + 1}" + (f": {w.explanation}" if w.explanation else "")] = w
    if not out:
        out["Default"] = image.default_window
    lo, hi = image.robust_range
    span = max(hi - lo, 1e-6)
    for name, (center, width) in PRESET_FRACTIONS.items():
        if image.is_monochrome1:  # low values display white: mirror the centre
            center = 1.0 - center
        out[name] = Window(lo + center * span, width * span)
    out["Full range"] = range_window(*image.full_range)
    return out


def window_equivalent(image: LoadedImage, voi: Voi) -> Window:
    """A window close to ``voi``: the starting point when the user adjusts a VOI LUT."""
    if isinstance(voi, Window):
        return voi
    item = image.dataset.VOILUTSequence[voi.item]
    entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
    return replace(range_window(first, first + entries - 1), explanation="from VOI LUT")
