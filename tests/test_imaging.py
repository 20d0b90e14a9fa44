"""Display of DICOM and picture files as the standard says."""

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from core_model.imaging import ImageReadError, dicom_display, read_image, window
from training.phantom.dicom import display_from_stored, stored_values, write_dicom
from training.phantom.truth import ImageTruth, StudyTruth


def test_real_monochrome1_file_is_the_exact_negative(shared_data):
    folder = shared_data / "cxr-images"
    m2 = read_image(folder / "cr_chest_pa_monochrome2.dcm")
    m1 = read_image(folder / "cr_chest_pa_monochrome1.dcm")
    raw1 = pydicom.dcmread(folder / "cr_chest_pa_monochrome1.dcm").pixel_array
    raw2 = pydicom.dcmread(folder / "cr_chest_pa_monochrome2.dcm").pixel_array
    assert np.array_equal(raw1, raw2)  # same stored values ...
    assert m1.shape == m2.shape == (1024, 1024)
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)  # ... displayed as exact negatives
    assert not np.allclose(m1, m2)


def test_real_png_files(shared_data):
    for name in ("00000001_000.png", "00027426_000.png"):
        img = read_image(shared_data / "cxr-images" / name)
        assert img.ndim == 2 and img.shape[0] == img.shape[1] >= 512 and img.dtype == np.float32
        assert 0.0 <= img.min() < img.max() <= 1.0


def _dataset(values, photometric="MONOCHROME2", bits=12, **tags):
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = values.astype(np.uint16).tobytes()
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def test_window_and_rescale_follow_the_standard():
    values = np.array([[0, 1000, 2000, 3000, 4095]], dtype=np.uint16)
    ds = _dataset(values, WindowCenter=2000, WindowWidth=2001, RescaleSlope=1, RescaleIntercept=0)
    out = dicom_display(ds)
    np.testing.assert_allclose(out[0], [0.0, 0.00025, 0.5, 0.99975, 1.0], atol=1e-3)
    shifted = _dataset(values, WindowCenter=1000, WindowWidth=2001, RescaleSlope=1, RescaleIntercept=-1000)
    np.testing.assert_allclose(dicom_display(shifted), out, atol=1e-6)
    inverted = _dataset(values, "MONOCHROME1", WindowCenter=2000, WindowWidth=2001)
    np.testing.assert_allclose(dicom_display(inverted), 1.0 - out, atol=1e-6)
    sigmoid = window(np.array([0.0, 50.0, 100.0]), 50, 100, "SIGMOID")
    np.testing.assert_allclose(sigmoid, [1 / (1 + np.exp(2)), 0.5, 1 / (1 + np.exp(-2))])


def test_bad_dicoms_raise_clear_errors(tmp_path):
    ds = _dataset(np.zeros((4, 4)))
    del ds.PixelData
    with pytest.raises(ImageReadError, match="no pixel data"):
        dicom_display(ds)
    rgb = _dataset(np.zeros((4, 4)), "RGB")
    with pytest.raises(ImageReadError, match="not a grayscale"):
        dicom_display(rgb)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    with pytest.raises(ImageReadError):
        read_image(broken)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "none.dcm")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(text)


@pytest.mark.parametrize("bits", [12, 14, 16])
@pytest.mark.parametrize("monochrome1", [False, True])
def test_stored_values_round_trip(bits, monochrome1):
    pixels = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    values, center, width = stored_values(pixels, bits, monochrome1)
    assert values.max() < (1 << bits)
    np.testing.assert_allclose(display_from_stored(values, bits, monochrome1), pixels, atol=1.0 / (1 << bits) * 2)


def test_phantom_dicom_files_decode_to_the_intended_pixels(tmp_path):
    pixels = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    study = StudyTruth(10000001, 50000001, "train", [])
    seen = set()
    for index in range(40):
        image = ImageTruth(f"img{index}", "PA", 64, 64, 0.7)
        path = tmp_path / f"{index}.dcm"
        choice = write_dicom(path, pixels, seed=0, study=study, image=image, index=index,
                             study_date="21500101", study_time="101010")
        seen.add((choice["transfer_syntax"], choice["monochrome1"]))
        ds = pydicom.dcmread(path)
        assert ds.PatientID == "10000001" and ds.ViewPosition == "PA"
        assert ds.StudyInstanceUID == pydicom.dcmread(tmp_path / "0.dcm").StudyInstanceUID
        assert str(ds.file_meta.TransferSyntaxUID) == choice["transfer_syntax"]
        assert float(ds.PixelSpacing[0]) == pytest.approx(0.7)
        shown = read_image(path)
        # The window spans the stored range used, so display equals the rendering up to rounding.
        np.testing.assert_allclose(shown, pixels, atol=2.0 / 4095 + 1e-3)
    syntaxes = {s for s, _ in seen}
    assert {str(ExplicitVRLittleEndian), str(RLELossless), str(JPEG2000Lossless)} <= syntaxes
    assert {m for _, m in seen} == {False, True}
