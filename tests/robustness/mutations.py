"""Deterministic mutated DICOM files, each labelled with the kind of damage it carries.

:func:`generate` writes ``count`` files into a folder from a handful of valid seed
images that cover the transfer syntaxes a PACS export holds (explicit and
implicit VR little endian, explicit VR big endian, deflated, RLE, JPEG baseline,
JPEG-LS, JPEG 2000, a multi-frame image) and returns a :class:`Mutant` per file:
its path, its mutation ``kind``, the seed it came from, what was done
(``detail``) and, where the outcome is certain, what the import and the viewer
must do with it (``expect_import``, ``expect_reason``, ``expect_open``).

The same ``(seed, index)`` always gives the same bytes: file ``i`` of a
1,000-file run is file ``i`` of a 120-file run.  Files are named
``NNNNN-kind.dcm`` in sub-folders of 100 so that the import's name-ordered walk
visits them in generation order (a duplicate always comes after its original).

No file is larger than a few megabytes: the "huge" kinds only *declare* huge
images (the header's Rows / Columns / Number of Frames, the compressed
codestream's own size, or a deflated data set that inflates to gigabytes),
which is the point - reading them must not allocate what they declare.

Run ``python -m tests.robustness.mutations OUT --count N --seed S`` from the
repository root to write a set by hand.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import random
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import config
from pydicom import uid as U
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info

DX = U.DigitalXRayImageStorageForPresentation
MULTIFRAME_SC = U.MultiFrameGrayscaleWordSecondaryCaptureImageStorage
#: Explicit VR elements with a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
PIXEL_DATA = 0x7FE00010

#: Every mutation kind, in the order the first files of a set use them (so even a
#: small set has one of each), with the weight of each kind after that.
KINDS: dict[str, float] = {
    "valid": 10,  # an undamaged seed image with its own UIDs
    "truncated": 10,  # cut at a random offset
    "truncated-pixels": 5,  # cut inside the pixel data
    "bitflip-header": 10,  # 1-3 bits flipped between the preamble and the pixel data
    "bitflip-pixels": 10,  # 1-8 bits flipped inside the pixel data (item headers untouched)
    "bad-length": 10,  # a wrong value length on one element (2- or 4-byte length field)
    "huge-dims": 5,  # Rows / Columns declare a huge image; the pixels stay small
    "huge-frames": 4,  # Number of Frames huge, negative, zero or not a number
    "codestream-bomb": 4,  # the JPEG / JPEG-LS / JPEG 2000 codestream declares a huge image
    "unsupported-syntax": 5,  # a transfer syntax with no decoder, or a wrong or empty one
    "garbage-fragments": 6,  # a compressed syntax whose fragments hold garbage
    "not-dicom": 8,  # text, PNG, zeros or random bytes named .dcm
    "empty": 3,  # a zero-byte file
    "no-preamble": 4,  # the 128-byte preamble or the DICM marker missing
    "duplicate-uid": 4,  # the SOP Instance UID of an earlier, valid file
    "trailing-junk": 2,  # random bytes after the end of the data set
    "deflate-bomb": 2,  # a deflated data set of a few MB that inflates to gigabytes
}


@dataclass(frozen=True)
class SeedSpec:
    """One valid seed image."""

    name: str
    syntax: str
    bits: int = 12  # Bits Stored
    photometric: str = "MONOCHROME2"
    frames: int = 1
    rows: int = 80
    columns: int = 96
    sop_class: str = DX

    @property
    def compressed(self) -> bool:
        return U.UID(self.syntax).is_encapsulated

    @property
    def native(self) -> bool:
        return not self.compressed and self.syntax != U.DeflatedExplicitVRLittleEndian


SEEDS: tuple[SeedSpec, ...] = (
    SeedSpec("native-le", U.ExplicitVRLittleEndian),
    SeedSpec("native-implicit", U.ImplicitVRLittleEndian, bits=14, photometric="MONOCHROME1"),
    SeedSpec("native-be", U.ExplicitVRBigEndian),
    SeedSpec("deflated", U.DeflatedExplicitVRLittleEndian),
    SeedSpec("rle", U.RLELossless, bits=16),
    SeedSpec("jpeg", U.JPEGBaseline8Bit, bits=8),
    SeedSpec("jpeg-ls", U.JPEGLSLossless),
    SeedSpec("jpeg2000", U.JPEG2000Lossless),
    SeedSpec("multiframe", U.ExplicitVRLittleEndian, frames=3, rows=40, columns=48,
             sop_class=MULTIFRAME_SC),
)
SEED_BY_NAME = {s.name: s for s in SEEDS}
COMPRESSED = tuple(s.name for s in SEEDS if s.compressed)
CODESTREAM = ("jpeg", "jpeg-ls", "jpeg2000")
NATIVE = tuple(s.name for s in SEEDS if s.native)
NOT_DEFLATED = tuple(s.name for s in SEEDS if s.syntax != U.DeflatedExplicitVRLittleEndian)


@dataclass(frozen=True)
class Mutant:
    """One generated file and what it is."""

    index: int
    path: str
    kind: str
    seed: str  # the seed image's name, "" for files made from scratch
    detail: str
    sop_instance_uid: str  # the UID written (before any damage), "" when none
    #: "imported" / "rejected" when the import's verdict is certain, else None.
    expect_import: str | None = None
    #: A substring the rejection reason must contain (with expect_import "rejected").
    expect_reason: str | None = None
    #: "ok" / "error" when opening the imported file in the viewer is certain, else None.
    expect_open: str | None = None


# ----------------------------------------------------------------------------- UIDs


def make_uid(seed: int, *key: object) -> str:
    """A valid DICOM UID ("2.25." and a 128-bit integer) derived from ``(seed, key)``."""
    digest = hashlib.sha256(repr(("concord-robustness", seed, *key)).encode()).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


# ----------------------------------------------------------------------------- seeds


@contextmanager
def lenient() -> Iterator[None]:
    """pydicom writes and reads invalid values without complaint (damaged files on purpose)."""
    settings = config.settings
    old = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = old


def seed_pixels(spec: SeedSpec) -> np.ndarray:
    """A smooth, chest-like grayscale picture (frames, rows, columns) in the seed's bit depth."""
    y, x = np.mgrid[0 : spec.rows, 0 : spec.columns].astype(np.float64)
    frames = []
    for f in range(spec.frames):
        r = np.hypot((y - spec.rows / 2) / spec.rows, (x - spec.columns / 2 - 3 * f) / spec.columns)
        picture = 0.2 + 0.55 * np.exp(-((r / 0.33) ** 2)) + 0.08 * np.sin(x / 5.0) * np.cos(y / 7.0)
        frames.append(np.clip(picture, 0.0, 1.0))
    top = (1 << spec.bits) - 1
    values = np.rint(np.stack(frames) * top)
    return values.astype(np.uint8 if spec.bits == 8 else np.uint16)


@cache
def seed_template(name: str) -> FileDataset:
    """The seed's data set with its pixel data already encoded (UIDs are set per file)."""
    spec = SEED_BY_NAME[name]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = spec.sop_class
    meta.MediaStorageSOPInstanceUID = "1.2.3"
    meta.TransferSyntaxUID = U.ExplicitVRLittleEndian
    meta.ImplementationClassUID = U.PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(name, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = spec.sop_class
    ds.SOPInstanceUID = "1.2.3"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.PatientID = "RB0"
    ds.PatientName = "ROBUSTNESS^SEED"
    ds.PatientSex = "O"
    ds.StudyDate = "20240131"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "RB1"
    ds.StudyDescription = "CHEST (PA AND LAT)"
    ds.Modality = "DX" if spec.sop_class == DX else "OT"
    ds.ViewPosition = "PA"
    ds.PixelSpacing = [0.2, 0.2]
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.BitsAllocated = 8 if spec.bits == 8 else 16
    ds.BitsStored = spec.bits
    ds.HighBit = spec.bits - 1
    ds.PixelRepresentation = 0
    if spec.bits != 8:
        top = (1 << spec.bits) - 1
        ds.WindowCenter, ds.WindowWidth = round(top / 2, 1), round(top * 0.9, 1)
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    if spec.frames > 1:
        ds.NumberOfFrames = spec.frames
    pixels = seed_pixels(spec)
    array = pixels[0] if spec.frames == 1 else pixels
    ds.PixelData = array.tobytes()
    if spec.syntax == U.ExplicitVRBigEndian:
        ds.PixelData = array.byteswap().tobytes()  # OW is written as stored, so swap first
        ds.file_meta.TransferSyntaxUID = spec.syntax
    elif spec.syntax == U.JPEGBaseline8Bit:  # pydicom has no JPEG encoder; Pillow's libjpeg does
        out = io.BytesIO()
        Image.fromarray(array, mode="L").save(out, "JPEG", quality=90)
        ds.PixelData = encapsulate([out.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.file_meta.TransferSyntaxUID = spec.syntax
    elif spec.compressed:
        ds.compress(spec.syntax, array, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = spec.syntax
    return ds


def encode(ds: FileDataset, syntax: str) -> bytes:
    """A data set as a complete Part 10 file in ``syntax``."""
    out = io.BytesIO()
    with lenient():
        if syntax == U.ExplicitVRBigEndian:
            dcmwrite(out, ds, implicit_vr=False, little_endian=False, enforce_file_format=True)
        else:
            dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def seed_dataset(name: str, sop_uid: str, study_uid: str, patient: str, view: str) -> FileDataset:
    ds = copy.deepcopy(seed_template(name))
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = sop_uid + ".1"
    ds.PatientID = patient
    ds.PatientName = f"ROBUSTNESS^{patient}"
    ds.ViewPosition = view
    return ds


# ----------------------------------------------------------------------------- byte layout


@dataclass(frozen=True)
class Element:
    offset: int  # where the tag starts
    tag: int
    length_at: int  # where the length field starts
    length_size: int  # 2 or 4 bytes
    length: int
    value_at: int
    big_endian: bool = False


@dataclass
class Layout:
    """Where the elements of a file lie (the data set is not parsed when it is deflated)."""

    elements: list[Element]
    pixel: Element | None = None
    #: (item tag offset, payload offset, payload length) of each encapsulated item; [0] is the BOT.
    items: list[tuple[int, int, int]] | None = None

    @property
    def pixel_end(self) -> int:
        """Offset of the first byte after the pixel data header."""
        assert self.pixel is not None
        return self.pixel.value_at


def layout(data: bytes, syntax: str) -> Layout:
    elements: list[Element] = []
    pos = 132
    # File meta information: always explicit VR little endian.
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        pos = _explicit(data, pos, "<", elements)
    if syntax == U.DeflatedExplicitVRLittleEndian:
        return Layout(elements)
    implicit = syntax == U.ImplicitVRLittleEndian
    order = ">" if syntax == U.ExplicitVRBigEndian else "<"
    result = Layout(elements)
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from(order + "HH", data, pos)
        tag = group << 16 | elem
        if implicit:
            (length,) = struct.unpack_from("<I", data, pos + 4)
            element = Element(pos, tag, pos + 4, 4, length, pos + 8)
            elements.append(element)
        else:
            _explicit(data, pos, order, elements)
            element = elements[-1]
        if tag == PIXEL_DATA:
            result.pixel = element
            if element.length == 0xFFFFFFFF:
                result.items = _items(data, element.value_at)
            break
        if element.length == 0xFFFFFFFF:
            break  # a sequence: the seeds have none
        pos = element.value_at + element.length
    return result


def _explicit(data: bytes, pos: int, order: str, out: list[Element]) -> int:
    group, elem = struct.unpack_from(order + "HH", data, pos)
    vr = data[pos + 4 : pos + 6]
    if vr in LONG_VRS:
        (length,) = struct.unpack_from(order + "I", data, pos + 8)
        element = Element(pos, group << 16 | elem, pos + 8, 4, length, pos + 12, order == ">")
    else:
        (length,) = struct.unpack_from(order + "H", data, pos + 6)
        element = Element(pos, group << 16 | elem, pos + 6, 2, length, pos + 8, order == ">")
    out.append(element)
    return element.value_at + (0 if length == 0xFFFFFFFF else length)


def _items(data: bytes, pos: int) -> list[tuple[int, int, int]]:
    items = []
    while pos + 8 <= len(data):
        tag, length = struct.unpack_from("<II", data, pos)
        if tag != 0xE000FFFE:  # (FFFE,E000) read as one little-endian 32-bit word
            break
        items.append((pos, pos + 8, length))
        pos += 8 + length
    return items


# ----------------------------------------------------------------------------- generation


class _Context:
    """What a mutation may draw on: the seed, earlier valid files, the rng."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.valid: list[tuple[int, str, str]] = []  # (index, seed name, SOP Instance UID)


def _identity(seed: int, index: int) -> tuple[str, str, str]:
    """(study UID, patient, view) of file ``index``: about eight images per study."""
    study = index // 8
    view = ("PA", "PA", "AP", "LL")[index % 4]
    return make_uid(seed, "study", study), f"RB{study % 7}", view


def _kind_of(seed: int, index: int) -> str:
    names = list(KINDS)
    if index < len(names):
        return names[index]
    rng = random.Random(f"{seed}:kind:{index}")
    return rng.choices(names, weights=list(KINDS.values()))[0]


def generate(folder: str | Path, count: int, seed: int = 0) -> list[Mutant]:
    """Write ``count`` files under ``folder`` (created) and return what each one is."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = _Context(seed)
    out = []
    for index in range(count):
        kind = _kind_of(seed, index)
        rng = random.Random(f"{seed}:file:{index}")
        data, fields = _MUTATIONS[kind](ctx, rng, index)
        path = folder / f"batch{index // 100:02d}" / f"{index:05d}-{kind}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        mutant = Mutant(index=index, path=str(path), kind=kind, **fields)
        if kind == "valid":
            ctx.valid.append((index, mutant.seed, mutant.sop_instance_uid))
        out.append(mutant)
    return out


def write_manifest(mutants: list[Mutant], path: str | Path) -> None:
    Path(path).write_text(json.dumps([asdict(m) for m in mutants], indent=1))


def read_manifest(path: str | Path) -> list[Mutant]:
    return [Mutant(**m) for m in json.loads(Path(path).read_text())]


def _base(ctx: _Context, rng: random.Random, index: int, names: tuple[str, ...]
          ) -> tuple[SeedSpec, FileDataset, str]:
    spec = SEED_BY_NAME[rng.choice(names)]
    study, patient, view = _identity(ctx.seed, index)
    sop = make_uid(ctx.seed, "sop", index)
    return spec, seed_dataset(spec.name, sop, study, patient, view), sop


def _fields(spec: SeedSpec | None, detail: str, sop: str = "", **expect: str | None) -> dict:
    return {"seed": spec.name if spec else "", "detail": detail, "sop_instance_uid": sop, **expect}


def _valid(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, tuple(SEED_BY_NAME))
    return encode(ds, spec.syntax), _fields(spec, "unchanged", sop, expect_import="imported",
                                            expect_open="ok")


def _truncated(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, tuple(SEED_BY_NAME))
    data = encode(ds, spec.syntax)
    cut = rng.randrange(1, len(data) - 1)
    return data[:cut], _fields(spec, f"cut at byte {cut} of {len(data)}", sop)


def _truncated_pixels(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, NOT_DEFLATED)
    data = encode(ds, spec.syntax)
    start = layout(data, spec.syntax).pixel_end
    cut = rng.randrange(start + 1, len(data) - 1)
    expect = {"expect_import": "rejected", "expect_reason": "truncated"} if spec.native else {}
    return data[:cut], _fields(spec, f"cut at byte {cut} of {len(data)} (pixels start at {start})",
                               sop, **expect)


def _bitflip_header(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, tuple(SEED_BY_NAME))
    data = bytearray(encode(ds, spec.syntax))
    lay = layout(bytes(data), spec.syntax)
    end = lay.pixel.offset if lay.pixel is not None else len(data)
    flips = []
    for _ in range(rng.randint(1, 3)):
        at, bit = rng.randrange(132, end), rng.randrange(8)
        data[at] ^= 1 << bit
        flips.append(f"{at}.{bit}")
    return bytes(data), _fields(spec, "flipped bits " + ", ".join(flips), sop)


def _bitflip_pixels(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, NOT_DEFLATED)
    data = bytearray(encode(ds, spec.syntax))
    lay = layout(bytes(data), spec.syntax)
    if lay.items:  # inside fragment payloads only: the item structure stays intact
        spans = [(p, p + n) for _, p, n in lay.items[1:] if n]
    else:
        spans = [(lay.pixel_end, len(data))]
    flips = []
    for _ in range(rng.randint(1, 8)):
        lo, hi = rng.choice(spans)
        at, bit = rng.randrange(lo, hi), rng.randrange(8)
        data[at] ^= 1 << bit
        flips.append(f"{at}.{bit}")
    expect = {"expect_import": "imported"}
    if spec.native:
        expect["expect_open"] = "ok"  # other values, same image
    return bytes(data), _fields(spec, "flipped pixel bits " + ", ".join(flips), sop, **expect)


def _bad_length(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, tuple(SEED_BY_NAME))
    data = bytearray(encode(ds, spec.syntax))
    lay = layout(bytes(data), spec.syntax)
    element = rng.choice(lay.elements)
    if element.length_size == 2:
        choices = [0xFFFF, 0x7FFF, element.length + 1, max(element.length - 1, 0), 0,
                   rng.randrange(0x10000)]
        fmt = "H"
    else:
        choices = [0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFF0, element.length + 1,
                   max(element.length - 1, 0), rng.randrange(1 << 32)]
        fmt = "I"
    value = rng.choice(choices)
    order = ">" if element.big_endian else "<"
    struct.pack_into(order + fmt, data, element.length_at, value)
    return bytes(data), _fields(
        spec, f"length of ({element.tag >> 16:04X},{element.tag & 0xFFFF:04X}) "
        f"{element.length} -> {value}", sop)


def _huge_dims(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, tuple(SEED_BY_NAME))
    rows, columns = rng.choice([(65535, 65535), (20000, 20000), (46341, 46341), (12000, 9000),
                                (10000, 10000), (9999, 9999), (65535, 2000)])
    ds.Rows, ds.Columns = rows, columns
    total = rows * columns * spec.frames
    if total > 100_000_000:
        expect = {"expect_import": "rejected", "expect_reason": "megapixel limit"}
    elif spec.native:
        expect = {"expect_import": "rejected", "expect_reason": "corrupt pixel data"}
    elif spec.compressed:
        expect = {"expect_import": "imported", "expect_open": "error"}
    else:
        expect = {}
    return encode(ds, spec.syntax), _fields(spec, f"Rows x Columns {rows} x {columns}", sop,
                                            **expect)


def _huge_frames(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, NOT_DEFLATED)
    value = rng.choice(["2147483647", "100000", "65536", "99999999999", "-5", "0", "abc", "1e9"])
    ds.NumberOfFrames = "777777777777"  # a placeholder of the longest IS value, replaced below
    data = encode(ds, spec.syntax)
    assert data.count(b"777777777777") == 1
    data = data.replace(b"777777777777", value.ljust(12).encode())
    try:  # as pydicom reads an IS value ("1e9" is a valid float, "abc" is not a number)
        frames: float | None = float(value)
    except ValueError:
        frames = None
    if frames is not None and frames > 0 and frames * spec.rows * spec.columns > 100_000_000:
        expect = {"expect_import": "rejected", "expect_reason": "megapixel limit"}
    elif frames is None or frames < 0:
        expect = {"expect_import": "rejected", "expect_reason": "corrupt header"}
    else:
        expect = {}
    return data, _fields(spec, f"NumberOfFrames {value!r}", sop, **expect)


def _codestream_bomb(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, CODESTREAM)
    data = bytearray(encode(ds, spec.syntax))
    lay = layout(bytes(data), spec.syntax)
    _, start, length = lay.items[1]
    if spec.name == "jpeg2000":
        width, height, tiles = rng.choice([(60000, 60000, True), (100000, 100000, True),
                                           (40000, 30000, True), (60000, 60000, False)])
        siz = bytes(data).index(b"\xff\x51", start, start + length)
        struct.pack_into(">II", data, siz + 6, width, height)
        if tiles:
            struct.pack_into(">IIII", data, siz + 14, 0, 0, width, height)
        detail = f"SIZ declares {width} x {height}" + (" in one tile" if tiles else "")
    else:
        width, height = rng.choice([(65500, 65500), (40000, 30000), (20000, 20000)])
        sof = _jpeg_sof(bytes(data), start, start + length)
        struct.pack_into(">HH", data, sof + 5, height, width)
        detail = f"SOF declares {width} x {height}"
    return bytes(data), _fields(spec, detail + f" (header {spec.columns} x {spec.rows})", sop,
                                expect_import="imported", expect_open="error")


def _jpeg_sof(data: bytes, start: int, end: int) -> int:
    """Offset of the SOFn (JPEG) or SOF55 (JPEG-LS) marker of the codestream at ``start``."""
    pos = start + 2  # after SOI
    while pos + 4 <= end:
        marker = data[pos + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF, 0xF7):
            return pos
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
    raise ValueError("no SOF marker in the codestream")


def _relabel(ds: FileDataset, syntax: str) -> bytes:
    """The data set written as explicit VR little endian under another transfer syntax label."""
    ds = copy.deepcopy(ds)
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    fp = DicomFileLike(out)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    with lenient():
        ds.file_meta.TransferSyntaxUID = syntax
        write_file_meta_info(fp, ds.file_meta, enforce_standard=bool(syntax))
        write_dataset(fp, ds)
    return out.getvalue()


def _unsupported_syntax(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    variant = rng.choice(["unknown", "unknown", "mpeg2", "mpeg4", "empty", "banana",
                          "native-as-jpeg", "native-as-jpeg2000"])
    names = ("native-le",) if variant.startswith("native") else ("native-le", "multiframe")
    spec, ds, sop = _base(ctx, rng, index, names)
    syntax = {
        "unknown": rng.choice(["1.2.3.4.5.6", "1.2.840.10008.1.2.4.999"]),
        "mpeg2": U.MPEG2MPML,
        "mpeg4": U.MPEG4HP41,
        "empty": "",
        "banana": "banana",
        "native-as-jpeg": U.JPEGBaseline8Bit,
        "native-as-jpeg2000": U.JPEG2000Lossless,
    }[variant]
    reason = "encapsulated" if variant.startswith("native") else "transfer syntax"
    return _relabel(ds, syntax), _fields(spec, f"transfer syntax {syntax!r} ({variant})", sop,
                                         expect_import="rejected", expect_reason=reason)


def _garbage_fragments(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, COMPRESSED)
    data = encode(ds, spec.syntax)
    lay = layout(data, spec.syntax)
    head = data[: lay.pixel.value_at]
    bot = data[lay.items[0][0] : lay.items[0][1] + lay.items[0][2]]
    payloads = [data[p : p + n] for _, p, n in lay.items[1:]]
    variant = rng.choice(["same-length", "other-length", "item-length", "no-delimiter", "bot"])
    expect = {"expect_import": "imported"}
    if variant == "same-length":
        payloads = [rng.randbytes(len(p)) for p in payloads]
    elif variant == "other-length":
        payloads = [rng.randbytes(rng.randrange(2, 4000) & ~1) for _ in payloads]
    elif variant == "bot":  # offsets that point nowhere
        count = rng.randint(1, 4)
        bot = struct.pack("<II", 0xE000FFFE, 4 * count) + b"".join(
            struct.pack("<I", rng.randrange(1 << 32)) for _ in range(count))
    items = b"".join(struct.pack("<II", 0xE000FFFE, len(p)) + p for p in payloads)
    tail = struct.pack("<II", 0xE0DDFFFE, 0)
    if variant == "item-length":  # the first fragment claims more bytes than the file holds
        items = bytearray(items)
        struct.pack_into("<I", items, 4, rng.choice([0xFFFFFFF0, 0x7FFFFFF0, len(data) * 4]))
        items = bytes(items)
    elif variant == "no-delimiter":
        tail = rng.randbytes(rng.randrange(0, 64))
    return head + bot + items + tail, _fields(spec, f"fragments: {variant}", sop, **expect)


def _not_dicom(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    variant = rng.choice(["text", "png", "zeros", "random", "random", "fake-magic"])
    expect = {"expect_import": "rejected", "expect_reason": "not a DICOM file"}
    if variant == "text":
        data = b"FINDINGS: No pleural effusion.\nIMPRESSION: Normal chest.\n" * rng.randint(1, 9)
    elif variant == "png":
        out = io.BytesIO()
        Image.fromarray(seed_pixels(SEED_BY_NAME["jpeg"])[0], mode="L").save(out, "PNG")
        data = out.getvalue()
    elif variant == "zeros":
        data = bytes(rng.choice([1, 128, 132, 4096]))
    elif variant == "random":
        data = rng.randbytes(rng.choice([10, 131, 132, 500, 4096, 70000]))
        data = data[:128] + b"XXXX" + data[132:] if data[128:132] == b"DICM" else data
    else:  # the preamble and the marker of a DICOM file, then garbage
        data = bytes(128) + b"DICM" + rng.randbytes(rng.choice([0, 8, 100, 3000]))
        expect = {"expect_import": "rejected"}
    return data, _fields(None, variant, **expect)


def _empty(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    return b"", _fields(None, "zero bytes", expect_import="rejected", expect_reason="empty file")


def _no_preamble(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, tuple(SEED_BY_NAME))
    data = encode(ds, spec.syntax)
    variant = rng.choice(["no-preamble", "no-preamble-no-marker", "no-marker"])
    if variant == "no-preamble":
        data = data[128:]
    elif variant == "no-preamble-no-marker":
        data = data[132:]
    else:
        data = data[:128] + b"\0\0\0\0" + data[132:]
    return data, _fields(spec, variant, sop, expect_import="rejected",
                         expect_reason="not a DICOM file")


def _duplicate_uid(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    original, name, sop = rng.choice(ctx.valid)
    if rng.random() < 0.5:  # the same file again
        spec = SEED_BY_NAME[name]
        study, patient, view = _identity(ctx.seed, original)
        data = encode(seed_dataset(name, sop, study, patient, view), spec.syntax)
        detail = f"copy of file {original}"
    else:  # another image (other seed, other study) that reuses the UID
        spec = SEED_BY_NAME[rng.choice(tuple(SEED_BY_NAME))]
        study, patient, view = _identity(ctx.seed, index)
        data = encode(seed_dataset(spec.name, sop, study, patient, view), spec.syntax)
        detail = f"SOP Instance UID of file {original}"
    return data, _fields(spec, detail, sop, expect_import="rejected",
                         expect_reason="duplicate SOPInstanceUID")


def _trailing_junk(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, NOT_DEFLATED)
    junk = rng.randbytes(rng.randrange(1, 5000))
    return encode(ds, spec.syntax) + junk, _fields(spec, f"{len(junk)} bytes appended", sop,
                                                   expect_import="imported")


@cache
def _zeros_segment() -> bytes:
    """16 MiB of zeros as raw deflate blocks ending in a full flush: repeatable back to back."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(bytes(16 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)


def _deflate_bomb(ctx: _Context, rng: random.Random, index: int) -> tuple[bytes, dict]:
    spec, ds, sop = _base(ctx, rng, index, ("deflated",))
    data = encode(ds, spec.syntax)
    meta = layout(data, spec.syntax).elements[-1]
    meta_end = meta.value_at + meta.length
    body = io.BytesIO()
    fp = DicomFileLike(body)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    segments = rng.choice([64, 128, 192])  # 1, 2 or 3 GiB of zeros
    inflated = segments * (16 << 20)
    # ... then Data Set Trailing Padding (FFFC,FFFC), the last element a data set can hold.
    padding = struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, inflated)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(body.getvalue() + padding) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = head + _zeros_segment() * segments + b"\x03\x00"  # an empty final block
    return data[:meta_end] + stream, _fields(
        spec, f"{len(stream):,} deflated bytes inflate to {inflated + len(body.getvalue()):,}", sop,
        expect_import="rejected", expect_reason="inflates")


_MUTATIONS = {
    "valid": _valid,
    "truncated": _truncated,
    "truncated-pixels": _truncated_pixels,
    "bitflip-header": _bitflip_header,
    "bitflip-pixels": _bitflip_pixels,
    "bad-length": _bad_length,
    "huge-dims": _huge_dims,
    "huge-frames": _huge_frames,
    "codestream-bomb": _codestream_bomb,
    "unsupported-syntax": _unsupported_syntax,
    "garbage-fragments": _garbage_fragments,
    "not-dicom": _not_dicom,
    "empty": _empty,
    "no-preamble": _no_preamble,
    "duplicate-uid": _duplicate_uid,
    "trailing-junk": _trailing_junk,
    "deflate-bomb": _deflate_bomb,
}
assert set(_MUTATIONS) == set(KINDS)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="write a set of mutated DICOM files")
    parser.add_argument("out", help="folder to write (the manifest goes beside it)")
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mutants = generate(args.out, args.count, args.seed)
    manifest = Path(args.out).with_suffix(".manifest.json")
    write_manifest(mutants, manifest)
    print(f"{len(mutants)} files in {args.out}; manifest {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
