"""Phantom images as DX / CR DICOM files, with the variety a PACS export has.

Each file carries the patient, study, series and SOP instance UIDs (derived
deterministically from the world's seed, so a rebuilt world has the same
UIDs), ViewPosition, PixelSpacing and ImagerPixelSpacing, 12- to 16-bit stored
values with a window centre / width, and - chosen per image from its own
stream - MONOCHROME1 photometry (stored values inverted: low values display
white, PS3.3 C.7.6.3.1.2) and a compressed transfer syntax (RLE Lossless or
JPEG 2000 Lossless).  Decoding with the modality LUT and VOI window, and
inverting MONOCHROME1, gives back the rendered picture.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from training.phantom.truth import ImageTruth, StudyTruth
from training.phantom.world import stream

DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage


def uid_for(seed: int, *key: object) -> str:
    """A valid, deterministic DICOM UID for ``key``.

    The "2.25." root followed by a 128-bit integer, as PS3.5 B.2 allows for
    UUID-derived UIDs; here the integer is a hash of the key, so a rebuilt world
    has the same UIDs.
    """
    digest = hashlib.sha256(repr((seed, *key)).encode()).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def stored_values(pixels: np.ndarray, bits: int, monochrome1: bool) -> tuple[np.ndarray, float, float]:
    """Display intensities in [0, 1] -> stored integers, window centre and width."""
    top = (1 << bits) - 1
    # Use most of the range but leave head-room, as detectors do.
    scaled = 0.05 * top + np.clip(pixels, 0.0, 1.0) * 0.9 * top
    values = np.rint(scaled).astype(np.uint16)
    center, width = 0.5 * top, 0.9 * top
    if monochrome1:
        values = (top - values).astype(np.uint16)
    return values, center, width


def display_from_stored(values: np.ndarray, bits: int, monochrome1: bool) -> np.ndarray:
    """Inverse of :func:`stored_values` (for tests): stored integers -> display in [0, 1]."""
    top = (1 << bits) - 1
    v = values.astype(np.float64)
    if monochrome1:
        v = top - v
    return np.clip((v - 0.05 * top) / (0.9 * top), 0.0, 1.0)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    seed: int,
    study: StudyTruth,
    image: ImageTruth,
    index: int,
    study_date: str,
    study_time: str,
) -> dict[str, object]:
    """Write one image; returns the choices made (bits, photometry, transfer syntax)."""
    rng = stream(seed, "dicom", study.study_id, index)
    bits = int(rng.choice([12, 14, 16], p=[0.5, 0.2, 0.3]))
    monochrome1 = bool(rng.random() < 0.2)
    syntax = [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless][int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
    modality = "DX" if rng.random() < 0.7 else "CR"
    values, center, width = stored_values(pixels, bits, monochrome1)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_IMAGE_STORAGE if modality == "DX" else CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = uid_for(seed, "sop", image.dicom_id)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid_for(seed, "study", study.study_id)
    ds.SeriesInstanceUID = uid_for(seed, "series", study.study_id, index)
    ds.FrameOfReferenceUID = uid_for(seed, "frame", study.study_id, index)
    ds.PatientID = str(study.subject_id)
    ds.PatientName = f"PHANTOM^{study.subject_id}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyID = str(study.study_id)[-8:]
    ds.AccessionNumber = str(study.study_id)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study_time
    ds.StudyDescription = "CHEST (PA AND LAT)" if image.view == "PA" else "CHEST (PORTABLE AP)"
    ds.Modality = modality
    ds.SeriesNumber = index + 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "Concord phantom world"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = image.view
    ds.PatientOrientation = ["L", "F"] if image.view == "PA" else ["R", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelSpacing = [image.pixel_spacing_mm, image.pixel_spacing_mm]
    ds.ImagerPixelSpacing = [image.pixel_spacing_mm, image.pixel_spacing_mm]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = round(center, 1)
    ds.WindowWidth = round(width, 1)
    ds.VOILUTFunction = "LINEAR"
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = values.tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, values, generate_instance_uid=False)  # UIDs stay deterministic
    tmp = path.with_name(f".{path.name}.part")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
    return {"bits": bits, "monochrome1": monochrome1, "transfer_syntax": str(syntax), "modality": modality}
