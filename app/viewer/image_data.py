"""Decoded images for the viewer: stored values, the Modality LUT, the file's VOI settings.

The viewer re-windows interactively, so it keeps what comes *before* the VOI
stage of the grayscale pipeline (PS3.4 N.2, PS3.3 C.11): the stored values and
the Modality LUT output (Rescale Slope / Intercept or a Modality LUT Sequence,
PS3.3 C.11.1), plus the file's own VOI settings (Window Center / Width with
the VOI LUT Function, or a VOI LUT Sequence, PS3.3 C.11.2).

Stored values are integers, so the Modality LUT is evaluated once per
*distinct* stored value: ``modality_table[k]`` is the modality value of
stored value ``stored_min + k`` and ``index`` holds ``stored - stored_min``.
Any pointwise stage after it (windowing, a VOI LUT, inversion) then becomes
one table of at most 65,536 entries applied with a single gather, which is
what makes window/level fast (see :mod:`app.viewer.display`).

Everything here runs off the GUI thread (:class:`app.viewer.loader.ImageLoader`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.multival import MultiValue

from core_model.imaging import codestream_problem

#: Images larger than this are refused before decoding (decompression bombs).
MAX_PIXELS = 100_000_000
#: Above this many distinct stored values the table path is not used.
_MAX_TABLE = 1 << 17
#: The default window when a file has no VOI settings: these percentiles of the data.
DEFAULT_PERCENTILES = (0.5, 99.5)

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class ViewerError(ValueError):
    """An image cannot be shown; ``str(error)`` is one line for the user."""


@dataclass(frozen=True)
class Window:
    """A VOI window, PS3.3 C.11.2.1.2: centre, width and VOI LUT Function."""

    center: float
    width: float
    function: str = "LINEAR"  # LINEAR, LINEAR_EXACT or SIGMOID (C.11.2.1.3)
    explanation: str = ""


@dataclass(frozen=True)
class PixelSpacing:
    """Physical size of a pixel in mm, (row spacing, column spacing)."""

    row: float
    column: float
    #: "PixelSpacing" (patient plane, PS3.3 10.7.1.1) or "ImagerPixelSpacing"
    #: (detector plane, not corrected for geometric magnification).
    source: str


@dataclass(eq=False)
class LoadedImage:
    """One decoded grayscale image, ready for the display pipeline.

    ``index`` (``uint8`` or ``uint16``, ``rows x columns``) and
    ``modality_table`` (float64) describe integer data; for data with too many
    distinct values (float pixel data, 32-bit integers) ``index`` is ``None``
    and ``float_values`` holds the modality values directly.
    """

    source: str
    rows: int
    columns: int
    photometric: str  # MONOCHROME1 or MONOCHROME2
    bits_stored: int
    transfer_syntax: str  # UID, "" for picture files
    transfer_syntax_name: str
    index: np.ndarray | None
    stored_min: int
    modality_table: np.ndarray | None
    float_values: np.ndarray | None = None
    #: Windows from the file (Window Center / Width), in file order.
    file_windows: tuple[Window, ...] = ()
    #: Number of VOI LUT Sequence items (PS3.3 C.11.2.1.1).
    voi_lut_count: int = 0
    #: Window used when the file has no VOI settings: robust data range.
    data_window: Window = field(default_factory=lambda: Window(128.0, 256.0))
    #: Robust (0.5th, 99.5th percentile) and full (min, max) modality value ranges.
    robust_range: tuple[float, float] = (0.0, 255.0)
    full_range: tuple[float, float] = (0.0, 255.0)
    pixel_spacing: PixelSpacing | None = None
    #: (group, field, value) rows for the metadata panel, in display order.
    metadata: list[tuple[str, str, str]] = field(default_factory=list)
    #: The header without pixel data, for the VOI LUT Sequence (None for pictures).
    dataset: Any = field(default=None, repr=False)
    is_picture: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.columns

    @property
    def is_monochrome1(self) -> bool:
        return self.photometric == "MONOCHROME1"

    @property
    def default_window(self) -> Window:
        """The file's first window, else the robust data range."""
        return self.file_windows[0] if self.file_windows else self.data_window

    @cached_property
    def values(self) -> np.ndarray:
        """Modality LUT output as float32 ``rows x columns`` (computed on first use)."""
        if self.index is None:
            assert self.float_values is not None
            return self.float_values.astype(np.float32, copy=False)
        assert self.modality_table is not None
        return self.modality_table.astype(np.float32)[self.index]


# ----------------------------------------------------------------------------- loading


def load_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Decode a DICOM, PNG or JPEG file; :class:`ViewerError` with one line if it cannot be shown."""
    path = Path(path)
    if not path.is_file():
        raise ViewerError(f"{path.name}: no such file")
    try:
        if path.suffix.lower() in _PICTURE_SUFFIXES and not _has_dicm_prefix(path):
            return load_picture(path)
        return load_dicom(path)
    except ViewerError:
        raise
    except MemoryError as exc:
        raise ViewerError(f"{path.name}: not enough memory to decode the image") from exc
    except Exception as exc:  # decoders raise many types; the user gets one line
        raise ViewerError(f"{path.name}: cannot be opened ({_one_line(exc)})") from exc


def _has_dicm_prefix(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load_dicom(path: str | os.PathLike[str]) -> LoadedImage:
    """A grayscale DICOM image (first frame of a multi-frame one)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    name = path.name
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise ViewerError(f"{name}: not a DICOM file") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ViewerError(f"{name}: unreadable or truncated DICOM header ({_one_line(exc)})") from exc
    return dataset_to_image(ds, name)


def dataset_to_image(ds: Any, name: str = "DICOM") -> LoadedImage:
    """A :class:`LoadedImage` from a pydicom ``Dataset`` holding pixel data."""
    from pydicom.pixels import apply_modality_lut

    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ViewerError(f"{name}: the DICOM file holds no image (no Pixel Data)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in GRAYSCALE:
        raise ViewerError(f"{name}: photometric interpretation {photometric or '(missing)'} is not "
                          "a grayscale radiograph (MONOCHROME1 or MONOCHROME2)")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if rows <= 0 or columns <= 0:
        raise ViewerError(f"{name}: the header gives no image size (Rows x Columns)")
    _check_size(name, rows, columns, frames * samples)
    problem = codestream_problem(ds)
    if problem:
        raise ViewerError(f"{name}: {problem}")
    if frames > 1:
        ds.pixel_array_options(index=0)  # decode the first frame only
    try:
        stored = ds.pixel_array
    except Exception as exc:  # truncated data, unsupported compression, ...
        raise ViewerError(f"{name}: the pixel data cannot be decoded ({_one_line(exc)})") from exc
    if stored.ndim == 3 and stored.shape[0] == 1:
        stored = stored[0]
    if stored.shape != (rows, columns):
        raise ViewerError(f"{name}: expected one {rows} x {columns} grayscale frame, "
                          f"decoded shape {stored.shape}")

    syntax = ds.file_meta.get("TransferSyntaxUID", "") if hasattr(ds, "file_meta") else ""

    if np.issubdtype(stored.dtype, np.integer) and stored.size:
        lo, hi = int(stored.min()), int(stored.max())
    else:
        lo = hi = 0
    if np.issubdtype(stored.dtype, np.integer) and hi - lo < _MAX_TABLE:
        if stored.dtype.kind == "u" and stored.dtype.itemsize <= 2:
            index = stored - stored.dtype.type(lo) if lo else stored
        else:  # signed or wide integers: subtract in int64 so nothing wraps
            index = stored.astype(np.int64) - lo
        index = index.astype(np.uint8 if hi - lo < 256 else np.uint16, copy=False)
        domain = np.arange(lo, hi + 1, dtype=np.int64)
        table = np.asarray(apply_modality_lut(domain, ds), dtype=np.float64).reshape(-1)
        float_values = None
        robust, full = _table_ranges(index, table)
    else:
        index, table = None, None
        float_values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
        finite = float_values[np.isfinite(float_values)]
        if finite.size == 0:
            raise ViewerError(f"{name}: the image holds no finite values")
        p_lo, p_hi = np.percentile(finite, DEFAULT_PERCENTILES)
        robust, full = (float(p_lo), float(p_hi)), (float(finite.min()), float(finite.max()))

    return LoadedImage(
        source=name,
        rows=rows,
        columns=columns,
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored", stored.dtype.itemsize * 8) or 0),
        transfer_syntax=str(syntax),
        transfer_syntax_name=getattr(syntax, "name", str(syntax)),
        index=index,
        stored_min=lo,
        modality_table=table,
        float_values=float_values,
        file_windows=_file_windows(ds),
        voi_lut_count=_voi_lut_count(ds),
        data_window=range_window(*robust),
        robust_range=robust,
        full_range=full,
        pixel_spacing=_pixel_spacing(ds),
        metadata=dicom_metadata(ds, name),
        dataset=_without_pixels(ds),
    )


def _without_pixels(ds: Any) -> Any:
    """The header alone: the encoded pixel data is not needed once decoded."""
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def load_picture(path: str | os.PathLike[str]) -> LoadedImage:
    """A PNG / JPEG file: 8-bit grayscale (16-bit PNGs keep their 16 bits), window 0..255."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    name = path.name
    try:
        with Image.open(path) as im:
            width, height = im.size
            _check_size(name, height, width, 1)  # before decoding: a bomb is refused unread
            mode = im.mode
            im.load()
            if mode in ("I;16", "I;16B", "I;16L"):
                arr = np.asarray(im, dtype=np.uint16)
                bits = 16
            else:
                arr = np.asarray(im.convert("L"), dtype=np.uint8)
                bits = 8
    except ViewerError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own, lower, limit caught it first
        raise ViewerError(f"{name}: refusing to decode an image this large ({_one_line(exc)})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ViewerError(f"{name}: not a readable image ({_one_line(exc)})") from exc
    lo = 0
    table = np.arange(1 << bits, dtype=np.float64)
    index = arr
    robust, full = _table_ranges(index, table)
    data_window = Window(128.0, 256.0, explanation="0-255") if bits == 8 else range_window(*robust)
    metadata = [
        ("File", "Name", name),
        ("File", "Format", f"{path.suffix.lstrip('.').upper()} ({mode})"),
        ("Image", "Rows x Columns", f"{height} x {width}"),
        ("Image", "Bits", str(bits)),
        ("Image", "Photometric interpretation", "MONOCHROME2 (picture file)"),
        ("Image", "Pixel spacing", "not recorded"),
    ]
    return LoadedImage(
        source=name, rows=height, columns=width, photometric="MONOCHROME2", bits_stored=bits,
        transfer_syntax="", transfer_syntax_name=path.suffix.lstrip(".").upper(),
        index=index, stored_min=lo, modality_table=table, data_window=data_window,
        robust_range=robust, full_range=full, metadata=metadata, is_picture=True,
    )


def _check_size(name: str, rows: int, columns: int, planes: int) -> None:
    total = rows * columns * max(planes, 1)
    if total > MAX_PIXELS:
        raise ViewerError(f"{name}: refusing to decode a {columns} x {rows} image "
                          f"({total / 1e6:,.0f} megapixels; the limit is {MAX_PIXELS / 1e6:,.0f})")


# ----------------------------------------------------------------------------- windows


def range_window(lo: float, hi: float) -> Window:
    """The LINEAR window that maps ``lo`` to black and ``hi`` to white (PS3.3 C.11.2.1.2.1).

    For integer data, ``lo..hi`` inclusive spans ``hi - lo + 1`` values, so
    ``width = hi - lo + 1`` and ``center = (lo + hi + 1) / 2``: 0..255 gives
    the familiar C 128 / W 256, an identity on 8-bit data.
    """
    return Window(center=(lo + hi + 1.0) / 2.0, width=max(hi - lo + 1.0, 1.0))


def _table_ranges(index: np.ndarray, table: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile and full ranges of ``table[index]`` from a histogram of ``index``."""
    counts = np.bincount(index.ravel(), minlength=table.size)[: table.size]
    present = counts > 0
    if not present.any():
        return (0.0, 1.0), (0.0, 1.0)
    order = np.argsort(table, kind="stable")  # a Modality LUT Sequence need not be monotonic
    sorted_values, cum = table[order], np.cumsum(counts[order])
    total = cum[-1]
    lo_q, hi_q = (total * p / 100.0 for p in DEFAULT_PERCENTILES)
    p_lo = float(sorted_values[min(np.searchsorted(cum, lo_q, side="right"), table.size - 1)])
    p_hi = float(sorted_values[min(np.searchsorted(cum, hi_q, side="left"), table.size - 1)])
    values = table[present]
    return (p_lo, p_hi), (float(values.min()), float(values.max()))


def _multi(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | MultiValue):
        return list(value)
    return [value]


def _file_windows(ds: Any) -> tuple[Window, ...]:
    centers = _multi(ds.get("WindowCenter"))
    widths = _multi(ds.get("WindowWidth"))
    explanations = _multi(ds.get("WindowCenterWidthExplanation"))
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    out = []
    for i, (c, w) in enumerate(zip(centers, widths, strict=False)):
        try:
            center, width = float(c), float(w)
        except (TypeError, ValueError):
            continue
        minimum = 1.0 if function == "LINEAR" else 0.0
        if not np.isfinite(center) or not np.isfinite(width) or width < minimum or width <= 0:
            continue  # an invalid window is skipped rather than shown wrongly
        label = str(explanations[i]).strip() if i < len(explanations) else ""
        out.append(Window(center, width, function, label))
    return tuple(out)


def _voi_lut_count(ds: Any) -> int:
    seq = ds.get("VOILUTSequence")
    if not seq:
        return 0
    return sum(1 for item in seq if "LUTDescriptor" in item and "LUTData" in item)


def _pixel_spacing(ds: Any) -> PixelSpacing | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _multi(ds.get(keyword))
        if len(values) == 2:
            try:
                row, col = float(values[0]), float(values[1])
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col):
                return PixelSpacing(row, col, keyword)
    return None


# ----------------------------------------------------------------------------- metadata


_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("Patient", "Name", "PatientName"),
    ("Patient", "ID", "PatientID"),
    ("Patient", "Birth date", "PatientBirthDate"),
    ("Patient", "Sex", "PatientSex"),
    ("Patient", "Age", "PatientAge"),
    ("Study", "Date", "StudyDate"),
    ("Study", "Time", "StudyTime"),
    ("Study", "Description", "StudyDescription"),
    ("Study", "Accession number", "AccessionNumber"),
    ("Study", "Study instance UID", "StudyInstanceUID"),
    ("Series", "Modality", "Modality"),
    ("Series", "Description", "SeriesDescription"),
    ("Series", "Number", "SeriesNumber"),
    ("Series", "Body part", "BodyPartExamined"),
    ("Series", "Series instance UID", "SeriesInstanceUID"),
    ("Image", "View position", "ViewPosition"),
    ("Image", "Instance number", "InstanceNumber"),
    ("Image", "Photometric interpretation", "PhotometricInterpretation"),
    ("Image", "Presentation LUT shape", "PresentationLUTShape"),
    ("Image", "Bits allocated", "BitsAllocated"),
    ("Image", "Bits stored", "BitsStored"),
    ("Image", "Pixel representation", "PixelRepresentation"),
    ("Image", "Rescale slope", "RescaleSlope"),
    ("Image", "Rescale intercept", "RescaleIntercept"),
    ("Image", "Window center", "WindowCenter"),
    ("Image", "Window width", "WindowWidth"),
    ("Image", "VOI LUT function", "VOILUTFunction"),
    ("Image", "SOP class UID", "SOPClassUID"),
)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(_text(v) for v in value)
    name = getattr(value, "name", None)  # a UID's registered name
    text = str(value).strip()
    return f"{name} ({text})" if isinstance(name, str) and name and name != text else text


def dicom_metadata(ds: Any, name: str) -> list[tuple[str, str, str]]:
    """Rows for the metadata panel: patient, study, series and image attributes."""
    rows: list[tuple[str, str, str]] = [("File", "Name", name)]
    for group, label, keyword in _FIELDS:
        if keyword in ds:
            text = _text(ds.get(keyword))
            if text:
                rows.append((group, label, text))
    rows.insert(_after(rows, "Image", "Photometric interpretation"),
                ("Image", "Rows x Columns", f"{ds.get('Rows', '?')} x {ds.get('Columns', '?')}"))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        rows.append(("Image", "Frames", f"{frames} (showing the first)"))
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax:
        rows.append(("Image", "Transfer syntax", _text(syntax)))
    spacing = _pixel_spacing(ds)
    if spacing is None:
        rows.append(("Image", "Pixel spacing", "not recorded"))
    else:
        where = "patient plane" if spacing.source == "PixelSpacing" else "detector plane"
        rows.append(("Image", "Pixel spacing",
                     f"{spacing.row:g} x {spacing.column:g} mm ({spacing.source}, {where})"))
    if ds.get("VOILUTSequence"):
        rows.append(("Image", "VOI LUT sequence", f"{len(ds.VOILUTSequence)} item(s)"))
    return rows


def _after(rows: list[tuple[str, str, str]], group: str, label: str) -> int:
    for i, (g, f, _) in enumerate(rows):
        if g == group and f == label:
            return i + 1
    return len(rows)
