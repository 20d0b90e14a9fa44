"""The study viewer: DICOM display per the standard, interaction, overlays, errors (pytest-qt)."""

from __future__ import annotations

import dataclasses
import os
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid
from PySide6.QtCore import QPoint, QPointF, Qt, QThreadPool
from PySide6.QtWidgets import QApplication

from app.viewer import (
    ImageLoader,
    ImageViewer,
    MetadataPanel,
    ThumbnailStrip,
    ViewerError,
    cell_box,
    default_state,
    heatmap_box,
    heatmap_to_image,
    load_image,
    presets,
    render,
    thumbnail,
)
from app.viewer.widget import ruler_length
from core_model.imaging import read_image
from training.evaluate import argmax_point

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CXR = SHARED / "cxr-images"
#: Screenshots go to a temporary folder; set CONCORD_SCREENSHOTS_DIR=docs/screenshots to refresh
#: the documentation's (tests never change tracked files otherwise).
SCREENSHOTS = Path(os.environ.get("CONCORD_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="concord-shots-"))


@pytest.fixture(scope="module")
def cxr() -> Path:
    if not CXR.is_dir():
        pytest.fail(f"shared test images not found at {CXR} (they sit beside the project)")
    return CXR


@pytest.fixture
def viewer(qtbot) -> ImageViewer:
    widget = ImageViewer()
    widget.resize(640, 480)
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def open_and_wait(qtbot, viewer: ImageViewer, path: Path):  # noqa: ANN201
    with qtbot.waitSignal(viewer.imageLoaded, timeout=20_000) as blocker:
        viewer.open_async(path)
    return blocker.args[0]


def fail_and_wait(qtbot, viewer: ImageViewer, path: Path) -> str:
    with qtbot.waitSignal(viewer.loadFailed, timeout=20_000) as blocker:
        viewer.open_async(path)
    return blocker.args[0]


def synthetic(values: np.ndarray, photometric: str = "MONOCHROME2", *, bits: int = 12,
              signed: bool = False, **tags) -> FileDataset:
    """A DX image with 16 bits allocated, ``bits`` stored, uncompressed."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset("synthetic", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PatientID = "DX", "AP", "PHANTOM-1"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = values.astype(np.int16 if signed else np.uint16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def save(ds: FileDataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(rows: int = 96, columns: int = 80, top: int = 4095) -> np.ndarray:
    return (np.arange(rows * columns).reshape(rows, columns) * top // (rows * columns - 1)).astype(np.uint16)


# --------------------------------------------------------------------------- real files


def test_real_monochrome1_displays_as_the_exact_negative(qtbot, viewer, cxr):
    m2 = open_and_wait(qtbot, viewer, cxr / "cr_chest_pa_monochrome2.dcm")
    shown2 = viewer.rendered().copy()
    m1 = open_and_wait(qtbot, viewer, cxr / "cr_chest_pa_monochrome1.dcm")
    shown1 = viewer.rendered().copy()
    assert m1.photometric == "MONOCHROME1" and m2.photometric == "MONOCHROME2"
    assert np.array_equal(m1.index, m2.index)  # the same stored values ...
    assert shown1.shape == shown2.shape == (1024, 1024)
    assert np.array_equal(shown1.astype(int), 255 - shown2.astype(int))  # ... exact negatives
    # A renderer that ignored the tag would show the two files alike: the tag is what differs.
    untagged = dataclasses.replace(m1, photometric="MONOCHROME2")
    assert np.array_equal(render(untagged, default_state(untagged)), shown2)
    assert (shown1 != shown2).mean() > 0.99
    # The same picture as the model's reader (which windows over the full range) up to contrast.
    corr = np.corrcoef(shown1.ravel(), read_image(cxr / "cr_chest_pa_monochrome1.dcm").ravel())[0, 1]
    assert corr > 0.99


def test_real_dicom_header_values(cxr):
    image = load_image(cxr / "cr_chest_pa_monochrome2.dcm")
    assert image.pixel_spacing is not None and image.pixel_spacing.column == pytest.approx(0.168)
    assert image.pixel_spacing.source == "PixelSpacing"
    assert image.transfer_syntax == "1.2.840.10008.1.2.4.50"  # JPEG Baseline, decoded by pylibjpeg
    assert image.bits_stored == 8 and image.file_windows == ()
    # No window in the file: the 0.5-99.5 percentile range of the data.
    lo, hi = image.robust_range
    values = image.values
    assert np.mean(values < lo) <= 0.005 + 1e-9 and np.mean(values > hi) <= 0.005 + 1e-9
    assert image.default_window.center == pytest.approx((lo + hi + 1) / 2)


def test_nih_pngs_open_with_the_identity_window(qtbot, viewer, cxr):
    for name in ("00000001_000.png", "00027426_000.png"):
        image = open_and_wait(qtbot, viewer, cxr / name)
        expected = np.asarray(Image.open(cxr / name).convert("L"))
        assert viewer.window == (128.0, 256.0)  # 0..255 shown as stored
        assert np.array_equal(viewer.rendered(), expected)
        assert image.pixel_spacing is None and viewer.scale_bar() is None


# --------------------------------------------------------------------------- window / level


def test_narrower_window_raises_contrast_and_signals(qtbot, viewer, cxr):
    open_and_wait(qtbot, viewer, cxr / "00000001_000.png")
    before = viewer.rendered().astype(float)
    with qtbot.waitSignal(viewer.windowChanged) as blocker:
        viewer.set_window(128, 100)
    assert blocker.args == [128.0, 100.0]
    after = viewer.rendered().astype(float)
    assert after.std() > before.std() * 1.5
    stored = np.asarray(Image.open(cxr / "00000001_000.png").convert("L")).astype(float)
    # Standard LINEAR window, C.11.2.1.2.1: below c - 0.5 - (w - 1)/2 black, above white.
    assert (after[stored <= 78] == 0).all() and (after[stored > 177] == 255).all()
    mid = (stored > 100) & (stored < 150)
    expected = np.rint(((stored[mid] - 127.5) / 99 + 0.5) * 255)
    assert np.abs(after[mid] - expected).max() <= 1


def test_invert_and_reset(qtbot, viewer, cxr):
    open_and_wait(qtbot, viewer, cxr / "00000001_000.png")
    default_window, fitted = viewer.window, viewer.zoom
    original = viewer.rendered().copy()
    viewer.setFocus()
    qtbot.keyClick(viewer, Qt.Key.Key_I)
    assert viewer.inverted
    assert np.array_equal(viewer.rendered(), 255 - original)
    viewer.set_window(90, 40)
    qtbot.keyClick(viewer, Qt.Key.Key_Plus)
    viewer.pan_by(30, -20)
    assert viewer.zoom != fitted
    with qtbot.waitSignal(viewer.windowChanged):
        qtbot.keyClick(viewer, Qt.Key.Key_R)
    assert not viewer.inverted and viewer.window == default_window
    assert viewer.zoom == pytest.approx(fitted)
    assert np.array_equal(viewer.rendered(), original)


def test_presets_follow_the_photometry(cxr):
    m2 = load_image(cxr / "cr_chest_pa_monochrome2.dcm")
    m1 = load_image(cxr / "cr_chest_pa_monochrome1.dcm")
    p2, p1 = presets(m2), presets(m1)
    assert {"Lung", "Bone", "Soft tissue", "Full range"} <= set(p2)
    # Lung is a dark window on the display: low values in MONOCHROME2, high in MONOCHROME1.
    assert p2["Lung"].center < p2["Bone"].center
    assert p1["Lung"].center > p1["Bone"].center
    assert p2["Full range"].center == pytest.approx((0 + 255 + 1) / 2)
    # Either way a lung window (low on the display scale) brightens the picture and a bone
    # window darkens it.
    for image, table in ((m2, p2), (m1, p1)):
        lung = render(image, dataclasses.replace(default_state(image), voi=table["Lung"]))
        bone = render(image, dataclasses.replace(default_state(image), voi=table["Bone"]))
        assert lung.mean() > bone.mean() + 30


def test_right_drag_sets_window_like_pacs(qtbot, viewer, cxr):
    open_and_wait(qtbot, viewer, cxr / "cr_chest_pa_monochrome2.dcm")
    c0, w0 = viewer.window
    start = QPoint(300, 200)
    seen: list[tuple[float, float]] = []
    viewer.windowChanged.connect(lambda c, w: seen.append((c, w)))
    qtbot.mousePress(viewer, Qt.MouseButton.RightButton, pos=start)
    qtbot.mouseMove(viewer, start + QPoint(80, 0))  # right: wider
    qtbot.mouseMove(viewer, start + QPoint(80, 40))  # then down: higher centre (darker)
    qtbot.mouseRelease(viewer, Qt.MouseButton.RightButton, pos=start + QPoint(80, 40))
    assert len(seen) >= 2
    c1, w1 = viewer.window
    assert w1 > w0 and c1 > c0 and seen[-1] == (c1, w1)
    assert viewer.rendered().mean() < render(viewer.image, default_state(viewer.image)).mean()


def test_left_drag_pans_with_the_pan_tool_and_middle_drag_always(qtbot, viewer, cxr):
    open_and_wait(qtbot, viewer, cxr / "00000001_000.png")
    offset = viewer.offset
    window = viewer.window
    viewer.set_tool("pan")
    qtbot.mousePress(viewer, Qt.MouseButton.LeftButton, pos=QPoint(200, 200))
    qtbot.mouseMove(viewer, QPoint(230, 190))
    qtbot.mouseRelease(viewer, Qt.MouseButton.LeftButton, pos=QPoint(230, 190))
    assert viewer.offset == offset + QPointF(30, -10) and viewer.window == window
    viewer.set_tool("window")
    qtbot.mousePress(viewer, Qt.MouseButton.MiddleButton, pos=QPoint(200, 200))
    qtbot.mouseMove(viewer, QPoint(190, 200))
    qtbot.mouseRelease(viewer, Qt.MouseButton.MiddleButton, pos=QPoint(190, 200))
    assert viewer.offset == offset + QPointF(20, -10)


# --------------------------------------------------------------------------- zoom / fit


def test_fit_and_zoom_keep_the_image_centred(qtbot, viewer, cxr):
    image = open_and_wait(qtbot, viewer, cxr / "00000001_000.png")
    centre = QPointF(viewer.width() / 2, viewer.height() / 2)

    def image_centre_on_screen() -> QPointF:
        return viewer.image_to_widget(image.columns / 2, image.rows / 2)

    assert viewer.zoom == pytest.approx(min(640 / 512, 480 / 512))
    assert image_centre_on_screen() == centre
    viewer.setFocus()
    for key in (Qt.Key.Key_Plus, Qt.Key.Key_Plus, Qt.Key.Key_Minus, Qt.Key.Key_1):
        qtbot.keyClick(viewer, key)
        p = image_centre_on_screen()
        assert p.x() == pytest.approx(centre.x()) and p.y() == pytest.approx(centre.y())
    assert viewer.zoom == 1.0
    qtbot.keyClick(viewer, Qt.Key.Key_F)
    assert viewer.zoom == pytest.approx(480 / 512) and image_centre_on_screen() == centre
    viewer.resize(800, 300)  # stays fitted and centred when the widget changes size
    assert viewer.zoom == pytest.approx(300 / 512)
    assert viewer.image_to_widget(256, 256) == QPointF(400, 150)


def test_wheel_zooms_about_the_cursor(qtbot, viewer, cxr):
    open_and_wait(qtbot, viewer, cxr / "00000001_000.png")
    anchor = QPointF(150, 120)
    under = viewer.widget_to_image(anchor)
    viewer.zoom_by(2.0, anchor)  # what a wheel event does, with its position as anchor
    after = viewer.image_to_widget(under.x(), under.y())
    assert after.x() == pytest.approx(anchor.x()) and after.y() == pytest.approx(anchor.y())
    assert viewer.zoom == pytest.approx(2 * 480 / 512)


def test_ruler_tracks_zoom(qtbot, viewer, cxr):
    open_and_wait(qtbot, viewer, cxr / "cr_chest_pa_monochrome2.dcm")
    label, px = viewer.scale_bar()
    mm = float(label.split()[0]) * (10 if label.endswith("cm") else 1)
    assert px == pytest.approx(mm / 0.168 * viewer.zoom) and 40 <= px <= 110
    viewer.set_zoom(4.0)
    label4, px4 = viewer.scale_bar()
    assert label4 != label and 40 <= px4 <= 110
    assert ruler_length(0.1, 1.0) == (10.0, pytest.approx(100.0))
    assert ruler_length(0.168, 0.5) == (20.0, pytest.approx(20 / 0.168 * 0.5))


# --------------------------------------------------------------------------- synthetic DICOM


def test_rescale_and_window_follow_the_standard(tmp_path):
    stored = np.array([[0, 1000, 1524, 1525, 1526, 2000, 2050, 4095]], dtype=np.uint16)
    ds = synthetic(stored, RescaleSlope=2, RescaleIntercept=-1024,
                   WindowCenter=[2026, 40], WindowWidth=[2001, 400],
                   WindowCenterWidthExplanation=["WIDE", "NARROW"])
    image = load_image(save(ds, tmp_path / "rescaled.dcm"))
    np.testing.assert_array_equal(image.values[0], stored[0] * 2.0 - 1024)
    shown = render(image, default_state(image))[0].astype(float)
    # C.11.2.1.2.1 with c = 2026, w = 2001 on x = 2 * stored - 1024.
    x = stored[0] * 2.0 - 1024
    expected = np.where(x <= 2025.5 - 1000, 0,
                        np.where(x > 2025.5 + 1000, 255, np.rint(((x - 2025.5) / 2000 + 0.5) * 255)))
    np.testing.assert_array_equal(shown, expected)
    np.testing.assert_array_equal(shown, [0, 0, 127, 128, 128, 249, 255, 255])
    np.testing.assert_allclose(shown / 255, read_image(tmp_path / "rescaled.dcm")[0], atol=0.5 / 255 + 1e-6)
    names = list(presets(image))
    assert names[:2] == ["File window 1: WIDE", "File window 2: NARROW"]


@pytest.mark.filterwarnings("ignore:Applying a VOI LUT on a float input")  # core_model's reader
def test_voi_lut_sequence_is_applied(qtbot, viewer, tmp_path):
    stored = np.array([[0, 99, 100, 101, 150, 227, 228, 4095]], dtype=np.uint16)
    item = Dataset()
    item.LUTDescriptor = [128, 100, 8]  # 128 entries, first mapped value 100, 8 bits
    lut = (np.arange(128) * 2).astype(np.uint16)  # a ramp from 0 to 254
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data (US or OW: US here)
    item.LUTExplanation = "RAMP"
    ds = synthetic(stored, WindowCenter=50, WindowWidth=10)  # the LUT wins over the window
    ds.VOILUTSequence = Sequence([item])
    path = save(ds, tmp_path / "voilut.dcm")
    image = open_and_wait(qtbot, viewer, path)
    assert image.voi_lut_count == 1 and "File VOI LUT 1: RAMP" in presets(image)
    expected = [0, 0, 0, 2, 100, 254, 254, 254]  # clamped at both ends (C.11.2.1.1)
    np.testing.assert_array_equal(viewer.rendered()[0], np.rint(np.array(expected) / 255 * 255))
    np.testing.assert_allclose(viewer.rendered()[0] / 255, read_image(path)[0], atol=0.5 / 255 + 1e-6)
    assert viewer.window == (164.0, 128.0)  # the LUT's input range, the start of a right-drag
    viewer.set_window(150, 50)
    assert viewer.rendered()[0, 4] == 130  # now a plain window: ((150 - 149.5) / 49 + 0.5) * 255


def test_synthetic_monochrome1_and_sigmoid(tmp_path):
    values = ramp()
    tags = dict(WindowCenter=2048, WindowWidth=3000)
    m2 = load_image(save(synthetic(values, **tags), tmp_path / "m2.dcm"))
    m1 = load_image(save(synthetic(values, "MONOCHROME1", **tags), tmp_path / "m1.dcm"))
    r2, r1 = render(m2, default_state(m2)), render(m1, default_state(m1))
    assert np.array_equal(r1.astype(int), 255 - r2.astype(int))
    assert r2[0, 0] == 0 and r2[-1, -1] == 255  # MONOCHROME2: low values dark
    assert r1[0, 0] == 255 and r1[-1, -1] == 0  # MONOCHROME1: low values white
    sig = load_image(save(synthetic(values, VOILUTFunction="SIGMOID", **tags), tmp_path / "s.dcm"))
    shown = render(sig, default_state(sig)).astype(float)
    stored = values.astype(float)
    expected = np.rint(255 / (1 + np.exp(-4 * (stored - 2048) / 3000)))  # C.11.2.1.3.1
    np.testing.assert_array_equal(shown, expected)


def test_signed_data_and_compressed_syntaxes_display_alike(tmp_path):
    plain = load_image(get_testdata_file("MR_small.dcm"))
    reference = render(plain, default_state(plain))
    assert plain.default_window.center == 600 and plain.default_window.width == 1600
    for name in ("MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"):
        image = load_image(get_testdata_file(name))
        assert image.transfer_syntax != plain.transfer_syntax
        assert np.array_equal(render(image, default_state(image)), reference), name
    ct = load_image(get_testdata_file("CT_small.dcm"))  # signed, Rescale Intercept -1024
    assert ct.full_range == (128 - 1024, 2191 - 1024)
    j2k = load_image(get_testdata_file("693_J2KI.dcm"))  # JPEG 2000, signed 14-bit, window 40/100
    np.testing.assert_allclose(render(j2k, default_state(j2k)) / 255,
                               read_image(get_testdata_file("693_J2KI.dcm")), atol=0.5 / 255 + 1e-6)
    # Our own 16-bit MONOCHROME1 images, compressed (JPEG 2000 lossless, RLE) and not.
    values = ramp()
    base = synthetic(values, "MONOCHROME1", WindowCenter=2048, WindowWidth=4096)
    expected = render(load_image(save(base, tmp_path / "raw.dcm")), default_state(load_image(tmp_path / "raw.dcm")))
    for uid in (JPEG2000Lossless, RLELossless):
        ds = synthetic(values, "MONOCHROME1", WindowCenter=2048, WindowWidth=4096)
        ds.compress(uid)
        image = load_image(save(ds, tmp_path / f"{uid.keyword}.dcm"))
        assert image.transfer_syntax == uid
        assert np.array_equal(render(image, default_state(image)), expected), uid.name


def test_wide_integer_data_is_windowed_pixel_by_pixel(tmp_path):
    # 32-bit signed values spanning more than the lookup-table path takes.
    values = np.array([[-200_000, -1, 0, 50_000, 99_999, 300_000]], dtype=np.int32)
    ds = synthetic(np.zeros((1, 6)), WindowCenter=50_000.5, WindowWidth=100_000)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 1
    ds.PixelData = values.tobytes()
    image = load_image(save(ds, tmp_path / "wide.dcm"))
    assert image.index is None and image.values.dtype == np.float32
    shown = render(image, default_state(image))[0]
    np.testing.assert_array_equal(shown, [0, 0, 0, 128, 255, 255])  # 50,000 -> 0.5 -> 127.5


# --------------------------------------------------------------------------- errors


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (with a valid CRC) and no real data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\0" * 64)
    data = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + data + end


def bad_files(tmp_path: Path, cxr: Path) -> dict[str, tuple[Path, str]]:
    full = save(synthetic(ramp()), tmp_path / "whole.dcm").read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(full[: len(full) - 6000])
    real = (cxr / "cr_chest_pa_monochrome2.dcm").read_bytes()
    truncated_jpeg = tmp_path / "truncated_jpeg.dcm"
    truncated_jpeg.write_bytes(real[: len(real) // 2])
    text = tmp_path / "notes.dcm"
    text.write_text("Patient notes, not an image.\n" * 20)
    bomb = synthetic(np.zeros((4, 4), np.uint16))
    bomb.Rows = bomb.Columns = 60000
    save(bomb, tmp_path / "bomb.dcm")
    png_bomb = tmp_path / "bomb.png"
    png_bomb.write_bytes(_png_claiming(40000, 40000))
    return {
        "truncated": (truncated, "cannot be decoded"),
        "truncated_jpeg": (truncated_jpeg, ""),
        "not_dicom": (text, "not a DICOM file"),
        "bomb": (tmp_path / "bomb.dcm", "refusing to decode a 60000 x 60000 image"),
        "png_bomb": (png_bomb, "refusing to decode"),
        "missing": (tmp_path / "absent.dcm", "no such file"),
    }


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_bad_files_raise_one_line_errors(tmp_path, cxr):
    for key, (path, words) in bad_files(tmp_path, cxr).items():
        with pytest.raises(ViewerError) as info:
            load_image(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(path.name), key
        assert words in message, (key, message)


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_viewer_shows_the_error_instead_of_crashing(qtbot, viewer, tmp_path, cxr):
    open_and_wait(qtbot, viewer, cxr / "00000001_000.png")
    for key, (path, words) in bad_files(tmp_path, cxr).items():
        message = fail_and_wait(qtbot, viewer, path)
        assert words in message and viewer.message == message, key
        assert viewer.image is None and viewer.rendered() is None
        assert not viewer.grab().isNull()
        viewer.set_window(10, 10)  # controls are inert without an image
        qtbot.keyClick(viewer, Qt.Key.Key_I)
    viewer.grab().save(str(tmp_path / "error.png"))
    open_and_wait(qtbot, viewer, cxr / "00000001_000.png")  # and the viewer still works
    assert viewer.message == ""


# --------------------------------------------------------------------------- threading


def test_decoding_happens_off_the_gui_thread(qtbot, viewer, cxr, monkeypatch):
    import app.viewer.loader as loader_module

    threads: list[threading.Thread] = []
    real = loader_module.load_image

    def spy(path):  # noqa: ANN001, ANN202
        threads.append(threading.current_thread())
        return real(path)

    monkeypatch.setattr(loader_module, "load_image", spy)
    open_and_wait(qtbot, viewer, cxr / "00027426_000.png")
    assert threads and threads[0] is not threading.main_thread()


def test_a_newer_request_wins(qtbot, viewer, cxr):
    viewer.open_async(cxr / "cr_chest_pa_monochrome1.dcm")
    image = open_and_wait(qtbot, viewer, cxr / "00027426_000.png")
    QThreadPool.globalInstance().waitForDone(20_000)
    qtbot.wait(50)
    assert image.source == "00027426_000.png" and viewer.image is image


def test_loader_runnable_reports_thumbnail(qtbot, cxr):
    loader = ImageLoader(cxr / "cr_chest_pa_monochrome1.dcm", token=7, thumbnail_size=64)
    with qtbot.waitSignal(loader.signals.loaded, timeout=20_000) as blocker:
        QThreadPool.globalInstance().start(loader)
    token, image, thumb = blocker.args
    assert token == 7 and image.rows == 1024 and thumb.shape == (64, 64) and thumb.dtype == np.uint8


# --------------------------------------------------------------------------- heatmap overlay


@pytest.mark.parametrize(("shape", "size"), [((3000, 2000), 128), ((2000, 3000), 128), ((2500, 2048), 224)])
def test_heatmap_cell_maps_through_the_letterbox(shape, size):
    rows, columns = shape
    grid = np.zeros((8, 8), np.float32)
    cell = (5, 2)
    grid[cell] = 1.0
    hot = heatmap_to_image(grid, shape, size) > 0.5
    ys, xs = np.nonzero(hot)
    # Independent geometry: longest side -> size, centred; cell (i, j) spans size/8 input pixels.
    scale = size / max(rows, columns)
    h, w = round(rows * scale), round(columns * scale)
    top, left = (size - h) // 2, (size - w) // 2
    u0, u1 = 2 * size / 8, 3 * size / 8
    v0, v1 = 5 * size / 8, 6 * size / 8
    x0, x1 = (u0 - left) / scale, (u1 - left) / scale
    y0, y1 = (v0 - top) / scale, (v1 - top) / scale
    centres_x, centres_y = np.arange(columns) + 0.5, np.arange(rows) + 0.5
    want_x = np.nonzero((centres_x >= x0) & (centres_x < x1))[0]
    want_y = np.nonzero((centres_y >= y0) & (centres_y < y1))[0]
    assert xs.min() == want_x.min() and xs.max() == want_x.max()
    assert ys.min() == want_y.min() and ys.max() == want_y.max()
    assert hot.sum() == len(want_x) * len(want_y)
    box = cell_box(cell, grid.shape, shape, size)
    assert box == pytest.approx((x0, y0, x1, y1))
    px, py = argmax_point(grid, shape, size)  # the evaluation's pointing game agrees
    assert hot[int(py), int(px)]
    assert heatmap_box(shape, size) == pytest.approx((-left / scale, -top / scale,
                                                      (size - left) / scale, (size - top) / scale))


def test_heatmap_overlay_draws_over_the_hot_cell(qtbot, tmp_path):
    # A portrait image in a square widget; a hot cell in the left lung region.
    values = np.full((600, 400), 2000, np.uint16)
    ds = synthetic(values, WindowCenter=2048, WindowWidth=4096, PixelSpacing=[0.5, 0.5])
    image = load_image(save(ds, tmp_path / "flat.dcm"))
    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.resize(600, 600)
    viewer.show()
    viewer.set_image(image)
    grid = np.zeros((8, 8), np.float32)
    grid[3, 2] = 1.0
    plain = viewer.grab().toImage()
    viewer.set_overlay(grid, box=heatmap_box(image.shape, 128))
    assert viewer.has_overlay and viewer.overlay_visible
    shown = viewer.grab().toImage()
    x0, y0, x1, y1 = cell_box((3, 2), grid.shape, image.shape, 128)
    inside = viewer.image_to_widget((x0 + x1) / 2, (y0 + y1) / 2).toPoint()
    far = viewer.image_to_widget(350, 550).toPoint()
    assert shown.pixelColor(inside) != plain.pixelColor(inside)
    assert shown.pixelColor(inside).red() > shown.pixelColor(inside).blue()  # a warm colour
    assert shown.pixelColor(far) == plain.pixelColor(far)
    viewer.setFocus()
    with qtbot.waitSignal(viewer.overlayVisibleChanged):
        qtbot.keyClick(viewer, Qt.Key.Key_H)
    assert not viewer.overlay_visible
    assert viewer.grab().toImage().pixelColor(inside) == plain.pixelColor(inside)
    viewer.overlay_visible = True
    viewer.set_overlay(None)
    assert not viewer.has_overlay
    with pytest.raises(ValueError):
        viewer.set_overlay(grid, box=(10, 10, 5, 20))


# --------------------------------------------------------------------------- panels


def test_metadata_panel_lists_and_copies(qtbot, cxr):
    panel = MetadataPanel()
    qtbot.addWidget(panel)
    panel.set_image(load_image(cxr / "cr_chest_pa_monochrome1.dcm"))
    assert panel.value("View position") == "PA"
    assert panel.value("Modality") == "CR"
    assert panel.value("Photometric interpretation") == "MONOCHROME1"
    assert panel.value("Bits stored") == "8"
    assert "JPEG Baseline" in panel.value("Transfer syntax")
    assert panel.value("Pixel spacing").startswith("0.168 x 0.168 mm (PixelSpacing")
    assert panel.value("ID", group="Patient") == "16d7f894-55d7-4d95-8957-d18987f0e981"
    groups = [panel.tree.topLevelItem(i).text(0) for i in range(panel.tree.topLevelItemCount())]
    assert groups == ["File", "Patient", "Study", "Series", "Image"]
    image_group = panel.tree.topLevelItem(4)
    for i in range(image_group.childCount()):
        item = image_group.child(i)
        assert not item.flags() & Qt.ItemFlag.ItemIsEditable
        item.setSelected(item.text(0) in ("View position", "Pixel spacing"))
    text = panel.copy_selection()
    assert text.splitlines()[0] == "View position\tPA"
    assert QApplication.clipboard().text() == text
    assert "Patient\tSex\tM" in panel.copy_all()


def test_thumbnail_strip_emits_selection(qtbot, cxr):
    strip = ThumbnailStrip()
    qtbot.addWidget(strip)
    strip.resize(400, strip.height())
    strip.show()
    images = [load_image(cxr / n) for n in ("cr_chest_pa_monochrome2.dcm", "00000001_000.png")]
    strip.set_items(["PA (DICOM)", "PA (PNG)"])
    for i, image in enumerate(images):
        strip.set_thumbnail(i, thumbnail(image, 96))
    assert strip.count() == 2
    rect = strip.visualItemRect(strip.item(1))
    with qtbot.waitSignal(strip.imageSelected) as blocker:
        qtbot.mouseClick(strip.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert blocker.args == [1]
    with pytest.raises(IndexError):
        strip.set_thumbnail(5, thumbnail(images[0], 32))


# --------------------------------------------------------------------------- screenshot


def test_screenshot_of_a_radiograph_with_heatmap_and_ruler(qtbot, cxr):
    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.resize(1000, 860)
    viewer.show()
    image = open_and_wait(qtbot, viewer, cxr / "cr_chest_pa_monochrome2.dcm")
    yy, xx = np.mgrid[0:8, 0:8]
    grid = np.exp(-((yy - 5.2) ** 2 + (xx - 2.4) ** 2) / 2.0)  # an evidence blob, right lower zone
    grid += 0.4 * np.exp(-((yy - 3.0) ** 2 + (xx - 5.5) ** 2) / 1.2)
    viewer.set_overlay(grid / grid.max(), box=heatmap_box(image.shape, 128))
    assert viewer.scale_bar() is not None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    out = SCREENSHOTS / "viewer.png"
    assert viewer.grab().save(str(out))
    saved = np.asarray(Image.open(out).convert("RGB"))
    assert saved.shape == (860, 1000, 3)
    assert (saved[120:780, :60] < 20).all()  # dark surround beside the fitted square image


def test_screenshot_of_the_viewer_with_its_panels(qtbot, cxr):
    from PySide6.QtGui import QColor, QPalette
    from PySide6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

    names = ("cr_chest_pa_monochrome2.dcm", "cr_chest_pa_monochrome1.dcm", "00000001_000.png")
    images = [load_image(cxr / n) for n in names]
    window = QWidget()
    qtbot.addWidget(window)
    palette = window.palette()
    for role, color in ((QPalette.ColorRole.Window, QColor(24, 24, 28)),
                        (QPalette.ColorRole.Base, QColor(18, 18, 22)),
                        (QPalette.ColorRole.AlternateBase, QColor(28, 28, 33)),
                        (QPalette.ColorRole.Text, QColor(220, 220, 220)),
                        (QPalette.ColorRole.WindowText, QColor(220, 220, 220)),
                        (QPalette.ColorRole.Button, QColor(30, 30, 35)),
                        (QPalette.ColorRole.ButtonText, QColor(220, 220, 220)),
                        (QPalette.ColorRole.Highlight, QColor(40, 90, 150))):
        palette.setColor(role, color)
    window.setPalette(palette)
    window.setAutoFillBackground(True)
    viewer, strip, panel = ImageViewer(), ThumbnailStrip(icon_size=80), MetadataPanel()
    column = QVBoxLayout()
    column.addWidget(viewer, 1)
    column.addWidget(strip)
    row = QHBoxLayout(window)
    row.addLayout(column, 1)
    row.addWidget(panel)
    panel.setFixedWidth(360)
    strip.set_items(["PA", "PA (MONO1)", "PA (PNG)"])
    for i, image in enumerate(images):
        strip.set_thumbnail(i, thumbnail(image, 80))
    strip.imageSelected.connect(lambda i: (viewer.set_image(images[i]), panel.set_image(images[i])))
    window.resize(1280, 900)
    window.show()
    qtbot.waitExposed(window)
    strip.set_current(1)
    assert viewer.image is images[1] and panel.value("Photometric interpretation") == "MONOCHROME1"
    strip.set_current(0)
    assert viewer.image is images[0]
    viewer.apply_preset("Lung")
    assert window.grab().save(str(SCREENSHOTS / "viewer-panels.png"))
