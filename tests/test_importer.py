"""Study import: DICOM folders (with a fuzzed set of broken files) and MIMIC-layout datasets."""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    MPEG2MPML,
    PYDICOM_IMPLEMENTATION_UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)

from app.importer import (
    LATERAL_ONLY,
    ImportFolderError,
    import_dicom_folder,
    import_mimic,
    mimic_uid,
    read_header,
)
from app.importer import headers as headers_module
from app.storage import Storage
from training.dataset import MimicDataset
from training.phantom.dicom import uid_for
from training.phantom.world import WorldConfig
from training.phantom.writer import build_world

pytestmark = pytest.mark.filterwarnings("ignore")  # pydicom warns loudly about broken files

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ROOT_UID = "1.2.826.0.1.3680043.10.1234"


def uid(*parts: int) -> str:
    return ".".join([ROOT_UID, *map(str, parts)])


def write_dicom(
    path: Path,
    study_uid: str | None,
    sop_uid: str,
    *,
    view: str = "PA",
    rows: int = 32,
    columns: int = 32,
    patient: str = "P1",
    sop_class: str = DigitalXRayImageStorageForPresentation,
    photometric: str = "MONOCHROME2",
    pixels: bool = True,
) -> Path:
    """A small, valid DX image (explicit VR little endian, 16-bit)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    if study_uid is not None:
        ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = sop_uid + ".1"
    ds.PatientID = patient
    ds.PatientName = f"TEST^{patient}"
    ds.PatientSex = "O"
    ds.StudyDate = "20240131"
    ds.AccessionNumber = "A1"
    ds.StudyDescription = "CHEST"
    ds.Modality = "DX"
    ds.ViewPosition = view
    ds.PixelSpacing = [0.2, 0.2]
    if pixels:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        # Enough bytes for a 32 x 32 image whatever Rows / Columns claim.
        n = min(rows * columns, 32 * 32)
        ds.PixelData = (np.arange(n, dtype=np.uint16) % 4096).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def relabel_transfer_syntax(path: Path, syntax: str) -> None:
    """Rewrite the file meta to claim ``syntax``; the data set stays explicit VR little endian."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        out = DicomFileLike(f)
        out.is_little_endian, out.is_implicit_VR = True, False
        write_file_meta_info(out, ds.file_meta, enforce_standard=bool(syntax))
        write_dataset(out, ds)


def pixel_offset(data: bytes) -> int:
    """Byte offset of the (7FE0,0010) element in an explicit VR little endian file."""
    return data.index(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW")


def short_vr_length_offsets(data: bytes) -> list[int]:
    """Offsets of the 2-byte length fields of short explicit-VR elements in the data set."""
    offsets = []
    i = 132
    end = pixel_offset(data)
    while i < end:
        vr = data[i + 4 : i + 6]
        if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL"):
            (length,) = struct.unpack("<I", data[i + 8 : i + 12])
            i += 12 + length
            continue
        (length,) = struct.unpack("<H", data[i + 6 : i + 8])
        if i >= 132 + 12 * 4:  # leave the file meta group's first elements alone
            offsets.append(i + 6)
        i += 8 + length
    return offsets


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    st = Storage.open(f"sqlite:///{tmp_path / 'concord.db'}")
    st.ensure_user("rita", display_name="Rita Radiologist")
    st.set_current_user("rita")
    yield st
    st.close()


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


# ---------------------------------------------------------------------------- the fuzz set

VALID_STUDIES = [uid(1), uid(2), uid(3)]
MUTANT_STUDY = uid(9)


def build_fuzz_folder(root: Path) -> dict[str, list[Path] | dict[Path, str]]:
    """About 100 files: valid studies and every kind of broken file.

    Returns the valid files and, for each file whose fate is certain, the
    substring its rejection reason must contain.
    """
    rng = random.Random(20240131)
    valid: list[Path] = []
    expect: dict[Path, str] = {}
    for s, study in enumerate(VALID_STUDIES):
        for k in range(3):
            view = "AP" if k == 0 else "PA"
            valid.append(
                write_dicom(
                    root / f"study{s}" / f"im{k}.dcm",
                    study,
                    uid(1, s, k),
                    view=view,
                    patient=f"P{s}",
                )
            )
    # A directory named like a file, with a valid image inside (walked into) and an empty one.
    valid.append(
        write_dicom(root / "x.dcm" / "inside.dcm", VALID_STUDIES[0], uid(1, 0, 9), patient="P0")
    )
    (root / "y.dcm").mkdir()

    serial = iter(range(1000))
    mutants = root / "mutants"

    def base(name: str) -> tuple[Path, bytes]:
        path = write_dicom(mutants / name, MUTANT_STUDY, uid(2, next(serial)), patient="PM")
        return path, path.read_bytes()

    for i in range(24):  # truncation at a random offset
        path, data = base(f"trunc{i:02d}.dcm")
        path.write_bytes(data[: rng.randrange(1, len(data) - 1)])
    path, data = base("trunc-pixels.dcm")  # cut inside the pixel data: header intact
    path.write_bytes(data[:-100])
    expect[path] = "truncated"
    for i in range(15):  # a bit flipped in the header
        path, data = base(f"flip-header{i:02d}.dcm")
        buf = bytearray(data)
        at = rng.randrange(132, pixel_offset(data))
        buf[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(buf))
    for i in range(10):  # a bit flipped in the pixels: the header is fine, the file is imported
        path, data = base(f"flip-pixels{i:02d}.dcm")
        buf = bytearray(data)
        at = rng.randrange(pixel_offset(data) + 12, len(data))
        buf[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(buf))
        valid.append(path)
    for i in range(10):  # a wrong value length on a short explicit-VR element
        path, data = base(f"vr-length{i:02d}.dcm")
        buf = bytearray(data)
        at = rng.choice(short_vr_length_offsets(data))
        buf[at : at + 2] = struct.pack(
            "<H", rng.choice([0xFFFF, 0x7FFF, 1, 3, rng.randrange(65536)])
        )
        path.write_bytes(bytes(buf))
    for i, (r, c) in enumerate([(20000, 20000), (65535, 65535), (12000, 9000), (65535, 2000)]):
        path = write_dicom(mutants / f"huge{i}.dcm", MUTANT_STUDY, uid(3, i), rows=r, columns=c)
        expect[path] = "megapixel limit"
    for i, syntax in enumerate(["1.2.3.4.5", "1.2.840.10008.1.2.4.999", MPEG2MPML, "", "banana"]):
        path = write_dicom(mutants / f"syntax{i}.dcm", MUTANT_STUDY, uid(4, i))
        relabel_transfer_syntax(path, syntax)
        expect[path] = "transfer syntax"
    for i in range(10):  # random bytes with a DICOM name
        path = mutants / f"random{i:02d}.dcm"
        path.write_bytes(rng.randbytes(rng.choice([10, 131, 132, 500, 4096])))
        expect[path] = "not a DICOM file"
    for i in range(3):
        path = mutants / f"empty{i}.dcm"
        path.write_bytes(b"")
        expect[path] = "empty file"
    for i in range(2):
        path = write_dicom(mutants / f"no-study{i}.dcm", None, uid(5, i))
        expect[path] = "missing StudyInstanceUID"
    for i in range(2):
        path = write_dicom(
            mutants / f"report{i}.dcm",
            MUTANT_STUDY,
            uid(6, i),
            sop_class=BASIC_TEXT_SR,
            pixels=False,
        )
        expect[path] = "unsupported SOP class"
    path = write_dicom(mutants / "rgb.dcm", MUTANT_STUDY, uid(7), photometric="RGB")
    expect[path] = "not a grayscale radiograph"
    path = write_dicom(mutants / "no-pixels.dcm", MUTANT_STUDY, uid(8), rows=32, columns=32)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    expect[path] = "no pixel data"
    copy = root / "zz-copies" / "im0.dcm"  # the same image twice, found after the first
    copy.parent.mkdir()
    copy.write_bytes((root / "study0" / "im0.dcm").read_bytes())
    expect[copy] = "duplicate SOPInstanceUID"
    (root / "notes.txt").write_text("not an image\n")
    expect[root / "notes.txt"] = "not a DICOM file"
    return {"valid": valid, "expect": expect}


def test_fuzzed_folder_never_raises_and_accounts_for_every_file(
    tmp_path: Path, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "incoming"
    built = build_fuzz_folder(root)
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    assert 100 <= len(files) <= 120
    before = digest_tree(root)

    # Headers only: every read stops before the pixels, and nothing decodes them.
    real_dcmread = headers_module.dcmread

    def headers_only(*args, **kwargs):
        assert kwargs.get("stop_before_pixels") is True and kwargs.get("force") is False
        return real_dcmread(*args, **kwargs)

    def no_decoding(self):
        raise AssertionError("pixels were decoded during import")

    monkeypatch.setattr(headers_module, "dcmread", headers_only)
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoding))

    report = import_dicom_folder(storage, root)

    assert digest_tree(root) == before  # files are never modified
    imported = {i.path for s in report.studies for i in s.images}
    rejected = {r.path for r in report.rejected}
    assert imported.isdisjoint(rejected)
    assert imported | rejected == set(files)
    assert report.files == len(files)
    for r in report.rejected:
        assert r.reason and r.reason.isprintable() and len(r.reason) <= 300, r
    for path, reason in built["expect"].items():
        assert reason in (report.rejection(str(path)) or ""), (path, report.rejection(str(path)))
    assert {str(p) for p in built["valid"]} <= imported

    # Grouping: each stored image belongs to the study its own header names.
    stored = {s.study_instance_uid: s for s in storage.studies()}
    for study in report.studies:
        assert study.study_instance_uid in stored
        paths = {i.path for i in storage.images(study.id)}
        assert paths == {i.path for i in study.images}
        for path in paths:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            assert header.StudyInstanceUID == study.study_instance_uid
    for s, study in enumerate(VALID_STUDIES):
        images = storage.images(stored[study].id)
        expected = 4 if s == 0 else 3
        assert len(images) == expected
        assert stored[study].patient_id == f"P{s}"
        first = next(i for i in images if i.path.endswith("im0.dcm"))
        assert (first.view_position, first.rows, first.columns) == ("AP", 32, 32)
        assert first.photometric_interpretation == "MONOCHROME2"
    by_uid = {s.study_instance_uid: s for s in report.studies}
    assert by_uid[VALID_STUDIES[0]].images[0].pixel_spacing == (0.2, 0.2)
    assert by_uid[VALID_STUDIES[0]].images[0].transfer_syntax_uid == ExplicitVRLittleEndian
    # Every kind of rejection shows up in this set.
    reasons = " | ".join(r.reason for r in report.rejected)
    for kind in (
        "truncated",
        "not a DICOM file",
        "megapixel",
        "transfer syntax",
        "empty file",
        "missing StudyInstanceUID",
        "unsupported SOP class",
    ):
        assert kind in reasons
    assert storage.audit_log(action="import.dicom-folder")


def test_importing_the_same_folder_again_updates_the_same_studies(
    tmp_path: Path, storage: Storage
) -> None:
    for k in range(2):
        write_dicom(tmp_path / "in" / f"{k}.dcm", uid(1), uid(1, k))
    first = import_dicom_folder(storage, tmp_path / "in")
    second = import_dicom_folder(storage, tmp_path / "in")
    assert (first.new_studies, second.new_studies) == (1, 0)
    assert len(storage.studies()) == 1
    assert len(storage.images(storage.studies()[0].id)) == 2
    assert storage.studies()[0].source == "dicom-folder"


def test_a_study_with_only_a_lateral_view_is_flagged(tmp_path: Path, storage: Storage) -> None:
    write_dicom(tmp_path / "in" / "lat.dcm", uid(1), uid(1, 1), view="LL")
    write_dicom(tmp_path / "in" / "both-pa.dcm", uid(2), uid(2, 1), view="PA")
    write_dicom(tmp_path / "in" / "both-lat.dcm", uid(2), uid(2, 2), view="LATERAL")
    report = import_dicom_folder(storage, tmp_path / "in")
    by_uid = {s.study_instance_uid: s for s in report.studies}
    assert by_uid[uid(1)].warnings == [LATERAL_ONLY] and by_uid[uid(1)].lateral_only
    assert by_uid[uid(2)].warnings == []
    logged = storage.audit_log(action="import.study", target=("study", by_uid[uid(1)].id))
    assert logged[0].details["warnings"] == [LATERAL_ONLY]


def test_progress_is_reported_per_file(tmp_path: Path, storage: Storage) -> None:
    for k in range(5):
        write_dicom(tmp_path / "in" / f"{k}.dcm", uid(1), uid(1, k))
    (tmp_path / "in" / "junk.bin").write_bytes(b"junk")
    calls: list[tuple[int, int]] = []
    import_dicom_folder(storage, tmp_path / "in", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 6) for i in range(7)]


def test_cancel_while_reading_records_nothing(tmp_path: Path, storage: Storage) -> None:
    for k in range(6):
        write_dicom(tmp_path / "in" / f"{k}.dcm", uid(1, k), uid(1, k, 1))
    read: list[int] = []
    report = import_dicom_folder(
        storage,
        tmp_path / "in",
        cancel=lambda: len(read) >= 3,
        progress=lambda d, t: read.append(d),
    )
    assert read == [0, 1, 2]  # checked between files: the third one was never opened
    assert report.cancelled and report.not_processed == 6
    assert storage.studies() == []
    assert "cancelled" in report.summary()


def test_cancel_while_recording_keeps_the_studies_recorded(
    tmp_path: Path, storage: Storage
) -> None:
    for k in range(6):
        write_dicom(tmp_path / "in" / f"{k}.dcm", uid(1, k), uid(1, k, 1))
    report = import_dicom_folder(
        storage, tmp_path / "in", cancel=lambda: len(storage.studies()) >= 2
    )
    assert report.cancelled and report.not_processed == 4
    assert [s.study_instance_uid for s in storage.studies()] == [uid(1, 0), uid(1, 1)]
    again = import_dicom_folder(storage, tmp_path / "in")  # importing again completes it
    assert (len(again.studies), again.new_studies) == (6, 4)


def test_an_image_already_in_another_study_is_rejected_alone(
    tmp_path: Path, storage: Storage
) -> None:
    write_dicom(tmp_path / "a" / "1.dcm", uid(1), uid(7, 1))
    import_dicom_folder(storage, tmp_path / "a")
    write_dicom(tmp_path / "b" / "moved.dcm", uid(2), uid(7, 1))  # same image, other study
    write_dicom(tmp_path / "b" / "fine.dcm", uid(2), uid(7, 2))
    report = import_dicom_folder(storage, tmp_path / "b")
    assert "not recorded" in report.rejection(str(tmp_path / "b" / "moved.dcm"))
    assert [i.path for i in report.studies[0].images] == [str(tmp_path / "b" / "fine.dcm")]


def test_garbled_descriptive_values_are_dropped_with_a_warning(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "bad-date.dcm", uid(1), uid(1, 1))
    ds = pydicom.dcmread(path)
    ds.StudyDate = "20241399"
    ds.save_as(path, enforce_file_format=True)
    header = read_header(path)
    assert "StudyDate" not in header.study
    assert any("StudyDate" in w for w in header.warnings)


def test_an_unreadable_file_is_rejected_and_the_import_goes_on(
    tmp_path: Path, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = write_dicom(tmp_path / "in" / "a-locked.dcm", uid(1), uid(1, 1))
    write_dicom(tmp_path / "in" / "b-fine.dcm", uid(1), uid(1, 2))

    def guarded_open(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(headers_module, "open", guarded_open, raising=False)
    report = import_dicom_folder(storage, tmp_path / "in")
    assert report.rejection(str(locked)).startswith("unreadable: permission denied")
    assert [len(s.images) for s in report.studies] == [1]


def test_a_missing_folder_is_one_clear_error(tmp_path: Path, storage: Storage) -> None:
    with pytest.raises(ImportFolderError, match="not a folder"):
        import_dicom_folder(storage, tmp_path / "nowhere")


# ---------------------------------------------------------------------------- MIMIC layout


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    build_world(WorldConfig(studies=12, seed=1, size=128, dicom=True), root, workers=1)
    return root


def test_mimic_import_records_studies_images_and_reports(phantom: Path, storage: Storage) -> None:
    dataset = MimicDataset(phantom, views=None)
    by_study: dict[int, list] = {}
    for sample in dataset:
        by_study.setdefault(sample.study_id, []).append(sample)
    progress: list[tuple[int, int]] = []
    report = import_mimic(storage, phantom, progress=lambda d, t: progress.append((d, t)))
    assert len(report.studies) == len(by_study) == 12
    assert report.rejected == []
    assert progress[-1] == (12, 12)
    for study_id, samples in by_study.items():
        study = storage.study_by_uid(mimic_uid("study", study_id))
        assert study is not None and study.source == "mimic"
        assert study.patient_id == str(samples[0].subject_id)
        images = storage.images(study.id)
        assert sorted(i.path for i in images) == sorted(str(s.image_path) for s in samples)
        assert all((i.rows, i.columns) == (128, 128) for i in images)
        state = storage.report(study.id)
        assert state.text == samples[0].report and state.version == 1
    again = import_mimic(storage, phantom)
    assert again.new_studies == 0 and len(storage.studies()) == 12
    assert all(storage.report(s.id).version == 1 for s in storage.studies())


def test_mimic_import_of_one_split(phantom: Path, storage: Storage) -> None:
    train = {s.study_id for s in MimicDataset(phantom, split="train", views=None)}
    report = import_mimic(storage, phantom, split="train")
    assert {s.study_instance_uid for s in report.studies} == {mimic_uid("study", i) for i in train}


def test_the_phantom_worlds_dicom_files_import_as_their_studies(
    phantom: Path, storage: Storage
) -> None:
    report = import_dicom_folder(storage, phantom / "files")
    dicoms = sorted(str(p) for p in phantom.rglob("*.dcm"))
    assert sorted(i.path for s in report.studies for i in s.images) == dicoms
    assert all(r.reason.startswith("not a DICOM file") for r in report.rejected)  # JPEGs, reports
    study_ids = {s.study_id for s in MimicDataset(phantom, views=None)}
    assert {s.study_instance_uid for s in report.studies} == {
        uid_for(1, "study", i) for i in study_ids
    }
