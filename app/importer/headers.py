"""One DICOM file's header, read and checked without decoding a pixel.

:func:`read_header` returns an :class:`ImageHeader` with what the catalogue
keeps about an image, or a :class:`Rejection` whose ``reason`` is one line a
user can act on.  It never raises for a bad file and never writes to it.

Bounds: the header is read with ``stop_before_pixels=True`` and values above
:data:`DEFER_BYTES` are left on disk (``defer_size``), so memory per file is
small whatever the file holds.  The pixel data is never read; its element
header is, so a file cut short inside its pixels is caught
(:func:`_check_pixel_data`).
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom import uid as dicom_uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

#: Images larger than this (Rows x Columns x frames) are refused unread: a
#: decompression-bomb guard; chest radiographs are at most about 4,300 x 4,300.
MAX_PIXELS = 100_000_000
#: Header values longer than this stay on disk while the header is read.
DEFER_BYTES = 64 * 1024
#: A deflated data set is inflated whole before its header can be read; one that inflates
#: to more than this (the largest image MAX_PIXELS admits, 16-bit, plus room for the
#: header) is refused unread: a zip-bomb guard.
MAX_INFLATED = 2 * MAX_PIXELS + 64 * 1024 * 1024

#: Storage SOP classes of projection radiographs Concord can display (PS3.4 B.5).
IMAGE_SOP_CLASSES = frozenset(
    {
        dicom_uid.ComputedRadiographyImageStorage,
        dicom_uid.DigitalXRayImageStorageForPresentation,
        dicom_uid.DigitalXRayImageStorageForProcessing,
        dicom_uid.SecondaryCaptureImageStorage,
        dicom_uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        dicom_uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    }
)
#: Syntaxes whose data set is deflated: the file offset of the pixel data is not known.
_DEFLATED = frozenset({dicom_uid.DeflatedExplicitVRLittleEndian})
_PIXEL_DATA = 0x7FE00010
_UID_PATTERN = re.compile(r"[0-9.]{1,64}")
# Explicit VR elements with a 4-byte length (PS3.5 7.1.2): the header is 12 bytes.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())


@dataclass(frozen=True)
class ImageHeader:
    """What the catalogue records about one image file (read from its header)."""

    path: str
    study_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    rows: int
    columns: int
    frames: int
    photometric_interpretation: str
    view_position: str
    pixel_spacing: tuple[float, float] | None
    patient: dict[str, Any] = field(default_factory=dict)  # DICOM keywords, validated
    study: dict[str, Any] = field(default_factory=dict)  # DICOM keywords, validated
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rejection:
    """A file that was not imported, and why (one line)."""

    path: str
    reason: str

    def __post_init__(self) -> None:
        # Reasons quote values from damaged headers: keep them one printable line.
        object.__setattr__(self, "reason", one_line(self.reason))


def read_header(path: str | os.PathLike[str]) -> ImageHeader | Rejection:
    """Read and check one file's DICOM header; never raises for a bad file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            return Rejection(str(path), "not a regular file")
        if size == 0:
            return Rejection(str(path), "empty file")
        with open(path, "rb") as fp:
            return _read(path, fp, size)
    except PermissionError as exc:
        return Rejection(str(path), f"unreadable: permission denied ({exc.strerror})")
    except OSError as exc:
        return Rejection(str(path), f"unreadable: {exc.strerror or exc}")
    except MemoryError:
        return Rejection(str(path), "unreadable: the header does not fit in memory")
    except Exception as exc:  # pydicom raises many types on corrupt data; one line each
        return Rejection(str(path), f"corrupt header ({type(exc).__name__}: {_short(exc)})")


def _read(path: Path, fp: BinaryIO, size: int) -> ImageHeader | Rejection:
    def reject(reason: str) -> Rejection:
        return Rejection(str(path), reason)

    if _inflates_beyond(fp, MAX_INFLATED):
        return reject(f"deflated data set inflates to more than {MAX_INFLATED // 1_000_000} MB "
                      "(zip-bomb guard)")
    fp.seek(0)
    try:
        ds = dcmread(fp, stop_before_pixels=True, force=False, defer_size=DEFER_BYTES)
    except InvalidDicomError:
        if size < 132:
            return reject(f"not a DICOM file ({size} bytes, too short for the DICOM preamble)")
        return reject("not a DICOM file (no 'DICM' marker after the 128-byte preamble)")
    except (EOFError, struct.error):
        return reject("truncated header (the file ends inside the file meta information)")
    header_end = fp.tell()
    # Reading stops before (7FE0,0010); reaching the end of the file instead means the
    # file was cut short or has no pixels (a deflated data set is read into memory first).
    meta = ds.file_meta if hasattr(ds, "file_meta") else Dataset()
    syntax = _text(meta, "TransferSyntaxUID")
    ended = header_end >= size and syntax not in _DEFLATED
    if not syntax:
        if ended:
            return reject("truncated header: the file ends inside the file meta information")
        return reject("no transfer syntax in the file meta information")
    problem = _syntax_problem(syntax)
    if problem:
        return reject(problem)
    sop_class = _text(ds, "SOPClassUID") or _text(meta, "MediaStorageSOPClassUID")
    if not sop_class:
        return reject("no SOP class UID: cannot tell what the file holds")
    if sop_class not in IMAGE_SOP_CLASSES:
        return reject(f"unsupported SOP class {_uid_name(sop_class)} (not a radiograph image)")
    if ended:
        return reject(
            "no pixel data: the file ends before a Pixel Data element (truncated or corrupt)"
        )

    study_uid = _text(ds, "StudyInstanceUID")
    if not study_uid:
        return reject("missing StudyInstanceUID")
    if not _UID_PATTERN.fullmatch(study_uid):
        return reject(f"invalid StudyInstanceUID {study_uid[:70]!r}")
    sop_uid = _text(ds, "SOPInstanceUID") or _text(meta, "MediaStorageSOPInstanceUID")
    if not sop_uid:
        return reject("missing SOPInstanceUID")
    if not _UID_PATTERN.fullmatch(sop_uid):
        return reject(f"invalid SOPInstanceUID {sop_uid[:70]!r}")

    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not columns or rows < 0 or columns < 0:
        return reject("no image size (Rows / Columns missing or zero): not an image")
    frames = _int(ds, "NumberOfFrames") or 1
    if frames < 0:
        return reject(f"corrupt header (Number of Frames {frames})")
    if rows * columns * frames > MAX_PIXELS:
        return reject(
            f"declared image of {columns} x {rows} pixels x {frames} frame(s) exceeds the "
            f"{MAX_PIXELS // 1_000_000}-megapixel limit (decompression-bomb guard)"
        )
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return reject(
            f"photometric interpretation {photometric or 'missing'!r}: not a grayscale "
            "radiograph (MONOCHROME1 or MONOCHROME2)"
        )
    if syntax not in _DEFLATED:
        problem = _check_pixel_data(ds, fp, header_end, size, rows, columns, frames)
        if problem:
            return reject(problem)

    warnings: list[str] = []
    return ImageHeader(
        path=str(path),
        study_instance_uid=study_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        transfer_syntax_uid=syntax,
        rows=rows,
        columns=columns,
        frames=frames,
        photometric_interpretation=photometric,
        view_position=_clean(ds, "ViewPosition", 16, warnings).upper(),
        pixel_spacing=_spacing(ds),
        patient=_patient(ds, warnings),
        study=_study(ds, warnings),
        warnings=tuple(warnings),
    )


def _inflates_beyond(fp: BinaryIO, limit: int) -> bool:
    """Whether a deflated data set (by its file meta) inflates to more than ``limit`` bytes.

    The file meta is walked by hand and the data set inflated in 1 MB pieces that are
    counted and dropped, so memory stays small whatever the file would inflate to.
    """
    fp.seek(132)
    syntax = b""
    while True:
        head = fp.read(8)
        if len(head) < 8 or head[:2] != b"\x02\x00":  # the end of group 0002
            break
        if head[4:6] in _LONG_VRS:
            extra = fp.read(4)
            length = struct.unpack("<I", extra)[0] if len(extra) == 4 else 0
        else:
            length = struct.unpack("<H", head[6:8])[0]
        value = fp.read(min(length, 256))
        if head[:4] == b"\x02\x00\x10\x00":  # (0002,0010) Transfer Syntax UID
            syntax = value
        fp.seek(length - len(value), os.SEEK_CUR)
    if syntax.rstrip(b"\x00 ").decode("ascii", "replace") not in _DEFLATED:
        return False
    fp.seek(-len(head), os.SEEK_CUR)  # the first byte of the data set
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := fp.read(1 << 20):
            while chunk:
                total += len(inflater.decompress(chunk, 1 << 20))
                if total > limit:
                    return True
                chunk = inflater.unconsumed_tail
    except zlib.error:
        return False  # not a deflate stream: reading the header says what is wrong
    return False


def _syntax_problem(syntax: str) -> str | None:
    """Why pixels in ``syntax`` cannot be shown here, or None when a decoder is installed."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"unsupported transfer syntax {_uid_name(syntax)}"
    if not decoder.is_available:
        return f"transfer syntax {_uid_name(syntax)} needs a decoder that is not installed"
    return None


def _check_pixel_data(
    ds: Dataset, fp: BinaryIO, at: int, size: int, rows: int, columns: int, frames: int
) -> str | None:
    """Look at the pixel data element's header where reading stopped; read no pixel.

    ``dcmread(stop_before_pixels=True)`` leaves the file positioned at the start
    of the pixel data element ((7FE0,0010), or the float variants, which are not
    radiographs).  For native (uncompressed) syntaxes the declared length must
    match the image size and fit in the file.
    """
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return "corrupt header (encoding of the data set unknown)"
    fp.seek(at)
    head = fp.read(12)
    order = "<" if little else ">"
    if len(head) < 8:
        return "truncated: the file ends inside the Pixel Data element's header"
    group, element = struct.unpack(order + "HH", head[:4])
    if (group << 16 | element) != _PIXEL_DATA:
        return "unsupported pixel data: float or double pixel data is not a radiograph"
    if implicit:
        (length,) = struct.unpack(order + "I", head[4:8])
        start = at + 8
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            return "truncated: the file ends inside the pixel data element"
        (length,) = struct.unpack(order + "I", head[8:12])
        start = at + 12
    else:
        return f"corrupt pixel data element (value representation {head[4:6]!r})"
    if dicom_uid.UID(ds.file_meta.TransferSyntaxUID).is_compressed:
        if length != 0xFFFFFFFF:
            return "corrupt pixel data: compressed pixels must be encapsulated (undefined length)"
        if start + 8 > size:
            return "truncated: the file ends at the start of the compressed pixel data"
        return None
    if length == 0xFFFFFFFF:
        return "corrupt pixel data: uncompressed pixels with an undefined length"
    bits = _int(ds, "BitsAllocated") or 0
    samples = _int(ds, "SamplesPerPixel") or 1
    if bits not in (1, 8, 16, 32):
        return f"unsupported Bits Allocated {bits}"
    expected = math.ceil(rows * columns * frames * samples * bits / 8)
    if length < expected:
        return (
            f"corrupt pixel data: {length} bytes declared for a {columns} x {rows} image "
            f"that needs {expected}"
        )
    if start + expected > size:
        return f"truncated: the pixel data needs {expected} bytes, the file holds {size - start}"
    return None


def _patient(ds: Dataset, warnings: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    patient_id = _clean(ds, "PatientID", 64, warnings)
    if not patient_id:
        return out
    out["PatientID"] = patient_id
    name = _clean(ds, "PatientName", 324, warnings)
    if name:
        out["PatientName"] = name
    sex = _clean(ds, "PatientSex", 16, warnings)
    if sex:
        out["PatientSex"] = sex
    birth = _date(ds, "PatientBirthDate", warnings)
    if birth:
        out["PatientBirthDate"] = birth
    return out


def _study(ds: Dataset, warnings: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for keyword, limit in (("AccessionNumber", 64), ("StudyDescription", 256)):
        value = _clean(ds, keyword, limit, warnings)
        if value:
            out[keyword] = value
    day = _date(ds, "StudyDate", warnings)
    if day:
        out["StudyDate"] = day
    return out


def _clean(ds: Dataset, keyword: str, limit: int, warnings: list[str]) -> str:
    """A descriptive value as printable text; too long or garbled values are left out."""
    value = _text(ds, keyword)
    if not value:
        return ""
    if len(value) > limit or not value.isprintable():
        warnings.append(f"{keyword} is garbled or too long; left empty")
        return ""
    return value


def _date(ds: Dataset, keyword: str, warnings: list[str]) -> str:
    """A DICOM DA value (YYYYMMDD) that is a real date, else empty with a warning."""
    from datetime import date

    value = _text(ds, keyword)
    if not value:
        return ""
    if len(value) == 8 and value.isdigit():
        try:
            date(int(value[:4]), int(value[4:6]), int(value[6:]))
            return value
        except ValueError:
            pass
    warnings.append(f"{keyword} {value[:20]!r} is not a date; left empty")
    return ""


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    """Pixel Spacing (row, column) in mm, else Imager Pixel Spacing, else None."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
            pair = (float(value[0]), float(value[1])) if value is not None else None
        except Exception:  # a garbled value: no spacing rather than no image
            continue
        if pair and all(math.isfinite(v) and v > 0 for v in pair):
            return pair
    return None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip().strip("\x00").strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{keyword} is not a number: {str(value)[:20]!r}") from None


def _uid_name(value: str) -> str:
    name = dicom_uid.UID(value[:64]).name
    return value[:64] if name == value[:64] else f"{name} ({value[:64]})"


def _short(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def one_line(text: str, limit: int = 300) -> str:
    """``text`` as one printable line: control characters escaped, at most ``limit`` long."""
    line = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return line if len(line) <= limit else line[: limit - 3] + "..."
