"""Latency of the reading window, measured on the demo worklist with the demo model.

    QT_QPA_PLATFORM=offscreen python bench/app_latency.py [--repeats 5] [--threads 2]

Prints, per study opening (after the model is loaded):

* open -> first paint of the image (budget 300 ms for a 3000 x 2500 16-bit
  image: a copy of a demo radiograph resampled to that size and written as a
  16-bit DICOM is added to the worklist for this);
* open -> the study's stored flags shown (what storage holds, before any check);
* open -> first flags of a check of the opened text shown (budget 1 s with the
  tiny model on CPU; recorded in storage against the report version first);
* typing one sentence -> its re-check shown (budget 100 ms), with the
  editor's debounce set to 0 so the figure is the check itself (the debounce
  adds its own delay, 300 ms by default, on purpose).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _qt import pause as _pause  # noqa: E402
from _qt import wait as _wait  # noqa: E402


def big_dicom(source: Path, folder: Path) -> Path:
    """A 3000 x 2500 16-bit MONOCHROME2 copy of ``source`` in a study of its own."""
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(source)
    pixels = ds.pixel_array.astype(np.float32)
    big = np.asarray(Image.fromarray(pixels).resize((2500, 3000), Image.BILINEAR))
    big = (big - big.min()) / max(float(big.max() - big.min()), 1.0) * 65535.0
    ds.Rows, ds.Columns = 3000, 2500
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = big.astype(np.uint16).tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    for keyword in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.AccessionNumber = "BIG3000"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("CONCORD_NO_DIALOGS", "1")

    import torch
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QApplication

    from app.demo import DEMO_MODEL_DIR, demo_worklist, load_demo
    from app.gui.launch import sign_in
    from app.gui.window import MainWindow
    from app.importer import import_dicom_folder
    from app.storage import Storage

    torch.set_num_threads(args.threads)
    app = QApplication.instance() or QApplication([])
    work = Path(tempfile.mkdtemp(prefix="concord-latency-"))
    os.environ["CONCORD_RECOVERY_DIR"] = str(work / "recovery")
    storage = Storage.open(f"sqlite:///{work / 'bench.db'}")
    sign_in(storage, "bench")
    load_demo(storage)
    worklist = demo_worklist()
    big = big_dicom(worklist.root / worklist.studies[0].files[0], work / "big")
    import_dicom_folder(storage, big.parent)

    window = MainWindow(storage, model_dir=DEMO_MODEL_DIR, autosave_s=600)
    window.resize(1600, 940)
    window.show()
    window.editor.set_debounce_ms(0)
    _wait(app, lambda: window.reader is not None, 120)

    painted: list[float] = []

    class PaintWatch(QObject):
        def eventFilter(self, obj, event):  # noqa: ANN001, N802
            if event.type() == QEvent.Type.Paint and window.viewer.image is not None:
                painted.append(time.perf_counter())
            return False

    watch = PaintWatch()
    window.viewer.installEventFilter(watch)
    flags_at: list[float] = []  # a check of the current text shown
    stored_at: list[float] = []  # any flags shown (the stored ones come first)

    def on_flags(_flags: object) -> None:
        now = time.perf_counter()
        stored_at.append(now)
        if window.editor.checked_text() == window.editor.text():
            flags_at.append(now)

    window.editor.flagsChanged.connect(on_flags)

    studies = {s.id: (s.accession_number or "") for s in storage.studies()}
    big_id = next(i for i, acc in studies.items() if acc == "BIG3000")
    demo_ids = [i for i in studies if i != big_id]
    rows = {"paint_big": [], "paint_demo": [], "stored": [], "flags": [], "recheck": []}
    for _ in range(args.repeats):
        for study_id in [big_id, *demo_ids]:
            window._leave_study()
            window.viewer.clear()
            _pause(app, 0.05)
            painted.clear()
            flags_at.clear()
            stored_at.clear()
            start = time.perf_counter()
            window.open_study(study_id)
            _wait(app, lambda: bool(painted) and bool(flags_at), 60)
            rows["paint_big" if study_id == big_id else "paint_demo"].append(painted[0] - start)
            rows["stored"].append(stored_at[0] - start)
            rows["flags"].append(flags_at[0] - start)
            flags_at.clear()
            edit = window.editor.text_edit()
            cursor = edit.textCursor()
            cursor.movePosition(cursor.MoveOperation.End)
            edit.setTextCursor(cursor)
            start = time.perf_counter()
            edit.insertPlainText(" There is a small left pleural effusion.")
            _wait(app, lambda: bool(flags_at), 30)
            rows["recheck"].append(flags_at[0] - start)
    window.close()
    storage.close()

    def show(name: str, values: list[float], budget_ms: float) -> None:
        ms = sorted(v * 1000 for v in values)
        print(f"{name:<44} median {statistics.median(ms):7.1f} ms   p90 {ms[min(len(ms) - 1, math.ceil(0.9 * len(ms)) - 1)]:7.1f} ms"
              f"   max {ms[-1]:7.1f} ms   budget {budget_ms:.0f} ms   n={len(ms)}")

    print(f"torch threads {args.threads}; model {DEMO_MODEL_DIR.name}")
    show("open -> first paint, 3000x2500 16-bit", rows["paint_big"], 300)
    show("open -> first paint, 512x512 demo images", rows["paint_demo"], 300)
    show("open -> stored flags shown", rows["stored"], 1000)
    show("open -> first flags (tiny model, CPU)", rows["flags"], 1000)
    show("type one sentence -> re-check shown", rows["recheck"], 100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
