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
        try:
            return dicom_display(ds, source=str(path))
        except ImageReadError:
            raise
        except Exception as exc:  # pydicom parses values lazily: a corrupt element fails here
            detail = " ".join(str(exc).split())[:120] or type(exc).__name__
            raise ImageReadError(f"{path}: the DICOM header is corrupt ({detail})") from exc
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
    problem = codestream_problem(ds)
    if problem:
        raise ImageReadError(f"{source}: {problem}")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise many types; one line for the user
        detail = " ".join(str(exc).split())  # pydicom lists each plugin's failure on its own line
        raise ImageReadError(f"{source}: pixel data cannot be decoded ({type(exc).__name__}: {detail})") from exc
    if stored.ndim != 2:
        if stored.ndim == 3 and header_number(ds, "NumberOfFrames", source, default=1) > 1:
            stored = stored[0]
        else:
            raise ImageReadError(f"{source}: expected a single grayscale frame, got shape {stored.shape}")
    # every header value used below is checked where it is read: a corrupt one is a clear error
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            header_number(ds, keyword, source)
    try:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise ImageReadError(f"{source}: the Modality LUT cannot be applied ({exc})") from exc
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        lut = ds.VOILUTSequence[0]
        try:
            out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            raise ImageReadError(f"{source}: the VOI LUT cannot be applied ({exc})") from exc
        bits = header_number(lut, "LUTDescriptor", source, default=16, index=2)
        if not 1 <= bits <= 32:
            raise ImageReadError(f"{source}: VOI LUT descriptor says {bits:g} bits per entry")
        display = out / float((1 << int(bits)) - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = header_number(ds, "WindowCenter", source)
        width = header_number(ds, "WindowWidth", source)
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        display = window(values, center, width, function)
    else:
        lo, hi = float(values.min()), float(values.max())
        display = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    display = np.clip(display, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        display = 1.0 - display
    return display.astype(np.float32)


#: JPEG SOFn markers (not DHT C4, JPG C8, DAC CC) and JPEG-LS SOF55 (F7).
_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                          0xCF, 0xF7))


def codestream_problem(ds) -> str | None:  # noqa: ANN001 - pydicom Dataset
    """Why compressed pixel data must not be decoded, or None.

    A JPEG, JPEG-LS or JPEG 2000 decoder allocates the image its codestream
    declares, not the Rows x Columns of the header, so a small file whose
    codestream claims 65,000 x 65,000 pixels would take gigabytes before
    failing.  Such data is refused unread.
    """
    from pydicom.encaps import generate_fragments
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax or not UID(syntax).is_encapsulated or "PixelData" not in ds:
        return None
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        return "the header's Rows / Columns are not numbers (corrupt file)"
    try:
        for fragment in generate_fragments(ds.PixelData):
            size = codestream_size(fragment)
            if size is not None and size[0] * size[1] > rows * columns:
                return (f"the compressed pixel data declares a {size[1]} x {size[0]} image, the "
                        f"header {columns} x {rows}; not decoded (decompression-bomb guard)")
    except Exception:  # broken encapsulation: the decoder says what is wrong
        return None
    return None


def codestream_size(data: bytes) -> tuple[int, int] | None:
    """(rows, columns) declared by a JPEG, JPEG-LS or JPEG 2000 codestream; None for other data."""
    if data[:2] == b"\xff\xd8":  # JPEG / JPEG-LS: the frame header (SOFn / SOF55)
        pos = 2
        while pos + 9 <= len(data) and data[pos] == 0xFF:
            marker = data[pos + 1]
            if marker == 0xFF:  # a fill byte
                pos += 1
            elif marker in _SOF_MARKERS:
                return int.from_bytes(data[pos + 5 : pos + 7], "big"), int.from_bytes(data[pos + 7 : pos + 9], "big")
            elif marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
                return None
            else:
                pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        return None
    start = 0
    if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":  # a JP2 file: find its codestream box
        pos, start = 0, -1
        while pos + 8 <= len(data):
            length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
            header = 8
            if length == 1 and pos + 16 <= len(data):
                length, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
            if kind == b"jp2c":
                start = pos + header
                break
            if length < header:
                return None
            pos += length
        if start < 0:
            return None
    if data[start : start + 4] != b"\xff\x4f\xff\x51" or len(data) < start + 24:  # SOC, SIZ
        return None
    x, y, x0, y0 = (int.from_bytes(data[start + 8 + 4 * i : start + 12 + 4 * i], "big") for i in range(4))
    return max(y - y0, 0), max(x - x0, 0)


def header_number(ds, keyword: str, source: str, *, default: float | None = None,  # noqa: ANN001
                  index: int = 0) -> float:
    """A numeric header value (the ``index``-th of a multi-valued one), checked where it is read.

    A missing or empty value gives ``default`` (an error when there is none); a value
    that is present but not a finite number (a corrupt file: ``'0.0!'``) is a one-line
    :class:`ImageReadError` naming the attribute, never a numpy error later on.
    """
    try:
        value = ds.get(keyword)
    except Exception as exc:  # an element pydicom cannot parse (a corrupt VR or value)
        raise ImageReadError(f"{source}: the header's {keyword} cannot be read "
                             f"({' '.join(str(exc).split())[:80]})") from exc
    if value is None or value == "":
        if default is None:
            raise ImageReadError(f"{source}: the header has no {keyword}")
        return float(default)
    if not isinstance(value, str | bytes):
        try:
            value = list(value)[index]
        except TypeError:
            pass
        except IndexError:
            raise ImageReadError(f"{source}: {keyword} has no value {index + 1}") from None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ImageReadError(f"{source}: the header's {keyword} {str(value)[:32]!r} is not a "
                             "number (corrupt file)") from None
    if not np.isfinite(number):
        raise ImageReadError(f"{source}: the header's {keyword} is not a finite number")
    return number


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

