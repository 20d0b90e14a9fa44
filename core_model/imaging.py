"""Images as Concord reads them: DICOM display as the standard says, and plain image files.

:func:`dicom_display` follows PS3.3 / PS3.4's grayscale pipeline: stored values
-> Modality LUT (Rescale Slope / Intercept or a Modality LUT Sequence) -> VOI LUT
(a VOI LUT Sequence, else Window Center / Width with the VOI LUT Function,
PS3.3 C.11.2.1.2; else the full range of the data) -> presentation, where
MONOCHROME1 is inverted (low values display white).  The result is a float32
array in [0, 1] where 1 is white on the display, whatever the file's bit depth
or photometry.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class ImageReadError(ValueError):
    """An image file cannot be read or displayed; the message says why in one line."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Any supported file (DICOM, JPEG, PNG) as a display image in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".dcm", ".dicom", "") or _looks_like_dicom(path):
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise ImageReadError(f"{path}: not a readable DICOM file ({exc})") from exc
        return dicom_display(ds, source=str(path))
    return read_picture(path)


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_picture(path: str | os.PathLike[str]) -> np.ndarray:
    """A PNG / JPEG file as grayscale display values in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
                return (arr / top).astype(np.float32)
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc


def dicom_display(ds, source: str = "DICOM") -> np.ndarray:  # noqa: ANN001 - pydicom Dataset
    """The displayed picture of a single-frame grayscale DICOM image, in [0, 1]."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(f"{source}: the DICOM file has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(
            f"{source}: photometric interpretation {photometric or '(missing)'} is not a grayscale "
            "radiograph (MONOCHROME1 or MONOCHROME2)"
        )
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise many types; one line for the user
        raise ImageReadError(f"{source}: pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
    if stored.ndim != 2:
        if stored.ndim == 3 and int(ds.get("NumberOfFrames", 1) or 1) > 1:
            stored = stored[0]
        else:
            raise ImageReadError(f"{source}: expected a single grayscale frame, got shape {stored.shape}")
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        lut = ds.VOILUTSequence[0]
        out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
        bits = int(lut.LUTDescriptor[2]) if "LUTDescriptor" in lut else 16
        display = out / float((1 << bits) - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = _first(ds.WindowCenter)
        width = _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        display = window(values, center, width, function)
    else:
        lo, hi = float(values.min()), float(values.max())
        display = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    display = np.clip(display, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        display = 1.0 - display
    return display.astype(np.float32)


def _first(value) -> float:  # noqa: ANN001 - DS or a multi-valued DS
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """VOI windowing to [0, 1] per PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT, SIGMOID)."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-9)))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ImageReadError("window width must be positive for LINEAR_EXACT")
        return (values - (center - width / 2.0)) / width
    if width < 1:
        width = 1.0
    # C.11.2.1.2.1: ((x - (c - 0.5)) / (w - 1) + 0.5) scaled to the output range.
    out = (values - (center - 0.5)) / (width - 1.0) + 0.5
    return np.where(values <= center - 0.5 - (width - 1) / 2, 0.0,
                    np.where(values > center - 0.5 + (width - 1) / 2, 1.0, out))

