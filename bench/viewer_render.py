"""Study viewer: decode, time to first paint and window/level re-render of a large radiograph.

Builds a 3000 x 2500 (rows x columns) 16-bit DICOM (12 bits stored, Rescale
Slope / Intercept, a window) in a temporary folder, then times in an offscreen
``ImageViewer``:

* decode: :func:`app.viewer.image_data.load_image` (the loader thread's work);
* first paint: ``set_image`` (display table, gather, QImage) plus the first
  repaint at the fitted zoom (the area-averaged downscale);
* window/level: ``set_window`` alone (the re-render), and with the repaint
  that follows, as during a right-drag;
* zoom step: a repaint at a new zoom (a new downscale), and pan at 1:1.

Wall-clock medians over ``--repeat`` runs; the machine may be busy, so the
load average is printed too.

    QT_QPA_PLATFORM=offscreen python bench/viewer_render.py [--rows 3000 --columns 2500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_dicom(path: Path, rows: int, columns: int) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:rows, 0:columns]
    body = np.exp(-(((yy - rows / 2) / (rows / 2.2)) ** 4 + ((xx - columns / 2) / (columns / 2.4)) ** 4))
    pixels = np.clip(300 + 3200 * body + rng.normal(0, 40, (rows, columns)), 0, 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 900, 3000
    ds.ImagerPixelSpacing = [0.139, 0.139]
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def median_ms(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--columns", type=int, default=2500)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--size", type=int, nargs=2, default=(1200, 900), help="widget size")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtWidgets import QApplication

    from app.viewer import ImageViewer, load_image

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.dcm"
        write_dicom(path, args.rows, args.columns)
        decode = median_ms(lambda: load_image(path), max(3, args.repeat // 5))
        image = load_image(path)

    viewer = ImageViewer()
    viewer.resize(*args.size)
    viewer.show()
    app.processEvents()

    def first_paint() -> None:
        viewer.set_image(image)
        viewer.repaint()

    first = median_ms(first_paint, args.repeat)
    center, width = viewer.window
    step = iter(range(10**9))

    def rewindow() -> None:
        k = next(step) % 50
        viewer.set_window(center + 4 * k, width - 10 * k)

    render_only = median_ms(rewindow, args.repeat * 2)
    table_ms = viewer.last_render_ms

    def rewindow_paint() -> None:
        rewindow()
        viewer.repaint()

    render_paint = median_ms(rewindow_paint, args.repeat * 2)
    zooms = iter(range(10**9))

    def zoom_paint() -> None:
        viewer.set_zoom(viewer.fit_zoom() * (1.0 + 0.05 * (next(zooms) % 8)))
        viewer.repaint()

    zoom = median_ms(zoom_paint, args.repeat)
    viewer.actual_size()

    def pan_paint() -> None:
        viewer.pan_by(7, 5)
        viewer.repaint()

    pan = median_ms(pan_paint, args.repeat)
    print(f"image {args.rows} x {args.columns}, 16-bit (12 stored); widget {args.size[0]} x {args.size[1]}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"decode (loader thread)            {decode:8.1f} ms")
    print(f"first paint (set_image + paint)   {first:8.1f} ms")
    print(f"window/level re-render            {render_only:8.1f} ms  (last: {table_ms:.1f} ms)")
    print(f"window/level re-render + paint    {render_paint:8.1f} ms")
    print(f"zoom step repaint (zoomed out)    {zoom:8.1f} ms")
    print(f"pan repaint at 1:1                {pan:8.1f} ms")


if __name__ == "__main__":
    main()
